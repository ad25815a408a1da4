"""`werne server install` before it touches a server: what the config must say, and the variables
the playbook gets from it (every path from the config; city files only from the config folder;
secrets only as paths, never values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.config import Config, load_config
from server.deploy import DeployError, server_layout
from server.errors import ServerInputError
from server.install import InstallTarget, install_server, playbook_vars

HOST = "mdm.example-city.de"


def config_text(**overrides: str) -> str:
    keys = {
        "api_key_file": "/srv/etc/mdm-api.key", "webhook_hmac_key_file": "/srv/etc/hmac.key",
        "signing_cert_file": "/srv/etc/signer.pem", "signing_key_file": "/srv/etc/signer.key",
        **overrides,
    }
    mdm = "".join(f'{k} = "{v}"\n' for k, v in keys.items() if v)
    return (f'[site]\nstate_dir = "/srv/state"\n[server]\nconfig_dir = "/srv/etc"\nuser = "mdmsvc"\n'
            f'[mdm]\nserver_url = "https://{HOST}/mdm"\n{mdm}[scep]\nurl = "https://{HOST}/scep"\n'
            '[ddm]\napi_key_file = "/srv/etc/ddm.key"\n[web]\nsecret_key_file = "/srv/etc/web.key"\n'
            '[dep]\nenabled = false\nmachineinfo_ca_file = "/srv/etc/apple-device-ca.pem"\n')


def test_a_config_file_is_needed(run_cli) -> None:
    r = run_cli("server", "install", "--host", "192.0.2.10")
    assert (r.exit_code, r.output) == (2, "Error: the server install needs a config file (--config, $WERNE_CONFIG "
                                          "or /etc/werne/werne.toml): it becomes the server's /etc/werne/werne.toml\n")


def test_host_or_local_not_both(run_cli, tmp_path: Path) -> None:
    cfg = tmp_path / "werne.toml"
    cfg.write_text(config_text())
    for args in ((), ("--host", "192.0.2.10", "--local")):
        r = run_cli("server", "install", *args, config=cfg)
        assert (r.exit_code, r.output) == (
            2, "Error: name the server with --host ADDRESS, or install here with --local\n")


@pytest.mark.parametrize(("override", "message"), [
    ({"api_key_file": ""}, "mdm.api_key_file is not set (the install writes a random key there; e.g. /srv/etc/...)"),
    ({"signing_key_file": ""}, "mdm.signing_key_file is not set (the city's file, put on the server before the "
                               "install; e.g. /srv/etc/...)"),
])
def test_settings_the_services_need_are_named(tmp_path: Path, override: dict[str, str], message: str) -> None:
    cfg = tmp_path / "werne.toml"
    cfg.write_text(config_text(**override))
    with pytest.raises(ServerInputError) as e:
        install_server(load_config(cfg), InstallTarget(address="192.0.2.10"), tmp_path / "work")
    assert str(e.value) == message
    assert not (tmp_path / "work").exists()  # nothing was prepared


def test_state_dir_in_a_home_folder_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "werne.toml"
    cfg.write_text(config_text().replace('state_dir = "/srv/state"', 'state_dir = "/root/.local/state/werne"'))
    with pytest.raises(ServerInputError, match="must be an absolute path the service account owns"):
        install_server(load_config(cfg), InstallTarget(address="192.0.2.10"), tmp_path / "work")


def staged_vars(cfg: Config, work_dir: Path) -> dict[str, Any]:
    """The playbook's variables, with placeholder unit and site files staged in `work_dir`."""
    layout = server_layout(cfg)
    for d, names in (("systemd", layout.all_units), ("nginx", ("werne.conf", "werne-bootstrap.conf"))):
        (work_dir / "files" / d).mkdir(parents=True, exist_ok=True)
        for name in names:
            (work_dir / "files" / d / name).write_text(f"# {name}\n")
    (work_dir / "files" / "werne").mkdir(parents=True, exist_ok=True)
    (work_dir / "files" / "werne" / "endpoints.toml").write_text("# endpoints\n")
    return playbook_vars(cfg, layout, work_dir, (work_dir / "w.tar", "0" * 64, "werne-0.1.0-py3-none-any.whl"))


def test_playbook_variables_come_from_the_config(tmp_path: Path) -> None:
    cfg_file = tmp_path / "werne.toml"
    cfg_file.write_text(config_text() + '[compliance]\nluks_missing = "fail"\n')
    cfg = load_config(cfg_file)
    cfg.mdm.wifi_secret_file = Path("/elsewhere/wifi.secret")
    v = staged_vars(cfg, tmp_path)
    assert v["werne_user"] == "mdmsvc" and v["werne_config_file"] == "/srv/etc/werne.toml"
    assert v["werne_state_dir"] == "/srv/state" and v["werne_scep_trust_bundle"] == "/srv/state/scep/nanomdm-ca.pem"
    assert [f["dest"] for f in v["werne_endpoints_files"]] == ["/srv/state/endpoints.toml"]
    assert "/srv/state/endpoints.toml" in v["werne_restart_inputs"]
    assert v["werne_timers"] == ["werne-renew.timer", "werne-compliance.timer"]
    assert [f["path"] for f in v["werne_secret_files"]] == ["/srv/etc/mdm-api.key", "/srv/etc/hmac.key",
                                                            "/srv/etc/ddm.key", "/srv/etc/web.key"]
    # The city's files in the config folder get the service group; one elsewhere is only checked.
    assert v["werne_city_files"] == ["/srv/etc/signer.pem", "/srv/etc/signer.key", "/srv/etc/apple-device-ca.pem"]
    assert {"setting": "mdm.wifi_secret_file", "path": "/elsewhere/wifi.secret"} in v["werne_access"]
    # Without Apple School Manager: no NanoDEP binary, unit, key or environment file.
    assert "depserver" not in v["werne_binaries"] and v["werne_unused_units"] == [
        "nanodep.service", *(f"nanomdm-replica{i}.service" for i in range(2, 9)), "werne-compliance-worker.service"]
    assert "nanodep.service" not in v["werne_units"]
    assert all("nanodep" not in f["path"] for f in v["werne_env_files"])
    nanomdm_env = next(f for f in v["werne_env_files"] if f["path"] == "/srv/etc/nanomdm.env")
    assert {"name": "NANOMDM_STORAGE_DSN",
            "value": "host=/run/postgresql user=mdmsvc dbname=nanomdm sslmode=disable"} in nanomdm_env["variables"]
    assert {"name": "NANOMDM_API", "file": "/srv/etc/mdm-api.key"} in nanomdm_env["variables"]
    assert v["werne_databases"] == ["nanomdm"]
    assert v["werne_listens"] == ["127.0.0.1:9080", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9000",
                                  "127.0.0.1:8080"]


def test_the_acme_ca_is_a_setting(tmp_path: Path) -> None:
    """A city's own ACME CA (e.g. step-ca): its directory and the CA bundle certbot trusts for it reach
    the playbook (certbot's --server, and REQUESTS_CA_BUNDLE at the install and in certbot.timer's unit);
    unset, certbot asks Let's Encrypt with the system's trust store."""
    cfg_file = tmp_path / "werne.toml"
    cfg_file.write_text(config_text().replace(
        '[server]\n', '[server]\nacme_directory_url = "https://acme.example-city.de/acme/werne/directory"\n'
                      'acme_ca_file = "/srv/etc/city-root.pem"\n'))
    v = staged_vars(load_config(cfg_file), tmp_path)
    assert (v["werne_tls_mode"], v["werne_acme_server"], v["werne_acme_ca_file"]) == (
        "acme", "https://acme.example-city.de/acme/werne/directory", "/srv/etc/city-root.pem")
    assert "certbot" in v["werne_packages"]
    v = staged_vars(load_config(_written(tmp_path / "default.toml", config_text())), tmp_path)
    assert (v["werne_acme_server"], v["werne_acme_ca_file"]) == ("", "")


def test_an_acme_directory_in_the_clear_is_refused(tmp_path: Path) -> None:
    cfg = load_config(_written(tmp_path / "werne.toml", config_text().replace(
        '[server]\n', '[server]\nacme_directory_url = "http://acme.example-city.de/directory"\n')))
    with pytest.raises(ServerInputError, match="acme_directory_url http://acme.example-city.de/directory is not https"):
        install_server(cfg, InstallTarget(address="192.0.2.10"), tmp_path / "work")
    assert not (tmp_path / "work").exists()


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_metrics_folder_outside_the_state_dir_is_made_werne_s_and_writable_by_the_nightly_unit(
        tmp_path: Path) -> None:
    """[metrics] textfile_dir where the site's node_exporter reads (docs/operations.md, "Metrics"): the
    playbook makes the folder (werne's, 0755) and werne-compliance.service may write it; below the state
    dir, or with metrics off, the state dir's own write access is all there is."""
    from server.deploy import write_deployment

    def nightly_unit(cfg: Config) -> str:
        write_deployment(cfg, tmp_path / "files")
        return (tmp_path / "files" / "systemd" / "werne-compliance.service").read_text(encoding="utf-8")

    cfg = load_config(_written(tmp_path / "werne.toml",
                               config_text() + '[metrics]\ntextfile_dir = "/var/lib/werne-metrics"\n'))
    assert staged_vars(cfg, tmp_path)["werne_metrics_dir"] == "/var/lib/werne-metrics"
    assert "\nReadWritePaths=/srv/state /var/lib/werne-metrics\n" in nightly_unit(cfg)
    for text in ('[metrics]\ntextfile_dir = "/srv/state/metrics"\n',
                 '[metrics]\nenabled = false\ntextfile_dir = "/var/lib/werne-metrics"\n', ""):
        cfg = load_config(_written(tmp_path / "werne.toml", config_text() + text))
        assert staged_vars(cfg, tmp_path)["werne_metrics_dir"] == ""
        assert "\nReadWritePaths=/srv/state\n" in nightly_unit(cfg)
    cfg = load_config(_written(tmp_path / "werne.toml",
                               config_text() + '[metrics]\ntextfile_dir = "/var/lib/my metrics"\n'))
    with pytest.raises(DeployError, match="^metrics.textfile_dir: '/var/lib/my metrics' is not an absolute path"):
        server_layout(cfg)
