"""The MDM part of the lab: lab.mdm.up/down start and stop real NanoMDM, webhook and simulator processes."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab import mdm as lab_mdm
from tests.fixtures.mdm_lab import lab_serials

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
        r = runner.invoke(main, ["--state-dir", str(state), "ipad", "query", serial, "--deadline", "30"])
        assert r.exit_code == 0, r.output
        assert "DeviceInformation: Acknowledged" in r.output
    finally:
        lab_mdm.down(state)
    assert lab_mdm.status(state).running == {"simulator": False, "webhook": False, "nanomdm": False}
    assert not list((state / "mdm").glob("*.pid"))
    lab_mdm.down(state)
