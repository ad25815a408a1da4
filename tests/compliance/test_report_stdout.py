"""Issue 22: `werne report --format csv --out -` writes the report to stdout (for a pipe or a mail
job), byte for byte what the file would hold; OSCAL, whose signature is a file beside it, says so."""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.db import Database
from tests.fixtures.compliance import fleet, store_run
from tests.fixtures.site import DEMO_INVENTORY, write_config


def test_report_to_stdout_is_the_file_byte_for_byte(run_cli, tmp_path: Path, state_dir: Path) -> None:
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state_dir)
    config = load_config(cfg)
    db = Database(config.database_url)
    store_run(db, config, fleet())
    db.dispose()
    for fmt in ("csv", "json", "junit"):
        out = tmp_path / f"r.{fmt}"
        assert run_cli("report", "--format", fmt, "--out", str(out), config=cfg).exit_code == 0
        r = run_cli("report", "--format", fmt, "--out", "-", config=cfg)
        assert r.exit_code == 0, r.stderr
        assert r.stdout_bytes == out.read_bytes()
        assert not (tmp_path / "-").exists() and not Path("-").exists()
    r = run_cli("report", "--format", "oscal", "--out", "-", config=cfg)
    assert r.exit_code == 2 and "an OSCAL report is written to a file" in r.stderr
