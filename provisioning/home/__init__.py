"""Home-office laptops: reached only through the VPN, often switched off, caught up when seen.

`reach` decides which address werne uses for each laptop (office or tunnel), `pending` is the
queue of work that waits for a laptop to come online, `presence` reads who is online from the
gateway's WireGuard handshakes, `scheduler` spreads the catch-up work, and `watch` is the loop
behind `werne laptop watch`.
"""
