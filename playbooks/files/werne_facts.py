#!/usr/bin/python3
"""Gather every fact the werne compliance baseline needs, in one run, read-only: the nightly's facts.

Runs on the laptop as root, started by the facts playbook's one `raw` task (playbooks/
compliance_facts.yml), which feeds this file to `python3 -` over the host's one SSH session:
no Ansible module machinery on the laptop (AnsiballZ with ansible.module_utils cost ~250 ms of the
laptop's CPU per run, three times what the facts take; issue 27). Arguments: the admin account,
the WireGuard interface, "True" on the VPN gateway, and (optional) a JSON list of LUKS volumes without
a block device of their own (a volume in a file). Prints one JSON line,
{"werne_facts": {...}, "werne_timings": {...}}; a Python error is a traceback on stderr and exit 1.

It returns the effective sshd config (`sshd -T`), the nftables input chains, sysctl
settings from the boot-time files, pam_pwquality, the usb-storage block, unattended-upgrades, the
login banner, the LUKS fact, the screen lock, the local admin account, the WireGuard client
config (AllowedIPs only: keys are never read) and the patch level (pending security updates from the
package lists already on the laptop, the lists' age, the last unattended-upgrade, reboot required,
running versus newest installed kernel; `apt-get update` is never run) and the installed packages
with their source packages and versions (one dpkg-query), for matching against security data. On the
VPN gateway it adds the peers of `wg show all dump` without the interface lines, which hold the
private key.
Nothing on the host is changed, so the task runs in the playbook's check mode too.
Only the standard library: the laptops have nothing else.
"""

from __future__ import annotations

import functools
import glob
import grp
import json
import os
import pwd
import re
import resource
import shutil
import subprocess
import sys
import time

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


def luks_facts(extra=()):
    """LUKS volumes: crypttab entries, block devices lsblk sees as LUKS, and `extra` paths (a volume
    in a file, where there is no block device of its own) that `cryptsetup isLuks` confirms."""
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
    for path in extra or ():
        if os.path.exists(path) and run(["cryptsetup", "isLuks", path])[0] == 0:
            devices.append(path)
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


# --- patch level ------------------------------------------------------------------------------
# Every path below is joined to `root`, so the unit tests lay the files out in a temporary
# directory; commands are run by gather() and their output parsed by pure functions.

# apt-get -s prints one line per package it would install or upgrade, e.g.
#   Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
# The parenthesis holds the candidate version and every release (Label:Version/Suite) that offers it.
APT_INST = re.compile(r"^Inst (?P<pkg>\S+)(?: \[(?P<current>[^\]]*)\])? \((?P<candidate>\S+) (?P<releases>[^()]*)\)")


def _under(root, path):
    return os.path.join(root, path.lstrip("/"))


def _mtime(path):
    try:
        return int(os.stat(path).st_mtime)
    except OSError:
        return None


def _age(epoch, now):
    """Seconds since `epoch` by the laptop's own clock: ages stay right when that clock is off."""
    return None if epoch is None else max(0, int(now - epoch))


def is_security_release(*words):
    """A release is a security one when its label, suite or codename says so: Debian-Security,
    bookworm-security, noble-security. The same word unattended-upgrades' default origins key on."""
    return any("security" in str(w).lower() for w in words if w)


def release_fields(text):
    """The header fields of a Release or InRelease file (the clear-signed armour is skipped)."""
    fields = {}
    for line in (text or "").splitlines():
        if line.startswith("-----BEGIN PGP SIGNED") or line.startswith("Hash:"):
            continue
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" or ":" not in line:
            continue  # checksum lists
        k, _, v = line.partition(":")
        if v.strip():
            fields[k.strip()] = v.strip()
    return fields


def apt_lists_facts(root="/", now=None):
    """The package lists already downloaded: which releases they describe, which are security
    releases, and when they were last refreshed.

    "Refreshed" is the newest of: /var/lib/apt/periodic/update-success-stamp (touched by an APT
    Post-Invoke-Success hook after every successful `apt-get update`; the baseline installs it, Ubuntu
    ships it), update-stamp (apt.systemd.daily, after its daily update) and the Release files' mtimes
    (APT gives them the server's Last-Modified, so they can only understate freshness).
    """
    lists = _under(root, "/var/lib/apt/lists")
    files = sorted(glob.glob(os.path.join(lists, "*_InRelease")) + glob.glob(os.path.join(lists, "*_Release")))
    releases, newest = [], None
    for f in files:
        fields = release_fields(read(f))
        label = fields.get("Label") or fields.get("Origin") or "?"
        suite = fields.get("Suite") or fields.get("Codename") or "?"
        releases.append(
            {
                "release": f"{label}/{suite}",
                "security": is_security_release(fields.get("Label"), fields.get("Suite"), fields.get("Codename")),
            }
        )
        m = _mtime(f)
        newest = m if newest is None or (m or 0) > newest else newest
    stamps = {
        name: _mtime(_under(root, f"/var/lib/apt/periodic/{name}"))
        for name in ("update-success-stamp", "update-stamp")
    }
    candidates = [t for t in [newest, *stamps.values()] if t]
    refreshed = max(candidates) if candidates else None
    return {
        "release_files": len(files),
        "releases": sorted({r["release"] for r in releases}),
        "security_releases": sorted({r["release"] for r in releases if r["security"]}),
        "newest_release_file": newest,
        "stamps": stamps,
        "refreshed": refreshed,
        "age_s": _age(refreshed, time.time() if now is None else now),
    }


def parse_apt_simulation(text):
    """Packages `apt-get -s dist-upgrade` would install or upgrade, split by whether the candidate
    version comes from a security release. dist-upgrade, not upgrade: a kernel security update
    arrives as a new linux-image package, which `upgrade` would hold back."""
    security, other = [], []
    for line in (text or "").splitlines():
        m = APT_INST.match(line)
        if not m:
            continue
        releases = re.sub(r"\s*\[[^\]]*\]\s*$", "", m.group("releases"))
        item = {"package": m.group("pkg"), "current": m.group("current"), "candidate": m.group("candidate")}
        (security if is_security_release(releases) else other).append(item)
    return {"security": security, "other": other}


def pending_updates_facts():
    # Simulation reads the lists and dpkg's status only; NoLocking so that a running apt-daily
    # does not make the nightly run fail (the answer is then at worst a few minutes old).
    rc, out, err = run(["apt-get", "-s", "-o", "Debug::NoLocking=true", "dist-upgrade"], timeout=120)
    if rc != 0:
        return {"error": (err or out).strip()[-200:] or f"apt-get -s dist-upgrade exited {rc}"}
    sim = parse_apt_simulation(out)
    return {
        "security_count": len(sim["security"]),
        "other_count": len(sim["other"]),
        # Enough to name them in evidence; the count is the fact rules use.
        "security": [f"{p['package']} {p['current'] or '-'} -> {p['candidate']}" for p in sim["security"][:25]],
    }


def unattended_upgrade_facts(root="/", now=None):
    """When unattended-upgrade last completed a run.

    Two stamps, no log parsing (the log's messages are translated into the laptop's locale and the
    file is rotated): /var/lib/apt/periodic/upgrade-stamp, touched by apt.systemd.daily only when
    unattended-upgrade exited 0 (timer runs only), and unattended-upgrades-stamp, written by
    unattended-upgrade itself at the end of every run that got through its package set (also runs
    started by an admin or by provisioning). The newer one counts. Whether the updates really went
    in is the pending-updates fact's job.
    """
    stamps = {
        name: _mtime(_under(root, f"/var/lib/apt/periodic/{name}"))
        for name in ("upgrade-stamp", "unattended-upgrades-stamp")
    }
    known = [t for t in stamps.values() if t]
    last = max(known) if known else None
    return {
        "installed": os.path.exists(_under(root, "/usr/bin/unattended-upgrade")),
        "stamps": stamps,
        "last_run": last,
        "age_s": _age(last, time.time() if now is None else now),
    }


def reboot_facts(root="/", now=None):
    """/run/reboot-required (/var/run is a link to it) is written by packages' postinst scripts and
    lives on tmpfs, so its mtime is when the first update since the last boot asked for a reboot."""
    flag = _under(root, "/run/reboot-required")
    pkgs = read(_under(root, "/run/reboot-required.pkgs")) or ""
    since = _mtime(flag)
    return {
        "required": os.path.exists(flag),
        "since": since,
        "age_s": _age(since, time.time() if now is None else now),
        "packages": sorted({p.strip() for p in pkgs.splitlines() if p.strip()}),
    }


def _dpkg_order(c):
    if not c or c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _dpkg_verrevcmp(a, b):
    """dpkg's verrevcmp (lib/dpkg/version.c), for one of upstream version or revision."""
    i = j = 0

    def ch(s, k):
        return s[k] if k < len(s) else ""

    while i < len(a) or j < len(b):
        first_diff = 0
        while (ch(a, i) and not ch(a, i).isdigit()) or (ch(b, j) and not ch(b, j).isdigit()):
            ac, bc = _dpkg_order(ch(a, i)), _dpkg_order(ch(b, j))
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while ch(a, i) == "0":
            i += 1
        while ch(b, j) == "0":
            j += 1
        while ch(a, i).isdigit() and ch(b, j).isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if ch(a, i).isdigit():
            return 1
        if ch(b, j).isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def dpkg_compare_versions(a, b):
    """<0, 0, >0 as `dpkg --compare-versions a lt|eq|gt b`."""

    def split(v):
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _dpkg_verrevcmp(ua, ub) or _dpkg_verrevcmp(ra, rb)


def kernel_facts(running, dpkg_lines, container, root="/", now=None):
    """The running kernel (uname -r) and the kernel image packages dpkg has installed.

    `dpkg_lines` is `dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' 'linux-image-*'`.
    linux-image-6.1.0-18-amd64 holds the kernel release 6.1.0-18-amd64 (Debian's -unsigned
    variant the same one); the meta packages (linux-image-amd64) and debug symbols do not count.
    The newest installed one is the highest package version; its install time is the mtime of
    dpkg's file list for it. In a container the running kernel is the host's, which is recorded.
    """
    installed = []
    for line in (dpkg_lines or "").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[2].startswith("ii"):
            continue
        pkg, version = parts[0], parts[1]
        release = pkg[len("linux-image-"):]
        if not release[:1].isdigit() or release.endswith(("-dbg", "-dbgsym")):
            continue
        release = release.removesuffix("-unsigned")
        lists = glob.glob(_under(root, f"/var/lib/dpkg/info/{pkg}.list")) + glob.glob(
            _under(root, f"/var/lib/dpkg/info/{pkg}:*.list")
        )
        installed.append({"release": release, "version": version, "installed_at": _mtime(lists[0]) if lists else None})
    installed.sort(key=functools.cmp_to_key(lambda x, y: dpkg_compare_versions(x["version"], y["version"])))
    newest = installed[-1] if installed else None
    return {
        "running": running,
        "container": container,
        "installed": [k["release"] for k in installed],
        "newest": newest["release"] if newest else None,
        "newest_installed_at": newest["installed_at"] if newest else None,
        "newest_age_s": _age(newest["installed_at"], time.time() if now is None else now) if newest else None,
    }


PACKAGE_FIELDS = ("${binary:Package}\t${Version}\t${source:Package}\t${source:Version}\t${Architecture}"
                  "\t${db:Status-Abbrev}\n")


def package_rows(dpkg_out):
    """[package, version, source package, source version, architecture] of every package whose files
    are on disk (dpkg status installed, unpacked, half-configured or awaiting triggers), by name."""
    rows = []
    for line in (dpkg_out or "").splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or len(parts[5]) < 2 or parts[5][1] not in "iUFWtH":
            continue
        rows.append(parts[:5])
    rows.sort()
    return rows


def package_facts():
    """The installed packages with their source packages, for matching against security data (the
    controller keeps the list apart from the evidence: compliance.vulns.packages)."""
    rc, out, err = run(["dpkg-query", "-W", "-f", PACKAGE_FIELDS], timeout=60)
    if rc != 0:
        return {"error": (err or out).strip()[:200] or f"dpkg-query exited {rc}"}
    return {"list": package_rows(out)}


# systemd-detect-virt's container ids (systemd.io/CONTAINER_INTERFACE, `systemd-detect-virt --list`).
CONTAINER_IDS = frozenset({"openvz", "lxc", "lxc-libvirt", "systemd-nspawn", "docker", "podman", "rkt", "wsl",
                           "proot", "pouch"})


def container_of(virt):
    """The container this host runs in (None: none), from `systemd-detect-virt`'s answer `virt`.

    That answer is the innermost virtualisation, so a container shows there even inside a VM:
    only a VM's or an unknown id needs the second call (`--container`); bare metal ("none") and
    containers need none."""
    if virt in CONTAINER_IDS:
        return virt
    if virt == "none":
        return None
    rc, container, _ = run(["systemd-detect-virt", "--container"])
    return container.strip() if rc == 0 else None


def patch_facts(virt):
    _, dpkg_out, _ = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", "linux-image-*"])
    return {
        "lists": apt_lists_facts(),
        "pending": pending_updates_facts(),
        "unattended_upgrade": unattended_upgrade_facts(),
        "reboot": reboot_facts(),
        # os.uname() is the uname(2) that `uname -r` prints, without a process.
        "kernel": kernel_facts(os.uname().release, dpkg_out, container_of(virt)),
    }


def _cpu():
    """CPU seconds of this module and the commands it ran (they are reaped by subprocess.run)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(timings, name, fn, *args):
    """fn(*args), with its wall and CPU seconds in timings[name] (the nightly run's breakdown)."""
    w, c = time.perf_counter(), _cpu()
    try:
        return fn(*args)
    finally:
        timings[name] = [round(time.perf_counter() - w, 4), round(_cpu() - c, 4)]


def gather(admin, iface, gateway, timings=None, luks_devices=()):
    """Every fact; `timings` (a dict) gets [wall, CPU] of the whole, the patch level and the packages."""
    timings = {} if timings is None else timings
    return timed(timings, "total", _gather, admin, iface, gateway, timings, luks_devices)


def _gather(admin, iface, gateway, timings, luks_devices):
    sshd = sshd_facts()
    sysctl, sysctl_origin = sysctl_facts()
    pwq, pam = pwquality_facts()
    _, out, _ = run(["systemd-detect-virt"])
    virt = out.strip() or "none"
    osr = keyvalue_file(read("/etc/os-release"))
    facts = {
        "os": {
            "id": str(osr.get("ID", "")).strip('"'),
            "version_id": str(osr.get("VERSION_ID", "")).strip('"'),
            "version_codename": str(osr.get("VERSION_CODENAME", "")).strip('"'),
        },
        "virt": virt,
        "sshd": sshd,
        "nft": nft_facts(),
        "sysctl": sysctl,
        "sysctl_origin": sysctl_origin,
        "pwquality": pwq,
        "pam": pam,
        "usb_storage": usb_storage_facts(),
        "apt": apt_facts(),
        "banner": banner_facts(sshd),
        "luks": luks_facts(luks_devices),
        "screen_lock": screen_lock_facts(),
        "accounts": account_facts(admin),
        "wg": wg_client_facts(iface),
        "patch": timed(timings, "patch", patch_facts, virt),
        "packages": timed(timings, "packages", package_facts),
    }
    if gateway:
        facts["wg_gateway"] = wg_gateway_peers()
    return facts


def main(argv):
    """python3 - ADMIN_USER WG_INTERFACE GATEWAY [LUKS_JSON]: the facts and their timings as one JSON line."""
    admin, iface, gateway = argv[1], argv[2], argv[3] == "True"
    luks = json.loads(argv[4]) if len(argv) > 4 and argv[4] else []
    timings = {}
    facts = gather(admin, iface, gateway, timings, [str(p) for p in luks if isinstance(p, str)])
    # Beside the facts, not in them: the evidence stays what the host is, not how long it took.
    print(json.dumps({"werne_facts": facts, "werne_timings": timings}, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv)
