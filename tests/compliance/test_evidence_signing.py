"""Signed evidence and the chains `werne compliance verify` checks: the OSCAL report and the run's chain
head signed with the city's key and verified by the real `openssl`; a bad key is one line and an
unsigned report; an edited audit row and an edited run row are both named; a deleted audit row is
named; a database whose hashes were recomputed no longer matches its signed head."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from compliance import history
from core import audit
from core.config import load_config
from core.db import Database
from tests.fixtures.compliance import fleet, laptop_facts, store_run
from tests.fixtures.site import REPO, write_secret
from tests.parts import require_tool


def _pem(key) -> str:  # type: ignore[no-untyped-def]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(params=["ec", "rsa"])
def city_key(request, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1()) if request.param == "ec" else rsa.generate_private_key(65537, 2048)
    priv = write_secret(tmp_path / "city-signing.key", _pem(key))
    pub = tmp_path / "city-signing.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _config(tmp_path: Path, state_dir: Path, key: Path | str | None) -> Path:
    extra = f'\n[compliance]\nsigning_key_file = "{key}"\n' if key is not None else ""
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\nstate_dir = "{state_dir}"\nname = "Musterstadt"\n{extra}', encoding="utf-8")
    return cfg


def _stored_runs(cfg: Path, n: int = 2) -> tuple[Database, list[int]]:
    config = load_config(cfg)
    db = Database(config.database_url)
    ids = []
    for i in range(n):
        devs = fleet()
        devs[i % 3].facts = laptop_facts(sshd__permitrootlogin="yes")
        ids.append(store_run(db, config, devs))
        audit.record(db, "compliance.run", "all", {"run": ids[-1]}, actor="tester")
    return db, ids


def _openssl_verify(pub: Path, data: Path, sig: Path) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    return subprocess.run([openssl, "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(data)],
                          capture_output=True, text=True, timeout=60)


def test_oscal_report_and_chain_head_are_signed_and_openssl_verifies_both(run_cli, tmp_path, state_dir, city_key):
    priv, pub = city_key
    cfg = _config(tmp_path, state_dir, priv)
    db, ids = _stored_runs(cfg)
    out = tmp_path / "evidence" / "run.oscal.json"
    res = run_cli("report", "--format", "oscal", "--out", str(out), config=cfg)
    assert res.exit_code == 0, res.output
    assert res.stdout == f"{out}\nsignature: {out}.sig\n"
    assert _openssl_verify(pub, out, Path(f"{out}.sig")).stdout.strip() == "Verified OK"
    # The chain head travels inside the document: statement and signature, checkable with openssl alone.
    doc = json.loads(out.read_text(encoding="utf-8"))["assessment-results"]
    files = {r["base64"]["filename"]: base64.b64decode(r["base64"]["value"])
             for r in doc["back-matter"]["resources"] if "base64" in r}
    head, head_sig = tmp_path / "head", tmp_path / "head.sig"
    head.write_bytes(files[f"run-{ids[-1]}.head"])
    head_sig.write_bytes(files[f"run-{ids[-1]}.head.sig"])
    assert _openssl_verify(pub, head, head_sig).stdout.strip() == "Verified OK"
    run = history.load_run(db, ids[-1], with_results=False)
    assert f"run_record_hash: {run.record_hash}" in head.read_text()
    assert {p["name"]: p["value"] for p in doc["metadata"]["props"]}["signature"] == "detached"
    # A changed byte no longer verifies.
    out.write_bytes(out.read_bytes().replace(b"not-satisfied", b"satisfied"))
    assert _openssl_verify(pub, out, Path(f"{out}.sig")).returncode != 0
    # The key never reaches the output.
    assert priv.read_text()[40:80] not in res.output


def test_verify_checks_signatures_and_names_an_altered_document(run_cli, tmp_path, state_dir, city_key):
    priv, _ = city_key
    cfg = _config(tmp_path, state_dir, priv)
    _stored_runs(cfg)
    out = tmp_path / "run.oscal.json"
    assert run_cli("report", "--format", "oscal", "--out", str(out), config=cfg).exit_code == 0
    ok = run_cli("compliance", "verify", "--signed", str(out), config=cfg)
    assert ok.exit_code == 0, ok.output
    assert "1 signed head(s), 1 signed document(s), key sha256:" in ok.stdout
    out.write_text(out.read_text(encoding="utf-8") + " ", encoding="utf-8")
    bad = run_cli("compliance", "verify", "--signed", str(out), config=cfg)
    assert bad.exit_code == 1
    assert bad.stderr == f"Error: {out}: signature run.oscal.json.sig does not verify\n"


@pytest.mark.parametrize("problem", ["missing", "garbage", "ed25519"])
def test_missing_or_wrong_key_is_one_line_and_the_report_is_written_unsigned(run_cli, tmp_path, state_dir, problem):
    key = tmp_path / "city-signing.key"
    if problem == "garbage":
        write_secret(key, "not a key\n")
    elif problem == "ed25519":
        write_secret(key, _pem(ed25519.Ed25519PrivateKey.generate()))
    cfg = _config(tmp_path, state_dir, key)
    _stored_runs(cfg, 1)
    out = tmp_path / "run.oscal.json"
    res = run_cli("report", "--format", "oscal", "--out", str(out), config=cfg)
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("Error: cannot sign: signing key")
    assert res.stderr.endswith(f"; {out} written unsigned\n")
    assert "Traceback" not in res.output
    props = json.loads(out.read_text(encoding="utf-8"))["assessment-results"]["metadata"]["props"]
    assert {p["name"]: p["value"] for p in props}["signature"] == "unsigned"
    assert not Path(f"{out}.sig").exists()


def _sqlite(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(state_dir / "werne.db")


def test_verify_names_an_edited_audit_row_and_an_edited_run_row(run_cli, tmp_path, state_dir):
    cfg = _config(tmp_path, state_dir, None)
    db, ids = _stored_runs(cfg, 3)
    assert run_cli("compliance", "verify", config=cfg).exit_code == 0
    with _sqlite(state_dir) as con:
        event = con.execute("select min(id) from audit_events where action='compliance.run'").fetchone()[0]
        con.execute("update audit_events set target='laptops' where id=?", (event,))
        con.execute("update compliance_results set status='pass' where run_id=? and status='fail'", (ids[1],))
    res = run_cli("compliance", "verify", config=cfg)
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert any(line.startswith(f"Error: run {ids[1]}: record altered") for line in lines), res.stderr
    assert any(line.startswith(f"Error: audit event {event} (compliance.run): record altered") for line in lines)
    assert len(lines) == 2, res.stderr


def test_verify_names_a_deleted_audit_row(run_cli, tmp_path, state_dir):
    cfg = _config(tmp_path, state_dir, None)
    _stored_runs(cfg, 3)
    with _sqlite(state_dir) as con:
        first, second, third = [r[0] for r in con.execute("select id from audit_events order by id").fetchall()]
        con.execute("delete from audit_events where id=?", (second,))
    res = run_cli("compliance", "verify", config=cfg)
    assert res.exit_code == 1
    assert res.stderr.startswith(f"Error: audit event {third} (compliance.run): link broken")
    assert f"event(s) {second} missing: deleted?" in res.stderr


def test_recomputed_chain_no_longer_matches_its_signed_head(run_cli, tmp_path, state_dir, city_key):
    """Rewriting a run and recomputing every hash defeats a bare chain, not a signed head."""
    priv, _ = city_key
    cfg = _config(tmp_path, state_dir, priv)
    db, ids = _stored_runs(cfg, 1)
    from compliance.signing import load_signer, sign_head

    sign_head(db, load_signer(priv), ids[0])
    from compliance.models import ComplianceResult, ComplianceRun

    with db.session() as s:
        run = s.get(ComplianceRun, ids[0])
        for r in run.results:
            if r.status == "fail":
                r.status = "pass"
        s.flush()
        rows = [(r.device, r.rule_id, r.status, r.evidence, r.waiver) for r in
                s.query(ComplianceResult).filter_by(run_id=ids[0])]
        run.record_hash = history.record_hash(run, rows)
    res = run_cli("compliance", "verify", config=cfg)
    assert res.exit_code == 1
    assert res.stderr == (f"Error: signed head of run {ids[0]}: run {ids[0]}'s record hash in the database "
                          "differs from the signed one\n")


def test_every_run_is_signed_when_a_key_is_configured(tmp_path, state_dir, city_key):
    from compliance.signing import load_public_key, sign_run_head, verify_heads

    priv, pub = city_key
    cfg = _config(tmp_path, state_dir, priv)
    db, ids = _stored_runs(cfg, 1)
    assert sign_run_head(priv, db, ids[0]) is None
    assert verify_heads(db, load_public_key(pub)) == (1, [])
    # A run stored after signing began, without a signature of its own, is named...
    config = load_config(cfg)
    ids.append(store_run(db, config, fleet(), now=datetime.now(UTC)))
    n, problems = verify_heads(db, load_public_key(pub))
    assert n == 1 and len(problems) == 1
    assert problems[0].startswith(f"run {ids[1]}: chain head not signed (runs are signed since ")
    # ...but signing an old run's head later does not make the runs before it "unsigned".
    older = store_run(db, config, fleet(), now=datetime(2020, 1, 1, tzinfo=UTC))
    assert sign_run_head(priv, db, older) is None and sign_run_head(priv, db, ids[1]) is None
    assert verify_heads(db, load_public_key(pub)) == (3, [])
    assert sign_run_head(tmp_path / "nope.key", db, ids[1]) == (
        f"run {ids[1]}: chain head not signed: signing key: secret file {tmp_path / 'nope.key'} does not exist")


@pytest.mark.slow  # a real `werne compliance run` (ansible-runner against a laptop that refuses SSH)
@pytest.mark.parametrize("key_ok", [True, False], ids=["key", "broken-key"])
def test_a_run_signs_its_chain_head_and_a_broken_key_only_warns(tmp_path, state_dir, key_ok):
    import sys

    from tests.fixtures.site import unreachable_laptop_site

    key = write_secret(tmp_path / "city.key", _pem(ec.generate_private_key(ec.SECP256R1())) if key_ok else "junk\n")
    cfg, _ = unreachable_laptop_site(tmp_path, f'[compliance]\nsigning_key_file = "{key}"\n')
    p = subprocess.run([sys.executable, "-m", "cli", "--config", str(cfg), "compliance", "run", "--laptops"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr  # findings: the laptop is unreachable
    assert p.stdout.startswith("run 1: 0/1 devices compliant")
    with _sqlite(state_dir) as con:
        heads = con.execute("select run_id from chain_signatures").fetchall()
    if key_ok:
        assert heads == [(1,)] and p.stderr == ""
    else:
        assert heads == []
        assert p.stderr == f"warning: run 1: chain head not signed: signing key {key} is not a PEM private key\n"
