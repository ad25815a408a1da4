"""The declarative-management part of the lab: a real KMFDDM server on a free loopback port.

`up(state_dir, api_key, enqueue_url=..., enqueue_key=...)` starts
    kmfddm -listen 127.0.0.1:<free port> -storage filekv -storage-dsn STATE/kmfddm/db
           [-enqueue <NanoMDM's /v1/enqueue/ URL>]
with the API key in KMFDDM_API (and NanoMDM's key in KMFDDM_ENQUEUE_KEY: KMFDDM reads every flag
from a KMFDDM_* variable too), so no key shows in `ps`. The pid file and log are under
STATE/kmfddm/, and STATE/kmfddm/lab.json records the URL. `down(state_dir)` stops it.
Without an enqueue URL KMFDDM stores everything but cannot notify devices: callers use nonotify.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.config import REPO_ROOT
from core.secrets import Secret
from lab.mdm import LabMDMError, free_port, running, start_process, stop_process, wait_http

KMFDDM_BIN = REPO_ROOT / ".tools" / "bin" / "kmfddm"
PROCESS = "kmfddm"


@dataclass(frozen=True)
class LabKMFDDM:
    """A running lab KMFDDM: its URL, storage directory, pid and log."""

    url: str
    storage: Path
    pid: int | None
    log: Path


def _dir(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "kmfddm"


def kmfddm_argv(listen: str, storage: Path, enqueue_url: str = "", binary: Path = KMFDDM_BIN) -> list[str]:
    """KMFDDM's command line; the keys go in KMFDDM_API and KMFDDM_ENQUEUE_KEY, never here."""
    argv = [str(binary), "-listen", listen, "-storage", "filekv", "-storage-dsn", str(storage)]
    if enqueue_url:
        argv += ["-enqueue", enqueue_url]
    return argv


def up(
    state_dir: Path,
    api_key: Secret,
    enqueue_url: str = "",
    enqueue_key: Secret | None = None,
    binary: Path = KMFDDM_BIN,
) -> LabKMFDDM:
    """Start KMFDDM for this state dir (restarting one that runs); `enqueue_url` is NanoMDM's
    enqueue endpoint (e.g. http://127.0.0.1:9000/v1/enqueue/), used to notify devices of changes."""
    d = _dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    if not binary.is_file():
        raise LabMDMError(f"{binary} is missing; run scripts/setup.sh")
    down(state_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"KMFDDM_API": api_key.reveal()}
    if enqueue_key is not None:
        env["KMFDDM_ENQUEUE_KEY"] = enqueue_key.reveal()
    storage = d / "db"
    pid = start_process(PROCESS, kmfddm_argv(f"127.0.0.1:{port}", storage, enqueue_url, binary), d, env=env)
    log = d / "logs" / f"{PROCESS}.log"
    try:
        wait_http(f"{url}/version", 15, pid, "kmfddm", log)
    except BaseException:
        down(state_dir)
        raise
    (d / "lab.json").write_text(json.dumps({"url": url}, indent=1), encoding="utf-8")
    return LabKMFDDM(url, storage, pid, log)


def down(state_dir: Path) -> None:
    d = _dir(state_dir)
    if d.is_dir():
        stop_process(PROCESS, d)


def status(state_dir: Path) -> LabKMFDDM | None:
    """The lab's KMFDDM if it was started in this state dir."""
    d = _dir(state_dir)
    try:
        url = json.loads((d / "lab.json").read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError):
        return None
    return LabKMFDDM(url, d / "db", running(PROCESS, d), d / "logs" / f"{PROCESS}.log")
