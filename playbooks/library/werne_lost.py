#!/usr/bin/python3
"""Ansible module: what werne does to a lost, stolen or found laptop.

state=locked: no logins except the city's admin key: every other account with a login shell is
expired (`usermod --expiredate 1`, which stops key logins too) and its password locked; sshd
admits only the admin user (a drop-in that sorts before werne's hardening); running sessions are
locked, then ended. What was changed is written to /etc/werne/lost-lock.json, so unlock undoes
exactly that. The VPN is not touched: the laptop stays reachable.
state=unlocked: undoes the lock: each account's expiry date and password lock as they were before
it (an account that was already disabled stays so), the sshd drop-in removed.
state=erased: crypto-erase: every LUKS volume's keyslots are destroyed (`cryptsetup erase`), so
its data can never be decrypted again, checked with a test unlock of the given keys; then the
laptop powers off a few seconds after the module returned.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_lost
short_description: Lock, unlock or crypto-erase a lost laptop
options:
  state:
    type: str
    choices: [locked, unlocked, erased]
    required: true
  admin_user:
    type: str
    default: admin
  devices:
    description: LUKS volumes to erase; empty means crypttab's and lsblk's.
    type: list
    elements: str
    default: []
  test_keys:
    description: Keys that must no longer open any volume after the erase (no_log).
    type: list
    elements: str
    default: []
    no_log: true
  poweroff_delay_s:
    type: int
    default: 5
  poweroff:
    description: Power off after the erase (false only where the volume is not the machine's own, in tests).
    type: bool
    default: true
"""

STATE_FILE = "/etc/werne/lost-lock.json"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-werne-00-lost-lock.conf"


def run(argv, stdin=None, timeout=60):
    try:
        p = subprocess.run(argv, input=stdin.encode() if stdin is not None else None, capture_output=True,
                           timeout=timeout, check=False)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", e.__class__.__name__


def human_accounts(admin):
    out = []
    for pw in pwd.getpwall():
        if pw.pw_name == admin or pw.pw_shell.endswith(("nologin", "false", "sync")):
            continue
        if pw.pw_uid == 0 or pw.pw_uid >= 1000:
            out.append(pw.pw_name)
    return sorted(set(out))


def shadow_entries(path="/etc/shadow"):
    """{account: (expire field, password locked)} from the shadow file: what the lock changes."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 8:
                out[fields[0]] = (fields[7], fields[1].startswith("!"))
    return out


def expire_argument(days):
    """usermod --expiredate's argument for a shadow expire field (days since 1970; empty: never)."""
    try:
        return time.strftime("%Y-%m-%d", time.gmtime(int(days) * 86400)) if days.strip() else ""
    except ValueError:
        return ""


def lock(module, admin):
    if os.path.exists(STATE_FILE):
        return False, json.load(open(STATE_FILE, encoding="utf-8"))
    accounts = human_accounts(admin)
    if module.check_mode:
        return True, {"accounts": accounts}
    shadow = shadow_entries()
    # What each account was before the lock, so unlock restores exactly that (an account that was
    # already disabled, or due to expire, stays so).
    before = {a: {"expire": shadow.get(a, ("", False))[0], "password_locked": shadow.get(a, ("", False))[1]}
              for a in accounts}
    os.makedirs(os.path.dirname(STATE_FILE), exist_ok=True)
    state = {"accounts": accounts, "before": before, "locked_at": int(time.time())}
    with open(STATE_FILE + ".tmp", "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(STATE_FILE + ".tmp", STATE_FILE)
    for a in accounts:
        run(["usermod", "--expiredate", "1", a])
        if not before[a]["password_locked"]:
            run(["passwd", "--lock", a])
    with open(SSHD_DROPIN, "w", encoding="utf-8") as f:
        f.write(f"# werne: this laptop is reported lost (werne laptop lock); only {admin} may log in.\n"
                f"AllowUsers {admin}\n")
    run(["systemctl", "reload", "ssh.service"])
    run(["loginctl", "lock-sessions"])
    for a in accounts:
        if a != "root":
            run(["loginctl", "terminate-user", a])
            run(["pkill", "-KILL", "-u", a])
    return True, state


def unlock(module):
    if not os.path.exists(STATE_FILE):
        return False, {"accounts": []}
    state = json.load(open(STATE_FILE, encoding="utf-8"))
    if module.check_mode:
        return True, state
    before = state.get("before", {})
    for a in state.get("accounts", []):
        was = before.get(a, {"expire": "", "password_locked": False})
        run(["usermod", "--expiredate", expire_argument(was["expire"]), a])
        if not was["password_locked"]:
            run(["passwd", "--unlock", a])
    if os.path.exists(SSHD_DROPIN):
        os.unlink(SSHD_DROPIN)
    run(["systemctl", "reload", "ssh.service"])
    os.unlink(STATE_FILE)
    return True, state


def luks_devices(given):
    """The volumes to erase: those given, else every crypttab source and every block device lsblk
    sees as crypto_LUKS; only those `cryptsetup isLuks` confirms."""
    found = list(given or [])
    if not found:
        try:
            with open("/etc/crypttab", encoding="utf-8") as f:
                entries = [ln.split() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
            found += [e[1].replace("UUID=", "/dev/disk/by-uuid/", 1) for e in entries if len(e) > 1]
        except OSError:
            pass
        rc, out, _ = run(["lsblk", "-J", "-p", "-o", "NAME,FSTYPE"])
        stack = list(json.loads(out or "{}").get("blockdevices") or []) if rc == 0 else []
        while stack:
            n = stack.pop()
            stack += n.get("children") or []
            if n.get("fstype") == "crypto_LUKS":
                found.append(n.get("name"))
    real = {}
    for d in found:
        if d and os.path.exists(d) and run(["cryptsetup", "isLuks", d])[0] == 0:
            real.setdefault(os.path.realpath(d), d)
    return sorted(real.values())


def erase(module, devices, test_keys, delay, poweroff=True):
    devs = luks_devices(devices)
    if not devs:
        # Nothing to crypto-erase: say so (the order is not done), and leave the laptop on.
        module.fail_json(msg="no LUKS volume found on this laptop: nothing erased, not powered off", erased=[])
    if module.check_mode:
        return True, {"devices": devs}
    done, still_open = [], []
    for d in devs:
        rc, _, err = run(["cryptsetup", "erase", "--batch-mode", d])
        if rc != 0:
            module.fail_json(msg=f"cryptsetup erase {d} failed (exit {rc}): {err.strip()[-200:]}", erased=done)
        done.append(d)
        for k in test_keys:
            if run(["cryptsetup", "open", "--test-passphrase", "--key-file", "-", d], stdin=k)[0] == 0:
                still_open.append(d)
    if still_open:
        module.fail_json(msg=f"a key still opens {', '.join(sorted(set(still_open)))} after the erase", erased=done)
    if not poweroff:
        return True, {"devices": done, "poweroff_in_s": None}
    # Power off after the module has answered, so werne records the erase before the laptop goes.
    run(["systemd-run", "--on-active", str(delay), "--unit", "werne-lost-poweroff", "systemctl", "poweroff"])
    return True, {"devices": done, "poweroff_in_s": delay}


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": ["locked", "unlocked", "erased"]},
            "admin_user": {"type": "str", "default": "admin"},
            "devices": {"type": "list", "elements": "str", "default": []},
            "test_keys": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "poweroff_delay_s": {"type": "int", "default": 5},
            "poweroff": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "locked":
        changed, info = lock(module, p["admin_user"])
    elif p["state"] == "unlocked":
        changed, info = unlock(module)
    else:
        changed, info = erase(module, p["devices"], p["test_keys"], p["poweroff_delay_s"], p["poweroff"])
    module.exit_json(changed=changed, **info)


if __name__ == "__main__":
    main()
