"""Issue 22's deploy guards on the server install path (`werne deploy write`, `werne server install`,
both through server.deploy): a config value that is not one plain token never reaches a unit, the
nginx site or an environment file; the HTTPS certificate and key are checked before anything is
written; and the deployment makes nginx the web page's one trusted proxy, so a forged
X-Forwarded-For from anywhere else is not believed."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from core.audit import list_events
from core.config import Config, load_config
from enrolment import accounts
from lab.certs import make_tls
from server.deploy import DeployError, render_template, server_layout, write_deployment
from server.errors import ServerInputError
from server.install import InstallTarget, install_server
from server.tls import TLSFileError, check_tls_files
from tests import parts
from tests.fixtures.enrolment import PASSWORD, SCHOOL_A, Browserless, FromAddress, make_site, start_web
from tests.server.test_deploy import HOST, server_config
from tests.server.test_install_config import config_text

# ---------------------------------------------------------------- a. one plain token each --------


@pytest.mark.parametrize(("setting", "value"), [
    ("install_dir", "/srv/app;\\n    location / { root /; }"),
    ("config_dir", "/srv/etc\\nExecStartPre=/bin/sh -c id"),
    ("bin_dir", "/srv/bin $HOME"),
    ("tls_cert_file", "/srv/tls/cert.pem; include /etc/shadow"),
    ("tls_key_file", "/srv/tls/\\\"key\\\".pem"),
    ("acme_root", "/srv/acme/../../etc"),
])
def test_a_server_path_that_is_not_plain_is_refused_and_nothing_written(run_cli, tmp_path: Path, setting: str,
                                                                        value: str) -> None:
    cfg = server_config(tmp_path / "werne.toml")
    text = re.sub(f"(?m)^{setting} = .*$", "", cfg.read_text())
    cfg.write_text(text.replace("[server]\n", f'[server]\n{setting} = "{value}"\n'))
    out = tmp_path / "out"
    r = run_cli("deploy", "write", "--out", str(out), config=cfg)
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"Error: server.{setting}: ") and r.output.count("\n") == 1, r.output
    assert "is not an absolute path of plain names" in r.output
    assert not out.exists()


def test_the_enrolment_path_must_be_a_plain_url_path(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    cfg.dep.enrol_url = f"https://{HOST}/mdm/enroll%3B"  # passes the URL door (RFC 3986 characters)
    with pytest.raises(DeployError, match=r"^dep\.enrol_url: its path '/mdm/enroll%3B'"):
        write_deployment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("section", "name", "value", "variable"), [
    ("server", "user", "werne\nExecStartPre=/bin/sh", "user"),
    ("server", "nanomdm_database", "nanomdm sslmode=disable host=evil", "nanomdm_database"),
    ("backup", "on_calendar", "daily\nExecStart=/bin/sh", "backup_on_calendar"),
])
def test_the_last_guard_where_templates_render(tmp_path: Path, section: str, name: str, value: str,
                                               variable: str) -> None:
    """A value that got past the config's doors (set in code, not validated) is still refused."""
    cfg = load_config(server_config(tmp_path / "werne.toml"))
    setattr(getattr(cfg, section), name, value)  # no validation on assignment: the doors are bypassed
    with pytest.raises(DeployError, match=f"^{variable}: refusing to write "):
        write_deployment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_render_checks_only_what_the_template_uses_and_comments_stay_one_line() -> None:
    layout = server_layout(_config(Config()))
    values = layout.template_values("werne deploy write")
    values["acme_email"] = "x\ny"  # no unit uses it
    assert "User=werne" in render_template("werne-web.service.j2", values)
    values["written_by"] = type(values["written_by"])("werne\n[Service]\nExecStartPre=/bin/sh")
    with pytest.raises(DeployError, match="^written_by: "):
        render_template("werne-web.service.j2", values)


def test_the_environment_file_module_refuses_a_value_systemd_would_read_as_syntax(tmp_path: Path) -> None:
    """playbooks/library/werne_env_file.py, run as Ansible runs it (its arguments from a file)."""
    module = Path(__file__).resolve().parents[2] / "playbooks" / "library" / "werne_env_file.py"

    def run(secret: str) -> dict[str, object]:
        (tmp_path / "secret").write_text(secret)
        args = tmp_path / "args.json"
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"files": [{
            "path": str(tmp_path / "svc.env"), "variables": [{"name": "API_KEY", "file": str(tmp_path / "secret")}]}],
            "_ansible_check_mode": True}}))
        p = subprocess.run([sys.executable, str(module), str(args)], capture_output=True, text=True, timeout=60,
                           check=False)
        return json.loads(p.stdout)

    assert run("aB3-_x9").get("failed") is not True
    for bad in ("ab$HOME", 'ab"cd', "ab\\ncd", "ab\ncd", "ab`id`"):
        answer = run(bad)
        assert answer["failed"] is True, bad
        assert answer["msg"].startswith("API_KEY: the value from ") and bad not in answer["msg"]


# ---------------------------------------------------------------- b. the TLS pair ----------------


def _config(cfg: Config) -> Config:
    cfg.mdm.server_url, cfg.scep.url = f"https://{HOST}/mdm", f"https://{HOST}/scep"
    return cfg


def _city(tmp_path: Path) -> tuple[Path, Path]:
    tls = make_tls(tmp_path / "tls", HOST)
    return tls.cert, tls.key


def _city_config(tmp_path: Path, cert: Path, key: Path) -> Path:
    return server_config(tmp_path / "werne.toml", extra=f'tls = "city"\ntls_cert_file = "{cert}"\n'
                                                       f'tls_key_file = "{key}"\n')


def test_a_good_pair_is_written(run_cli, tmp_path: Path) -> None:
    cert, key = _city(tmp_path)
    r = run_cli("deploy", "write", "--out", str(tmp_path / "out"), config=_city_config(tmp_path, cert, key))
    assert r.exit_code == 0, r.output
    assert f"ssl_certificate     {cert};" in (tmp_path / "out" / "nginx" / "werne.conf").read_text()


def test_a_key_of_another_certificate_is_refused_before_anything_is_written(run_cli, tmp_path: Path) -> None:
    cert, _ = _city(tmp_path / "a")
    _, other_key = _city(tmp_path / "b")
    out = tmp_path / "out"
    r = run_cli("deploy", "write", "--out", str(out), config=_city_config(tmp_path, cert, other_key))
    assert (r.exit_code, r.output) == (2, f"Error: server.tls_key_file: {other_key} is not the key of {cert} "
                                          "(its first certificate)\n")
    assert not out.exists()


def test_a_world_readable_key_is_refused(run_cli, tmp_path: Path) -> None:
    cert, key = _city(tmp_path)
    key.chmod(0o644)
    r = run_cli("deploy", "write", "--out", str(tmp_path / "out"), config=_city_config(tmp_path, cert, key))
    assert (r.exit_code, r.output) == (2, f"Error: server.tls_key_file: {key} is readable by every user "
                                          "(mode 0o644); chmod o-rwx it\n")
    assert not (tmp_path / "out").exists()


def test_an_expired_or_unreadable_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = _city(tmp_path)
    good = check_tls_files(cert, key)
    with pytest.raises(TLSFileError, match=f"^server.tls_cert_file: {cert} expired on "):
        check_tls_files(cert, key, now=good.not_after + timedelta(seconds=1))
    with pytest.raises(TLSFileError, match=f"^server.tls_cert_file {tmp_path}/nope.pem does not exist$"):
        check_tls_files(tmp_path / "nope.pem", key)
    os.mkfifo(tmp_path / "fifo.pem")  # never waited on
    with pytest.raises(TLSFileError, match="not a regular file"):
        check_tls_files(tmp_path / "fifo.pem", key)
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(TLSFileError, match="is not a PEM certificate"):
        check_tls_files(tmp_path / "garbage.pem", key)


def test_server_check_tls_names_the_pair(run_cli, tmp_path: Path) -> None:
    cert, key = _city(tmp_path)
    cfg = _city_config(tmp_path, cert, key)
    r = run_cli("server", "check-tls", "--json", config=cfg)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["subject"] == f"CN={HOST}"
    key.chmod(0o604)
    r = run_cli("server", "check-tls", config=cfg)
    assert r.exit_code == 2 and r.output.startswith("Error: server.tls_key_file: ")


def test_a_local_install_needs_the_city_pair_here(tmp_path: Path) -> None:
    parts.require_root("werne server install --local", why="--local refuses to run without root before it checks "
                       "the TLS files; run the tests as root")
    (tmp_path / "werne.toml").write_text(config_text().replace(
        "[server]\n", f'[server]\ntls = "city"\ntls_cert_file = "{tmp_path}/missing.pem"\n'
                      f'tls_key_file = "{tmp_path}/missing.key"\n'))
    cfg = load_config(tmp_path / "werne.toml")
    with pytest.raises(ServerInputError, match="^server.tls_cert_file .*missing.pem does not exist$"):
        install_server(cfg, InstallTarget(), tmp_path / "work")
    assert not (tmp_path / "work").exists()


# ---------------------------------------------------------------- c. nginx is the trusted proxy --


def test_the_deployment_makes_nginx_the_one_trusted_proxy(tmp_path: Path) -> None:
    cfg = load_config(server_config(tmp_path / "werne.toml"))  # web.listen = 127.0.0.1:7081
    files = {f.install_to: f.path for f in write_deployment(cfg, tmp_path / "out").files}
    endpoints = files["/srv/werne-state/endpoints.toml"]
    # Installed as the state dir's endpoints file, a werne.toml without the setting gets it ...
    state = tmp_path / "state"
    state.mkdir()
    (state / "endpoints.toml").write_text(endpoints.read_text())
    assert load_config(tmp_path / "werne.toml", state_dir=state).web.trusted_proxies == ["127.0.0.1/32"]
    # ... and nginx passes the client's own address, never the X-Forwarded-For it sent.
    site = files["/etc/nginx/sites-available/werne.conf"].read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:8080", ["127.0.0.1/32"]), ("0.0.0.0:8080", ["127.0.0.1/32"]),
    ("localhost:8080", ["127.0.0.1/32", "::1/128"]), ("192.0.2.5:8080", ["192.0.2.5/32"]),
])
def test_nginx_address_follows_web_listen(tmp_path: Path, listen: str, expected: list[str]) -> None:
    cfg = _config(Config())
    cfg.web.listen = listen
    write_deployment(cfg, tmp_path / "out")
    text = (tmp_path / "out" / "werne" / "endpoints.toml").read_text()
    assert f"trusted_proxies = [{', '.join(json.dumps(n) for n in expected)}]" in text


def test_a_config_trusting_another_proxy_is_refused(run_cli, tmp_path: Path) -> None:
    cfg = server_config(tmp_path / "werne.toml").read_text().replace(
        '[web]\n', '[web]\ntrusted_proxies = ["0.0.0.0/0"]\n')
    (tmp_path / "werne.toml").write_text(cfg)
    r = run_cli("deploy", "write", "--out", str(tmp_path / "out"), config=tmp_path / "werne.toml")
    assert (r.exit_code, r.output) == (2, "Error: web.trusted_proxies: 0.0.0.0/0 is not nginx's address "
                                          "(127.0.0.1/32); leave the setting out, the deployment sets it\n")
    assert not (tmp_path / "out").exists()


def test_a_forged_x_forwarded_for_is_believed_only_from_nginx(tmp_path: Path) -> None:
    """The web page with the endpoints file the deployment renders (real uvicorn): nginx's address
    (127.0.0.1) passes the client's address on; a client connecting from 127.0.0.3 forges one in vain."""
    s = make_site(tmp_path / "s")
    cfg = _config(load_config(s.config_path))
    cfg.web.listen = "127.0.0.1:8080"
    write_deployment(cfg, tmp_path / "out")
    (s.state_dir / "endpoints.toml").write_text((tmp_path / "out" / "werne" / "endpoints.toml").read_text())
    accounts.add_user(s.db(), "anna", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    srv = start_web(s)
    try:
        for source, forged in (("127.0.0.1", "192.0.2.44"), ("127.0.0.3", "198.51.100.7")):
            b = Browserless(srv.url)
            b.s.mount("http://", FromAddress(source))
            r = b.s.post(srv.url + "/login", data={"csrf_token": b.csrf("/login"), "username": "anna",
                                                   "password": PASSWORD},
                         headers={"X-Forwarded-For": forged}, timeout=10, allow_redirects=False)
            assert r.status_code == 303
    finally:
        srv.stop()
    logins = [e.detail for e in list_events(s.db(), None) if e.action == "web.login"]
    assert logins == [{"address": "192.0.2.44"}, {"address": "127.0.0.3"}]
    with sqlite3.connect(s.state_dir / "werne.db") as conn:
        assert conn.execute("SELECT count(*) FROM enrol_login_attempts WHERE address='198.51.100.7'").fetchone() == (0,)
