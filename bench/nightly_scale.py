"""Benchmark: the nightly run's cost as the fleet grows (593, 5,000, 20,000 devices), in one process
and in shards with 1 and 2 workers (issue 26 part 4), side by side in one run.

The fleet is 70 laptops in 593 devices (the city's mix), the rest iPads. The iPads' MDM phase is what
the nightly iPad collection leaves behind: each iPad's sweep outcome with its stored answers, taken
round-robin from tests/compliance/data/nightly_fleet.json (12 simulated iPads of the lab: answered,
offline, faulty). The laptops are that recording's 6 lab laptops' facts-playbook results, repeated
(tools/nightly_golden.py rebinds `compliance.collect_laptops.run_facts_playbook` the same way, here in
the leader and in every worker process): evidence writes and reads, VPN evidence, evaluation,
waivers, storing, chaining and the report are the real code on a real PostgreSQL. What is NOT
measured here: SSH and Ansible on the laptops and the pushes and answers of the MDM sweep; their
cost per device comes from bench/nightly.py (bench/RESULTS.md) and is extrapolated, said so in
the printed table.

Each configuration runs on a fresh database of one throwaway PostgreSQL cluster (the test suite's,
tests/fixtures/postgres.py; needs root); one size after the other, and within a size the single
process, then 1 worker, then 2 workers, one after the other (the machine is shared: the load
averages are printed before and after). Printed per run: wall time, CPU of the leader and the
workers (from the workers' registration on), the PostgreSQL server's CPU from /proc, database size
per device, the leader's breakdown (compliance.timings, the workers' steps summed as `shard.*`),
and the ratios against the single-process run.

    .venv/bin/python bench/nightly_scale.py [--sizes 593,5000,20000] [--workers 1,2] [--shards 4]
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
from itertools import cycle
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FLEET = REPO / "tests" / "compliance" / "data" / "nightly_fleet.json"
LAPTOP_SHARE = 70 / 593
MARK = "SCALE-RESULT "


def proc_cpu_s(pid: int) -> float:
    """utime + stime (and reaped children's) of one process, from /proc."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s(socket_dir: Path) -> float:
    """CPU of the cluster's postmaster and its backends (all processes of the postgres user whose
    parent chain starts at the postmaster of this socket dir's cluster)."""
    pid_file = next(Path(socket_dir).glob("data/postmaster.pid"), None)
    if pid_file is None:
        return 0.0
    root = int(pid_file.read_text().split()[0])
    total = proc_cpu_s(root)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == root:
                total += proc_cpu_s(int(p.name))
    return total


# --------------------------------------------------------------------------- the fleet -----------


def make_site(work: Path, url: str, devices: int, shards: int) -> Path:
    """An inventory of `devices` devices (laptops at the city's share, the rest iPads over the
    example city's schools and groups) and a config; the recorded playbook and sweep beside it."""
    import yaml

    fleet = json.loads(FLEET.read_text(encoding="utf-8"))
    laptops = max(1, round(devices * LAPTOP_SHARE))
    ipads = devices - laptops
    inv = work / "inventory"
    shutil.copytree(REPO / "inventories" / "example-city", inv)
    hosts = fleet["hosts_yml"]
    recorded = sorted(hosts["all"]["children"]["laptops"]["hosts"].items())
    names = [f"nb{i:05d}" for i in range(laptops)]
    lap_hosts = {}
    for i, (name, (_, rec)) in enumerate(zip(names, cycle(recorded), strict=False)):
        # Unique addresses, as the inventory demands: 10.200.x.y on the LAN, 10.77.x.y in the VPN.
        x, y = i // 250, i % 250 + 2
        lap_hosts[name] = {**rec, "asset_tag": f"NB-{i:05d}", "ansible_host": f"10.200.{100 + x}.{y}",
                           "vpn_address": f"10.77.{x}.{y}"}
    hosts["all"]["children"]["laptops"]["hosts"] = lap_hosts
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts), encoding="utf-8")
    header, *rows = (inv / "ipads.csv").read_text(encoding="utf-8").splitlines()
    shapes = [r.split(";")[1:] for r in rows if r.strip()]
    serials = [f"SX{i:08d}" for i in range(ipads)]
    lines = [header] + [";".join([s, *shape[:3], f"{shape[2]}-{s}", ""])
                        for s, shape in zip(serials, cycle(shapes), strict=False)]
    (inv / "ipads.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    play = {n: fleet["playbook"][rec_name] for n, (rec_name, _) in zip(names, cycle(recorded), strict=False)}
    play.update({g: v for g, v in fleet["playbook"].items() if g not in dict(recorded)})
    sweep = [{**rec, "serial": s} for s, rec in zip(serials, cycle(fleet["ipads"]), strict=False)]
    (work / "recorded.json").write_text(json.dumps({"playbook": play, "ipads": sweep, "now": fleet["now"]}),
                                        encoding="utf-8")
    cfg = work / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inv}"\nstate_dir = "{work / "state"}"\ndatabase_url = "{url}"\n'
                   '[compliance]\nluks_missing = "not_applicable"\napt_lists_missing = "not_applicable"\n'
                   f'shards = {shards}\nworker_heartbeat_s = 5\nshard_timeout_s = 7200\n', encoding="utf-8")
    return cfg


def rebind_playbook(recorded: dict[str, Any]) -> None:
    """The recorded facts playbook instead of Ansible over SSH (in this process)."""
    import compliance.collect_laptops as collect_laptops

    def playbook(_config: Any, inventory: Any, hosts: list[str], *_a: Any, **_k: Any) -> dict[str, Any]:
        return {h: tuple(recorded["playbook"][h]) for h in [*hosts, *inventory.gateways]}

    collect_laptops.run_facts_playbook = playbook  # type: ignore[assignment]


# --------------------------------------------------------------------------- child modes ---------


def leader(cfg: Path) -> None:
    from datetime import datetime

    from compliance.collect_ipads import SweptIPad
    from compliance.run import run_compliance
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from core.timing import children_cpu_s, process_cpu_s

    recorded = json.loads((cfg.parent / "recorded.json").read_text(encoding="utf-8"))
    rebind_playbook(recorded)
    config = load_config(cfg)
    db = Database(config.database_url)
    swept = [SweptIPad(i["serial"], i["status"], dict(i["answers"])) for i in recorded["ipads"]]
    c0, w0 = process_cpu_s() + children_cpu_s(), time.perf_counter()
    s = run_compliance(config, db, load_inventory(config.inventory_dir), ("laptops", "ipads"),
                       sweep=lambda _d: swept, now=datetime.fromisoformat(recorded["now"]))
    wall, cpu = time.perf_counter() - w0, process_cpu_s() + children_cpu_s() - c0
    with db.engine.connect() as conn:
        from sqlalchemy import text

        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        tables = dict(conn.execute(text(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables")).all())
    db.dispose()
    print(MARK + json.dumps({"wall_s": wall, "cpu_s": cpu, "devices": s.devices, "counts": s.counts,
                             "db_bytes": size, "tables": tables, "timings": s.timings}), flush=True)


def worker(cfg: Path) -> None:
    from compliance.shards import run_worker
    from core.config import load_config
    from core.db import Database

    rebind_playbook(json.loads((cfg.parent / "recorded.json").read_text(encoding="utf-8")))
    config = load_config(cfg)
    run_worker(config, Database(config.database_url), wait=True)


# --------------------------------------------------------------------------- one run -------------


def wait_registered(url: str, workers: int, procs: list[Any]) -> None:
    """Until every worker process has registered with the queue (procrastinate_workers)."""
    import psycopg

    from compliance.shards import conninfo

    end = time.monotonic() + 600
    while workers:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker process ended before the run")
        try:
            with psycopg.connect(conninfo(url)) as conn:
                row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
            if row is not None and row[0] >= workers:
                return
        except psycopg.Error:
            pass  # the queue's tables are created by the first worker
        if time.monotonic() > end:
            raise SystemExit("the workers did not register within 600 s")
        time.sleep(0.5)


def one_run(cluster: Any, base: Path, devices: int, workers: int, shards: int) -> dict[str, Any]:
    """The nightly run for `devices` devices: one process (workers 0) or `shards` shards on `workers`
    worker processes; fresh database."""
    work = Path(tempfile.mkdtemp(prefix=f"scale-{devices}-{workers}-", dir=base))
    url = cluster.create_database("scale")
    cfg = make_site(work, url, devices, shards if workers else 1)
    from core.db import Database

    Database(url).dispose()  # migrated once, before the leader and the workers connect
    py = str(REPO / ".venv" / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([py, __file__, "--worker", str(cfg)], env=env, stdout=subprocess.DEVNULL,
                              stderr=(work / f"worker{i}.log").open("wb")) for i in range(workers)]
    wait_registered(url, workers, procs)
    # The workers' CPU from here on: their start (imports, connecting) is not the run's.
    w0 = {p.pid: proc_cpu_s(p.pid) for p in procs}
    pg0 = postgres_cpu_s(cluster.socket_dir)
    try:
        out = subprocess.run([py, __file__, "--leader", str(cfg)], env=env, capture_output=True, text=True,
                             timeout=4 * 3600, check=False)
        worker_cpu = sum(proc_cpu_s(p.pid) - w0[p.pid] for p in procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)
    pg_cpu = postgres_cpu_s(cluster.socket_dir) - pg0
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise SystemExit(f"leader failed ({out.returncode}): {out.stderr[:4000]}\n...\n{out.stderr[-1500:]}")
    r: dict[str, Any] = json.loads(line[len(MARK):])
    r.update(workers=workers, worker_cpu_s=worker_cpu, postgres_cpu_s=pg_cpu, size=devices)
    shutil.rmtree(work, ignore_errors=True)
    return r


def steps_line(r: dict[str, Any]) -> str:
    top = sorted(r["timings"]["steps"], key=lambda s: -(s["wall_s"] or 0))[:6]
    return ", ".join(f"{s['name']} {s['wall_s']:.1f}s/{(s['cpu_s'] or 0):.1f}cpu" for s in top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="593,5000,20000")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--leader", type=Path)
    ap.add_argument("--worker", type=Path)
    args = ap.parse_args()
    if args.leader:
        leader(args.leader)
        return 0
    if args.worker:
        worker(args.worker)
        return 0
    import tests.fixtures.postgres as pgfix

    cluster_gen = pgfix.postgres_cluster.__wrapped__()  # type: ignore[attr-defined]
    cluster = next(cluster_gen)
    base = Path(tempfile.mkdtemp(prefix="werne-scale-"))
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}, cores {os.cpu_count()}", flush=True)
    rows = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            runs = [one_run(cluster, base, size, 0, args.shards)]
            for w in [int(x) for x in args.workers.split(",")]:
                runs.append(one_run(cluster, base, size, w, args.shards))
            single = runs[0]
            for r in runs:
                label = "1 process" if r["workers"] == 0 else f"{args.shards} shards, {r['workers']} worker(s)"
                cpu = r["cpu_s"] + r["worker_cpu_s"]
                row = (f"{size:>6} | {label:<22} | wall {r['wall_s']:8.1f} s ({r['wall_s'] / single['wall_s']:.2f}x) | "
                       f"CPU werne {cpu:8.1f} s ({cpu / (single['cpu_s'] + single['worker_cpu_s']):.2f}x), "
                       f"PostgreSQL {r['postgres_cpu_s']:6.1f} s | DB {r['db_bytes'] / size / 1024:6.1f} KiB/device | "
                       f"{r['devices']} devices")
                print(row, flush=True)
                print(f"         where: {steps_line(r)}", flush=True)
                rows.append(row)
                tables = {k: v for k, v in r["tables"].items() if v > 1 << 20}
                print(f"         tables > 1 MiB: {tables}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        try:
            next(cluster_gen)
        except StopIteration:
            pass
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
