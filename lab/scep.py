"""The SCEP part of the lab: a real micromdm/scep `scepserver` on a free loopback port.

`up(state_dir, config)` makes the SCEP CA and challenge if needed (ipad.golive.scep_ca, the same code as
`werne mdm scep init`), then starts
    scepserver -depot <depot> -http-addr 127.0.0.1:<free port> -crtvalid <scep.cert_valid_days>
-allowrenew 0, with the challenge in SCEP_CHALLENGE_PASSWORD (so it never shows in `ps`), pid file and log under
STATE/scep/. STATE/scep/lab.json records the URL. `down(state_dir)` stops it (a no-op when it does
not run). `prepare` returns the service descriptor without starting it, for lab.mdm's start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.config import REPO_ROOT, Config
from ipad.golive.scep_ca import depot_dir, init_scep_ca, read_challenge
from lab import processes
from lab.errors import LabServiceError
from lab.processes import HTTPReady, Service

SCEPSERVER_BIN = REPO_ROOT / ".tools" / "bin" / "scepserver"
SCEPCLIENT_BIN = REPO_ROOT / ".tools" / "bin" / "scepclient"
PROCESS = "scepserver"


@dataclass(frozen=True)
class LabSCEP:
    """A running lab scepserver: its URL, depot and pid."""

    url: str
    depot: Path
    pid: int | None
    log: Path


def service_dir(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "scep"


def scepserver_argv(depot: Path, listen: str, valid_days: int, binary: Path = SCEPSERVER_BIN) -> list[str]:
    """scepserver's command line; the challenge goes in SCEP_CHALLENGE_PASSWORD.

    -allowrenew 0: every iPad asks with the enrolment profile's subject, so scepserver must issue
    more than one identity per subject (its default refuses a second one for 14 days before expiry).
    """
    return [str(binary), "-depot", str(depot), "-http-addr", listen, "-crtvalid", str(valid_days),
            "-allowrenew", "0"]


def prepare(state_dir: Path, config: Config, port: int | None = None) -> tuple[Service, str]:
    """The SCEP CA and challenge (made if missing), lab.json, and scepserver's descriptor and URL."""
    d = service_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    if not SCEPSERVER_BIN.is_file():
        raise LabServiceError(f"{SCEPSERVER_BIN} is missing; run scripts/setup.sh")
    init_scep_ca(config)
    port = port or processes.free_port()
    url = f"http://127.0.0.1:{port}/scep"
    svc = Service(
        name=PROCESS, what="scepserver", directory=d,
        argv=tuple(scepserver_argv(depot_dir(config), f"127.0.0.1:{port}", config.scep.cert_valid_days)),
        env={"SCEP_CHALLENGE_PASSWORD": read_challenge(config).reveal()},
        ready=HTTPReady(f"{url}?operation=GetCACaps"))
    (d / "lab.json").write_text(json.dumps({"url": url}, indent=1), encoding="utf-8")
    return svc, url


def up(state_dir: Path, config: Config, port: int | None = None) -> LabSCEP:
    """Start scepserver for this state dir (restarting one that runs), on `port` or a free one."""
    svc, url = prepare(state_dir, config, port)
    pid = processes.up(svc)
    return LabSCEP(url, depot_dir(config), pid, svc.log)


def down(state_dir: Path) -> None:
    d = service_dir(state_dir)
    if d.is_dir():
        processes.stop(PROCESS, d)


def status(state_dir: Path) -> LabSCEP | None:
    """The lab's scepserver if it was started in this state dir."""
    d = service_dir(state_dir)
    try:
        url = json.loads((d / "lab.json").read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError):
        return None
    return LabSCEP(url, d / "depot", processes.running(PROCESS, d), d / "logs" / f"{PROCESS}.log")
