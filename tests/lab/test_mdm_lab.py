"""The MDM part of the lab: lab.mdm.up/down start and stop real NanoMDM, webhook and simulator processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.config import REPO_ROOT
from lab import mdm as lab_mdm
from lab import processes
from tests.fixtures.mdm_lab import lab_serials, wait_for

pytestmark = [pytest.mark.mdm, pytest.mark.slow]


def test_up_query_down(tmp_path: Path) -> None:
    from cli import main
    from core.config import load_config

    state = tmp_path / "state"
    assert lab_mdm.status(state).running == {"simulator": False, "webhook": False, "nanomdm": False}
    lab_mdm.down(state)  # safe when nothing runs
    try:
        st = lab_mdm.up(state, 10, load_config(state_dir=state), poll_interval=0.5)
        assert st.running == {"simulator": True, "webhook": True, "nanomdm": True}
        d = state / "mdm"
        for name in ("api_key", "webhook_hmac_key", "ca.key", "devices.json"):
            assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
        # The secrets are passed in the environment, never on a command line.
        keys = [(d / n).read_text().strip() for n in ("api_key", "webhook_hmac_key")]
        for pid in st.pids.values():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert all(k not in cmdline for k in keys)
        # `werne ipad ...` finds the lab (no mdm.api_key_file configured) and its iPads answer.
        # The lab's iPads (the demo inventory's classroom Apple TVs enrol beside them: not counted).
        ipads = lab_serials(d)
        assert len(ipads) == 10
        runner = CliRunner()
        for _ in range(300):
            r = runner.invoke(main, ["--state-dir", str(state), "ipad", "list", "--json"])
            rows = [x for x in json.loads(r.output) if x["serial"] in ipads]
            if sum(1 for x in rows if x["state"] == "enrolled") == 9:  # one is offline on purpose
                break
            time.sleep(0.1)
        by_state = {x["serial"]: x["state"] for x in rows}
        assert list(by_state.values()).count("enrolled") == 9
        serial = next(s for s, v in by_state.items() if v == "enrolled")
        r = runner.invoke(main, ["--state-dir", str(state), "ipad", "query", serial, "--deadline", "120"])
        assert r.exit_code == 0, r.output
        assert "DeviceInformation: Acknowledged" in r.output
        answers_lost_while_the_receiver_is_down(state, d)
    finally:
        lab_mdm.down(state)
    assert lab_mdm.status(state).running == {"simulator": False, "webhook": False, "nanomdm": False}
    assert not list((state / "mdm").glob("*.pid"))
    lab_mdm.down(state)


def answers_lost_while_the_receiver_is_down(state: Path, d: Path) -> None:
    """The webhook receiver is down while three iPads answer a query: NanoMDM posts each event once,
    so every answer is lost on its way to werne. Once the receiver is back, the iPads' next Idle
    polls tell werne they were handed their queues: the query asks again, and ends with every
    answer (exit 0), the originals still queued and each new command naming the one it replaces."""
    from sqlalchemy import text

    from core.config import load_config
    from core.db import Database

    config = load_config(state_dir=state)
    # The first iPads of the lab have no faults (lab.mdm.lab_faults: the last six have).
    first = [x["serial"] for x in json.loads((d / "devices.json").read_text())["devices"]
             if x.get("platform", "iOS") == "iOS"][:3]
    db = Database(config.database_url)

    def rows() -> list[tuple[str, str, str, dict]]:
        with db.engine.connect() as conn:
            got = conn.execute(text("SELECT command_uuid, request_type, status, detail FROM mdm_commands "
                                    "WHERE id > :before"), {"before": before}).fetchall()
        # The query's own (the web page's arrival watcher may configure an iPad meanwhile).
        return [(u, t, st, d) for u, t, st, d in ((u, t, st, json.loads(det) if isinstance(det, str) else det)
                                                  for u, t, st, det in got) if d.get("action") == "query"]

    try:
        with db.engine.connect() as conn:
            before = conn.execute(text("SELECT coalesce(max(id), 0) FROM mdm_commands")).scalar_one()
        lab_mdm.stop_werne(state)
        query = subprocess.Popen(
            [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "--state-dir", str(state),
             "ipad", "query", *first, "--deadline", "120", "--json"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # NanoMDM took every answer (its log has each report) while no receiver listened.
            uuids = wait_for("the query's 4 commands recorded", lambda: {r[0] for r in rows()} if len(
                rows()) == 4 * len(first) else None)
            log_file = d / "logs" / "nanomdm.log"
            wait_for("NanoMDM to take the 12 answers", lambda: sum(
                1 for line in log_file.read_text(errors="replace").splitlines()
                if "status=Acknowledged" in line and any(u in line for u in uuids)) >= 4 * len(first), timeout=60)
            lab_mdm.start_werne(state, config)
            out, err = query.communicate(timeout=180)
        finally:
            if query.poll() is None:
                query.kill()
                query.wait()
    finally:
        db.dispose()
        if processes.running("webhook", d) is None:
            lab_mdm.start_werne(state, config)
    assert query.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report["not_answered"] == [] and report["counts"]["ok"] == len(first)
    got = rows()
    originals = [r for r in got if r[0] in uuids]
    again = [r for r in got if r[0] not in uuids]
    assert len(originals) == len(again) == 4 * len(first)
    assert {r[2] for r in originals} == {"queued"}  # their answers never reached werne
    assert {r[2] for r in again} == {"Acknowledged"}
    assert {r[3]["asked_again_for"] for r in again} == uuids
    assert {r[1] for r in again} == {"DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList"}
