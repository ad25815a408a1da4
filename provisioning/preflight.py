"""Pre-flight: can each selected laptop be provisioned? Checked over SSH with paramiko, all hosts at once.

Per host, in order: TCP reachable, host key matches the pin in <state_dir>/known_hosts (first
contact is pinned only with accept_new), key login, passwordless sudo, supported OS, python3,
free disk. A failed step stops that host's later steps; the first failure is its one-line reason.
Connects are retried a bounded number of times with jittered backoff; a refused host key or login
is never retried.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from core.audit import record
from core.config import Config
from core.db import Database
from core.inventory import Gateway, Inventory, Laptop
from core.secrets import warn_if_others_can_read
from provisioning.errors import HOST_KEY_CHANGED, HostSelectionError, HostUnreachable, PinnedKeyRefused, SSHKeyError
from provisioning.known_hosts import PinnedHostKeys, algorithms_for, fingerprint, host_id, same_key
from provisioning.models import HostCheck, PreflightReport

# paramiko logs handshake failures at ERROR; without a handler Python would print them on stderr,
# next to (and garbling) the CLI's own one-line reasons. The reasons are in the results instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

HOST_KEY_UNKNOWN = "host key unknown: run with --accept-new after verifying it"
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 4.0

# One round trip for every read-only check after login. A fixed string: nothing in it comes
# from the inventory or the user. `@@werne@@` separates the parts.
_PROBE = (
    "cat /etc/os-release 2>/dev/null; echo @@werne@@; "
    "command -v python3 || true; echo @@werne@@; "
    "df -Pk / | tail -n 1; echo @@werne@@; "
    'sudo -n true 2>&1; echo "sudo_rc=$?"'
)


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to reach one laptop."""

    name: str
    address: str
    port: int
    user: str

    @property
    def host_id(self) -> str:
        return host_id(self.address, self.port)


def known_hosts_path(config: Config) -> Path:
    return config.state_dir / "known_hosts"


def select_targets(
    config: Config, inventory: Inventory, names: list[str] | tuple[str, ...], all_hosts: bool,
    gateways: bool = False,
) -> list[SSHTarget]:
    """The laptops a command names (or all with all_hosts); with `gateways` (pre-flight) the VPN
    gateway too, whose key is pinned there like a laptop's before the VPN commands reach it.
    Unknown names raise InventoryError."""
    if names and all_hosts:
        raise HostSelectionError("name hosts or use --all, not both")
    if not names and not all_hosts:
        raise HostSelectionError("name at least one host, or use --all")
    wanted = list(dict.fromkeys(names))
    known = inventory.gateways if gateways else {}
    chosen = list(known.values()) if all_hosts else [known[n] for n in wanted if n in known]
    laptop_names = [n for n in wanted if n not in known]
    laptops = inventory.select_laptops(laptop_names) if laptop_names or all_hosts else []
    out = []
    hosts: list[Laptop | Gateway] = [*laptops, *chosen]
    for host in hosts:
        extra = host.model_extra or {}
        user = str(extra.get("ansible_user") or config.ssh.user)
        out.append(SSHTarget(host.name, host.ansible_host, host.ansible_port, user))
    return out


def load_private_key(path: Path) -> paramiko.PKey:
    """The controller's private key; any problem is an SSHKeyError with one readable line."""
    warn_if_others_can_read(path, "SSH key")
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise SSHKeyError(f"SSH key file {path} does not exist") from None
    except IsADirectoryError:
        raise SSHKeyError(f"SSH key file {path} is a directory") from None
    except PermissionError:
        raise SSHKeyError(f"SSH key file {path} is not readable (permission denied)") from None
    except paramiko.PasswordRequiredException:
        raise SSHKeyError(
            f"SSH key file {path} is encrypted: werne needs a key without a passphrase"
        ) from None
    except (paramiko.SSHException, ValueError, UnicodeDecodeError, OSError):
        raise SSHKeyError(f"SSH key file {path} is not a usable SSH private key") from None


def _describe_os_error(e: OSError, timeout: float) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return f"connection timed out after {timeout:g} s"
    if isinstance(e, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if e.errno == errno.EHOSTUNREACH:
        return "no route to host"
    if e.errno == errno.ENETUNREACH:
        return "network unreachable"
    return (e.strerror or e.__class__.__name__).lower()


def _backoff(attempt: int) -> None:
    time.sleep(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0))


def open_transport(
    target: SSHTarget, pinned_types: list[str], timeout: float, attempts: int
) -> paramiko.Transport:
    """TCP connect and SSH handshake, retried with jittered backoff; raises HostUnreachable / PinnedKeyRefused."""
    last = "not tried"
    for attempt in range(attempts):
        if attempt:
            _backoff(attempt - 1)
        try:
            sock = socket.create_connection((target.address, target.port), timeout=timeout)
        except OSError as e:
            last = _describe_os_error(e, timeout)
            continue
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        if pinned_types:
            # Ask for the pinned key type, as OpenSSH does for a known host; otherwise a server
            # that also has, say, an RSA key could show that one and look "changed".
            opts = transport.get_security_options()
            algs = algorithms_for(pinned_types, opts.key_types)
            if algs:
                opts.key_types = algs
        try:
            transport.start_client(timeout=timeout)
            return transport
        except IncompatiblePeer:
            transport.close()
            if pinned_types:
                raise PinnedKeyRefused(f"{target.name}: no host key of a pinned type") from None
            last = "SSH handshake failed: no common algorithms"
        except (paramiko.SSHException, OSError, EOFError) as e:
            transport.close()
            last = f"SSH handshake failed: {e}" if str(e) else "SSH handshake failed"
    raise HostUnreachable(last)


def run_command(transport: paramiko.Transport, command: str, timeout: float) -> tuple[int, str]:
    """Run one command over an authenticated transport; returns (exit status, stdout+stderr)."""
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.set_combine_stderr(True)
        chan.exec_command(command)
        out = chan.makefile("rb").read().decode("utf-8", "replace")
        if not chan.status_event.wait(timeout):
            raise TimeoutError
        return chan.recv_exit_status(), out
    finally:
        chan.close()


def _parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip("\"'")
    return out


def _os_supported(os_id: str, version: str, supported: list[str]) -> bool:
    for entry in supported:
        parts = entry.lower().split()
        if parts == [os_id] or parts == [os_id, version]:
            return True
    return False


def _check_after_login(result: HostCheck, transport: paramiko.Transport, config: Config) -> None:
    try:
        rc, out = run_command(transport, _PROBE, config.ssh.command_timeout)
    except TimeoutError:
        result.fail("sudo", f"checks did not finish within {config.ssh.command_timeout:g} s")
        return
    except (paramiko.SSHException, OSError, EOFError) as e:
        result.fail("sudo", f"cannot run commands over SSH: {e or e.__class__.__name__}")
        return
    parts = out.split("@@werne@@\n")
    if len(parts) != 4:
        result.fail("sudo", "unexpected answer from the host's shell")
        return
    os_release, python3, df, sudo = parts
    # sudo
    sudo_lines = sudo.strip().splitlines()
    sudo_rc = sudo_lines[-1].removeprefix("sudo_rc=") if sudo_lines else ""
    sudo_msg = " ".join(sudo_lines[:-1]).strip()
    if sudo_rc == "0":
        result.checks["sudo"] = "ok"
    elif "password is required" in sudo_msg:
        result.fail("sudo", "sudo needs a password")
    elif sudo_rc == "127":
        result.fail("sudo", "sudo is not installed")
    else:
        result.fail("sudo", f"sudo does not work: {sudo_msg or 'exit ' + sudo_rc}")
    # OS
    rel = _parse_os_release(os_release)
    os_id, version = rel.get("ID", "").lower(), rel.get("VERSION_ID", "")
    result.os = f"{os_id} {version}".strip() or None
    if not os_id:
        result.fail("os", "OS unknown: no /etc/os-release")
    elif _os_supported(os_id, version, config.ssh.supported_os):
        result.checks["os"] = "ok"
    else:
        result.fail("os", f"OS not supported: {rel.get('PRETTY_NAME') or result.os}")
    # python3
    if python3.strip():
        result.checks["python3"] = "ok"
    else:
        result.fail("python3", "python3 is missing")
    # free disk on /
    fields = df.split()
    try:
        result.free_disk_mb = int(fields[3]) // 1024
    except (IndexError, ValueError):
        result.fail("disk", "cannot read the free disk space")
        return
    if result.free_disk_mb >= config.ssh.min_free_disk_mb:
        result.checks["disk"] = "ok"
    else:
        result.fail(
            "disk",
            f"not enough free disk: {result.free_disk_mb} MB free on /, "
            f"need {config.ssh.min_free_disk_mb} MB",
        )


def check_host(
    target: SSHTarget,
    config: Config,
    pinned: PinnedHostKeys,
    pkey: paramiko.PKey | None,
    accept_new: bool = False,
    unknown_reason: str = HOST_KEY_UNKNOWN,
) -> tuple[HostCheck, paramiko.PKey | None]:
    """Check one laptop. With pkey=None only reachability and the host key are checked.

    Returns the result and, for a first contact accepted with accept_new, the key to pin.
    """
    result = HostCheck(host=target.name, address=target.address, port=target.port)
    pins = pinned.lookup(target.host_id)
    try:
        transport = open_transport(
            target, list(pins), config.ssh.connect_timeout, config.ssh.connect_attempts
        )
    except HostUnreachable as e:
        return result.fail("reachable", f"unreachable: {e}"), None
    except PinnedKeyRefused:
        result.checks["reachable"] = "ok"
        return result.fail("host_key", HOST_KEY_CHANGED), None
    new_key = None
    try:
        result.checks["reachable"] = "ok"
        server_key = transport.get_remote_server_key()
        result.host_key_fingerprint = fingerprint(server_key)
        if not pins:
            if not accept_new:
                return result.fail("host_key", unknown_reason), None
            new_key = server_key
            result.host_key_recorded = True
        elif not any(same_key(server_key, k) for k in pins.values()):
            return result.fail("host_key", HOST_KEY_CHANGED), None
        result.checks["host_key"] = "ok"
        if pkey is None:
            return result, new_key
        try:
            transport.auth_publickey(target.user, pkey)
        except paramiko.BadAuthenticationType:
            return result.fail(
                "login", f"key login refused for {target.user}: the host allows no key login"
            ), new_key
        except paramiko.AuthenticationException:
            return result.fail("login", f"key login failed for {target.user}: key not accepted"), new_key
        except (paramiko.SSHException, OSError, EOFError) as e:
            return result.fail(
                "login", f"key login failed for {target.user}: {e or e.__class__.__name__}"
            ), new_key
        result.checks["login"] = "ok"
        _check_after_login(result, transport, config)
        return result, new_key
    finally:
        transport.close()


def check_many(
    targets: list[SSHTarget],
    config: Config,
    pinned: PinnedHostKeys,
    pkey: paramiko.PKey | None,
    accept_new: bool = False,
    unknown_reason: str = HOST_KEY_UNKNOWN,
) -> list[tuple[HostCheck, paramiko.PKey | None]]:
    """check_host for every target in parallel; results in the targets' order."""
    if not targets:
        return []
    workers = min(len(targets), config.ssh.parallel)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preflight") as pool:
        futures = [
            pool.submit(check_host, t, config, pinned, pkey, accept_new, unknown_reason) for t in targets
        ]
        return [f.result() for f in futures]


def run_preflight(
    config: Config,
    inventory: Inventory,
    names: list[str] | tuple[str, ...] = (),
    all_hosts: bool = False,
    accept_new: bool = False,
    db: Database | None = None,
    actor: str | None = None,
) -> PreflightReport:
    """Check the selected laptops; with accept_new, pin first-contact host keys (never changed ones).

    When `db` is given, each newly pinned key is written to the audit trail.
    """
    targets = select_targets(config, inventory, names, all_hosts, gateways=True)
    pkey = load_private_key(config.ssh_key_file)
    pinned = PinnedHostKeys(known_hosts_path(config))
    results = check_many(targets, config, pinned, pkey, accept_new)
    new = {t.host_id: key for t, (_, key) in zip(targets, results, strict=True) if key is not None}
    pinned.add(new)
    if db is not None and new:
        for t, (check, key) in zip(targets, results, strict=True):
            if key is not None:
                record(
                    db,
                    "laptop.hostkey.pin",
                    t.name,
                    {"address": t.host_id, "fingerprint": check.host_key_fingerprint},
                    actor=actor,
                )
    return PreflightReport(hosts=[r for r, _ in results], known_hosts=str(pinned.path))
