"""Site configuration: one TOML file (werne.toml) with defaults that work with no file at all.

Lookup order for the file: `--config PATH`, then `$WERNE_CONFIG`, then `./werne.toml` if present,
else built-in defaults (the demo inventory and a state dir under the user's home). `--state-dir`
overrides the state directory. Secrets are never settings: settings name a file or an environment
variable that holds them (see core.secrets).

Endpoints file: `<state_dir>/endpoints.toml`, written by whatever installs or starts the servers
(e.g. `werne lab up`), fills the settings the config file leaves unset (same sections and keys,
absolute paths; not [site]). The config file wins over it, and core.secrets' environment
variables win over any key file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = REPO_ROOT / "inventories" / "demo"
CONFIG_ENV = "WERNE_CONFIG"
STATE_DIR_ENV = "WERNE_STATE_DIR"
ENDPOINTS_FILE = "endpoints.toml"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "werne"


def _check_listen(v: str) -> str:
    from core.netaddr import split_listen

    split_listen(v)
    return v


def _check_env_name(v: str) -> str:
    # A secret pasted where the *name* of its variable belongs must not come back in a message.
    if v and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", v):
        raise ValueError("must name an environment variable (letters, digits, '_'); the value is not "
                         "shown, in case it is the secret itself")
    return v


EnvName = Annotated[str, AfterValidator(_check_env_name)]
ListenAddress = Annotated[str, AfterValidator(_check_listen)]


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

    @field_validator("admin_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in v:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"'{item}' is not a network (CIDR)") from None
        if not out:
            raise ValueError("at least one admin network is needed, or nobody can reach SSH")
        return out


class LabConfig(_Section):
    # Where the cached Debian base image lives, shared by every state dir on the machine.
    cache_dir: Path = Path("/var/cache/werne-lab")
    suite: str = "bookworm"


class MDMConfig(_Section):
    url: str = "http://127.0.0.1:9000"
    api_key_file: Path | None = None
    api_key_env: EnvName = "WERNE_MDM_API_KEY"
    webhook_hmac_key_file: Path | None = None
    webhook_hmac_key_env: EnvName = "WERNE_WEBHOOK_HMAC_KEY"
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
    server_url: str = "https://mdm.example-city.invalid/mdm"
    checkin_url: str = ""
    # The CA bundle `werne mdm check` trusts for the HTTPS front (server_url, scep.url,
    # dep.enrol_url). Empty: the system's CAs (a public or the city's certificate).
    tls_ca_file: Path | None = None
    # NanoMDM's PostgreSQL DSN (libpq format), for `werne mdm db-init`: a secret, from this file
    # (mode 0600) or the environment variable NanoMDM itself reads.
    storage_dsn_file: Path | None = None
    storage_dsn_env: str = "NANOMDM_STORAGE_DSN"
    # The APNs push certificate's private key (`werne mdm push-cert csr` makes it, mode 0600).
    # Empty means <state_dir>/mdm/push/push.key.
    push_key_file: Path | None = None


class SCEPConfig(_Section):
    """[scep]: the SCEP server (micromdm/scep) that issues the iPads' device identities."""

    # The device-facing SCEP URL the enrolment profile names (behind the TLS proxy).
    url: str = "https://mdm.example-city.invalid/scep"
    # The CA depot scepserver reads (ca.pem, ca.key, serial, index.txt). Empty: <state_dir>/scep/depot.
    depot_dir: Path | None = None
    # The challenge devices present; a secret file (mode 0600). Empty: <state_dir>/scep/challenge.
    challenge_file: Path | None = None
    challenge_env: str = "WERNE_SCEP_CHALLENGE"
    # Device identity certificates: subject, RSA key size, validity (scepserver's -crtvalid).
    subject_organization: str = "Stadt Werne"
    subject_common_name: str = "werne iPad"
    key_size: int = Field(default=2048, ge=2048, le=4096)
    cert_valid_days: int = Field(default=365, ge=1, le=3650)
    # Where `werne lab` and the deploy units run scepserver.
    listen: str = "127.0.0.1:9002"
    timeout: float = Field(default=10.0, gt=0)


class DDMConfig(_Section):
    """[ddm]: the KMFDDM server (declarative device management: declarations, sets, status)."""

    url: str = "http://127.0.0.1:9003"
    api_key_file: Path | None = None
    api_key_env: str = "WERNE_DDM_API_KEY"
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
        import ipaddress

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
        import ipaddress

        return [str(ipaddress.ip_address(a)) for a in v]

    @field_validator("killswitch_allow")
    @classmethod
    def _killswitch(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in v:
            if item in ("dhcp", "dhcpv6"):
                out.append(item)
                continue
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"'{item}' is neither 'dhcp', 'dhcpv6' nor a network") from None
        return out


class ComplianceConfig(_Section):
    min_ipados: str = "17.0"
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

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except (ValueError, OSError) as e:
            raise ValueError(f"unknown time zone {v!r} ({e.__class__.__name__})") from None
        return v


class DEPConfig(_Section):
    url: str = "http://127.0.0.1:9001"
    name: str = "werne"
    api_key_file: Path | None = None
    api_key_env: EnvName = "WERNE_DEP_API_KEY"
    timeout: float = 15.0
    # The DEP profile data file (default: enrolment/dep_profile.yaml) and, if set, the MDM
    # enrolment URL that overrides the file's `url`.
    profile_file: Path | None = None
    enrol_url: str = ""
    # The enrolment endpoint (served by `werne web serve` at the path of enrol_url) accepts a
    # MachineInfo only if its CMS signer chains to a certificate in this PEM file (Apple's device
    # CAs). Empty: the signature is checked, the signer's issuer is not.
    machineinfo_ca_file: Path | None = None
    # iPads whose MachineInfo reports an older iPadOS are asked to update first during ADE (iOS 17+:
    # 403 com.apple.softwareupdate.required with the newest version Apple's catalogue offers the
    # model); older devices are refused. Empty: no minimum.
    minimum_os_version: str = Field(default="", pattern=r"^(\d+(\.\d+){0,2})?$")
    # THROTTLED serials: at most this many assignment calls, waiting Apple's retry_after_seconds
    # but never longer than max_retry_wait_s at a time (longer: left for a later approval run).
    max_assign_attempts: int = Field(default=3, ge=1, le=10)
    max_retry_wait_s: float = Field(default=30.0, ge=0, le=600)


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

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in v:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"'{item[:60]}' is not an address or network") from None
        return out


class AppsLocationConfig(_Section):
    """One Apps and Books location (a "Standort" in Apple School Manager) and its content token."""

    # The location's content token (sToken), downloaded in Apple School Manager; a secret file (0600).
    token_file: Path | None = None
    # An environment variable that holds the token instead (wins over the file when set).
    token_env: str = ""


class AppsConfig(_Section):
    """[apps]: Apple's Apps and Books service (app licences) and the apps each iPad group gets."""

    # Apple's App and Book Management API (v2); a test or lab points it at a fake.
    url: str = "https://vpp.itunes.apple.com/mdm/v2"
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
    key_env: str = "WERNE_ACTIVATION_LOCK_KEY"
    # Login names (audit actors) allowed to show a bypass code; empty: nobody.
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
        import ipaddress

        try:
            return [str(ipaddress.ip_network(n, strict=False)) for n in v]
        except ValueError as e:
            raise ValueError(f"not a network: {e}") from None


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
    homeoffice: HomeOfficeConfig = HomeOfficeConfig()
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
                                 cfg.web, cfg.vpn, cfg.apps, cfg.activation_lock, cfg.homeoffice,
                                 *cfg.apps.locations.values()]
    for section in sections:
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, Path):
                value = value.expanduser()
                if not value.is_absolute():
                    value = base / value
                setattr(section, name, value)


def _format_validation(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def load_config(path: str | Path | None = None, state_dir: str | Path | None = None) -> Config:
    """Load the site configuration. Raises ConfigError with a one-line reason."""
    explicit = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    source = "built-in defaults"
    base = Path.cwd()
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
    else:
        p = Path("werne.toml")
        if not p.is_file():
            p = None  # type: ignore[assignment]
    if p is not None:
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read: {e.__class__.__name__}") from None
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
    try:
        overlay = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e.__class__.__name__}") from None
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
