"""How long `werne mdm renew` takes to renew N iPads' identities through the real scepserver and
NanoMDM, side by side with how long the same N iPads took to enrol (the baseline of the ratio).

Starts the lab's MDM part (lab.mdm.up) in a temporary state dir with N iPads (default 20, no
faults) whose identities scepserver issues for one day (every one is due), waits until all are
enrolled (the baseline: lab up to the last enrolment), asks their CertificateList once, restarts
scepserver with a year's validity, and times one `werne mdm renew` (per iPad: the re-sent profile,
a new key, SCEP, check-in with the new identity, the acknowledgement, then CertificateList).

    .venv/bin/python bench/renew_identities.py --ipads 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from click.testing import CliRunner  # noqa: E402

from cli import main as cli_main  # noqa: E402
from core.config import load_config  # noqa: E402
from lab import mdm as lab_mdm  # noqa: E402
from lab import scep as lab_scep  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipads", type=int, default=20)
    p.add_argument("--parallel", type=int, default=4, help="scepclient/openssl processes at once")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-renew-") as tmp:
        state = Path(tmp) / "state"
        config_file = Path(tmp) / "werne.toml"

        def write_config(valid_days: int) -> None:
            config_file.write_text(
                f'[site]\nstate_dir = "{state}"\ninventory = "{state / "mdm" / "inventory"}"\n'
                f'[mdm]\nblast_radius = {args.ipads + 1}\n[scep]\ncert_valid_days = {valid_days}\n'
                f'renew_daily_budget = {args.ipads}\n', encoding="utf-8")

        def cli(*argv: str) -> tuple[int, str]:
            r = CliRunner().invoke(cli_main, ["--config", str(config_file), "--state-dir", str(state), *argv])
            return r.exit_code, r.output

        write_config(1)
        t0 = time.perf_counter()
        lab_mdm.up(state, args.ipads, load_config(config_file, state), poll_interval=2.0,
                   scep_parallel=args.parallel, faults=False)
        try:
            enrolled = 0
            while time.perf_counter() - t0 < 900 and enrolled < args.ipads:
                rows = json.loads(cli("ipad", "list", "--json")[1])
                enrolled = sum(1 for x in rows if x["state"] == "enrolled")
                time.sleep(0.2)
            t_enrol = time.perf_counter() - t0
            cli("ipad", "query", "--deadline", "60")
            write_config(365)
            # Only scepserver restarts (a year's validity); in-memory NanoMDM would forget the iPads.
            scep = lab_scep.status(state)
            assert scep is not None
            lab_scep.up(state, load_config(config_file, state), port=int(scep.url.split(":")[2].split("/")[0]))
            t1 = time.perf_counter()
            code, out = cli("mdm", "renew", "--json")
            t_renew = time.perf_counter() - t1
        finally:
            lab_mdm.down(state)
    report = json.loads(out) if out.startswith("{") else {"counts": out.strip()}
    print(f"iPads enrolled: {enrolled}/{args.ipads} in {t_enrol:.1f} s (lab up included)")
    print(f"werne mdm renew: {t_renew:.1f} s, exit {code}, {report.get('counts')}")
    for d in report.get("devices", []):
        if d["status"] != "renewed":
            print(f"  {d['serial']}: {d['status']} {d['detail']}")
    print(f"ratio renewal / enrolment: {t_renew / t_enrol:.2f}")
    return 0 if code == 0 and report.get("counts") == {"renewed": args.ipads} else 1


if __name__ == "__main__":
    raise SystemExit(main())
