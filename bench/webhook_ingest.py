"""Benchmark: webhook ingestion rate of `werne mdm serve-webhook` (target: >= 2,000 results/s).

Starts the real receiver (the CLI, uvicorn, its own process, a fresh SQLite state database, HMAC
on), then posts N distinct command-result events in NanoMDM's exact webhook shape (JSON with
topic, event_id, created_at and acknowledge_event.raw_payload = base64 of a device report; the
reports are what the simulated iPads send: DeviceInformation, SecurityInfo, ProfileList,
CertificateList) from an asyncio load generator over keep-alive connections, and prints
results/s. Baseline: the same load against a bare Starlette endpoint that reads the body and
answers 200, under the same uvicorn settings (one process), i.e. the cost of HTTP alone.

The receiver runs once per --workers value (WERNE_WEBHOOK_WORKERS: 1 = one process; 2 = the
default on a 2-core machine with SQLite), each with a fresh database. With --base DIR (a checkout
of an older commit with its own .venv), that checkout's receiver runs too, from its own code, in
the same run. --rounds repeats the whole set (bare, base, this code) that many times, so that a
change in the machine's load shows as a spread instead of favouring one of them. On a shared
machine the absolute numbers move with the load, so the load average and the ratio to the bare
baseline of the same round are printed too.

    .venv/bin/python bench/webhook_ingest.py [--events 20000] [--connections 64] [--workers 1,2]
        [--base /work/wt-speed-base] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import plistlib
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipad import commands  # noqa: E402
from ipad.commands import certificate_list  # noqa: E402
from ipad.webhook import sign  # noqa: E402
from lab.certs import issue_identities, make_ca  # noqa: E402
from lab.ipad_sim import SimDevice  # noqa: E402
from lab.processes import free_port, wait_http  # noqa: E402

KEY = "bench-hmac-key"


def make_bodies(n: int, tmp: Path) -> list[tuple[bytes, str]]:
    ca, ca_key = make_ca(tmp / "ca")
    devices = [
        SimDevice(serial=s, udid=u, cert_pem=p)
        for s, u, p, _k in issue_identities(ca, ca_key, [f"BENCH{i:06d}" for i in range(500)])
    ]
    builders = [
        lambda: commands.device_information(),
        commands.security_info,
        commands.profile_list,
        certificate_list,
    ]
    out = []
    for i in range(n):
        dev = devices[i % len(devices)]
        cmd = builders[(i // len(devices)) % len(builders)]()
        report = dev.execute(plistlib.loads(cmd.to_plist()))
        assert report is not None
        body = json.dumps(
            {
                "topic": "mdm.Connect",
                "event_id": f"{i:016x}",
                "created_at": "2026-11-27T10:00:00.123456789Z",
                "acknowledge_event": {
                    "udid": dev.udid,
                    "ids": {"id": dev.udid, "type": "Device"},
                    "status": report["Status"],
                    "command_uuid": cmd.uuid,
                    "raw_payload": base64.b64encode(plistlib.dumps(report)).decode(),
                },
            },
            separators=(",", ":"),
        ).encode()
        out.append((body, sign(body, KEY)))
    return out


async def _worker(port: int, items: list[tuple[bytes, str]], statuses: dict[int, int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for body, sig in items:
        w.write(
            b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Hmac-Signature: " + sig.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        head = await r.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
    w.close()


def load(port: int, bodies: list[tuple[bytes, str]], connections: int) -> tuple[float, dict[int, int]]:
    statuses: dict[int, int] = {}
    parts = [bodies[i::connections] for i in range(connections)]

    async def run() -> float:
        t = time.perf_counter()
        await asyncio.gather(*[_worker(port, p, statuses) for p in parts])
        return time.perf_counter() - t

    try:
        import uvloop

        return uvloop.run(run()), statuses
    except ImportError:
        return asyncio.run(run()), statuses


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server process and its worker processes, from /proc."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


BARE_APP = textwrap.dedent("""
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    async def receive(request):
        await request.body()
        return PlainTextResponse("ok\\n")
    app = Starlette(routes=[Route("/webhook", receive, methods=["POST"]),
                            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=["GET"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                http="httptools", loop="uvloop")
""")


def run_receiver(name: str, argv: list[str], cwd: Path, env: dict[str, str], tmp: Path,
                 bodies: list[tuple[bytes, str]], connections: int) -> tuple[float, float, dict[int, int]]:
    """Start one receiver, warm it up, post the events; (wall s, server CPU s, statuses)."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc.pid, name, tmp / f"{name}.log")
        load(port, bodies[:500], 8)  # warm-up (also stores the first 500)
        cpu0 = server_cpu_seconds(proc.pid)
        wall, statuses = load(port, bodies[500:], connections)
        cpu = server_cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    return wall, cpu, statuses


def receivers(args: argparse.Namespace, tmp: Path, rnd: int) -> list[tuple[str, list[str], Path, dict[str, str]]]:
    """(name, argv, working dir, environment) of each receiver of one round: bare, base, this code."""
    out = [("baseline", [sys.executable, "-c", BARE_APP, "{port}"], REPO, dict(os.environ))]
    trees = ([("base", args.base.resolve())] if args.base is not None else []) + [("werne", REPO)]
    for label, tree in trees:
        python = str(tree / ".venv" / "bin" / "python") if label == "base" else sys.executable
        for w in [int(w) for w in args.workers.split(",") if w.strip()]:
            env = dict(os.environ, WERNE_WEBHOOK_WORKERS=str(w), PYTHONPATH=str(tree))
            argv = [python, "-c", "import sys; from cli import main; sys.exit(main())", "--state-dir",
                    str(tmp / f"state-{label}-{w}p-{rnd}"), "mdm", "serve-webhook", "--listen", "127.0.0.1:{port}",
                    "--hmac-key-file", str(tmp / "hmac")]
            out.append((f"{label}-{w}p", argv, tree, env))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="receiver process counts to measure, e.g. 1,2")
    ap.add_argument("--base", type=Path, default=None, help="a checkout of an older commit, with its own .venv")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-") as d:
        tmp = Path(d)
        print(f"building {args.events} webhook bodies ...", flush=True)
        bodies = make_bodies(args.events, tmp)
        (tmp / "hmac").write_text(KEY + "\n")
        (tmp / "hmac").chmod(0o600)
        rates: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        cpu_us: dict[str, list[float]] = {}
        ok = True
        n = args.events - 500
        print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        for rnd in range(args.rounds):
            bare = 0.0
            for name, argv, cwd, env in receivers(args, tmp, rnd):
                wall, cpu, statuses = run_receiver(name, argv, cwd, env, tmp, bodies, args.connections)
                rate = n / wall
                bare = rate if name == "baseline" else bare
                rates.setdefault(name, []).append(rate)
                ratios.setdefault(name, []).append(rate / bare)
                cpu_us.setdefault(name, []).append(cpu / n * 1e6)
                print(
                    f"round {rnd + 1} {name:9s}: {n} events in {wall:.2f} s = {rate:,.0f} events/s  "
                    f"statuses {statuses}  (load {os.getloadavg()[0]:.1f}); server CPU {cpu / n * 1e6:.0f} us/event"
                    + ("" if name == "baseline" else f"; {rate / bare:.2f} x the bare endpoint"),
                    flush=True,
                )
                if name == "baseline":
                    continue
                for line in (tmp / f"{name}.log").read_text(errors="replace").splitlines():
                    if " batches (" in line:
                        print("           server:", line.split(": ", 1)[-1])
                con = sqlite3.connect(tmp / f"state-{name}-{rnd}" / "werne.db")
                stored = con.execute("select count(*) from mdm_commands").fetchone()[0]
                events = con.execute("select count(*) from mdm_webhook_events").fetchone()[0]
                con.close()
                ok = ok and stored == args.events == events
                print(f"           stored: {stored} command results, {events} event rows (expected {args.events} each)")
        print()
        for name in rates:
            if name == "baseline":
                continue
            r, q, c = rates[name], ratios[name], cpu_us[name]
            print(
                f"{name}: {sum(r) / len(r):,.0f} results/s (rounds: {', '.join(f'{x:,.0f}' for x in r)}); "
                f"ratio to the bare Starlette endpoint of the same round: {', '.join(f'{x:.2f}' for x in q)} "
                f"(target >= 0.5); server CPU per event {sum(c) / len(c):.0f} us = "
                f"{sum(c) / sum(cpu_us['baseline']):.2f} x the bare endpoint's"
            )
        print("load average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
