"""The laptops' disks: LUKS recovery keys escrowed and verified (escrow), and what werne does to a
laptop that is lost, stolen or found again (lost: lock, crypto-erase, unlock)."""
