"""Configuration: defaults with no file, clear one-line errors for a missing or bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WERNE_CONFIG", raising=False)
    monkeypatch.delenv("WERNE_STATE_DIR", raising=False)
    cfg = load_config()
    assert cfg.source == "built-in defaults"
    assert cfg.inventory_dir.name == "demo"
    assert cfg.database_url == f"sqlite:///{cfg.state_dir / 'werne.db'}"
    cfg2 = load_config(state_dir=tmp_path / "s")
    assert cfg2.state_dir == tmp_path / "s"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "werne.toml").write_text('[site]\ninventory = "inv"\n[mdm]\napi_key_file = "secret/key"\n')
    cfg = load_config(tmp_path / "werne.toml")
    assert cfg.inventory_dir == tmp_path / "inv"
    assert cfg.mdm.api_key_file == tmp_path / "secret" / "key"


@pytest.mark.parametrize("text,expected", [
    ("[site\n", "not valid TOML"),
    ("[site]\ninventroy = 'x'\n", "site.inventroy: unknown setting"),
    ("[mdm]\nblast_radius = 'many'\n", "mdm.blast_radius: Input should be a valid integer"),
])
def test_bad_config_one_line(tmp_path: Path, text: str, expected: str):
    p = tmp_path / "werne.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert expected in str(ei.value) and "\n" not in str(ei.value)


def test_missing_config_file_cli(run_cli, tmp_path: Path):
    r = run_cli("inventory", "check", config=tmp_path / "nope.toml")
    assert r.exit_code == 2
    assert r.stderr == f"Error: config file {tmp_path / 'nope.toml'} does not exist\n"


def test_example_config_loads_and_lists_every_setting():
    """werne.example.toml is generated from the model; a new setting without a regenerated example fails."""
    import tomllib

    from core.config import REPO_ROOT, Config

    path = REPO_ROOT / "werne.example.toml"
    cfg = load_config(path)
    assert cfg.inventory_dir == REPO_ROOT / "inventories" / "demo"
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for section in Config.model_fields:
        if section == "source":
            continue
        if section == "execution_nodes":  # a list of tables: a commented example of one entry
            assert f"# [[{section}]]" in text
            continue
        for name in type(getattr(cfg, section)).model_fields:
            listed = name in data.get(section, {}) or f"# {name} = " in text
            assert listed, f"[{section}] {name} is missing from werne.example.toml (run tools/gen_example_config.py)"


def test_endpoints_file_fills_only_what_the_config_file_leaves_unset(tmp_path: Path, monkeypatch):
    from core.config import apply_endpoints, write_endpoints

    monkeypatch.delenv("WERNE_STATE_DIR", raising=False)
    state = tmp_path / "state"
    cfg_file = tmp_path / "werne.toml"
    cfg_file.write_text(f'[site]\nstate_dir = "{state}"\n[mdm]\nwebhook_listen = "127.0.0.1:7000"\n')
    before = load_config(cfg_file)
    assert before.mdm.url == "http://127.0.0.1:9000" and before.mdm.api_key_file is None
    write_endpoints(state, "mdm", {"url": "http://127.0.0.1:4711", "api_key_file": tmp_path / "k",
                                   "webhook_listen": "127.0.0.1:4712"})
    cfg = load_config(cfg_file)
    assert cfg.mdm.url == "http://127.0.0.1:4711" and cfg.mdm.api_key_file == tmp_path / "k"
    assert cfg.mdm.webhook_listen == "127.0.0.1:7000"  # the config file wins
    assert apply_endpoints(before) is before and before.mdm.url == "http://127.0.0.1:4711"
    write_endpoints(state, "dep", {"url": "http://127.0.0.1:4713"})  # other sections are kept
    cfg = load_config(cfg_file)
    assert (cfg.mdm.url, cfg.dep.url) == ("http://127.0.0.1:4711", "http://127.0.0.1:4713")
    (state / "endpoints.toml").write_text("[mdm]\nblast_radius = 'many'\n")
    with pytest.raises(ConfigError, match=r"endpoints.toml: mdm.blast_radius: Input should be a valid integer"):
        load_config(cfg_file)
