"""The MDM part of the lab: the whole go-live chain on loopback, and N simulated iPads enrolling
through it the real way.

`up(state_dir, n_ipads, config)` makes (once) the lab's CA (STATE/mdm/ca.pem, ca.key: TLS server
and profile-signing certificates), a stand-in for Apple's device CA (it signs the simulated iPads'
MachineInfo identities) and for Apple's push CA (it signs the lab's push certificate), an API key
and a webhook HMAC key (secret files, mode 0600), then starts, with pid files and logs under
STATE/mdm/ (STATE/scep/ for scepserver):
    scepserver  lab.scep: the real micromdm/scep server with werne's SCEP CA (`werne mdm scep init`)
    webhook     `werne mdm serve-webhook` on 127.0.0.1:<free port>
    kmfddm      lab.kmfddm: the real KMFDDM (declarations, sets, status), enqueueing DeclarativeManagement
                through NanoMDM's API; its URL and key file go into the endpoints file ([ddm])
    nanomdm     -ca <the SCEP CA> -storage inmem|pgsql -webhook-url ... -dm <KMFDDM>; no -cert-header:
                every device message is verified by its Mdm-Signature (API key, HMAC key and DSN via
                the environment, so they never show in `ps`)
    web         `werne web serve` (the ADE enrolment endpoint and the coordinators' page)
    nginx       lab.proxy: the production nginx site on 127.0.0.1:<free port> with a lab-CA
                certificate; /mdm, /checkin -> NanoMDM, /scep -> scepserver, the DEP profile's
                path and / -> web; the webhook and NanoMDM's API stay on loopback
    simulator   `python -m lab.ipad_sim --state-dir STATE`: each iPad posts its signed MachineInfo,
                verifies the signed profile, gets its identity from scepserver and checks in
The lab's push certificate (topic com.apple.mgmt.External.werne-lab) is installed the way a real
one is (`werne mdm push-cert install`'s code). STATE/mdm/lab.json records the URLs; the NanoMDM URL,
API key file, webhook settings, the public URLs and the signing identity also go into the state
dir's endpoints file (core.config.write_endpoints), so `werne ...` on this state dir finds the lab
unless the config file names another one. `down(state_dir)` stops whatever runs.

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
from typing import Any, NamedTuple

import requests

from core.config import DEFAULT_INVENTORY, REPO_ROOT, Config, write_endpoints
from core.errors import WerneError

NANOMDM_BIN = REPO_ROOT / ".tools" / "bin" / "nanomdm"
# The MDM core of the lab (what `status().running` reports) and the go-live services around it.
PROCESSES = ("simulator", "webhook", "nanomdm")
SERVICES = ("web", "nginx")
LAB_TOPIC = "com.apple.mgmt.External.werne-lab"


class LabMDMError(WerneError):
    """The MDM part of the lab could not start or stop."""


@dataclass
class LabMDMStatus:
    """What runs in the MDM part of a lab."""

    state_dir: Path
    nanomdm_url: str = ""
    webhook_url: str = ""
    ipads: int = 0
    server_url: str = ""
    running: dict[str, bool] = field(default_factory=dict)
    services: dict[str, bool] = field(default_factory=dict)
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


class LabIdentity(NamedTuple):
    """A simulated iPad's identity: issued by the SCEP CA, with the device's own key."""

    serial: str
    udid: str
    cert_pem: str
    key_pem: str


def issue_identities(ca_cert: Path, ca_key: Path, serials: list[str], days: int = 365) -> list[LabIdentity]:
    """Identities signed by the SCEP CA (ca_cert/ca_key: a depot's ca.pem and ca.key), one key each.

    The fast path for bulk test fixtures only: the same CA scepserver signs with, the same kind of
    certificate (clientAuth), used the same way (Mdm-Signature); but no SCEP round trip, and EC
    keys instead of the RSA keys a real iPad makes, so hundreds take a second. The lab itself
    enrols through scepserver.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    out = []
    for serial in serials:
        udid = udid_for(serial)
        device_key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"werne-lab {serial}")]))
            .issuer_name(ca.subject)
            .public_key(device_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        key_pem = device_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()
        out.append(LabIdentity(serial, udid, cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem))
    return out


def make_scep_ca(directory: Path) -> tuple[Path, Path]:
    """A SCEP CA in depot layout (ipad.scep_ca, as `werne mdm scep init` makes it) for test fixtures."""
    from ipad.scep_ca import init_scep_ca

    cfg = Config()
    cfg.scep.depot_dir = directory / "depot"
    cfg.scep.challenge_file = directory / "challenge"
    init_scep_ca(cfg)
    return directory / "depot" / "ca.pem", directory / "depot" / "ca.key"


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
    _end_process_group(pid, timeout)
    pid_file.unlink(missing_ok=True)


def _end_process_group(pgid: int, timeout: float) -> None:
    """Wait until no process of the session `start_process` made is left (a server's forked
    workers outlive their parent by their graceful shutdown), killing what is still there then."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
    storage_dir: Path | None = None,
    storage: str | None = None,
    binary: Path = NANOMDM_BIN,
    dm_url: str | None = None,
) -> list[str]:
    """NanoMDM's command line: no -cert-header, so it verifies every message's Mdm-Signature
    against `ca`. The API and HMAC keys go in NANOMDM_API / NANOMDM_WEBHOOK_HMAC_KEY, a pgsql DSN in
    NANOMDM_STORAGE_DSN (NanoMDM reads every flag from NANOMDM_<FLAG>)."""
    argv = [str(binary), "-listen", listen, "-ca", str(ca)]
    if storage == "pgsql":
        argv += ["-storage", "pgsql"]
    elif storage_dir is None:
        argv += ["-storage", "inmem", "-storage-dsn", ""]
    else:
        argv += ["-storage", "filekv", "-storage-dsn", str(storage_dir)]
    if webhook_url:
        argv += ["-webhook-url", webhook_url]
    if dm_url:
        # Declarative management: NanoMDM forwards each DeclarativeManagement check-in to KMFDDM
        # (URL prefix with its trailing slash). No -dm-send/-dm-recv-hmac-key: KMFDDM v0.8.3 neither
        # checks nor signs an HMAC (NanoMDM would refuse every answer with -dm-recv-hmac-key), so
        # KMFDDM's device endpoints must stay on loopback, never behind nginx.
        argv += ["-dm", dm_url if dm_url.endswith("/") else dm_url + "/"]
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


def _inventory_root(config: Config | None, state_dir: Path) -> Path:
    root = config.inventory_dir if config is not None else state_dir / "lab" / "inventory"
    return root if (root / "ipads.csv").is_file() else DEFAULT_INVENTORY


def _lab_inventory(source: Path, extra: list[str], d: Path) -> Path:
    """The inventory the lab's enrolment endpoint answers for: the site's, plus the generated
    serials (the endpoint refuses any serial not in the inventory, as in production)."""
    if not extra:
        return source
    import shutil

    dst = d / "inventory"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(source, dst)
    lines = (dst / "ipads.csv").read_text(encoding="utf-8").splitlines()
    school = lines[1].split(";")[2] if len(lines) > 1 else "gs-demo"
    rows = [f"{s};iPad (10th generation);{school};pupil;lab-{i:03d}" for i, s in enumerate(extra)]
    (dst / "ipads.csv").write_text("\n".join([*lines, *rows]) + "\n", encoding="utf-8")
    return dst


def issue_leaf(ca_cert: Path, ca_key: Path, common_name: str, out_cert: Path, out_key: Path, *,
               days: int = 3650, extensions: tuple[tuple[Any, bool], ...] = (), keep: bool = True) -> None:
    """A certificate (and its EC key) from a lab CA; with `keep`, an existing pair is left as it is.
    `extensions` are (x509 extension, critical) pairs, e.g. a TLS server's SubjectAlternativeName."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if keep and out_cert.is_file() and out_key.is_file():
        return
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    _write_private(out_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    out_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def lab_push_certificate(csr_pem: bytes, ca_dir: Path, topic: str = LAB_TOPIC, days: int = 365) -> bytes:
    """The lab's push certificate: the CSR signed by a stand-in for Apple's push CA, topic as UID."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    ca_cert, ca_key = make_ca(ca_dir)
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    csr = x509.load_pem_x509_csr(csr_pem)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.USER_ID, topic),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic}")]))
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def install_lab_push_cert(config: Config, days: int = 365) -> None:
    """Install the lab's push certificate in the lab's NanoMDM, as `werne mdm push-cert install` does."""
    from core.db import Database
    from ipad.pushcert import install_push_cert, make_csr
    from mdm_client.factory import nanomdm_client

    csr = make_csr(config).csr_pem
    cert = lab_push_certificate(csr, config.state_dir / "mdm" / "apple-push-ca", days=days)
    db = Database(config.database_url)
    try:
        install_push_cert(config, db, nanomdm_client(config), cert, source="the lab's push certificate",
                          force=True, actor="lab")
    finally:
        db.dispose()


# --- the lab API ---------------------------------------------------------------------------------


def _lab_config(config: Config | None, state_dir: Path) -> Config:
    cfg = config.model_copy(deep=True) if config is not None else Config()
    if config is not None:
        cfg._explicit = {k: set(v) for k, v in config._explicit.items()}
    cfg.site.state_dir = state_dir
    return cfg


def up(
    state_dir: Path,
    n_ipads: int,
    config: Config | None = None,
    poll_interval: float = 2.0,
    storage: str = "inmem",
    storage_dsn: str = "",
    scep_parallel: int = 4,
    faults: bool = True,
) -> LabMDMStatus:
    """Start the whole chain and `n_ipads` simulated iPads that enrol through it; idempotent.

    storage="pgsql" runs NanoMDM on PostgreSQL (storage_dsn, whose schema `werne mdm db-init`
    loaded); the default is in-memory storage. faults=False: no faulty iPads (see lab_faults).
    """
    from core.config import apply_endpoints
    from core.secrets import Secret
    from enrolment.ade import enrol_path
    from lab import kmfddm as lab_kmfddm
    from lab import proxy
    from lab import scep as lab_scep
    from lab.ipad_sim import ADEEnrolment, DeviceFaults, SimDevice, dump_devices

    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not NANOMDM_BIN.is_file():
        raise LabMDMError(f"{NANOMDM_BIN} is missing; run scripts/setup.sh")
    if any(running(p, d) for p in (*PROCESSES, *SERVICES)):
        down(state_dir)
    tls = proxy.make_tls(d)  # the lab CA (ca.pem, ca.key) and the proxy's server certificate
    device_ca = make_ca(d / "apple-device-ca")
    issue_leaf(tls.ca_cert, tls.ca_key, "werne lab profile signing", d / "profile-signer.pem",
                d / "profile-signer.key")
    api_key = _secret_file(d / "api_key")
    hmac_key = _secret_file(d / "webhook_hmac_key")
    ddm_key = _secret_file(d / "ddm_api_key")
    _secret_file(d / "web_secret")
    source_inventory = _inventory_root(config, state_dir)
    serials = _inventory_serials(config, state_dir)[:n_ipads]
    extra = generated_serials(n_ipads - len(serials))
    serials += extra
    lab_inventory = _lab_inventory(source_inventory, extra, d)
    plan = lab_faults(n_ipads) if faults else {}
    devices = [
        SimDevice(serial=s, udid=udid_for(s), faults=DeviceFaults(**plan.get(i, {})))
        for i, s in enumerate(serials)
    ]
    dump_devices(d / "devices.json", devices)
    os.chmod(d / "devices.json", 0o600)
    nano_port, hook_port, web_port, proxy_port = free_port(), free_port(), free_port(), free_port()
    public = f"https://127.0.0.1:{proxy_port}"
    cfg = _lab_config(config, state_dir)
    enrol_url = public + enrol_path(cfg)
    lab: dict[str, Any] = {
        "nanomdm_url": f"http://127.0.0.1:{nano_port}",
        "webhook_url": f"http://127.0.0.1:{hook_port}/webhook",
        "webhook_listen": f"127.0.0.1:{hook_port}",
        "web_url": f"http://127.0.0.1:{web_port}",
        "public_url": public,
        "server_url": public + "/mdm",
        "enrol_url": enrol_url,
        "scep_url": public + "/scep",
        "tls_ca_file": str(tls.ca_cert),
        "storage": storage,
        "ipads": n_ipads,
        "api_key_file": str(d / "api_key"),
        "webhook_hmac_key_file": str(d / "webhook_hmac_key"),
        "poll_interval": poll_interval,
    }
    write_endpoints(state_dir, "mdm", {
        "url": lab["nanomdm_url"],
        "api_key_file": d / "api_key",
        "webhook_listen": lab["webhook_listen"],
        "webhook_hmac_key_file": d / "webhook_hmac_key",
        "server_url": lab["server_url"],
        "signing_cert_file": d / "profile-signer.pem",
        "signing_key_file": d / "profile-signer.key",
        "tls_ca_file": tls.ca_cert,
    })
    write_endpoints(state_dir, "scep", {"url": lab["scep_url"]})
    write_endpoints(state_dir, "dep", {"enrol_url": enrol_url, "machineinfo_ca_file": device_ca[0]})
    write_endpoints(state_dir, "web", {"secret_key_file": d / "web_secret", "listen": f"127.0.0.1:{web_port}"})
    apply_endpoints(cfg)
    cli = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())"]
    cfg_args = ["--state-dir", str(state_dir)]
    if config is not None and config.source not in ("built-in defaults",) and Path(config.source).is_file():
        cfg_args = ["--config", str(Path(config.source).resolve()), *cfg_args]
    env = {"PYTHONPATH": str(REPO_ROOT)}
    try:
        scep = lab_scep.up(state_dir, cfg)
        pid = start_process(
            "webhook",
            [*cli, *cfg_args, "mdm", "serve-webhook", "--listen", lab["webhook_listen"],
             "--hmac-key-file", lab["webhook_hmac_key_file"]],
            d,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{hook_port}/healthz", 20, pid, "the webhook receiver", d / "logs" / "webhook.log")
        # KMFDDM first (it calls NanoMDM only when a declaration changes): NanoMDM needs its URL.
        ddm = lab_kmfddm.up(state_dir, Secret(ddm_key, source=str(d / "ddm_api_key")),
                            enqueue_url=lab["nanomdm_url"] + "/v1/enqueue/",
                            enqueue_key=Secret(api_key, source=str(d / "api_key")))
        lab["kmfddm_url"] = ddm.url
        write_endpoints(state_dir, "ddm", {"url": ddm.url, "api_key_file": d / "ddm_api_key"})
        apply_endpoints(cfg)
        _put_lab_group_sets(cfg, lab_inventory)
        # In-memory storage by default: NanoMDM v0.9.0's filekv queue loses commands when a device
        # reports while another command is enqueued for it (seen in the lab: a broken queue list).
        nano_env = {"NANOMDM_API": api_key, "NANOMDM_WEBHOOK_HMAC_KEY": hmac_key}
        if storage == "pgsql":
            nano_env["NANOMDM_STORAGE_DSN"] = storage_dsn
        pid = start_process(
            "nanomdm",
            nanomdm_argv(f"127.0.0.1:{nano_port}", scep.depot / "ca.pem", lab["webhook_url"], None,
                         storage="pgsql" if storage == "pgsql" else None, dm_url=ddm.url + "/"),
            d,
            env=nano_env,
        )
        wait_http(lab["nanomdm_url"] + "/version", 10, pid, "NanoMDM", d / "logs" / "nanomdm.log")
        install_lab_push_cert(cfg)
        # The web page answers for the lab's inventory (the site's plus generated serials).
        web_code = ("import sys; from pathlib import Path; from core.config import load_config; "
                    "from enrolment.web.app import serve; "
                    "cfg = load_config(sys.argv[1] or None, state_dir=sys.argv[2]); "
                    "cfg.site.inventory = Path(sys.argv[3]); serve(cfg, '127.0.0.1', int(sys.argv[4]))")
        cfg_file = cfg_args[1] if cfg_args[0] == "--config" else ""
        pid = start_process("web", [sys.executable, "-c", web_code, cfg_file, str(state_dir), str(lab_inventory),
                                    str(web_port)], d, env=env)
        wait_http(lab["web_url"] + "/healthz", 30, pid, "werne web serve", d / "logs" / "web.log")
        proxy.up(d, f"127.0.0.1:{nano_port}", scep.url.split("/")[2], f"127.0.0.1:{web_port}",
                 enrol_path(cfg), proxy_port, tls)
        lab["ade"] = ADEEnrolment(
            enrol_url=enrol_url,
            tls_ca_file=tls.ca_cert,
            profile_ca_file=tls.ca_cert,
            device_ca_cert=device_ca[0],
            device_ca_key=device_ca[1],
            workdir=d / "ipads",
            scepclient=REPO_ROOT / ".tools" / "bin" / "scepclient",
            parallel=scep_parallel,
        ).to_dict()
        (d / "lab.json").write_text(json.dumps(lab, indent=1), encoding="utf-8")
        start_process(
            "simulator",
            [sys.executable, "-m", "lab.ipad_sim", "--state-dir", str(state_dir)],
            d,
            env=env,
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


def _put_lab_group_sets(cfg: Config, inventory_dir: Path) -> None:
    """The lab inventory's group sets in KMFDDM (as `werne ipad declarations apply` writes them)."""
    from core.inventory import load_inventory
    from ipad.group_sets import put_group_sets
    from mdm_client.factory import kmfddm_client

    ipads = load_inventory(inventory_dir).ipads.values()
    put_group_sets(kmfddm_client(cfg), sorted({(i.school, i.group) for i in ipads}))


def down(state_dir: Path) -> None:
    """Stop the simulator, nginx, the web page, NanoMDM, KMFDDM, the webhook receiver and scepserver."""
    from lab import kmfddm as lab_kmfddm
    from lab import proxy
    from lab import scep as lab_scep

    d = Path(state_dir).resolve() / "mdm"
    if d.is_dir():
        stop_process("simulator", d)
        proxy.down(d)
        for name in ("web", "nanomdm", "webhook"):
            stop_process(name, d)
    lab_kmfddm.down(state_dir)
    lab_scep.down(state_dir)


def status(state_dir: Path) -> LabMDMStatus:
    """Which of the lab's processes run, and where."""
    from lab import scep as lab_scep

    d = Path(state_dir).resolve() / "mdm"
    st = LabMDMStatus(state_dir=Path(state_dir), logs=d / "logs")
    if (d / "lab.json").is_file():
        lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
        st.nanomdm_url, st.webhook_url, st.ipads = lab["nanomdm_url"], lab["webhook_url"], lab["ipads"]
        st.server_url = lab.get("server_url", "")
    for name in PROCESSES:
        pid = running(name, d) if d.is_dir() else None
        st.pids[name], st.running[name] = pid, pid is not None
    for name in SERVICES:
        st.services[name] = d.is_dir() and running(name, d) is not None
    from lab import kmfddm as lab_kmfddm

    ddm = lab_kmfddm.status(state_dir)
    st.services["kmfddm"] = ddm is not None and ddm.pid is not None
    scep = lab_scep.status(state_dir)
    st.services["scepserver"] = scep is not None and scep.pid is not None
    return st
