"""The MDM part of the lab: the whole go-live chain on loopback, and N simulated iPads enrolling
through it the real way.

`up(state_dir, n_ipads, config)` makes (once) the lab's CA (STATE/mdm/ca.pem, ca.key: TLS server
and profile-signing certificates), a stand-in for Apple's device CA (it signs the simulated iPads'
MachineInfo identities) and for Apple's push CA (it signs the lab's push certificate), an API key
and a webhook HMAC key (secret files, mode 0600), then starts, each from one service descriptor
(lab.processes.Service) in dependency order, with pid files and logs under STATE/mdm/
(STATE/scep/ for scepserver, STATE/kmfddm/ for KMFDDM):
    scepserver  lab.scep: the real micromdm/scep server with werne's SCEP CA (`werne mdm scep init`)
    webhook     `werne mdm serve-webhook` on 127.0.0.1:<free port>
    kmfddm      lab.kmfddm: the real KMFDDM (declarations, sets, status), enqueueing DeclarativeManagement
                through NanoMDM's API; its URL and key file go into the endpoints file ([ddm])
    nanomdm     -ca <the SCEP trust bundle> -storage inmem|pgsql -webhook-url ... -dm <KMFDDM>; no -cert-header:
                every device message is verified by its Mdm-Signature (API key, HMAC key and DSN via
                the environment, so they never show in `ps`)
    web         `werne web serve` (the ADE enrolment endpoint and the coordinators' page)
    nginx       lab.proxy: the production nginx site on 127.0.0.1:<free port> with a lab-CA
                certificate; /mdm, /checkin -> NanoMDM, /scep -> scepserver, the DEP profile's
                path and / -> web; the webhook and NanoMDM's API stay on loopback
    simulator   `python -m lab.ipad_sim --state-dir STATE`: each iPad posts its signed MachineInfo,
                verifies the signed profile, gets its identity from scepserver and checks in
With replicas=N (PostgreSQL only) N NanoMDM processes run on the one database, each on a port of
its own, and nginx spreads the devices over them and fronts their API at the NanoMDM URL, as
`werne server install` lays them out (docs/scale.md); `restart_replica` starts a killed one again.
The lab's push certificate (topic com.apple.mgmt.External.werne-lab) is installed the way a real
one is (`werne mdm push-cert install`'s code). STATE/mdm/lab.json records the URLs; the NanoMDM URL,
API key file, webhook settings, the public URLs and the signing identity also go into the state
dir's endpoints file (core.config.write_endpoints), so `werne ...` on this state dir finds the lab
unless the config file names another one. `down(state_dir)` stops whatever runs;
`restart_identity_servers` restarts scepserver and NanoMDM (after a SCEP CA rotation);
`stop_werne` and `start_werne` stop and start werne's own processes around `werne db upgrade`.

Lab faults (with 8 or more iPads, on the last six, so the demo shows every problem state):
offline, a NotNow streak of 3, no passcode, an old iPadOS, a refused web-filter profile, and an
erase that never answers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import DEFAULT_INVENTORY, MAX_NANOMDM_REPLICAS, REPO_ROOT, Config, apply_endpoints, write_endpoints
from core.db import Database
from core.errors import WerneError
from core.inventory import load_inventory
from core.secrets import Secret
from enrolment.ade import enrol_path
from ipad.ddm.group_sets import put_group_sets
from ipad.golive.push_cert import install_push_cert, make_csr
from ipad.golive.scep_ca import depot_dir, trust_bundle_file
from lab import kmfddm as lab_kmfddm
from lab import processes, proxy
from lab import scep as lab_scep
from lab.certs import (
    LabTLS,
    generated_serials,
    issue_identities,
    issue_leaf,
    lab_push_certificate,
    make_ca,
    make_tls,
    udid_for,
    write_private,
)
from lab.errors import LabServiceError
from lab.ipad_sim import ADEEnrolment, DeviceFaults, SimDevice, dump_devices, load_devices
from lab.processes import HTTPReady, Service
from mdm_client.factory import kmfddm_client, nanomdm_client

NANOMDM_BIN = REPO_ROOT / ".tools" / "bin" / "nanomdm"
# The MDM core of the lab (what `status().running` reports) and the go-live services around it.
PROCESSES = ("simulator", "webhook", "nanomdm")
SERVICES = ("web", "nginx")
# werne's own processes in the lab, in stop order: what an upgrade stops and starts (stop_werne).
WERNE_SERVICES = ("web", "webhook")
# Requests nginx passes to one lab replica at once: the test cluster allows 40 PostgreSQL connections.
REPLICA_MAX_CONNS = 12


# NanoMDM replica i's lab service (replica 1 is "nanomdm", as with one NanoMDM).
def replica_name(i: int) -> str:
    return "nanomdm" if i == 1 else f"nanomdm-replica{i}"


# The order `down` stops them in (the reverse of the start-up's dependency order).
STOP_ORDER = ("simulator", "nginx", "web", *(replica_name(i) for i in range(MAX_NANOMDM_REPLICAS, 0, -1)), "webhook")


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
        # As in production (deploy/templates/nanomdm.service.j2): answered commands are deleted.
        argv += ["-storage", "pgsql", "-storage-options", "delete=1"]
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


def _secret_file(path: Path) -> str:
    if not path.is_file():
        write_private(path, secrets.token_urlsafe(32).encode() + b"\n")
    os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8").strip()


def _inventory_root(config: Config | None, state_dir: Path) -> Path:
    root = config.inventory_dir if config is not None else state_dir / "lab" / "inventory"
    return root if (root / "ipads.csv").is_file() else DEFAULT_INVENTORY


def _inventory_serials(config: Config | None, state_dir: Path) -> list[str]:
    try:
        return list(load_inventory(_inventory_root(config, state_dir)).ipads)
    except WerneError:
        return []


def _inventory_appletvs(config: Config | None, state_dir: Path) -> list[str]:
    try:
        return sorted(load_inventory(_inventory_root(config, state_dir)).appletvs)
    except WerneError:
        return []


def _lab_inventory(source: Path, extra: list[str], d: Path) -> Path:
    """The inventory the lab's enrolment endpoint answers for: the site's, plus the generated
    serials (the endpoint refuses any serial not in the inventory, as in production)."""
    if not extra:
        return source
    dst = d / "inventory"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(source, dst)
    lines = (dst / "ipads.csv").read_text(encoding="utf-8").splitlines()
    school = lines[1].split(";")[2] if len(lines) > 1 else "gs-demo"
    rows = [f"{s};iPad (10th generation);{school};pupil;lab-{i:03d}" for i, s in enumerate(extra)]
    (dst / "ipads.csv").write_text("\n".join([*lines, *rows]) + "\n", encoding="utf-8")
    return dst


def install_lab_push_cert(config: Config, days: int = 365) -> None:
    """Install the lab's push certificate in the lab's NanoMDM, as `werne mdm push-cert install` does."""
    csr = make_csr(config).csr_pem
    cert = lab_push_certificate(csr, config.state_dir / "mdm" / "apple-push-ca", days=days)
    db = Database(config.database_url)
    try:
        install_push_cert(config, db, nanomdm_client(config), cert, source="the lab's push certificate",
                          force=True, actor="lab")
    finally:
        db.dispose()


def _put_lab_group_sets(cfg: Config, inventory_dir: Path) -> None:
    """The lab inventory's group sets in KMFDDM (as `werne ipad declarations apply` writes them)."""
    ipads = load_inventory(inventory_dir).ipads.values()
    put_group_sets(kmfddm_client(cfg), sorted({(i.school, i.group) for i in ipads}))


# --- the lab API ---------------------------------------------------------------------------------


def _lab_config(config: Config | None, state_dir: Path) -> Config:
    # A deep copy keeps which settings the config file set explicitly (pydantic copies private attrs).
    cfg = config.model_copy(deep=True) if config is not None else Config()
    cfg.site.state_dir = state_dir
    return cfg


@dataclass(frozen=True)
class _Plan:
    """Everything the MDM start-up decided before any process starts: ports, URLs, files."""

    state_dir: Path
    d: Path
    cfg: Config
    tls: LabTLS
    device_ca: tuple[Path, Path]
    lab_inventory: Path
    ports: dict[str, int]
    urls: dict[str, str]
    # Each NanoMDM replica's listen address (one: the same as urls["nanomdm"]'s).
    replicas: tuple[str, ...] = ()


FaultPlan = dict[int, dict[str, Any]]


def _devices(config: Config | None, state_dir: Path, n_ipads: int, faults: bool | FaultPlan, d: Path) -> Path:
    """devices.json for the simulator (inventory serials first, then generated ones); returns the
    inventory the lab's enrolment endpoint answers for."""
    serials = _inventory_serials(config, state_dir)[:n_ipads]
    extra = generated_serials(n_ipads - len(serials))
    serials += extra
    plan = faults if isinstance(faults, dict) else lab_faults(n_ipads) if faults else {}
    devices = [SimDevice(serial=s, udid=udid_for(s), faults=DeviceFaults(**plan.get(i, {})))
               for i, s in enumerate(serials)]
    # The inventory's classroom Apple TVs enrol beside the iPads (tvOS, through the same ADE path).
    devices += [SimDevice(serial=s, udid=udid_for(s), platform="tvOS")
                for s in _inventory_appletvs(config, state_dir)]
    dump_devices(d / "devices.json", devices)
    os.chmod(d / "devices.json", 0o600)
    return _lab_inventory(_inventory_root(config, state_dir), extra, d)


def _issue_bulk_identities(p: _Plan) -> None:
    """Give every simulated device an identity from the lab's SCEP CA (lab.certs.issue_identities),
    so it skips ADE and SCEP and goes straight to NanoMDM's check-in: for tests of the MDM server
    with hundreds of iPads, which the enrolment endpoint's rate limit per address would slow down."""
    depot = depot_dir(p.cfg)
    devices = load_devices(p.d / "devices.json")
    ids = issue_identities(depot / "ca.pem", depot / "ca.key", [x.serial for x in devices])
    for device, (_serial, _udid, pem, key) in zip(devices, ids, strict=True):
        device.cert_pem, device.key_pem = pem, key
    dump_devices(p.d / "devices.json", devices)
    os.chmod(p.d / "devices.json", 0o600)


def _plan(state_dir: Path, n_ipads: int, config: Config | None, faults: bool | FaultPlan, replicas: int = 1) -> _Plan:
    d = state_dir / "mdm"
    tls = make_tls(d)  # the lab CA (ca.pem, ca.key) and the proxy's server certificate
    device_ca = make_ca(d / "apple-device-ca")
    issue_leaf(tls.ca_cert, tls.ca_key, "werne lab profile signing", d / "profile-signer.pem",
               d / "profile-signer.key")
    for name in ("api_key", "webhook_hmac_key", "ddm_api_key", "web_secret"):
        _secret_file(d / name)
    lab_inventory = _devices(config, state_dir, n_ipads, faults, d)
    ports = {name: processes.free_port() for name in ("nanomdm", "webhook", "web", "nginx", "kmfddm", "scep")}
    cfg = _lab_config(config, state_dir)
    public = f"https://127.0.0.1:{ports['nginx']}"
    urls = {
        "nanomdm": f"http://127.0.0.1:{ports['nanomdm']}",
        "webhook": f"http://127.0.0.1:{ports['webhook']}/webhook",
        "web": f"http://127.0.0.1:{ports['web']}",
        "kmfddm": f"http://127.0.0.1:{ports['kmfddm']}",
        "public": public,
        "server": public + "/mdm",
        "enrol": public + enrol_path(cfg),
        "scep": public + "/scep",
    }
    # One NanoMDM: on urls["nanomdm"]. Several: each on a port of its own, and urls["nanomdm"] is
    # nginx's API front over them (as `werne server install` lays them out).
    listens = ((f"127.0.0.1:{ports['nanomdm']}",) if replicas == 1
               else tuple(f"127.0.0.1:{processes.free_port()}" for _ in range(replicas)))
    return _Plan(state_dir, d, cfg, tls, device_ca, lab_inventory, ports, urls, listens)


def _write_endpoints(p: _Plan) -> None:
    """The lab's endpoints into the state dir's endpoints file, so `werne ...` finds the lab."""
    d = p.d
    write_endpoints(p.state_dir, "mdm", {
        "url": p.urls["nanomdm"],
        "api_key_file": d / "api_key",
        "webhook_listen": f"127.0.0.1:{p.ports['webhook']}",
        "webhook_hmac_key_file": d / "webhook_hmac_key",
        "server_url": p.urls["server"],
        "signing_cert_file": d / "profile-signer.pem",
        "signing_key_file": d / "profile-signer.key",
        "tls_ca_file": p.tls.ca_cert,
        # As a production config with replicas says it: the client waits out a replica restarting.
        "replicas": len(p.replicas),
    })
    write_endpoints(p.state_dir, "scep", {"url": p.urls["scep"]})
    write_endpoints(p.state_dir, "dep", {"enrol_url": p.urls["enrol"], "machineinfo_ca_file": p.device_ca[0]})
    write_endpoints(p.state_dir, "web", {"secret_key_file": d / "web_secret", "listen": f"127.0.0.1:{p.ports['web']}"})
    write_endpoints(p.state_dir, "ddm", {"url": p.urls["kmfddm"], "api_key_file": d / "ddm_api_key"})
    apply_endpoints(p.cfg)


def _lab_json(p: _Plan, n_ipads: int, storage: str, poll_interval: float, scep_parallel: int) -> None:
    """STATE/mdm/lab.json: the URLs, for status() and for the simulator (which reads it)."""
    lab = {
        "nanomdm_url": p.urls["nanomdm"],
        "webhook_url": p.urls["webhook"],
        "webhook_listen": f"127.0.0.1:{p.ports['webhook']}",
        "web_url": p.urls["web"],
        "public_url": p.urls["public"],
        "server_url": p.urls["server"],
        "enrol_url": p.urls["enrol"],
        "scep_url": p.urls["scep"],
        "kmfddm_url": p.urls["kmfddm"],
        "tls_ca_file": str(p.tls.ca_cert),
        "storage": storage,
        "replicas": list(p.replicas),
        "ipads": n_ipads,
        "api_key_file": str(p.d / "api_key"),
        "webhook_hmac_key_file": str(p.d / "webhook_hmac_key"),
        "poll_interval": poll_interval,
        "inventory": str(p.lab_inventory),
        "ade": ADEEnrolment(
            enrol_url=p.urls["enrol"],
            tls_ca_file=p.tls.ca_cert,
            profile_ca_file=p.tls.ca_cert,
            device_ca_cert=p.device_ca[0],
            device_ca_key=p.device_ca[1],
            workdir=p.d / "ipads",
            scepclient=REPO_ROOT / ".tools" / "bin" / "scepclient",
            parallel=scep_parallel,
        ).to_dict(),
    }
    (p.d / "lab.json").write_text(json.dumps(lab, indent=1), encoding="utf-8")


def _nanomdm_service(d: Path, cfg: Config, urls: dict[str, str], storage: str, storage_dsn: str,
                     replica: int = 1, listen: str = "") -> Service:
    """NanoMDM's descriptor (replica `replica`, listening on `listen`; by default urls["nanomdm"]):
    -ca is the SCEP trust bundle (ipad.golive.scep_ca), so a rotated CA's identities stay valid
    beside the new CA's."""
    # In-memory storage by default: NanoMDM v0.9.0's filekv queue loses commands when a device
    # reports while another command is enqueued for it (seen in the lab: a broken queue list).
    nano_env = {"NANOMDM_API": _secret_file(d / "api_key"),
                "NANOMDM_WEBHOOK_HMAC_KEY": _secret_file(d / "webhook_hmac_key")}
    if storage == "pgsql":
        nano_env["NANOMDM_STORAGE_DSN"] = storage_dsn
    listen = listen or urls["nanomdm"].removeprefix("http://")
    return Service(
        name=replica_name(replica), what="NanoMDM" if replica == 1 else f"NanoMDM replica {replica}",
        directory=d, env=nano_env, ready_timeout=10,
        argv=tuple(nanomdm_argv(listen, trust_bundle_file(cfg), urls["webhook"], None,
                                storage="pgsql" if storage == "pgsql" else None, dm_url=urls["kmfddm"] + "/")),
        ready=HTTPReady(f"http://{listen}/version"), depends_on=("webhook", "kmfddm", "scepserver"))


def _replica_services(d: Path, cfg: Config, urls: dict[str, str], storage: str, storage_dsn: str,
                      replicas: list[str] | tuple[str, ...]) -> list[Service]:
    if len(replicas) <= 1:
        return [_nanomdm_service(d, cfg, urls, storage, storage_dsn)]
    return [_nanomdm_service(d, cfg, urls, storage, storage_dsn, i, listen) for i, listen in enumerate(replicas, 1)]


def restart_replica(state_dir: Path, replica: int, config: Config | None = None, storage_dsn: str = "") -> int:
    """Start NanoMDM replica `replica` again on its port (after a crash); returns its pid."""
    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
    cfg = _lab_config(config, state_dir)
    apply_endpoints(cfg)
    urls = {"nanomdm": lab["nanomdm_url"], "webhook": lab["webhook_url"], "kmfddm": lab["kmfddm_url"]}
    services = _replica_services(d, cfg, urls, lab["storage"], storage_dsn, lab.get("replicas") or [])
    return processes.up(services[replica - 1])


def restart_identity_servers(state_dir: Path, config: Config | None = None, storage_dsn: str = "") -> None:
    """Restart scepserver (on its port) and NanoMDM, which read the SCEP CA and the trust bundle only
    when they start: after `werne mdm scep rotate` or `retire-old`, or a changed scep.cert_valid_days.
    In-memory NanoMDM forgets its enrolments and the push certificate: the push certificate is
    installed again, the simulated iPads enrol again by themselves; on PostgreSQL nothing is lost."""
    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
    cfg = _lab_config(config, state_dir)
    apply_endpoints(cfg)
    scep = lab_scep.status(state_dir)
    port = int(urllib.parse.urlsplit(scep.url).port or 0) if scep else None
    lab_scep.up(state_dir, cfg, port=port)
    urls = {"nanomdm": lab["nanomdm_url"], "webhook": lab["webhook_url"], "kmfddm": lab["kmfddm_url"]}
    # One replica after the other, so nginx always has one to send the iPads to.
    for svc in _replica_services(d, cfg, urls, lab["storage"], storage_dsn, lab.get("replicas") or []):
        processes.up(svc)
    if lab["storage"] != "pgsql":
        install_lab_push_cert(cfg)


def _max_conns(p: _Plan, storage: str) -> int:
    """nginx's max_conns per NanoMDM, as the install writes it for PostgreSQL (mdm.replica_max_conns):
    replicas get the test cluster's share (REPLICA_MAX_CONNS); in-memory or file storage needs no limit."""
    if len(p.replicas) > 1:
        return REPLICA_MAX_CONNS
    return p.cfg.mdm.replica_max_conns if storage == "pgsql" else 0


def _services(p: _Plan, config: Config | None, storage: str, storage_dsn: str) -> list[Service]:
    """The lab's MDM servers, one descriptor each; start order follows depends_on."""
    d, state_dir = p.d, p.state_dir
    cfg_args = _cfg_args(config, state_dir)
    env = {"PYTHONPATH": str(REPO_ROOT)}
    api_key = _secret_file(d / "api_key")
    scep, _ = lab_scep.prepare(state_dir, p.cfg, p.ports["scep"])
    # KMFDDM calls NanoMDM only when a declaration changes; NanoMDM needs KMFDDM's URL (-dm).
    kmfddm, _ = lab_kmfddm.prepare(state_dir, Secret(_secret_file(d / "ddm_api_key"), source=str(d / "ddm_api_key")),
                                   enqueue_url=p.urls["nanomdm"] + "/v1/enqueue/",
                                   enqueue_key=Secret(api_key, source=str(d / "api_key")), port=p.ports["kmfddm"])
    webhook = _webhook_service(d, env, cfg_args, f"127.0.0.1:{p.ports['webhook']}")
    nanomdm = _replica_services(d, p.cfg, p.urls, storage, storage_dsn, p.replicas)
    cfg_file = cfg_args[1] if cfg_args[0] == "--config" else ""
    web = _web_service(d, env, cfg_file, state_dir, p.lab_inventory, p.ports["web"])
    front = f"127.0.0.1:{p.ports['nanomdm']}" if len(p.replicas) > 1 else ""
    nginx = proxy.prepare(d, p.replicas if front else p.replicas[0], f"127.0.0.1:{p.ports['scep']}",
                          f"127.0.0.1:{p.ports['web']}", enrol_path(p.cfg), p.ports["nginx"], p.tls, api_listen=front,
                          max_conns=_max_conns(p, storage))
    return [scep, webhook, kmfddm, *nanomdm, web, nginx, _simulator_service(d, env, state_dir)]


def _simulator_service(d: Path, env: dict[str, str], state_dir: Path) -> Service:
    # The simulator has no port to poll: it is ready when its process shows as running.
    return Service(name="simulator", what="the iPad simulator", directory=d, env=env,
                   argv=(sys.executable, "-m", "lab.ipad_sim", "--state-dir", str(state_dir)),
                   depends_on=("nginx",))


def start_simulator(state_dir: Path) -> None:
    """Start the lab's simulated devices again after processes.stop("simulator") (which has them
    write executed.json): they check in again from devices.json, as iPads do after a restart."""
    state_dir = Path(state_dir).resolve()
    processes.up(_simulator_service(state_dir / "mdm", {"PYTHONPATH": str(REPO_ROOT)}, state_dir))


def _web_service(d: Path, env: dict[str, str], cfg_file: str, state_dir: Path, inventory: Path, port: int) -> Service:
    """`werne web serve` for the lab: it answers for the lab's inventory (the site's plus generated serials)."""
    web_code = ("import sys; from pathlib import Path; from core.config import load_config; "
                "from enrolment.web.app import serve; "
                "cfg = load_config(sys.argv[1] or None, state_dir=sys.argv[2]); "
                "cfg.site.inventory = Path(sys.argv[3]); serve(cfg, '127.0.0.1', int(sys.argv[4]))")
    return Service(name="web", what="werne web serve", directory=d, env=env, ready_timeout=30,
                   argv=(sys.executable, "-c", web_code, cfg_file, str(state_dir), str(inventory), str(port)),
                   ready=HTTPReady(f"http://127.0.0.1:{port}/healthz"), depends_on=("nanomdm",))


def _cfg_args(config: Config | None, state_dir: Path) -> list[str]:
    """The `werne` options the lab's werne processes run with: the config file if there is one."""
    args = ["--state-dir", str(state_dir)]
    if config is not None and config.source not in ("built-in defaults",) and Path(config.source).is_file():
        args = ["--config", str(Path(config.source).resolve()), *args]
    return args


def _webhook_service(d: Path, env: dict[str, str], cfg_args: list[str], listen: str) -> Service:
    """`werne mdm serve-webhook` for the lab: NanoMDM posts every device message to it."""
    cli = (sys.executable, "-c", "import sys; from cli import main; sys.exit(main())")
    return Service(name="webhook", what="the webhook receiver", directory=d, env=env, ready_timeout=20,
                   argv=(*cli, *cfg_args, "mdm", "serve-webhook", "--listen", listen,
                         "--hmac-key-file", str(d / "webhook_hmac_key")),
                   ready=HTTPReady(f"http://{listen}/healthz"))


def _lab_inventory_of(lab: dict[str, Any], d: Path, config: Config | None, state_dir: Path) -> Path:
    """The inventory the lab's web page answers for. A lab.json written before v0.2.0 does not
    name it: then it is the one `up` wrote (with generated serials), else the site's."""
    if lab.get("inventory"):
        return Path(lab["inventory"])
    return d / "inventory" if (d / "inventory" / "ipads.csv").is_file() else _inventory_root(config, state_dir)


def stop_werne(state_dir: Path) -> None:
    """Stop the lab's werne processes (the web page, then the webhook receiver), as the upgrade's
    steps stop werne-web and werne-webhook; NanoMDM, scepserver, KMFDDM, nginx and the iPads keep
    running (the lab's NanoMDM keeps its enrolments in memory)."""
    d = Path(state_dir).resolve() / "mdm"
    for name in WERNE_SERVICES:
        processes.stop(name, d)


def start_werne(state_dir: Path, config: Config | None = None) -> None:
    """Start the lab's webhook receiver and web page with this werne, on the ports of lab.json
    (also one an older werne wrote): after `werne db upgrade`, as the upgrade's steps say."""
    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
    env = {"PYTHONPATH": str(REPO_ROOT)}
    cfg_args = _cfg_args(config, state_dir)
    processes.up(_webhook_service(d, env, cfg_args, lab["webhook_listen"]))
    port = int(lab["web_url"].rsplit(":", 1)[1])
    cfg_file = cfg_args[1] if cfg_args[0] == "--config" else ""
    processes.up(_web_service(d, env, cfg_file, state_dir, _lab_inventory_of(lab, d, config, state_dir), port))


def restart_web(state_dir: Path, config: Config | None = None) -> None:
    """Stop and start the lab's `werne web serve` alone (its arrival watcher and lesson loop), as a
    restart of the service would: what it does after the start, it does from the database alone."""
    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
    processes.stop("web", d)
    cfg_args = _cfg_args(config, state_dir)
    cfg_file = cfg_args[1] if cfg_args[0] == "--config" else ""
    port = int(lab["web_url"].rsplit(":", 1)[1])
    processes.up(_web_service(d, {"PYTHONPATH": str(REPO_ROOT)}, cfg_file, state_dir,
                              _lab_inventory_of(lab, d, config, state_dir), port))


def up(
    state_dir: Path,
    n_ipads: int,
    config: Config | None = None,
    poll_interval: float = 2.0,
    storage: str = "inmem",
    storage_dsn: str = "",
    scep_parallel: int = 4,
    faults: bool | FaultPlan = True,
    replicas: int = 1,
    bulk_identities: bool = False,
) -> LabMDMStatus:
    """Start the whole chain and `n_ipads` simulated iPads that enrol through it; idempotent.

    storage="pgsql" runs NanoMDM on PostgreSQL (storage_dsn, whose schema `werne mdm db-init`
    loaded); the default is in-memory storage. faults=False: no faulty iPads (see lab_faults); a
    dict: these faults (device index -> DeviceFaults fields) instead. replicas > 1 (PostgreSQL
    only): that many NanoMDM processes behind nginx, which also fronts their API at the NanoMDM URL.
    bulk_identities: the devices get their identities from the SCEP CA directly and check in
    without the ADE and SCEP round trips (see _issue_bulk_identities).
    """
    state_dir = Path(state_dir).resolve()
    d = state_dir / "mdm"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not NANOMDM_BIN.is_file():
        raise LabServiceError(f"{NANOMDM_BIN} is missing; run scripts/setup.sh")
    if replicas > 1 and storage != "pgsql":
        raise LabServiceError("NanoMDM replicas share one database: they need storage=\"pgsql\"")
    if any(processes.running(p, d) for p in (*PROCESSES, *SERVICES)):
        down(state_dir)
    p = _plan(state_dir, n_ipads, config, faults, replicas)
    _write_endpoints(p)
    try:
        services = _services(p, config, storage, storage_dsn)
        if bulk_identities:
            _issue_bulk_identities(p)
        _lab_json(p, n_ipads, storage, poll_interval, scep_parallel)

        def after(svc: Service) -> None:
            if svc.name == "kmfddm":
                _put_lab_group_sets(p.cfg, p.lab_inventory)
            elif svc.name == ("nginx" if len(p.replicas) > 1 else "nanomdm"):
                # With replicas the NanoMDM URL is nginx's API front: up once nginx is.
                install_lab_push_cert(p.cfg)

        processes.start_all(services, on_ready=after)
    except BaseException:
        down(state_dir)
        raise
    return status(state_dir)


def down(state_dir: Path) -> None:
    """Stop the simulator, nginx, the web page, NanoMDM, the webhook receiver, KMFDDM and scepserver."""
    d = Path(state_dir).resolve() / "mdm"
    if d.is_dir():
        processes.stop_all(STOP_ORDER, d)
    lab_kmfddm.down(state_dir)
    lab_scep.down(state_dir)


def status(state_dir: Path) -> LabMDMStatus:
    """Which of the lab's processes run, and where."""
    d = Path(state_dir).resolve() / "mdm"
    st = LabMDMStatus(state_dir=Path(state_dir), logs=d / "logs")
    if (d / "lab.json").is_file():
        lab = json.loads((d / "lab.json").read_text(encoding="utf-8"))
        st.nanomdm_url, st.webhook_url, st.ipads = lab["nanomdm_url"], lab["webhook_url"], lab["ipads"]
        st.server_url = lab.get("server_url", "")
    for name in PROCESSES:
        pid = processes.running(name, d) if d.is_dir() else None
        st.pids[name], st.running[name] = pid, pid is not None
    for name in SERVICES:
        st.services[name] = d.is_dir() and processes.running(name, d) is not None
    ddm = lab_kmfddm.status(state_dir)
    st.services["kmfddm"] = ddm is not None and ddm.pid is not None
    scep = lab_scep.status(state_dir)
    st.services["scepserver"] = scep is not None and scep.pid is not None
    return st
