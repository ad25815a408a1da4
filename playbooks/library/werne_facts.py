#!/usr/bin/python3
"""Ansible module: gather every fact the werne compliance baseline needs, in one task, read-only.

Runs on the laptop (become: true, works in check mode because it never changes anything) and
returns `werne_facts`: the effective sshd config (`sshd -T`), the nftables input chains, sysctl
settings from the boot-time files, pam_pwquality, the usb-storage block, unattended-upgrades, the
login banner, the LUKS fact, the screen lock, the local admin account and the WireGuard client
config (AllowedIPs only: keys are never read). On the VPN gateway (`gateway: true`) it adds the
peers of `wg show all dump` without the interface lines, which hold the private key.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import re
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_facts
short_description: Gather the werne compliance facts of a host as JSON, read-only
options:
  admin_user:
    description: The local admin account that must exist and may use sudo.
    type: str
    default: admin
  wg_interface:
    description: The WireGuard interface name.
    type: str
    default: wg0
  gateway:
    description: Also return the WireGuard peers of this host (the VPN gateway).
    type: bool
    default: false
"""

SSHD_LIST_KEYS = {"ciphers", "macs", "kexalgorithms", "hostkeyalgorithms", "pubkeyacceptedalgorithms"}


def run(argv, timeout=20):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", f"{e.__class__.__name__}: {e}"


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def sshd_facts():
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    rc, out, err = run([sshd, "-T"])
    if rc != 0:
        return {"error": (err or out).strip()[:200] or f"sshd -T exited {rc}"}
    facts = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        key = key.lower()
        if key in SSHD_LIST_KEYS:
            facts[key] = [v for v in value.split(",") if v]
        elif key in facts:
            facts[key] = facts[key] + [value] if isinstance(facts[key], list) else [facts[key], value]
        else:
            facts[key] = value
    return facts


def nft_facts():
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(nft):
        return {"available": False, "reason": "nft not installed"}
    rc, out, err = run([nft, "-j", "list", "ruleset"])
    if rc != 0:
        return {"available": False, "reason": (err or out).strip()[:200]}
    try:
        items = json.loads(out or "{}").get("nftables", [])
    except ValueError:
        return {"available": False, "reason": "nft printed no JSON"}
    chains = []
    for item in items:
        c = item.get("chain")
        if c and c.get("hook") == "input" and c.get("type") == "filter":
            chains.append(
                {
                    "family": c.get("family"),
                    "table": c.get("table"),
                    "chain": c.get("name"),
                    "policy": c.get("policy", "accept"),
                    "priority": c.get("prio"),
                }
            )
    rc2, _, _ = run(["systemctl", "is-enabled", "nftables.service"])
    return {
        "available": True,
        "input_chains": chains,
        "service_enabled": rc2 == 0,
        "rules": sum(1 for i in items if "rule" in i),
    }


def sysctl_facts():
    """Settings as systemd-sysctl applies them at boot: files by name, /etc over /run over /usr/lib."""
    by_name = {}
    for d in ("/usr/lib/sysctl.d", "/lib/sysctl.d", "/run/sysctl.d", "/etc/sysctl.d"):
        for f in glob.glob(os.path.join(d, "*.conf")):
            by_name[os.path.basename(f)] = f
    files = [by_name[n] for n in sorted(by_name)]
    if os.path.exists("/etc/sysctl.conf"):
        files.append("/etc/sysctl.conf")
    values, origin = {}, {}
    for f in files:
        for line in (read(f) or "").splitlines():
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            k, _, v = line.partition("=")
            k = k.strip().lstrip("-").replace("/", ".")
            values[k] = v.strip()
            origin[k] = f
    return values, origin


def keyvalue_file(text):
    out = {}
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
        else:
            out[line] = True
    return out


def pwquality_facts():
    conf = {}
    for f in ["/etc/security/pwquality.conf", *sorted(glob.glob("/etc/security/pwquality.conf.d/*.conf"))]:
        conf.update(keyvalue_file(read(f)))
    for k, v in list(conf.items()):
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
            conf[k] = int(v)
    # libpwquality's built-in defaults apply to what no file sets (pwquality.conf(5)).
    for k, v in (("minlen", 8), ("minclass", 0), ("maxrepeat", 0)):
        conf.setdefault(k, v)
    pam = read("/etc/pam.d/common-password") or read("/etc/pam.d/system-auth") or ""
    enabled = any(re.match(r"^\s*password\s+\S+.*pam_pwquality\.so", ln) for ln in pam.splitlines())
    return conf, {"pwquality": enabled}


def usb_storage_facts():
    blocked_by = []
    for f in sorted(glob.glob("/etc/modprobe.d/*.conf")):
        for line in (read(f) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if (
                len(words) >= 3
                and words[0] == "install"
                and words[1] in ("usb-storage", "usb_storage")
                and words[2] in ("/bin/false", "/bin/true", "/usr/bin/false", "/usr/bin/true")
            ):
                blocked_by.append(f"{f}: install {words[1]} {words[2]}")
            elif len(words) >= 2 and words[0] == "blacklist" and words[1] in ("usb-storage", "usb_storage"):
                blocked_by.append(f"{f}: blacklist {words[1]}")
    # A blacklist alone still lets `modprobe usb-storage` load it; an install override does not.
    hard = any(" install " in f" {b.split(': ', 1)[1]} " for b in blocked_by)
    return {"blocked": hard, "blacklisted": bool(blocked_by), "by": blocked_by}


def apt_facts():
    periodic = {}
    for f in sorted(glob.glob("/etc/apt/apt.conf.d/*")):
        for m in re.finditer(r'(APT::Periodic::[A-Za-z-]+)\s+"([^"]*)"\s*;', read(f) or ""):
            periodic[m.group(1)] = m.group(2)
    installed = os.path.exists("/usr/bin/unattended-upgrade")
    rc, _, _ = run(["systemctl", "is-enabled", "apt-daily-upgrade.timer"])
    return {
        "periodic": periodic,
        "unattended_upgrades_installed": installed,
        "upgrade_timer_enabled": rc == 0,
    }


def banner_facts(sshd):
    path = sshd.get("banner") if isinstance(sshd.get("banner"), str) else None
    text = read(path) if path and path != "none" else None
    issue_net = read("/etc/issue.net")
    return {
        "sshd_banner": path or "none",
        "present": bool(text and text.strip()),
        "issue_net_present": bool(issue_net and issue_net.strip()),
        "chars": len(text or ""),
    }


def luks_facts():
    crypttab = [
        ln.split()[0]
        for ln in (read("/etc/crypttab") or "").splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    devices = []
    rc, out, _ = run(["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE"])
    if rc == 0:

        def walk(nodes):
            for n in nodes or []:
                if n.get("fstype") == "crypto_LUKS" or n.get("type") == "crypt":
                    devices.append(n.get("name"))
                walk(n.get("children"))

        try:
            walk(json.loads(out).get("blockdevices"))
        except ValueError:
            pass
    return {"present": bool(crypttab or devices), "crypttab": crypttab, "devices": sorted(set(devices))}


def dconf_settings():
    """Keyfiles under /etc/dconf/db/*.d/: {"org/gnome/desktop/session": {"idle-delay": "uint32 900"}},
    plus the locked keys."""
    settings, locks = {}, set()
    for f in sorted(glob.glob("/etc/dconf/db/*.d/*")):
        if os.path.isdir(f):
            continue
        if os.path.basename(os.path.dirname(f)) == "locks":
            continue
        section = None
        for line in (read(f) or "").splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section and "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                settings.setdefault(section, {})[k.strip()] = v.strip()
    for f in glob.glob("/etc/dconf/db/*.d/locks/*"):
        for line in (read(f) or "").splitlines():
            if line.strip().startswith("/"):
                locks.add(line.strip())
    return settings, locks


def screen_lock_facts():
    settings, locks = dconf_settings()
    session = settings.get("org/gnome/desktop/session", {})
    saver = settings.get("org/gnome/desktop/screensaver", {})
    idle = re.search(r"(\d+)\s*$", session.get("idle-delay", ""))
    lock = saver.get("lock-enabled")
    tmout = None
    for f in ["/etc/profile", *sorted(glob.glob("/etc/profile.d/*.sh")), "/etc/bash.bashrc"]:
        for m in re.finditer(
            r"^\s*(?:readonly\s+|export\s+|declare\s+-\S+\s+)*TMOUT=(\d+)", read(f) or "", re.M
        ):
            tmout = int(m.group(1))
    wanted = {"/org/gnome/desktop/session/idle-delay", "/org/gnome/desktop/screensaver/lock-enabled"}
    return {
        "idle_delay_s": int(idle.group(1)) if idle else None,
        "lock_enabled": None if lock is None else lock.lower() == "true",
        "locked": wanted <= locks,
        "tmout_s": tmout,
    }


def account_facts(admin):
    try:
        pw = pwd.getpwnam(admin)
    except KeyError:
        return {"admin": {"name": admin, "exists": False, "sudo": False}}
    groups = {g.gr_name for g in grp.getgrall() if admin in g.gr_mem}
    try:
        groups.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    sudo = bool(groups & {"sudo", "wheel"})
    for f in ["/etc/sudoers", *glob.glob("/etc/sudoers.d/*")]:
        if re.search(rf"^\s*{re.escape(admin)}\s+ALL\s*=", read(f) or "", re.M):
            sudo = True
    return {"admin": {"name": admin, "exists": True, "sudo": sudo, "shell": pw.pw_shell, "uid": pw.pw_uid}}


def wg_client_facts(iface):
    path = f"/etc/wireguard/{iface}.conf"
    text = read(path)
    facts = {"installed": bool(shutil.which("wg")), "config_present": text is not None, "allowed_ips": []}
    if text is None:
        return facts
    for line in text.splitlines():
        k, _, v = line.partition("=")
        if k.strip().lower() == "allowedips":
            facts["allowed_ips"] += [a.strip() for a in v.split(",") if a.strip()]
        elif k.strip().lower() == "endpoint":
            facts["endpoint"] = v.strip()
    key_files = [
        p for p in (f"/etc/wireguard/{iface}.key", "/etc/wireguard/private.key", path) if os.path.exists(p)
    ]
    facts["key_mtime"] = int(os.stat(key_files[0]).st_mtime) if key_files else None
    rc, _, _ = run(["systemctl", "is-enabled", f"wg-quick@{iface}.service"])
    facts["service_enabled"] = rc == 0
    return facts


def wg_gateway_peers():
    rc, out, err = run(["wg", "show", "all", "dump"])
    if rc != 0:
        return {"available": False, "reason": (err or out).strip()[:200]}
    peers = []
    for line in out.splitlines():
        f = line.split("\t")
        # Interface lines have 5 fields and carry the private key: never returned.
        if len(f) != 9:
            continue
        peers.append(
            {
                "interface": f[0],
                "public_key": f[1],
                "endpoint": f[3],
                "allowed_ips": [a for a in f[4].split(",") if a and a != "(none)"],
                "latest_handshake": int(f[5]),
                "rx": int(f[6]),
                "tx": int(f[7]),
            }
        )
    return {"available": True, "peers": peers}


def gather(admin, iface, gateway):
    sshd = sshd_facts()
    sysctl, sysctl_origin = sysctl_facts()
    pwq, pam = pwquality_facts()
    rc, virt, _ = run(["systemd-detect-virt"])
    osr = keyvalue_file(read("/etc/os-release"))
    facts = {
        "os": {
            "id": str(osr.get("ID", "")).strip('"'),
            "version_id": str(osr.get("VERSION_ID", "")).strip('"'),
        },
        "virt": virt.strip() or "none",
        "sshd": sshd,
        "nft": nft_facts(),
        "sysctl": sysctl,
        "sysctl_origin": sysctl_origin,
        "pwquality": pwq,
        "pam": pam,
        "usb_storage": usb_storage_facts(),
        "apt": apt_facts(),
        "banner": banner_facts(sshd),
        "luks": luks_facts(),
        "screen_lock": screen_lock_facts(),
        "accounts": account_facts(admin),
        "wg": wg_client_facts(iface),
    }
    if gateway:
        facts["wg_gateway"] = wg_gateway_peers()
    return facts


def main():
    module = AnsibleModule(
        argument_spec={
            "admin_user": {"type": "str", "default": "admin"},
            "wg_interface": {"type": "str", "default": "wg0"},
            "gateway": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    module.exit_json(changed=False, werne_facts=gather(p["admin_user"], p["wg_interface"], p["gateway"]))


if __name__ == "__main__":
    main()
