"""Issue 22: what the user hands werne as input: a FIFO given as a file is refused at once (never a
hang), JSON nested too deeply is one line (never a RecursionError traceback), and a secret pasted
where the *name* of its environment variable belongs is never echoed, even when it looks like a
variable name (letters and digits). Every `*_env` setting goes through the same check."""

from __future__ import annotations

import os
import subprocess
import typing
from pathlib import Path

import pytest

from core.config import Config, EnvName
from core.secrets import Secret
from tests.fixtures.cli import werne
from tests.fixtures.http import serving
from tests.fixtures.site import DEMO_INVENTORY, write_config


def one_error(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, r.stdout) == (code, ""), (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    return r.stderr.rstrip("\n")


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    key = tmp_path / "mdm-key"
    key.write_text("k")
    key.chmod(0o600)
    return write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state,
                        f'[mdm]\nurl = "http://127.0.0.1:9"\napi_key_file = "{key}"\n')


@pytest.mark.parametrize(("args", "what"), [(["ipad", "catalogue", "import"], "catalogue"),
                                            (["mdm", "push-cert", "install"], "certificate"),
                                            (["mdm", "scep", "init", "--import-ca-key", "KEY", "--import-ca-cert"],
                                             "CA certificate")],
                         ids=["catalogue import", "push-cert install", "scep init --import-ca-cert"])
def test_a_fifo_given_as_an_input_file_is_refused_not_waited_on(cfg: Path, tmp_path: Path, args: list[str],
                                                                what: str) -> None:
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    key = tmp_path / "ca.key"
    key.write_text("x")
    args = [str(key) if a == "KEY" else a for a in args]
    err = one_error(werne(cfg, *args, str(fifo), process=True))  # before: blocks until the 60 s timeout
    assert err == f"Error: {what} {fifo}: not a regular file (a FIFO)"


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_very_deep_json_in_the_catalogue_is_one_line(cfg: Path, tmp_path: Path, body: str) -> None:
    f = tmp_path / "pmv.json"
    f.write_text(body)
    err = one_error(werne(cfg, "ipad", "catalogue", "import", str(f)))
    assert err == f"Error: catalogue {f}: not JSON werne can read: nested too deeply"


def test_very_deep_json_from_a_server_is_a_client_error_not_a_recursion_error() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mdm_client.errors import KMFDDMError
    from mdm_client.kmfddm import KMFDDMClient

    class Deep(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"[" * 200_000
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Deep)) as server:
        client = KMFDDMClient(f"http://127.0.0.1:{server.server_port}", Secret("key", "test"), timeout=5)
        with pytest.raises(KMFDDMError) as e:
            client.declaration_status(["U-1"])
        assert "not JSON" in str(e.value)
        with pytest.raises(KMFDDMError):
            client.status_report_at("U-1", 0)
        client.session.close()


# ---------------------------------------------------------------- secrets in *_env settings --

PASTED = ["Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5", "4F9A8B7C6D5E4F9A8B7C6D5E", "sk_live_4f9a8b7c6d5e4f9a8b",
          "ghp0123456789abcdefABCDEF"]


SETTINGS = [
    ("web", "secret_key_env", ["web", "serve"]),
    ("mdm", "webhook_hmac_key_env", ["mdm", "serve-webhook"]),
    ("ddm", "api_key_env", ["inventory", "check"]),
    ("scep", "challenge_env", ["mdm", "enrolment-profile", "--out", "x"]),
    ("activation_lock", "key_env", ["ipad", "activation-lock", "show", "ZDWK1DEGZD"]),
    ("mdm", "storage_dsn_env", ["mdm", "db-init"]),
]


# Each setting once, through the command that reads it (the servers as their own process: a
# regression would start them); each shape of secret at least once among them. Every shape for
# every setting is the validator's, below (every `*_env` setting is the one EnvName type: the test
# after it).
@pytest.mark.parametrize(("section", "setting", "args", "secret"),
                         [(*s, PASTED[i % len(PASTED)]) for i, s in enumerate(SETTINGS)])
def test_a_secret_pasted_into_an_env_setting_is_refused_and_not_echoed(tmp_path: Path, secret: str, section: str,
                                                                      setting: str, args: list[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state, f'[{section}]\n{setting} = "{secret}"\n')
    r = werne(cfg, *args, env={"WERNE_WEB_SECRET": "x" * 32}, process="serve" in args or "serve-webhook" in args)
    err = one_error(r)
    assert f"{section}.{setting}" in err, err
    assert secret not in r.stderr + r.stdout


@pytest.mark.parametrize("secret", PASTED)
@pytest.mark.parametrize(("section", "setting"), [s[:2] for s in SETTINGS])
def test_every_shape_of_pasted_secret_is_refused_in_every_env_setting(tmp_path: Path, secret: str, section: str,
                                                                     setting: str) -> None:
    from core.config import load_config
    from core.errors import ConfigError

    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path, f'[{section}]\n{setting} = "{secret}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert f"{section}.{setting}" in str(e.value) and secret not in str(e.value)


def test_every_env_setting_is_checked_by_one_validator() -> None:
    """A new `*_env` setting cannot slip past: each one is of the type EnvName."""
    names = []

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")
            elif typing.get_origin(ann) is dict:
                walk(typing.get_args(ann)[1], f"{prefix}{name}.*.")
            elif name.endswith("_env"):
                names.append(f"{prefix}{name}")
                assert tuple(field.metadata) == typing.get_args(EnvName)[1:], f"{prefix}{name} is not an EnvName"

    walk(Config, "")
    assert len(names) >= 9, names


@pytest.mark.parametrize("name", ["WERNE_WEB_SECRET", "NANOMDM_STORAGE_DSN", "CITY_MDM_KEY_2", "X"])
def test_real_variable_names_still_pass(tmp_path: Path, name: str) -> None:
    from core.config import load_config

    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path, f'[web]\nsecret_key_env = "{name}"\n')
    assert load_config(cfg).web.secret_key_env == name
