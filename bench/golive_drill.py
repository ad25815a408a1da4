"""The go-live drill's timings: a fresh Debian 12 lab server made the MDM server by `werne server
install`, then N simulated iPads enrolling through it over HTTPS (lab.server's steps, as
tests/server/test_server_drill_lab.py runs them).

Prints: the boot of the fresh server, the first install (packages, wheels, PostgreSQL, units,
TLS), the administrator's steps (push certificate, group sets), the time until the first and the
last iPad is enrolled, and a second install over the finished server (the baseline the first one
is compared with: the same playbook with nothing left to do).

    .venv/bin/python bench/golive_drill.py --ipads 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_config  # noqa: E402
from lab import server as lab_server  # noqa: E402
from lab.certs import generated_serials  # noqa: E402
from server.install import InstallTarget, install_server  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipads", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-golive-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        srv = lab_server.fresh_server(root / "state", owner_pid=os.getpid())
        sim = None
        try:
            t_boot = time.perf_counter() - t0
            serials = generated_serials(args.ipads)
            config = load_config(lab_server.prepare(srv, serials, root / "werne.toml"))
            target = InstallTarget(address=srv.address, user="admin")
            t1 = time.perf_counter()
            first = install_server(config, target, root / "install", accept_new=True)
            t_install = time.perf_counter() - t1
            if not first.ok:
                print(f"install failed: {first.reason}")
                return 1
            t2 = time.perf_counter()
            lab_server.go_live(srv)
            t_golive = time.perf_counter() - t2
            t3 = time.perf_counter()
            sim = lab_server.simulated_ipads(srv, serials, root / "ipads")
            t_first = t_all = None
            while time.perf_counter() - t3 < 600:
                done = sum(1 for d in sim.devices if d.enrolled)
                if done and t_first is None:
                    t_first = time.perf_counter() - t3
                if done == len(sim.devices):
                    t_all = time.perf_counter() - t3
                    break
                time.sleep(0.1)
            lab_server.apply_declarations(srv)
            t4 = time.perf_counter()
            again = install_server(config, target, root / "install")
            t_again = time.perf_counter() - t4
        finally:
            if sim is not None:
                sim.stop()
            srv.lab.down(purge=True)
    load = os.getloadavg()[0]
    print(f"fresh server boot          {t_boot:7.1f} s")
    print(f"first install              {t_install:7.1f} s  (changed={first.changed}, TLS {first.tls})")
    print(f"push certificate           {t_golive:7.1f} s")
    print(f"first iPad enrolled after  {t_first or float('nan'):7.1f} s")
    print(f"all {args.ipads} enrolled after     {t_all or float('nan'):7.1f} s")
    print(f"second install (baseline)  {t_again:7.1f} s  (changed={again.changed})")
    print(f"first / second install     {t_install / t_again:7.2f}")
    print(f"load average at the end    {load:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
