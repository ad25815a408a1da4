"""Pytest fixtures for the compliance tests (registered in tests/conftest.py): synthetic but complete
facts of a compliant laptop and iPad, a config, a state database, and stored runs built from them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from compliance.engine import DeviceFacts, EvalContext, MissingFact, evaluate, lookup
from compliance.rules import load_baselines
from core.config import Config, load_config

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
GOOD_CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]


def _epoch(hours_ago: float) -> int:
    return int((NOW - timedelta(hours=hours_ago)).timestamp())


def patch_facts() -> dict[str, Any]:
    """The `patch` facts of a patched laptop: fresh lists with a security release, nothing pending,
    unattended-upgrade ran this morning, no reboot pending, running its newest kernel."""
    return {
        "lists": {
            "release_files": 3,
            "releases": ["Debian-Security/bookworm-security", "Debian/bookworm", "Debian/bookworm-updates"],
            "security_releases": ["Debian-Security/bookworm-security"],
            "newest_release_file": _epoch(20),
            "stamps": {"update-success-stamp": _epoch(20), "update-stamp": _epoch(20)},
            "refreshed": _epoch(20),
            "age_s": 20 * 3600,
        },
        "pending": {"security_count": 0, "other_count": 2, "security": []},
        "unattended_upgrade": {
            "installed": True,
            "stamps": {"upgrade-stamp": _epoch(19), "unattended-upgrades-stamp": _epoch(19)},
            "last_run": _epoch(19),
            "age_s": 19 * 3600,
        },
        "reboot": {"required": False, "since": None, "age_s": None, "packages": []},
        "kernel": {
            "running": "6.1.0-28-amd64",
            "container": None,
            "installed": ["6.1.0-27-amd64", "6.1.0-28-amd64"],
            "newest": "6.1.0-28-amd64",
            "newest_installed_at": _epoch(24 * 20),
            "newest_age_s": 20 * 86400,
        },
    }


def laptop_facts(**overrides: Any) -> dict[str, Any]:
    """Facts of a laptop that passes every rule (as werne_facts returns them)."""
    facts: dict[str, Any] = {
        "os": {"id": "debian", "version_id": "12"},
        "virt": "none",
        "sshd": {
            "permitrootlogin": "no",
            "passwordauthentication": "no",
            "kbdinteractiveauthentication": "no",
            "maxauthtries": "3",
            "ciphers": GOOD_CIPHERS,
            "macs": ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"],
            "kexalgorithms": ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"],
            "banner": "/etc/issue.net",
        },
        "nft": {
            "available": True,
            "input_chains": [
                {"family": "inet", "table": "filter", "chain": "input", "policy": "drop", "priority": 0}
            ],
            "service_enabled": True,
        },
        "sysctl": {
            "kernel.kptr_restrict": "2",
            "kernel.dmesg_restrict": "1",
            "kernel.sysrq": "0",
            "kernel.randomize_va_space": "2",
            "fs.protected_hardlinks": "1",
            "fs.protected_symlinks": "1",
            "net.ipv4.conf.all.accept_redirects": "0",
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.all.accept_source_route": "0",
            "net.ipv4.conf.all.rp_filter": "1",
            "net.ipv4.tcp_syncookies": "1",
        },
        "pwquality": {"minlen": 12, "minclass": 3},
        "pam": {"pwquality": True},
        "usb_storage": {
            "blocked": True,
            "blacklisted": True,
            "by": ["/etc/modprobe.d/usb.conf: install usb-storage /bin/false"],
        },
        "apt": {
            "periodic": {
                "APT::Periodic::Update-Package-Lists": "1",
                "APT::Periodic::Unattended-Upgrade": "1",
            },
            "unattended_upgrades_installed": True,
        },
        "banner": {"present": True, "sshd_banner": "/etc/issue.net"},
        "luks": {"present": True, "crypttab": ["nvme0n1p3_crypt"], "devices": ["nvme0n1p3"]},
        "screen_lock": {"idle_delay_s": 600, "lock_enabled": True, "locked": True, "tmout_s": 900},
        "accounts": {"admin": {"name": "admin", "exists": True, "sudo": True}},
        "wg": {"installed": True, "config_present": True, "allowed_ips": ["0.0.0.0/0", "::/0"]},
        "vpn": {"evidence": True, "peer": True, "handshake_age_s": 90, "key_age_days": 10.0},
        "patch": patch_facts(),
    }
    for path, value in overrides.items():
        node = facts
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return facts


# ---- the shape of facts: what the engine tests assume, held against real werne_facts output ----


def fact_types(value: Any, path: str = "") -> dict[str, type]:
    """Every leaf of a facts tree as dotted path -> type; a list's elements are checked by the
    shape of its first element (path + "[]")."""
    if isinstance(value, dict):
        out: dict[str, type] = {}
        for k, v in value.items():
            out.update(fact_types(v, f"{path}.{k}" if path else k))
        return out
    if isinstance(value, list) and value:
        return {path: list, **fact_types(value[0], path + "[]")}
    return {path: type(value)}


def lookup_typed(facts: Any, path: str) -> Any:
    """The value at a fact_types path (lists: every element's value, flattened)."""
    head, _, rest = path.partition("[]")
    values = [lookup(facts, head)] if head else [facts]
    if not _:
        return values
    out = []
    for items in values:
        for item in items:
            out += lookup_typed(item, rest.lstrip(".")) if rest else [item]
    return out


# Facts that werne_facts gives as None when the laptop cannot tell (no package lists yet, no
# unattended-upgrade run so far, no reboot pending, a container without a kernel package), and as
# this type when it can. The patch rules judge None as not_applicable or error, never as a pass
# (tests/test_patch_level_rules.py), so the shape check accepts either for these paths only.
OPTIONAL_FACTS: dict[str, type] = {
    **dict.fromkeys(["patch.lists.newest_release_file", "patch.lists.stamps.update-success-stamp",
                     "patch.lists.stamps.update-stamp", "patch.lists.refreshed", "patch.lists.age_s",
                     "patch.unattended_upgrade.stamps.upgrade-stamp",
                     "patch.unattended_upgrade.stamps.unattended-upgrades-stamp",
                     "patch.unattended_upgrade.last_run", "patch.unattended_upgrade.age_s",
                     "patch.reboot.since", "patch.reboot.age_s",
                     "patch.kernel.newest_installed_at", "patch.kernel.newest_age_s"], int),
    "patch.kernel.container": str,
    "patch.kernel.newest": str,
}


def fact_mismatches(assumed: dict[str, type], rule_facts: list[str], facts: dict[str, Any]) -> list[str]:
    """Where `facts` lacks a key, or has another type, than the assumed shape and the rules' facts."""
    wrong = []
    for path, want in assumed.items():
        try:
            got = {type(v) for v in lookup_typed(facts, path)}
        except MissingFact as e:
            wrong.append(f"{path}: missing ({e})")
            continue
        allowed = {want, OPTIONAL_FACTS[path], type(None)} if path in OPTIONAL_FACTS else {want}
        if got - allowed:
            wrong.append(f"{path}: {sorted(t.__name__ for t in got)} where the tests assume {want.__name__}")
    for path in rule_facts:
        try:
            lookup(facts, path)
        except MissingFact as e:
            wrong.append(f"rule fact {path}: missing ({e})")
    return wrong


def ipad_facts(**overrides: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "device": {
            "os_version": "18.1",
            "is_supervised": True,
            "model": "iPad (10th generation)",
            "name": "x",
        },
        "security": {
            "passcode_present": True,
            "passcode_compliant": True,
            "passcode_compliant_with_profiles": True,
            "hardware_encryption_caps": 3,
        },
        "profiles": {
            "identifiers": [
                "de.werne.ipad.passcode",
                "de.werne.ipad.restrictions",
                "de.werne.ipad.wifi",
                "de.werne.ipad.webfilter",
            ]
        },
    }
    for path, value in overrides.items():
        node = facts
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return facts


PUPIL_SET = {
    "de.werne.ipad.passcode",
    "de.werne.ipad.restrictions",
    "de.werne.ipad.wifi",
    "de.werne.ipad.webfilter",
}


def fleet(n_laptops: int = 3, n_ipads: int = 4, now: datetime = NOW) -> list[DeviceFacts]:
    devs = [
        DeviceFacts(f"lap{i:02d}", "laptops", laptop_facts(), name=f"DEMO-NB-{i:04d}")
        for i in range(1, n_laptops + 1)
    ]
    schools = ["gs-demo", "gym-demo"]
    for i in range(n_ipads):
        devs.append(
            DeviceFacts(
                f"ZDTEST{i:05d}",
                "ipads",
                ipad_facts(),
                school=schools[i % 2],
                group="pupil",
                name=f"ipad-{i:02d}",
                last_seen=now - timedelta(hours=1),
            )
        )
    return devs


def make_ctx(config: Config, now: datetime = NOW) -> EvalContext:
    return EvalContext(config=config, now=now, profile_set_for=lambda d: set(PUPIL_SET))


def evaluate_fleet(config: Config, devices: list[DeviceFacts], now: datetime = NOW):  # type: ignore[no-untyped-def]
    b = load_baselines()
    ctx = make_ctx(config, now)
    out = []
    for f in ("laptops", "ipads"):
        out += evaluate(b.for_fleet(f), [d for d in devices if d.fleet == f], ctx)
    return out


def store_run(db, config: Config, devices: list[DeviceFacts], now: datetime = NOW, waivers=None):  # type: ignore[no-untyped-def]
    """Evaluate and store one complete run at time `now`; returns its id."""
    from compliance import history
    from compliance.run import rules_snapshot

    b = load_baselines()
    results = evaluate_fleet(config, devices, now)
    by_id = {d.device: d for d in devices}
    if waivers is not None:
        results = waivers.apply(results, by_id, now)
    run_id = history.begin_run(db, "all", "tester", "inv-hash", b.digest(), "waiver-hash", now=now)
    history.complete_run(
        db, run_id, results, by_id, rules_snapshot(b, ("laptops", "ipads")), now=now + timedelta(seconds=42)
    )
    return run_id


@pytest.fixture
def compliance_config(tmp_path: Path, state_dir: Path) -> Config:
    cfg_file = tmp_path / "werne.toml"
    cfg_file.write_text(f'[site]\nstate_dir = "{state_dir}"\n', encoding="utf-8")
    return load_config(cfg_file)


@pytest.fixture
def compliance_db(compliance_config: Config):  # type: ignore[no-untyped-def]
    from core.db import Database

    db = Database(compliance_config.database_url)
    yield db
    db.dispose()


@pytest.fixture
def two_runs(compliance_db, compliance_config):  # type: ignore[no-untyped-def]
    """Run 1: all good except lap03's banner. Run 2 (a day later): lap02 drifted (root login),
    lap03 fixed its banner, one iPad lost its passcode, one is unreachable."""
    devs = fleet()
    devs[2].facts = laptop_facts(banner__present=False)
    r1 = store_run(compliance_db, compliance_config, devs)
    devs2 = fleet(now=NOW + timedelta(days=1))
    devs2[1].facts = laptop_facts(sshd__permitrootlogin="yes")
    devs2[3].facts = ipad_facts(security__passcode_present=False, security__passcode_compliant=False)
    devs2[4].reachable = False
    devs2[4].reason = "no answer within 60s; last seen 2026-11-20 01:00 UTC"
    devs2[4].facts = {}
    r2 = store_run(compliance_db, compliance_config, devs2, now=NOW + timedelta(days=1))
    return r1, r2


def deep(d: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(d)


# --- a small real MDM world: NanoMDM, the webhook receiver, simulated iPads --------------------------


class IPadWorld:
    """Real NanoMDM + webhook receiver + simulated iPads for the compliance sweep."""

    def __init__(self, root: Path, n_per_school: int = 3):
        import shutil

        from core.db import Database
        from core.inventory import load_inventory
        from core.secrets import Secret
        from ipad.store import Registry
        from lab.mdm import generated_serials, issue_identities, make_scep_ca
        from tests.conftest import DEMO_INVENTORY, write_secret
        from tests.fixtures_mdm import NanoMDMProcess, start_webhook

        self.root = root
        self.state = root / "state"
        self.state.mkdir()
        inv = root / "inventory"
        shutil.copytree(DEMO_INVENTORY, inv)
        serials = generated_serials(2 * n_per_school, start=7100)
        rows = ["serial;model;school;group;name"]
        for i, s in enumerate(serials):
            school = ("gs-demo", "gym-demo")[i % 2]
            rows.append(f"{s};iPad (10th generation);{school};{('pupil', 'teacher')[i % 2]};ipad-{i:02d}")
        (inv / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        self.serials = serials
        api_key, hmac_key = "cmp-api-key-0123456789", "cmp-hmac-key-9876543210"
        secrets = root / "secrets"
        secrets.mkdir(mode=0o700)
        write_secret((secrets / "api_key"), api_key + "\n")
        (secrets / "wifi").write_text("schul-wlan-passwort\n")
        ca, ca_key = make_scep_ca(root / "scep")
        self.db = Database(f"sqlite:///{self.state / 'werne.db'}")
        inventory = load_inventory(inv)
        registry = Registry(
            self.db,
            school_of=lambda s: (
                (inventory.ipads[s].school, inventory.ipads[s].group) if s in inventory.ipads else None
            ),
        )
        self.webhook = start_webhook(registry, Secret(hmac_key, "test"))
        self.nanomdm = NanoMDMProcess(root, ca, self.webhook.url, api_key, hmac_key)
        self.config_path = root / "werne.toml"
        self.config_path.write_text(
            f'[site]\ninventory = "{inv}"\nstate_dir = "{self.state}"\n'
            f'[mdm]\nurl = "{self.nanomdm.url}"\napi_key_file = "{secrets / "api_key"}"\n'
            f'wifi_secret_file = "{secrets / "wifi"}"\nblast_radius = 50\nquery_deadline_s = 20.0\n'
            f"[compliance]\nquery_deadline_s = 6.0\ncontact_max_days = 14\n",
            encoding="utf-8",
        )
        self.devices = []
        from lab.ipad_sim import SimDevice

        for serial, udid, pem, key in issue_identities(ca, ca_key, serials):
            self.devices.append(SimDevice(serial=serial, udid=udid, cert_pem=pem, key_pem=key))
        self.sim = self._start(self.devices)

    def _start(self, devices: list[Any]) -> Any:
        from lab.ipad_sim import Simulator

        return Simulator(self.nanomdm.url, devices, poll_interval=0.3).start()

    def take_offline(self, serial: str) -> None:
        """The iPad stops talking to the server (switched off, out of Wi-Fi); the others go on."""
        self.sim.stop()
        self.sim = self._start([d for d in self.devices if d.serial != serial])

    def config(self) -> Config:
        return load_config(self.config_path)

    def inventory(self) -> Any:
        from core.inventory import load_inventory

        return load_inventory(self.config().inventory_dir)

    def close(self) -> None:
        self.sim.stop()
        self.nanomdm.stop()
        self.webhook.stop()
        self.db.dispose()


@pytest.fixture(scope="module")
def ipad_world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    world = IPadWorld(tmp_path_factory.mktemp("cmp-ipads"))
    try:
        yield world
    finally:
        world.close()
