"""Fleet-wide facts: what holds for a whole fleet rather than one device, as one DeviceFacts of
scope "fleet" that only fleet rules are evaluated on.

iPads: the APNs push certificate werne installed in NanoMDM (ipad.pushcert_store), the Apps and Books
tokens, and the other items of the expiry view (ipad.golive.expiry). Without a push certificate the
MDM is not live, and there is nothing to check.

The iPad side (ipad.*, mdm_client.*) is imported inside the functions that use it: a laptops-only
run never loads the MDM stack.
"""

from __future__ import annotations

from typing import Any

from compliance.facts import DeviceFacts
from core.errors import SecretError
from core.secrets import read_secret

PUSH_CERT_DEVICE = "mdm-push-certificate"


def ipad_fleet_facts(db: Any) -> list[DeviceFacts]:
    """The iPad fleet's shared facts: the installed push certificate, if any."""
    from ipad.golive.push_cert_store import current_push_cert

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


# Items of the expiry view with no rule of their own -> the fact key their rule requires.
EXPIRY_FACTS = {"scep-ca": "scep_ca", "dep-token": "dep_token", "tls": "tls_cert", "signing-cert": "signing_cert",
                "identities": "identity_certs"}


def ipad_expiry_facts(config: Any, db: Any) -> list[DeviceFacts]:
    """One fleet fact per item of the expiry view (ipad.golive.expiry) that has no rule of its own
    (the push certificate and the Apps and Books tokens have); only where the MDM is live (a push
    certificate is installed), as for the push certificate."""
    from ipad.golive.expiry import expiry_items
    from ipad.golive.push_cert_store import current_push_cert

    if current_push_cert(db) is None:
        return []
    return [DeviceFacts(device=f"mdm-expiry-{i.item}", fleet="ipads", facts={EXPIRY_FACTS[i.item]: i.to_dict()},
                        name=i.what, scope="fleet")
            for i in expiry_items(config, db) if i.item in EXPIRY_FACTS]
