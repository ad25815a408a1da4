"""Issue 22: write errors and full disks. `--out` on a read-only, a full or a missing location, for
every command that writes a file, and a full disk when the nightly run takes its lock: one line
`Error: cannot write ...`, exit 2 (a place the user named that cannot take the file: read-only, a
folder that does not exist) or 3 (the disk is full: could not run), no traceback, and nothing left
behind (no half file, no temporary file, no empty lock file).

The read-only and full file systems are small tmpfs mounts made here, so these tests need root
(tests/parts.require_root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import load_config
from tests.fixtures.cli import werne
from tests.fixtures.site import DEMO_INVENTORY, write_config
from tests.parts import require_root


def one_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, r.stdout) == (code, ""), (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    return r.stderr.rstrip("\n")


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


@pytest.fixture
def places(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A read-only tmpfs, a full one (1 MB, filled to the last block) and a folder that is not there."""
    require_root("tmpfs mounts", why="mounting a small tmpfs (read-only, or full) needs root")
    ro, full = tmp_path / "ro", tmp_path / "full"
    mount_tmpfs(ro, "ro,size=1m")
    mount_tmpfs(full, "size=1m,nr_inodes=64")
    try:
        with open(full / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        yield {"read-only": ro, "full": full, "missing": tmp_path / "no-such-folder"}
    finally:
        for m in (ro, full):
            subprocess.run(["umount", str(m)], check=True)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site that can make every file: a push certificate installed, a signing identity, a SCEP
    challenge (tests/test_enrolment_profile's site)."""
    from tests.fixtures.enrolment_profile import install_topic, make_site

    state = tmp_path / "state"
    state.mkdir()
    cfg = make_site(tmp_path, state)
    (tmp_path / "signing.key").chmod(0o600)
    install_topic(load_config(cfg))
    return cfg


COMMANDS = {
    "push-cert csr": (["mdm", "push-cert", "csr", "--out"], "push.csr"),
    "activation-lock key": (["ipad", "activation-lock", "key", "--out"], "escrow.key"),
    "enrolment-profile": (["mdm", "enrolment-profile", "--out"], "enrol.mobileconfig"),
    "deploy write": (["deploy", "write", "--out"], "deploy"),
}
EXPECTED = {"read-only": (2, "Read-only file system"), "full": (3, "No space left on device"),
            "missing": (2, "the folder {parent} does not exist")}


@pytest.mark.parametrize("where", list(EXPECTED))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_on_a_place_that_cannot_take_the_file(site: Path, places: dict[str, Path], command: str,
                                                  where: str) -> None:
    args, name = COMMANDS[command]
    target = places[where] / name
    code, why = EXPECTED[where]
    err = one_error(werne(site, *args, str(target)), code)
    assert err.startswith("Error: cannot write ") and err.endswith(why.format(parent=places[where])), err
    if where != "missing":
        assert [p.name for p in places[where].iterdir() if p.name != "filler"] == []


def test_a_full_disk_when_the_nightly_run_takes_its_lock(tmp_path: Path, places: dict[str, Path]) -> None:
    """The state dir (where the lock lives) is full; the database is elsewhere."""
    state = places["full"]
    db = tmp_path / "db" / "werne.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state,
                       f'database_url = "sqlite:///{db}"\n')
    err = one_error(werne(cfg, "compliance", "run", "--laptops"), 3)
    assert err == f"Error: cannot take the compliance lock {state / 'compliance.lock'}: No space left on device"
    assert not (state / "compliance.lock").exists()
    assert [p.name for p in state.iterdir()] == ["filler"]
    # With room again, the lock is taken and given back as before.
    from compliance.lock import RunLock

    (state / "filler").unlink()
    with RunLock(state / "compliance.lock") as lock:
        assert lock.path.read_text().startswith('{"pid": ')
    assert [p.name for p in state.iterdir()] == []


def test_report_to_a_full_disk_is_exit_3(tmp_path: Path, places: dict[str, Path]) -> None:
    from core.db import Database
    from tests.fixtures.compliance import fleet, store_run

    state = tmp_path / "state"
    state.mkdir()
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state)
    config = load_config(cfg)
    database = Database(config.database_url)
    store_run(database, config, fleet())
    database.dispose()
    err = one_error(werne(cfg, "report", "--format", "csv", "--out", str(places["full"] / "r.csv")), 3)
    assert err == f"Error: cannot write {places['full'] / 'r.csv'}: No space left on device"
    assert [p.name for p in places["full"].iterdir()] == ["filler"]


def test_the_key_files_are_still_written_where_there_is_room(site: Path, tmp_path: Path) -> None:
    key = tmp_path / "escrow.key"
    r = werne(site, "ipad", "activation-lock", "key", "--out", str(key))
    assert r.returncode == 0, r.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600" and len(key.read_text().strip()) == 44
    before = key.read_bytes()
    one_error(werne(site, "ipad", "activation-lock", "key", "--out", str(key)), 2)  # never overwritten
    assert key.read_bytes() == before
