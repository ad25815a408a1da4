"""`werne deploy write` with declarative management: a KMFDDM unit on loopback whose keys come only
from its environment file, and NanoMDM forwarding DeclarativeManagement to it (-dm)."""

from __future__ import annotations

from pathlib import Path

from core.config import Config
from server.deploy import write_deployment


def test_kmfddm_unit_and_nanomdm_dm(tmp_path: Path) -> None:
    cfg = Config()
    cfg.mdm.server_url, cfg.scep.url = "https://mdm.example-city.de/mdm", "https://mdm.example-city.de/scep"
    cfg.site.state_dir = Path("/var/lib/werne")
    write_deployment(cfg, tmp_path)
    unit = (tmp_path / "systemd" / "kmfddm.service").read_text()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start == ("ExecStart=/usr/local/bin/kmfddm -listen 127.0.0.1:9003 -storage filekv -storage-dsn "
                     "/var/lib/werne/kmfddm -enqueue http://127.0.0.1:9000/v1/enqueue/")
    assert "EnvironmentFile=/etc/werne/kmfddm.env" in unit and "-api" not in start and "-enqueue-key" not in start
    nano = next(line for line in (tmp_path / "systemd" / "nanomdm.service").read_text().splitlines()
                if line.startswith("ExecStart="))
    assert nano.endswith(" -dm http://127.0.0.1:9003/") and "hmac" not in nano
    site = (tmp_path / "nginx" / "werne.conf").read_text()
    assert "9003" not in site  # KMFDDM trusts X-Enrollment-ID: never behind the public front
