"""The baselines as data: they load, every rule is complete, every BSI/Grundschutz++ id exists in the
derived data/bsi-ids.json, every mSCP id in data/mscp-ios-indigo.json; bad files get file:line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compliance.errors import BaselineError
from compliance.rules import BASELINES_DIR, load_baselines
from tests.fixtures.site import REPO

BSI = json.loads((REPO / "data" / "bsi-ids.json").read_text(encoding="utf-8"))


def test_baselines_load_and_cover_the_issue():
    b = load_baselines()
    ids = b.rule_ids
    for rid in (
        "lx-ssh-no-root-login",
        "lx-ssh-no-password-auth",
        "lx-ssh-modern-crypto",
        "lx-ssh-max-auth-tries",
        "lx-nft-inbound-deny",
        "lx-auto-updates",
        "lx-screen-lock",
        "lx-pwquality",
        "lx-usb-storage-blocked",
        "lx-sysctl-hardening",
        "lx-login-banner",
        "lx-local-admin",
        "lx-disk-encryption",
        "vpn-handshake-fresh",
        "vpn-full-tunnel",
        "vpn-key-age",
        "ios-supervised",
        "ios-passcode",
        "ios-hardware-encryption",
        "ios-os-version",
        "ios-profiles",
        "ios-in-contact",
    ):
        assert rid in ids
    assert {x.header.fleet for x in b.baselines} == {"laptops", "ipads", "appletvs"}
    assert {r.id for r in b.for_fleet("appletvs")} == {"tv-supervised", "tv-os-version", "tv-airplay-passcode",
                                                       "tv-profiles", "tv-in-contact"}


def test_every_reference_exists_in_the_derived_bsi_data():
    gspp = set(BSI["grundschutz_pp"])
    itgs = set(BSI["itgs"])
    ms = set(BSI["mindeststandard_mdm"])
    missing = []
    for b in load_baselines().baselines:
        for r in b.rules:
            missing += [f"{r.id}: {i}" for i in r.references.grundschutz if i not in itgs]
            missing += [f"{r.id}: {i}" for i in r.references.gspp if i not in gspp]
            missing += [f"{r.id}: {i}" for i in r.references.mindeststandard if i not in ms]
    assert missing == []
    assert "MDM.2.8.03" in load_baselines().rule("ios-in-contact").references.mindeststandard


def test_every_mscp_id_exists_in_the_mdm_data():
    path = REPO / "data" / "mscp-ios-indigo.json"
    assert path.exists(), "data/mscp-ios-indigo.json is committed; tools/derive_mscp.py makes it"
    known = set(json.loads(path.read_text(encoding="utf-8"))["rules"])
    used = [(r.id, m) for b in load_baselines().baselines for r in b.rules for m in r.references.mscp]
    assert used, "the iPad baseline names mSCP rules"
    assert [u for u in used if u[1] not in known] == []


def test_bsi_data_names_its_source_and_licence():
    assert "CC BY-SA 4.0" in BSI["licence"]
    assert BSI["derived_by"] == "tools/derive_bsi.py"
    assert BSI["itgs_to_gspp"]["NET.3.3.A10"] == {"ARCH.5.1.5": "intersects-with"}


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "baselines"
    shutil.copytree(BASELINES_DIR, d)
    return d


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "    severity: high\n    rationale: >-\n      Administrators",
            "    severity: urgent\n    rationale: >-\n      Administrators",
            "linux-laptop.yaml:12: rule lx-ssh-no-root-login: severity: Input should be",
        ),
        (
            'check: {fact: sshd.permitrootlogin, op: eq, expected: "no"}',
            'check: {fact: sshd.permitrootlogin, op: equals, expected: "no"}',
            "linux-laptop.yaml:12: rule lx-ssh-no-root-login: check: unknown operator 'equals'",
        ),
        (
            "check: {python: nft_inbound_default_deny}",
            "check: {python: nft_magic}",
            "linux-laptop.yaml:70: rule lx-nft-inbound-deny: unknown python check 'nft_magic'",
        ),
        (
            "  - id: lx-ssh-no-password-auth",
            "  - id: lx-ssh-no-root-login",
            "linux-laptop.yaml:24: duplicate rule id 'lx-ssh-no-root-login' (first at line 12)",
        ),
        (
            "    references:\n      grundschutz: [SYS.2.3.A1, SYS.2.1.A1, OPS.1.2.4.A2]\n",
            "    references:\n      grundschutz: []\n",
            "linux-laptop.yaml:12: rule lx-ssh-no-root-login: references.grundschutz: "
            "List should have at least 1 item",
        ),
    ],
)
def test_bad_baseline_is_reported_with_file_and_line(tmp_path, old, new, message):
    d = _copy(tmp_path)
    f = d / "linux-laptop.yaml"
    text = f.read_text(encoding="utf-8")
    assert old in text
    f.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(BaselineError) as e:
        load_baselines(d)
    assert str(e.value).removeprefix(str(d) + "/").startswith(message), str(e.value)
    assert e.value.exit_code == 2


def test_broken_yaml_and_missing_dir(tmp_path):
    d = _copy(tmp_path)
    (d / "ipados.yaml").write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(BaselineError, match=r"ipados.yaml:2: broken YAML"):
        load_baselines(d)
    with pytest.raises(BaselineError, match="does not exist"):
        load_baselines(tmp_path / "nope")


def test_run_with_bad_baseline_exits_2_and_stores_nothing(run_cli, tmp_path, state_dir):
    d = _copy(tmp_path)
    (d / "ipados.yaml").write_text(
        "baseline: {id: ipados-test, fleet: ipads, title: t}\nrules: [{id: ios-x}]\n"
    )
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[site]\nstate_dir = "{state_dir}"\n[compliance]\nbaselines_dir = "{d}"\n')
    r = run_cli("compliance", "run", "--ipads", config=cfg)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"Error: {d}/ipados.yaml:2: rule ios-x: title: Field required")
    assert not (state_dir / "compliance.lock").exists()


def test_ipads_without_mdm_api_key_exit_2_before_any_run(run_cli, tmp_path, state_dir, monkeypatch):
    monkeypatch.delenv("WERNE_MDM_API_KEY", raising=False)
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[site]\nstate_dir = "{state_dir}"\n')
    r = run_cli("compliance", "run", "--ipads", config=cfg)
    assert (r.exit_code, r.stderr) == (2, "Error: NanoMDM API key: no secret found ($WERNE_MDM_API_KEY)\n")
    assert not (state_dir / "compliance.lock").exists()
    r = run_cli("report", "--format", "csv", "--out", str(tmp_path / "x.csv"), config=cfg)
    assert r.exit_code == 2
    assert r.stderr == "Error: no complete compliance run stored yet; run `werne compliance run` first\n"


def test_a_baseline_edited_in_place_is_read_anew(tmp_path):
    """Parsed baselines are kept per process for the same bytes (the shard worker judges many
    shards): an edit to the file, at the same path, is what the next load returns, with its digest;
    and the same bytes again are the same rules, in a list of the caller's own."""
    d = _copy(tmp_path)
    f = d / "linux-laptop.yaml"
    first = load_baselines(d)
    again = load_baselines(d)
    assert again.digest() == first.digest()
    laptop = [b for b in again.baselines if b.path == f][0]
    assert laptop.rules == [b for b in first.baselines if b.path == f][0].rules
    laptop.rules.clear()  # the caller's list: the next load is whole
    assert load_baselines(d).for_fleet("laptops") == first.for_fleet("laptops") != []

    text = f.read_text(encoding="utf-8")
    old = "  - id: lx-ssh-no-root-login"
    assert old in text
    f.write_text(text.replace(old, "  - id: lx-ssh-no-root-login-edited", 1), encoding="utf-8")
    edited = load_baselines(d)
    assert "lx-ssh-no-root-login-edited" in edited.rule_ids and "lx-ssh-no-root-login" not in edited.rule_ids
    assert edited.digest() != first.digest()
    f.write_text(text, encoding="utf-8")
    assert load_baselines(d).digest() == first.digest()
