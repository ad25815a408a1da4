"""The disaster-recovery drill's measurements (lab.recovery, as tests/server/test_server_drill_lab.py
runs it): the size of the encrypted archive of a lab server with N enrolled iPads, the time
`werne backup create` takes while the services run, the time `werne backup restore` takes on a
fresh server, and both installs (the baseline the restore is compared with).

    .venv/bin/python bench/backup_drill.py --ipads 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import recovery  # noqa: E402

PASSWORD = "bench backup password 2026"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipads", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-backup-") as tmp:
        drill = None
        try:
            drill = recovery.start_server_with_ipads(Path(tmp), args.ipads, PASSWORD)
            recovery.back_up_destroy_and_restore(drill, PASSWORD)
            m = recovery.measurements(drill)
        finally:
            if drill is not None:
                drill.sim.stop()
                drill.srv.lab.down(purge=True)
    print(json.dumps(m, indent=1))
    print(f"archive {m['archive_bytes'] / 1e6:.1f} MB ({m['archive_files']} files); "
          f"backup create {m['backup_create_s']} s; restore {m['restore_s']} s "
          f"(a fresh install: {m['second_install_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
