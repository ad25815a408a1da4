"""Issue 22: a push certificate whose topic carries control characters is refused at the door
(the topic is an APNs topic name, com.apple.mgmt.<letters, digits, '.', '-', '_'>), and the refusal
shows the topic escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.processes import free_port
from tests.fakes.fake_apple import FakeApplePushCA
from tests.fixtures.site import write_config


@pytest.mark.parametrize("topic", ["com.apple.mgmt.External.1234\x1b]0;pwned\x07",
                                   "com.apple.mgmt.External.1234\n  serial: forged",
                                   "com.apple.mgmt.External.1234\u202eevil", "com.apple.mgmt."])
def test_a_topic_with_control_characters_is_refused(run_cli, tmp_path: Path, state_dir: Path, topic: str) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("x")
    key_file.chmod(0o600)
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir,
                       f'[mdm]\nurl = "http://127.0.0.1:{free_port()}"\napi_key_file = "{key_file}"\ntimeout = 2\n')
    r = run_cli("mdm", "push-cert", "csr", "--out", str(tmp_path / "push.csr"), config=cfg)
    assert r.exit_code == 0, r.output
    cert = tmp_path / "push.pem"
    cert.write_bytes(FakeApplePushCA().sign((tmp_path / "push.csr").read_bytes(), topic))
    r = run_cli("mdm", "push-cert", "install", str(cert), config=cfg)
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr.startswith(f"Error: {cert} is not an MDM push certificate (subject UID is ")
    assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr and "\u202e" not in r.stderr
