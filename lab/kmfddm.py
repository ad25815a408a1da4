"""The declarative-management part of the lab: a real KMFDDM server on a free loopback port.

`up(state_dir, api_key, enqueue_url=..., enqueue_key=...)` starts
    kmfddm -listen 127.0.0.1:<free port> -storage filekv -storage-dsn STATE/kmfddm/db
           [-enqueue <NanoMDM's /v1/enqueue/ URL>]
with the API key in KMFDDM_API (and NanoMDM's key in KMFDDM_ENQUEUE_KEY: KMFDDM reads every flag
from a KMFDDM_* variable too), so no key shows in `ps`. The pid file and log are under
STATE/kmfddm/, and STATE/kmfddm/lab.json records the URL. `down(state_dir)` stops it.
Without an enqueue URL KMFDDM stores everything but cannot notify devices: callers use nonotify.
`prepare` returns the service descriptor without starting it, for lab.mdm's start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.config import REPO_ROOT
from core.secrets import Secret
from lab import processes
from lab.errors import LabServiceError
from lab.processes import HTTPReady, Service

KMFDDM_BIN = REPO_ROOT / ".tools" / "bin" / "kmfddm"
PROCESS = "kmfddm"


@dataclass(frozen=True)
class LabKMFDDM:
    """A running lab KMFDDM: its URL, storage directory, pid and log."""

    url: str
    storage: Path
    pid: int | None
    log: Path


def service_dir(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "kmfddm"


def kmfddm_argv(listen: str, storage: Path, enqueue_url: str = "", binary: Path = KMFDDM_BIN) -> list[str]:
    """KMFDDM's command line; the keys go in KMFDDM_API and KMFDDM_ENQUEUE_KEY, never here."""
    argv = [str(binary), "-listen", listen, "-storage", "filekv", "-storage-dsn", str(storage)]
    if enqueue_url:
        argv += ["-enqueue", enqueue_url]
    return argv


def prepare(state_dir: Path, api_key: Secret, enqueue_url: str = "", enqueue_key: Secret | None = None,
            binary: Path = KMFDDM_BIN, port: int | None = None) -> tuple[Service, str]:
    """KMFDDM's descriptor and URL (lab.json written); `enqueue_url` is NanoMDM's enqueue endpoint
    (e.g. http://127.0.0.1:9000/v1/enqueue/), used to notify devices of changes."""
    d = service_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    if not binary.is_file():
        raise LabServiceError(f"{binary} is missing; run scripts/setup.sh")
    port = port or processes.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"KMFDDM_API": api_key.reveal()}
    if enqueue_key is not None:
        env["KMFDDM_ENQUEUE_KEY"] = enqueue_key.reveal()
    svc = Service(name=PROCESS, what="kmfddm", directory=d, env=env, ready=HTTPReady(f"{url}/version"),
                  argv=tuple(kmfddm_argv(f"127.0.0.1:{port}", d / "db", enqueue_url, binary)))
    (d / "lab.json").write_text(json.dumps({"url": url}, indent=1), encoding="utf-8")
    return svc, url


def up(
    state_dir: Path,
    api_key: Secret,
    enqueue_url: str = "",
    enqueue_key: Secret | None = None,
    binary: Path = KMFDDM_BIN,
) -> LabKMFDDM:
    """Start KMFDDM for this state dir (restarting one that runs)."""
    svc, url = prepare(state_dir, api_key, enqueue_url, enqueue_key, binary)
    pid = processes.up(svc)
    return LabKMFDDM(url, svc.directory / "db", pid, svc.log)


def down(state_dir: Path) -> None:
    d = service_dir(state_dir)
    if d.is_dir():
        processes.stop(PROCESS, d)


def status(state_dir: Path) -> LabKMFDDM | None:
    """The lab's KMFDDM if it was started in this state dir."""
    d = service_dir(state_dir)
    try:
        url = json.loads((d / "lab.json").read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError):
        return None
    return LabKMFDDM(url, d / "db", processes.running(PROCESS, d), d / "logs" / f"{PROCESS}.log")
