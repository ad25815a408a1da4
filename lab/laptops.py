"""The lab of laptops: systemd-nspawn containers with real systemd and sshd, one per laptop.

Each laptop boots from the cached Debian base (lab.image) through its own overlay mount, so its
writes land in `STATE/lab/hosts/NAME/upper` and the base stays shared and untouched. It has its
own machine-id, ed25519 host key and network namespace, with a static address on a bridge that
belongs to this lab only. Several labs (state dirs) run side by side: each gets its own bridge and
/24 in 10.200.0.0/16 (inside the provisioning baseline's admin network, so SSH survives the
firewall), and its machine, interface and cgroup names carry the lab's id.

`Lab.private_network(router, hosts)` puts laptops on a network of their own behind one lab host
(an execution node): a bridge with no address on this machine, so this machine (the controller)
has no route to it; the router gets a second interface on it, and the laptops live only there.

This machine's PID 1 is not systemd (no machined, no system bus), so nspawn runs with
`--register=no --keep-unit`, each launcher in its own cgroup in the named `systemd` and the
`unified` hierarchies, started in a new session. See ../shared notes "ssh-lab", approach A.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import DEFAULT_INVENTORY, default_state_dir
from core.locks import file_lock
from core.procs import pid_alive, proc_state
from core.yamlio import load_file
from lab import aptrepo, home, processes, resolver
from lab.certs import LAB_HOST
from lab.errors import LabBootError, LabError, LabInputError
from lab.image import ADMIN_USER, COMPLETE_MARKER, base_dir, debs_dir, ensure_base, server_debs

DEFAULT_CACHE_DIR = Path("/var/cache/werne-lab")
DEMO_SUBNET = ipaddress.IPv4Network("10.200.0.0/24")
# Every lab's /24 lies in here: it is inside the baseline firewall's admin network.
LAB_SUPERNET = ipaddress.IPv4Network("10.200.0.0/16")
GATEWAY_NAME = "vpngw"
GATEWAY_HOST_OCTET = 2
# The lab's MDM server (lab.server): a fresh Debian that `werne server install` makes the server.
SERVER_NAME = "mdm"
SERVER_HOST_OCTET = 5
FIRST_LAPTOP_OCTET = 11
MAX_LAPTOPS = 254 - FIRST_LAPTOP_OCTET + 1
# Private networks behind a lab host (Lab.private_network): network K is 10.210.K.0/24, the router
# at .1 and each laptop at its lab-bridge last octet. Outside LAB_SUPERNET, so no lab's bridge
# (this machine's address) ever lies in one; every lab uses the same ones, as every home router
# uses 192.168.178.0/24 (lab.home): they are separate bridges that nothing on this machine routes.
PRIVATE_SUPERNET = ipaddress.IPv4Network("10.210.0.0/16")
PRIVATE_ROUTER_OCTET = 1
# The router's second interface, inside its container.
PRIVATE_IFNAME = "priv0"
CABLE_TIMEOUT_S = 30.0
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
CGROUP_PARENT = "werne-lab"
NSPAWN_RUN = Path("/run/systemd/nspawn")
GLOBAL_LOCK = Path("/run/werne-lab/alloc.lock")
# One file per lab that is (or was being) brought up: its id, state dir and owning process, so a
# lab whose state dir vanished or whose owner (a test run) was killed can be found and removed.
REGISTRY_DIR = Path("/run/werne-lab/labs")
STOP_TIMEOUT_S = 20.0
LAUNCH_THREADS = 8
# After this long without an SSH banner, boot waits also ask systemd whether sshd has failed.
SSH_FAILED_CHECK_AFTER_S = 8.0
# Fixed launcher: join this laptop's cgroups, then become systemd-nspawn. The cgroup paths and the
# nspawn argv arrive as positional arguments; nothing is interpolated into the script.
LAUNCHER = ('echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && echo $$ > "$3" '
            '&& shift 3 && exec "$@"')
INOTIFY_MIN = {"fs/inotify/max_user_instances": 8192, "fs/inotify/max_user_watches": 1048576}
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class LabHost:
    """One lab machine as it is now: its name, address, and container PID 1 if it runs."""

    name: str
    address: str
    pid: int | None
    netns_path: str | None
    running: bool
    machine: str = ""
    role: str = "laptop"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _HostRecord:
    name: str
    machine: str
    address: str
    role: str
    nspawn_pid: int | None = None
    nspawn_start: int | None = None
    # At home behind its own NAT router (lab.home): reached only through the VPN.
    home: bool = False
    # On a private network behind this lab host (Lab.private_network): reached only through it.
    behind: str = ""


@dataclass
class _LabState:
    labid: str = ""
    bridge: str = ""
    subnet: str = ""
    base: str = ""
    hosts: dict[str, _HostRecord] = field(default_factory=dict)
    # The port of the lab's package source on the host's bridge address (lab.aptrepo).
    apt_port: int | None = None
    # Router host -> the number K of the private network behind it (Lab.private_network).
    private_networks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> _LabState:
        data = json.loads(text)
        hosts = {k: _HostRecord(**v) for k, v in data.pop("hosts", {}).items()}
        return cls(hosts=hosts, **data)


# ---------------------------------------------------------------- small system helpers ----


def _run(argv: list[str], what: str, timeout: float = 30, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                           env={**os.environ, "PATH": SAFE_PATH + ":" + os.environ.get("PATH", "")})
    except FileNotFoundError:
        raise LabError(f"{what}: {argv[0]} is not installed (run scripts/setup.sh as root)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: timed out after {timeout:.0f} s") from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise LabError(f"{what} failed (exit {p.returncode}): {msg[-1] if msg else 'no output'}")
    return p


def _mounted_paths() -> set[str]:
    out = set()
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            out.add(parts[1].replace("\\040", " "))
    return out


def _link_names() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def _host_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    p = _run(["ip", "-j", "-4", "addr", "show"], "list addresses")
    result = []
    for link in json.loads(p.stdout or "[]"):
        for a in link.get("addr_info", []):
            result.append((link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")))
    return result


def _cgroup_dirs(machine: str) -> list[Path]:
    return [root / CGROUP_PARENT / machine for root in CGROUP_ROOTS]


def _cgroup_pids(d: Path) -> list[int]:
    # os.walk, not rglob: cgroup dirs vanish while we look (a container powering off).
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(d):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
    return pids


def _remove_cgroup_tree(d: Path) -> None:
    # Depth first: a cgroup dir can only go once its children are gone.
    for dirpath, _dirs, _files in os.walk(d, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _kill_and_remove_cgroups(dirs: list[Path], timeout: float = 15.0) -> list[Path]:
    """SIGKILL what is left in these cgroup trees and remove them; return the dirs still there.

    A cgroup dir can only go once its last process has been reaped, and this machine's PID 1
    reaps slowly, so this retries for a while instead of trying once.
    """
    deadline = time.monotonic() + timeout
    while True:
        for d in dirs:
            for p in _cgroup_pids(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        for d in dirs:
            _remove_cgroup_tree(d)
        left = [d for d in dirs if d.exists()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _raise_inotify_limits() -> None:
    # Dozens of systemd instances exhaust the default inotify limits: one laptop then hangs at boot.
    for key, minimum in INOTIFY_MIN.items():
        p = Path("/proc/sys") / key
        with contextlib.suppress(OSError, ValueError):
            if int(p.read_text()) < minimum:
                p.write_text(str(minimum))


def ssh_banner(address: str, port: int = 22, timeout: float = 2.0) -> str | None:
    """The SSH server's identification line, or None if nothing SSH answers."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(256)
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    return line if line.startswith("SSH-") else None


def _banner_in_netns(pid: int, address: str, timeout: float = 1.0) -> bool:
    """Whether sshd answers at `address`:22, asked from inside the network namespace of `pid`."""
    script = f"exec 3<>/dev/tcp/{address}/22 && head -c 4 <&3"
    try:
        p = subprocess.run(["nsenter", "-t", str(pid), "-n", "--", "timeout", str(timeout), "bash", "-c", script],
                           capture_output=True, text=True, timeout=timeout + 5, env={"PATH": SAFE_PATH})
    except subprocess.TimeoutExpired:
        return False
    return p.stdout.startswith("SSH-")


def _private_subnet(k: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{PRIVATE_SUPERNET.network_address + (k << 8)}/24")


def _private_host(k: int, octet: int) -> str:
    return str(_private_subnet(k).network_address + octet)


def _private_bridge(labid: str, k: int) -> str:
    return f"wp{labid}{k}"


@contextlib.contextmanager
def _flock(path: Path, timeout: float = 600) -> Iterator[None]:
    with file_lock(path, wait=timeout, what="lab operation", held_error=LabError, unusable_error=LabError):
        yield


def laptop_names(n: int) -> list[str]:
    width = 2 if n < 100 else 3
    return [f"lap{i:0{width}d}" for i in range(1, n + 1)]


def _is_default_state_dir(state_dir: Path) -> bool:
    return state_dir.resolve() == default_state_dir().resolve()


def _registry() -> list[dict[str, Any]]:
    entries = []
    for f in sorted(REGISTRY_DIR.glob("*.json")) if REGISTRY_DIR.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            entries.append(json.loads(f.read_text(encoding="utf-8")))
    return entries


def _register(labid: str, state_dir: Path, owner_pid: int | None) -> None:
    st = proc_state(owner_pid) if owner_pid else None
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    entry = {"labid": labid, "state_dir": str(state_dir), "owner_pid": owner_pid,
             "owner_start": st[1] if st else None}
    (REGISTRY_DIR / f"{labid}.json").write_text(json.dumps(entry), encoding="utf-8")


def _unregister(labid: str, state_dir: Path) -> None:
    f = REGISTRY_DIR / f"{labid}.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(f.read_text(encoding="utf-8")).get("state_dir") == str(state_dir):
            f.unlink()


def _orphaned(entry: dict[str, Any]) -> str | None:
    state_dir = Path(entry.get("state_dir", ""))
    state_file = state_dir / "lab" / "lab.json"
    if not state_file.is_file():
        return f"its state dir {state_dir} is gone"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(state_file.read_text(encoding="utf-8")).get("labid") != entry.get("labid"):
            return f"{state_dir} now belongs to another lab id"
    owner = entry.get("owner_pid")
    if owner and not pid_alive(owner, start=entry.get("owner_start")):
        return f"its owner process {owner} has ended"
    return None


def sweep_orphans() -> list[str]:
    """Take down labs whose state dir vanished or whose owner process (a test run) died.

    Labs that are still owned, or belong to no process (the CLI's), are left alone. Returns one
    line per lab removed.
    """
    removed = []
    for entry in _registry():
        reason = _orphaned(entry)
        if reason is None:
            continue
        labid, state_dir = entry["labid"], Path(entry["state_dir"])
        try:
            if (state_dir / "lab" / "lab.json").is_file() and "another lab" not in reason:
                Lab(state_dir, demo=False).down()
            else:
                _teardown_by_id(labid, state_dir, own_mounts="another lab" not in reason)
        except (LabError, OSError) as e:  # one stuck orphan must not stop the sweep of the others
            removed.append(f"lab {labid} ({state_dir}): {reason}; removal failed: {e}")
            continue
        removed.append(f"lab {labid} ({state_dir}): {reason}")
    # Empty cgroup dirs of labs nobody registers any more (left by a teardown that was cut short).
    registered = {e.get("labid") for e in _registry()}
    for root in CGROUP_ROOTS:
        for d in (root / CGROUP_PARENT).glob("w*-*"):
            labid = d.name[1:].split("-", 1)[0]
            if labid not in registered and not _cgroup_pids(d):
                _remove_cgroup_tree(d)
                if not d.exists():
                    removed.append(f"empty cgroup {d}")
    return removed


def _teardown_by_id(labid: str, state_dir: Path, own_mounts: bool = True) -> None:
    """Remove a lab known only by its id: its processes, mounts, cgroups, /run files and bridge."""
    lab_dir = state_dir / "lab"
    # Hold the lab's own lock if its dir still exists, so a `down` of the same lab waits for us.
    with _flock(lab_dir / ".lock") if lab_dir.is_dir() else contextlib.nullcontext():
        _teardown_by_id_locked(labid, state_dir, own_mounts)


def _teardown_by_id_locked(labid: str, state_dir: Path, own_mounts: bool) -> None:
    dirs = [d for root in CGROUP_ROOTS for d in (root / CGROUP_PARENT).glob(f"w{labid}-*")]
    _kill_and_remove_cgroups(dirs)
    prefix = str(state_dir / "lab" / "hosts") + "/"
    for m in sorted(_mounted_paths(), reverse=True) if own_mounts else []:
        if m.startswith(prefix):
            _run(["umount", "--lazy", m], f"unmount {m}", check=False)
    for d in dirs:
        for sub in ("propagate", "unix-export", "incoming"):
            shutil.rmtree(NSPAWN_RUN / sub / d.name, ignore_errors=True)
    with _flock(GLOBAL_LOCK):
        home.remove_all(labid)
        for link in _link_names():
            if link == f"wl-{labid}" or link.startswith((f"vb-w{labid}-", f"wp{labid}", f"vp{labid}")):
                _run(["ip", "link", "delete", link], f"delete {link}", check=False)
        (REGISTRY_DIR / f"{labid}.json").unlink(missing_ok=True)


# ---------------------------------------------------------------- the lab ----------------


class Lab:
    """One lab per state dir: up() boots laptops (and the VPN gateway), down() removes every trace."""

    def __init__(self, state_dir: Path, *, cache_dir: Path = DEFAULT_CACHE_DIR, suite: str = "bookworm",
                 demo: bool | None = None, boot_timeout_s: float | None = None,
                 owner_pid: int | None = None):
        self.state_dir = Path(state_dir).resolve()
        self.cache_dir = Path(cache_dir)
        self.suite = suite
        # The default state dir is the demo's lab: it takes the demo inventory's fixed addresses.
        self.demo = _is_default_state_dir(self.state_dir) if demo is None else demo
        self.boot_timeout_s = boot_timeout_s
        self.ssh_failed_check_after_s = SSH_FAILED_CHECK_AFTER_S
        self.lab_dir = self.state_dir / "lab"
        self.hosts_dir = self.lab_dir / "hosts"
        self._state_file = self.lab_dir / "lab.json"
        self._lock_file = self.lab_dir / ".lock"
        # A lab tied to a process (a test run) counts as orphaned once that process is gone.
        self.owner_pid = owner_pid

    # ---- public paths
    @property
    def key_file(self) -> Path:
        return self.lab_dir / "id_ed25519"

    @property
    def inventory_dir(self) -> Path:
        return self.lab_dir / "inventory"

    # ---- state
    def _load(self) -> _LabState:
        if not self._state_file.is_file():
            # The state file is gone but the lab may not be: the registry still knows its id.
            for entry in _registry():
                if entry.get("state_dir") == str(self.state_dir):
                    return _LabState(labid=entry["labid"], bridge=f"wl-{entry['labid']}")
            return _LabState()
        try:
            return _LabState.from_json(self._state_file.read_text(encoding="utf-8"))
        except (ValueError, TypeError, KeyError) as e:
            raise LabError(f"{self._state_file}: unreadable lab state ({e.__class__.__name__}); "
                           "remove it after checking that no laptop of this lab runs") from None

    def _save(self, st: _LabState) -> None:
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(st.to_json(), encoding="utf-8")
        tmp.replace(self._state_file)

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (systemd-nspawn, overlay mounts, bridges)")
        for tool in ("systemd-nspawn", "nsenter", "ip", "ssh-keygen", "mount", "umount"):
            if shutil.which(tool, path=SAFE_PATH) is None:
                raise LabError(f"{tool} is not installed (run scripts/setup.sh as root)")

    # ---- network allocation
    def _allocate_network(self, st: _LabState) -> None:
        """Pick (or re-check) this lab's id, bridge and /24; called under the global lock."""
        addrs = _host_addresses()
        links = _link_names()

        def subnet_taken(net: ipaddress.IPv4Network, bridge: str) -> bool:
            return any(ifname != bridge and iface.network.overlaps(net) for ifname, iface in addrs)

        def registered_to(labid: str) -> str | None:
            with contextlib.suppress(OSError, ValueError):
                entry = json.loads((REGISTRY_DIR / f"{labid}.json").read_text(encoding="utf-8"))
                return str(entry.get("state_dir"))
            return None

        def labid_taken(labid: str) -> bool:
            bridge = f"wl-{labid}"
            if bridge in links or registered_to(labid) not in (None, str(self.state_dir)):
                return True
            return any(p.name.startswith(f"w{labid}-")
                       for root in CGROUP_ROOTS for p in (root / CGROUP_PARENT).glob("*"))

        if st.labid and st.bridge and st.subnet:
            running = any(pid_alive(r.nspawn_pid, start=r.nspawn_start) for r in st.hosts.values())
            if st.bridge in links and (registered_to(st.labid) == str(self.state_dir) or running):
                return  # already up, and ours: the registry says so, or our laptops use it
            if not labid_taken(st.labid) and not subnet_taken(ipaddress.IPv4Network(st.subnet), st.bridge):
                return
        seed = hashlib.sha256(str(self.state_dir).encode()).hexdigest()
        labid = ""
        for attempt in range(4096):
            cand = hashlib.sha256(f"{seed}:{attempt}".encode()).hexdigest()[:4]
            if not labid_taken(cand):
                labid = cand
                break
        if not labid:
            raise LabError("no free lab id: too many labs on this machine")
        bridge = f"wl-{labid}"
        if self.demo:
            if subnet_taken(DEMO_SUBNET, bridge):
                owner = next(i for i, a in addrs if a.network.overlaps(DEMO_SUBNET))
                raise LabError(f"the demo lab's network {DEMO_SUBNET} is already in use (on {owner}); "
                               "run `werne lab down` for the lab that holds it")
            subnet = DEMO_SUBNET
        else:
            start = int(seed[:8], 16) % 254 + 1
            subnet = None
            for k in range(254):
                third = (start + k - 1) % 254 + 1
                cand_net = ipaddress.IPv4Network(f"10.200.{third}.0/24")
                if not subnet_taken(cand_net, bridge):
                    subnet = cand_net
                    break
            if subnet is None:
                raise LabError(f"no free /24 left in {LAB_SUPERNET} for another lab")
        st.labid, st.bridge, st.subnet = labid, bridge, str(subnet)

    def _host_ip(self, st: _LabState, octet: int) -> str:
        return str(ipaddress.IPv4Network(st.subnet).network_address + octet)

    def _ensure_bridge(self, st: _LabState) -> None:
        links = _link_names()
        for k in st.private_networks.values():
            # Layer 2 only: no address of this machine on it, so no route from here into it.
            bridge = _private_bridge(st.labid, k)
            if bridge not in links:
                _run(["ip", "link", "add", "name", bridge, "type", "bridge"], f"create bridge {bridge}")
                with contextlib.suppress(OSError):
                    Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("1")
                _run(["ip", "link", "set", bridge, "up"], f"bring up bridge {bridge}")
        if st.bridge in links:
            return
        net = ipaddress.IPv4Network(st.subnet)
        _run(["ip", "link", "add", "name", st.bridge, "type", "bridge"], f"create bridge {st.bridge}")
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{st.bridge}/disable_ipv6").write_text("1")
        _run(["ip", "addr", "add", f"{self._host_ip(st, 1)}/{net.prefixlen}", "dev", st.bridge],
             f"address bridge {st.bridge}")
        _run(["ip", "link", "set", st.bridge, "up"], f"bring up bridge {st.bridge}")

    def _delete_bridge(self, st: _LabState) -> None:
        if st.bridge and st.bridge in _link_names():
            _run(["ip", "link", "delete", st.bridge], f"delete bridge {st.bridge}", check=False)
        # Host ends of veths normally vanish with the container's namespace; sweep any stragglers,
        # and the private networks' bridges.
        for link in _link_names():
            if st.labid and link.startswith((f"vb-w{st.labid}-", f"wp{st.labid}", f"vp{st.labid}")):
                _run(["ip", "link", "delete", link], f"delete {link}", check=False)

    # ---- keys and files
    def _ensure_controller_key(self) -> None:
        if self.key_file.is_file() and self.key_file.with_suffix(".pub").is_file():
            return
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        for p in (self.key_file, self.key_file.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"werne-lab@{self.state_dir.name}",
              "-f", str(self.key_file)], "make the controller key")
        self.key_file.chmod(0o600)

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        d = self.hosts_dir / name
        return d / "upper", d / "work", d / "root"

    def _mount(self, name: str, base: Path) -> Path:
        upper, work, root = self._paths(name)

        for p in (upper, work, root):
            p.mkdir(parents=True, exist_ok=True)
        if str(root) not in _mounted_paths():
            _run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={base},upperdir={upper},workdir={work}", str(root)],
                 f"overlay mount for {name}")
        return root

    def _unmount(self, name: str) -> None:
        root = self._paths(name)[2]
        if str(root) in _mounted_paths():
            p = _run(["umount", str(root)], f"unmount {name}", check=False)
            if p.returncode != 0:
                time.sleep(0.5)
                _run(["umount", "--lazy", str(root)], f"unmount {name}")

    def _prepare_root(self, st: _LabState, rec: _HostRecord, root: Path) -> None:
        """Write this laptop's identity into its upper layer (through the overlay, so copy-up keeps
        the base's owners and modes): machine-id, host key, controller key, static network."""
        mid = root / "etc/machine-id"
        if not mid.read_text(encoding="utf-8").strip():
            mid.write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
        if not (root / "etc/ssh/ssh_host_ed25519_key").is_file():
            self._write_host_key(rec.name, root)
        ssh_dir = root / "home" / ADMIN_USER / ".ssh"
        auth = ssh_dir / "authorized_keys"
        auth.write_text(self.key_file.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8")
        stat = ssh_dir.stat()
        os.chown(auth, stat.st_uid, stat.st_gid)
        auth.chmod(0o600)
        self._write_names(st, rec, root)
        self._write_package_source(st, root)
        net = ipaddress.IPv4Network(st.subnet)
        shim = root / "usr/local/sbin/sysctl"
        if rec.home:
            (root / "etc/systemd/network/10-werne-lab.network").write_text(home.network_file(), encoding="utf-8")
            shim.write_text(home.SYSCTL_SHIM, encoding="utf-8")
            shim.chmod(0o755)
            return
        shim.unlink(missing_ok=True)
        if rec.behind:
            # No gateway: the laptop reaches its own network only (its router, the others on it).
            (root / "etc/systemd/network/10-werne-lab.network").write_text(
                "# werne lab: static address on a private network behind "
                f"{rec.behind} (Lab.private_network).\n"
                f"[Match]\nName=host0\n\n[Network]\nAddress={rec.address}/24\n"
                "LinkLocalAddressing=no\nIPv6AcceptRA=no\n", encoding="utf-8")
            return
        (root / "etc/systemd/network/10-werne-lab.network").write_text(
            "# werne lab: static address on the lab bridge (written by `werne lab up`).\n"
            f"[Match]\nName=host0\n\n[Network]\nAddress={rec.address}/{net.prefixlen}\n"
            f"Gateway={self._host_ip(st, 1)}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
            encoding="utf-8")

    def _lab_names(self, st: _LabState) -> dict[str, str]:
        """The names the lab's resolver answers: the package source and the gateway."""
        names = {aptrepo.REPO_HOST: self._host_ip(st, 1)}
        gw = st.hosts.get(GATEWAY_NAME)
        if gw is not None:
            names[gw.name] = names[f"{gw.name}.lab.werne.test"] = gw.address
        return names

    def _write_names(self, st: _LabState, rec: _HostRecord, root: Path) -> None:
        """/etc/hosts and /etc/resolv.conf; the gateway also gets the lab's resolver (lab.resolver).

        Name lookups must answer fast (sudo resolves its own host name). With a gateway, the
        laptops ask its resolver; a lab without one has no resolver, and /etc/hosts names the
        package source instead.
        """
        hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{rec.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        gw = st.hosts.get(GATEWAY_NAME)
        if gw is not None and gw.name != rec.name:
            hosts += f"{gw.address}\t{gw.name}\n"
        if gw is None:
            hosts += f"{self._host_ip(st, 1)}\t{aptrepo.REPO_HOST}\n"
        if rec.role == "server":
            # Its public name (the lab's TLS certificates' host): `werne mdm check` on the server
            # reaches its own nginx by that name, as a real server's DNS record makes it do.
            hosts += f"{rec.address}\t{LAB_HOST}\n"
        (root / "etc/hosts").write_text(hosts, encoding="utf-8")
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        resolv.write_text(resolver.resolv_conf(gw.address if gw is not None else None), encoding="utf-8")
        if rec.role != "gateway":
            return
        for path, text in resolver.gateway_files(self._lab_names(st)).items():
            target = root / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        wants = root / "etc/systemd/system/multi-user.target.wants" / resolver.UNIT_NAME
        wants.parent.mkdir(parents=True, exist_ok=True)
        if not wants.is_symlink():
            wants.symlink_to(f"/etc/systemd/system/{resolver.UNIT_NAME}")

    def _write_package_source(self, st: _LabState, root: Path) -> None:
        """The lab's package source as this host's only APT source, with its signing key."""
        if st.apt_port is None:
            return
        keyring = root / aptrepo.LAPTOP_KEYRING.relative_to("/")
        keyring.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(aptrepo.repo_dir(self.lab_dir) / "keys" / aptrepo.KEYRING_NAME, keyring)
        keyring.chmod(0o644)
        sources = root / aptrepo.LAPTOP_SOURCES.relative_to("/")
        sources.write_text(aptrepo.sources_file(st.apt_port), encoding="utf-8")

    def _package_source_cgroups(self, st: _LabState) -> tuple[Path, ...]:
        return tuple(root / CGROUP_PARENT / f"w{st.labid}-apt" for root in CGROUP_ROOTS)

    def _ensure_package_source(self, st: _LabState, server: bool = False) -> None:
        """The lab's package source (lab.aptrepo): its repository made, its HTTP server running on
        the host's bridge address (at the same port as before, which the laptops' sources name)."""
        debs = debs_dir(self.cache_dir, self.suite)
        extra = None
        if server or any(r.role == "server" for r in st.hosts.values()):
            from server.deploy import ACME_PACKAGES, SERVER_PACKAGES  # only a lab with a server needs them

            extra = server_debs(self.cache_dir, self.suite, SERVER_PACKAGES + ACME_PACKAGES)
        aptrepo.ensure(self.lab_dir, debs if debs.is_dir() else None, extra)
        address = self._host_ip(st, 1)
        if st.apt_port is None:
            st.apt_port = processes.free_port(address)
            self._save(st)
        d = aptrepo.repo_dir(self.lab_dir)
        if processes.running(aptrepo.PROCESS, d) is not None:
            return
        cgroups = self._package_source_cgroups(st)
        for c in cgroups:
            c.mkdir(parents=True, exist_ok=True)
        processes.up(aptrepo.service(self.lab_dir, address, st.apt_port, cgroups))

    def _stop_package_source(self) -> None:
        d = aptrepo.repo_dir(self.lab_dir)
        if d.is_dir():
            processes.stop(aptrepo.PROCESS, d)

    def _write_host_key(self, name: str, root: Path) -> str:
        key = root / "etc/ssh/ssh_host_ed25519_key"
        for p in (key, key.with_name(key.name + ".pub")):
            p.unlink(missing_ok=True)
        # In-process rather than ssh-keygen: one process less per laptop counts when 70 boot at once.
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH).decode()
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        line = f"{public} root@{name}"
        key.with_name(key.name + ".pub").write_text(line + "\n", encoding="utf-8")
        return line

    # ---- one laptop's runtime
    def _container_pid(self, rec: _HostRecord) -> int | None:
        """Host PID of the container's PID 1 (systemd), found in the laptop's cgroup tree."""
        if not pid_alive(rec.nspawn_pid, start=rec.nspawn_start):
            return None
        for pid in _cgroup_pids(_cgroup_dirs(rec.machine)[0]):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) > 1 and ids[-1] == "1":
                        return pid
        return None

    def _launch(self, st: _LabState, rec: _HostRecord, base: Path) -> None:
        root = self._mount(rec.name, base)
        self._prepare_root(st, rec, root)
        cgroups = _cgroup_dirs(rec.machine)
        for d in cgroups:
            d.mkdir(parents=True, exist_ok=True)
        if rec.home:
            netns = home.ensure(st.labid, self._index(rec), st.bridge, st.subnet, self._host_ip(st, 1))
            # nspawn grants CAP_NET_ADMIN only for the network modes it sets up itself; networkd
            # and wg-quick in the laptop need it for the namespace handed in here.
            network = f"--network-namespace-path={netns} --capability=CAP_NET_ADMIN"
        elif rec.behind:
            network = f"--network-bridge={_private_bridge(st.labid, st.private_networks[rec.behind])}"
        else:
            network = f"--network-bridge={st.bridge}"
        argv = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                "-D", str(root), "-M", rec.machine, f"--hostname={rec.name}",
                *network.split(" "), "--console=read-only", "--link-journal=no",
                "--resolv-conf=off", "--timezone=off", "--suppress-sync=yes"]
        if Path("/dev/net/tun").exists():
            # wireguard-go needs /dev/net/tun inside; no device cgroup is set up (unregistered,
            # kept unit), so binding the node is enough.
            argv.append("--bind=/dev/net/tun")
        pidfile = self.hosts_dir / rec.name / "nspawn.pid"
        pidfile.unlink(missing_ok=True)
        # `setsid --fork`: nspawn runs in its own session and is not our child, so it outlives
        # this process (the CLI's `lab up` returns) and no Popen object is left to wait for it.
        with open(self.hosts_dir / rec.name / "console.log", "ab") as log:
            _launch = subprocess.run(
                ["setsid", "--fork", "/bin/sh", "-c", LAUNCHER, "werne-lab-launch", str(cgroups[0]),
                 str(cgroups[1]), str(pidfile), *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=30,
                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
        if _launch.returncode != 0:
            raise LabBootError(f"{rec.name}: could not start systemd-nspawn "
                               f"(setsid exit {_launch.returncode})")
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError, ValueError):
                rec.nspawn_pid = int(pidfile.read_text())
                break
            if time.monotonic() > deadline:
                raise LabBootError(f"{rec.name}: the launcher did not start "
                                   f"(see {pidfile.parent}/console.log)")
            time.sleep(0.01)
        st_ = proc_state(rec.nspawn_pid)
        rec.nspawn_start = st_[1] if st_ else None
        if rec.name in st.private_networks:
            self._cable_router(st, rec)

    def _cable_router(self, st: _LabState, rec: _HostRecord) -> None:
        """Give a running router its second interface: a veth from its network namespace into its
        private network's bridge, with the network's .1. Made anew on each boot (a veth dies with
        the namespace it is in); nothing in the router (networkd matches only host0) touches it."""
        k = st.private_networks[rec.name]
        deadline = time.monotonic() + CABLE_TIMEOUT_S
        while (pid := self._container_pid(rec)) is None:
            if time.monotonic() > deadline or not pid_alive(rec.nspawn_pid, start=rec.nspawn_start):
                raise LabBootError(f"{rec.name}: its container did not start, cannot cable its private network")
            time.sleep(0.05)
        outside = f"vp{st.labid}{k}"
        if outside in _link_names():  # a straggler of the router's last boot
            _run(["ip", "link", "delete", outside], f"delete {outside}", check=False)
        _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", PRIVATE_IFNAME, "netns", str(pid)],
             f"cable {rec.name} to its private network")
        _run(["ip", "link", "set", outside, "master", _private_bridge(st.labid, k), "up"], f"bring up {outside}")
        address = f"{_private_host(k, PRIVATE_ROUTER_OCTET)}/{_private_subnet(k).prefixlen}"
        for argv in (["ip", "addr", "replace", address, "dev", PRIVATE_IFNAME],
                     ["ip", "link", "set", PRIVATE_IFNAME, "up"]):
            _run(["nsenter", "-t", str(pid), "-n", "--", *argv], f"{rec.name}: {' '.join(argv[:3])}")

    def _launch_all(self, st: _LabState, recs: list[_HostRecord], base: Path) -> None:
        """Launch several laptops at once: each launch mostly waits (mount, ssh-keygen, the
        launcher's first breath), so a few threads cut the time for 70 laptops a lot."""
        save_lock = threading.Lock()

        def launch(rec: _HostRecord) -> None:
            self._launch(st, rec, base)
            with save_lock:  # so that a killed `up` leaves the pids of what it started
                self._save(st)

        with ThreadPoolExecutor(max_workers=max(1, min(LAUNCH_THREADS, len(recs)))) as pool:
            futures = [pool.submit(launch, r) for r in recs]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _signal_host(self, rec: _HostRecord, sig: int) -> None:
        if pid_alive(rec.nspawn_pid, start=rec.nspawn_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.nspawn_pid, sig)  # type: ignore[arg-type]

    def _wait_gone(self, recs: list[_HostRecord], timeout: float,
                   resend: int | None = None) -> list[_HostRecord]:
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + 1.0
        pending = list(recs)
        while pending and time.monotonic() < deadline:
            if resend is not None and time.monotonic() > next_resend:
                # A container that is still early in its boot has no handler for the power-off
                # signal nspawn forwards, and the kernel drops it: ask again until it listens.
                for r in pending:
                    self._signal_host(r, resend)
                next_resend = time.monotonic() + 1.0
            for r in list(pending):
                if not pid_alive(r.nspawn_pid, start=r.nspawn_start):
                    pending.remove(r)
            if pending:
                time.sleep(0.1)
        return pending

    def _cleanup_host(self, rec: _HostRecord) -> None:
        """Make sure nothing of this laptop runs, is mounted, or is left in cgroups or /run."""
        _kill_and_remove_cgroups(_cgroup_dirs(rec.machine))
        self._unmount(rec.name)
        for sub in ("propagate", "unix-export", "incoming"):
            p = NSPAWN_RUN / sub / rec.machine
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)
        rec.nspawn_pid = rec.nspawn_start = None

    def _stop(self, recs: list[_HostRecord]) -> None:
        # SIGTERM makes nspawn power the container off cleanly; SIGKILL is the fallback.
        for r in recs:
            self._signal_host(r, signal.SIGTERM)
        left = self._wait_gone(recs, STOP_TIMEOUT_S, resend=signal.SIGTERM)
        for r in left:
            self._signal_host(r, signal.SIGKILL)
        self._wait_gone(left, 5)
        if len(recs) <= 1:
            for r in recs:
                self._cleanup_host(r)
            return
        with ThreadPoolExecutor(max_workers=min(LAUNCH_THREADS, len(recs))) as pool:
            list(pool.map(self._cleanup_host, recs))  # list(): re-raise the first error here

    @staticmethod
    def _index(rec: _HostRecord) -> int:
        return int(rec.name[3:])

    @staticmethod
    def _last_octet(rec: _HostRecord) -> int:
        return int(ipaddress.IPv4Address(rec.address).packed[3])

    def _sshd_answers(self, labid: str, rec: _HostRecord) -> bool:
        if rec.home:
            return home.sshd_answers(labid, self._index(rec))
        if rec.behind:
            # This machine has no route to it: ask from inside the laptop's own network namespace.
            pid = self._container_pid(rec)
            return pid is not None and _banner_in_netns(pid, rec.address)
        return ssh_banner(rec.address, timeout=1.0) is not None

    def _wait_ready(self, recs: list[_HostRecord]) -> None:
        if not recs:
            return
        st_labid = self._load().labid
        timeout = self.boot_timeout_s or max(90.0, 2.0 * len(recs))
        deadline = time.monotonic() + timeout

        def wait_one(r: _HostRecord) -> str | None:
            started = time.monotonic()
            next_check = started + self.ssh_failed_check_after_s
            while time.monotonic() < deadline:
                if not pid_alive(r.nspawn_pid, start=r.nspawn_start):
                    log = self.hosts_dir / r.name / "console.log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                    return f"{r.name}: systemd-nspawn exited during boot ({' '.join(tail) or 'no output'})"
                if self._sshd_answers(st_labid, r):
                    return None
                if time.monotonic() > next_check:
                    # Slow boots are normal on a busy machine; a failed sshd is not worth waiting for.
                    next_check = time.monotonic() + self.ssh_failed_check_after_s / 2
                    if self._ssh_failed(r):
                        return f"{r.name}: sshd failed to start{self._why(r)}"
                time.sleep(0.25)
            return f"{r.name}: sshd at {r.address}:22 did not answer within {timeout:.0f} s{self._why(r)}"

        with ThreadPoolExecutor(max_workers=min(32, len(recs))) as pool:
            errors = [e for e in pool.map(wait_one, recs) if e]
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise LabBootError(f"{errors[0]}{more}; console logs in {self.hosts_dir}/NAME/console.log")

    def _ssh_failed(self, rec: _HostRecord) -> bool:
        pid = self._container_pid(rec)
        if pid is None:
            return False
        try:
            argv = ["nsenter", "-t", str(pid), "-a", "--", "systemctl", "is-failed", "ssh.service"]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10, env={"PATH": SAFE_PATH})
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.stdout.strip() == "failed"

    def _why(self, rec: _HostRecord) -> str:
        """A short diagnosis of a laptop that booted but did not answer: systemd's state and failed units."""
        pid = self._container_pid(rec)
        if pid is None:
            return " (its systemd did not start)"
        try:
            argv = ["nsenter", "-t", str(pid), "-a", "--", "sh", "-c",
                    "systemctl is-system-running; systemctl --failed --no-legend --plain | cut -d' ' -f1"]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                 env={"PATH": SAFE_PATH}).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return ""
        if not out:
            return ""
        failed = f", failed: {', '.join(out[1:6])}" if len(out) > 1 else ""
        return f" (systemd: {out[0]}{failed})"

    def _wanted(self, st: _LabState, laptops: int, gateway: bool, server: bool = False) -> dict[str, _HostRecord]:
        wanted: dict[str, _HostRecord] = {}
        for i, name in enumerate(laptop_names(laptops)):
            wanted[name] = _HostRecord(name=name, machine=f"w{st.labid}-l{i + 1:02d}",
                                       address=self._host_ip(st, FIRST_LAPTOP_OCTET + i), role="laptop")
        if gateway:
            wanted[GATEWAY_NAME] = _HostRecord(name=GATEWAY_NAME, machine=f"w{st.labid}-gw",
                                               address=self._host_ip(st, GATEWAY_HOST_OCTET), role="gateway")
        if server:
            wanted[SERVER_NAME] = _HostRecord(name=SERVER_NAME, machine=f"w{st.labid}-srv",
                                              address=self._host_ip(st, SERVER_HOST_OCTET), role="server")
        return wanted

    # ---- public API
    def up(self, laptops: int = 3, gateway: bool = True,
           progress: Callable[[str], None] | None = None, server: bool = False) -> list[LabHost]:
        """Boot `laptops` laptops lap01.. (and the gateway vpngw, and with `server` the MDM server
        host `mdm`, lab.server) and wait for their sshd.

        Idempotent: running hosts stay as they are, missing ones boot, hosts beyond the requested
        set stop. Leftovers of a killed earlier run are cleaned up first.
        """
        if not 0 <= laptops <= MAX_LAPTOPS:
            raise LabInputError(f"--laptops must be between 0 and {MAX_LAPTOPS}, not {laptops}")
        for p in (self.state_dir, self.cache_dir):
            if any(c in str(p) for c in ",:\n"):  # overlayfs mount options cannot escape these
                raise LabInputError(f"{p}: the lab cannot use a path that contains ',' or ':'")
        self._require_root()
        if progress is not None and not (base_dir(self.cache_dir, self.suite) / COMPLETE_MARKER).is_file():
            progress(f"building the Debian {self.suite} base image in {self.cache_dir} (once, 1-3 minutes)")
        base = ensure_base(self.cache_dir, self.suite)
        with _flock(self._lock_file):
            st = self._load()
            # A killed `up` or a crashed machine leaves records whose laptops no longer run.
            for rec in st.hosts.values():
                if not pid_alive(rec.nspawn_pid, start=rec.nspawn_start):
                    self._cleanup_host(rec)
            with _flock(GLOBAL_LOCK):
                self._allocate_network(st)
                st.base = str(base)
                self._save(st)
                _register(st.labid, self.state_dir, self.owner_pid)
                self._ensure_bridge(st)
            self._ensure_package_source(st, server=server)
            self._ensure_controller_key()
            wanted = self._wanted(st, laptops, gateway, server)
            extra = [r for n, r in st.hosts.items() if n not in wanted]
            self._stop(extra)
            for r in extra:
                del st.hosts[r.name]
            _raise_inotify_limits()
            starting: list[_HostRecord] = []
            for name in list(st.private_networks):
                if name not in wanted:
                    del st.private_networks[name]
            for name, want in wanted.items():
                have = st.hosts.get(name)
                if have and have.behind in st.private_networks:
                    want.behind = have.behind
                    want.address = _private_host(st.private_networks[have.behind], self._last_octet(want))
                if have and pid_alive(have.nspawn_pid, start=have.nspawn_start) and have.address == want.address:
                    continue
                if have:
                    self._stop([have])
                    want.home = have.home and want.role == "laptop"
                st.hosts[name] = want
                starting.append(want)
            if progress is not None and starting:
                progress(f"booting {len(starting)} host(s)")
            try:
                self._launch_all(st, starting, base)
                self._wait_ready(starting)
            finally:
                self._save(st)
            self._write_inventory(st)
            return self._status(st)

    def down(self, purge: bool = False) -> None:
        """Stop every host of this lab and remove its mounts, cgroups, bridge and veths.

        The laptops' disks (upper layers, host keys) stay unless `purge`, so the next `up` boots
        the same laptops again; `purge` also removes them and the inventory.
        """
        self._require_root()
        with _flock(self._lock_file):
            st = self._load()
            self._stop(list(st.hosts.values()))
            self._stop_package_source()
            self._sweep(st)
            with _flock(GLOBAL_LOCK):
                home.remove_all(st.labid)
                self._delete_bridge(st)
                _unregister(st.labid, self.state_dir)
            for rec in st.hosts.values():
                rec.nspawn_pid = rec.nspawn_start = None
            if purge:
                # Never remove a state dir while an overlay on it is still mounted.
                if any(m.startswith(str(self.hosts_dir) + "/") for m in _mounted_paths()):
                    raise LabError(f"{self.hosts_dir}: an overlay is still mounted; not removing it")
                shutil.rmtree(self.hosts_dir, ignore_errors=True)
                shutil.rmtree(self.inventory_dir, ignore_errors=True)
                st.hosts.clear()
            self._save(st)

    def _sweep(self, st: _LabState) -> None:
        """Remove what a lost state file would not name: mounts under hosts/, this lab's cgroups."""
        prefix = str(self.hosts_dir) + "/"
        for m in sorted(_mounted_paths(), reverse=True):
            if m.startswith(prefix):
                _run(["umount", "--lazy", m], f"unmount {m}", check=False)
        if st.labid:
            _kill_and_remove_cgroups([d for root in CGROUP_ROOTS
                                      for d in (root / CGROUP_PARENT).glob(f"w{st.labid}-*")])
            for sub in ("propagate", "unix-export", "incoming"):
                for d in (NSPAWN_RUN / sub).glob(f"w{st.labid}-*"):
                    shutil.rmtree(d, ignore_errors=True)

    def _status(self, st: _LabState) -> list[LabHost]:
        out = []
        for rec in sorted(st.hosts.values(), key=lambda r: (r.role != "laptop", r.name)):
            pid = self._container_pid(rec)
            out.append(LabHost(name=rec.name, address=rec.address, pid=pid,
                               netns_path=f"/proc/{pid}/ns/net" if pid else None,
                               running=pid is not None, machine=rec.machine, role=rec.role))
        return out

    def status(self) -> list[LabHost]:
        """Every host this lab knows, running or not."""
        return self._status(self._load())

    def network(self) -> dict[str, str]:
        """This lab's bridge, subnet and the host's address on it."""
        st = self._load()
        if not st.subnet:
            return {}
        return {"bridge": st.bridge, "subnet": st.subnet, "host_address": self._host_ip(st, 1),
                "labid": st.labid}

    def _record(self, name: str) -> tuple[_LabState, _HostRecord]:
        st = self._load()
        if name not in st.hosts:
            known = ", ".join(sorted(st.hosts)) or "none"
            raise LabInputError(f"unknown lab host '{name}' (known: {known})")
        return st, st.hosts[name]

    def host(self, name: str) -> LabHost:
        st, rec = self._record(name)
        return next(h for h in self._status(st) if h.name == name)

    def stop_host(self, name: str) -> None:
        """Power one host off (it becomes unreachable); its disk stays for start_host()."""
        self._require_root()
        with _flock(self._lock_file):
            st, rec = self._record(name)
            self._stop([rec])
            self._save(st)

    def start_host(self, name: str) -> LabHost:
        """Boot a stopped host again, with the same disk and host key; waits for its sshd."""
        self._require_root()
        with _flock(self._lock_file):
            st, rec = self._record(name)
            if not pid_alive(rec.nspawn_pid, start=rec.nspawn_start):
                self._cleanup_host(rec)
                with _flock(GLOBAL_LOCK):
                    self._ensure_bridge(st)
                self._ensure_package_source(st)
                try:
                    self._launch(st, rec, Path(st.base))
                    self._wait_ready([rec])
                finally:
                    self._save(st)
            return next(h for h in self._status(st) if h.name == name)

    # ---- home office: laptops behind their own NAT router, switched off and on
    def vpn_pool(self) -> str:
        """A VPN pool of this lab's own (10.77.T.0/24 for the lab's 10.200.T.0/24), so labs side by
        side never route each other's tunnel addresses."""
        st = self._load()
        third = ipaddress.IPv4Network(st.subnet).network_address.packed[2]
        return f"10.77.{third}.0/24"

    def vpn_dns(self) -> str:
        """The address the laptops' `[vpn] dns` names in this lab: vpngw's first address in the lab's
        pool (vpn_pool), where the lab's resolver answers through the tunnel (lab.resolver)."""
        return str(next(ipaddress.IPv4Network(self.vpn_pool()).hosts()))

    def route_vpn_pool(self, pool: str | None = None) -> None:
        """Route the VPN pool from this machine (the controller) to vpngw, as the city's admin
        network routes it to its VPN gateway; nothing routes the laptops' home networks."""
        st = self._load()
        gw = st.hosts.get(GATEWAY_NAME)
        if gw is None:
            raise LabInputError("this lab has no VPN gateway (vpngw)")
        _run(["ip", "route", "replace", pool or self.vpn_pool(), "via", gw.address, "dev", st.bridge],
             "route the VPN pool")

    def home_office(self, names: list[str], home: bool = True) -> list[LabHost]:
        """Move laptops home (behind their own NAT router) or back to the office network: each is
        switched off, re-cabled and switched on with the same disk and host key; the inventory
        marks home laptops `home_office: true`."""
        self._require_root()
        with _flock(self._lock_file):
            st = self._load()
            recs = [self._host_record(st, n) for n in names]
            if any(r.role != "laptop" for r in recs):
                raise LabInputError("only laptops can go home")
            self._stop([r for r in recs if r.home != home])
            for r in recs:
                if r.home != home:
                    r.home = home
            self._save(st)
            self._start_many(st, [r for r in recs if not pid_alive(r.nspawn_pid, start=r.nspawn_start)])
            self._write_inventory(st)
            return [h for h in self._status(st) if h.name in names]

    def switch_off(self, names: list[str]) -> None:
        """Power laptops off (their disks, host keys and home networks stay)."""
        self._require_root()
        with _flock(self._lock_file):
            st = self._load()
            recs = [self._host_record(st, n) for n in names]
            self._stop(recs)
            self._save(st)

    def switch_on(self, names: list[str]) -> list[LabHost]:
        """Boot laptops that are off, all at once, and wait for their sshd."""
        self._require_root()
        with _flock(self._lock_file):
            st = self._load()
            recs = [self._host_record(st, n) for n in names]
            self._start_many(st, [r for r in recs if not pid_alive(r.nspawn_pid, start=r.nspawn_start)])
            return [h for h in self._status(st) if h.name in names]

    # ---- execution nodes: laptops on a network of their own behind one lab host
    def private_network(self, router: str, hosts: list[str]) -> str:
        """Put the laptops `hosts` on a private network behind the lab host `router` (an execution
        node) and return that network (10.210.K.0/24). The laptops are switched off, re-cabled
        onto the network's own bridge (keeping their last octet) and switched on, with the same
        disk and host key; the router gets a second interface there (.1). This machine has no
        address or route in that network: only the router reaches the laptops. The inventory
        names their new addresses. Calling it again for the same router adds laptops to its network.
        """
        self._require_root()
        with _flock(self._lock_file):
            st = self._load()
            r = self._host_record(st, router)
            if r.home or r.behind:
                raise LabInputError(f"{router} is not on the lab network: it cannot route a private network")
            recs = [self._host_record(st, n) for n in hosts]
            for rec in recs:
                if rec.role != "laptop" or rec.home or rec.name in st.private_networks or rec.name == router:
                    raise LabInputError(f"{rec.name}: only laptops on the lab network that route nothing "
                                        "can go behind another host")
                if rec.behind not in ("", router):
                    raise LabInputError(f"{rec.name} is already behind {rec.behind}")
            if router not in st.private_networks:
                used = set(st.private_networks.values())
                st.private_networks[router] = next(k for k in range(1, 255) if k not in used)
            k = st.private_networks[router]
            moving = [rec for rec in recs if rec.behind != router]
            self._stop(moving)
            for rec in moving:
                rec.behind = router
                rec.address = _private_host(k, self._last_octet(rec))
            self._save(st)
            with _flock(GLOBAL_LOCK):
                self._ensure_bridge(st)
            if self._container_pid(r) is not None:
                self._cable_router(st, r)
            self._start_many(st, moving)
            self._write_inventory(st)
            return str(_private_subnet(k))

    @staticmethod
    def _host_record(st: _LabState, name: str) -> _HostRecord:
        if name not in st.hosts:
            raise LabInputError(f"unknown lab host '{name}' (known: {', '.join(sorted(st.hosts)) or 'none'})")
        return st.hosts[name]

    def _start_many(self, st: _LabState, recs: list[_HostRecord]) -> None:
        for r in recs:
            self._cleanup_host(r)
        with _flock(GLOBAL_LOCK):
            self._ensure_bridge(st)
        self._ensure_package_source(st)
        try:
            self._launch_all(st, recs, Path(st.base))
            self._save(st)
            self._wait_ready(recs)
        finally:
            self._save(st)

    def exec(self, name: str, argv: list[str], timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside a running host (all its namespaces, as root), for test setup and readback."""
        st, rec = self._record(name)
        pid = self._container_pid(rec)
        if pid is None:
            raise LabError(f"lab host '{name}' is not running")
        try:
            return subprocess.run(["nsenter", "-t", str(pid), "-a", "--", *argv], capture_output=True,
                                  text=True, timeout=timeout, input=input,
                                  env={"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"})
        except subprocess.TimeoutExpired:
            raise LabError(f"command in '{name}' timed out after {timeout:.0f} s: {argv[0]}") from None

    def host_public_key(self, name: str) -> str:
        """The host's current SSH host key as an OpenSSH line: "ssh-ed25519 AAAA... root@NAME"."""
        self._record(name)
        pub = self._paths(name)[0] / "etc/ssh/ssh_host_ed25519_key.pub"
        if not pub.is_file():
            raise LabError(f"lab host '{name}' has no host key yet (never booted)")
        return pub.read_text(encoding="utf-8").strip()

    def regenerate_host_key(self, name: str) -> str:
        """Give a host a new SSH host key and restart its sshd, as an interceptor would look.

        Returns the new public key line. Pinned known_hosts entries no longer match afterwards.
        """
        self._require_root()
        with _flock(self._lock_file):
            st, rec = self._record(name)
            if self._container_pid(rec) is None:
                raise LabError(f"lab host '{name}' is not running")
            root = self._paths(name)[2]
            new = self._write_host_key(name, root)
        p = self.exec(name, ["systemctl", "restart", "ssh.service"], timeout=60)
        if p.returncode != 0:
            raise LabError(f"restarting sshd on '{name}' failed: {(p.stderr or p.stdout).strip()[-200:]}")
        self._wait_ready([rec])
        return new

    # ---- inventory
    def _write_inventory(self, st: _LabState) -> None:
        """hosts.yml with this lab's connection details, plus the demo's schools.yml, ipads.csv and appletvs.csv."""
        demo_vars: dict[str, dict[str, Any]] = {}
        demo_hosts = DEFAULT_INVENTORY / "hosts.yml"
        if demo_hosts.is_file():
            data = load_file(demo_hosts) or {}
            for group in (data.get("all", {}).get("children") or {}).values():
                for hname, hvars in ((group or {}).get("hosts") or {}).items():
                    demo_vars[hname] = dict(hvars or {})
        laptops: dict[str, dict[str, Any]] = {}
        gateways: dict[str, dict[str, Any]] = {}
        vpn_base = ipaddress.IPv4Address("10.77.0.10")
        for rec in sorted(st.hosts.values(), key=lambda r: r.name):
            hv = {k: v for k, v in demo_vars.get(rec.name, {}).items()
                  if k not in ("ansible_host", "ansible_port")}
            hv["ansible_host"] = rec.address
            if rec.role == "laptop":
                idx = int(rec.name[3:])
                hv.setdefault("owner", f"Lab User {idx:02d}")
                hv.setdefault("vpn_address", str(vpn_base + idx))
                hv.setdefault("asset_tag", f"LAB-NB-{idx:04d}")
                if rec.home:
                    hv["home_office"] = True
                laptops[rec.name] = hv
            elif rec.role == "gateway":
                gateways[rec.name] = hv
        children: dict[str, Any] = {"laptops": {"hosts": laptops}}
        if gateways:
            children["vpn_gateway"] = {"hosts": gateways}
        inv = {"all": {"vars": {"ansible_user": ADMIN_USER,
                                "ansible_python_interpreter": "/usr/bin/python3",
                                "ansible_ssh_private_key_file": str(self.key_file)},
                       "children": children}}
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        header = ("# Written by `werne lab up` for the lab in "
                  f"{self.state_dir} (bridge {st.bridge}, {st.subnet}). Do not edit.\n")
        (self.inventory_dir / "hosts.yml").write_text(
            header + yaml.safe_dump(inv, sort_keys=False, default_flow_style=False), encoding="utf-8")
        for extra in ("schools.yml", "ipads.csv", "appletvs.csv"):
            src = DEFAULT_INVENTORY / extra
            if src.is_file():
                shutil.copyfile(src, self.inventory_dir / extra)


# ---------------------------------------------------------------- the CLI's one call -----


@dataclass
class LabUpResult:
    """What `werne lab up` reports: the hosts, where the inventory and key are, and the iPads."""

    hosts: list[LabHost]
    inventory: Path
    key_file: Path
    ipads: Any = None


def lab_up(lab: Lab, laptops: int = 3, gateway: bool = True, ipads: int = 0,
           config: Any = None, progress: Callable[[str], None] | None = None) -> LabUpResult:
    """Boot the laptops, then (if asked) the simulated iPads of the MDM part of the lab (lab.mdm)."""
    if ipads < 0:
        raise LabInputError(f"--ipads must be 0 or more, not {ipads}")
    hosts = lab.up(laptops=laptops, gateway=gateway, progress=progress)
    ipad_result = None
    if ipads > 0:
        # Here, not at the top: lab.mdm brings the iPad and enrolment side, which the laptops'
        # lab (`werne lab status`, the laptop tests) never needs.
        from lab import mdm

        ipad_result = mdm.up(lab.state_dir, ipads, config=config)
    return LabUpResult(hosts=hosts, inventory=lab.inventory_dir / "hosts.yml", key_file=lab.key_file,
                       ipads=ipad_result)


def lab_down(lab: Lab, purge: bool = False) -> None:
    """Take the whole lab down: the laptops and the MDM part."""
    from lab import mdm  # as in lab_up: only the whole lab's commands need the MDM part

    mdm.down(lab.state_dir)
    lab.down(purge=purge)
