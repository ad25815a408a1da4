"""A lab of real Linux laptops on one machine: systemd-nspawn containers booted from a cached
Debian base, each with real systemd and sshd, its own network namespace, address and host key.

Entry point: lab.laptops.Lab (see docs/architecture.md, "The lab").
"""
