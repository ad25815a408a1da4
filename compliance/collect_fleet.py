"""Fleet-wide facts: what holds for a whole fleet rather than one device, as one DeviceFacts of
scope "fleet" that only fleet rules are evaluated on.

iPads: the APNs push certificate werne installed in NanoMDM (ipad.pushcert_store). Without one the
MDM is not live (the lab), and there is nothing to check.
"""

from __future__ import annotations

from typing import Any

from compliance.engine import DeviceFacts

PUSH_CERT_DEVICE = "mdm-push-certificate"


def ipad_fleet_facts(db: Any) -> list[DeviceFacts]:
    """The iPad fleet's shared facts: the installed push certificate, if any."""
    from ipad.pushcert_store import current_push_cert

    cert = current_push_cert(db)
    if cert is None:
        return []
    facts = {"push_cert": {"topic": cert.topic, "not_after": cert.not_after.isoformat(), "serial": cert.serial}}
    return [DeviceFacts(device=PUSH_CERT_DEVICE, fleet="ipads", facts=facts, name="MDM push certificate (APNs)",
                        scope="fleet")]
