"""The Education configuration (`com.apple.education`) of one iPad, from werne's classes.

A teacher's iPad (leader) gets every class it leads as a group it controls, with all their pupils as
users; a pupil's iPad (member) gets its one class, itself and its teacher(s), as Apple asks for
one-to-one devices. The profile carries the device's Classroom identity (PKCS#12, both TLS client
and server), and the anchors that validate leaders ([root, leader CA]) and members ([root, member
CA]); Classroom then works peer to peer, without Managed Apple IDs (no `AppleID` key anywhere).

User identifiers are opaque (derived from school and serial), names are the class list's pseudonym
or first name. The profile's identifier is <prefix>.classroom; a class change gives new content
and so a new PayloadUUID, and `werne ipad configure` (or the web page's save) installs it.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization

from ipad.classroom.ca import ClassroomCA
from ipad.classroom.classes import ClassView
from ipad.errors import ClassroomError
from ipad.payloads.profiles import PROFILE_NAMESPACE, Profile, content_digest

PROFILE_NAME = "classroom"


def user_identifier(school: str, serial: str, role: str) -> str:
    """The Classroom user id of an iPad's user: opaque, stable, no personal data in it."""
    digest = hashlib.sha256(f"werne-classroom:{school}:{serial}:{role}".encode()).hexdigest()[:16]
    return f"{'l' if role == 'leader' else 'm'}-{digest}"


def _payload(ptype: str, ident: str, name: str, organization: str, body: dict[str, Any]) -> dict[str, Any]:
    p = {**body, "PayloadType": ptype, "PayloadVersion": 1, "PayloadIdentifier": ident,
         "PayloadDisplayName": name, "PayloadOrganization": organization}
    p["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{ident}:{content_digest(p)}")).upper()
    return p


def education_profile(serial: str, classes: list[ClassView], ca: ClassroomCA, organization: str,
                      identifier_prefix: str) -> Profile:
    """The Education configuration profile of `serial`, which is in `classes`."""
    if not classes:
        raise ClassroomError(f"{serial} is in no class")
    school = classes[0].school
    leads = [c for c in classes if any(d.serial == serial and d.role == "leader" for d in c.devices)]
    role = "leader" if leads else "member"
    groups_of = leads or classes[:1]
    me = next(d for d in groups_of[0].devices if d.serial == serial)
    my_id = user_identifier(school, serial, role)
    ident = f"{identifier_prefix}.{PROFILE_NAME}"
    org_uuid = str(uuid.uuid5(PROFILE_NAMESPACE, f"classroom-organisation:{organization}")).upper()
    identity = ca.identity(serial, role)
    payloads: list[dict[str, Any]] = []

    def cert_payload(which: str, index: int) -> dict[str, Any]:
        der = ca.certificate(which).public_bytes(serialization.Encoding.DER)
        # The root as a root payload; the intermediates as plain (PKCS#1) certificate payloads.
        ptype = "com.apple.security.root" if which == "root" else "com.apple.security.pkcs1"
        return _payload(ptype, f"{ident}.cert.{which}.{index}", f"Classroom {which} CA", organization,
                        {"PayloadContent": der, "PayloadCertificateFileName": f"classroom-{which}.cer"})

    anchors = {which: cert_payload(which, i) for i, which in enumerate(("root", "leader", "member"))}
    p12 = _payload("com.apple.security.pkcs12", f"{ident}.identity", "Classroom-Identität", organization,
                   {"PayloadContent": identity.p12, "Password": identity.password,
                    "PayloadCertificateFileName": f"{role}-{serial}.p12"})
    users: dict[str, dict[str, str]] = {}
    groups = []
    for c in groups_of:
        leaders = [user_identifier(school, d.serial, "leader") for d in c.leaders]
        members = [user_identifier(school, d.serial, "member") for d in c.members]
        for d in c.devices:
            uid = user_identifier(school, d.serial, d.role)
            # A pupil's iPad knows only itself and its teachers (Apple, for one-to-one devices).
            if role == "leader" or d.role == "leader" or d.serial == serial:
                users[uid] = {"Identifier": uid, "Name": d.name, "GivenName": d.name}
        groups.append({"BeaconID": c.beacon_id, "Name": c.name, "Description": f"Klasse {c.name}",
                       "ConfigurationSource": "MDM", "LeaderIdentifiers": leaders,
                       "MemberIdentifiers": members if role == "leader" else [my_id]})
    education = _payload("com.apple.education", f"{ident}.education", "Apple Classroom", organization, {
        "OrganizationUUID": org_uuid,
        "OrganizationName": organization,
        "PayloadCertificateUUID": p12["PayloadUUID"],
        "LeaderPayloadCertificateAnchorUUID": [anchors["root"]["PayloadUUID"], anchors["leader"]["PayloadUUID"]],
        "MemberPayloadCertificateAnchorUUID": [anchors["root"]["PayloadUUID"], anchors["member"]["PayloadUUID"]],
        "UserIdentifier": my_id,
        "Users": [users[k] for k in sorted(users)],
        "Groups": groups,
        "ScreenObservationPermissionModificationAllowed": False,
    })
    payloads = [*anchors.values(), p12, education]
    top: dict[str, Any] = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadDisplayName": "Apple Classroom (Klassen)",
        "PayloadDescription": f"Klassen für Apple Classroom: {', '.join(c.name for c in groups_of)} ({me.name})",
        "PayloadOrganization": organization,
        "PayloadRemovalDisallowed": True,
        "PayloadScope": "System",
        "PayloadContent": payloads,
    }
    content_hash = content_digest(top)
    top["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{ident}:{content_hash}")).upper()
    return Profile(name=PROFILE_NAME, identifier=ident, uuid=top["PayloadUUID"], display_name=top["PayloadDisplayName"],
                   payload_types=tuple(p["PayloadType"] for p in payloads), content=top, content_hash=content_hash)
