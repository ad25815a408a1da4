"""The stored history: runs hash-chained, verified offline; tampering is found; killed runs never complete."""

from __future__ import annotations

import sqlite3

from compliance import history
from compliance.history import load_run, verify_chain
from tests.fixtures.compliance import fleet, store_run


def _sqlite_path(db) -> str:
    return db.url.removeprefix("sqlite:///")


def test_chain_links_runs_and_verifies(compliance_db, two_runs):
    r1, r2 = two_runs
    a, b = load_run(compliance_db, r1), load_run(compliance_db, r2)
    assert a.prev_hash is None and b.prev_hash == a.record_hash
    rep = verify_chain(compliance_db)
    assert (rep.ok, rep.runs_checked, rep.head, rep.problems) == (True, 2, b.record_hash, [])


def test_tampered_evidence_breaks_verify(compliance_db, two_runs):
    r1, _ = two_runs
    con = sqlite3.connect(_sqlite_path(compliance_db))
    con.execute(
        "UPDATE compliance_results SET status='pass', evidence='looks fine' "
        "WHERE run_id=? AND device='lap03' AND rule_id='lx-login-banner'",
        (r1,),
    )
    con.commit()
    con.close()
    rep = verify_chain(compliance_db)
    assert not rep.ok
    assert len(rep.problems) == 1 and rep.problems[0].startswith(f"run {r1}: record altered")


def test_rewritten_run_with_recomputed_hash_breaks_the_next_link(compliance_db, two_runs):
    r1, r2 = two_runs
    con = sqlite3.connect(_sqlite_path(compliance_db))
    con.execute("UPDATE compliance_results SET status='pass' WHERE run_id=?", (r1,))
    con.commit()
    con.close()
    # An attacker recomputes run 1's hash so it is self-consistent: run 2's link then breaks.
    from sqlalchemy import select

    from compliance.models import ComplianceResult, ComplianceRun

    with compliance_db.session() as s:
        run = s.get(ComplianceRun, r1)
        rows = [
            tuple(r)
            for r in s.execute(
                select(
                    ComplianceResult.device,
                    ComplianceResult.rule_id,
                    ComplianceResult.status,
                    ComplianceResult.evidence,
                    ComplianceResult.waiver,
                ).where(ComplianceResult.run_id == r1)
            )
        ]
        run.record_hash = history.record_hash(run, rows)
    rep = verify_chain(compliance_db)
    assert [p.split(":")[0] for p in rep.problems] == [f"run {r2}"]
    assert "link broken" in rep.problems[0]


def test_unfinished_run_is_never_complete_and_next_run_marks_it_interrupted(compliance_db, compliance_config):
    dead = history.begin_run(compliance_db, "all", "tester", "i", "b", "w")
    r = store_run(compliance_db, compliance_config, fleet(1, 1))
    runs = {x.id: x for x in history.list_runs(compliance_db)}
    assert runs[dead].status == "interrupted" and runs[dead].record_hash is None
    assert runs[r].status == "complete" and runs[r].prev_hash is None
    assert load_run(compliance_db).id == r
    assert verify_chain(compliance_db).ok


def test_verify_cli_exit_codes(run_cli, compliance_db, two_runs, compliance_config, tmp_path):
    from tests.fixtures.site import write_config

    cfg = write_config(tmp_path / "w.toml", compliance_config.inventory_dir, compliance_config.state_dir)
    res = run_cli("compliance", "verify", config=cfg)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("ok: 2 run(s), chain head ")
    con = sqlite3.connect(_sqlite_path(compliance_db))
    con.execute("UPDATE compliance_runs SET summary='{}' WHERE id=?", (two_runs[1],))
    con.commit()
    con.close()
    res = run_cli("compliance", "verify", config=cfg)
    assert res.exit_code == 1
    assert res.stderr.startswith(f"Error: run {two_runs[1]}: record altered")
