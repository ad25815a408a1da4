"""[mdm] replicas: the install writes N NanoMDM units on the one PostgreSQL, each on its own loopback
port, and nginx's upstream over all of them (passive health checks), with mdm.url as nginx's
loopback front for NanoMDM's API; one replica stays today's layout. Both nginx sites pass a real
`nginx -t`, the units `systemd-analyze verify`. The lab test (tests/ipad/test_replicas_lab.py) kills
a replica under 200 enrolling and answering iPads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from core.config import REPO_ROOT, Config, load_config
from lab.certs import make_tls
from lab.proxy import NGINX_BIN
from server.deploy import CORE_UNITS, server_layout, write_deployment
from server.install import playbook_vars
from tests.parts import require_file, require_tool
from tests.server.test_deploy import HOST, _nginx_t, server_config

REPLICAS = '[mdm]\nreplicas = 3\nreplica_base_port = 7100\n'


def replica_config(tmp_path: Path, mdm: str = REPLICAS) -> Config:
    cfg_file = server_config(tmp_path / "werne.toml")
    # server_config's [mdm] comes last but one: append the replica settings to it.
    text = cfg_file.read_text().replace("[mdm]\n", mdm, 1)
    cfg_file.write_text(text)
    return load_config(cfg_file)


def test_one_replica_is_todays_layout(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    layout = server_layout(cfg)
    assert layout.nanomdm_replicas == ("127.0.0.1:7000",) and not layout.api_front
    assert layout.units[:len(CORE_UNITS)] == CORE_UNITS
    write_deployment(cfg, tmp_path / "out")
    site = (tmp_path / "out" / "nginx" / "werne.conf").read_text()
    # One NanoMDM on PostgreSQL gets nginx's limit too: without it a burst of check-ins exhausts
    # PostgreSQL's connections and NanoMDM loses TokenUpdates (bench/RESULTS.md, issue 26 part 4).
    upstream = re.findall(r"upstream werne_nanomdm \{\n(.*?)\n\}", site, re.S)
    assert [line.strip() for line in upstream[0].splitlines() if not line.strip().startswith("#")] == [
        f"server 127.0.0.1:7000 max_conns={cfg.mdm.replica_max_conns};", "keepalive 32;"]
    assert "proxy_next_upstream" not in site and "listen 127.0.0.1:7000" not in site
    unit = (tmp_path / "out" / "systemd" / "nanomdm.service").read_text()
    assert "Replica" not in unit and "Description=NanoMDM (Apple MDM server) for werne\n" in unit


def test_replicas_get_a_unit_and_a_port_each_behind_nginx(tmp_path: Path) -> None:
    cfg = replica_config(tmp_path)
    layout = server_layout(cfg)
    assert layout.nanomdm_units == ("nanomdm.service", "nanomdm-replica2.service", "nanomdm-replica3.service")
    # Started one after the other, where the one NanoMDM was.
    assert layout.units[:6] == ("werne-webhook.service", "scepserver.service", "kmfddm.service",
                                *layout.nanomdm_units)
    write_deployment(cfg, tmp_path / "out")
    systemd = tmp_path / "out" / "systemd"
    for i, unit in enumerate(layout.nanomdm_units):
        text = (systemd / unit).read_text()
        assert (f"ExecStart=/srv/bin/nanomdm -listen 127.0.0.1:{7100 + i} -storage pgsql -storage-options delete=1 "
                "-ca /srv/werne-state/scep/nanomdm-ca.pem -webhook-url http://127.0.0.1:7080/webhook "
                "-dm http://127.0.0.1:7003/") in text
        assert f"Description=NanoMDM (Apple MDM server) for werne, replica {i + 1}\n" in text
    # KMFDDM enqueues through the API front (mdm.url), never one replica.
    assert "-enqueue http://127.0.0.1:7000/v1/enqueue/" in (systemd / "kmfddm.service").read_text()
    site = (tmp_path / "out" / "nginx" / "werne.conf").read_text()
    upstream = re.findall(r"upstream werne_nanomdm \{\n(.*?)\n\}", site, re.S)[0]
    assert re.findall(r"server (\S+) max_fails=2 fail_timeout=10s max_conns=20;", upstream) == [
        "127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:7102"]
    # Device messages go to another replica only on a connection error, never after a timeout.
    for location in ("/mdm", "/checkin"):
        block = re.findall(rf"location = {location} \{{\n(.*?)\n    \}}", site, re.S)[0]
        directives = [line.strip() for line in block.splitlines() if not line.strip().startswith("#")]
        assert "proxy_next_upstream error;" in directives and not any("timeout" in d for d in directives)
    # The API front, on loopback at mdm.url, in both states of the site (werne needs it before TLS).
    for name in ("werne.conf", "werne-bootstrap.conf"):
        text = (tmp_path / "out" / "nginx" / name).read_text()
        api = text.split("listen 127.0.0.1:7000;", 1)[1]
        assert "location /v1/ {\n        proxy_pass http://werne_nanomdm;" in api
        assert "proxy_next_upstream error http_502 http_503;" in api


def test_replica_sites_pass_nginx_t_and_units_verify(tmp_path: Path) -> None:
    require_file("nginx", NGINX_BIN, hint="scripts/setup.sh installs Debian's nginx")
    require_tool("systemd-analyze", hint="scripts/setup.sh installs systemd")
    cfg = replica_config(tmp_path)
    cfg.server.tls_cert_file = tmp_path / "tls" / "server.pem"
    cfg.server.tls_key_file = tmp_path / "tls" / "server.key"
    make_tls(tmp_path / "tls", HOST)
    cfg.server.bin_dir = REPO_ROOT / ".tools" / "bin"
    cfg.server.install_dir = tmp_path / "app"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "venv").symlink_to(REPO_ROOT / ".venv")
    result = write_deployment(cfg, tmp_path / "out")
    for name in ("werne.conf", "werne-bootstrap.conf"):
        r = _nginx_t(tmp_path, tmp_path / "out" / "nginx" / name)
        assert r.returncode == 0, r.stderr
    units = [str(f.path) for f in result.files if "nanomdm" in f.path.name]
    assert len(units) == 3
    r = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in r.stderr.splitlines() if any(Path(u).name in line for u in units)]
    assert r.returncode == 0 and problems == [], r.stderr


def test_install_starts_waits_for_and_removes_replicas(tmp_path: Path) -> None:
    cfg = replica_config(tmp_path, '[mdm]\nreplicas = 2\nreplica_base_port = 7100\n')
    layout = server_layout(cfg)
    for sub, names in (("systemd", layout.all_units), ("nginx", ("werne.conf", "werne-bootstrap.conf")),
                       ("werne", ("endpoints.toml",))):
        (tmp_path / "files" / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (tmp_path / "files" / sub / name).write_text(f"# {name}\n")
    v = playbook_vars(cfg, layout, tmp_path, (tmp_path / "w.tar", "0" * 64, "werne-0.1.0-py3-none-any.whl"))
    assert [u for u in v["werne_units"] if "nanomdm" in u] == ["nanomdm.service", "nanomdm-replica2.service"]
    # Each replica's port is waited for with the services; the API front once nginx runs.
    assert "127.0.0.1:7100" in v["werne_listens"] and "127.0.0.1:7101" in v["werne_listens"]
    assert "127.0.0.1:7000" not in v["werne_listens"] and v["werne_api_front"] == ["127.0.0.1:7000"]
    # A config that shrinks from more replicas stops and removes the ones beyond.
    assert [u for u in v["werne_unused_units"] if "nanomdm" in u] == [
        f"nanomdm-replica{i}.service" for i in range(3, 9)]
    assert "/etc/systemd/system/nanomdm-replica2.service" in v["werne_restart_inputs"]


def test_replica_ports_must_be_free(run_cli, tmp_path: Path) -> None:
    cfg = server_config(tmp_path / "werne.toml")
    cfg.write_text(cfg.read_text().replace("[mdm]\n", "[mdm]\nreplicas = 2\nreplica_base_port = 7079\n", 1))
    r = run_cli("deploy", "write", "--out", str(tmp_path / "o"), config=cfg)
    assert (r.exit_code, r.output) == (2, "Error: NanoMDM replica 2 and mdm.webhook_listen both listen on "
                                          "127.0.0.1:7080: give one another port\n")
    assert not (tmp_path / "o").exists()
    cfg.write_text(cfg.read_text().replace("replicas = 2", "replicas = 9"))
    r = run_cli("deploy", "write", "--out", str(tmp_path / "o"), config=cfg)
    assert r.exit_code == 2 and "replicas" in r.output and "8" in r.output and "Traceback" not in r.output
