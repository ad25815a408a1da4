"""`werne deploy write`: the production units and nginx site for one host name, from the same
templates the lab renders. The units pass `systemd-analyze verify`, the site passes `nginx -t`
with a test certificate, and no secret is ever written into them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.config import REPO_ROOT, load_config
from enrolment.deploy import UNITS, write_deployment
from lab.proxy import NGINX_BIN, main_config, make_tls
from tests.parts import require_file, require_tool

HOST = "mdm.example-city.de"


def test_cli_writes_every_file_for_the_host(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("deploy", "write", "--host", HOST, "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    files = {Path(f["install_to"]).name: f for f in json.loads(r.output)["files"]}
    assert set(files) == {*UNITS, "werne.conf"}
    site = (out / "nginx" / "werne.conf").read_text()
    assert f"server_name {HOST};" in site
    assert f"ssl_certificate     /etc/letsencrypt/live/{HOST}/fullchain.pem;" in site
    assert "location /.well-known/acme-challenge/" in site  # ACME http-01 on port 80
    # Routes: the device endpoints to NanoMDM, /scep to scepserver, the enrolment path and / to web;
    # NanoMDM's API and the webhook are not public.
    assert "location = /mdm {\n        proxy_pass http://werne_nanomdm;" in site
    assert "location = /scep {\n        proxy_pass http://werne_scep;" in site
    assert "location = /mdm/enroll {\n        proxy_pass http://werne_web;" in site
    assert "location /v1/ {\n        return 404;" in site and "location = /webhook {\n        return 404;" in site
    nano = (out / "systemd" / "nanomdm.service").read_text()
    assert "-storage pgsql" in nano and "EnvironmentFile=/etc/werne/nanomdm.env" in nano
    assert "-cert-header" not in nano and "-api " not in nano and "-storage-dsn" not in nano
    scep = (out / "systemd" / "scepserver.service").read_text()
    assert "EnvironmentFile=/etc/werne/scep.env" in scep and "-challenge" not in scep
    assert "-allowrenew 0" in scep


def test_city_certificate_and_bad_host(run_cli, tmp_path: Path) -> None:
    r = run_cli("deploy", "write", "--host", HOST, "--out", str(tmp_path), "--tls", "city")
    assert r.exit_code == 2
    assert r.output == "Error: --tls city needs --tls-cert and --tls-key (the city's certificate chain and key)\n"
    r = run_cli("deploy", "write", "--host", "mdm_example;de", "--out", str(tmp_path))
    assert r.exit_code == 2
    assert r.output == "Error: 'mdm_example;de' is not a DNS host name (e.g. mdm.example-city.de)\n"


def test_no_secret_reaches_the_files(tmp_path: Path, state_dir: Path) -> None:
    cfg = load_config(state_dir=state_dir)
    secrets = state_dir / "secrets"
    secrets.mkdir()
    (secrets / "api").write_text("SECRET-API-KEY-123")
    cfg.mdm.api_key_file = secrets / "api"
    result = write_deployment(cfg, HOST, tmp_path / "out")
    for f in result.files:
        assert "SECRET-API-KEY-123" not in f.path.read_text()
        assert f.path.stat().st_mode & 0o777 == 0o644


def test_units_pass_systemd_analyze_verify(tmp_path: Path, state_dir: Path) -> None:
    require_tool("systemd-analyze", hint="scripts/setup.sh installs systemd")
    # The binaries must exist for verify: point the units at this checkout's.
    cfg = load_config(state_dir=state_dir)
    result = write_deployment(cfg, HOST, tmp_path / "out", install_dir=str(REPO_ROOT),
                              bin_dir=str(REPO_ROOT / ".tools" / "bin"))
    units = [str(f.path) for f in result.files if f.path.suffix == ".service"]
    require_file("werne in .venv", REPO_ROOT / ".venv" / "bin" / "werne", hint="run scripts/setup.sh")
    r = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in r.stderr.splitlines() if any(Path(u).name in line for u in units)]
    assert r.returncode == 0 and problems == [], r.stderr


def test_site_passes_nginx_t_with_a_test_certificate(tmp_path: Path, state_dir: Path) -> None:
    require_file("nginx", NGINX_BIN, hint="scripts/setup.sh installs Debian's nginx")
    tls = make_tls(tmp_path / "tls", HOST)
    cfg = load_config(state_dir=state_dir)
    write_deployment(cfg, HOST, tmp_path / "out", tls="city", tls_cert=str(tls.cert), tls_key=str(tls.key))
    (tmp_path / "logs").mkdir()
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, tmp_path / "out" / "nginx" / "werne.conf"))
    r = subprocess.run([str(NGINX_BIN), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and "test is successful" in r.stderr
