"""The lab's Debian base root file system: built once with debootstrap, cached, shared read-only.

Every laptop's overlay mount uses the same base as its lower layer, so the base must never change
while a lab runs. It is rebuilt only when its recipe (suite, packages, customisation) changes:
the recipe's hash names the cache directory. A file lock makes parallel builders wait for each
other instead of both building. The mirror is read at run time from the machine's own APT
sources, so no registry host name is written into this repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from core.locks import file_lock
from lab.errors import ImageBuildError

PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "wireguard-tools",
    "nftables", "iproute2", "unattended-upgrades", "libpam-pwquality", "iputils-ping", "procps",
    "kmod", "cryptsetup-bin",
    # The resolver the lab's VPN gateway runs (lab.laptops writes its unit and config into vpngw only).
    "dnsmasq-base",
)
ADMIN_USER = "admin"
# Bump when _customise() changes, so cached bases built by older code are not reused.
CUSTOMISE_VERSION = 4
COMPLETE_MARKER = ".werne-base-complete"
BUILD_TIMEOUT_S = 1800


def recipe(suite: str) -> dict[str, object]:
    return {"suite": suite, "variant": "minbase", "packages": sorted(PACKAGES),
            "customise": CUSTOMISE_VERSION, "admin": ADMIN_USER}


def recipe_hash(suite: str) -> str:
    blob = json.dumps(recipe(suite), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_dir(cache_dir: Path, suite: str) -> Path:
    return cache_dir / f"base-{recipe_hash(suite)}"


def debs_dir(cache_dir: Path, suite: str) -> Path:
    """The .debs the base was built from, kept for the lab's package source (lab.aptrepo)."""
    return cache_dir / f"debs-{recipe_hash(suite)}"


def server_debs(cache_dir: Path, suite: str, packages: tuple[str, ...]) -> Path:
    """The .debs a lab server needs beyond the base (PostgreSQL, nginx, ...), with every dependency
    the base lacks: APT on this machine resolves them against the base's own dpkg status, from this
    machine's package lists (apt-get update first). Downloaded once per base and package set, for
    the lab's package source (lab.aptrepo); the lab server then installs them with its own APT."""
    key = hashlib.sha256(json.dumps([recipe_hash(suite), sorted(packages)]).encode()).hexdigest()[:12]
    target = cache_dir / f"server-debs-{key}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    base = ensure_base(cache_dir, suite)
    with file_lock(cache_dir / f"{target.name}.lock", wait=BUILD_TIMEOUT_S, what=f"download of {target}",
                   poll_s=1, held_error=ImageBuildError, unusable_error=ImageBuildError):
        if (target / COMPLETE_MARKER).is_file():
            return target
        shutil.rmtree(target, ignore_errors=True)
        (target / "partial").mkdir(parents=True)
        _run(["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
              "-o", f"Dir::State::status={base / 'var/lib/dpkg/status'}", "-o", f"Dir::Cache::archives={target}",
              "-o", "Debug::NoLocking=1", "install", *packages], "download the lab server's packages")
        shutil.rmtree(target / "partial", ignore_errors=True)
        (target / COMPLETE_MARKER).write_text(json.dumps(sorted(packages)), encoding="utf-8")
    return target


def _sources_files() -> list[Path]:
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files += [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    return [f for f in files if f.is_file()]


def find_mirror(suite: str) -> str:
    """The Debian mirror URI that this machine's APT sources use for `suite`.

    deb822 `.sources` stanzas and one-line `.list` entries are both read; security and
    updates suites do not count (debootstrap wants the main archive).
    """
    for f in _sources_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in fields.get("types", "").split():
                    continue
                if suite in fields.get("suites", "").split():
                    for uri in fields.get("uris", "").split():
                        return uri
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                    return parts[1]
    raise ImageBuildError(f"no APT source for '{suite}' in /etc/apt/sources.list(.d): "
                          "cannot pick a mirror for debootstrap")


def _run(argv: list[str], what: str, timeout: float = 600) -> None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ImageBuildError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"{what}: timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise ImageBuildError(f"{what} failed (exit {p.returncode}): {' | '.join(tail)}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def _customise(root: Path) -> None:
    """Turn a debootstrapped tree into a bootable, SSH-reachable container base."""
    # nspawn sets the host name from the machine; each laptop writes its own machine-id.
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # Host keys are per laptop (written into its upper layer before boot), never shared.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root / "etc/ssh/sshd_config.d/00-lab-hostkey.conf",
           "# werne lab: each laptop has its own ed25519 host key, made before first boot.\n"
           "HostKey /etc/ssh/ssh_host_ed25519_key\n")
    # No console login, no first-boot questions, no apt downloads in the background: the lab has
    # no route to a mirror, and a failing timer would make every laptop "degraded".
    for unit in ("systemd-firstboot.service", "console-getty.service", "getty@.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
                 "systemd-networkd-wait-online.service"):
        _mask(root, unit)
    _run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service"], "enable networkd")
    # The journal in memory only: 70 laptops writing journals to disk cost more than they tell.
    _write(root / "etc/systemd/journald.conf.d/werne-lab.conf",
           "[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n")
    # The local admin account: key login only (password field '*', not '!', so key login works
    # even with UsePAM no) and passwordless sudo, as the provisioning baseline expects to find it.
    _run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash",
          "--user-group", ADMIN_USER], "create admin account")
    _run(["chroot", str(root), "usermod", "-p", "*", ADMIN_USER], "unlock admin for key login")
    _write(root / f"etc/sudoers.d/90-{ADMIN_USER}", f"{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    ssh_dir = root / "home" / ADMIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _run(["chroot", str(root), "chown", f"{ADMIN_USER}:{ADMIN_USER}", f"/home/{ADMIN_USER}/.ssh"],
         "chown admin .ssh")
    # The mirror debootstrap used is not the laptops' source: the lab's own package source is
    # (lab.aptrepo, written per laptop into sources.list.d).
    _write(root / "etc/apt/sources.list", "# werne lab: see /etc/apt/sources.list.d/werne-lab.sources\n")
    _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean")
    lists = root / "var/lib/apt/lists"
    for p in lists.glob("*_*"):
        p.unlink()
    # "Never refreshed": APT (and Ansible's cache_valid_time) judge freshness by this directory's
    # mtime when no update stamp exists, and a base younger than an hour would look fresh.
    os.utime(lists, (0, 0))


def ensure_base(cache_dir: Path, suite: str = "bookworm", timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return the cached base for `suite`, building it first if needed (under a file lock)."""
    target = base_dir(cache_dir, suite)
    if (target / COMPLETE_MARKER).is_file():
        return target
    with file_lock(cache_dir / f"{target.name}.lock", wait=timeout_s, what=f"build of {target}", poll_s=1,
                   held_error=ImageBuildError, unusable_error=ImageBuildError):
        if (target / COMPLETE_MARKER).is_file():  # another process built it while we waited
            return target
        _build(target, suite)
        prune_old_bases(cache_dir, keep=target)
    return target


def prune_old_bases(cache_dir: Path, keep: Path) -> list[Path]:
    """Remove cached bases of older recipes that no overlay mount uses any more; return them."""
    in_use = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
    removed = []
    for old in sorted(cache_dir.glob("base-*")):
        if old == keep or not old.is_dir() or ".tmp-" in old.name:
            continue
        if f"lowerdir={old}" in in_use or f":{old}," in in_use or f"{old}/" in in_use:
            continue  # a running laptop's lower layer: never pull it from under it
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(cache_dir / f"debs-{old.name.removeprefix('base-')}", ignore_errors=True)
        (cache_dir / f"{old.name}.lock").unlink(missing_ok=True)
        removed.append(old)
    return removed


def _keep_debs(root: Path, dst: Path) -> None:
    """Move the .debs debootstrap downloaded out of the tree, for the lab's package source."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        shutil.move(str(deb), dst / deb.name)


def _build(target: Path, suite: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (run scripts/setup.sh as root)")
    mirror = find_mirror(suite)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    for stale in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():  # incomplete leftover of a killed build
        shutil.rmtree(target)
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
              str(tmp), mirror], f"debootstrap {suite}", timeout=BUILD_TIMEOUT_S)
        _keep_debs(tmp, debs_dir(target.parent, suite))
        _customise(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(recipe(suite), sort_keys=True), encoding="utf-8")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
