"""Benchmark: the nightly run's iPad half with one NanoMDM and with 2 replicas behind nginx (issue 26
part 4, the replicas dimension), side by side in one run, for each fleet size asked.

For each size and each layout a fresh lab MDM (lab.mdm.up(..., storage="pgsql", replicas=N,
bulk_identities=True): NanoMDM on PostgreSQL, 1 process, or 2 behind the production nginx site,
which then also fronts their API; KMFDDM, the webhook receiver, the iPad simulator) with N simulated
iPads in 12 schools, a fresh NanoMDM database and a fresh werne database in one throwaway PostgreSQL
cluster (tests/fixtures/postgres.py, restarted with --pg-max-connections, default 500; needs root).
Why 500: one NanoMDM opens a PostgreSQL connection per request in flight, and the simulated iPads
all enrol within a second, which no real fleet does; with Debian's 100, some of 593 iPads'
TokenUpdate webhooks were lost to "too many clients" in the 1-NanoMDM lab (werne never saw them
enrolled). The 2 replicas get the production default of mdm.replica_max_conns (20 each).

Once werne sees every iPad enrolled (or the count has not moved for 90 s) and the lab has idled
for --idle seconds, `werne compliance run --ipads` (the nightly timer's run, iPads only: the DDM
status read, the MDM query sweep, facts, evaluation, storing) runs once unmeasured (the first
night: every iPad gets its full query set) and then once measured, as its own process. The
simulated iPads poll every (iPads / --poll-rate) seconds, at least 10; real ones do not poll, they
wait for a push, so the idle CPU per second before the run is printed too.

Printed per layout: wall time of the measured run; the controller's CPU (the run's process and
its children, from wait4); the CPU from /proc of each NanoMDM process, the webhook receiver (with
its worker process), nginx, KMFDDM, PostgreSQL (all backends: NanoMDM's and werne's) and the
simulator; database size per iPad (NanoMDM's and werne's after the runs, and their growth over the
empty schema); how many iPads werne saw enrolled, the run's unreachable results and the 5xx
answers nginx gave during it; the ratios 2 replicas / 1; load averages before and after.

    .venv/bin/python bench/mdm_replicas.py [--sizes 593,2000] [--replicas 1,2] [--poll-rate 60]
        [--idle 20] [--deadline 600] [--pg-max-connections 500]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCHOOLS = [f"schule-{i:02d}" for i in range(12)]


# --------------------------------------------------------------------------- measuring -----------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parents() -> dict[int, int]:
    """pid -> parent pid of every process (/proc)."""
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            f = _stat(int(p.name))
            if f is not None:
                out[int(p.name)] = int(f[1])
    return out


def tree_cpu_s(root: int | None, ppid: dict[int, int]) -> float:
    """CPU seconds of a process and its live descendants, each with its reaped children's
    (utime + stime + cutime + cstime from /proc: a child that ended counts in its parent)."""
    if root is None:
        return 0.0
    kids: dict[int, list[int]] = {}
    for pid, parent in ppid.items():
        kids.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        f = _stat(pid)
        if f is not None:
            total += sum(int(x) for x in f[11:15])
        todo += kids.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per process group, CPU seconds used between two snapshots (a group missing from one counts 0)."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def poll_interval(ipads: int, rate: float) -> float:
    """The simulated iPads' poll interval for `rate` idle polls per second over all of them, at
    least 10 s: one simulator process must keep up with the idle polls (CMS-signed, over TLS)."""
    return max(10.0, round(ipads / rate))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


# --------------------------------------------------------------------------- the lab --------------


def write_inventory(root: Path, n: int) -> None:
    """N iPads over 12 schools (as bench/mdm_sweep.py), no Apple TVs; the demo's laptops (not asked)."""
    from lab.certs import generated_serials

    root.mkdir(parents=True)
    shutil.copy(REPO / "inventories" / "demo" / "hosts.yml", root / "hosts.yml")
    (root / "schools.yml").write_text("schools:\n" + "".join(
        f'  - id: {s}\n    name: Schule {s}\n    support_phone: "+49 2389 0"\n' for s in SCHOOLS), encoding="utf-8")
    rows = ["serial;model;school;group;name"]
    for i, serial in enumerate(generated_serials(n, start=30000)):
        rows.append(f"{serial};iPad (10th generation);{SCHOOLS[i % len(SCHOOLS)]};"
                    f"{('pupil', 'pupil', 'teacher', 'shared')[i % 4]};ipad-{i:05d}")
    (root / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def lab_pids(state: Path, replicas: int) -> dict[str, int | None]:
    from lab import kmfddm as lab_kmfddm
    from lab import mdm as lab_mdm
    from lab import processes

    d = state / "mdm"
    pids: dict[str, int | None] = {f"nanomdm{i}": processes.running(lab_mdm.replica_name(i), d)
                                   for i in range(1, replicas + 1)}
    for name in ("webhook", "nginx", "simulator"):
        pids[name] = processes.running(name, d)
    ddm = lab_kmfddm.status(state)
    pids["kmfddm"] = ddm.pid if ddm else None
    return pids


def snapshot(pids: dict[str, int | None], postmaster: int) -> dict[str, float]:
    ppid = parents()
    out = {name: tree_cpu_s(pid, ppid) for name, pid in pids.items()}
    out["postgres"] = tree_cpu_s(postmaster, ppid)
    return out


def server_errors(access_log: Path, offset: int) -> int:
    """5xx answers nginx gave (to the iPads and on the API front) after `offset` of its access log."""
    with access_log.open("rb") as f:
        f.seek(offset)
        return sum(1 for line in f if line.split(b'" ', 1)[-1][:1] == b"5")


def db_stat(dsn_or_url: str, query: str) -> int:
    import psycopg

    from compliance.shards import conninfo

    with psycopg.connect(conninfo(dsn_or_url) if "://" in dsn_or_url else dsn_or_url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def db_bytes(dsn_or_url: str) -> int:
    return db_stat(dsn_or_url, "SELECT pg_database_size(current_database())")


def db_sessions(dsn_or_url: str) -> int:
    """Connections opened to this database so far (each one a new PostgreSQL backend process)."""
    return db_stat(dsn_or_url, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")


def wait_enrolled(cfg: Any, n: int, timeout: float, stable_s: float = 90.0) -> tuple[int, float]:
    """Until werne's registry (fed by the webhook) shows all N iPads enrolled, or the count has not
    changed for `stable_s`; (enrolled, seconds)."""
    from core.db import Database
    from core.inventory import load_inventory
    from ipad.dispatch import IPadContext

    db = Database(cfg.database_url)
    ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir), actor="bench")
    t0 = changed = time.monotonic()
    last = -1
    try:
        while True:
            got = sum(1 for d in ctx.registry.devices_by_serial().values() if d.state == "enrolled")
            now = time.monotonic()
            if got != last:
                last, changed = got, now
            if got >= n or now - t0 > timeout or now - changed > stable_s:
                return got, now - t0
            time.sleep(2)
    finally:
        db.dispose()


def nightly_ipads(cfg_file: Path, state: Path, log: Path) -> tuple[float, float, dict[str, Any]]:
    """`werne compliance run --ipads --json --timings` as its own process: (wall, CPU of it and its
    children from wait4, its JSON summary)."""
    argv = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "--config", str(cfg_file),
            "--state-dir", str(state), "compliance", "run", "--ipads", "--json", "--timings"]
    out = log.with_suffix(".json")
    with out.open("wb") as stdout, log.open("ab") as stderr:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=stdout,
                             stderr=stderr)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    # 1 = findings (the lab's iPads fail a rule or two); anything else is a failed run.
    if p.returncode not in (0, 1):
        raise SystemExit(f"werne compliance run --ipads: exit {p.returncode}; see {log}")
    return wall, ru.ru_utime + ru.ru_stime, json.loads(out.read_text(encoding="utf-8"))


def one_layout(cluster: Any, postmaster: Callable[[], int], base: Path, n: int, replicas: int,
               args: argparse.Namespace) -> dict[str, Any]:
    from core.config import load_config
    from core.db import Database
    from lab import mdm as lab_mdm

    work = Path(tempfile.mkdtemp(prefix=f"replicas-{n}-{replicas}-", dir=base))
    state = work / "state"
    write_inventory(work / "inventory", n)
    url = cluster.create_database("werne")
    dsn = cluster.create_nanomdm_database("nanomdm")
    cfg_file = work / "werne.toml"
    cfg_file.write_text(
        f'[site]\ninventory = "{work / "inventory"}"\nstate_dir = "{state}"\ndatabase_url = "{url}"\n'
        f"[mdm]\nquery_deadline_s = {args.deadline}\nblast_radius = {n + 100}\n"
        f"[compliance]\nquery_deadline_s = {args.deadline}\n", encoding="utf-8")
    cfg = load_config(cfg_file, state_dir=state)
    Database(url).dispose()  # migrated once, before the webhook receiver and the run connect
    r: dict[str, Any] = {"size": n, "replicas": replicas, "load_before": loadavg(),
                         "poll_interval_s": poll_interval(n, args.poll_rate)}
    empty = {"nanomdm": db_bytes(dsn), "werne": db_bytes(url)}
    try:
        t0 = time.monotonic()
        lab_mdm.up(state, n, cfg, poll_interval=r["poll_interval_s"], storage="pgsql", storage_dsn=dsn, faults=False,
                   replicas=replicas, bulk_identities=True)
        r["lab_up_s"] = time.monotonic() - t0
        r["enrolled"], r["enrol_s"] = wait_enrolled(cfg, n, args.enrol_timeout)
        print(f"  {n} iPads, {replicas} NanoMDM: lab up {r['lab_up_s']:.0f} s, {r['enrolled']} enrolled after "
              f"{r['enrol_s']:.0f} s more", flush=True)
        pids = lab_pids(state, replicas)
        # The background: the simulated iPads' idle polls (and nothing else) for --idle seconds.
        s0, t0 = snapshot(pids, postmaster()), time.monotonic()
        time.sleep(args.idle)
        idle = cpu_delta(s0, snapshot(pids, postmaster()))
        r["idle_per_s"] = {k: v / (time.monotonic() - t0) for k, v in idle.items()}
        log = work / "nightly.log"
        warm = nightly_ipads(cfg_file, state, log)
        print(f"  warm-up run: {warm[0]:.1f} s, {warm[2]['devices']} devices", flush=True)
        access = state / "mdm" / "logs" / "nginx-access.log"
        s0, seen, sessions = snapshot(pids, postmaster()), access.stat().st_size, db_sessions(dsn)
        r["wall_s"], r["controller_cpu_s"], summary = nightly_ipads(cfg_file, state, log)
        r["cpu"] = cpu_delta(s0, snapshot(pids, postmaster()))
        # Less our own connection just now, to read the count.
        r["nanomdm_sessions"] = db_sessions(dsn) - sessions - 1
        r["answers_5xx"] = server_errors(access, seen)
        r["devices"], r["counts"] = summary["devices"], summary["counts"]
        r["steps"] = sorted(summary.get("timings", {}).get("steps", []), key=lambda s: -(s["wall_s"] or 0))
        r["db"] = {"nanomdm": db_bytes(dsn), "werne": db_bytes(url)}
        r["db_empty"] = empty
    finally:
        lab_mdm.down(state)
        r["load_after"] = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return r


# --------------------------------------------------------------------------- the table -----------


def row(r: dict[str, Any], one: dict[str, Any] | None) -> str:
    """One markdown table row; with `one` (the 1-NanoMDM run of the same size) the ratios."""
    cpu = r["cpu"]
    nano = {k: v for k, v in cpu.items() if k.startswith("nanomdm")}
    nano_total = sum(nano.values())
    server = nano_total + cpu["webhook"] + cpu["nginx"] + cpu["kmfddm"] + cpu["postgres"]
    cells = [
        f"{r['size']:,}", f"{r['replicas']}", f"{r['wall_s']:.1f} s", f"{r['controller_cpu_s']:.1f} s",
        " + ".join(f"{v:.1f}" for v in nano.values()) + f" = {nano_total:.1f} s",
        f"{cpu['webhook']:.1f} s", f"{cpu['nginx']:.1f} s", f"{cpu['postgres']:.1f} s", f"{cpu['simulator']:.1f} s",
        *(f"{r['db'][k] / r['size'] / 1024:.1f} ({(r['db'][k] - r['db_empty'][k]) / r['size'] / 1024:.1f}) KiB"
          for k in ("nanomdm", "werne")),
        f"{r['enrolled']} / {r['counts'].get('unreachable', 0)} / {r['answers_5xx']}",
    ]
    if one is not None:
        o_nano = sum(v for k, v in one["cpu"].items() if k.startswith("nanomdm"))
        o_server = o_nano + sum(one["cpu"][k] for k in ("webhook", "nginx", "kmfddm", "postgres"))
        cells.append(f"wall {ratio(r['wall_s'], one['wall_s'])}, controller "
                     f"{ratio(r['controller_cpu_s'], one['controller_cpu_s'])}, NanoMDM {ratio(nano_total, o_nano)}, "
                     f"server {ratio(server, o_server)}")
    else:
        cells.append("")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| iPads | NanoMDM | wall | controller CPU | NanoMDM CPU (per process) | webhook | nginx | PostgreSQL | "
          "simulator | NanoMDM DB / iPad (growth) | werne DB / iPad (growth) | enrolled / unreachable / 5xx "
          "| 2 replicas / 1 |\n"
          "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")


def detail(r: dict[str, Any]) -> str:
    idle = ", ".join(f"{k} {v:.2f}" for k, v in r["idle_per_s"].items())
    steps = ", ".join(f"{s['name']} {s['wall_s']:.1f}s/{(s['cpu_s'] or 0):.1f}cpu" for s in r["steps"][:8])
    empty = r["db_empty"]
    return (f"  {r['size']} iPads, {r['replicas']} NanoMDM, poll interval {r['poll_interval_s']:g} s: "
            f"load {r['load_before']} -> {r['load_after']}; lab up "
            f"{r['lab_up_s']:.0f} s, enrolled {r['enrolled']} in {r['enrol_s']:.0f} s more; KMFDDM "
            f"{r['cpu']['kmfddm']:.1f} s; connections opened to NanoMDM's database in the run "
            f"{r['nanomdm_sessions']}\n    idle CPU per s: {idle}\n    where: {steps}\n"
            f"    empty databases: NanoMDM {empty['nanomdm'] / 2**20:.1f} MiB, werne {empty['werne'] / 2**20:.1f} MiB; "
            f"after: {r['db']['nanomdm'] / 2**20:.1f}, {r['db']['werne'] / 2**20:.1f} MiB")


# --------------------------------------------------------------------------- main ----------------


def start_cluster(max_connections: int) -> tuple[Any, Any]:
    """The test suite's throwaway cluster, restarted with `max_connections`; (cluster, its generator)."""
    import tests.fixtures.postgres as pgfix
    from lab import processes

    gen = pgfix.postgres_cluster.__wrapped__()  # type: ignore[attr-defined]
    cluster = next(gen)
    with (cluster.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"max_connections = {max_connections}\n")
    processes.stop("postgres", cluster.base, timeout=30, signal_=signal.SIGINT)
    processes.up(pgfix.postgres_service(cluster))
    return cluster, gen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="593,2000")
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--poll-rate", type=float, default=60.0,
                    help="idle polls per second of all iPads: the poll interval is iPads / rate, at least 10 s")
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--deadline", type=float, default=600.0)
    ap.add_argument("--enrol-timeout", type=float, default=900.0)
    ap.add_argument("--pg-max-connections", type=int, default=500)
    args = ap.parse_args()
    from core.config import MDMConfig
    from lab import mdm as lab_mdm

    # The lab's per-replica limit is sized for the test cluster's 40 connections; this one has more,
    # so the production default (mdm.replica_max_conns) applies.
    lab_mdm.REPLICA_MAX_CONNS = MDMConfig().replica_max_conns
    cluster, gen = start_cluster(args.pg_max_connections)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the labs and the cluster are stopped in `finally`

    def postmaster() -> int:
        return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])

    base = Path(tempfile.mkdtemp(prefix="werne-replicas-"))
    print(f"load before: {loadavg()}, cores {os.cpu_count()}", flush=True)
    results: list[dict[str, Any]] = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            for replicas in [int(x) for x in args.replicas.split(",")]:
                results.append(one_layout(cluster, postmaster, base, size, replicas, args))
                print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        try:
            next(gen)
        except StopIteration:
            pass
    print(HEADER)
    for r in results:
        one = next((x for x in results if x["size"] == r["size"] and x["replicas"] == 1 and x is not r), None)
        print(row(r, one))
    for r in results:
        print(detail(r))
    print(f"load after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
