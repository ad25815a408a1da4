"""The record of processing activities (DSGVO Art. 30) for what werne stores, from its own tables.

`RECORD` names, per table of the state database, each column holding personal data (what it is,
whose), the purpose, the retention and who can read it; every other column is listed as technical.
`render_record` prints it against the schema the migrations build and the retention settings of the
config, and refuses to print a record that misses a column (tests/core/test_processing_record.py fails
the same way), so a table cannot gain a column that the record does not name. The legal basis is
the city's to fill in: werne does not decide it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect

from core.config import Config
from core.db import Database
from core.errors import WerneError

LEGAL_BASIS = "(to be filled in by the city)"
ADMINS = "werne administrators (CLI, state database)"
COORDINATORS = "the school's coordinators (web page)"
TEACHERS = "the class's teachers (web page, their own classes only)"
NO_AUTOMATIC = "kept until an administrator deletes it (no automatic deletion)"


@dataclass(frozen=True)
class TableRecord:
    """One table: its personal columns (column -> what it holds), purpose, retention, readers, and
    the columns that hold no personal data."""

    table: str
    purpose: str
    retention: str
    readers: str
    personal: dict[str, str]
    technical: tuple[str, ...] = ()


def _t(*cols: str) -> tuple[str, ...]:
    return cols


RECORD: tuple[TableRecord, ...] = (
    TableRecord("audit_events", "accountability: who did what to which device (hash-chained)", NO_AUTOMATIC, ADMINS,
                {"actor": "login name of the administrator or coordinator", "target": "device names, serials, hosts",
                 "detail": "parameters of the action (may name devices and users)", "at": "time of the action"},
                _t("id", "action", "prev_hash", "record_hash")),
    TableRecord("enrol_users", "coordinators' and administrators' web accounts", "until the account is deleted",
                ADMINS, {"username": "login name", "password_hash": "Argon2 hash of the password",
                         "role": "admin or coordinator", "created_at": "when the account was made"},
                _t("id", "active")),
    TableRecord("enrol_user_schools", "which schools a coordinator may see", "until the account is deleted",
                ADMINS, {"user_id": "the coordinator's account"}, _t("school_id")),
    TableRecord("enrol_login_attempts", "protection against password guessing",
                "deleted after 1 day, a user's failed attempts also by `werne user unlock`", ADMINS,
                {"username": "login name tried", "address": "IP address of the client", "at": "time",
                 "success": "whether the login worked"}, _t("id")),
    TableRecord("enrol_web_sessions", "keeping a coordinator logged in",
                "until logout or expiry (web.session_max_age_s = {web.session_max_age_s} s), then deleted",
                ADMINS, {"username": "login name", "created_at": "login time", "expires_at": "expiry"}, _t("id_hash")),
    TableRecord("enrol_requests", "coordinators' requests for iPads", NO_AUTOMATIC, f"{ADMINS}; {COORDINATORS}",
                {"created_by": "coordinator's login name", "decided_by": "administrator's login name",
                 "purpose": "free text of the request (should name no pupil)", "reason": "free text of a rejection"},
                _t("id", "school_id", "device_group", "status", "created_at", "updated_at", "decided_at",
                   "profile_uuid")),
    TableRecord("enrol_request_serials", "the iPads of a request", NO_AUTOMATIC, f"{ADMINS}; {COORDINATORS}",
                {"serial": "device serial (linked to its user through the school's records)"},
                _t("id", "request_id", "status", "reason", "dep_status", "enrollment_id", "pending_commands",
                   "updated_at")),
    TableRecord("enrol_ade_attempts", "tracing failed automated enrolments", NO_AUTOMATIC, ADMINS,
                {"address": "IP address of the enrolling device", "serial": "device serial", "udid": "device UDID"},
                _t("id", "at", "product", "os_version", "outcome", "status_code", "reason")),
    TableRecord("enrol_dep_profiles", "enrolment profiles sent to Apple", NO_AUTOMATIC, ADMINS, {},
                _t("id", "school_id", "digest", "profile_uuid", "defined_at", "body")),
    TableRecord("mdm_devices", "managing the school iPads", "until the iPad is retired (werne ipad retire)",
                f"{ADMINS}; {COORDINATORS} (their schools)",
                {"device_name": "name of the iPad (may contain a pupil's or teacher's name)", "serial": "serial",
                 "udid": "UDID", "unlock_token": "token to clear the passcode (secret)",
                 "last_seen_at": "when the iPad last contacted the server"},
                _t("id", "enrollment_id", "school", "ipad_group", "model", "os_version", "build_version", "topic",
                   "state", "enrolled_at", "checked_out_at", "token_update_tally", "awaiting_configuration",
                   "identity_cert_not_after")),
    TableRecord("mdm_device_facts", "the iPads' answers to queries (compliance evidence)", NO_AUTOMATIC, ADMINS,
                {"value": "device facts (installed apps, settings; may include the device name)"},
                _t("id", "enrollment_id", "kind", "at", "command_uuid")),
    TableRecord("mdm_commands", "commands sent to iPads and their results",
                "answered ones deleted by `werne prune` after retention.command_results_days = "
                "{retention.command_results_days} days", ADMINS,
                {"actor": "login name of who sent it", "detail": "command parameters (e.g. a lost-mode message)",
                 "result": "the iPad's answer"},
                _t("id", "command_uuid", "enrollment_id", "request_type", "status", "enqueued_at", "updated_at",
                   "not_now_count", "error_chain")),
    TableRecord("mdm_webhook_events", "receipt of the MDM server's events",
                "deleted by `werne prune` after retention.webhook_events_days = "
                "{retention.webhook_events_days} days", ADMINS, {},
                _t("id", "event_id", "topic", "received_at", "created_at", "enrollment_id", "command_uuid", "status",
                   "message")),
    TableRecord("mdm_push_certs", "the city's Apple push certificate", NO_AUTOMATIC, ADMINS,
                {"installed_by": "administrator's login name", "subject": "certificate subject (may name the "
                 "Apple ID's owner)"},
                _t("id", "topic", "serial", "fingerprint_sha256", "not_before", "not_after", "cert_pem",
                   "installed_at")),
    TableRecord("ipad_lost_mode_locations", "finding a lost iPad (where it is may be where a pupil is)",
                "deleted when lost mode ends (werne ipad lost-mode --off)", ADMINS,
                {"latitude": "location", "longitude": "location", "horizontal_accuracy": "accuracy of the location",
                 "device_timestamp": "when the iPad was there", "received_at": "when werne got it"},
                _t("id", "enrollment_id", "command_uuid")),
    TableRecord("ipad_activation_lock_escrow", "unlocking an iPad whose Activation Lock is on",
                "until the iPad is retired", ADMINS,
                {"ciphertext": "escrowed bypass code, encrypted (activation_lock key)", "serial": "serial"},
                _t("id", "enrollment_id", "key_id", "command_uuid", "stored_at")),
    TableRecord("ipad_ddm_status", "reading the iPads' declarative status night by night (what was read last)",
                "replaced at each nightly read of the iPad's status; " + NO_AUTOMATIC, ADMINS,
                {"items": "the iPad's reported status: OS version, passcode present and compliant, update state"},
                _t("id", "enrollment_id", "newest", "reported_at", "item_times", "read_at")),
    TableRecord("ipad_returns", "iPads handed back and wiped", NO_AUTOMATIC, ADMINS,
                {"requested_by": "administrator's login name", "serial": "serial", "reason": "free text"},
                _t("id", "enrollment_id", "command_uuid", "status", "pending_commands", "requested_at",
                   "updated_at")),
    TableRecord("mdm_identity_renewals", "renewing the iPads' device identities before they expire", NO_AUTOMATIC,
                ADMINS, {"serial": "serial", "reason": "the iPad's error message"},
                _t("id", "enrollment_id", "state", "attempts", "renewals", "command_uuid", "sent_at", "answered_at",
                   "next_attempt_at", "old_fingerprint", "old_not_after")),
    TableRecord("app_licences", "which iPad holds which app licence", NO_AUTOMATIC, ADMINS,
                {"serial": "serial", "actor": "login name of who assigned it"},
                _t("id", "location", "adam_id", "pricing_param", "event_id", "assigned_at")),
    TableRecord("provisioning_runs", "provisioning the home-office laptops", NO_AUTOMATIC, ADMINS,
                {"actor": "administrator's login name", "hosts": "laptop names (each assigned to an employee)"},
                _t("id", "started_at", "finished_at", "playbook", "check_mode", "status", "artifact_dir")),
    TableRecord("provisioning_host_results", "per-laptop outcome of provisioning", NO_AUTOMATIC, ADMINS,
                {"host": "laptop name (assigned to an employee)"},
                _t("id", "run_id", "outcome", "ok", "changed", "failed", "unreachable", "reason")),
    TableRecord("vpn_peers", "the laptops' VPN access", "until the peer is revoked and deleted", ADMINS,
                {"host": "laptop name (assigned to an employee)", "revoked_by": "administrator's login name",
                 "revocation_reason": "free text (e.g. 'laptop stolen')"},
                _t("id", "status", "public_key", "address_v4", "address_v6", "last_address_v4", "last_address_v6",
                   "created_at", "key_created_at", "rotated_at", "revoked_at")),
    TableRecord("vpn_retired_keys", "refusing old VPN keys", NO_AUTOMATIC, ADMINS,
                {"host": "laptop name"}, _t("id", "public_key", "retired_at", "reason")),
    TableRecord("vpn_gateways", "the VPN gateway's applied configuration", NO_AUTOMATIC, ADMINS, {},
                _t("id", "host", "public_key", "endpoint", "config_sha256", "peers", "applied_at")),
    TableRecord("laptop_presence", "whether a home-office laptop is online",
                "overwritten at each poll (homeoffice.poll_interval_s = {homeoffice.poll_interval_s} s)", ADMINS,
                {"host": "laptop name", "endpoint": "the employee's home IP address (WireGuard endpoint)",
                 "last_handshake_at": "when the laptop was last online", "online_since": "time",
                 "offline_since": "time"}, _t("online", "updated_at")),
    TableRecord("laptop_pending", "work waiting for a laptop that is off", NO_AUTOMATIC, ADMINS,
                {"host": "laptop name", "created_by": "administrator's login name"},
                _t("id", "kind", "state", "created_at", "reason", "attempts", "not_before", "last_attempt_at",
                   "claimed_by", "last_error", "done_at", "result", "identity")),
    TableRecord("laptop_recovery_keys", "opening a laptop's encrypted disk when its user cannot",
                "until an administrator deletes it (no automatic deletion)", ADMINS,
                {"host": "laptop name (assigned to an employee)",
                 "ciphertext": "escrowed LUKS recovery key, encrypted (recovery_keys key)"},
                _t("identity", "device", "keyslot", "key_id", "state", "created_at", "added_at", "verified_at",
                   "checked_at", "check_result", "check_detail")),
    TableRecord("laptop_packages", "known vulnerabilities of the laptops' installed packages", NO_AUTOMATIC,
                ADMINS, {"host": "laptop name (assigned to an employee)",
                         "packages": "installed package names and versions (software, no user files)"},
                _t("id", "sha256", "first_seen", "last_seen")),
    TableRecord("vuln_snapshots", "the imported security data (Debian, Ubuntu)", NO_AUTOMATIC, ADMINS,
                {"imported_by": "administrator's login name"},
                _t("id", "distro", "format", "as_of", "imported_at", "source_sha256", "path", "sha256", "counts")),
    TableRecord("laptop_evidence", "compliance evidence of laptops (hash-chained)", NO_AUTOMATIC, ADMINS,
                {"host": "laptop name", "facts": "configuration facts of the laptop (no user files)"},
                _t("id", "collected_at", "source", "facts_hash", "prev_hash", "record_hash")),
    TableRecord("compliance_runs", "the nightly compliance check (hash-chained evidence)", NO_AUTOMATIC, ADMINS,
                {"actor": "login name of who started it", "devices": "device names, schools, groups as seen"},
                _t("id", "started_at", "finished_at", "status", "scope", "pid", "tool_version", "inventory_hash",
                   "baselines_hash", "waivers_hash", "prev_hash", "record_hash", "summary", "rules", "error",
                   "timings")),
    TableRecord("compliance_results", "per device and rule result", NO_AUTOMATIC, ADMINS,
                {"device": "device id (serial or laptop name)", "evidence": "short evidence text"},
                _t("id", "run_id", "rule_id", "status", "waiver")),
    TableRecord("compliance_shards", "shards of a sharded nightly compliance run (scratch between leader and workers)",
                "deleted when the run is stored or fails", ADMINS,
                {"work": "laptop names and iPad serials with the iPads' answers",
                 "results": "per device and rule result, as in compliance_results",
                 "devices": "device names, schools, groups as seen", "worker": "host name and process id"},
                _t("id", "run_id", "shard", "status", "timings", "attempts", "finished_at")),
    TableRecord("chain_signatures", "signed chain heads (evidence for auditors)", NO_AUTOMATIC, ADMINS, {},
                _t("id", "run_id", "signed_at", "statement", "signature", "key_id")),
    TableRecord("appletv_setup", "setting up the classroom Apple TVs", "until the Apple TV is removed", ADMINS,
                {}, _t("serial", "enrollment_id", "sent_at", "airplay_id", "updated_at")),
    TableRecord("classroom_classes", "classes for Apple Classroom", NO_AUTOMATIC, f"{ADMINS}; {COORDINATORS}",
                {"updated_by": "login name of who last changed the class"},
                _t("id", "school_id", "name", "beacon_id", "updated_at")),
    TableRecord("classroom_devices", "which iPads form a class in Apple Classroom (pupils pseudonymous)",
                "until the class is changed or deleted", f"{ADMINS}; {COORDINATORS}; {TEACHERS}",
                {"display_name": "a pupil's pseudonym or first name (never more), or the teacher's short name",
                 "serial": "iPad serial (linked to its pupil through the school's records)"},
                _t("class_id", "role")),
    TableRecord("classroom_teachers", "which teachers may see and run lessons for a class",
                "until the class is changed or deleted", f"{ADMINS}; {COORDINATORS}",
                {"username": "teacher's login name"}, _t("class_id")),
    TableRecord("classroom_lessons", "lesson and exam mode (which class was locked to which apps, when)",
                NO_AUTOMATIC, f"{ADMINS}; {COORDINATORS}; {TEACHERS}",
                {"created_by": "login name of the teacher or administrator who started it",
                 "serials": "the pupils' iPads the lesson reached"},
                _t("id", "class_id", "school_id", "mode", "apps", "starts_at", "ends_at", "status", "created_at",
                   "applied_at", "lifted_at", "detail")),
    TableRecord("alembic_version", "schema version", "as long as the database", ADMINS, {}, _t("version_num")),
)


class ProcessingRecordError(WerneError):
    """The record of processing does not name every column of the schema (a code defect)."""


def schema_columns() -> dict[str, list[str]]:
    """Table -> columns of the schema the migrations build (a throwaway SQLite database)."""
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{Path(d) / 'schema.db'}")
        try:
            ins = inspect(db.engine)
            return {t: [c["name"] for c in ins.get_columns(t)] for t in sorted(ins.get_table_names())}
        finally:
            db.dispose()


def gaps(columns: dict[str, list[str]]) -> list[str]:
    """Every column the record does not name, and every column it names that the schema lacks."""
    named = {r.table: r for r in RECORD}
    out = [f"table {t} is not in the record" for t in columns if t not in named]
    for t, cols in columns.items():
        r = named.get(t)
        if r is None:
            continue
        listed = set(r.personal) | set(r.technical)
        out += [f"{t}.{c} is not in the record" for c in cols if c not in listed]
        out += [f"{t}.{c} is in the record but not in the schema" for c in sorted(listed - set(cols))]
    out += [f"table {t} is in the record but not in the schema" for t in named if t not in columns]
    return out


def _setting(config: Config, text: str) -> str:
    """Fill `{section.name}` placeholders with the configured values."""
    out = text
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        section, name = out[start + 1:end].split(".", 1)
        out = out[:start] + str(getattr(getattr(config, section), name)) + out[end + 1:]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_record(config: Config) -> str:
    """The record as Markdown (the body of docs/data-protection.md); raises ProcessingRecordError
    when the record misses a column of the schema."""
    problems = gaps(schema_columns())
    if problems:
        raise ProcessingRecordError(f"record of processing incomplete: {problems[0]}"
                                    + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    lines = ["| table | personal data (column: what) | purpose | legal basis | retention | who can read it |",
             "|---|---|---|---|---|---|"]
    for r in sorted(RECORD, key=lambda r: r.table):
        personal = "; ".join(f"`{c}`: {what}" for c, what in r.personal.items()) or "none"
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"`{r.table}`", personal, r.purpose, LEGAL_BASIS, _setting(config, r.retention), r.readers)) + " |")
    lines.append("")
    lines.append("Columns without personal data: " + "; ".join(
        f"`{r.table}`: {', '.join(r.technical)}" for r in sorted(RECORD, key=lambda r: r.table) if r.technical) + ".")
    return "\n".join(lines) + "\n"
