"""WireGuard VPN for the home-office laptops: address pool, peers, gateway config, rotation,
revocation and handshake evidence. The laptops make their own keys; only public keys are stored."""
