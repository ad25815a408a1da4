"""`werne mdm renew --plan`, `werne mdm expiry` and `werne mdm scep rotate/retire-old` on the command
line: who is due when and what expires, as lines and as JSON with numbers; bad input is one line
and exit 2, with nothing changed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from core.config import load_config
from core.db import Database
from ipad.golive.scep_ca import current_ca, init_scep_ca, trusted_cas
from tests.fixtures.site import write_config
from tests.ipad.test_renewal_plan import enrol

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path, state_dir: Path):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", state_dir,
                        '[mdm]\nserver_url = "https://127.0.0.1:1/mdm"\ntimeout = 2.0\n'
                        "[scep]\nrenew_daily_budget = 1\n[dep]\nenabled = false\n")
    cfg = load_config(path, state_dir=state_dir)
    return path, cfg


def test_the_plan_as_lines_and_json(site, run_cli) -> None:  # type: ignore[no-untyped-def]
    path, cfg = site
    init_scep_ca(cfg)
    db = Database(cfg.database_url)
    ca = current_ca(cfg).subject.rfc4514_string()
    now = dt.datetime.now(dt.UTC)
    enrol(db, "ZDWK1DEGZD", 19.5, ca, now=now)  # both due (within 60 days); one a day
    enrol(db, "DMPXQ0Z1J28K", 20.5, ca, now=now)
    db.dispose()
    r = run_cli("mdm", "renew", "--plan", config=path)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("2 enrolled iPads; renewal 60 days before expiry, at most 1 a day (0 sent today)")
    assert lines[1].split() == ["serial", "school", "state", "expires", "renew", "on", "detail"]
    assert [ln.split()[:3] for ln in lines[2:]] == [["ZDWK1DEGZD", "gs-demo", "due"],
                                                    ["DMPXQ0Z1J28K", "gs-demo", "planned"]]
    data = json.loads(run_cli("mdm", "renew", "--plan", "--json", config=path).output)
    assert data["daily_budget"] == 1 and data["counts"] == {"due": 1, "planned": 1}
    assert [i["days_left"] for i in data["items"]] == [19, 20]


def test_expiry_as_lines_and_json(site, run_cli) -> None:  # type: ignore[no-untyped-def]
    path, cfg = site
    init_scep_ca(cfg)
    r = run_cli("mdm", "expiry", config=path)
    assert r.exit_code == 1  # no push certificate, no signing certificate, TLS not reachable
    rows = {ln.split()[1]: ln.split()[0] for ln in r.output.splitlines()[1:] if ln.split()}
    assert rows == {"push-cert": "FAIL", "scep-ca": "ok", "tls": "FAIL", "signing-cert": "FAIL", "identities": "ok"}
    data = json.loads(run_cli("mdm", "expiry", "--json", config=path).output)
    scep = next(i for i in data["items"] if i["item"] == "scep-ca")
    assert isinstance(scep["days_left"], float) and scep["days_left"] > 3600 and scep["limit_days"] == 400
    assert data["ok"] is False


def test_bad_input_is_one_line_and_changes_nothing(site, run_cli) -> None:  # type: ignore[no-untyped-def]
    path, cfg = site
    r = run_cli("mdm", "scep", "rotate", config=path)
    assert (r.exit_code, r.output) == (2, f"Error: no SCEP CA in {cfg.state_dir / 'scep' / 'depot'}; run `werne mdm "
                                          "scep init`\n")
    init_scep_ca(cfg)
    assert run_cli("mdm", "scep", "rotate", config=path).exit_code == 0
    before = [c.subject for c in trusted_cas(cfg)]
    again = run_cli("mdm", "scep", "rotate", config=path)
    assert again.exit_code == 2 and again.output.startswith("Error: a SCEP CA rotation is not finished")
    assert [c.subject for c in trusted_cas(cfg)] == before
    r = run_cli("mdm", "renew", "NOSUCHSERIAL", config=path)
    assert (r.exit_code, r.output) == (2, "Error: not enrolled: NOSUCHSERIAL\n")
