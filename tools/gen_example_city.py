#!/usr/bin/env python3
"""Generate inventories/example-city/: 70 home-office laptops, 523 school iPads and 82 classroom Apple TVs,
all fictional.

Serials start with "ZX" (obviously made up; the generator is deterministic), owners are
"Beispiel" placeholder names. Run: python tools/gen_example_city.py
"""

from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "inventories" / "example-city"
SCHOOLS = [
    ("gs-am-markt", "Grundschule Am Markt (fiktiv)", 96),
    ("gs-lindenweg", "Grundschule Lindenweg (fiktiv)", 84),
    ("gs-sonnenhof", "Grundschule Sonnenhof (fiktiv)", 71),
    ("rs-stadtpark", "Realschule Stadtpark (fiktiv)", 132),
    ("gym-am-fluss", "Gymnasium Am Fluss (fiktiv)", 140),
]
ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I or O, like Apple's serials
MODELS = ["iPad (9th generation)", "iPad (10th generation)", "iPad Air (5th generation)"]
# Classroom Apple TVs per school (82 in all): one per room R101, R102, ...; the pupils' and shared
# iPads are spread over those rooms, teachers' iPads have none (they AirPlay anywhere in their school).
APPLE_TVS = {"gs-am-markt": 14, "gs-lindenweg": 12, "gs-sonnenhof": 10, "rs-stadtpark": 22, "gym-am-fluss": 24}


def main() -> None:
    rng = random.Random(20261127)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Example city: 70 home-office laptops and the VPN gateway. All names are fictional.",
             "all:", "  children:", "    laptops:", "      hosts:"]
    for n in range(1, 71):
        lines += [f"        ht-{n:03d}:",
                  f"          ansible_host: 10.20.{n // 250}.{n % 250 + 1}",
                  f"          owner: Beispiel Person {n:03d}",
                  f"          vpn_address: 10.77.0.{n + 10}",
                  f"          asset_tag: EXC-NB-{n:04d}"]
    lines += ["    vpn_gateway:", "      hosts:", "        vpn-gw:", "          ansible_host: 10.20.9.1", ""]
    (OUT / "hosts.yml").write_text("\n".join(lines), encoding="utf-8")
    school_lines = ["# Fictional schools of the example city.", "schools:"]
    for sid, name, _ in SCHOOLS:
        school_lines += [f"  - id: {sid}", f"    name: {name}", "    department: Schulverwaltung Beispielstadt",
                         "    support_phone: \"+49 0000 000000\"",
                         "    support_email: it-schulen@example-city.invalid",
                         # Two Apps and Books locations: the primary schools share one licence pool.
                         f"    apps_location: {'grundschulen' if sid.startswith('gs-') else 'weiterfuehrende'}"]
    (OUT / "schools.yml").write_text("\n".join(school_lines) + "\n", encoding="utf-8")
    rows = ["serial;model;school;group;name;room"]
    seen: set[str] = set()
    for sid, _, count in SCHOOLS:
        for i in range(count):
            serial = ""
            while not serial or serial in seen:
                serial = "ZX" + "".join(rng.choice(ALNUM) for _ in range(8))
            seen.add(serial)
            group = "teacher" if i % 8 == 0 else ("shared" if i % 8 == 1 else "pupil")
            room = "" if group == "teacher" else f"R{101 + i % APPLE_TVS[sid]}"
            rows.append(f"{serial};{rng.choice(MODELS)};{sid};{group};{sid}-{i + 1:03d};{room}")
    assert len(seen) == 523, len(seen)
    (OUT / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tv_rng = random.Random(20261206)
    tv_rows = ["serial;model;school;room;name;airplay_id"]
    for sid, count in APPLE_TVS.items():
        for r in range(count):
            serial = ""
            while not serial or serial in seen:
                serial = "ZY" + "".join(tv_rng.choice(ALNUM) for _ in range(8))
            seen.add(serial)
            tv_rows.append(f"{serial};Apple TV 4K (3rd generation);{sid};R{101 + r};;")
    assert len(tv_rows) - 1 == 82
    (OUT / "appletvs.csv").write_text("\n".join(tv_rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
