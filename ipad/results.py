"""Typed models of what iPads send back: command reports (with their ErrorChain) and check-in messages.

`parse_report` and `parse_checkin` take the device's raw plist (the webhook's `raw_payload`, decoded
from base64) and raise `MalformedReport` with a one-line reason for anything that is not a plist
dictionary with the keys Apple requires. The typed views (`DeviceInformationResult`, ...) read the
response keys of one command; names follow the `responsekeys` in Apple's mdm/commands/*.yaml.
"""

from __future__ import annotations

import plistlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.validation import first_error
from ipad.errors import MalformedReport

CommandStatus = Literal["Acknowledged", "Error", "CommandFormatError", "NotNow", "Idle"]
COMMAND_STATUSES: tuple[str, ...] = ("Acknowledged", "Error", "CommandFormatError", "NotNow", "Idle")
# Statuses after which NanoMDM drops the command from the device's queue.
FINAL_STATUSES: frozenset[str] = frozenset({"Acknowledged", "Error", "CommandFormatError"})

CheckinMessageType = Literal["Authenticate", "TokenUpdate", "CheckOut", "UserAuthenticate",
                             "GetBootstrapToken", "SetBootstrapToken", "DeclarativeManagement", "GetToken"]

# Keys of a report that are about the report itself, not the command's response.
REPORT_ENVELOPE = frozenset({"UDID", "CommandUUID", "Status", "ErrorChain", "EnrollmentID", "EnrollmentUserID",
                             "UserID", "UserShortName", "UserLongName", "NotOnConsole", "RequestType"})


class _PlistModel(BaseModel):
    """Base for models read from Apple plists: fields carry Apple's key names as aliases."""

    # Strict: a device sending the string "1" where Apple's schema says boolean is malformed,
    # and must not be silently coerced into a compliance fact.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, strict=True)


class ErrorChainItem(_PlistModel):
    """One entry of a report's ErrorChain, innermost cause last."""

    error_code: int | None = Field(default=None, alias="ErrorCode")
    error_domain: str | None = Field(default=None, alias="ErrorDomain")
    localized_description: str | None = Field(default=None, alias="LocalizedDescription")
    us_english_description: str | None = Field(default=None, alias="USEnglishDescription")

    def describe(self) -> str:
        """`Domain code: text`, preferring the English text over the localized one."""
        return describe_error(self.model_dump(by_alias=True, exclude_none=True))


def describe_error(item: Mapping[str, Any]) -> str:
    """One ErrorChain entry as stored (Apple's keys) as `Domain code: text`, preferring the English
    text over the localized one; `?` for a missing domain or code."""
    domain, code = item.get("ErrorDomain"), item.get("ErrorCode")
    text = item.get("USEnglishDescription") or item.get("LocalizedDescription") or ""
    return f"{'?' if domain is None else domain} {'?' if code is None else code}: {text}".strip()


def error_chain_text(chain: Iterable[Any] | None, brief: bool = False) -> str:
    """A stored ErrorChain as one line, outermost first: `Domain code: text; ...`, or with `brief`
    only each entry's text (its code when it has none); empty when there is none."""
    items = [e for e in chain or [] if isinstance(e, dict)]
    if brief:
        return "; ".join(str(e.get("USEnglishDescription") or e.get("LocalizedDescription") or e.get("ErrorCode", ""))
                         for e in items)
    return "; ".join(describe_error(e) for e in items)


class CommandResult(_PlistModel):
    """A device's report for one command (or an Idle poll), with the response keys in `response`."""

    udid: str = Field(alias="UDID")
    status: CommandStatus = Field(alias="Status")
    command_uuid: str | None = Field(default=None, alias="CommandUUID")
    error_chain: list[ErrorChainItem] = Field(default_factory=list, alias="ErrorChain")
    enrollment_id: str | None = Field(default=None, alias="EnrollmentID")
    # Reports do not carry the RequestType; it is inferred from the response keys where possible,
    # else the caller (who knows which command it enqueued) sets it with `model_copy`.
    request_type: str | None = Field(default=None, alias="RequestType")
    response: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        """True when NanoMDM removes the command from the queue (not NotNow, not Idle)."""
        return self.status in FINAL_STATUSES

    def error_text(self) -> str:
        """The ErrorChain as one line, outermost first; empty when there is none."""
        return "; ".join(e.describe() for e in self.error_chain)


# Which top-level response key identifies which command, for reports whose RequestType is unknown.
RESPONSE_KEY_TO_REQUEST_TYPE = {
    "QueryResponses": "DeviceInformation",
    "SecurityInfo": "SecurityInfo",
    "ProfileList": "ProfileList",
    "InstalledApplicationList": "InstalledApplicationList",
    "OSUpdateStatus": "OSUpdateStatus",
    "CertificateList": "CertificateList",
    "UpdateResults": "ScheduleOSUpdate",
    "AvailableOSUpdates": "AvailableOSUpdates",
    "ActivationLockBypassCode": "ActivationLockBypassCode",
    "ManagedApplicationList": "ManagedApplicationList",
    "Latitude": "DeviceLocation",
}


def _load_plist_dict(raw: bytes | dict[str, Any], what: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedReport(f"{what}: expected plist bytes, got {type(raw).__name__}")
    if not raw:
        raise MalformedReport(f"{what}: empty body")
    try:
        data = plistlib.loads(bytes(raw))
    # The body comes from a device or the network: any parser failure (expat, binary plist
    # offsets, entity declarations, overflow, ...) means "not a plist" and must not crash.
    except Exception as e:  # noqa: BLE001
        raise MalformedReport(f"{what}: not a valid plist ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise MalformedReport(f"{what}: the plist is a {type(data).__name__}, not a dictionary")
    return data


def parse_report(raw: bytes | dict[str, Any]) -> CommandResult:
    """Parse a device's command report plist. Raises MalformedReport with a one-line reason."""
    data = _load_plist_dict(raw, "command report")
    if "UDID" not in data and isinstance(data.get("EnrollmentID"), str):
        # User Enrollment devices report an EnrollmentID instead of a UDID.
        data = {**data, "UDID": data["EnrollmentID"]}
    for key in ("UDID", "Status"):
        if key not in data:
            raise MalformedReport(f"command report: missing {key}")
    if data["Status"] not in COMMAND_STATUSES:
        raise MalformedReport(f"command report: unknown Status {str(data['Status'])[:40]!r}")
    if data["Status"] != "Idle" and "CommandUUID" not in data:
        raise MalformedReport(f"command report: Status {data['Status']} without CommandUUID")
    response = {k: v for k, v in data.items() if k not in REPORT_ENVELOPE}
    try:
        result = CommandResult.model_validate({**data, "response": response})
    except ValidationError as e:
        raise MalformedReport(f"command report: {first_error(e)}") from None
    if result.request_type is None:
        for key, request_type in RESPONSE_KEY_TO_REQUEST_TYPE.items():
            if key in response:
                return result.model_copy(update={"request_type": request_type})
    return result


# --- check-in messages ---------------------------------------------------------------------------

class CheckinMessage(_PlistModel):
    """A check-in message (Authenticate, TokenUpdate, CheckOut, ...) from mdm/checkin/*.yaml."""

    message_type: CheckinMessageType = Field(alias="MessageType")
    udid: str | None = Field(default=None, alias="UDID")
    enrollment_id: str | None = Field(default=None, alias="EnrollmentID")
    enrollment_user_id: str | None = Field(default=None, alias="EnrollmentUserID")
    topic: str | None = Field(default=None, alias="Topic")
    serial_number: str | None = Field(default=None, alias="SerialNumber")
    device_name: str | None = Field(default=None, alias="DeviceName")
    model: str | None = Field(default=None, alias="Model")
    model_name: str | None = Field(default=None, alias="ModelName")
    product_name: str | None = Field(default=None, alias="ProductName")
    os_version: str | None = Field(default=None, alias="OSVersion")
    build_version: str | None = Field(default=None, alias="BuildVersion")
    imei: str | None = Field(default=None, alias="IMEI")
    meid: str | None = Field(default=None, alias="MEID")
    push_magic: str | None = Field(default=None, alias="PushMagic")
    token: bytes | None = Field(default=None, alias="Token", repr=False)
    # The UnlockToken clears the passcode: it is secret, so it never shows in repr or logs.
    unlock_token: bytes | None = Field(default=None, alias="UnlockToken", repr=False)
    awaiting_configuration: bool | None = Field(default=None, alias="AwaitingConfiguration")
    user_id: str | None = Field(default=None, alias="UserID")
    user_short_name: str | None = Field(default=None, alias="UserShortName")
    user_long_name: str | None = Field(default=None, alias="UserLongName")

    @property
    def device_id(self) -> str:
        """The id NanoMDM uses for this enrolment: the UDID, else the EnrollmentID."""
        return self.udid or self.enrollment_id or ""


def parse_checkin(raw: bytes | dict[str, Any]) -> CheckinMessage:
    """Parse a check-in plist. Raises MalformedReport with a one-line reason."""
    data = _load_plist_dict(raw, "check-in message")
    if "MessageType" not in data:
        raise MalformedReport("check-in message: missing MessageType")
    if not data.get("UDID") and not data.get("EnrollmentID"):
        raise MalformedReport("check-in message: missing UDID (and EnrollmentID)")
    try:
        return CheckinMessage.model_validate(data)
    except ValidationError as e:
        raise MalformedReport(f"check-in message: {first_error(e)}") from None


# --- typed views of one command's response ------------------------------------------------------

class ResultView(_PlistModel):
    """Common part of the typed views: which device, which command, what status, and the answer
    (Apple's `response_key`, read into the field `field_name`; `empty` when there is none)."""

    request_type: ClassVar[str]
    response_key: ClassVar[str]
    field_name: ClassVar[str]
    empty: ClassVar[Callable[[], Any]]

    udid: str
    command_uuid: str | None
    status: CommandStatus
    error_chain: list[ErrorChainItem] = Field(default_factory=list)

    @classmethod
    def from_result(cls, result: CommandResult) -> Self:
        """The typed view of a report; raises MalformedReport when the answer does not fit."""
        base = {"udid": result.udid, "command_uuid": result.command_uuid, "status": result.status,
                "error_chain": result.error_chain}
        body = {cls.field_name: cls._response(result, cls.empty())}
        try:
            return cls.model_validate({**base, **body})
        except ValidationError as e:
            raise MalformedReport(
                f"{cls.request_type} report from {result.udid}: {first_error(e)}") from None

    @classmethod
    def _response(cls, result: CommandResult, default: Any) -> Any:
        value = result.response.get(cls.response_key)
        if value is None:
            if result.status == "Acknowledged":
                raise MalformedReport(f"{cls.request_type} report from {result.udid}: "
                                      f"Acknowledged without {cls.response_key}")
            return default
        return value


class QueryResponses(_PlistModel):
    """DeviceInformation's QueryResponses; the common queries typed, every other one kept in extras."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True, strict=True)

    udid: str | None = Field(default=None, alias="UDID")
    serial_number: str | None = Field(default=None, alias="SerialNumber")
    device_name: str | None = Field(default=None, alias="DeviceName")
    model: str | None = Field(default=None, alias="Model")
    model_name: str | None = Field(default=None, alias="ModelName")
    product_name: str | None = Field(default=None, alias="ProductName")
    os_version: str | None = Field(default=None, alias="OSVersion")
    build_version: str | None = Field(default=None, alias="BuildVersion")
    is_supervised: bool | None = Field(default=None, alias="IsSupervised")
    is_activation_lock_enabled: bool | None = Field(default=None, alias="IsActivationLockEnabled")
    is_device_locator_service_enabled: bool | None = Field(
        default=None, alias="IsDeviceLocatorServiceEnabled")
    is_mdm_lost_mode_enabled: bool | None = Field(default=None, alias="IsMDMLostModeEnabled")
    awaiting_configuration: bool | None = Field(default=None, alias="AwaitingConfiguration")
    battery_level: float | None = Field(default=None, alias="BatteryLevel")
    device_capacity: float | None = Field(default=None, alias="DeviceCapacity")
    available_device_capacity: float | None = Field(default=None, alias="AvailableDeviceCapacity")
    wifi_mac: str | None = Field(default=None, alias="WiFiMAC")
    is_multi_user: bool | None = Field(default=None, alias="IsMultiUser")


class DeviceInformationResult(ResultView):
    """The answer to DeviceInformation."""

    request_type: ClassVar[str] = "DeviceInformation"
    response_key: ClassVar[str] = "QueryResponses"
    field_name: ClassVar[str] = "query_responses"
    empty: ClassVar[Callable[[], Any]] = dict

    query_responses: QueryResponses = Field(default_factory=QueryResponses)


class ManagementStatus(_PlistModel):
    """SecurityInfo.ManagementStatus."""

    enrolled_via_dep: bool | None = Field(default=None, alias="EnrolledViaDEP")
    user_approved_enrollment: bool | None = Field(default=None, alias="UserApprovedEnrollment")
    is_user_enrollment: bool | None = Field(default=None, alias="IsUserEnrollment")
    is_activation_lock_manageable: bool | None = Field(default=None, alias="IsActivationLockManageable")


class SecurityInfo(_PlistModel):
    """The iOS part of SecurityInfo (the FDE_*, firewall and SecureBoot keys are macOS only)."""

    hardware_encryption_caps: int | None = Field(default=None, alias="HardwareEncryptionCaps")
    passcode_present: bool | None = Field(default=None, alias="PasscodePresent")
    passcode_compliant: bool | None = Field(default=None, alias="PasscodeCompliant")
    passcode_compliant_with_profiles: bool | None = Field(default=None, alias="PasscodeCompliantWithProfiles")
    passcode_lock_grace_period: int | None = Field(default=None, alias="PasscodeLockGracePeriod")
    passcode_lock_grace_period_enforced: int | None = Field(
        default=None, alias="PasscodeLockGracePeriodEnforced")
    auto_lock_time: int | None = Field(default=None, alias="AutoLockTime")
    management_status: ManagementStatus | None = Field(default=None, alias="ManagementStatus")

    @property
    def data_protection(self) -> bool:
        """iOS Data Protection is on: block and file encryption (caps 3) and a passcode."""
        return self.hardware_encryption_caps == 3 and bool(self.passcode_present)


class SecurityInfoResult(ResultView):
    """The answer to SecurityInfo."""

    request_type: ClassVar[str] = "SecurityInfo"
    response_key: ClassVar[str] = "SecurityInfo"
    field_name: ClassVar[str] = "security_info"
    empty: ClassVar[Callable[[], Any]] = dict

    security_info: SecurityInfo = Field(default_factory=SecurityInfo)


class InstalledProfile(_PlistModel):
    """One entry of ProfileList."""

    payload_identifier: str = Field(alias="PayloadIdentifier")
    payload_uuid: str | None = Field(default=None, alias="PayloadUUID")
    payload_display_name: str | None = Field(default=None, alias="PayloadDisplayName")
    payload_version: int | None = Field(default=None, alias="PayloadVersion")
    payload_organization: str | None = Field(default=None, alias="PayloadOrganization")
    payload_removal_disallowed: bool | None = Field(default=None, alias="PayloadRemovalDisallowed")
    has_removal_passcode: bool | None = Field(default=None, alias="HasRemovalPasscode")
    is_encrypted: bool | None = Field(default=None, alias="IsEncrypted")
    is_managed: bool | None = Field(default=None, alias="IsManaged")
    payload_content: list[dict[str, Any]] = Field(default_factory=list, alias="PayloadContent")


class ProfileListResult(ResultView):
    """The answer to ProfileList."""

    request_type: ClassVar[str] = "ProfileList"
    response_key: ClassVar[str] = "ProfileList"
    field_name: ClassVar[str] = "profiles"
    empty: ClassVar[Callable[[], Any]] = list

    profiles: list[InstalledProfile] = Field(default_factory=list)

    @property
    def identifiers(self) -> set[str]:
        return {p.payload_identifier for p in self.profiles}


class InstalledApplication(_PlistModel):
    """One entry of InstalledApplicationList."""

    identifier: str | None = Field(default=None, alias="Identifier")
    name: str | None = Field(default=None, alias="Name")
    version: str | None = Field(default=None, alias="Version")
    short_version: str | None = Field(default=None, alias="ShortVersion")
    bundle_size: int | None = Field(default=None, alias="BundleSize")
    dynamic_size: int | None = Field(default=None, alias="DynamicSize")
    is_validated: bool | None = Field(default=None, alias="IsValidated")
    installing: bool | None = Field(default=None, alias="Installing")
    has_update_available: bool | None = Field(default=None, alias="HasUpdateAvailable")
    source: str | None = Field(default=None, alias="Source")


class InstalledApplicationListResult(ResultView):
    """The answer to InstalledApplicationList."""

    request_type: ClassVar[str] = "InstalledApplicationList"
    response_key: ClassVar[str] = "InstalledApplicationList"
    field_name: ClassVar[str] = "applications"
    empty: ClassVar[Callable[[], Any]] = list

    applications: list[InstalledApplication] = Field(default_factory=list)


class ManagedApplication(_PlistModel):
    """One entry of ManagedApplicationList (keyed there by the app's bundle identifier)."""

    # Apple's list: Queued, NeedsRedemption, Redeeming, Prompting, ..., Installing, Managed,
    # ManagedButUninstalled, Unknown, UserInstalledApp, UserRejected, UpdateRejected,
    # ManagementRejected, Failed.
    status: str = Field(alias="Status")
    management_flags: int | None = Field(default=None, alias="ManagementFlags")
    has_configuration: bool | None = Field(default=None, alias="HasConfiguration")
    has_feedback: bool | None = Field(default=None, alias="HasFeedback")
    is_validated: bool | None = Field(default=None, alias="IsValidated")
    external_version_identifier: int | None = Field(default=None, alias="ExternalVersionIdentifier")


# ManagedApplicationList statuses that mean the install did not and will not happen by itself.
APP_FAILED_STATUSES = frozenset({"Failed", "UserRejected", "UpdateRejected", "ManagementRejected"})


class ManagedApplicationListResult(ResultView):
    """The answer to ManagedApplicationList: bundle id -> status."""

    request_type: ClassVar[str] = "ManagedApplicationList"
    response_key: ClassVar[str] = "ManagedApplicationList"
    field_name: ClassVar[str] = "applications"
    empty: ClassVar[Callable[[], Any]] = dict

    applications: dict[str, ManagedApplication] = Field(default_factory=dict)

    def statuses(self) -> dict[str, str]:
        """bundle id -> status, the fact the compliance rules read."""
        return {k: v.status for k, v in self.applications.items()}


class OSUpdateStatusItem(_PlistModel):
    """One entry of OSUpdateStatus."""

    product_key: str | None = Field(default=None, alias="ProductKey")
    is_downloaded: bool | None = Field(default=None, alias="IsDownloaded")
    download_percent_complete: float | None = Field(default=None, alias="DownloadPercentComplete")
    status: str | None = Field(default=None, alias="Status")
    max_deferrals: int | None = Field(default=None, alias="MaxDeferrals")
    deferrals_remaining: int | None = Field(default=None, alias="DeferralsRemaining")
    next_scheduled_install: datetime | str | None = Field(default=None, alias="NextScheduledInstall")


class OSUpdateStatusResult(ResultView):
    """The answer to OSUpdateStatus."""

    request_type: ClassVar[str] = "OSUpdateStatus"
    response_key: ClassVar[str] = "OSUpdateStatus"
    field_name: ClassVar[str] = "updates"
    empty: ClassVar[Callable[[], Any]] = list

    updates: list[OSUpdateStatusItem] = Field(default_factory=list)


class InstalledCertificate(_PlistModel):
    """One entry of CertificateList."""

    common_name: str = Field(alias="CommonName")
    is_identity: bool = Field(alias="IsIdentity")
    data: bytes = Field(alias="Data", repr=False)

    def not_valid_after(self) -> datetime | None:
        """The certificate's expiry (UTC), or None when the DER data cannot be read."""
        # Imported here: cryptography.x509 costs ~70 ms to import, and only this view needs it.
        from cryptography import x509

        try:
            return x509.load_der_x509_certificate(self.data).not_valid_after_utc
        except ValueError:
            return None


class CertificateListResult(ResultView):
    """The answer to CertificateList."""

    request_type: ClassVar[str] = "CertificateList"
    response_key: ClassVar[str] = "CertificateList"
    field_name: ClassVar[str] = "certificates"
    empty: ClassVar[Callable[[], Any]] = list

    certificates: list[InstalledCertificate] = Field(default_factory=list)

    def identity_expiry(self) -> datetime | None:
        """The soonest expiry among identity certificates (the MDM identity expires after ~1 year)."""
        dates = [d for c in self.certificates if c.is_identity and (d := c.not_valid_after()) is not None]
        return min(dates) if dates else None


TYPED_VIEWS: dict[str, type[ResultView]] = {
    v.request_type: v for v in (DeviceInformationResult, SecurityInfoResult, ProfileListResult,
                                InstalledApplicationListResult, OSUpdateStatusResult, CertificateListResult,
                                ManagedApplicationListResult)
}


def typed_view(result: CommandResult, request_type: str | None = None) -> ResultView | None:
    """The typed view of a report for `request_type` (default: the inferred one), or None if there is none."""
    view = TYPED_VIEWS.get(request_type or result.request_type or "")
    return view.from_result(result) if view else None
