"""Benchmark: `werne laptop provision` against plain `ansible-playbook` on the same playbook and lab.

Usage: .venv/bin/python bench/provision.py [--hosts N]   (default 70; needs root and the lab image)

Boots N lab laptops, pins their host keys, applies the baseline once (warm-up: the first, changing
run), then times converged runs (the nightly re-apply: every host already compliant, 0 changed), so
that every timed run does the same work:
  plain ansible-playbook and ours, each with Ansible's defaults (forks 5, no pipelining) and tuned
  (forks from [provisioning], pipelining on). Both use the same ssh settings (pinned known_hosts).
Ours includes everything `werne laptop provision` does: the paramiko host-key pre-check, the
ansible-runner event stream and artifacts, and the database writes. Prints wall times and ratios.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import Config, SiteConfig, SSHConfig  # noqa: E402
from core.db import Database  # noqa: E402
from core.inventory import load_inventory  # noqa: E402
from lab.laptops import DEFAULT_CACHE_DIR, Lab  # noqa: E402
from provisioning.ansible import PLAYBOOK_DIR, ansible_envvars  # noqa: E402
from provisioning.preflight import known_hosts_path, run_preflight  # noqa: E402
from provisioning.runner import ansible_extravars, provision  # noqa: E402

ANSIBLE_DEFAULT_FORKS = 5


def controller_cpu() -> float:
    """CPU seconds of this process and its finished children (ansible-playbook and its workers).

    On a shared machine wall times swing with other load; the controller's CPU time does not, and
    it is where any overhead of ours (events, artifacts, database) would show.
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def variant(base: Config, forks: int, pipelining: bool) -> Config:
    prov = base.provisioning.model_copy(update={"forks": forks, "pipelining": pipelining})
    return base.model_copy(update={"provisioning": prov})


CPU: list[float] = []


def run_ours(cfg: Config, db: Database) -> tuple[float, str]:
    inv = load_inventory(cfg.inventory_dir)
    t, cpu = time.monotonic(), controller_cpu()
    report = provision(cfg, db, inv, all_hosts=True)
    wall = time.monotonic() - t
    CPU.append(controller_cpu() - cpu)
    changed = sum(h.changed for h in report.hosts)
    bad = [h.host for h in report.hosts if h.outcome not in ("ok", "changed")]
    return wall, f"status {report.status}, {changed} changed, {len(bad)} failed/unreachable"


def run_plain(cfg: Config) -> tuple[float, str]:
    env = {**os.environ, **ansible_envvars(cfg, known_hosts_path(cfg))}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(cfg.inventory_dir / "hosts.yml"),
            str(PLAYBOOK_DIR / cfg.provisioning.playbook), "--forks", str(cfg.provisioning.forks),
            "-e", json.dumps(ansible_extravars(cfg))]
    t, cpu = time.monotonic(), controller_cpu()
    p = subprocess.run(argv, cwd=PLAYBOOK_DIR, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.monotonic() - t
    CPU.append(controller_cpu() - cpu)
    recap = p.stdout.split("PLAY RECAP", 1)[-1]
    changed = sum(int(part.split("=")[1]) for part in recap.split() if part.startswith("changed="))
    return wall, f"rc {p.returncode}, {changed} changed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=70)
    ap.add_argument("--tuned-forks", type=int, default=None, help="forks for the tuned runs (default: config's)")
    ap.add_argument("--variants", default="defaults,tuned", help="which halves to time: defaults, tuned or both")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timed runs per side; alternating which goes first, the fastest of each side counts")
    args = ap.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not wanted or set(wanted) - {"defaults", "tuned"}:
        ap.error("--variants: a comma list of defaults, tuned")
    state = Path(tempfile.mkdtemp(prefix=f"werne-bench-prov{args.hosts}-"))
    lab = Lab(state, cache_dir=DEFAULT_CACHE_DIR, demo=False)
    try:
        t = time.monotonic()
        lab.up(laptops=args.hosts, gateway=False)
        print(f"lab: {args.hosts} laptops up in {time.monotonic() - t:.1f} s")
        base = Config(site=SiteConfig(inventory=lab.inventory_dir, state_dir=state),
                      ssh=SSHConfig(private_key_file=lab.key_file))
        tuned_forks = args.tuned_forks or base.provisioning.forks
        db = Database(base.database_url)
        pre = run_preflight(base, load_inventory(base.inventory_dir), all_hosts=True, accept_new=True)
        assert pre.ok, [h.reason for h in pre.failed]

        wall, what = run_ours(variant(base, tuned_forks, True), db)
        print(f"warm-up (first run, ours tuned): {wall:7.1f} s  ({what})")

        results: dict[str, float] = {}
        cpu: dict[str, float] = {}
        halves = (("defaults", ANSIBLE_DEFAULT_FORKS, False), ("tuned", tuned_forks, True))
        for name, forks, pipelining in [h for h in halves if h[0] in wanted]:
            cfg = variant(base, forks, pipelining)
            for r in range(args.rounds):
                order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
                for side in order:
                    wall, what = run_plain(cfg) if side == "plain" else run_ours(cfg, db)
                    print(f"  {name} round {r + 1}, {side}: {wall:7.1f} s, controller CPU {CPU[-1]:6.1f} s ({what})",
                          flush=True)
                    key = f"{side} {name}"
                    if key not in results or wall < results[key]:
                        results[key] = wall
                    cpu[key] = min(cpu.get(key, CPU[-1]), CPU[-1])
                    if side == "plain":
                        what_plain = what
                    else:
                        what_ours = what
            print(f"{name:<8} (forks {forks:>3}, pipelining {'on ' if pipelining else 'off'}): "
                  f"ansible-playbook {results[f'plain {name}']:7.1f} s ({what_plain}); "
                  f"werne {results[f'ours {name}']:7.1f} s ({what_ours}); controller CPU: "
                  f"ansible-playbook {cpu[f'plain {name}']:6.1f} s, werne {cpu[f'ours {name}']:6.1f} s")
        print()
        for name in [n for n in ("defaults", "tuned") if n in wanted]:
            ratio = results[f"ours {name}"] / results[f"plain {name}"]
            cpu_ratio = cpu[f"ours {name}"] / cpu[f"plain {name}"]
            print(f"ours / ansible-playbook, {name:<8}: wall x{ratio:.3f} ({(ratio - 1) * 100:+.1f} %), "
                  f"controller CPU x{cpu_ratio:.3f} ({(cpu_ratio - 1) * 100:+.1f} %)")
        if "tuned" in wanted:
            print(f"ours tuned / plain tuned target <= x1.05: "
                  f"{'met' if results['ours tuned'] <= 1.05 * results['plain tuned'] else 'NOT met'}")
        if len(wanted) == 2:
            print(f"tuning gain, ansible-playbook: x{results['plain defaults'] / results['plain tuned']:.2f}; "
                  f"werne: x{results['ours defaults'] / results['ours tuned']:.2f}")
        db.dispose()
    finally:
        lab.down(purge=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
