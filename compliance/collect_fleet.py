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


APPS_TOKEN_DEVICE = "apps-token-{location}"


def apps_token_facts(config: Any) -> list[DeviceFacts]:
    """One fleet fact per Apps and Books location: its token's expiry (read from the sToken itself,
    without asking Apple), or why the token could not be read."""
    from core.errors import SecretError
    from core.secrets import read_secret
    from mdm_client.appsbooks import token_info

    out = []
    for name, loc in sorted(config.apps.locations.items()):
        fact: dict[str, Any] = {"location": name}
        try:
            info = token_info(read_secret(file=loc.token_file, env=loc.token_env or None,
                                          what=f"Apps and Books token of location {name}"))
            fact.update(expires=info.expires.isoformat() if info.expires else None, org=info.org_name)
        except (SecretError, ValueError) as e:
            fact["error"] = str(e)
        out.append(DeviceFacts(device=APPS_TOKEN_DEVICE.format(location=name), fleet="ipads",
                               facts={"apps_token": fact}, name=f"Apps and Books token {name}", scope="fleet"))
    return out
