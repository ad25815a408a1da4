"""A lab laptop at home: its own network namespace behind a NAT "home router" namespace.

    lab bridge (office network + "internet")          home NN
    host .1, vpngw .2 ── hwLLLLNN ═══ wan0 [router netns whLLLLrNN] lan0 ═══ host0 [laptop netns whLLLLlNN]
                                      10.200.T.(130+NN)    192.168.178.1        192.168.178.20

Every home uses the same 192.168.178.0/24 (as real home routers do), the controller has no route
to it, and the router masquerades outbound and forwards nothing inbound: the only way from the
controller to the laptop is the WireGuard tunnel the laptop opens to vpngw. The laptop's container
joins the laptop netns (`systemd-nspawn --network-namespace-path`), so switching it off and on
keeps its home network; only `Lab.down()` removes the namespaces.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from lab.errors import LabError, LabInputError

HOME_LAN = ipaddress.IPv4Network("192.168.178.0/24")
ROUTER_LAN = "192.168.178.1"
LAPTOP_HOME = "192.168.178.20"
WAN_FIRST_OCTET = 130
MAX_HOMES = 254 - WAN_FIRST_OCTET
NETNS_DIR = Path("/run/netns")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ROUTER_NFT = """table ip werne_home
delete table ip werne_home
table ip werne_home {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan0" oifname "wan0" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
"""


def names(labid: str, idx: int) -> tuple[str, str, str, str]:
    """(router netns, laptop netns, WAN veth on the bridge, LAN veth in the router before rename)."""
    return f"wh{labid}r{idx:02d}", f"wh{labid}l{idx:02d}", f"hw{labid}{idx:02d}", f"hl{labid}{idx:02d}"


def _ip(*argv: str, netns: str | None = None, input: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, input=input, env={"PATH": SAFE_PATH})
    if p.returncode != 0:
        raise LabError(f"home network: {' '.join(cmd)} failed: {(p.stderr or p.stdout).strip()[-200:]}")


def wan_address(subnet: str, idx: int) -> str:
    if idx > MAX_HOMES:
        raise LabInputError(f"the lab has home routers for lap01..lap{MAX_HOMES:02d} only")
    return str(ipaddress.IPv4Network(subnet).network_address + WAN_FIRST_OCTET + idx)


def laptop_netns_path(labid: str, idx: int) -> Path:
    return NETNS_DIR / names(labid, idx)[1]


def ensure(labid: str, idx: int, bridge: str, subnet: str, host_gateway: str) -> Path:
    """Make this laptop's home (router + laptop namespaces, veths, NAT) if it is not there; returns
    the laptop namespace's path for nspawn."""
    router, laptop, wan, lan = names(labid, idx)
    if (NETNS_DIR / router).exists() and (NETNS_DIR / laptop).exists():
        return NETNS_DIR / laptop
    remove_one(labid, idx)
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    _ip("ip", "netns", "add", router)
    _ip("ip", "netns", "add", laptop)
    _ip("ip", "link", "add", wan, "type", "veth", "peer", "name", "wan0", "netns", router)
    _ip("ip", "link", "set", wan, "master", bridge, "up")
    _ip("ip", "link", "add", lan, "netns", router, "type", "veth", "peer", "name", "host0", "netns", laptop)
    _ip("ip", "link", "set", lan, "name", "lan0", netns=router)
    _ip("ip", "addr", "add", f"{wan_address(subnet, idx)}/{prefix}", "dev", "wan0", netns=router)
    _ip("ip", "addr", "add", f"{ROUTER_LAN}/{HOME_LAN.prefixlen}", "dev", "lan0", netns=router)
    for link in ("lo", "wan0", "lan0"):
        _ip("ip", "link", "set", link, "up", netns=router)
    _ip("ip", "route", "add", "default", "via", host_gateway, netns=router)
    _ip("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=router)
    _ip("nft", "-f", "-", netns=router, input=ROUTER_NFT)
    # nspawn keeps /proc/sys read-only in a namespace handed in by path, so wg-quick in the laptop
    # cannot set this itself as a real laptop would: the lab sets it here, and SYSCTL_SHIM lets
    # wg-quick's own write of the same value succeed.
    _ip("sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=1", netns=laptop)
    return NETNS_DIR / laptop


def remove_one(labid: str, idx: int) -> None:
    router, laptop, wan, _ = names(labid, idx)
    for ns in (laptop, router):
        if (NETNS_DIR / ns).exists():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, env={"PATH": SAFE_PATH})
    if Path(f"/sys/class/net/{wan}").exists():
        subprocess.run(["ip", "link", "del", wan], capture_output=True, timeout=30, env={"PATH": SAFE_PATH})


def remove_all(labid: str) -> None:
    """Every home of this lab: namespaces and WAN veths."""
    if not labid:
        return
    for p in NETNS_DIR.glob(f"wh{labid}*") if NETNS_DIR.is_dir() else []:
        subprocess.run(["ip", "netns", "del", p.name], capture_output=True, timeout=30, env={"PATH": SAFE_PATH})
    for link in Path("/sys/class/net").iterdir():
        if link.name.startswith(f"hw{labid}"):
            subprocess.run(["ip", "link", "del", link.name], capture_output=True, timeout=30,
                           env={"PATH": SAFE_PATH})


def sshd_answers(labid: str, idx: int, timeout: float = 1.0) -> bool:
    """Whether the laptop's sshd answers on its home address, asked from inside its home router."""
    router = names(labid, idx)[0]
    script = f'exec 3<>/dev/tcp/{LAPTOP_HOME}/22 && head -c 4 <&3'
    try:
        p = subprocess.run(["ip", "netns", "exec", router, "timeout", str(timeout), "bash", "-c", script],
                           capture_output=True, text=True, timeout=timeout + 5, env={"PATH": SAFE_PATH})
    except subprocess.TimeoutExpired:
        return False
    return p.stdout.startswith("SSH-")


def network_file(gateway_route: bool = True) -> str:
    """systemd-networkd config for the laptop's host0 at home (static, like a DHCP lease would be)."""
    return ("# werne lab: the laptop at home behind its NAT router (written by the lab).\n"
            f"[Match]\nName=host0\n\n[Network]\nAddress={LAPTOP_HOME}/{HOME_LAN.prefixlen}\n"
            f"Gateway={ROUTER_LAN}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")


# Lab only, in a home laptop's /usr/local/sbin (first on systemd's PATH): wg-quick's
# `sysctl -q net.ipv4.conf.all.src_valid_mark=1` succeeds when the lab already set that value.
SYSCTL_SHIM = """#!/bin/sh
# werne lab (lab/home.py): /proc/sys is read-only in this container; the lab set this value outside.
mark=/proc/sys/net/ipv4/conf/all/src_valid_mark
if [ "$*" = "-q net.ipv4.conf.all.src_valid_mark=1" ] && [ "$(cat "$mark")" = 1 ]; then
    exit 0
fi
exec /usr/sbin/sysctl "$@"
"""
