"""The lab's DNS: a real resolver (Debian's dnsmasq) on the VPN gateway, as the city's DNS is in
production, answering for the names the lab's laptops need.

The gateway (vpngw) runs `werne-lab-dns.service`: dnsmasq on every address it has, also the tunnel
address wg0 gets later (bind-dynamic), so laptops resolve through the tunnel from home (the
`[vpn] dns` setting: the gateway's first pool address) and on the office network (its bridge
address). It answers the lab's own names from a hosts file and nothing else: the lab has no
upstream, so any other name is NXDOMAIN at once instead of a timeout. Queries are logged to
/run/werne-lab-dns.log in the gateway, so a test can see which address asked.
"""

from __future__ import annotations

from pathlib import Path

UNIT_NAME = "werne-lab-dns.service"
CONFIG = Path("/etc/werne-lab/dnsmasq.conf")
HOSTS = Path("/etc/werne-lab/dns-hosts")
QUERY_LOG = Path("/run/werne-lab-dns.log")

UNIT = f"""# werne lab (lab/resolver.py): the city's resolver on the VPN gateway.
[Unit]
Description=werne lab resolver (dnsmasq)
After=network.target

[Service]
ExecStart=/usr/sbin/dnsmasq --keep-in-foreground --conf-file={CONFIG}
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

DNSMASQ_CONF = f"""# werne lab (lab/resolver.py): answers the lab's names, nothing else (no upstream).
port=53
# Every address, also the tunnel's once wg0 is up.
bind-dynamic
no-resolv
no-hosts
addn-hosts={HOSTS}
# Every other name is this server's to answer: NXDOMAIN at once, never a timeout.
local=/#/
domain-needed
log-queries
log-facility={QUERY_LOG}
"""


def hosts_file(names: dict[str, str]) -> str:
    """The resolver's hosts file: name -> IPv4 address."""
    return "".join(f"{address}\t{name}\n" for name, address in sorted(names.items()))


def gateway_files(names: dict[str, str]) -> dict[Path, str]:
    """The files the gateway needs for the resolver, by absolute path in the gateway."""
    return {
        Path("/etc/systemd/system") / UNIT_NAME: UNIT,
        CONFIG: DNSMASQ_CONF,
        HOSTS: hosts_file(names),
    }


def resolv_conf(nameserver: str | None) -> str:
    """A laptop's /etc/resolv.conf: the gateway's resolver, or none (a lab without a gateway)."""
    if nameserver is None:
        return "# werne lab: no name server in this lab (no gateway)\noptions timeout:1 attempts:1\n"
    return (f"# werne lab: the resolver on the lab's VPN gateway\nnameserver {nameserver}\n"
            "options timeout:2 attempts:2\n")
