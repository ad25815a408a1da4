"""What the registry keeps of an acknowledged answer: the fact per kind (the device's newest answer
of that kind, a reduced copy; the full answer stays in mdm_commands) and the device-row columns
that some answers update (OS version from DeviceInformation, the identity certificate's expiry)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ipad.store.events import ParsedEvent

# The fact kept when a DeviceInformation answer names another serial than the enrolment's:
# {"registered": ..., "reported": ...}.
SERIAL_CONFLICT = "SerialConflict"
# DeviceInformation query -> the device-row column it updates.
INFO_COLUMNS = (
    ("os_version", "OSVersion"),
    ("build_version", "BuildVersion"),
    ("device_name", "DeviceName"),
    ("model", "ProductName"),
)


def _picked(items: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{k: item.get(k) for k in keys} for item in items or [] if isinstance(item, dict)]


def _device_information(resp: dict[str, Any]) -> Any:
    return resp.get("QueryResponses", {})


def _security_info(resp: dict[str, Any]) -> Any:
    return resp.get("SecurityInfo", {})


def _profile_list(resp: dict[str, Any]) -> Any:
    return _picked(resp.get("ProfileList", []),
                   ("PayloadIdentifier", "PayloadUUID", "PayloadDisplayName", "PayloadVersion", "IsManaged"))


def _restrictions(resp: dict[str, Any]) -> Any:
    # The effective values only: {restriction name: value} from restrictedBool/restrictedValue,
    # {name: [values]} from intersection/union.
    glob = resp.get("GlobalRestrictions") or {}
    flat: dict[str, Any] = {}
    for group, inner in (("restrictedBool", "value"), ("restrictedValue", "value"),
                         ("intersection", "values"), ("union", "values")):
        for name, entry in (glob.get(group) or {}).items():
            if isinstance(entry, dict) and inner in entry:
                flat[str(name)] = entry[inner]
    return flat


def _managed_application_list(resp: dict[str, Any]) -> Any:
    apps = resp.get("ManagedApplicationList")
    return {
        str(bundle): {k: a.get(k) for k in ("Status", "IsValidated", "ManagementFlags")}
        for bundle, a in (apps.items() if isinstance(apps, dict) else ())
        if isinstance(a, dict)
    }


def _installed_application_list(resp: dict[str, Any]) -> Any:
    return _picked(resp.get("InstalledApplicationList", []), ("Identifier", "Name", "ShortVersion"))


# RequestType -> what the device row keeps of its (json-safe) answer.
FACT_OF_ANSWER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "DeviceInformation": _device_information,
    "SecurityInfo": _security_info,
    "ProfileList": _profile_list,
    "Restrictions": _restrictions,
    "ManagedApplicationList": _managed_application_list,
    "InstalledApplicationList": _installed_application_list,
}


def fact_value(ev: ParsedEvent) -> Any:
    """What the device row keeps of an answer (None: nothing); the full answer stays in mdm_commands."""
    if ev.request_type == "CertificateList":  # its certificates are data blobs: read from the raw answer
        return certificate_list_fact(ev.payload.get("CertificateList"))
    reduce = FACT_OF_ANSWER.get(ev.request_type or "")
    return reduce(ev.safe_payload) if reduce is not None else None


def info_columns(query_responses: dict[str, Any]) -> dict[str, Any]:
    """The device-row columns a DeviceInformation answer updates (those it answered with the right type)."""
    out: dict[str, Any] = {col: query_responses[key] for col, key in INFO_COLUMNS
                           if isinstance(query_responses.get(key), str)}
    if isinstance(query_responses.get("AwaitingConfiguration"), bool):
        out["awaiting_configuration"] = query_responses["AwaitingConfiguration"]
    return out


def certificate_list_fact(cert_list: Any) -> list[dict[str, Any]]:
    """CommonName and IsIdentity of each certificate in a CertificateList answer; for an identity
    also what its certificate says (subject, issuer, serial, SHA-256 fingerprint, validity): the
    renewal of device identities (ipad.golive.renewal) reads them."""
    # Imported here: cryptography.x509 costs ~70 ms to import, and only CertificateList answers need it.
    import hashlib

    from cryptography import x509

    out = []
    for item in cert_list if isinstance(cert_list, list) else []:
        if not isinstance(item, dict):
            continue
        entry: dict[str, Any] = {"CommonName": item.get("CommonName"), "IsIdentity": item.get("IsIdentity")}
        data = item.get("Data")
        if item.get("IsIdentity") is True and isinstance(data, bytes):
            try:
                cert = x509.load_der_x509_certificate(data)
            except ValueError:
                cert = None
            if cert is not None:
                entry.update(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                             serial=format(cert.serial_number, "x"), sha256=hashlib.sha256(data).hexdigest(),
                             not_before=cert.not_valid_before_utc.isoformat(),
                             not_after=cert.not_valid_after_utc.isoformat())
        out.append(entry)
    return out


def pick_identity(cert_list: Any, issuers: set[str] | None) -> dict[str, Any] | None:
    """Of a stored CertificateList answer (ipad.store.facts.certificate_list_fact), the identity
    from one of werne's SCEP CAs (`issuers`: their subjects; None: any issuer) that expires last."""
    mine = [c for c in (cert_list if isinstance(cert_list, list) else []) if isinstance(c, dict)
            and c.get("IsIdentity") is True and c.get("not_after") and c.get("sha256")
            and (issuers is None or c.get("issuer") in issuers)]
    return max(mine, key=lambda c: str(c["not_after"])) if mine else None


def identity_cert_not_after(cert_list: Any) -> datetime | None:
    """The soonest expiry of the identity certificates in a CertificateList answer."""
    # Imported here: cryptography.x509 costs ~70 ms to import, and only CertificateList answers need it.
    from cryptography import x509

    soonest: datetime | None = None
    for item in cert_list if isinstance(cert_list, list) else []:
        if not isinstance(item, dict) or not item.get("IsIdentity") or not isinstance(item.get("Data"), bytes):
            continue
        try:
            not_after = x509.load_der_x509_certificate(item["Data"]).not_valid_after_utc
        except ValueError:
            continue
        soonest = not_after if soonest is None or not_after < soonest else soonest
    return soonest
