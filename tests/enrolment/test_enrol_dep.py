"""Approval through real NanoDEP (depserver) against the fake Apple DEP: profile definition, per-serial
outcomes, THROTTLED retries, NanoDEP down; via the real CLI (`werne enrol approve`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.audit import list_events
from enrolment import dep
from enrolment import requests as reqs
from enrolment.accounts import Principal
from enrolment.errors import DEPProfileError, DEPUnavailable
from tests.fakes.fake_dep import FakeDEP
from tests.fixtures.enrolment import SCHOOL_A, EnrolSite, free_port, make_site

A = Principal("anna", "coordinator", frozenset({SCHOOL_A}))
ADMIN = Principal("it", "admin")
S = ["DEPSER00001", "DEPSER00002", "DEPSER00003"]


def _request(site: EnrolSite, serials: list[str]) -> int:
    from core.inventory import load_inventory

    inv = load_inventory(site.inventory)
    return reqs.create_request(site.db(), inv, A, SCHOOL_A, "pupil", "5b", "\n".join(serials)).id


def test_approve_assigns_through_nanodep_and_defines_profile(enrol_site: EnrolSite, fake_dep: FakeDEP) -> None:
    fake_dep.add_devices(S)
    rid = _request(enrol_site, S)
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 0, r.stderr
    assert f"request {rid}: {SCHOOL_A} pupil '5b' assigned" in r.stdout
    # Apple got one profile for the school, with the department and support contact from schools.yml.
    (profile,) = fake_dep.profiles.values()
    assert profile["department"] == "Schulverwaltung Demo"
    assert profile["support_email_address"] == "it-schulen@demo.invalid"
    assert profile["is_supervised"] is True and profile["is_mdm_removable"] is False
    assert "AppleID" in profile["skip_setup_items"]
    assert fake_dep.assigned_serials() == {s: profile["profile_uuid"] for s in S}
    shown = json.loads(enrol_site.cli("enrol", "show", str(rid), "--json").stdout)
    assert [x["status"] for x in shown["serials"]] == ["assigned"] * 3
    assert [x["dep_status"] for x in shown["serials"]] == ["SUCCESS"] * 3
    actions = [e.action for e in list_events(enrol_site.db())]
    assert {"dep.define_profile", "enrol.approve", "dep.assign_profile"} <= set(actions)
    # A second request of the same school reuses the defined profile.
    fake_dep.add_devices(["DEPSER00009"])
    rid2 = _request(enrol_site, ["DEPSER00009"])
    assert enrol_site.cli("enrol", "approve", str(rid2)).returncode == 0
    assert len(fake_dep.profiles) == 1


def test_not_accessible_and_failed_are_reported_per_serial(enrol_site: EnrolSite, fake_dep: FakeDEP) -> None:
    fake_dep.add_devices(S[:2])  # S[2] is not in the organisation: NOT_ACCESSIBLE
    fake_dep.force_status(S[1], "FAILED")
    rid = _request(enrol_site, S)
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 1, r.stdout + r.stderr
    view = reqs.get_request(enrol_site.db(), ADMIN, rid)
    by = {x.serial: x for x in view.serials}
    assert (by[S[0]].status, by[S[1]].status, by[S[2]].status) == ("assigned", "failed", "failed")
    assert by[S[1]].reason.startswith("FAILED")
    assert by[S[2]].reason.startswith("NOT_ACCESSIBLE")
    assert view.status == "assigned"
    assert "NOT_ACCESSIBLE: this serial is not assigned to the city's MDM server" in r.stdout


def test_throttled_is_retried_after_retry_after_seconds(enrol_site: EnrolSite, fake_dep: FakeDEP) -> None:
    fake_dep.add_devices(S)
    fake_dep.throttle(S[0], times=1, retry_after_seconds=1)
    rid = _request(enrol_site, S)
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [a.statuses for a in fake_dep.assignments] == [
        {S[0]: "THROTTLED", S[1]: "SUCCESS", S[2]: "SUCCESS"},
        {S[0]: "SUCCESS"},
    ]
    assert set(fake_dep.assigned_serials()) == set(S)


def test_throttled_longer_than_allowed_stays_for_a_later_run(enrol_site: EnrolSite, fake_dep: FakeDEP) -> None:
    fake_dep.add_devices(S[:2])
    fake_dep.throttle(S[0], times=1, retry_after_seconds=3600)  # more than max_retry_wait_s
    rid = _request(enrol_site, S[:2])
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 1
    assert "THROTTLED: Apple asks to retry after 3600 s" in r.stdout
    assert len(fake_dep.assignments) == 1
    view = reqs.get_request(enrol_site.db(), ADMIN, rid)
    assert {x.serial: x.status for x in view.serials} == {S[0]: "requested", S[1]: "assigned"}
    # The next approval retries only the throttled serial.
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake_dep.assignments[-1].serials == [S[0]]
    assert reqs.get_request(enrol_site.db(), ADMIN, rid).status == "assigned"


def test_nanodep_down_gives_clear_message_and_changes_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", f"http://127.0.0.1:{free_port()}")
    rid = _request(site, S)
    r = site.cli("enrol", "approve", str(rid))
    assert r.returncode == 3
    assert r.stderr.startswith("Error: NanoDEP at http://127.0.0.1:") and "is not reachable" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    view = reqs.get_request(site.db(), ADMIN, rid)
    assert view.status == "submitted" and view.decided_by is None
    assert [(x.status, x.dep_status) for x in view.serials] == [("requested", None)] * len(S)


def test_apple_error_is_explained(enrol_site: EnrolSite, fake_dep: FakeDEP, nanodep) -> None:  # type: ignore[no-untyped-def]
    # Wrong OAuth tokens in NanoDEP: Apple refuses the session; the request stays submitted.
    fake_dep.tokens.consumer_secret = "changed"
    rid = _request(enrol_site, S)
    r = enrol_site.cli("enrol", "approve", str(rid))
    assert r.returncode == 3 and r.stderr.startswith("Error: POST http://127.0.0.1:")
    assert reqs.get_request(enrol_site.db(), ADMIN, rid).status == "submitted"


def test_profile_data_file_is_validated(tmp_path: Path) -> None:
    good = dep.load_profile_template()
    assert good["is_supervised"] is True
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "profile_name: x\nurl: https://x\nis_mdm_removable: false\nis_supervised: true\n"
        "skip_setup_items: [AppleID, FileVault]\n",
        encoding="utf-8",
    )
    with pytest.raises(DEPProfileError, match="unknown skip key\\(s\\) for iPadOS: FileVault"):
        dep.load_profile_template(bad)
    bad.write_text("profile_name: x\nurl: https://x\nis_mdm_removable: false\n", encoding="utf-8")
    with pytest.raises(DEPProfileError, match="only be false when is_supervised is true"):
        dep.load_profile_template(bad)
    bad.write_text(
        "profile_name: x\nurl: https://x\nis_mdm_removable: false\nis_supervised: true\nbogus: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(DEPProfileError, match="unknown profile key 'bogus'"):
        dep.load_profile_template(bad)


def test_client_error_names_method_url_and_status(nanodep) -> None:  # type: ignore[no-untyped-def]
    from core.secrets import Secret

    c = dep.NanoDEPClient(nanodep.url, "noname", Secret("wrong", "test"), timeout=5)
    with pytest.raises(DEPUnavailable, match=r"PUT http://127.0.0.1:\d+/v1/config/noname: NanoDEP refused") as e:
        c.set_base_url("http://127.0.0.1:1")
    assert "wrong" not in str(e.value)  # the key never appears in messages


def test_nanodep_failing_during_a_retry_keeps_what_apple_assigned(nanodep) -> None:  # type: ignore[no-untyped-def]
    from core.secrets import Secret
    from tests.fixtures.enrolment import start_nanodep

    with FakeDEP(set(S)) as fake:
        own = start_nanodep(Path(nanodep.key_file).parent / "second")
        try:
            own.configure("w", fake)
            client = dep.NanoDEPClient(own.url, "w", Secret(own.api_key, "test"), timeout=5)
            uuid = client.define_profile({"profile_name": "x", "url": "https://x", "is_mdm_removable": True})
            fake.throttle(S[0], times=5, retry_after_seconds=1)

            def sleep_and_stop(_s: float) -> None:
                own.stop()  # NanoDEP goes away between the first call and the retry

            result = dep.assign_with_retries(client, uuid, S, sleep=sleep_and_stop)
        finally:
            own.stop()
    assert {k: v.status for k, v in result.outcomes.items()} == {
        S[0]: "THROTTLED",
        S[1]: "SUCCESS",
        S[2]: "SUCCESS",
    }
    assert result.calls == 1


def test_dep_status_through_nanodep(enrol_site: EnrolSite, fake_dep: FakeDEP, tmp_path: Path) -> None:
    r = enrol_site.cli("enrol", "dep-status")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NanoDEP ") and f"DEP name {enrol_site.dep_name}: server 'Fake DEP Server'" in r.stdout
    assert fake_dep.requests[-1] == ("GET", "/account")
    down = make_site(tmp_path / "down", f"http://127.0.0.1:{free_port()}")
    r = down.cli("enrol", "dep-status")
    assert r.returncode == 3 and "is not reachable" in r.stderr and len(r.stderr.splitlines()) == 1
