"""Contract tests of mdm_client.kmfddm against the real KMFDDM v0.8.3 (lab.kmfddm starts it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config
from core.secrets import Secret
from mdm_client.errors import KMFDDMAuthError, KMFDDMError
from mdm_client.factory import kmfddm_client
from mdm_client.kmfddm import KMFDDMClient
from tests.fixtures.kmfddm import KMFDDM_KEY
from tests.parts import require_file

EID = "9F5C5A3E-0B41-4E0B-9A57-3D2C7D4F1A01"
DECL = {
    "Type": "com.apple.configuration.passcode.settings",
    "Identifier": "de.werne.ddm.test.passcode",
    "ServerToken": "ignored-kmfddm-sets-its-own",
    "Payload": {"RequirePasscode": True, "MinimumLength": 8},
}


def client(url: str, key: str = KMFDDM_KEY) -> KMFDDMClient:
    return KMFDDMClient(url, Secret(key, source="test"), timeout=5)


def test_declarations_sets_and_mapping_round_trip(kmfddm):
    c = client(kmfddm)
    assert c.version()  # the binary built by go install says "unknown"; it answers
    assert c.put_declaration(DECL, notify=False) is True
    assert c.put_declaration(DECL, notify=False) is False  # unchanged: KMFDDM answers 304
    got = c.get_declaration(DECL["Identifier"])
    assert got is not None
    keys = ("Type", "Identifier", "Payload")
    assert {k: got[k] for k in keys} == {k: DECL[k] for k in keys}
    assert c.declarations() == [DECL["Identifier"]]
    assert c.get_declaration("de.werne.ddm.nope") is None

    assert c.add_to_set("werne-gs-demo-pupil", DECL["Identifier"], notify=False) is True
    assert c.add_to_set("werne-gs-demo-pupil", DECL["Identifier"], notify=False) is False
    assert c.set_declarations("werne-gs-demo-pupil") == [DECL["Identifier"]]
    assert c.declaration_sets(DECL["Identifier"]) == ["werne-gs-demo-pupil"]
    assert "werne-gs-demo-pupil" in c.sets()

    assert c.enrollment_sets(EID) == []
    assert c.map_enrollment(EID, "werne-gs-demo-pupil", notify=False) is True
    assert c.enrollment_sets(EID) == ["werne-gs-demo-pupil"]
    assert c.unmap_enrollment(EID, "werne-gs-demo-pupil", notify=False) is True
    assert c.enrollment_sets(EID) == []

    # No device has reported yet: empty status, no report.
    assert c.declaration_status([EID]).get(EID) in (None, [])
    assert c.status_errors([EID]).get(EID) in (None, [])
    assert c.status_values([EID], prefix=".StatusItems.softwareupdate.%").get(EID) in (None, [])
    assert c.status_report(EID) is None

    assert c.remove_from_set("werne-gs-demo-pupil", DECL["Identifier"], notify=False) is True
    assert c.delete_declaration(DECL["Identifier"]) is True
    assert c.get_declaration(DECL["Identifier"]) is None


def test_a_changed_declaration_gets_a_new_server_token(kmfddm):
    c = client(kmfddm)
    c.put_declaration(DECL, notify=False)
    first = c.get_declaration(DECL["Identifier"])["ServerToken"]
    assert first != DECL["ServerToken"]
    c.put_declaration({**DECL, "Payload": {"RequirePasscode": True, "MinimumLength": 10}}, notify=False)
    assert c.get_declaration(DECL["Identifier"])["ServerToken"] != first


def test_bad_key_is_an_auth_error(kmfddm):
    with pytest.raises(KMFDDMAuthError) as e:
        client(kmfddm, "wrong").declarations()
    assert str(e.value) == f"GET {kmfddm}/v1/declarations: 401 Unauthorized: KMFDDM refused the API key"
    assert e.value.exit_code == 2 and e.value.status == 401


def test_bad_declaration_is_a_4xx_with_the_servers_message(kmfddm):
    c = client(kmfddm)
    with pytest.raises(KMFDDMError) as e:
        c.put_declaration({"Type": "com.apple.configuration.passcode.settings", "Payload": {}}, notify=False)
    assert e.value.status == 400
    assert e.value.server_message == "invalid declaration"
    assert str(e.value) == f"PUT {kmfddm}/v1/declarations: HTTP 400: invalid declaration"
    assert c.declarations() == []


@pytest.mark.kmfddm
def test_a_failed_notification_is_only_logged_by_kmfddm(tmp_path):
    # KMFDDM enqueues to a NanoMDM that does not answer: the change is stored and answered as a
    # change; the failed enqueue shows only in KMFDDM's log.
    from lab import kmfddm as lab_kmfddm

    require_file("KMFDDM", lab_kmfddm.KMFDDM_BIN, marker="kmfddm", hint="run scripts/setup.sh")
    server = lab_kmfddm.up(tmp_path / "s", Secret(KMFDDM_KEY, source="test"),
                           enqueue_url="http://127.0.0.1:9/v1/enqueue/", enqueue_key=Secret("k", source="test"))
    try:
        c = client(server.url)
        c.put_declaration(DECL, notify=False)
        c.add_to_set("s1", DECL["Identifier"], notify=False)
        assert c.map_enrollment(EID, "s1", notify=True) is True
        assert c.enrollment_sets(EID) == ["s1"]
        log = server.log.read_text()
        assert f"http://127.0.0.1:9/v1/enqueue/{EID}" in log and "connection refused" in log
        argv = server_argv(tmp_path / "s")
        assert "-enqueue" in argv and KMFDDM_KEY not in " ".join(argv) and "k" not in argv
    finally:
        lab_kmfddm.down(tmp_path / "s")


def server_argv(state) -> list[str]:
    """The running KMFDDM's command line: the keys must not be in it."""
    from lab import kmfddm as lab_kmfddm

    pid = lab_kmfddm.status(state).pid
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_without_an_enqueue_url_changes_are_stored_and_nobody_is_notified(kmfddm):
    c = client(kmfddm)
    c.put_declaration(DECL, notify=True)
    c.add_to_set("s1", DECL["Identifier"], notify=True)
    assert c.map_enrollment(EID, "s1", notify=True) is True


def test_unreachable_server_names_the_url():
    c = KMFDDMClient("http://127.0.0.1:9", Secret("k", source="test"), timeout=2, retries=0)
    with pytest.raises(KMFDDMError) as e:
        c.declarations()
    assert str(e.value) == ("GET http://127.0.0.1:9/v1/declarations: cannot connect (connection refused); "
                            "is KMFDDM running at http://127.0.0.1:9?")
    assert e.value.exit_code == 3


def test_factory_reads_the_ddm_settings(tmp_path, monkeypatch):
    key = tmp_path / "ddm.key"
    key.write_text("secret-from-file\n")
    monkeypatch.delenv("WERNE_DDM_API_KEY", raising=False)
    cfg = Config.model_validate({"ddm": {"url": "http://127.0.0.1:9003/", "api_key_file": str(key), "timeout": 4}})
    c = kmfddm_client(cfg)
    assert (c.url, c.timeout, c._auth) == ("http://127.0.0.1:9003", 4, ("kmfddm", "secret-from-file"))
