"""`werne deploy write`: the units and both nginx sites for the config's server, from the same
templates the install copies and the lab renders. Every path, port and account comes from the
config; the units pass `systemd-analyze verify`; both sites pass a real `nginx -t`; the bootstrap
site answers a real request on port 80 with the ACME challenge file and the redirect; nginx's body
limits match the receivers'; no secret is ever written into the files."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from core.config import REPO_ROOT, Config, load_config
from enrolment.ade import MAX_BODY as ENROL_MAX_BODY
from lab import processes
from lab.certs import make_tls
from lab.proxy import NGINX_BIN, main_config
from server.deploy import CORE_UNITS, SCHEDULED_UNITS, mdm_max_body, write_deployment
from tests.parts import require_file, require_tool

HOST = "mdm.example-city.de"


def server_config(path: Path, extra: str = "", host: str = HOST) -> Path:
    path.write_text(
        f'[site]\nstate_dir = "/srv/werne-state"\n'
        f'[server]\nuser = "mdmsvc"\ninstall_dir = "/srv/werne-app"\nconfig_dir = "/srv/werne-etc"\n'
        f'bin_dir = "/srv/bin"\n{extra}'
        f'[mdm]\nurl = "http://127.0.0.1:7000"\nserver_url = "https://{host}/mdm"\nwebhook_listen = "127.0.0.1:7080"\n'
        f'[scep]\nurl = "https://{host}/scep"\nlisten = "127.0.0.1:7002"\n'
        f'[ddm]\nurl = "http://127.0.0.1:7003"\n[web]\nlisten = "127.0.0.1:7081"\n'
        f'[dep]\nurl = "http://127.0.0.1:7001"\n', encoding="utf-8")
    return path


def test_every_path_port_and_account_comes_from_the_config(run_cli, tmp_path: Path) -> None:
    cfg = server_config(tmp_path / "werne.toml")
    out = tmp_path / "out"
    r = run_cli("deploy", "write", "--out", str(out), "--json", config=cfg)
    assert r.exit_code == 0, r.output
    files = {Path(f["install_to"]).name for f in json.loads(r.output)["files"]}
    assert files == {*CORE_UNITS, "nanodep.service", *SCHEDULED_UNITS, "werne.conf", "werne-bootstrap.conf",
                     "endpoints.toml"}
    # (run_cli gives every command a --state-dir of its own; the library call takes the config's.)
    write_deployment(load_config(cfg), out)
    text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    # Nothing of the old hard-coded layout is left: every one of these comes from the config above.
    for default in ("/var/lib/werne", "/etc/werne", "/opt/werne", "/usr/local/bin", "User=werne", ":9000",
                    ":9001", ":9002", ":9003", ":9080", ":8080"):
        assert default not in text, default
    nano = (out / "systemd" / "nanomdm.service").read_text()
    assert ("ExecStart=/srv/bin/nanomdm -listen 127.0.0.1:7000 -storage pgsql -storage-options delete=1 "
            "-ca /srv/werne-state/scep/nanomdm-ca.pem "
            "-webhook-url http://127.0.0.1:7080/webhook -dm http://127.0.0.1:7003/") in nano
    assert "User=mdmsvc" in nano and "EnvironmentFile=/srv/werne-etc/nanomdm.env" in nano
    assert "Requires=postgresql.service" in nano and "user=mdmsvc dbname=nanomdm" in nano
    assert "-cert-header" not in nano and "-api " not in nano and "-storage-dsn" not in nano
    web = (out / "systemd" / "werne-web.service").read_text()
    assert "ExecStart=/srv/werne-app/venv/bin/werne web serve --host 127.0.0.1 --port 7081" in web
    assert "Environment=WERNE_CONFIG=/srv/werne-etc/werne.toml" in web
    dep = (out / "systemd" / "nanodep.service").read_text()
    assert "ExecStart=/srv/bin/depserver -listen 127.0.0.1:7001 -storage filekv" in dep
    scep = (out / "systemd" / "scepserver.service").read_text()
    assert "EnvironmentFile=/srv/werne-etc/scep.env" in scep and "-challenge" not in scep
    assert "-allowrenew 0" in scep
    renew = (out / "systemd" / "werne-renew.service").read_text()
    assert "ExecStart=/srv/werne-app/venv/bin/werne mdm renew" in renew and "User=mdmsvc" in renew
    assert "OnCalendar=*-*-* 01:30:00" in (out / "systemd" / "werne-renew.timer").read_text()
    site = (out / "nginx" / "werne.conf").read_text()
    assert f"server_name {HOST};" in site
    assert f"ssl_certificate     /etc/letsencrypt/live/{HOST}/fullchain.pem;" in site
    assert "location /.well-known/acme-challenge/" in site  # ACME http-01 on port 80
    assert "location = /mdm {" in site and "proxy_pass http://werne_nanomdm;" in site
    assert "location /v1/ {\n        return 404;" in site and "location = /webhook {\n        return 404;" in site


def test_services_the_site_does_not_use_are_left_out(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    assert "nanodep.service" in {f.path.name for f in write_deployment(cfg, tmp_path / "with").files}
    cfg.dep.enabled = False  # no Apple School Manager
    assert "nanodep.service" not in {f.path.name for f in write_deployment(cfg, tmp_path / "without").files}


def test_host_must_be_the_server_urls(run_cli, tmp_path: Path) -> None:
    cfg = server_config(tmp_path / "werne.toml")
    r = run_cli("deploy", "write", "--host", "mdm.other-city.de", "--out", str(tmp_path / "o"), config=cfg)
    assert r.exit_code == 2
    assert r.output == ("Error: --host mdm.other-city.de differs from mdm.server_url's host mdm.example-city.de: the "
                        "enrolment profile sends the iPads there (set mdm.server_url, or leave --host out)\n")
    assert not (tmp_path / "o").exists()
    r = run_cli("deploy", "write", "--host", HOST.upper(), "--out", str(tmp_path / "o"), config=cfg)
    assert r.exit_code == 0, r.output
    r = run_cli("deploy", "write", "--host", "mdm_example;de", "--out", str(tmp_path / "o"), config=cfg)
    assert (r.exit_code, r.output) == (2, "Error: 'mdm_example;de' is not a DNS host name (e.g. mdm.example-city.de)\n")


def test_city_tls_needs_both_files_and_one_host_name(run_cli, tmp_path: Path) -> None:
    cfg = server_config(tmp_path / "werne.toml", extra='tls = "city"\n')
    r = run_cli("deploy", "write", "--out", str(tmp_path / "o"), config=cfg)
    assert (r.exit_code, r.output) == (2, 'Error: server.tls = "city" needs server.tls_cert_file and '
                                          "server.tls_key_file (the city's certificate chain and key, on the server)\n")
    cfg = tmp_path / "two.toml"
    cfg.write_text('[mdm]\nserver_url = "https://mdm.example-city.de/mdm"\n[scep]\nurl = "https://scep.example-city.de/scep"\n')
    r = run_cli("deploy", "write", "--out", str(tmp_path / "o"), config=cfg)
    assert (r.exit_code, r.output) == (2, "Error: scep.url names scep.example-city.de, not mdm.example-city.de: "
                                          "nginx serves one host name\n")


def test_body_limits_match_the_receivers(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    write_deployment(cfg, tmp_path / "out")
    site = (tmp_path / "out" / "nginx" / "werne.conf").read_text()
    limits = dict(re.findall(r"location (?:= )?(\S+) \{\n        client_max_body_size (\d+);", site))
    assert limits == {"/mdm/enroll": str(ENROL_MAX_BODY), "/mdm": str(mdm_max_body(cfg)),
                      "/checkin": str(mdm_max_body(cfg)), "/scep": str(64 * 1024),
                      "/": str(cfg.web.max_upload_bytes)}
    # A device report nginx lets through still fits the webhook once NanoMDM wrapped it (base64 in JSON).
    assert mdm_max_body(cfg) * 4 // 3 + 16 * 1024 <= cfg.mdm.webhook_max_body
    assert "4m" not in site
    # No version in any answer, HSTS on the HTTPS site.
    servers = site.count("server {")
    assert servers == 2 and site.count("server_tokens off;") == servers
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in site


def test_no_secret_reaches_the_files(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api").write_text("SECRET-API-KEY-123")
    cfg.mdm.api_key_file = secrets / "api"
    result = write_deployment(cfg, tmp_path / "out")
    for f in result.files:
        assert "SECRET-API-KEY-123" not in f.path.read_text()
        assert f.path.stat().st_mode & 0o777 == 0o644


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tool("systemd-analyze", hint="scripts/setup.sh installs systemd")
    require_file("werne in .venv", REPO_ROOT / ".venv" / "bin" / "werne", hint="run scripts/setup.sh")
    # The binaries must exist for verify: point the units at this checkout's.
    cfg = Config()
    cfg.mdm.server_url, cfg.scep.url = f"https://{HOST}/mdm", f"https://{HOST}/scep"
    cfg.server.bin_dir = REPO_ROOT / ".tools" / "bin"
    cfg.server.install_dir = tmp_path / "app"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "venv").symlink_to(REPO_ROOT / ".venv")
    cfg.site.state_dir = tmp_path / "state"
    result = write_deployment(cfg, tmp_path / "out")
    units = [str(f.path) for f in result.files if f.path.suffix in (".service", ".timer")]
    r = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in r.stderr.splitlines() if any(Path(u).name in line for u in units)]
    assert r.returncode == 0 and problems == [], r.stderr


def _nginx_t(tmp_path: Path, site: Path) -> subprocess.CompletedProcess[str]:
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, site))
    return subprocess.run([str(NGINX_BIN), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True,
                          text=True, timeout=30)


def test_both_sites_pass_nginx_t_and_only_bootstrap_without_a_certificate(tmp_path: Path) -> None:
    require_file("nginx", NGINX_BIN, hint="scripts/setup.sh installs Debian's nginx")
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    cfg.server.tls_cert_file = tmp_path / "tls" / "server.pem"  # not there yet
    cfg.server.tls_key_file = tmp_path / "tls" / "server.key"
    write_deployment(cfg, tmp_path / "out")
    bootstrap, full = tmp_path / "out" / "nginx" / "werne-bootstrap.conf", tmp_path / "out" / "nginx" / "werne.conf"
    # Before the certificate: the HTTPS site cannot load, the bootstrap site can.
    r = _nginx_t(tmp_path, full)
    assert r.returncode != 0 and "server.pem" in r.stderr
    r = _nginx_t(tmp_path, bootstrap)
    assert r.returncode == 0, r.stderr
    assert "ssl_certificate" not in bootstrap.read_text() and "listen 443" not in bootstrap.read_text()
    # Once it is there, the HTTPS site loads too.
    make_tls(tmp_path / "tls", HOST)
    r = _nginx_t(tmp_path, full)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def bootstrap_nginx(tmp_path: Path):
    """The bootstrap site served by a real nginx on a free loopback port (for port 80)."""
    require_file("nginx", NGINX_BIN, hint="scripts/setup.sh installs Debian's nginx")
    cfg = load_config(server_config(tmp_path / "werne.toml", extra=f'acme_root = "{tmp_path / "acme"}"\n'))
    write_deployment(cfg, tmp_path / "out")
    port = processes.free_port()
    site = (tmp_path / "out" / "nginx" / "werne-bootstrap.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};").replace("    listen [::]:80;\n", "")
    (tmp_path / "site.conf").write_text(site)
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, tmp_path / "site.conf"))
    proc = subprocess.Popen([str(NGINX_BIN), "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1, allow_redirects=False)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", tmp_path / "acme"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_bootstrap_site_answers_the_challenge_and_redirects(bootstrap_nginx) -> None:
    base, acme = bootstrap_nginx
    token = acme / ".well-known" / "acme-challenge" / "tok3n"
    token.parent.mkdir(parents=True)
    token.write_text("tok3n.key-authorisation")
    r = requests.get(f"{base}/.well-known/acme-challenge/tok3n", headers={"Host": HOST}, timeout=5)
    assert (r.status_code, r.text) == (200, "tok3n.key-authorisation")
    assert r.headers["Server"] == "nginx"  # no version (server_tokens off)
    r = requests.get(f"{base}/mdm/enroll?x=1", headers={"Host": HOST}, timeout=5, allow_redirects=False)
    assert (r.status_code, r.headers["Location"]) == (301, f"https://{HOST}/mdm/enroll?x=1")
    assert "nginx/" not in r.text and r.headers["Server"] == "nginx"


def test_a_sharded_nightly_gets_its_worker_unit(run_cli, tmp_path: Path) -> None:
    """[compliance] shards > 1: the worker unit is written and started with the services; 1: none."""
    one = write_deployment(load_config(server_config(tmp_path / "one.toml")), tmp_path / "one")
    assert not (tmp_path / "one" / "systemd" / "werne-compliance-worker.service").exists()
    cfg = server_config(tmp_path / "werne.toml", extra='[compliance]\nshards = 4\n')
    write_deployment(load_config(cfg), tmp_path / "out")
    unit = (tmp_path / "out" / "systemd" / "werne-compliance-worker.service").read_text()
    assert "ExecStart=/srv/werne-app/venv/bin/werne compliance worker" in unit
    assert "User=mdmsvc" in unit and "Environment=WERNE_CONFIG=/srv/werne-etc/werne.toml" in unit
    from server.deploy import server_layout

    assert server_layout(load_config(cfg)).units[-1] == "werne-compliance-worker.service"
    assert "werne-compliance-worker.service" not in server_layout(load_config(tmp_path / "one.toml")).units
    assert one is not None
