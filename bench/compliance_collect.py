"""Benchmark (a): collecting the laptop compliance facts over N lab laptops.

Ours: ONE Ansible task per host (playbooks/compliance_facts.yml, module werne_facts) through
ansible-runner, in check mode, facts parsed and evaluated (`compliance.collect_laptops`).
Baseline: the same checks written the usual way, one Ansible task per check (16 tasks: sshd -T per
SSH rule, nft, sysctl files, pwquality, usb-storage, apt periodic, banner, LUKS, screen lock,
admin account, WireGuard config, ...), run with plain `ansible-playbook --check`, same inventory,
same SSH settings (pinned known_hosts, pipelining, forks).

Boots its own lab (systemd-nspawn; needs root), provisions nothing (the facts do not depend on it),
prints wall times and the ratio. Target: ours at least 5x faster.

    .venv/bin/python bench/compliance_collect.py --laptops 70
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# One task per rule: what a team writes when each check is its own task.
PER_CHECK_TASKS = [
    ("ssh root login", ["sh", "-c", "sshd -T | grep -i '^permitrootlogin'"]),
    (
        "ssh password auth",
        ["sh", "-c", "sshd -T | grep -iE '^(passwordauthentication|kbdinteractiveauthentication)'"],
    ),
    ("ssh crypto", ["sh", "-c", "sshd -T | grep -iE '^(ciphers|macs|kexalgorithms)'"]),
    ("ssh max auth tries", ["sh", "-c", "sshd -T | grep -i '^maxauthtries'"]),
    ("nftables input policy", ["nft", "-j", "list", "ruleset"]),
    (
        "unattended upgrades",
        ["sh", "-c", "cat /etc/apt/apt.conf.d/* | grep -i periodic; test -x /usr/bin/unattended-upgrade"],
    ),
    (
        "screen lock",
        [
            "sh",
            "-c",
            "cat /etc/dconf/db/*.d/* /etc/profile.d/*.sh 2>/dev/null"
            " | grep -E 'idle-delay|lock-enabled|TMOUT'",
        ],
    ),
    (
        "pwquality",
        [
            "sh",
            "-c",
            "cat /etc/security/pwquality.conf /etc/security/pwquality.conf.d/* 2>/dev/null;"
            " grep pam_pwquality /etc/pam.d/common-password",
        ],
    ),
    ("usb storage", ["sh", "-c", "grep -h usb-storage /etc/modprobe.d/*.conf"]),
    ("sysctl", ["sh", "-c", "cat /etc/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf 2>/dev/null"]),
    ("banner", ["sh", "-c", "sshd -T | grep -i '^banner'; cat /etc/issue.net"]),
    ("admin account", ["sh", "-c", "getent passwd admin; id -nG admin"]),
    ("luks", ["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE"]),
    ("wireguard config", ["sh", "-c", "grep -i allowedips /etc/wireguard/wg0.conf"]),
    ("wireguard service", ["systemctl", "is-enabled", "wg-quick@wg0.service"]),
    ("nftables service", ["systemctl", "is-enabled", "nftables.service"]),
]


def per_check_playbook(path: Path) -> None:
    import yaml

    tasks = [
        {
            "name": name,
            "ansible.builtin.command": {"argv": argv},
            "register": f"check_{i}",
            "changed_when": False,
            "failed_when": False,
            "check_mode": False,
        }
        for i, (name, argv) in enumerate(PER_CHECK_TASKS)
    ]
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Compliance checks, one task per check",
                    "hosts": "laptops",
                    "gather_facts": False,
                    "become": True,
                    "tasks": tasks,
                }
            ],
            sort_keys=False,
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    args = ap.parse_args()
    from compliance.collect_laptops import ansible_env, collect_laptops
    from core.config import LabConfig, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from lab.laptops import Lab

    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-collect-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=os.getpid())
    try:
        t0 = time.perf_counter()
        hosts = lab.up(laptops=args.laptops, gateway=False)
        print(f"lab: {len(hosts)} laptops up in {time.perf_counter() - t0:.1f} s")
        cfg_file = tmp / "werne.toml"
        cfg_file.write_text(
            f'[site]\ninventory = "{lab.inventory_dir}"\nstate_dir = "{tmp}"\n', encoding="utf-8"
        )
        config = load_config(cfg_file)
        with open(tmp / "known_hosts", "w", encoding="utf-8") as kh:
            subprocess.run(
                ["ssh-keyscan", "-T", "5", "-t", "ed25519", *[h.address for h in hosts]],
                stdout=kh,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        inv = load_inventory(config.inventory_dir)
        db = Database(config.database_url)
        env = {**os.environ, **ansible_env(config)}
        # Warm-up: SSH control masters and the Python bytecode of both sides.
        subprocess.run(
            [
                "ansible",
                "laptops",
                "-i",
                str(inv.hosts_file),
                "-m",
                "ansible.builtin.ping",
                "--forks",
                str(config.compliance.forks),
            ],
            env=env,
            capture_output=True,
            check=False,
        )

        t0 = time.perf_counter()
        devices = collect_laptops(config, inv, db, tmp / "artifacts")
        ours = time.perf_counter() - t0
        ok = sum(1 for d in devices if d.reachable)
        print(
            f"ours: one task per host (werne_facts via ansible-runner, --check): {ours:.1f} s, "
            f"{ok}/{len(devices)} laptops answered"
        )

        pb = tmp / "per_check.yml"
        per_check_playbook(pb)
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(inv.hosts_file),
                "--check",
                "--forks",
                str(config.compliance.forks),
                str(pb),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        theirs = time.perf_counter() - t0
        tail = [ln for ln in r.stdout.splitlines() if "ok=" in ln]
        print(
            f"baseline: {len(PER_CHECK_TASKS)} tasks per host (one per check), "
            "plain ansible-playbook --check: "
            f"{theirs:.1f} s (rc {r.returncode}, {len(tail)} hosts in the recap)"
        )
        load = Path("/proc/loadavg").read_text().split()[0]
        print(
            f"ratio: {theirs / ours:.1f}x faster (target >= 5x); {args.laptops} laptops, forks "
            f"{config.compliance.forks}, load average {load} on {os.cpu_count()} cores"
        )
        db.dispose()
    finally:
        if not args.keep:
            lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
