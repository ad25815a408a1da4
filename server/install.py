"""`werne server install`: the MDM server installed or updated from the config, by one Ansible run.

On the controller (this checkout) it validates the config, renders the units and both nginx sites
(server.deploy, the same files `werne deploy write` writes), packs werne's wheel and its
dependencies' wheels into one archive (the server needs no package index), finds the pinned
NanoMDM, NanoDEP, KMFDDM and scepserver builds in .tools/bin and NanoMDM's schema, and then runs
playbooks/server.yml through provisioning.ansible (the one Ansible entry point) against the host:
over SSH (its host key pinned in the work dir's known_hosts, first contact only with accept_new),
or on this machine (local). Every task is idempotent: a second run reports changed=0, and a run
stopped half-way is completed by the next one.

Controller-side files live in the work dir (default <user state dir>/server-install), never in
the config's state dir, which is the server's.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import REPO_ROOT, Config, default_state_dir
from core.findings import Findings
from core.locks import file_lock
from ipad.golive.scep_ca import challenge_file, depot_dir, trust_bundle_file
from provisioning.ansible import AnsibleResult, HostResult, run_playbook
from provisioning.known_hosts import PinnedHostKeys
from provisioning.preflight import SSHTarget, check_host, load_private_key
from server.deploy import (
    ACME_PACKAGES,
    ENDPOINTS_FILE,
    NGINX_BOOTSTRAP_SITE,
    NGINX_SITE,
    SERVER_PACKAGES,
    TIMERS,
    ServerLayout,
    Words,
    check_tls_here,
    check_token,
    server_layout,
    write_deployment,
)
from server.errors import ServerInputError, ServerInstallError

PLAYBOOK = "server.yml"
INVENTORY_NAME = "werne-server"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
# The source of werne's wheel: a change here means a new wheel (and a reinstall on the server).
WHEEL_SOURCES = ("pyproject.toml", "setup.py", "README.md", "cli.py", "core", "provisioning", "mdm_client", "ipad",
                 "compliance", "enrolment", "server", "lab", "commands", "apps", "data", "declarations",
                 "deploy", "docs", "inventories/demo", "playbooks", "profiles")
PIP_TIMEOUT_S = 900


def default_work_dir() -> Path:
    return default_state_dir() / "server-install"


@dataclass(frozen=True)
class InstallTarget:
    """Where the install runs: a host over SSH (address, port, user) or this machine (local)."""

    address: str | None = None
    port: int = 22
    user: str = "root"

    @property
    def local(self) -> bool:
        return self.address is None

    @property
    def name(self) -> str:
        return self.address or "localhost"


@dataclass
class InstallResult(Findings):
    """What one install run did: the host's outcome, what changed, the TLS state it left nginx in."""

    host: str
    outcome: str
    changed: int = 0
    ok_tasks: int = 0
    reason: str | None = None
    changed_tasks: list[str] = field(default_factory=list)
    tls: str = ""
    duration_s: float = 0.0
    host_key_pinned: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "changed")

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "outcome": self.outcome, "changed": self.changed, "ok_tasks": self.ok_tasks,
                "reason": self.reason, "changed_tasks": self.changed_tasks, "tls": self.tls,
                "duration_s": round(self.duration_s, 1), "host_key_pinned": self.host_key_pinned}


# ---------------------------------------------------------------- what the server needs ----------


@dataclass(frozen=True)
class _KeyFile:
    setting: str
    path: Path | None
    generated: bool


def _key_files(config: Config, layout: ServerLayout) -> list[_KeyFile]:
    """The secret and certificate files the services need: generated ones the install makes once
    (random keys); provided ones (the city's) must be on the server already."""
    keys = [
        _KeyFile("mdm.api_key_file", config.mdm.api_key_file, True),
        _KeyFile("mdm.webhook_hmac_key_file", config.mdm.webhook_hmac_key_file, True),
        _KeyFile("ddm.api_key_file", config.ddm.api_key_file, True),
        _KeyFile("web.secret_key_file", config.web.secret_key_file, True),
        _KeyFile("mdm.signing_cert_file", config.mdm.signing_cert_file, False),
        _KeyFile("mdm.signing_key_file", config.mdm.signing_key_file, False),
    ]
    if layout.nanodep:
        keys.append(_KeyFile("dep.api_key_file", config.dep.api_key_file, True))
    return keys


def _check_settings(config: Config, keys: list[_KeyFile]) -> None:
    if config.source == "built-in defaults" or not Path(config.source).is_file():
        raise ServerInputError("the server install needs a config file (--config, $WERNE_CONFIG or "
                               "/etc/werne/werne.toml): it becomes the server's /etc/werne/werne.toml")
    for k in keys:
        if k.path is None:
            what = ("the install writes a random key there" if k.generated
                    else "the city's file, put on the server before the install")
            raise ServerInputError(f"{k.setting} is not set ({what}; e.g. {config.server.config_dir}/...)")
    if not config.state_dir.is_absolute() or str(config.state_dir).startswith(("/root/", "/home/")):
        raise ServerInputError(f"site.state_dir {config.state_dir}: the server's state dir must be an absolute "
                               "path the service account owns (e.g. /var/lib/werne), not in a home folder")


def _access(config: Config, layout: ServerLayout, keys: list[_KeyFile]) -> list[dict[str, Any]]:
    """What the service account must be able to read on the server, each with its setting's name."""
    # The config file itself is copied (root:<user> 0640) only after this check passed, so a config
    # naming an unusable path never reaches the server's services.
    paths: list[dict[str, Any]] = [{"setting": k.setting, "path": str(k.path)} for k in keys]
    optional = {
        "site.inventory": config.site.inventory,
        "dep.machineinfo_ca_file": config.dep.machineinfo_ca_file,
        "mdm.wifi_secret_file": config.mdm.wifi_secret_file,
        # The webhook receiver reads it at its start (escrow of the bypass codes).
        "activation_lock.key_file": config.activation_lock.key_file,
    }
    paths += [{"setting": name, "path": str(p)} for name, p in optional.items() if p is not None]
    return paths


def _city_files(config: Config, layout: ServerLayout, keys: list[_KeyFile]) -> list[str]:
    """The files the city puts into the config folder for werne (the profile-signing pair, Apple's
    device CA, the Wi-Fi secret, the Activation Lock escrow key): the install makes them readable by
    the service account's group. Files elsewhere are left as they are, and the access check names
    any the account cannot read."""
    named = [k.path for k in keys if not k.generated]
    named += [config.dep.machineinfo_ca_file, config.mdm.wifi_secret_file, config.activation_lock.key_file]
    return [str(p) for p in named if p is not None and p.is_relative_to(layout.config_dir)]


def _env_files(config: Config, layout: ServerLayout) -> list[dict[str, Any]]:
    api, hmac, ddm = config.mdm.api_key_file, config.mdm.webhook_hmac_key_file, config.ddm.api_key_file
    dsn = check_token(Words(layout.nanomdm_dsn), "NANOMDM_STORAGE_DSN")
    files = [
        {"path": str(layout.env_file("nanomdm")), "variables": [
            {"name": "NANOMDM_API", "file": str(api)}, {"name": "NANOMDM_WEBHOOK_HMAC_KEY", "file": str(hmac)},
            {"name": "NANOMDM_STORAGE_DSN", "value": dsn}]},
        {"path": str(layout.env_file("kmfddm")), "variables": [
            {"name": "KMFDDM_API", "file": str(ddm)}, {"name": "KMFDDM_ENQUEUE_KEY", "file": str(api)}]},
        {"path": str(layout.env_file("scep")), "variables": [
            {"name": "SCEP_CHALLENGE_PASSWORD", "file": str(challenge_file(config))}]},
    ]
    if layout.nanodep:
        files.append({"path": str(layout.env_file("nanodep")), "variables": [
            {"name": "NANODEP_API", "file": str(config.dep.api_key_file)}]})
    return files


def _databases(config: Config, layout: ServerLayout) -> list[str]:
    """NanoMDM's database, and werne's own when site.database_url is PostgreSQL on this server."""
    names = [layout.nanomdm_database]
    url = config.site.database_url
    if url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.host not in (None, "", "localhost") and not str(parsed.query.get("host", "")).startswith("/"):
            return names  # a database on another server: not this install's to create
        if parsed.database and parsed.database not in names:
            names.append(parsed.database)
    return names


# ---------------------------------------------------------------- controller-side files ----------


def _tree_hash(root: Path, entries: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for entry in entries:
        p = root / entry
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pip(args: list[str], what: str) -> None:
    try:
        p = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                           timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ServerInstallError(f"{what}: pip took longer than {PIP_TIMEOUT_S} s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        raise ServerInstallError(f"{what} failed: {lines[-1] if lines else f'pip exit {p.returncode}'}")


def build_wheelhouse(work_dir: Path) -> tuple[Path, str, str]:
    """werne's wheel (rebuilt only when its sources changed) and its dependencies' wheels, packed
    into one reproducible archive; returns (archive, its sha256, werne's wheel file name)."""
    source = _tree_hash(REPO_ROOT, WHEEL_SOURCES)
    wheels = work_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stamp = wheels / f".werne-{source}"
    if not stamp.is_file():
        for old in [*wheels.glob("werne-*.whl"), *wheels.glob(".werne-*")]:
            old.unlink()
        # From a copy: setuptools builds in its source tree (build/, *.egg-info), never in the checkout.
        src = work_dir / "src"
        shutil.rmtree(src, ignore_errors=True)
        for entry in WHEEL_SOURCES:
            if (REPO_ROOT / entry).is_dir():
                shutil.copytree(REPO_ROOT / entry, src / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (src / entry).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO_ROOT / entry, src / entry)
        _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(src)], "building werne's wheel")
        shutil.rmtree(src, ignore_errors=True)
        stamp.touch()
    wheel = next(iter(sorted(wheels.glob("werne-*.whl"))), None)
    if wheel is None:
        raise ServerInstallError(f"no werne wheel in {wheels} after the build")
    spec = f"{wheel}[postgres]"
    try:  # the dependencies' wheels from what is already here; the package index only when some are missing
        _pip(["wheel", "--quiet", "--no-index", "--find-links", str(wheels), "--wheel-dir", str(wheels), spec],
             "collecting the dependencies' wheels")
    except ServerInstallError:
        _pip(["wheel", "--quiet", "--find-links", str(wheels), "--wheel-dir", str(wheels), spec],
             "collecting the dependencies' wheels")
    archive = work_dir / "wheelhouse.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(wheels.glob("*.whl")):
            info = tarfile.TarInfo(f"wheels/{f.name}")
            data = f.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if not archive.is_file() or archive.read_bytes() != data:
        archive.write_bytes(data)
    return archive, hashlib.sha256(data).hexdigest(), wheel.name


def _binaries(layout: ServerLayout) -> list[str]:
    names = ["nanomdm", "kmfddm", "scepserver", *(["depserver"] if layout.nanodep else [])]
    missing = [n for n in names if not (TOOLS_BIN / n).is_file()]
    if missing:
        raise ServerInstallError(f"{', '.join(missing)} missing in {TOOLS_BIN}: run scripts/setup.sh first")
    return names


def _stage_files(config: Config, files_dir: Path) -> None:
    """werne.toml (the config file itself), the units, both nginx sites and NanoMDM's schema."""
    from ipad.golive.nanomdm_db import schema_file

    shutil.rmtree(files_dir, ignore_errors=True)
    files_dir.mkdir(parents=True)
    write_deployment(config, files_dir)
    shutil.copyfile(config.source, files_dir / "werne.toml")
    try:
        shutil.copyfile(schema_file(), files_dir / "nanomdm-schema.sql")
    except OSError as e:
        raise ServerInstallError(f"NanoMDM's schema: {e.strerror}") from None


def playbook_vars(config: Config, layout: ServerLayout, work_dir: Path, wheelhouse: tuple[Path, str, str]
                  ) -> dict[str, Any]:
    """The playbook's variables (werne_*): everything the server gets, from the config."""
    keys = _key_files(config, layout)
    return {
        "werne_user": layout.user,
        "werne_host": layout.host,
        "werne_install_dir": str(layout.install_dir),
        "werne_venv": str(layout.venv),
        "werne_config_dir": str(layout.config_dir),
        "werne_config_file": str(layout.config_file),
        "werne_state_dir": str(layout.state_dir),
        "werne_bin_dir": str(layout.bin_dir),
        "werne_files_dir": str(work_dir / "files"),
        "werne_binaries_dir": str(TOOLS_BIN),
        "werne_binaries": _binaries(layout),
        "werne_wheelhouse": str(wheelhouse[0]),
        "werne_wheelhouse_sha256": wheelhouse[1],
        "werne_wheel": wheelhouse[2],
        "werne_packages": [*SERVER_PACKAGES, *(ACME_PACKAGES if layout.tls == "acme" else ())],
        "werne_secret_files": [{"setting": k.setting, "path": str(k.path)} for k in keys if k.generated],
        "werne_access": _access(config, layout, keys),
        "werne_city_files": _city_files(config, layout, keys),
        "werne_env_files": _env_files(config, layout),
        "werne_databases": _databases(config, layout),
        "werne_nanomdm_database": layout.nanomdm_database,
        "werne_nanomdm_dsn": layout.nanomdm_dsn,
        "werne_scep_trust_bundle": str(trust_bundle_file(config)),
        "werne_units": list(layout.units),
        "werne_unit_files": _contents(work_dir / "files" / "systemd", layout.all_units, Path("/etc/systemd/system")),
        "werne_nginx_files": _contents(work_dir / "files" / "nginx", (NGINX_SITE, NGINX_BOOTSTRAP_SITE),
                                       Path("/etc/nginx/sites-available")),
        "werne_endpoints_files": _contents(work_dir / "files" / "werne", (ENDPOINTS_FILE,), layout.state_dir),
        "werne_unused_units": list(layout.unused_units),
        "werne_timers": _timers(config),
        "werne_backup_dir": str(config.backup.dir),
        "werne_metrics_dir": str(layout.metrics_dir) if layout.metrics_dir else "",
        "werne_restart_inputs": _restart_inputs(config, layout, keys),
        "werne_listens": [layout.webhook_listen, layout.scep_listen, layout.kmfddm_listen,
                          *layout.nanomdm_replicas,
                          layout.web_listen, *([layout.nanodep_listen] if layout.nanodep else [])],
        # With several NanoMDM replicas mdm.url is nginx's API front: it listens once nginx runs.
        "werne_api_front": [layout.nanomdm_listen] if layout.api_front else [],
        "werne_tls_mode": layout.tls,
        "werne_tls_cert": str(layout.tls_cert),
        "werne_tls_key": str(layout.tls_key),
        "werne_acme_root": str(layout.acme_root),
        "werne_acme_email": layout.acme_email,
        "werne_acme_server": layout.acme_directory_url,
        "werne_acme_ca_file": str(layout.acme_ca_file) if layout.acme_ca_file else "",
    }


def _timers(config: Config) -> list[str]:
    """The nightly renewal's and the nightly run's timers; the nightly backup's once [backup] names
    its password (a file the city puts on the server and keeps elsewhere too: the timer cannot run
    without it)."""
    return [*TIMERS, *(["werne-backup.timer"] if config.backup.password_file else [])]


def _restart_inputs(config: Config, layout: ServerLayout, keys: list[_KeyFile]) -> list[str]:
    """Every file the services read on the server: a service that started before the newest of
    them was written is restarted (playbooks/library/werne_units.py)."""
    files = [layout.config_file, layout.state_dir / ENDPOINTS_FILE,
             *(Path("/etc/systemd/system") / u for u in layout.all_units),
             *(layout.env_file(s) for s in ("nanomdm", "kmfddm", "scep", *(["nanodep"] if layout.nanodep else []))),
             *(layout.bin_dir / b for b in _binaries(layout)), layout.install_dir / "installed-wheels.sha256",
             depot_dir(config) / "ca.pem", trust_bundle_file(config), *(k.path for k in keys if k.path is not None)]
    return [str(f) for f in files]


def _contents(source: Path, names: tuple[str, ...], dest: Path) -> list[dict[str, str]]:
    """Rendered files as the playbook's werne_files module takes them (no secret is ever in them)."""
    return [{"dest": str(dest / n), "content": (source / n).read_text(encoding="utf-8"), "mode": "0644"}
            for n in names]


def _inventory(work_dir: Path, target: InstallTarget) -> Path:
    if target.local:
        # As root on the server itself, which may have no sudo: su, with a shell of its own for
        # the service account (whose login shell is nologin).
        host: dict[str, Any] = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                                "ansible_become_method": "su", "ansible_become_flags": "-s /bin/sh"}
    else:
        host = {"ansible_host": target.address, "ansible_port": target.port, "ansible_user": target.user,
                "ansible_python_interpreter": "/usr/bin/python3"}
    path = work_dir / "inventory.yml"
    path.write_text(yaml.safe_dump({"werne_server": {"hosts": {INVENTORY_NAME: host}}}), encoding="utf-8")
    return path


def _pin_host_key(config: Config, target: InstallTarget, known_hosts: Path, accept_new: bool) -> bool:
    """Check the server as pre-flight checks a laptop (host key, key login, sudo, OS); with
    accept_new, pin its key on first contact. Returns whether a key was pinned now."""
    assert target.address is not None
    pinned = PinnedHostKeys(known_hosts)
    ssh = SSHTarget(target.address, target.address, target.port, target.user)
    check, new_key = check_host(ssh, config, pinned, load_private_key(config.ssh_key_file), accept_new,
                                unknown_reason="host key not pinned yet: run the install once with --accept-new")
    if not check.ok:
        raise ServerInstallError(f"{target.name}: {check.reason}")
    if new_key is not None:
        pinned.add({ssh.host_id: new_key})
    return new_key is not None


def _result(target: InstallTarget, run: AnsibleResult, started: float, pinned: bool) -> InstallResult:
    host: HostResult = run.outcomes.get(INVENTORY_NAME) or HostResult(INVENTORY_NAME, outcome="failed")
    reason = host.reason
    if run.status == "canceled":
        reason = "interrupted: run the install again to complete it"
    elif not run.complete:
        reason = f"the run stopped before its end ({run.status}): {run.stdout_tail(3)}"
    outcome: str = host.outcome if reason is None else ("unreachable" if host.outcome == "unreachable" else "failed")
    if run.status == "canceled":
        outcome = "interrupted"
    tls = str((host.results.get("Report the TLS state") or {}).get("msg") or "")
    return InstallResult(host=target.name, outcome=outcome, changed=host.changed, ok_tasks=host.ok, reason=reason,
                         changed_tasks=[c.task for c in host.changes], tls=tls,
                         duration_s=time.monotonic() - started, host_key_pinned=pinned)


def install_server(
    config: Config,
    target: InstallTarget,
    work_dir: Path | None = None,
    accept_new: bool = False,
    progress: Callable[[str], None] | None = None,
) -> InstallResult:
    """Install or update the server from `config` on `target`; a failed task is a result."""
    started = time.monotonic()
    layout = server_layout(config)
    keys = _key_files(config, layout)
    _check_settings(config, keys)
    if target.local and os.geteuid() != 0:
        raise ServerInstallError("--local installs on this machine and needs root")
    if target.local:
        # The city's certificate and key are here: checked before anything is written. Over SSH
        # the playbook checks them on the server before nginx serves them (werne server check-tls).
        check_tls_here(layout, required=True)
    work_dir = Path(work_dir or default_work_dir()).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o700)
    with file_lock(work_dir / ".lock", wait=0, what="server install", held_error=ServerInstallError,
                   unusable_error=ServerInstallError):
        _binaries(layout)
        if progress:
            progress("rendering the units and the nginx sites")
        _stage_files(config, work_dir / "files")
        if progress:
            progress("packing werne's wheel and its dependencies")
        wheelhouse = build_wheelhouse(work_dir)
        known_hosts = work_dir / "known_hosts"
        pinned = False
        if not target.local:
            if progress:
                progress(f"checking {target.name} over SSH")
            pinned = _pin_host_key(config, target, known_hosts, accept_new)
        if progress:
            progress(f"running {PLAYBOOK} on {target.name}")
        run = run_playbook(
            config, PLAYBOOK, inventory=_inventory(work_dir, target), hosts=[INVENTORY_NAME],
            private_data_dir=work_dir / "ansible", known_hosts=known_hosts, forks=1,
            timeout_s=config.provisioning.timeout_s, extravars=playbook_vars(config, layout, work_dir, wheelhouse),
            pipelining=True, report_tasks=frozenset({"Report the TLS state"}), rotate_artifacts=10,
            cancel_on_signal=True, extra_env={"ANSIBLE_REMOTE_USER": target.user},
        )
    return _result(target, run, started, pinned)
