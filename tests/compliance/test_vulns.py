"""Known vulnerabilities without a lab: the tracker format contract (a real excerpt and every fake),
parsing Debian's and Ubuntu's data, importing snapshots (older, truncated and foreign files refused,
nothing stored), when a fix first appeared, matching through source packages in dpkg's order, the
rules, and the CLI views (fleet per package, one laptop, the CSV inventory)."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.vulns.feeds import DEBIAN, UBUNTU, VulnDataError, parse
from compliance.vulns.match import installed_sources, match
from compliance.vulns.snapshots import import_snapshot, latest
from tests.compliance.tracker_data import DATA, EXCERPT, tracker_entry, tracker_json, tracker_shape

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def test_every_fake_has_the_shape_of_the_real_tracker_data():
    real = tracker_shape(json.loads(EXCERPT.read_text()))
    assert ("/<package>/<id>/releases/<release>/fixed_version", "str") in real
    assert ("/<package>/<id>/releases/<release>/repositories/<release>", "str") in real
    fake = json.loads(tracker_json({"werne-vuln-probe": {
        "CVE-2026-0001": tracker_entry("CVE-2026-0001", "bookworm", fixed="1.1-1"),
        "CVE-2026-0002": tracker_entry("CVE-2026-0002", "bookworm", fixed=None, urgency="low")}}))
    assert tracker_shape(fake) <= real, tracker_shape(fake) - real


def test_the_real_excerpt_parses_as_the_tracker_means_it():
    feed = parse(EXCERPT.read_text(), T0)
    assert feed.format == DEBIAN and feed.distro == "debian"
    librsync = feed.releases["buster"]["librsync"]
    assert [(e.id, e.fixed, e.urgency, e.status) for e in librsync] == [("CVE-2014-8242", None, "low", "open")]
    mimetex = {e.id: e.fixed for e in feed.releases["stretch"]["mimetex"]}
    assert mimetex == {"CVE-2009-1382": "1.50-1.1", "CVE-2009-2459": "1.50-1.1"}
    assert feed.counts() == {"releases": 3, "sources": 2, "entries": 6}


def test_never_affected_and_undetermined():
    never = {"bookworm": {"status": "resolved", "fixed_version": "0", "urgency": "low"}}
    data = {"p": {"CVE-1": {"releases": never},
                  "CVE-2": {"releases": {"bookworm": {"status": "undetermined", "urgency": "low**"}}}}}
    feed = parse(json.dumps(data), T0)
    assert [(e.id, e.fixed, e.urgency, e.status) for e in feed.releases["bookworm"]["p"]] == [
        ("CVE-2", None, "low", "undetermined")]


def test_ubuntu_usn_data_the_newer_fix_counts():
    feed = parse((DATA / "ubuntu-usn-shape.json").read_text())
    assert feed.format == UBUNTU and feed.as_of == datetime.fromtimestamp(1700500000, UTC)
    assert [(e.id, e.fixed) for e in feed.releases["jammy"]["xrdp"]] == [("CVE-2023-40184", "0.9.17-2ubuntu3+esm2")]
    # The launchpad link is not an id; the source version is what is compared, not comerr-dev's.
    assert [(e.id, e.fixed) for e in feed.releases["jammy"]["e2fsprogs"]] == [("CVE-2022-1304", "1.46.5-2ubuntu1.1")]


@pytest.mark.parametrize(("text", "why"), [
    ('{"librsync": {"CVE-2014-8242": {"scope": "remote", "releases": {"buster": {"status": "op', "not valid JSON"),
    ('[1, 2, 3]', "not security data"),
    ('{"packages": [{"name": "x", "version": "1"}]}', "not the Debian security tracker's JSON"),
    ('{"p": {"CVE-1": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "0"}}}}}', "no usable entries"),
])
def test_wrong_or_truncated_data_is_refused(text, why):
    with pytest.raises(VulnDataError, match=why) as e:
        parse(text, T0)
    assert e.value.exit_code == 2


def matching_snapshot(config, db, tmp_path):  # type: ignore[no-untyped-def]
    f = tmp_path / "tracker.json"
    f.write_text(tracker_json({
        "openssl": {"CVE-2026-1000": tracker_entry("CVE-2026-1000", "bookworm", fixed="3.0.15-1~deb12u1",
                                                   urgency="high"),
                    "CVE-2026-1001": tracker_entry("CVE-2026-1001", "bookworm", fixed="3.0.11-1~deb12u1")},
        "apt": {"CVE-2011-3374": tracker_entry("CVE-2011-3374", "bookworm", fixed=None, urgency="unimportant")},
        "zlib": {"CVE-2026-2000": tracker_entry("CVE-2026-2000", "trixie", fixed="1:1.3.dfsg-4")},
    }))
    return import_snapshot(config, db, f, T0, actor="it-admin")


PACKAGES = [["libssl3:amd64", "3.0.14-1~deb12u2", "openssl", "3.0.14-1~deb12u2", "amd64"],
            ["openssl", "3.0.14-1~deb12u2", "", "", "amd64"],
            ["apt", "2.6.1", "", "", "amd64"],
            ["zlib1g:amd64", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1", "amd64"]]


def test_matching_through_source_packages_in_dpkg_order(compliance_config, compliance_db, tmp_path):
    snap = matching_snapshot(compliance_config, compliance_db, tmp_path)
    found = match(snap, "bookworm", PACKAGES)
    # 3.0.14 < 3.0.15-1~deb12u1 (fixed), but 3.0.14 > 3.0.11 (not affected); apt: no fix, listed;
    # zlib's entry is trixie's only.
    assert [(f.id, f.source, f.packages, f.fixed) for f in found] == [
        ("CVE-2026-1000", "openssl", ("libssl3:amd64", "openssl"), "3.0.15-1~deb12u1"),
        ("CVE-2011-3374", "apt", ("apt",), None)]
    assert installed_sources(PACKAGES)["openssl"].version == "3.0.14-1~deb12u2"
    # The first import knows no earlier time for a fix: "before the first import".
    assert found[0].fix_since is None


def test_import_refuses_older_truncated_or_foreign_files_and_keeps_the_last(compliance_config, compliance_db,
                                                                            tmp_path):
    first = matching_snapshot(compliance_config, compliance_db, tmp_path)
    older = tmp_path / "older.json"
    older.write_text(EXCERPT.read_text())
    with pytest.raises(VulnDataError, match="older than the last debian data imported"):
        import_snapshot(compliance_config, compliance_db, older, T0 - timedelta(days=1))
    shrunk = tmp_path / "shrunk.json"
    shrunk.write_text(tracker_json({"apt": {"CVE-2011-3374": tracker_entry("CVE-2011-3374", "bookworm", fixed=None)}}))
    with pytest.raises(VulnDataError, match=r"names 1 source packages, the last debian data 3: truncated\?"):
        import_snapshot(compliance_config, compliance_db, shrunk, T0 + timedelta(days=1))
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(EXCERPT.read_bytes())[:-20])
    with pytest.raises(VulnDataError, match="truncated"):
        import_snapshot(compliance_config, compliance_db, cut, T0 + timedelta(days=1))
    assert latest(compliance_config, compliance_db, "debian").id == first.id
    assert len(list((compliance_config.state_dir / "vulns").iterdir())) == 1


def test_a_new_fix_is_dated_by_the_snapshot_that_brought_it(compliance_config, compliance_db, tmp_path):
    matching_snapshot(compliance_config, compliance_db, tmp_path)
    f = tmp_path / "next.json"
    f.write_text(tracker_json({
        "openssl": {"CVE-2026-1000": tracker_entry("CVE-2026-1000", "bookworm", fixed="3.0.15-1~deb12u1"),
                    "CVE-2026-1001": tracker_entry("CVE-2026-1001", "bookworm", fixed="3.0.11-1~deb12u1")},
        "apt": {"CVE-2011-3374": tracker_entry("CVE-2011-3374", "bookworm", fixed="2.6.2")},
        "zlib": {"CVE-2026-2000": tracker_entry("CVE-2026-2000", "trixie", fixed="1:1.3.dfsg-4")}}))
    later = T0 + timedelta(days=3)
    snap = import_snapshot(compliance_config, compliance_db, f, later)
    since = {e.id: e.fix_since for e in snap.releases["bookworm"]["openssl"] + snap.releases["bookworm"]["apt"]}
    assert since == {"CVE-2026-1000": None, "CVE-2026-1001": None, "CVE-2011-3374": later.isoformat()}


def test_the_stored_snapshot_is_checked_against_its_digest(compliance_config, compliance_db, tmp_path):
    from compliance.vulns import snapshots

    snap = matching_snapshot(compliance_config, compliance_db, tmp_path)
    stored = next((compliance_config.state_dir / "vulns").iterdir())
    stored.write_bytes(gzip.compress(b'{"releases": {}}'))
    snapshots._read.cache_clear()
    with pytest.raises(VulnDataError, match="changed after its import"):
        latest(compliance_config, compliance_db, "debian")
    assert snap.id == 1


# ---- the rules and the views, on evidence stored as the nightly run stores it
def _store_laptop(config, db, host: str, packages: list[list[str]], when: datetime) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    from compliance.evidence import store_evidence
    from compliance.vulns.packages import keep_package_lists
    from tests.fixtures.compliance import laptop_facts

    facts = laptop_facts()
    facts["os"] = {"id": "debian", "version_id": "12", "version_codename": "bookworm"}
    facts["packages"] = {"list": packages}
    for k in ("vulns", "recovery_key"):
        facts.pop(k)
    keep_package_lists(db, {host: facts})
    assert facts["packages"]["count"] == len(packages) and "list" not in facts["packages"]
    store_evidence(config, db, {host: facts}, when, "nightly")


def test_rules_fail_an_old_fix_and_list_the_unfixed(compliance_config, compliance_db, tmp_path):
    from compliance.engine import evaluate_rule
    from compliance.evidence import freshest
    from compliance.facts import DeviceFacts, EvalContext
    from compliance.rules import load_baselines
    from compliance.vulns.laptops import add_controller_facts

    matching_snapshot(compliance_config, compliance_db, tmp_path)
    _store_laptop(compliance_config, compliance_db, "lap01", PACKAGES, T0)
    ev = freshest(compliance_db, ["lap01"])["lap01"]
    dev = DeviceFacts("lap01", "laptops", ev.facts)
    add_controller_facts(compliance_config, compliance_db, [dev], T0)
    assert "vulns" not in ev.facts  # the stored evidence is not changed
    b = load_baselines()
    ctx = EvalContext(config=compliance_config, now=T0 + timedelta(hours=1))
    fixed = evaluate_rule(b.rule("lx-vulns-fixed"), dev, ctx)
    assert fixed.status == "fail", fixed.evidence
    assert fixed.evidence.startswith("1 known vulnerability with a fix available for more than 7 days")
    assert "CVE-2026-1000 openssl 3.0.14-1~deb12u2 (fixed in 3.0.15-1~deb12u1, high)" in fixed.evidence
    unfixed = evaluate_rule(b.rule("lx-vulns-unfixed"), dev, ctx)
    assert (unfixed.status, unfixed.evidence) == (
        "pass", "1 without a fix in bookworm (listed, not failed): CVE-2011-3374 apt 2.6.1 (no fix yet, unimportant)")
    # Data older than the limit: newer advisories are unknown.
    late = EvalContext(config=compliance_config, now=T0 + timedelta(days=9))
    assert evaluate_rule(b.rule("lx-vulns-fixed"), dev, late).evidence.endswith("newer advisories unknown")
    # No data for a distribution: not applicable by default, fail where the site says so.
    other = DeviceFacts("lap02", "laptops", {**ev.facts, "os": {"id": "ubuntu", "version_codename": "noble"}})
    add_controller_facts(compliance_config, compliance_db, [other], T0)
    assert evaluate_rule(b.rule("lx-vulns-fixed"), other, ctx).status == "not_applicable"
    compliance_config.compliance.vulns_data_missing = "fail"
    assert evaluate_rule(b.rule("lx-vulns-fixed"), other, ctx).status == "fail"


def _cli_config(tmp_path: Path, compliance_config) -> Path:  # type: ignore[no-untyped-def]
    inv = tmp_path / "inventory"
    inv.mkdir()
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    laptops:\n      hosts:\n"
        "        lap01: {ansible_host: 10.200.0.11, owner: A, asset_tag: NB-1, vpn_address: 10.77.0.11}\n"
        "        lap02: {ansible_host: 10.200.0.12, owner: B, asset_tag: NB-2, vpn_address: 10.77.0.12}\n",
        encoding="utf-8")
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[site]\nstate_dir = "{compliance_config.state_dir}"\ninventory = "{inv}"\n', encoding="utf-8")
    return cfg


def test_cli_import_fleet_view_host_view_and_csv(compliance_config, compliance_db, tmp_path):
    from cli import main

    cfg = _cli_config(tmp_path, compliance_config)
    f = tmp_path / "tracker.json"
    f.write_text(tracker_json({
        "openssl": {"CVE-2026-1000": tracker_entry("CVE-2026-1000", "bookworm", fixed="3.0.15-1~deb12u1",
                                                   urgency="high")},
        "apt": {"CVE-2011-3374": tracker_entry("CVE-2011-3374", "bookworm", fixed=None, urgency="unimportant")}}))
    os.utime(f, (T0.timestamp(), T0.timestamp()))
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "vulns", "import", str(f)])
    assert (r.exit_code, r.output) == (0, "snapshot 1: debian data of 2026-11-01 06:00 UTC, 1 releases, "
                                          "2 source packages, 2 entries\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "vulns", "import", str(EXCERPT), "--as-of",
                                  "2026-10-01"])
    assert r.exit_code == 2 and r.output.startswith("Error: debian-tracker-excerpt.json is from 2026-10-01 00:00 UTC")
    _store_laptop(compliance_config, compliance_db, "lap01", PACKAGES, T0)
    _store_laptop(compliance_config, compliance_db, "lap02", PACKAGES[2:], T0)
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "vulns", "--json"])
    assert r.exit_code == 0, r.output
    view = json.loads(r.output)
    assert [(p["source"], p["vulnerabilities"], p["fix_available"], p["worst_urgency"], p["laptops"])
            for p in view["packages"]] == [
        ("openssl", 1, 1, "high", {"lap01": "3.0.14-1~deb12u2"}),
        ("apt", 1, 0, "unimportant", {"lap01": "2.6.1", "lap02": "2.6.1"})]
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "vulns", "show", "lap01"])
    assert r.exit_code == 0 and "CVE-2026-1000" in r.output and r.output.endswith("2 known, 1 with a fix available\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "packages", "lap02"])
    assert r.exit_code == 0
    # Result.output folds CRLF; the bytes are what Excel gets.
    assert r.stdout_bytes.decode() == ("\ufeffpackage;version;source;source_version;architecture\r\n"
                                       "apt;2.6.1;;;amd64\r\nzlib1g:amd64;1:1.2.13.dfsg-1;zlib;1:1.2.13.dfsg-1;amd64\r\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "packages", "lap09"])
    assert r.exit_code == 2 and r.output.startswith("Error: ")
