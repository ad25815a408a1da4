"""The MDM part of the lab: a real NanoMDM, the webhook receiver and N simulated iPads, on loopback.

`up(state_dir, n_ipads, config)` makes (once) a test CA with `cryptography`, one identity
certificate per simulated iPad, an API key and a webhook HMAC key (secret files, mode 0600, in
STATE/mdm/), then starts three processes with pid files and logs under STATE/mdm/:
    nanomdm     -listen 127.0.0.1:<free port> -storage inmem -ca ca.pem -cert-header ...
                -webhook-url http://127.0.0.1:<port>/webhook  (API key and HMAC key via environment,
                so they never show in `ps`)
    webhook     `werne mdm serve-webhook` on 127.0.0.1:<free port>
    simulator   `python -m lab.ipad_sim --state-dir STATE`
STATE/mdm/lab.json records the URLs (for the simulator and `status`); the NanoMDM URL, API key
file and webhook settings also go into the state dir's endpoints file (core.config.write_endpoints),
so `werne ipad ...` on this state dir finds the lab unless the config file names another NanoMDM.
`down(state_dir)` stops whatever runs (and is a no-op when nothing does).

Lab faults (with 8 or more iPads, on the last six, so the demo shows every problem state):
offline, a NotNow streak of 3, no passcode, an old iPadOS, a refused web-filter profile, and an
erase that never answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from core.config import DEFAULT_INVENTORY, REPO_ROOT, Config, write_endpoints
from core.errors import WerneError

NANOMDM_BIN = REPO_ROOT / ".tools" / "bin" / "nanomdm"
CERT_HEADER = "X-Werne-Client-Cert"
PROCESSES = ("simulator", "webhook", "nanomdm")


class LabMDMError(WerneError):
    """The MDM part of the lab could not start or stop."""


@dataclass
class LabMDMStatus:
    """What runs in the MDM part of a lab."""

    state_dir: Path
    nanomdm_url: str = ""
    webhook_url: str = ""
    ipads: int = 0
    running: dict[str, bool] = field(default_factory=dict)
    pids: dict[str, int | None] = field(default_factory=dict)
    logs: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state_dir"], d["logs"] = str(self.state_dir), str(self.logs) if self.logs else None
        return d


# --- CA and identities ------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_ca(directory: Path) -> tuple[Path, Path]:
    """A test CA (EC P-256, 10 years) as ca.pem and ca.key (0600); kept if it exists."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "werne lab device CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "werne lab"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_identities(ca_cert: Path, ca_key: Path, serials: list[str], days: int = 365) -> list[tuple[str, str, str]]:
    """(serial, udid, certificate PEM) per serial: device identities signed by the lab CA.

    One key pair serves every device: with -cert-header NanoMDM checks the chain, not a signature.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    device_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    out = []
    for serial in serials:
        udid = udid_for(serial)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"werne-lab {serial}")]))
            .issuer_name(ca.subject)
            .public_key(device_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )  # type: ignore[arg-type]
        out.append((serial, udid, cert.public_bytes(serialization.Encoding.PEM).decode()))
    return out


def udid_for(serial: str) -> str:
    """A stable, iPad-shaped UDID for a simulated serial (8 hex, '-', 16 hex)."""
    h = hashlib.sha256(serial.encode()).hexdigest().upper()
    return f"00008120-{h[:16]}"


def generated_serials(n: int, start: int = 0) -> list[str]:
    """Serials for simulated iPads not in the inventory (valid Apple format, never real ones)."""
    return [f"SIM{hashlib.sha256(str(i).encode()).hexdigest()[:7].upper()}" for i in range(start, start + n)]


def lab_faults(n: int) -> dict[int, dict[str, Any]]:
    """The lab's fault plan: device index -> DeviceFaults fields (see the module docstring)."""
    if n < 8:
        return {}
    return {
        n - 1: {"offline": True},
        n - 2: {"not_now_streak": 3},
        n - 3: {"no_passcode": True},
        n - 4: {"old_ipados": True},
        n - 5: {"refuse_profile": "webfilter"},
        n - 6: {"erase_never_answers": True},
    }


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_process(name: str, argv: list[str], directory: Path, env: dict[str, str] | None = None) -> int:
    """Start a background process with its log and pid file in `directory`."""
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=str(directory),
        )
    (directory / f"{name}.pid").write_text(f"{proc.pid}\n{argv[0]}\n", encoding="utf-8")
    _CHILDREN[proc.pid] = proc  # kept so that stop_process can reap it (no zombie, no ResourceWarning)
    return proc.pid


def stop_process(name: str, directory: Path, timeout: float = 10.0) -> None:
    """Stop a process started by `start_process`; nothing happens if it is not running."""
    pid_file = directory / f"{name}.pid"
    if not pid_file.is_file():
        return
    try:
        pid_text, marker = (pid_file.read_text(encoding="utf-8").splitlines() + ["", ""])[:2]
        pid = int(pid_text)
    except ValueError:
        pid_file.unlink(missing_ok=True)
        return
    # Only signal the process we started (the pid may have been reused after a reboot).
    if _pid_alive(pid, marker):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + timeout
        while time.monotonic() < end and _pid_alive(pid, marker):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if _pid_alive(pid, marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
    pid_file.unlink(missing_ok=True)


def running(name: str, directory: Path) -> int | None:
    pid_file = directory / f"{name}.pid"
    try:
        pid_text, marker = (pid_file.read_text(encoding="utf-8").splitlines() + ["", ""])[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid, marker) else None


def nanomdm_argv(
    listen: str,
    ca: Path,
    webhook_url: str | None,
    storage_dir: Path | None,
    cert_header: str = CERT_HEADER,
    binary: Path = NANOMDM_BIN,
) -> list[str]:
    """NanoMDM's command line; the API and HMAC keys go in NANOMDM_API / NANOMDM_WEBHOOK_HMAC_KEY."""
    argv = [str(binary), "-listen", listen, "-ca", str(ca), "-cert-header", cert_header]
    if storage_dir is None:
        argv += ["-storage", "inmem", "-storage-dsn", ""]
    else:
        argv += ["-storage", "filekv", "-storage-dsn", str(storage_dir)]
    if webhook_url:
        argv += ["-webhook-url", webhook_url]
    return argv


def wait_http(
    url: str, timeout: float, pid: int | None = None, what: str = "service", log_file: Path | None = None
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        if pid is not None and not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    last = ""
    if log_file is not None and log_file.is_file():
        lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        last = f": {lines[-1][:200]}" if lines else ""
    raise LabMDMError(f"{what} did not start ({url}){last}")


def _secret_file(path: Path) -> str:
    if not path.is_file():
        _write_private(path, secrets.token_urlsafe(32).encode() + b"\n")
    os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8").strip()


def _inventory_serials(config: Config | None, state_dir: Path) -> list[str]:
    from core.inventory import load_inventory

    root = config.inventory_dir if config is not None else state_dir / "lab" / "inventory"
    if not (root / "ipads.csv").is_file():
        root = DEFAULT_INVENTORY
    try:
        return list(load_inventory(root).ipads)
    except WerneError:
        return []


# --- the lab API ---------------------------------------------------------------------------------


def up(state_dir: Path, n_ipads: int, config: Config | None = None, poll_interval: float = 2.0) -> LabMDMStatus:
    """Start NanoMDM, the webhook receiver and `n_ipads` simulated iPads; idempotent."""
    from lab.ipad_sim import DeviceFaults, SimDevice, dump_devices

    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not NANOMDM_BIN.is_file():
        raise LabMDMError(f"{NANOMDM_BIN} is missing; run scripts/setup.sh")
    if any(running(p, d) for p in PROCESSES):
        down(state_dir)
    ca_cert, ca_key = make_ca(d)
    api_key = _secret_file(d / "api_key")
    hmac_key = _secret_file(d / "webhook_hmac_key")
    serials = _inventory_serials(config, state_dir)[:n_ipads]
    serials += generated_serials(n_ipads - len(serials))
    faults = lab_faults(n_ipads)
    devices = [
        SimDevice(serial=s, udid=u, cert_pem=pem, faults=DeviceFaults(**faults.get(i, {})))
        for i, (s, u, pem) in enumerate(issue_identities(ca_cert, ca_key, serials))
    ]
    dump_devices(d / "devices.json", devices)
    os.chmod(d / "devices.json", 0o600)
    nano_port, hook_port = free_port(), free_port()
    lab = {
        "nanomdm_url": f"http://127.0.0.1:{nano_port}",
        "webhook_url": f"http://127.0.0.1:{hook_port}/webhook",
        "webhook_listen": f"127.0.0.1:{hook_port}",
        "cert_header": CERT_HEADER,
        "ipads": n_ipads,
        "api_key_file": str(d / "api_key"),
        "webhook_hmac_key_file": str(d / "webhook_hmac_key"),
        "poll_interval": poll_interval,
    }
    (d / "lab.json").write_text(json.dumps(lab, indent=1), encoding="utf-8")
    write_endpoints(
        state_dir,
        "mdm",
        {
            "url": lab["nanomdm_url"],
            "api_key_file": d / "api_key",
            "webhook_listen": lab["webhook_listen"],
            "webhook_hmac_key_file": d / "webhook_hmac_key",
        },
    )
    cli = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())"]
    cfg_args = ["--state-dir", str(state_dir)]
    if config is not None and config.source not in ("built-in defaults",) and Path(config.source).is_file():
        cfg_args = ["--config", str(Path(config.source).resolve()), *cfg_args]
    try:
        pid = start_process(
            "webhook",
            [
                *cli,
                *cfg_args,
                "mdm",
                "serve-webhook",
                "--listen",
                lab["webhook_listen"],
                "--hmac-key-file",
                lab["webhook_hmac_key_file"],
            ],
            d,
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        wait_http(
            f"http://127.0.0.1:{hook_port}/healthz",
            20,
            pid,
            "the webhook receiver",
            d / "logs" / "webhook.log",
        )
        # In-memory storage: NanoMDM v0.9.0's filekv queue loses commands when a device reports
        # while another command is enqueued for it (seen in the lab: a broken queue linked list).
        pid = start_process(
            "nanomdm",
            nanomdm_argv(f"127.0.0.1:{nano_port}", ca_cert, lab["webhook_url"], None),
            d,
            env={"NANOMDM_API": api_key, "NANOMDM_WEBHOOK_HMAC_KEY": hmac_key},
        )
        wait_http(lab["nanomdm_url"] + "/version", 10, pid, "NanoMDM", d / "logs" / "nanomdm.log")
        start_process(
            "simulator",
            [sys.executable, "-m", "lab.ipad_sim", "--state-dir", str(state_dir)],
            d,
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        # The simulator has no port to poll; wait until its process shows as running (on a quiet
        # machine /proc can lag the fork for a moment) or has died, so status() is true on return.
        end = time.monotonic() + 15
        while running("simulator", d) is None:
            if time.monotonic() > end:
                raise LabMDMError(f"the iPad simulator did not start; see {d / 'logs' / 'simulator.log'}")
            time.sleep(0.1)
    except BaseException:
        down(state_dir)
        raise
    return status(state_dir)


def down(state_dir: Path) -> None:
    """Stop the simulator, NanoMDM and the webhook receiver of this state dir, if they run."""
    d = Path(state_dir).resolve() / "mdm"
    if not d.is_dir():
        return
    for name in PROCESSES:
        stop_process(name, d)


def status(state_dir: Path) -> LabMDMStatus:
    """Which of the three processes run, and where."""
    d = Path(state_dir).resolve() / "mdm"
    st = LabMDMStatus(state_dir=Path(state_dir), logs=d / "logs")
    if (d / "lab.json").is_file():
        lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
        st.nanomdm_url, st.webhook_url, st.ipads = lab["nanomdm_url"], lab["webhook_url"], lab["ipads"]
    for name in PROCESSES:
        pid = running(name, d) if d.is_dir() else None
        st.pids[name], st.running[name] = pid, pid is not None
    return st
