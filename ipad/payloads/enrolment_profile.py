"""The MDM enrolment profile: `com.apple.security.scep` (the device identity from the city's SCEP
server) plus `com.apple.mdm` (ServerURL, the push certificate's Topic, SignMessage), CMS-signed.

Built from the config (mdm.server_url, mdm.checkin_url, [scep]), the SCEP challenge (a secret) and
the installed push certificate's topic; organisation and identifier prefix come from the profile
group file like every other profile. The ADE endpoint serves it; `werne mdm enrolment-profile`
writes it for iPads enrolled by hand (Apple Configurator).
"""

from __future__ import annotations

import uuid
from typing import Any

from core.config import Config
from core.db import Database
from core.errors import SecretError
from ipad.errors import ProfileError
from ipad.golive.push_cert_store import current_push_cert
from ipad.golive.scep_ca import read_challenge
from ipad.payloads.profiles import (
    PROFILE_NAMESPACE,
    Profile,
    content_digest,
    load_group_assignment,
    load_signing_identity,
    sign_profile,
)

# Every right an MDM server can have on the device (Apple's AccessRights bit field, 1..4096).
ACCESS_RIGHTS_ALL = 8191
SERVER_CAPABILITIES = ["com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken"]
# SCEP Key Usage: 1 signing, 4 encryption; the identity signs MDM messages (SignMessage).
KEY_USAGE_SIGN_AND_ENCRYPT = 5
PROFILE_NAME = "enrolment"


def _uuid_for(identifier: str, content: dict[str, Any]) -> str:
    return str(uuid.uuid5(PROFILE_NAMESPACE, f"{identifier}:{content_digest(content)}")).upper()


def build_enrolment_profile(config: Config, db: Database, topic: str | None = None,
                            device: str | None = None) -> Profile:
    """The unsigned enrolment profile. Raises ProfileError when the push certificate or the SCEP
    challenge is missing (the profile would be useless without them).

    `device` (the serial, for the ADE endpoint) makes the SCEP subject's CN the device's own:
    scepserver (-allowrenew 0) treats a second request for a subject it already issued as a renewal
    and revokes the older identity, so with one shared CN only the newest iPad would stay valid.
    Without it (Apple Configurator, one profile for many iPads) the configured CN stays."""
    if topic is None:
        current = current_push_cert(db)
        if current is None:
            raise ProfileError("enrolment profile: no push certificate installed (its topic is the profile's "
                               "Topic); run `werne mdm push-cert install` first")
        topic = current.topic
    try:
        challenge = read_challenge(config).reveal()
    except SecretError as e:
        raise ProfileError(f"enrolment profile: {e} (run `werne mdm scep init`)") from None
    assignment = load_group_assignment(config)
    org, identifier = assignment.organization, f"{assignment.identifier_prefix}.{PROFILE_NAME}"
    scep_cfg = config.scep
    common_name = f"{scep_cfg.subject_common_name} {device}" if device else scep_cfg.subject_common_name
    scep: dict[str, Any] = {
        "PayloadType": "com.apple.security.scep",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.scep",
        "PayloadDisplayName": "Geräteidentität (SCEP)",
        "PayloadOrganization": org,
        "PayloadContent": {
            "URL": scep_cfg.url,
            "Name": org,
            "Subject": [[["O", scep_cfg.subject_organization]], [["CN", common_name]]],
            "Challenge": challenge,
            "Keysize": scep_cfg.key_size,
            "Key Type": "RSA",
            "Key Usage": KEY_USAGE_SIGN_AND_ENCRYPT,
        },
    }
    scep["PayloadUUID"] = _uuid_for(scep["PayloadIdentifier"], scep)
    mdm: dict[str, Any] = {
        "PayloadType": "com.apple.mdm",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mdm",
        "PayloadDisplayName": "Geräteverwaltung",
        "PayloadOrganization": org,
        "ServerURL": config.mdm.server_url,
        "Topic": topic,
        "IdentityCertificateUUID": scep["PayloadUUID"],
        "SignMessage": True,
        "AccessRights": ACCESS_RIGHTS_ALL,
        "ServerCapabilities": list(SERVER_CAPABILITIES),
        "CheckOutWhenRemoved": True,
    }
    if config.mdm.checkin_url:
        mdm["CheckInURL"] = config.mdm.checkin_url
    mdm["PayloadUUID"] = _uuid_for(mdm["PayloadIdentifier"], mdm)
    top: dict[str, Any] = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadDisplayName": f"{org}: Geräteverwaltung",
        "PayloadDescription": "Meldet das iPad bei der Geräteverwaltung der Stadt an.",
        "PayloadOrganization": org,
        "PayloadScope": "System",
        "PayloadContent": [scep, mdm],
    }
    content_hash = content_digest(top)
    top["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{identifier}:{content_hash}")).upper()
    return Profile(
        name=PROFILE_NAME,
        identifier=identifier,
        uuid=top["PayloadUUID"],
        display_name=top["PayloadDisplayName"],
        payload_types=("com.apple.security.scep", "com.apple.mdm"),
        content=top,
        content_hash=content_hash,
    )


def signed_enrolment_profile(config: Config, db: Database, topic: str | None = None,
                             device: str | None = None) -> bytes:
    """The enrolment profile, CMS SignedData (DER) by mdm.signing_cert_file/signing_key_file.

    iOS shows an unsigned enrolment profile as "not verified"; werne never hands one out.
    """
    identity = load_signing_identity(config)
    if identity is None:
        raise ProfileError("enrolment profile: it must be signed; set mdm.signing_cert_file and "
                           "mdm.signing_key_file")
    profile = build_enrolment_profile(config, db, topic, device)
    return sign_profile(profile.to_bytes(), *identity)
