"""Pytest fixtures for the lab of laptops (registered in tests/conftest.py).

    lab_factory(n_laptops, gateway=True) -> Lab   a running lab in its own temporary state dir,
                                                  torn down (down + purge) after the test module
    lab_config(lab) -> Path                       a werne.toml whose site.inventory is the lab's
                                                  inventory and site.state_dir the lab's state dir
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import LabConfig
from tests import parts

NOT_ROOT_REASON = "the lab needs root (systemd-nspawn, overlay mounts, bridges); run the tests as root"


def require_root() -> None:
    """Root and systemd-nspawn, or the test is skipped (fails under CI=true) naming what is missing."""
    parts.require_root("the lab", marker="lab", why=NOT_ROOT_REASON)
    parts.require_tool("systemd-nspawn", marker="lab", hint="scripts/setup.sh installs systemd-container")


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., object]]:
    """Boot labs on demand; every lab made here is taken down at the end of the module, even when
    a test (or the boot itself) failed."""
    require_root()
    from lab.laptops import Lab, sweep_orphans

    # Labs of earlier test runs that were killed before their teardown would hold on to memory
    # and addresses for ever; only labs whose owner process is gone are removed here.
    sweep_orphans()
    labs: list[Lab] = []

    def make(n_laptops: int = 2, gateway: bool = True) -> Lab:
        lab = Lab(tmp_path_factory.mktemp("lab-state"), cache_dir=LabConfig().cache_dir, demo=False,
                  owner_pid=os.getpid())
        labs.append(lab)  # before up(): a half-booted lab is torn down too
        lab.up(laptops=n_laptops, gateway=gateway)
        return lab

    yield make
    errors: list[BaseException] = []
    for lab in reversed(labs):
        try:
            lab.down(purge=True)
        except Exception as e:  # keep tearing down the others, then report the first failure
            errors.append(e)
    if errors:
        raise errors[0]


def write_lab_config(lab: object, path: Path | None = None, extra: str = "") -> Path:
    """Write a werne.toml that points at this lab's inventory and state dir; return its path."""
    state_dir: Path = lab.state_dir  # type: ignore[attr-defined]
    inventory: Path = lab.inventory_dir  # type: ignore[attr-defined]
    cache_dir: Path = lab.cache_dir  # type: ignore[attr-defined]
    path = path or state_dir / "werne.toml"
    path.write_text(f'[site]\ninventory = "{inventory}"\nstate_dir = "{state_dir}"\n\n'
                    f'[lab]\ncache_dir = "{cache_dir}"\n{extra}', encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def lab_config() -> Callable[..., Path]:
    """lab_config(lab) -> path of a werne.toml for that lab (see write_lab_config)."""
    return write_lab_config
