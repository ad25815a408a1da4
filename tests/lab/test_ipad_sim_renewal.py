"""The simulated iPads renew their identity the way a real one does when the MDM server re-sends
the enrolment profile (InstallProfile with the same MDM payload): a new key, a SCEP round trip
through the real scepserver, Authenticate and TokenUpdate signed by the new identity, and the
acknowledgement signed by it too; the real NanoMDM (certauth, -ca the trust bundle) accepts every
later message. A failed SCEP request or a changed ServerURL leaves the old identity in place, and
NanoMDM keeps accepting it. The contract of the fake: what a real iPad does (Apple's com.apple.mdm
payload: "When updating the payload, the value of this key must not change"; NanoMDM associates a
new certificate on Authenticate only)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.lab.renewal_world import TOPIC, RenewalWorld, open_world

pytestmark = pytest.mark.mdm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenewalWorld]:
    with open_world(tmp_path_factory.mktemp("sim-renewal"), [{}, {"renewal_failures": 1}, {}]) as w:
        yield w


def send(w: RenewalWorld, serial: str, cmd: Any, deadline: float = 30.0) -> Any:
    """One command to one simulated iPad through NanoMDM; its outcome once answered."""
    from ipad.dispatch import Job, select_targets, send_and_wait

    targets = select_targets(w.ctx, serials=[serial])
    w.sim.wake([serial])
    return send_and_wait(w.ctx, "test", [Job(cmd, targets)], targets, deadline).devices[0].outcomes[0]


def enrolment_profile(w: RenewalWorld, serial: str, **mdm_changes: str) -> bytes:
    from ipad.payloads.enrolment_profile import build_enrolment_profile

    cfg = w.cfg.model_copy(deep=True)
    for k, v in mdm_changes.items():
        setattr(cfg.mdm, k, v)
    return build_enrolment_profile(cfg, w.db, topic=TOPIC, device=serial).to_bytes()


def test_the_reinstalled_enrolment_profile_renews_the_identity(world: RenewalWorld) -> None:
    from ipad.commands import certificate_list, device_information, install_profile

    serial = list(world.devices)[0]
    dev = world.devices[serial]
    old = x509.load_pem_x509_certificate(dev.cert_pem.encode())
    authenticates = _authenticates(world, dev.udid)
    outcome = send(world, serial, install_profile(enrolment_profile(world, serial)))
    assert outcome.status == "Acknowledged", outcome
    new = x509.load_pem_x509_certificate(dev.cert_pem.encode())
    assert dev.renewals == 1 and len(dev.identities) == 2 and dev.identities[0] != dev.identities[1]
    # A new key (scepclient makes RSA keys; the fixture's identities are EC) and a new certificate
    # from the SCEP CA, with the profile's per-device subject.
    assert isinstance(new.public_key(), rsa.RSAPublicKey) and new.public_key() != old.public_key()
    assert new.issuer == world.ca.subject and new.serial_number != old.serial_number
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"werne iPad {serial}"
    assert (new.not_valid_after_utc - new.not_valid_before_utc).days == 30  # scepserver -crtvalid 30
    # It checked in again (Authenticate) with the new identity, and NanoMDM took it.
    assert _authenticates(world, dev.udid) == authenticates + 1
    # Every later message is signed by the new identity, and NanoMDM accepts it.
    assert send(world, serial, device_information(["OSVersion"])).status == "Acknowledged"
    assert send(world, serial, certificate_list()).status == "Acknowledged"
    fact = world.ctx.registry.devices_by_serial()[serial].answer("CertificateList")
    assert [c["sha256"] for c in fact if c["IsIdentity"]] == [dev.identities[-1]]
    assert fact[0]["issuer"] == world.ca.subject.rfc4514_string()


def test_a_failed_renewal_keeps_the_old_identity_working(world: RenewalWorld) -> None:
    from ipad.commands import device_information, install_profile

    serial = list(world.devices)[1]  # renewal_failures=1
    dev = world.devices[serial]
    before = list(dev.identities)
    outcome = send(world, serial, install_profile(enrolment_profile(world, serial)))
    assert outcome.status == "Error"
    assert "Profile Installation Failed" in outcome.detail and "SCEP" in outcome.detail
    assert dev.identities == before and dev.renewals == 0
    assert send(world, serial, device_information(["OSVersion"])).status == "Acknowledged"
    # The next attempt goes through.
    assert send(world, serial, install_profile(enrolment_profile(world, serial))).status == "Acknowledged"
    assert dev.renewals == 1 and len(dev.identities) == 2


def test_an_update_that_changes_the_server_url_is_refused(world: RenewalWorld) -> None:
    from ipad.commands import device_information, install_profile

    serial = list(world.devices)[2]
    dev = world.devices[serial]
    before = list(dev.identities)
    changed = enrolment_profile(world, serial, server_url="https://other.example/mdm")
    outcome = send(world, serial, install_profile(changed))
    assert outcome.status == "Error" and "ServerURL cannot change" in outcome.detail
    assert dev.identities == before
    assert send(world, serial, device_information(["OSVersion"])).status == "Acknowledged"


def _authenticates(w: RenewalWorld, udid: str) -> int:
    time.sleep(0.5)  # let the webhook's batch land
    return sum(1 for e in w.ctx.registry.events_since(0, topics=("mdm.Authenticate",), limit=10000)
               if e.enrollment_id == udid)
