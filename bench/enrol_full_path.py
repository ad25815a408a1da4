"""How long N simulated iPads take to enrol through the whole go-live path, and where the time goes.

Starts the lab's MDM part (lab.mdm.up: scepserver, NanoMDM, webhook, web, nginx on HTTPS) in a
temporary state dir with N iPads (default 523, no faults), waits until the webhook receiver has
every one as enrolled, and prints the wall time plus the per-step sums the simulated devices
measured (MachineInfo POST -> signed profile, profile verification, SCEP, Authenticate+TokenUpdate).

    .venv/bin/python bench/enrol_full_path.py --ipads 523
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_config  # noqa: E402
from lab import mdm as lab_mdm  # noqa: E402
from lab import processes  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipads", type=int, default=523)
    p.add_argument("--parallel", type=int, default=4, help="scepclient/openssl processes at once")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-enrol-") as tmp:
        state = Path(tmp)
        cfg = load_config(state_dir=state)
        t0 = time.perf_counter()
        lab_mdm.up(state, args.ipads, cfg, poll_interval=5.0, scep_parallel=args.parallel, faults=False)
        t_up = time.perf_counter() - t0
        wall_up = time.time()
        from core.db import Database
        from ipad.store.registry import Registry

        db = Database(cfg.database_url)
        try:
            enrolled = 0
            # A device row appears when the receiver stores its Authenticate/TokenUpdate webhook.
            while time.perf_counter() - t0 < 1800:
                enrolled = Registry(db).counts()["mdm_devices"]
                if enrolled >= args.ipads:
                    break
                time.sleep(0.2)
            t_all = time.perf_counter() - t0
        finally:
            db.dispose()
        timings = _device_timings(state)
        lab_mdm.down(state)
        done = timings.pop("enrolled_at", [])
        if done:
            print(f"the simulated iPads' own clock: last TokenUpdate answered {max(done) - wall_up:.1f} s after lab up")
    print(f"iPads enrolled: {enrolled}/{args.ipads}")
    print(f"lab up (CA, scepserver, NanoMDM, webhook, web, nginx, push cert): {t_up:.1f} s")
    print(f"from lab up to the last iPad enrolled: {t_all - t_up:.1f} s (total {t_all:.1f} s)")
    for step, values in timings.items():
        print(f"  {step:<15} sum {sum(values):7.1f} s  median {statistics.median(values) * 1000:6.0f} ms  "
              f"max {max(values) * 1000:6.0f} ms  (n={len(values)})")
    return 0 if enrolled >= args.ipads else 1


def _device_timings(state: Path) -> dict[str, list[float]]:
    """The simulator logs nothing per device; read the timings it dumps on exit (see lab.ipad_sim)."""
    path = state / "mdm" / "timings.json"
    processes.stop("simulator", state / "mdm")
    if not path.is_file():
        return {}
    out: dict[str, list[float]] = {}
    for t in json.loads(path.read_text()).values():
        for k, v in t.items():
            out.setdefault(k, []).append(v)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
