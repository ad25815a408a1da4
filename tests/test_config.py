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
        for name in type(getattr(cfg, section)).model_fields:
            listed = name in data.get(section, {}) or f"# {name} = " in text
            assert listed, f"[{section}] {name} is missing from werne.example.toml (run tools/gen_example_config.py)"
