"""The server's config: /etc/werne/werne.toml is read when no other config is named, as system tools
read theirs; --config, $WERNE_CONFIG and ./werne.toml come first; without any, the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

import core.config
from core.config import load_config


@pytest.fixture
def system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "etc" / "werne.toml"
    path.parent.mkdir()
    path.write_text('[site]\nname = "from-etc"\n', encoding="utf-8")
    monkeypatch.setattr(core.config, "SYSTEM_CONFIG", path)
    monkeypatch.delenv("WERNE_CONFIG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return path


def test_the_system_config_is_read_when_none_is_named(system_config: Path) -> None:
    cfg = load_config()
    assert (cfg.site.name, cfg.source) == ("from-etc", str(system_config))


def test_named_configs_come_first(system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("werne.toml").write_text('[site]\nname = "from-cwd"\n', encoding="utf-8")
    assert load_config().site.name == "from-cwd"
    env = tmp_path / "env.toml"
    env.write_text('[site]\nname = "from-env"\n', encoding="utf-8")
    monkeypatch.setenv("WERNE_CONFIG", str(env))
    assert load_config().site.name == "from-env"
    option = tmp_path / "option.toml"
    option.write_text('[site]\nname = "from-option"\n', encoding="utf-8")
    assert load_config(option).site.name == "from-option"


def test_without_any_the_defaults(system_config: Path) -> None:
    system_config.unlink()
    cfg = load_config()
    assert (cfg.site.name, cfg.source) == ("demo", "built-in defaults")


def test_the_cli_reads_it_too(system_config: Path, run_cli) -> None:
    system_config.write_text('[site]\nname = "from-etc"\n[mdm]\nblast_radius = "many"\n', encoding="utf-8")
    r = run_cli("inventory", "check")
    assert r.exit_code == 2
    assert r.output == f"Error: {system_config}: mdm.blast_radius: Input should be a valid integer, unable to parse " \
                       "string as an integer\n"
