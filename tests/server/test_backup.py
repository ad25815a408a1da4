"""`werne backup create | verify | restore` on a site on disk (SQLite, no services): the archive's
format and contents, a restore that brings every file back with its mode, retention, and every
refusal (truncated, altered, another site's, wrong password, a server holding data), after which
nothing on the server has changed. The drill with real services is test_server_drill_lab.py."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from core.config import Config, load_config
from core.secrets import Secret
from server import backup_archive
from server.backup import create_backup, prune, restore_backup, verify_backup
from server.backup_archive import MAGIC, decrypt, members
from server.errors import ArchiveRefused
from tests.fixtures.site import DEMO_INVENTORY, write_secret

PASSWORD = Secret("correct horse battery staple", "test")
KEY_TEXT = "mdm-api-key-0123456789abcdef"
ESCROW_KEY = "ZmVybmV0LWtleS1vZi10aGUtY2l0eS0xMjM0NTY3OA=="


@dataclass
class Site:
    root: Path
    config: Config
    config_file: Path

    @property
    def state(self) -> Path:
        return self.config.state_dir

    def db_rows(self, sql: str) -> list[tuple[object, ...]]:
        con = sqlite3.connect(self.state / "werne.db")
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


def _snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Every file below roots (but kept-aside stores and SQLite's side files, which any reader of a
    WAL database makes): its content hash and mode."""
    out: dict[str, tuple[str, int]] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and ".pre-restore-" not in str(p) and not p.name.endswith(("-wal", "-shm")):
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o7777)
    return out


@pytest.fixture(autouse=True)
def low_scrypt_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Archives here are made with the lowest scrypt cost a werne reads (2^10, not 2^15): the cost
    travels in each archive's header and decrypt reads it from there, so the path is the same and
    each derivation takes a millisecond. The test below checks what a real archive carries."""
    monkeypatch.setattr(backup_archive, "SCRYPT_N", 2**10)


def test_a_real_archive_carries_the_shipped_scrypt_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    data = backup_archive.encrypt(b"the payload", PASSWORD)
    (n,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    kdf = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])["kdf"]
    assert (kdf["n"], kdf["r"], kdf["p"]) == (2**15, 8, 1)
    assert decrypt(data, PASSWORD) == b"the payload"


@pytest.fixture
def site(tmp_path: Path, migrated_db: Callable[[Path], str]) -> Site:
    etc, state, elsewhere = tmp_path / "etc-werne", tmp_path / "var-lib-werne", tmp_path / "elsewhere"
    for d in (etc, state, elsewhere):
        d.mkdir()
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    for f in DEMO_INVENTORY.iterdir():
        if f.is_file():
            (inventory / f.name).write_bytes(f.read_bytes())
    write_secret(etc / "mdm-api.key", KEY_TEXT)
    (etc / "mdm-api.key").chmod(0o640)
    write_secret(elsewhere / "activation-lock.key", ESCROW_KEY)
    write_secret(elsewhere / "backup.password", PASSWORD.reveal())
    (state / "scep" / "depot").mkdir(parents=True)
    (state / "scep" / "depot" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nlab\n")
    write_secret(state / "scep" / "challenge", "challenge-of-the-city")
    (state / "kmfddm" / "declarations").mkdir(parents=True)
    (state / "kmfddm" / "declarations" / "pupil.json").write_text('{"Type": "com.apple.configuration"}')
    (state / "lab").mkdir()
    (state / "lab" / "not-the-servers").write_text("lab")
    migrated_db(state / "werne.db")
    con = sqlite3.connect(state / "werne.db")
    con.execute("INSERT INTO audit_events (at, actor, action, target, detail) "
                "VALUES ('2026-12-06 10:00:00', 'admin', 'test', 'DMPX1', '{}')")
    con.commit()
    con.close()
    config_file = etc / "werne.toml"
    config_file.write_text(
        f'[site]\nname = "werne-lab"\nstate_dir = "{state}"\ninventory = "{inventory}"\n\n'
        f'[server]\nconfig_dir = "{etc}"\n\n'
        f'[mdm]\napi_key_file = "{etc / "mdm-api.key"}"\n\n'
        f'[activation_lock]\nkey_file = "{elsewhere / "activation-lock.key"}"\n\n'
        f'[backup]\ndir = "{tmp_path / "backups"}"\npassword_file = "{elsewhere / "backup.password"}"\nkeep = 3\n',
        encoding="utf-8")
    return Site(tmp_path, load_config(config_file), config_file)


def _manifest(archive: Path) -> dict[str, object]:
    first = next(members(decrypt(archive.read_bytes(), PASSWORD)))
    return dict(json.loads(first[1]))


def test_an_archive_holds_the_config_keys_stores_inventory_and_a_consistent_database(site: Site) -> None:
    result = create_backup(site.config, PASSWORD)
    data = result.archive.read_bytes()
    assert data.startswith(MAGIC) and result.archive.stat().st_mode & 0o777 == 0o600
    assert KEY_TEXT.encode() not in data and ESCROW_KEY.encode() not in data  # encrypted, not only packed
    manifest = _manifest(result.archive)
    assert manifest["site"] == "werne-lab" and manifest["werne_version"]
    entries = {e["path"]: e for e in manifest["entries"]}  # type: ignore[attr-defined]
    etc, state = site.root / "etc-werne", site.state
    for path in (etc / "werne.toml", etc / "mdm-api.key", state / "scep" / "challenge",
                 state / "scep" / "depot" / "ca.pem", state / "kmfddm" / "declarations" / "pupil.json",
                 site.root / "elsewhere" / "activation-lock.key", site.root / "inventory" / "ipads.csv"):
        assert str(path) in entries, path
        assert entries[str(path)]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entries[str(etc / "mdm-api.key")]["mode"] == 0o640
    assert entries[str(site.root / "elsewhere" / "activation-lock.key")]["what"] == "activation_lock.key_file"
    assert entries[str(state / "werne.db")]["kind"] == "sqlite"
    # werne's schema revision, read from the database copy.
    assert manifest["schema"]["werne"] == site.db_rows("SELECT version_num FROM alembic_version")[0][0]  # type: ignore[index]
    # Left out: the password itself, the lab, the archives.
    assert not [p for p in entries if "backup.password" in p or "/lab/" in p or "/backups/" in p]
    assert result.databases == ["werne's database"]
    assert any("NanoMDM's database" in item for item in result.left_out)


def test_verify_reads_the_manifest_and_restores_nothing(site: Site) -> None:
    archive = create_backup(site.config, PASSWORD).archive
    before = _snapshot(site.root)
    info = verify_backup(site.config, archive, PASSWORD).to_dict()
    assert info["site"] == "werne-lab" and info["entries"] >= 8 and info["databases"] == ["werne's database"]
    assert _snapshot(site.root) == before


def test_restore_onto_an_empty_server_brings_back_files_modes_database_and_stores(site: Site) -> None:
    archive = create_backup(site.config, PASSWORD).archive
    before = _snapshot(site.root / "etc-werne", site.state / "scep", site.state / "kmfddm")
    wanted_rows = site.db_rows("SELECT actor, target FROM audit_events")
    # The fresh server: its own keys, a store of its own, an empty database.
    (site.root / "etc-werne" / "mdm-api.key").write_text("a fresh server's key")
    (site.state / "scep" / "challenge").unlink()
    (site.state / "kmfddm" / "declarations" / "fresh.json").write_text("{}")
    con = sqlite3.connect(site.state / "werne.db")
    con.execute("DELETE FROM audit_events")
    con.commit()
    con.close()
    result = restore_backup(site.config, archive, PASSWORD, manage_services=False)
    assert _snapshot(site.root / "etc-werne", site.state / "scep", site.state / "kmfddm") == before
    assert site.db_rows("SELECT actor, target FROM audit_events") == wanted_rows
    # The store was swapped whole; the fresh server's is kept beside it.
    aside = [p for p in site.state.iterdir() if p.name.startswith("kmfddm.pre-restore-")]
    assert len(aside) == 1 and (aside[0] / "declarations" / "fresh.json").is_file()
    assert str(aside[0]) in result.kept_aside
    assert not list(site.state.parent.glob(".werne-restore-*"))  # the staging folder is gone
    # The next backup leaves the kept-aside store out.
    again = _manifest(create_backup(site.config, PASSWORD).archive)
    assert not [e for e in again["entries"] if ".pre-restore-" in e["path"]]  # type: ignore[attr-defined]


def _truncated(data: bytes) -> bytes:
    return data[:-100]


def _body_flipped(data: bytes) -> bytes:
    i = len(data) - 40
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


def _header_altered(data: bytes) -> bytes:
    # The header's length stays; a KDF parameter changes (the header is the ciphertext's AAD).
    (n,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    head = data[len(MAGIC) + 4:len(MAGIC) + 4 + n]
    return data.replace(head, head.replace(b'"p": 1', b'"p": 2'), 1)


@pytest.mark.parametrize(("change", "reason"), [
    (_truncated, "the archive is truncated"),
    (_body_flipped, "the archive was altered"),
    (_header_altered, "wrong password for this archive"),  # other KDF parameters give another key
    (lambda d: d + b"x", "the archive has data after its end"),
    (lambda d: b"PK\x03\x04" + d[4:], "not a werne backup archive"),
    (lambda d: d[:len(MAGIC) + 10], "the archive is truncated or altered"),
])
def test_a_damaged_archive_is_refused_and_nothing_is_overwritten(
        site: Site, change: Callable[[bytes], bytes], reason: str) -> None:
    good = create_backup(site.config, PASSWORD).archive
    bad = site.root / "bad.wbk"
    bad.write_bytes(change(good.read_bytes()))
    (site.root / "etc-werne" / "mdm-api.key").write_text("the fresh server's key")
    before = _snapshot(site.root / "etc-werne", site.state)
    for action in (lambda: verify_backup(site.config, bad, PASSWORD),
                   lambda: restore_backup(site.config, bad, PASSWORD, manage_services=False)):
        with pytest.raises(ArchiveRefused) as e:
            action()
        assert str(e.value).startswith(reason), str(e.value)
    assert _snapshot(site.root / "etc-werne", site.state) == before
    assert not list(site.state.parent.glob(".werne-restore-*"))


def test_a_wrong_password_and_another_sites_archive_are_refused(site: Site) -> None:
    archive = create_backup(site.config, PASSWORD).archive
    with pytest.raises(ArchiveRefused, match="^wrong password for this archive"):
        verify_backup(site.config, archive, Secret("another long password", "test"))
    other = site.config.model_copy(deep=True)
    other.site.name = "nachbarstadt"
    before = _snapshot(site.root / "etc-werne", site.state)
    with pytest.raises(ArchiveRefused,
                       match="^the archive is from site 'werne-lab', this server is site 'nachbarstadt'"):
        restore_backup(other, archive, PASSWORD, force=True, manage_services=False)
    assert _snapshot(site.root / "etc-werne", site.state) == before


def test_a_server_that_holds_data_is_refused_unless_forced(site: Site) -> None:
    archive = create_backup(site.config, PASSWORD).archive
    con = sqlite3.connect(site.state / "werne.db")
    con.execute("INSERT INTO mdm_devices (enrollment_id, udid, serial, state, token_update_tally) "
                "VALUES ('U1', 'U1', 'DMPX1', 'enrolled', 1)")
    con.commit()
    con.close()
    before = _snapshot(site.root / "etc-werne", site.state)
    with pytest.raises(ArchiveRefused, match=r"^this server is not empty \(werne's database holds 1 iPads\)"):
        restore_backup(site.config, archive, PASSWORD, manage_services=False)
    assert _snapshot(site.root / "etc-werne", site.state) == before
    restore_backup(site.config, archive, PASSWORD, force=True, manage_services=False)
    assert site.db_rows("SELECT count(*) FROM mdm_devices") == [(0,)]


def test_retention_keeps_the_newest_archives_of_the_site(tmp_path: Path) -> None:
    names = [f"werne-city-2026120{d}T013000Z.wbk" for d in range(1, 6)]
    for n in [*names, "werne-other-20261201T013000Z.wbk", "notes.txt"]:
        (tmp_path / n).write_text("x")
    deleted = prune(tmp_path, "city", keep=2)
    assert [p.name for p in deleted] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[3:], "werne-other-20261201T013000Z.wbk", "notes.txt"])


def test_create_prunes_to_the_configured_count(site: Site) -> None:
    backups = site.root / "backups"
    backups.mkdir()
    for d in range(1, 5):
        (backups / f"werne-werne-lab-2026110{d}T013000Z.wbk").write_text("old")
    result = create_backup(site.config, PASSWORD)
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        ["werne-werne-lab-20261103T013000Z.wbk", "werne-werne-lab-20261104T013000Z.wbk", result.archive.name])


def test_the_cli_refuses_a_short_password_and_a_wrong_one_in_one_line(site: Site) -> None:
    runner = CliRunner()
    env = {"WERNE_BACKUP_PASSWORD": "short"}
    r = runner.invoke(main, ["--config", str(site.config_file), "backup", "create"], env=env)
    assert (r.exit_code, r.output) == (2, "Error: the backup password ($WERNE_BACKUP_PASSWORD) is shorter than "
                                          "12 characters\n")
    r = runner.invoke(main, ["--config", str(site.config_file), "backup", "create", "--json"])
    assert r.exit_code == 0, r.output
    archive = json.loads(r.output)["archive"]
    r = runner.invoke(main, ["--config", str(site.config_file), "backup", "verify", archive],
                      env={"WERNE_BACKUP_PASSWORD": "the wrong password!"})
    assert (r.exit_code, r.output) == (2, "Error: wrong password for this archive ($WERNE_BACKUP_PASSWORD)\n")
    r = runner.invoke(main, ["--config", str(site.config_file), "backup", "verify", archive])
    assert r.exit_code == 0 and "checksums match" in r.output, r.output


def test_a_file_the_backup_cannot_read_stops_it_naming_the_file(site: Site) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    key = site.root / "etc-werne" / "nanomdm.env"
    write_secret(key, "NANOMDM_API=x")
    key.chmod(0)
    from server.errors import BackupError

    with pytest.raises(BackupError, match=f"^{key}: not readable by this account"):
        create_backup(site.config, PASSWORD)
    assert not list((site.root / "backups").glob("*.wbk"))


def test_the_nightly_backup_units_come_from_the_config(tmp_path: Path) -> None:
    from server.deploy import server_layout, write_deployment
    from server.install import playbook_vars

    cfg_file = tmp_path / "werne.toml"
    cfg_file.write_text('[site]\nstate_dir = "/srv/state"\n[server]\nconfig_dir = "/srv/etc"\n'
                        '[backup]\ndir = "/srv/backups"\non_calendar = "*-*-* 00:45:00"\n', encoding="utf-8")
    cfg = load_config(cfg_file)
    write_deployment(cfg, tmp_path / "files")
    service = (tmp_path / "files" / "systemd" / "werne-backup.service").read_text()
    timer = (tmp_path / "files" / "systemd" / "werne-backup.timer").read_text()
    assert "ExecStart=/opt/werne/venv/bin/werne backup create" in service
    assert "Environment=WERNE_CONFIG=/srv/etc/werne.toml" in service and "ReadWritePaths=/srv/backups" in service
    assert "UMask=0077" in service and "OnCalendar=*-*-* 00:45:00" in timer
    layout = server_layout(cfg)
    wheelhouse = (tmp_path / "w.tar", "0" * 64, "werne-0.1.0-py3-none-any.whl")
    # The timer is enabled only once the config names the password (without it the run would fail).
    nightly = ["werne-renew.timer", "werne-compliance.timer"]
    assert playbook_vars(cfg, layout, tmp_path, wheelhouse)["werne_timers"] == nightly
    cfg.backup.password_file = Path("/root/werne-backup.password")
    v = playbook_vars(cfg, layout, tmp_path, wheelhouse)
    assert v["werne_timers"] == [*nightly, "werne-backup.timer"]
    assert v["werne_backup_dir"] == "/srv/backups"
    assert all(a["path"] != "/root/werne-backup.password" for a in v["werne_access"])  # root's, not the service's


def _archive_of(tmp_path: Path, manifest: dict[str, object], files: dict[str, bytes]) -> Path:
    """An archive made with the right password whose content is wrong in one way (the format's own
    checks, behind the encryption's)."""
    import io
    import tarfile

    from server.backup_archive import encrypt

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "made.wbk"
    path.write_bytes(encrypt(buf.getvalue(), PASSWORD))
    return path


@pytest.mark.parametrize(("files", "listed", "reason"), [
    ({"files/etc/werne/k": b"changed"}, {"files/etc/werne/k": b"original"},
     "/etc/werne/k: its checksum does not match"),
    ({}, {"files/etc/werne/k": b"original"}, "/etc/werne/k: named in the manifest, missing from the archive"),
    ({"files/etc/werne/k": b"x", "files/etc/cron.d/evil": b"x"}, {"files/etc/werne/k": b"x"},
     "the archive holds 'files/etc/cron.d/evil', which its manifest does not name"),
    ({"../../etc/passwd": b"x"}, {"../../etc/passwd": b"x"}, "the archive holds '../../etc/passwd', which its "),
])
def test_content_that_does_not_match_its_manifest_is_refused(
        site: Site, files: dict[str, bytes], listed: dict[str, bytes], reason: str) -> None:
    entries = [{"member": m, "kind": "file", "path": "/" + m.removeprefix("files/"), "what": "test",
                "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for m, d in listed.items()]
    manifest = {"format": 1, "site": "werne-lab", "werne_version": "0.1.0", "created": "2026-12-06T01:30:00+00:00",
                "host": "mdm", "entries": entries}
    archive = _archive_of(site.root, manifest, files)
    before = _snapshot(site.root / "etc-werne", site.state)
    with pytest.raises(ArchiveRefused) as e:
        restore_backup(site.config, archive, PASSWORD, force=True, manage_services=False)
    assert str(e.value).startswith(reason), str(e.value)
    assert _snapshot(site.root / "etc-werne", site.state) == before
