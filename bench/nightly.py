"""Benchmark: the nightly run end to end, 70 lab laptops + 523 simulated iPads, with the breakdown of
where its time goes, and (with --base) today's code and a baseline checkout side by side in one run.

Boots a lab (systemd-nspawn laptops + the VPN gateway; needs root), pins the host keys, applies the
gateway and enrols every laptop on the office network, and starts the lab MDM (real NanoMDM behind
nginx, KMFDDM, the webhook receiver, the iPad simulator) with the example city's iPads. Then times
`compliance.run.run_compliance(..., ("laptops", "ipads"))`, each run in a child process of the side
it measures (`--child`: that checkout's Python and code), with a report directory set, so the run
also writes its HTML report as the nightly timer's does:

  (a) previous setup: every laptop at its office address;
  (b) home office: every laptop sent home behind its own NAT router (lab home-office mode) and
      reached at its tunnel address (provisioning.home.reach.inventory_in_use);
  (c) home office with --off of the laptops switched off: their stored evidence from (b) is used.

Side by side (--base DIR, a checkout of the baseline commit with its own `make setup`): each side
has its own state database (the baseline's a copy taken after enrolment, brought down to the
baseline's schema revision) and its own webhook receiver, run from its own code and swapped in
before each of its runs; the lab (laptops, NanoMDM, KMFDDM, simulated iPads) is shared. Each
scenario runs both sides, alternating which goes first; an unmeasured warm-up of each side comes
first (the lab's NotNow streak, cold caches), and every timed run waits --settle seconds before.

Printed per run: wall time; controller CPU (the child: all its threads and reaped children,
ansible-playbook and ssh); the CPU used inside the laptop containers (their cgroups: sshd, sudo,
Python, the facts script); the lab MDM's CPU during the run from /proc (webhook receiver with its
worker process, NanoMDM, KMFDDM, the simulator, nginx, the web page); how busy the whole machine
was (/proc/stat: other agents' work included) and the load averages before and after; when each
fleet's collection ended; the breakdown (compliance.timings for this code; for a baseline without
it, the same steps timed by wrapping its functions from outside, see `_wrap_baseline`); and
whether both sides gave the same rule results (status and waiver per device and rule, evidence
with digits masked: ages and times differ between two runs).

    .venv/bin/python bench/nightly.py [--laptops 70] [--ipads 523] [--base /work/wt-speed-base]
        [--scenarios a,b,c] [--rounds 1] [--deadline 60] [--off 0.6] [--settle 30] [--warm-ssh]

Every timed run starts with no SSH connection open to the laptops (`close_ssh_masters`), as the
nightly run does; --warm-ssh lets a run reuse those the run before left open for 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 15.0
CHILD_MARK = "NIGHTLY-RESULT "


# --------------------------------------------------------------------------- measuring -----------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live child processes (/proc)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / tck


def laptops_cpu_s(state: Path) -> float:
    """CPU seconds used inside the lab's laptop and gateway containers so far (their cgroups):
    sshd, sudo, Python and the facts script on the laptops' side."""
    hosts = json.loads((state / "lab" / "lab.json").read_text())["hosts"].values()
    total = 0
    for h in hosts:
        for root in (Path("/sys/fs/cgroup/unified/werne-lab"), Path("/sys/fs/cgroup/werne-lab")):
            stat = root / h["machine"] / "cpu.stat"
            if stat.is_file():
                total += int(next(ln for ln in stat.read_text().splitlines() if ln.startswith("usage_usec")).split()[1])
                break
    return total / 1e6


def lab_pids(state: Path) -> dict[str, int]:
    from lab import kmfddm as lab_kmfddm
    from lab import processes

    d = state / "mdm"
    out = {n: processes.running(n, d) for n in ("webhook", "nanomdm", "simulator", "nginx", "web")}
    k = lab_kmfddm.status(state)
    out["kmfddm"] = k.pid if k is not None else None
    return {n: p for n, p in out.items() if p}


# --------------------------------------------------------------------------- the child -----------


def _wrap_baseline(times: dict[str, list[float]]) -> None:
    """Time a baseline that has no compliance.timings from outside: wrap the functions each step
    calls (by module attribute, as its callers look them up) and add their wall and thread CPU to
    `times` (name -> [wall, CPU, count, start, end]). The playbook also gets its reaped children."""
    import resource
    import threading

    t0 = time.perf_counter()
    lock = threading.Lock()

    def children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def wrap(module: Any, attr: str, name: str, with_children: bool = False) -> None:
        fn = getattr(module, attr, None)
        if fn is None:
            return

        def timed(*a: Any, **k: Any) -> Any:
            w, c, ch = time.perf_counter(), time.thread_time(), children() if with_children else 0.0
            try:
                return fn(*a, **k)
            finally:
                w1 = time.perf_counter()
                cpu = time.thread_time() - c + ((children() - ch) if with_children else 0.0)
                with lock:
                    e = times.setdefault(name, [0.0, 0.0, 0, w - t0, w1 - t0])
                    e[0] += w1 - w
                    e[1] += cpu
                    e[2] += 1
                    e[3], e[4] = min(e[3], w - t0), max(e[4], w1 - t0)

        setattr(module, attr, timed)

    import importlib

    def module(*names: str) -> Any:
        """The first of `names` the baseline has (its layout may be older: ipad/ was flat before
        issue 19); None when it has none of them, and that step is not timed."""
        for n in names:
            try:
                return importlib.import_module(n)
            except ImportError:
                continue
        return None

    def wrap_in(names: tuple[str, ...], attr: str, name: str, with_children: bool = False) -> None:
        m = module(*names)
        if m is not None:
            wrap(m, attr, name, with_children)

    import compliance.collect_laptops as cl
    import compliance.history as hist
    import compliance.run as run
    from compliance.waivers import WaiverSet

    wrap(run, "collect_laptops", "laptops")
    wrap(run, "collect_ipads", "ipads")
    wrap(cl, "switched_off", "laptops.presence")
    wrap(cl, "run_facts_playbook", "laptops.playbook", with_children=True)
    wrap(cl, "vpn_evidence", "laptops.vpn_evidence")
    wrap(cl, "store_evidence", "laptops.evidence_write")
    wrap(cl, "freshest", "laptops.evidence_read")
    wrap_in(("ipad.ddm.status", "ipad.ddm_status"), "read_ddm_status", "ddm.status")
    registry = module("ipad.store.registry", "ipad.store")
    if registry is not None:
        wrap(registry.Registry, "devices_by_serial", "mdm.registry")
    wrap_in(("ipad.dispatch",), "_enqueue", "mdm.enqueue")
    wrap_in(("ipad.dispatch",), "_wait_for_answers", "mdm.wait")
    # Before ipad.dispatch (v0.1.0): enqueue, pushes and the wait in one function.
    wrap_in(("ipad.ops",), "_send_and_wait", "mdm.send_and_wait")
    wrap(run, "ipad_fleet_facts", "fleet_facts")
    wrap_in(("compliance.collect_fleet",), "ipad_fleet_facts", "fleet_facts")
    wrap(run, "evaluate", "evaluation")
    wrap(hist, "complete_run", "store")
    wrap(run, "write_report", "report")
    wrap_in(("compliance.reports",), "write_report", "report")
    wrap(WaiverSet, "apply", "waivers")


def child(args: argparse.Namespace) -> int:
    """One nightly run of the checkout `args.tree`, printed as one JSON line."""
    import resource

    sys.path.insert(0, str(Path(args.tree).resolve()))
    from compliance.run import run_compliance
    from core.config import apply_endpoints, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from provisioning.home.reach import inventory_in_use

    config = load_config(Path(args.config))
    apply_endpoints(config)
    db = Database(config.database_url)
    inv = inventory_in_use(config, db, load_inventory(config.inventory_dir))
    try:
        import compliance.timings  # noqa: F401 - this side records its own breakdown
        outside: dict[str, list[float]] | None = None
    except ImportError:
        outside = {}
        _wrap_baseline(outside)

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    done: dict[str, float] = {}
    t, c = time.perf_counter(), cpu()

    def progress(p: Any) -> None:
        if p.fleet == "laptops" and p.done >= p.total:
            done.setdefault("laptops", time.perf_counter() - t)
        elif p.fleet == "ipads" and p.message == "sweep done":
            done.setdefault("ipads", time.perf_counter() - t)

    s = run_compliance(config, db, inv, ("laptops", "ipads"), progress=progress)
    wall, used = time.perf_counter() - t, cpu() - c
    from compliance.history import load_run

    stored = load_run(db, s.run_id)
    results = sorted(
        [d, r, x.status, x.waiver or "", re.sub(r"\d+", "#", x.evidence or "")]
        for (d, r), x in stored.results.items()
    )
    timings = getattr(s, "timings", None)
    if timings is None and outside is not None:
        timings = {"wall_s": wall, "cpu_s": used, "cpu_of": "process+children", "outside": True,
                   "steps": [{"name": n, "wall_s": v[0], "cpu_s": v[1], "count": v[2], "start_s": v[3],
                              "end_s": v[4], "cpu_of": "thread+children" if n == "laptops.playbook" else "thread",
                              "detail": {}} for n, v in outside.items()]}
    lc = (s.fleets.get("laptops") or {}).get("counts", {})
    out = {"run": s.run_id, "wall": wall, "cpu": used, "devices": s.devices, "counts": dict(s.counts),
           "laptops_unreachable": lc.get("unreachable", 0), "laptops_done": done.get("laptops"),
           "ipads_done": done.get("ipads"), "timings": timings, "results": results}
    db.dispose()
    print(CHILD_MARK + json.dumps(out))
    return 0


# --------------------------------------------------------------------------- the sides -----------


@dataclass
class Side:
    """One checkout measured: its tree, Python, config file and state database."""

    name: str
    tree: Path
    config: Path
    db_file: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def python(self) -> Path:
        return self.tree / ".venv" / "bin" / "python"


def endpoints_for_older_code(state_dir: Path) -> None:
    """Drop from the lab's endpoints file the settings that only say this code's default (e.g.
    mdm.replicas = 1): a baseline older than them refuses the file as having unknown settings, and
    without them both sides read the same values."""
    import tomllib

    from core.config import Config, endpoints_file

    path = endpoints_file(state_dir)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults = Config()
    lines = []
    for section, values in data.items():
        model = getattr(defaults, section)
        keep = {k: v for k, v in values.items() if getattr(model, k, object()) != v}
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in keep.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def schema_head(tree: Path) -> str:
    """The newest Alembic revision of a checkout (its migrations' file names start with it)."""
    heads = sorted(p.name.split("_", 1)[0] for p in (tree / "core" / "migrations" / "versions").glob("[0-9]*.py"))
    return heads[-1]


def copy_database(src: Path, dst: Path, revision: str, url_of: Any) -> None:
    """A consistent copy of the state database (SQLite's backup), brought down to `revision`."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from core.db import MIGRATIONS_DIR

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url_of(dst))
    command.downgrade(cfg, revision)


def use_receiver(side: Side, state: Path, url: str) -> None:
    """Run the lab's webhook receiver from this side's code, on this side's database."""
    from lab import processes

    port = url.rsplit(":", 1)[1].split("/", 1)[0]
    d = state / "mdm"
    svc = processes.Service(
        name="webhook", what=f"the webhook receiver ({side.name})", directory=d, env={"PYTHONPATH": str(side.tree)},
        ready_timeout=60,
        argv=(str(side.python), "-c", "import sys; from cli import main; sys.exit(main())", "--config",
              str(side.config), "--state-dir", str(state), "mdm", "serve-webhook", "--listen", f"127.0.0.1:{port}",
              "--hmac-key-file", str(d / "webhook_hmac_key")),
        ready=processes.HTTPReady(f"http://127.0.0.1:{port}/healthz"))
    processes.up(svc)


def close_ssh_masters() -> int:
    """End the SSH master connections Ansible keeps open after a run (ControlPersist=60s in
    provisioning.ansible), so that the next timed run connects to every laptop afresh, as the
    nightly run does once a night. Without this, a run within 60 s of another reuses its
    connections: no key exchange, no authentication, no new sshd (measured: the same run 13.6 s warm,
    19-22 s cold). Returns how many were closed."""
    cp = Path.home() / ".ansible" / "cp"
    closed = 0
    for sock in sorted(cp.iterdir()) if cp.is_dir() else []:
        r = subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "werne-bench"],
                           capture_output=True, timeout=10, check=False)
        closed += r.returncode == 0
    return closed


def run_side(side: Side, label: str, state: Path, settle: float, warm_ssh: bool) -> dict[str, Any]:
    """One timed run of `side`; with `warm_ssh` (--warm-ssh) it may reuse the SSH connections the
    run before left open (how this bench measured before 2026-12-07)."""
    if not warm_ssh:
        print(f"       ({close_ssh_masters()} SSH master connections closed: every run connects afresh)", flush=True)
    time.sleep(settle)
    pids = lab_pids(state)
    env_cpu0 = {n: tree_cpu_s(p) for n, p in pids.items()}
    laptops0 = laptops_cpu_s(state)
    busy0, total0 = machine_jiffies()
    before, t = loadavg(), time.perf_counter()
    proc = subprocess.run([str(side.python), str(Path(__file__).resolve()), "--child", "--tree", str(side.tree),
                           "--config", str(side.config)], capture_output=True, text=True, cwd=side.tree)
    wall = time.perf_counter() - t
    busy1, total1 = machine_jiffies()
    env_cpu = {n: round(tree_cpu_s(p) - env_cpu0[n], 2) for n, p in pids.items()}
    laptops = round(laptops_cpu_s(state) - laptops0, 2)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{side.name} {label}: the run failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(line[len(CHILD_MARK):])
    busy = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
    r.update(side=side.name, label=label, load_before=before, load_after=loadavg(), child_wall=wall,
             lab_cpu=env_cpu, laptops_cpu=laptops, machine_busy_cores=round(busy, 2))
    side.runs.append(r)
    c = r["counts"]
    print(f"{side.name:>4} {label}: run {r['run']}, {r['devices']} devices in {r['wall']:.1f} s wall, {r['cpu']:.1f} s "
          f"controller CPU; laptops at {r['laptops_done'] or 0:.1f} s, iPads at {r['ipads_done'] or 0:.1f} s; "
          f"laptops' CPU {laptops:.1f} s; lab MDM CPU {sum(env_cpu.values()):.1f} s {env_cpu}; "
          f"machine busy {r['machine_busy_cores']} cores; "
          f"load {before} -> {r['load_after']}", flush=True)
    print(f"       results: pass {c.get('pass', 0)}, fail {c.get('fail', 0)}, error {c.get('error', 0)}, "
          f"unreachable {c.get('unreachable', 0)}, waived {c.get('waived', 0)}, not applicable "
          f"{c.get('not_applicable', 0)}; laptops unreachable {r['laptops_unreachable']}", flush=True)
    return r


def print_breakdown(r: dict[str, Any]) -> None:
    t = r.get("timings")
    if not t:
        return
    print(f"  breakdown, {r['side']} {r['label']}" + (" (timed from outside)" if t.get("outside") else ""))
    print(f"    {'step':<52} {'wall s':>7} {'CPU s':>7}  {'CPU of':<16} {'when s':<12} detail")
    for s in t["steps"]:
        when = "" if s.get("start_s") is None else f"{s['start_s']:.2f}-{s['end_s']:.2f}"
        cpu = "-" if s.get("cpu_s") is None else f"{s['cpu_s']:.2f}"
        detail = ", ".join(f"{k} {v}" for k, v in sorted((s.get("detail") or {}).items()))
        if s.get("count", 1) > 1:
            detail = f"x{s['count']}" + (f", {detail}" if detail else "")
        print(f"    {s.get('label') or s['name']:<52} {s['wall_s']:7.2f} {cpu:>7}  {s.get('cpu_of') or '-':<16} "
              f"{when:<12} {detail}")
    lab = r.get("lab_cpu") or {}
    laptops = r.get("laptops_cpu", 0.0)
    print(f"    {'  the laptops and the gateway (their containers)':<52} {'':>7} {laptops:7.2f}  cgroups")
    if "webhook" in lab:
        print(f"    {'  MDM sweep: webhook receiver CPU (its processes)':<52} {'':>7} {lab['webhook']:7.2f}  /proc")
    others = sum(v for k, v in lab.items() if k != "webhook")
    print(f"    {'  the rest of the lab MDM (NanoMDM, KMFDDM, iPads...)':<52} {'':>7} {others:7.2f}  /proc")
    print(f"    {'whole run':<52} {t['wall_s']:7.2f} {t['cpu_s']:7.2f}  {t.get('cpu_of', '')}")


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> str:
    ra, rb = {tuple(x[:2]): x[2:] for x in a["results"]}, {tuple(x[:2]): x[2:] for x in b["results"]}
    if ra == rb:
        return f"identical ({len(ra)} results)"
    keys = sorted(set(ra) | set(rb))
    diff = [k for k in keys if ra.get(k) != rb.get(k)]
    sample = "; ".join(f"{k[0]} {k[1]}: {ra.get(k)} vs {rb.get(k)}" for k in diff[:5])
    return f"DIFFERENT in {len(diff)} of {len(keys)} results: {sample}"


def summary(args: argparse.Namespace, sides: list[Side]) -> None:
    """Every run's figures, base against new per scenario, and each run's breakdown."""
    print()
    print(f"nightly run, {args.laptops} laptops + {args.ipads} iPads (sweep deadline {args.deadline:g} s), "
          f"{os.cpu_count()} cores; target {TARGET_S:g} s")
    print(f"  {'side':<5} {'run':<34} {'wall s':>7} {'CPU s':>6} {'laptops CPU s':>13} {'lab MDM CPU s':>13} "
          f"{'laptops s':>9} {'iPads s':>8} {'busy':>5}  load avg before -> after")
    for side in sides:
        for r in side.runs:
            print(f"  {side.name:<5} {r['label']:<34} {r['wall']:7.1f} {r['cpu']:6.1f} {r['laptops_cpu']:13.1f} "
                  f"{sum(r['lab_cpu'].values()):13.1f} {r['laptops_done'] or 0:9.1f} {r['ipads_done'] or 0:8.1f} "
                  f"{r['machine_busy_cores']:5.2f}  {r['load_before']} -> {r['load_after']}")
    if len(sides) == 2:
        print()
        for label in dict.fromkeys(r["label"] for r in sides[-1].runs):
            a = [r for r in sides[0].runs if r["label"] == label]
            b = [r for r in sides[-1].runs if r["label"] == label]
            wa, wb = sum(r["wall"] for r in a) / len(a), sum(r["wall"] for r in b) / len(b)
            print(f"  {label}: base {wa:.1f} s, new {wb:.1f} s = {wb / wa:.2f} x the baseline's wall time; "
                  f"results: {compare_results(a[-1], b[-1])}")
    print()
    for side in sides:
        for r in side.runs:
            print_breakdown(r)


# --------------------------------------------------------------------------- main ----------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--ipads", type=int, default=523)
    ap.add_argument("--base", type=Path, default=None, help="a checkout of the baseline, with its own .venv")
    ap.add_argument("--scenarios", default="a,b,c", help="which of (a), (b), (c) to run")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side per scenario")
    ap.add_argument("--deadline", type=float, default=60.0, help="compliance.query_deadline_s")
    ap.add_argument("--off", type=float, default=0.6, help="share of laptops switched off for (c)")
    ap.add_argument("--no-faults", action="store_true", help="no faulty iPads (none offline)")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds of rest before each timed run")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    ap.add_argument("--warm-ssh", action="store_true",
                    help="let a run reuse the SSH connections of the run before (a real nightly never can)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=str(REPO), help=argparse.SUPPRESS)
    ap.add_argument("--config", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(REPO))
    from core.config import LabConfig, apply_endpoints, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from ipad.store.registry import Registry
    from lab import mdm as lab_mdm
    from lab.laptops import Lab
    from provisioning.vpn.ops import enrol, gateway_apply

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-nightly-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=os.getpid())
    names = [f"lap{i:02d}" for i in range(1, args.laptops + 1)]
    inv_dir = tmp / "inventory"
    print(f"state: {tmp}; load average at start: {loadavg()}", flush=True)

    def sync_inventory() -> None:
        # The lab's hosts.yml (home_office marks included) with the example city's schools and iPads.
        shutil.copy(lab.inventory_dir / "hosts.yml", inv_dir / "hosts.yml")

    def write_config(path: Path, db_file: Path) -> None:
        path.write_text(
            f'[site]\ninventory = "{inv_dir}"\nstate_dir = "{tmp}"\ndatabase_url = "sqlite:///{db_file}"\n'
            # run_timeout_s: enrolling 70 laptops at once took over the default 600 s at load 40.
            f'[vpn]\nuserspace = true\nrun_timeout_s = 1800\npool_v4 = "{pool}"\ndns = ["{lab.vpn_dns()}"]\n'
            '[ssh]\nconnect_timeout = 5\n'
            f'[compliance]\nquery_deadline_s = {args.deadline}\nluks_missing = "not_applicable"\n'
            f'apt_lists_missing = "not_applicable"\nreport_dir = "{tmp / "reports" / path.stem}"\n'
            '[homeoffice]\nmanage_from = ["10.200.0.0/16"]\n',
            encoding="utf-8",
        )

    try:
        t0 = time.perf_counter()
        lab.up(laptops=args.laptops, gateway=True)
        print(f"lab: {args.laptops} laptops + gateway up in {time.perf_counter() - t0:.1f} s", flush=True)
        lines = []
        for h in lab.status():  # what `werne laptop preflight --accept-new` pins after the admin checked
            kind, key = lab.host_public_key(h.name).split()[:2]
            lines.append(f"{h.address} {kind} {key}")
        (tmp / "known_hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")
        inv_dir.mkdir()
        sync_inventory()
        for f in ("schools.yml", "ipads.csv"):
            shutil.copy(REPO / "inventories" / "example-city" / f, inv_dir / f)
        pool = lab.vpn_pool()
        new = Side("new", REPO, tmp / "new.toml", tmp / "werne.db")
        write_config(new.config, new.db_file)
        config = load_config(new.config)
        db = Database(config.database_url)
        gateway_apply(config, db, load_inventory(config.inventory_dir))
        t0 = time.perf_counter()
        rep = enrol(config, db, load_inventory(config.inventory_dir), names)
        print(f"VPN: enrolled {sum(h.outcome == 'admitted' for h in rep.hosts)} in {time.perf_counter() - t0:.1f} s",
              flush=True)

        t0 = time.perf_counter()
        st = lab_mdm.up(tmp, args.ipads, config, faults=not args.no_faults)
        apply_endpoints(config)  # the lab's NanoMDM, from the endpoints file up() wrote
        print(f"lab MDM: {args.ipads} simulated iPads started in {time.perf_counter() - t0:.1f} s", flush=True)
        # The enrolment endpoint's per-address limit (all simulated iPads come from one address):
        # a burst, then a steady rate; the wait covers it plus 5 minutes.
        from enrolment import ade

        end = time.monotonic() + 300 + max(0, args.ipads - ade.RATE_BURST) / ade.RATE_PER_SECOND
        enrolled = 0
        while time.monotonic() < end:
            enrolled = sum(1 for d in Registry(db).list_devices() if d.state == "enrolled")
            if enrolled >= args.ipads - (0 if args.no_faults else 1):  # the lab keeps one iPad offline
                break
            time.sleep(2)
        print(f"enrolled: {enrolled} iPads after {time.perf_counter() - t0:.1f} s", flush=True)
        db.dispose()
        sides = [new]
        if args.base is not None:
            base = Side("base", args.base.resolve(), tmp / "base.toml", tmp / "werne-base.db")
            endpoints_for_older_code(tmp)
            write_config(base.config, base.db_file)
            copy_database(new.db_file, base.db_file, schema_head(base.tree), lambda p: f"sqlite:///{p}")
            sides = [base, new]
            print(f"baseline: {base.tree} (schema {schema_head(base.tree)}), its own database and receiver",
                  flush=True)

        def both(label: str, flip: bool) -> None:
            order = list(reversed(sides)) if flip else list(sides)
            for _ in range(args.rounds):
                for side in order:
                    use_receiver(side, tmp, st.webhook_url)
                    run_side(side, label, tmp, args.settle, args.warm_ssh)
                order.reverse()

        for side in sides:  # unmeasured: the lab's NotNow streak, cold caches
            use_receiver(side, tmp, st.webhook_url)
            r = run_side(side, "warm-up", tmp, 5, args.warm_ssh)
            side.runs.remove(r)
        flip = False
        if "a" in scenarios:
            both("(a) office", flip)
            flip = not flip
        if "b" in scenarios or "c" in scenarios:
            lab.home_office(names)
            sync_inventory()
            lab.route_vpn_pool(pool)
            both("(b) home office", flip)
            flip = not flip
        if "c" in scenarios and args.off > 0:
            off = names[: round(len(names) * args.off)]
            lab.switch_off(off)
            both(f"(c) home office, {len(off)} of {len(names)} off", flip)

        summary(args, sides)
        if args.json is not None:
            args.json.write_text(json.dumps([r for s in sides for r in s.runs], indent=1))
    finally:
        if not args.keep:
            try:
                lab_mdm.down(tmp)
            finally:
                lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
