"""Benchmark: boot N lab laptops (plus the VPN gateway) to SSH-ready, then take them down.

Usage: .venv/bin/python bench/lab_boot.py [N ...]   (default: 3 10 70; needs root)
Prints wall times per size and the per-laptop ratio against the smallest size. Not run by tests.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.image import ensure_base  # noqa: E402
from lab.laptops import DEFAULT_CACHE_DIR, Lab  # noqa: E402


def main(sizes: list[int]) -> None:
    t = time.monotonic()
    ensure_base(DEFAULT_CACHE_DIR)
    print(f"base image ready in {time.monotonic() - t:.1f} s (0 when cached)")
    baseline = None
    for n in sizes:
        state = Path(tempfile.mkdtemp(prefix=f"werne-bench-lab{n}-"))
        lab = Lab(state, demo=False)
        try:
            t = time.monotonic()
            hosts = lab.up(laptops=n, gateway=True)
            up = time.monotonic() - t
            states: dict[str, int] = {}
            for h in hosts:
                s = lab.exec(h.name, ["systemctl", "is-system-running"]).stdout.strip()
                states[s] = states.get(s, 0) + 1
        finally:
            t = time.monotonic()
            lab.down(purge=True)  # raises, and so keeps the dir, if an overlay is still mounted
            down = time.monotonic() - t
            shutil.rmtree(state, ignore_errors=True)
        per = up / (n + 1)
        baseline = baseline or per
        print(f"{n:>3} laptops + gateway: up {up:6.1f} s ({per:.2f} s/host, x{per / baseline:.2f} of the "
              f"smallest), down {down:5.1f} s, systemd states {states}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 10, 70])
