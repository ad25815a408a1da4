"""Site configuration: one TOML file (werne.toml) with defaults that work with no file at all.

Lookup order for the file: `--config PATH`, then `$WERNE_CONFIG`, then `./werne.toml` if present,
then `/etc/werne/werne.toml` (the server's, as system tools keep theirs; every unit `werne server
install` writes names it too), else built-in defaults (the demo inventory and a state dir under the
user's home). `--state-dir`
overrides the state directory. Secrets are never settings: settings name a file or an environment
variable that holds them (see core.secrets).

Endpoints file: `<state_dir>/endpoints.toml`, written by whatever installs or starts the servers
(e.g. `werne lab up`), fills the settings the config file leaves unset (same sections and keys,
absolute paths; not [site]). The config file wins over it, and core.secrets' environment
variables win over any key file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from core.errors import ConfigError
from core.netaddr import split_listen
from core.text import line_safe


def _repo_root() -> Path:
    """The checkout (pyproject.toml beside the packages), or, for werne installed from its wheel
    (a server's venv), the data files the wheel installs: <venv>/share/werne (see setup.py)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    installed = Path(sys.prefix) / "share" / "werne"
    return installed if installed.is_dir() else here


REPO_ROOT = _repo_root()
DEFAULT_INVENTORY = REPO_ROOT / "inventories" / "demo"
CONFIG_ENV = "WERNE_CONFIG"
# The server's config: read when neither --config, $WERNE_CONFIG nor ./werne.toml names one.
SYSTEM_CONFIG = Path("/etc/werne/werne.toml")
STATE_DIR_ENV = "WERNE_STATE_DIR"
ENDPOINTS_FILE = "endpoints.toml"
# The most NanoMDM processes `[mdm] replicas` may ask for (one server: a few are plenty, docs/scale.md).
MAX_NANOMDM_REPLICAS = 8


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "werne"


def _network(item: str, problem: str) -> str:
    """`item` as a network in CIDR form (an address is its /32 or /128); else ValueError(problem)."""
    try:
        return str(ipaddress.ip_network(item, strict=False))
    except ValueError:
        raise ValueError(problem) from None


def _check_listen(v: str) -> str:
    split_listen(v)
    return v


# An environment variable's name as POSIX names them for portable use: upper-case letters, digits
# and '_', not starting with a digit.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


def _check_env_name(v: str) -> str:
    # A secret pasted where the *name* of its variable belongs must not come back in a message, nor
    # be looked up as a name: lower-case letters, or a long run of letters and digits without a '_'
    # (a token, not a name), are refused, and the message never shows the value.
    token_like = len(v) >= 16 and "_" not in v and any(c.isdigit() for c in v) and any(c.isalpha() for c in v)
    if v and (not _ENV_NAME.match(v) or token_like):
        raise ValueError("must name an environment variable (upper-case letters, digits, '_', e.g. "
                         "WERNE_WEB_SECRET); the value is not shown, in case it is the secret itself")
    return v


# What a URL setting may hold: an http(s) URL of RFC 3986 characters, without spaces, quotes, braces
# or control characters (these settings reach generated configs, profiles and command lines).
_URL_CHARS = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]*$")


def _check_url(v: str) -> str:
    if not v:
        return v
    parsed = urlparse(v)
    if not _URL_CHARS.match(v) or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected an http:// or https:// URL (no spaces, quotes, braces or control characters)")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("the URL's port must be 1-65535") from None
    return v


EnvName = Annotated[str, AfterValidator(_check_env_name)]
ListenAddress = Annotated[str, AfterValidator(_check_listen)]
HttpURL = Annotated[str, AfterValidator(_check_url)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteConfig(_Section):
    name: str = "demo"
    inventory: Path = DEFAULT_INVENTORY
    state_dir: Path = Field(default_factory=default_state_dir)
    # Empty means sqlite:///<state_dir>/werne.db
    database_url: str = ""


class SSHConfig(_Section):
    """[ssh]: how pre-flight and Ansible reach the laptops (host keys pinned in <state_dir>/known_hosts)."""

    # Used when the inventory gives no ansible_user.
    user: str = "admin"
    # Empty means <state_dir>/lab/id_ed25519, the key `werne lab up` makes.
    private_key_file: Path | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    # Connection attempts per host (TCP connect and SSH handshake), with jittered backoff between.
    connect_attempts: int = Field(default=3, ge=1, le=10)
    # Seconds one pre-flight command may take on a laptop.
    command_timeout: float = Field(default=30.0, gt=0)
    # Pre-flight checks this many hosts at once.
    parallel: int = Field(default=32, ge=1, le=256)
    min_free_disk_mb: int = Field(default=500, ge=0)
    # "<os-release ID> <VERSION_ID>", or only the ID for every version.
    supported_os: list[str] = ["debian 12", "debian 13", "ubuntu 22.04", "ubuntu 24.04"]


class ProvisioningConfig(_Section):
    """[provisioning]: the Ansible run (playbook, forks, pipelining) and the firewall's admin networks."""

    # A playbook in the repository's playbooks/ folder.
    playbook: str = Field(default="laptop.yml", pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$")
    forks: int = Field(default=20, ge=1, le=500)
    pipelining: bool = True
    # Networks that may reach the laptops' SSH port through the firewall (admins and the VPN pool).
    admin_networks: list[str] = ["10.200.0.0/16", "10.77.0.0/16"]
    # A whole run may take this long before ansible-runner stops it.
    timeout_s: int = Field(default=3600, gt=0)
    # `werne laptop lock|erase|unlock` on more laptops than this needs --max-hosts N (the count).
    blast_radius: int = Field(default=1, ge=1)

    @field_validator("admin_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        out = [_network(item, f"'{item}' is not a network (CIDR)") for item in v]
        if not out:
            raise ValueError("at least one admin network is needed, or nobody can reach SSH")
        return out


class LabConfig(_Section):
    # Where the cached Debian base image lives, shared by every state dir on the machine.
    cache_dir: Path = Path("/var/cache/werne-lab")
    suite: str = "bookworm"


class MDMConfig(_Section):
    url: HttpURL = "http://127.0.0.1:9000"
    api_key_file: Path | None = None
    api_key_env: EnvName = "WERNE_MDM_API_KEY"
    webhook_hmac_key_file: Path | None = None
    webhook_hmac_key_env: EnvName = "WERNE_WEBHOOK_HMAC_KEY"
    # Without an HMAC key `werne mdm serve-webhook` refuses to start; true runs it unsigned (a lab on
    # a host nobody else can reach), with a warning.
    webhook_allow_unsigned: bool = False
    webhook_listen: ListenAddress = "127.0.0.1:9080"
    timeout: float = 10.0
    blast_radius: int = 25
    # Webhook receiver: largest body accepted (NanoMDM's reports are a few KB; a ProfileList or
    # InstalledApplicationList can reach a few hundred); group commit: a batch is what arrived while
    # the previous one was written, plus what arrives within webhook_batch_ms (0: no extra wait).
    webhook_max_body: int = 1024 * 1024
    webhook_batch_ms: int = 0
    webhook_batch_max: int = 500
    # `werne ipad query`: how long to wait for answers before reporting who did not answer.
    query_deadline_s: float = 60.0
    # Enqueue splits ids so that the URL stays below this length.
    max_url_length: int = 2000
    # A device not seen for this long is shown as "not seen" in `werne ipad list`.
    stale_after_days: int = 14
    # Identity certs expiring within this many days are shown as a problem.
    cert_warn_days: int = 30
    wifi_secret_file: Path | None = None
    # How an iPad erased with Return to Service (`werne ipad wipe --return-to-service`) enrols again:
    # "ade" through Automated Device Enrolment (the DEP profile's URL, as on first setup; right for
    # iPads from Apple School Manager), or "profile": the signed enrolment profile travels with the
    # erase command (Apple requires it for iPads not enrolled by ADE).
    return_to_service_enrolment: Literal["ade", "profile"] = "ade"
    signing_cert_file: Path | None = None
    signing_key_file: Path | None = None
    # The device-facing MDM URL (behind the TLS proxy) that the enrolment profile names as ServerURL;
    # check-ins go there too unless checkin_url is set (NanoMDM's -checkin).
    server_url: HttpURL = "https://mdm.example-city.invalid/mdm"
    checkin_url: HttpURL = ""
    # The CA bundle `werne mdm check` trusts for the HTTPS front (server_url, scep.url,
    # dep.enrol_url). Empty: the system's CAs (a public or the city's certificate).
    tls_ca_file: Path | None = None
    # NanoMDM's PostgreSQL DSN (libpq format), for `werne mdm db-init`: a secret, from this file
    # (mode 0600) or the environment variable NanoMDM itself reads.
    storage_dsn_file: Path | None = None
    storage_dsn_env: EnvName = "NANOMDM_STORAGE_DSN"
    # The APNs push certificate's private key (`werne mdm push-cert csr` makes it, mode 0600).
    # Empty means <state_dir>/mdm/push/push.key.
    push_key_file: Path | None = None
    # NanoMDM processes on the one PostgreSQL (docs/scale.md "NanoMDM replicas"). 1: one NanoMDM on
    # mdm.url, as always. More: replica i listens on mdm.url's host at replica_base_port + i - 1, and
    # mdm.url becomes nginx's loopback front for the API over all of them (written by the install).
    replicas: int = Field(default=1, ge=1, le=MAX_NANOMDM_REPLICAS)
    replica_base_port: int = Field(default=9100, ge=1024, le=65535 - MAX_NANOMDM_REPLICAS)
    # Requests nginx passes to one NanoMDM process (the one, or each replica) at once (max_conns).
    # NanoMDM v0.9.0 opens a PostgreSQL connection per request in flight with no limit of its own:
    # replicas * this, plus werne's own, must stay below PostgreSQL's max_connections (Debian: 100).
    # Beyond it nginx answers 502 and the iPad tries again later; without it PostgreSQL refuses
    # connections and NanoMDM loses check-ins (docs/scale.md).
    replica_max_conns: int = Field(default=20, ge=1, le=1000)


class SCEPConfig(_Section):
    """[scep]: the SCEP server (micromdm/scep) that issues the iPads' device identities."""

    # The device-facing SCEP URL the enrolment profile names (behind the TLS proxy).
    url: HttpURL = "https://mdm.example-city.invalid/scep"
    # The CA depot scepserver reads (ca.pem, ca.key, serial, index.txt). Empty: <state_dir>/scep/depot.
    depot_dir: Path | None = None
    # The challenge devices present; a secret file (mode 0600). Empty: <state_dir>/scep/challenge.
    challenge_file: Path | None = None
    challenge_env: EnvName = "WERNE_SCEP_CHALLENGE"
    # Device identity certificates: subject, RSA key size, validity (scepserver's -crtvalid).
    subject_organization: str = "Stadt Werne"
    subject_common_name: str = "werne iPad"
    key_size: int = Field(default=2048, ge=2048, le=4096)
    cert_valid_days: int = Field(default=365, ge=1, le=3650)
    # Where `werne lab` and the deploy units run scepserver.
    listen: ListenAddress = "127.0.0.1:9002"
    timeout: float = Field(default=10.0, gt=0)
    # NanoMDM's -ca: the PEM bundle of the CAs whose identities it accepts (the SCEP CA; during a
    # rotation also the previous one). Empty: <state_dir>/scep/nanomdm-ca.pem (`werne mdm scep init`).
    trust_bundle_file: Path | None = None
    # Renewal of the iPads' identities (`werne mdm renew`, docs/go-live.md): an identity is due this
    # many days before it expires; at most renew_daily_budget renewals go out per day (the rest wait
    # for the next days); an iPad that answered Error is tried again after renew_retry_h hours, at
    # most renew_max_attempts times in a row; one that did not answer is woken again on each run.
    # scepserver must run with -allowrenew 0 (or at least renew_days_before), or it refuses a
    # renewal of a subject whose identity is still valid.
    renew_days_before: int = Field(default=60, ge=1, le=3650)
    renew_daily_budget: int = Field(default=50, ge=1, le=100000)
    renew_retry_h: float = Field(default=20.0, gt=0)
    renew_max_attempts: int = Field(default=5, ge=1, le=100)
    # How long one `werne mdm renew` waits for the iPads' answers (new key, SCEP, check-in).
    renew_deadline_s: float = Field(default=120.0, gt=0)


class DDMConfig(_Section):
    """[ddm]: the KMFDDM server (declarative device management: declarations, sets, status)."""

    url: HttpURL = "http://127.0.0.1:9003"
    api_key_file: Path | None = None
    api_key_env: EnvName = "WERNE_DDM_API_KEY"
    timeout: float = Field(default=10.0, gt=0)
    # Apple's software-update catalogue (a saved gdmf.apple.com/v2/pmv answer), as
    # `werne ipad catalogue import` stores it. Empty: <state_dir>/ddm/apple-pmv.json.
    catalogue_file: Path | None = None
    # An older catalogue is refused (Apple adds and withdraws versions every few weeks).
    catalogue_max_age_days: int = Field(default=30, ge=1, le=365)
    # The school's local time zone when schools.yml names none (software-update deadlines).
    default_time_zone: str = "Europe/Berlin"
    # The nightly run takes OS version, build and passcode state from the iPads' declarative status
    # (read from KMFDDM) instead of DeviceInformation/SecurityInfo when the newest report is at most
    # this old; iPads report at least daily (a full "safety sync" report).
    status_in_nightly: bool = True
    status_max_age_h: float = Field(default=26.0, gt=0, le=24 * 14)


class VPNConfig(_Section):
    """[vpn]: the WireGuard pool, gateway and laptop policy (see docs/vpn.md)."""

    interface: str = Field(default="wg0", pattern=r"^[a-zA-Z0-9_=+.-]{1,15}$")
    # The gateway takes the first host address of each pool; laptops get the others.
    pool_v4: str = "10.77.0.0/24"
    pool_v6: str | None = None
    # host:port the laptops dial. Empty means the vpn_gateway host's ansible_host and listen_port.
    gateway_endpoint: str = ""
    listen_port: int = Field(default=51820, ge=1, le=65535)
    dns: list[str] = ["10.77.0.1"]
    handshake_max_age_s: int = Field(default=3 * 3600, gt=0)
    key_max_age_days: int = Field(default=90, gt=0)
    # Kill-switch exceptions outside the tunnel: "dhcp", "dhcpv6", or a network (CIDR) such as a
    # captive portal's. The admin networks (provisioning.admin_networks) are always allowed.
    killswitch_allow: list[str] = []
    # On hosts without the kernel module, wg-quick runs the userspace wireguard-go copied from here.
    userspace: bool = False
    wireguard_go: Path = REPO_ROOT / ".tools" / "bin" / "wireguard-go"
    # Seconds the rotate/revoke/apply playbooks may take before the run is called failed.
    run_timeout_s: int = Field(default=600, gt=0)
    # Rotation of a laptop reached only through its tunnel (docs/vpn.md): it switches to its next key
    # by itself this many seconds after werne made the key, and goes back to its current key after
    # rotate_revert_after_s more unless werne committed the switch through the tunnel by then.
    rotate_switch_after_s: int = Field(default=10, ge=1, le=600)
    rotate_revert_after_s: int = Field(default=120, ge=20, le=3600)

    @field_validator("pool_v4", "pool_v6")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"not a network: {e}") from None
        if net.num_addresses < 4:
            raise ValueError("pool is too small")
        return str(net)

    @field_validator("dns")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        return [str(ipaddress.ip_address(a)) for a in v]

    @field_validator("killswitch_allow")
    @classmethod
    def _killswitch(cls, v: list[str]) -> list[str]:
        return [item if item in ("dhcp", "dhcpv6")
                else _network(item, f"'{item}' is neither 'dhcp', 'dhcpv6' nor a network") for item in v]


class ComplianceConfig(_Section):
    min_ipados: str = "17.0"
    # The classroom Apple TVs (rule tv-os-version): tvOS below this gets `werne appletv update`.
    min_tvos: str = "17.0"
    # BSI Mindeststandard MDM, MDM.2.8.03: an iPad not seen for longer is "out of contact".
    contact_max_days: int = Field(default=14, ge=1)
    # The MDM query sweep waits this long for answers; devices silent by then are "unreachable".
    query_deadline_s: float = Field(default=60.0, gt=0)
    waivers_file: Path | None = None
    # Empty means the baselines shipped in compliance/baselines/.
    baselines_dir: Path | None = None
    # A laptop without LUKS: "fail", or "not_applicable" where disks are encrypted otherwise
    # (the lab's containers have no disks of their own).
    luks_missing: Literal["fail", "not_applicable"] = "fail"
    # When set, every run also writes compliance-<run>.html and latest.html here.
    report_dir: Path | None = None
    forks: int = Field(default=20, ge=1)
    # The APNs push certificate is a finding when it expires within this many days (fleet-wide rule).
    push_cert_min_days: int = Field(default=30, ge=1, le=365)
    # What else expires (`werne mdm expiry`, `werne mdm check`, one rule each): a finding within
    # this many days. An iPad's identity is renewed from scep.renew_days_before on, so a finding
    # means the renewal did not happen. The SCEP CA must outlive every identity it issues
    # (scep.cert_valid_days): rotate it before it has less than that left.
    identity_cert_min_days: int = Field(default=30, ge=1, le=365)
    scep_ca_min_days: int = Field(default=400, ge=1, le=3650)
    dep_token_min_days: int = Field(default=30, ge=1, le=365)
    tls_cert_min_days: int = Field(default=14, ge=1, le=365)
    signing_cert_min_days: int = Field(default=30, ge=1, le=365)
    # Patch level (lx-security-updates, lx-unattended-upgrade-recent, lx-reboot-pending,
    # lx-kernel-current). The nightly run never refreshes package lists; lists older than this
    # make "no pending security updates" unprovable, so the rule fails.
    apt_lists_max_age_days: int = Field(default=7, ge=1)
    # A laptop with no package lists at all: "fail", or "not_applicable" where there is no mirror
    # to fetch them from (the lab's containers).
    apt_lists_missing: Literal["fail", "not_applicable"] = "fail"
    # unattended-upgrade runs daily; a week covers laptops left off over a holiday weekend.
    unattended_upgrade_max_age_days: int = Field(default=7, ge=1)
    # Days a reboot may stay pending after an update asked for one (or a newer kernel was installed).
    reboot_max_pending_days: int = Field(default=3, ge=0)
    # A laptop that is off during the nightly run is judged on its freshest stored evidence
    # (collected by `werne laptop watch` or an earlier run); older than this, lx-evidence-fresh fails.
    evidence_max_age_days: float = Field(default=3.0, gt=0)
    # Times in the report's words ("evidence from 14:05 yesterday") are in this zone.
    timezone: str = "Europe/Berlin"
    # The city's signing key (PEM, RSA >= 2048 bits or EC P-256; mode 0600): signs the OSCAL report
    # and each run's hash-chain head (compliance.signing). Unset: evidence is written unsigned.
    signing_key_file: Path | None = None
    # The public key (or certificate) `werne compliance verify` checks signatures with, on hosts
    # without the private key. Unset: the public half of signing_key_file.
    verify_key_file: Path | None = None
    # The nightly run in shards (compliance.shards): >1 splits the laptops and iPads by a stable hash
    # of their name into this many shards, run by `werne compliance worker` processes through a
    # PostgreSQL job queue (procrastinate); 1 is one process, as on a single server.
    shards: int = Field(default=1, ge=1, le=256)
    # How long the leader waits for every shard before the run fails (exit 3, nothing chained).
    shard_timeout_s: float = Field(default=3600.0, gt=0)
    # A worker's heartbeat; a shard whose worker missed 3 of them is given to another worker.
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    # Known vulnerabilities (lx-vulns-fixed): a fix available for longer than this and not installed
    # fails; security data older than vuln_data_max_age_days fails too (newer advisories are
    # unknown). Without any imported data the rules are "fail" or "not_applicable" (vulns_data_missing).
    vuln_fix_max_age_days: int = Field(default=7, ge=0)
    vuln_data_max_age_days: int = Field(default=7, ge=1)
    vulns_data_missing: Literal["fail", "not_applicable"] = "not_applicable"
    # lx-recovery-key: the escrowed LUKS recovery key must have opened the volume (a test unlock
    # at a provisioning run) within this many days.
    recovery_key_max_age_days: int = Field(default=30, ge=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ValueError, OSError) as e:
            raise ValueError(f"unknown time zone {v!r} ({e.__class__.__name__})") from None
        return v


class DEPConfig(_Section):
    # false: the city has no Apple School Manager. NanoDEP is then neither installed nor started by
    # `werne server install`, and `werne mdm check` leaves its line out.
    enabled: bool = True
    url: HttpURL = "http://127.0.0.1:9001"
    name: str = "werne"
    api_key_file: Path | None = None
    api_key_env: EnvName = "WERNE_DEP_API_KEY"
    timeout: float = 15.0
    # The DEP profile data file (default: enrolment/dep_profile.yaml) and, if set, the MDM
    # enrolment URL that overrides the file's `url`.
    profile_file: Path | None = None
    enrol_url: HttpURL = ""
    # The enrolment endpoint (served by `werne web serve` at the path of enrol_url) accepts a
    # MachineInfo only if its CMS signer is issued by a CA in this PEM file. Empty: Apple's iPhone
    # Device CA, shipped in data/apple/ (SOURCE.md there says where it comes from).
    machineinfo_ca_file: Path | None = None
    # A lab whose iPads cannot sign like Apple's may switch the issuer check off (the signature is
    # still checked): anyone who reads a serial off a box then gets the city's profile. Never in
    # production; `werne mdm check` fails while it is true.
    insecure_skip_machineinfo_verification: bool = False
    # iPads whose MachineInfo reports an older iPadOS are asked to update first during ADE (iOS 17+:
    # 403 com.apple.softwareupdate.required with the newest version Apple's catalogue offers the
    # model); older devices are refused. Empty: no minimum.
    minimum_os_version: str = Field(default="", pattern=r"^(\d+(\.\d+){0,2})?$")
    # THROTTLED serials: at most this many assignment calls, waiting Apple's retry_after_seconds
    # but never longer than max_retry_wait_s at a time (longer: left for a later approval run).
    max_assign_attempts: int = Field(default=3, ge=1, le=10)
    max_retry_wait_s: float = Field(default=30.0, ge=0, le=600)


class DirectoryGroup(_Section):
    """One directory group and what its members are on the web page: a role and schools."""

    # The group's cn (LDAP) or a value of the OpenID Connect groups claim.
    group: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "coordinator", "teacher"]
    schools: list[str] = []


class LDAPConfig(_Section):
    """[web.ldap]: sign-in through the city's directory (LDAP or Active Directory bind)."""

    # ldaps://dc.example-city.invalid:636, or ldap:// with start_tls (plain only on the loopback, for tests).
    url: str = ""
    start_tls: bool = True
    # The directory's CA certificate (PEM); empty: the system's.
    ca_file: Path | None = None
    # How a login name becomes the bind name: a DN template, or a UPN for Active Directory.
    user_dn: str = "uid={username},ou=people,dc=example-city,dc=invalid"
    # Where the groups are, and which ones name the user (AD: (member={user_dn}) works the same).
    group_base: str = "ou=groups,dc=example-city,dc=invalid"
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    groups: list[DirectoryGroup] = []


class OIDCConfig(_Section):
    """[web.oidc]: sign-in through the schools' identity provider (OpenID Connect, code flow with PKCE)."""

    # The provider's issuer URL; its /.well-known/openid-configuration names the endpoints. Empty: off.
    issuer: str = ""
    client_id: str = ""
    # The client secret: a file (mode 0600) or an environment variable, never a setting.
    client_secret_file: Path | None = None
    client_secret_env: EnvName = "WERNE_OIDC_CLIENT_SECRET"
    # Where the provider sends the browser back: https://<werne>/login/oidc/callback
    redirect_url: str = ""
    scopes: list[str] = ["openid", "profile", "email"]
    # The claim that holds the user's login name, and the one that lists the user's groups.
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    # The provider's CA (PEM); empty: the system's.
    ca_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    groups: list[DirectoryGroup] = []
    # The label of the sign-in button on the login page.
    label: str = "Mit dem Schulkonto anmelden"


class WebConfig(_Section):
    listen: ListenAddress = "127.0.0.1:8080"
    # Reverse proxies (addresses or networks) whose X-Forwarded-For is believed. Empty: the header
    # is ignored and the login rate limit counts the connecting address (anyone could forge it).
    trusted_proxies: list[str] = []
    secret_key_file: Path | None = None
    secret_key_env: EnvName = "WERNE_WEB_SECRET"
    # Secure cookies need HTTPS in front (deploy/); only a test over plain http sets this false.
    secure_cookies: bool = True
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    # Uploads larger than this are refused while they stream in, before they are parsed.
    max_upload_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Sign-in through the directory; local accounts stay for IT and as the fallback.
    ldap: LDAPConfig = Field(default_factory=LDAPConfig)
    oidc: OIDCConfig = Field(default_factory=OIDCConfig)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        return [_network(item, f"'{item[:60]}' is not an address or network") for item in v]


class AppsLocationConfig(_Section):
    """One Apps and Books location (a "Standort" in Apple School Manager) and its content token."""

    # The location's content token (sToken), downloaded in Apple School Manager; a secret file (0600).
    token_file: Path | None = None
    # An environment variable that holds the token instead (wins over the file when set).
    token_env: EnvName = ""


class AppsConfig(_Section):
    """[apps]: Apple's Apps and Books service (app licences) and the apps each iPad group gets."""

    # Apple's App and Book Management API (v2); a test or lab points it at a fake.
    url: HttpURL = "https://vpp.itunes.apple.com/mdm/v2"
    timeout: float = Field(default=20.0, gt=0)
    # Bounded retries of GET calls on connection errors and 502/503/504.
    retries: int = Field(default=2, ge=0, le=5)
    # location name -> its token, e.g. locations = {grundschulen = {token_file = "/etc/werne/asm-gs.vpptoken"}};
    # schools name their location in the inventory's schools.yml (apps_location).
    locations: dict[str, AppsLocationConfig] = {}
    # Which apps each group gets. Empty: profiles/apps.yaml (or the inventory's ipad-apps.yml).
    apps_file: Path | None = None
    # How long `werne apps apply` waits for Apple to finish a licence event, and how often it asks.
    event_timeout_s: float = Field(default=300.0, gt=0)
    event_poll_s: float = Field(default=2.0, gt=0)
    # A location token expiring within this many days is a finding (fleet rule ios-apps-token-valid).
    token_min_days: int = Field(default=30, ge=1, le=365)

    @field_validator("locations")
    @classmethod
    def _location_names(cls, v: dict[str, AppsLocationConfig]) -> dict[str, AppsLocationConfig]:
        for name in v:
            if not re.match(r"^[a-z0-9][a-z0-9_-]{0,40}$", name):
                raise ValueError(f"location name '{name}' must be lower-case letters, digits, '-' or '_'")
        return v


class ActivationLockConfig(_Section):
    """[activation_lock]: escrow of the iPads' Activation Lock bypass codes, encrypted at rest."""

    # A Fernet key (`werne ipad activation-lock key` prints a new one); a secret file (0600).
    key_file: Path | None = None
    key_env: EnvName = "WERNE_ACTIVATION_LOCK_KEY"
    # Login names allowed to show a bypass code: the real user of the process, or the sudo caller
    # (core.actor; never USER or another variable); empty: nobody.
    allowed_users: list[str] = []


class RecoveryKeysConfig(_Section):
    """[recovery_keys]: the laptops' LUKS recovery keys, escrowed like the Activation Lock codes."""

    # A Fernet key (`werne laptop recovery-key new-key` prints one); a secret file (0600). The
    # provisioning run's Ansible reads it (a lookup on the controller), so it must be a file.
    key_file: Path | None = None
    key_env: EnvName = "WERNE_RECOVERY_KEY_KEY"
    # Login names (the real uid's, core.actor.real_user) allowed to show a recovery key; empty: nobody.
    allowed_users: list[str] = []


class HomeOfficeConfig(_Section):
    """[homeoffice]: laptops reached only through the VPN, and `werne laptop watch` (docs/operations.md)."""

    # How often the watcher reads the gateway's `wg show <if> dump` (one SSH command each time).
    poll_interval_s: float = Field(default=15.0, gt=0)
    # A peer whose latest handshake is younger than this is online. WireGuard re-handshakes every
    # 2 minutes on a live tunnel (PersistentKeepalive keeps it live), so 3 minutes leaves a margin.
    online_window_s: int = Field(default=180, ge=30)
    # An online laptop whose freshest evidence is older than this gets its facts collected.
    evidence_refresh_h: float = Field(default=12.0, gt=0)
    # At most this many catch-up jobs at once, each on at most catchup_batch laptops (one Ansible
    # run each), started after a random delay of up to catchup_jitter_s: 70 laptops switched on at
    # 8 a.m. do not all hit the controller at once.
    catchup_concurrency: int = Field(default=2, ge=1, le=16)
    catchup_batch: int = Field(default=10, ge=1, le=100)
    catchup_jitter_s: float = Field(default=30.0, ge=0)
    # After a failed attempt (laptop gone, lock held) the next try waits retry_base_s, doubling up to
    # retry_max_s; after max_attempts failures of the same pending item it stays `failed`.
    retry_base_s: float = Field(default=60.0, gt=0)
    retry_max_s: float = Field(default=1800.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    # Networks allowed to open SSH to the laptops' tunnel addresses through the gateway (the admin
    # host's). Empty: nothing may open a connection to a laptop through the VPN.
    manage_from: list[str] = []

    @field_validator("manage_from")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(n, strict=False)) for n in v]
        except ValueError as e:
            raise ValueError(f"not a network: {e}") from None


def _unix_name(v: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", v):
        raise ValueError("must be a system account name (lower-case letters, digits, '_' or '-')")
    return v


class ServerConfig(_Section):
    """[server]: the MDM server `werne server install` sets up and `werne deploy write` describes.

    Every path in this config file is a path on the server; the public host name is the one in
    mdm.server_url, and the services listen where mdm.url, dep.url, ddm.url, scep.listen, web.listen
    and mdm.webhook_listen say.
    """

    # The account every werne service runs as; its group reads the key files.
    user: Annotated[str, AfterValidator(_unix_name)] = "werne"
    # werne's virtualenv goes to <install_dir>/venv.
    install_dir: Path = Path("/opt/werne")
    # werne.toml, the services' environment files, the generated keys and the TLS files live here.
    config_dir: Path = Path("/etc/werne")
    # NanoMDM, NanoDEP, KMFDDM and scepserver (copied from this checkout's .tools/bin).
    bin_dir: Path = Path("/usr/local/bin")
    # "acme": certbot's certificate for the host (http-01 through the port-80 block, made once the
    # bootstrap site answers); "city": the city's own chain and key, tls_cert_file and tls_key_file.
    tls: Literal["acme", "city"] = "acme"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    acme_root: Path = Path("/var/www/werne-acme")
    # The address the ACME CA writes to before a certificate expires; empty: none.
    acme_email: str = ""
    # The ACME CA's directory URL (https); empty: Let's Encrypt. A city with its own ACME CA (e.g.
    # step-ca) names its directory here; certbot keeps it for every renewal.
    acme_directory_url: HttpURL = ""
    # The CA bundle (PEM, on the server) certbot trusts for the ACME directory's TLS, at the
    # install and at every renewal by certbot.timer; unset: the system's trust store.
    acme_ca_file: Path | None = None
    # Strict-Transport-Security max-age of the HTTPS site (a year; 0 leaves the header out).
    hsts_max_age: int = Field(default=31536000, ge=0)
    # NanoMDM's PostgreSQL database. Its role is the service user (peer authentication on the
    # local socket): one role, named like the account that connects.
    nanomdm_database: Annotated[str, AfterValidator(_unix_name)] = "nanomdm"


class AlertsConfig(_Section):
    """[alerts]: who is told when a nightly unit fails, and of new critical findings and expiry items
    past their limit (docs/operations.md, "Alerts").

    Mail goes out when smtp_host and mail_to are set; the JSON webhook when its URL is in
    webhook_url_file (or $WERNE_ALERT_WEBHOOK_URL): the URL usually carries a token, so it is a secret.
    """

    mail_to: list[str] = []
    mail_from: str = "werne@localhost"
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    # With smtp_user set, the password comes from smtp_password_file or $WERNE_SMTP_PASSWORD.
    smtp_user: str = ""
    smtp_password_file: Path | None = None
    smtp_password_env: EnvName = "WERNE_SMTP_PASSWORD"
    webhook_url_file: Path | None = None
    webhook_url_env: EnvName = "WERNE_ALERT_WEBHOOK_URL"
    # Per channel: a mail server that does not answer delays the alert by this much, never longer.
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class MetricsConfig(_Section):
    """[metrics]: files in Prometheus' text format for node_exporter's textfile collector, written by
    the nightly run and `werne mdm check` (docs/operations.md, "Metrics")."""

    enabled: bool = True
    # node_exporter's --collector.textfile.directory (writable by werne's user); unset: <state_dir>/metrics.
    textfile_dir: Path | None = None


class RetentionConfig(_Section):
    """[retention]: how long werne keeps what it deletes on its own (`werne prune`, nightly).

    Defaults follow DSGVO Art. 5(1)(e) (kept no longer than needed) and BSI CON.6.A1 (a rule for
    deleting): raw webhook events answer "what did the device send", needed for troubleshooting
    within weeks; command answers back a school year's questions (13 months); provisioning runs'
    Ansible folders only until the run is looked into. The compliance history and the audit trail
    are evidence (hash-chained) and are not pruned.
    """

    webhook_events_days: int = Field(default=90, ge=1)
    command_results_days: int = Field(default=400, ge=1)
    run_artifacts_days: int = Field(default=90, ge=1)
class BackupConfig(_Section):
    """[backup]: `werne backup create` (and its nightly timer): where the encrypted archives go,
    how many are kept, and the password they are encrypted with (docs/operations.md)."""

    # The archives (mode 0600, werne-<site>-<UTC time>.wbk). Copy them off the server too: an archive
    # on the disk that died restores nothing.
    dir: Path = Path("/var/backups/werne")
    # The newest this many archives in dir are kept; older ones are deleted after each new one.
    keep: int = Field(default=14, ge=1, le=3650)
    # The archives' password: a secret file (0600) or the variable password_env; at least 12
    # characters. Kept outside the server as well: without it no archive can be restored.
    password_file: Path | None = None
    password_env: EnvName = "WERNE_BACKUP_PASSWORD"
    # When werne-backup.timer runs (systemd OnCalendar); the nightly compliance run is at 02:30.
    on_calendar: str = Field(default="*-*-* 01:30:00", pattern=r"^[A-Za-z0-9*:,./~ -]{1,80}$")


_NODE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_HOST_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|rsa-sha2-512|"
                       r"rsa-sha2-256|ssh-rsa) [A-Za-z0-9+/]+={0,3}$")


class ExecutionNode(_Section):
    """[[execution_nodes]]: a machine near some laptops that runs their playbooks for the controller
    (ansible-runner worker behind an SSH forced command; see provisioning.nodes)."""

    name: str = Field(pattern=_NODE_NAME)
    # The node's SSH address and port, as the controller reaches it.
    address: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(default=22, ge=1, le=65535)
    # The account on the node whose authorized_keys entry forces `werne-node-worker`.
    user: str = Field(default="werne-node", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # The node's pinned host key, "TYPE BASE64" (as in its /etc/ssh/ssh_host_*_key.pub).
    host_key: str
    # The controller's key for the node; empty means the laptops' key (ssh.private_key_file).
    key_file: Path | None = None
    # The networks whose laptops this node serves (CIDRs); a laptop's ansible_host decides.
    networks: list[str]

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, v: str) -> str:
        v = " ".join(v.split()[:2])
        if not _HOST_KEY.match(v):
            raise ValueError("expected the node's public host key as 'TYPE BASE64' (e.g. ssh-ed25519 AAAA...)")
        return v

    @field_validator("networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        out = [_network(item, f"'{item}' is not a network (CIDR)") for item in v]
        if not out:
            raise ValueError("a node serves at least one network")
        return out


def _check_nodes(nodes: list[ExecutionNode]) -> list[ExecutionNode]:
    """Names unique, and no network served by two nodes (a laptop has one way in)."""
    names = [n.name for n in nodes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"execution node '{dup[0]}' is configured twice")
    seen: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for node in nodes:
        for net in node.networks:
            n = ipaddress.ip_network(net)
            for other, owner in seen:
                if other.version == n.version and other.overlaps(n):
                    raise ValueError(f"network {net} of execution node '{node.name}' overlaps {other} "
                                     f"of '{owner}'")
            seen.append((n, node.name))
    return nodes


class Config(_Section):
    site: SiteConfig = SiteConfig()
    ssh: SSHConfig = SSHConfig()
    provisioning: ProvisioningConfig = ProvisioningConfig()
    lab: LabConfig = LabConfig()
    mdm: MDMConfig = MDMConfig()
    scep: SCEPConfig = SCEPConfig()
    ddm: DDMConfig = DDMConfig()
    vpn: VPNConfig = VPNConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    dep: DEPConfig = DEPConfig()
    web: WebConfig = WebConfig()
    apps: AppsConfig = AppsConfig()
    activation_lock: ActivationLockConfig = ActivationLockConfig()
    recovery_keys: RecoveryKeysConfig = RecoveryKeysConfig()
    homeoffice: HomeOfficeConfig = HomeOfficeConfig()
    server: ServerConfig = ServerConfig()
    alerts: AlertsConfig = AlertsConfig()
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()
    backup: BackupConfig = BackupConfig()
    # No nodes (the default): every playbook runs on this machine, as before.
    execution_nodes: Annotated[list[ExecutionNode], AfterValidator(_check_nodes)] = []
    # Where this config came from, for messages; not a setting.
    source: str = Field(default="built-in defaults", exclude=True)
    # The keys the config file set, per section: the endpoints file does not override them.
    _explicit: dict[str, set[str]] = PrivateAttr(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.site.state_dir

    @property
    def database_url(self) -> str:
        return self.site.database_url or f"sqlite:///{self.state_dir / 'werne.db'}"

    @property
    def inventory_dir(self) -> Path:
        return self.site.inventory

    @property
    def ssh_key_file(self) -> Path:
        return self.ssh.private_key_file or (self.state_dir / "lab" / "id_ed25519")


def _resolve_paths(cfg: Config, base: Path) -> None:
    """Relative paths in a config file are relative to that file's folder."""
    sections: list[BaseModel] = [cfg.site, cfg.ssh, cfg.lab, cfg.mdm, cfg.scep, cfg.ddm, cfg.compliance, cfg.dep,
                                 cfg.web, cfg.vpn, cfg.apps, cfg.activation_lock, cfg.recovery_keys, cfg.homeoffice,
                                 cfg.server, *cfg.apps.locations.values(), *cfg.execution_nodes]
    for section in sections:
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, Path):
                value = value.expanduser()
                if not value.is_absolute():
                    value = base / value
                setattr(section, name, value)


def _format_validation(e: ValidationError, source: str) -> str:
    """The first problem as one line: a setting's name and the message may quote the file's text."""
    err = e.errors()[0]
    loc = line_safe(".".join(str(p) for p in err["loc"]))
    msg = line_safe(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{line_safe(source)}: {loc}: {msg}{more}"


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file werne reads (the config, the endpoints file) as a dict; ConfigError, one line, for
    a file that cannot be read, is not TOML, or nests so deeply that the parser would recurse away."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(line_safe(f"{path}: not valid TOML: {e}")) from None
    except RecursionError:
        raise ConfigError(line_safe(f"{path}: not valid TOML: nested too deeply")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(line_safe(f"{path}: cannot read: {e.__class__.__name__}")) from None


def load_config(path: str | Path | None = None, state_dir: str | Path | None = None) -> Config:
    """Load the site configuration. Raises ConfigError with a one-line reason."""
    explicit = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    source = "built-in defaults"
    base = Path.cwd()
    p: Path | None
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(line_safe(f"config file {p} does not exist"))
    else:
        p = next((c for c in (Path("werne.toml"), SYSTEM_CONFIG) if c.is_file()), None)
    if p is not None:
        data = read_toml(p)
        source = str(p)
        base = p.resolve().parent
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None
    cfg.source = source
    _resolve_paths(cfg, base)
    override = state_dir or os.environ.get(STATE_DIR_ENV)
    if override:
        cfg.site.state_dir = Path(override).expanduser().resolve()
    cfg._explicit = {k: set(v) for k, v in data.items() if isinstance(v, dict)}
    return apply_endpoints(cfg)


def endpoints_file(state_dir: Path) -> Path:
    """The endpoints file of a state dir (see the module docstring)."""
    return Path(state_dir) / ENDPOINTS_FILE


def apply_endpoints(cfg: Config) -> Config:
    """Fill the settings cfg's config file leaves unset from its state dir's endpoints file, in place.

    load_config does this; call it again after something (re)wrote the endpoints file, e.g. after
    `lab.mdm.up` in the same process. Raises ConfigError for an unreadable or invalid file.
    """
    path = endpoints_file(cfg.state_dir)
    if not path.is_file():
        return cfg
    overlay = read_toml(path)
    fill: dict[str, dict[str, Any]] = {}
    for section, values in overlay.items():
        if section == "site" or not isinstance(values, dict):
            raise ConfigError(f"{path}: {section}: only sections other than [site] can be set here")
        explicit = cfg._explicit.get(section, set())
        fill[section] = {k: v for k, v in values.items() if k not in explicit}
    try:
        filled = Config.model_validate(fill)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, str(path))) from None
    for section, values in fill.items():
        for key in values:
            setattr(getattr(cfg, section), key, getattr(getattr(filled, section), key))
    return cfg


def write_endpoints(state_dir: Path, section: str, values: dict[str, str | int | float | bool | Path]) -> Path:
    """Set one section of the state dir's endpoints file (the other sections are kept)."""
    path = endpoints_file(state_dir)
    sections: dict[str, Any] = {}
    if path.is_file():
        try:
            sections = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            sections = {}
    sections[section] = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in values.items()}
    lines = ["# Written by werne (see core.config: endpoints file); the config file wins over it.\n"]
    for name, table in sections.items():
        lines.append(f"\n[{name}]\n")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
