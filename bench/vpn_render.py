"""Benchmark: render the WireGuard gateway config for 5,000 peers (provisioning.vpn.gateway, jinja2 with
StrictUndefined) and compare with a baseline that builds the same text by plain string joins.

Run: .venv/bin/python bench/vpn_render.py [PEERS]. Prints wall times (best of 5) and the ratio.
Not part of the test suite.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioning.vpn.gateway import GatewayPeer, GatewaySettings, render_gateway_config  # noqa: E402


def make_peers(n: int) -> list[GatewayPeer]:
    net = ipaddress.ip_network("10.64.0.0/16")
    peers = []
    for i in range(n):
        # Deterministic 32-byte "public keys" (valid base64 of 32 bytes; no real key pairs needed).
        key = base64.b64encode(hashlib.sha256(f"peer-{i}".encode()).digest()).decode()
        peers.append(GatewayPeer(f"lap{i:05d}", key, (f"{net.network_address + 2 + i}/32",)))
    return peers


def naive_render(peers: list[GatewayPeer], s: GatewaySettings) -> str:
    """The baseline: the same text, built with f-strings and one join (no template engine)."""
    parts = [
        "# Managed by werne (`werne vpn gateway apply`); changes here are overwritten.\n"
        f"# Rendered from the {len(peers)} active peer(s) in the state database.\n"
        "[Interface]\n"
        f"Address = {', '.join(s.addresses)}\n"
        f"ListenPort = {s.listen_port}\n"
        "# The private key was made on this gateway and never leaves it: wg-quick loads it from its file.\n"
        f"PostUp = wg set %i private-key {s.key_path}\n"
        f"PostUp = nft -f {s.nft_path}\n"
        f"PostDown = nft delete table inet {s.nft_table}\n"
    ]
    for p in peers:
        parts.append(f"\n[Peer]\n# {p.host}\nPublicKey = {p.public_key}\n"
                     f"AllowedIPs = {', '.join(p.allowed_ips)}\n")
    return "".join(parts)


def best_of(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    settings = GatewaySettings(interface="wg0", listen_port=51820, addresses=("10.64.0.1/16",),
                               pool_v4="10.64.0.0/16")
    peers = make_peers(n)
    t_first = time.perf_counter()
    text = render_gateway_config(peers, settings)  # includes loading and compiling the template
    t_first = time.perf_counter() - t_first
    assert text == naive_render(peers, settings), "the baseline must produce the same text"
    t_jinja = best_of(lambda: render_gateway_config(peers, settings))
    t_naive = best_of(lambda: naive_render(peers, settings))
    print(f"gateway config for {n} peers: {len(text) / 1024:.0f} KiB, {text.count('[Peer]')} [Peer] blocks")
    print(f"jinja2 (StrictUndefined), first call incl. template compile: {t_first * 1000:.1f} ms")
    print(f"jinja2 (StrictUndefined), best of 5: {t_jinja * 1000:.1f} ms")
    print(f"baseline (f-strings + join), best of 5: {t_naive * 1000:.1f} ms")
    print(f"ratio jinja2 / baseline: {t_jinja / t_naive:.2f}x")


if __name__ == "__main__":
    main()
