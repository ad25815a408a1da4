"""Issue 11: the installed CLI probed as a careless user and as an attacker would. Each case runs
the real `werne` (in this process through click, tests/fixtures/cli.py; as its own process where a
regression would hang, a server would start, or the interpreter's exit path is the point) and
asserts one `Error:` line, the documented exit code and no traceback, or that nothing dangerous
reaches the terminal."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from enrolment import accounts
from enrolment import requests as reqs
from enrolment.accounts import Principal
from tests.fixtures.cli import werne
from tests.fixtures.enrolment import SCHOOL_A, EnrolSite, make_site
from tests.fixtures.site import DEMO_INVENTORY, write_config


def one_error_line(r: subprocess.CompletedProcess[str], code: int, only: bool = True) -> str:
    """Assert exit `code`, no traceback, and one `Error:` line on stderr (the first of several
    when not `only`: `inventory check` lists every problem); return it."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert r.returncode == code and errors and all(ln.startswith("Error: ") for ln in lines), (r.returncode, r.stderr)
    if only:
        assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.fixture
def cfg(tmp_path: Path, inventory_copy: Path, state_dir: Path) -> Path:
    return write_config(tmp_path / "werne.toml", inventory_copy, state_dir)


# ---------------------------------------------------------------- malformed iPad CSV --------


def test_unclosed_quote_in_ipads_csv_is_an_error_naming_the_line(cfg: Path, inventory_copy: Path) -> None:
    csv = inventory_copy / "ipads.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 13  # header + 12 iPads
    lines[2] = lines[2].replace(";gs-demo-02", ';"gs-demo-02')  # the quote swallows lines 3..13
    csv.write_text("".join(lines), encoding="utf-8")
    r = werne(cfg, "inventory", "check")
    err = one_error_line(r, 2)
    assert err.startswith(f"Error: {csv}:3: ") and "quote" in err
    assert "ok:" not in r.stdout


def test_stray_quote_in_the_middle_of_a_row_is_an_error(cfg: Path, inventory_copy: Path) -> None:
    csv = inventory_copy / "ipads.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].replace(";gs-demo;", ';"gs-demo;', 1)  # opens a quote that closes lines later
    csv.write_text("".join(lines), encoding="utf-8")
    r = werne(cfg, "inventory", "check")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{csv}:6: " in r.stderr


# ---------------------------------------------------------------- YAML tags -----------------

VAULT = "owner: !vault |\n            $ANSIBLE_VAULT;1.1;AES256\n            6162"
YAML_TAG_CASES = {
    "hosts vault": ("hosts.yml", "owner: Erika Beispiel", VAULT, "'!vault'"),
    "hosts python": ("hosts.yml", "owner: Erika Beispiel", "owner: !!python/object/apply:os.system [id]",
                     "'!!python/object/apply:os.system'"),
    "schools custom": ("schools.yml", "name: Grundschule Demo", "name: !Schule Grundschule", "'!Schule'"),
    "schools bad int": ("schools.yml", "name: Grundschule Demo", "name: !!int zwölf", "bad YAML value"),
}


@pytest.mark.parametrize("case", list(YAML_TAG_CASES), ids=list(YAML_TAG_CASES))
def test_yaml_tags_in_the_inventory_are_one_line_with_file_and_line(case: str, cfg: Path, inventory_copy: Path) -> None:
    name, old, new, what = YAML_TAG_CASES[case]
    f = inventory_copy / name
    text = f.read_text(encoding="utf-8")
    line = text[: text.index(old)].count("\n") + 1
    f.write_text(text.replace(old, new, 1), encoding="utf-8")
    # A broken school also makes its iPads' school unknown: those follow as further problems.
    err = one_error_line(werne(cfg, "inventory", "check"), 2, only=False)
    assert err.startswith(f"Error: {f}:{line}: ") and what in err


@pytest.mark.parametrize("tag", ["!vault", "!!python/name:os.system", "!!binary"])
def test_yaml_tags_in_a_waivers_file_are_one_line(tag: str, tmp_path: Path, inventory_copy: Path,
                                                  state_dir: Path) -> None:
    waivers = tmp_path / "waivers.yml"
    waivers.write_text(
        "waivers:\n  - rule: ssh-root-login\n    devices: lap01\n"
        f"    justification: {tag} geprüft und genehmigt\n    approved_by: it\n    expires: 2099-01-01\n",
        encoding="utf-8",
    )
    extra = f'[compliance]\nwaivers_file = "{waivers}"\n'
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, extra)
    err = one_error_line(werne(cfg, "compliance", "run", "--laptops"), 2)
    assert err.startswith(f"Error: {waivers}:4: ")


def test_a_fifo_as_inventory_file_is_an_error_not_a_hang(cfg: Path, inventory_copy: Path) -> None:
    (inventory_copy / "ipads.csv").unlink()
    os.mkfifo(inventory_copy / "ipads.csv")
    r = werne(cfg, "inventory", "check", timeout=30, process=True)  # before the fix: blocks for ever
    err = one_error_line(r, 2)
    assert "not a regular file (a FIFO)" in err


# ---------------------------------------------------------------- damaged state database ----


def _damage(db: Path, kind: str) -> None:
    good = db.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if kind == "garbage":
        db.write_bytes(os.urandom(len(good)))
    elif kind == "half":
        db.write_bytes(good[: len(good) // 2])
    elif kind == "header":
        db.write_bytes(b"XXXXXXXXXXXXXXXX" + good[16:])
    elif kind == "empty":
        db.write_bytes(b"")


@pytest.fixture(scope="module")
def first_used_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a state database with its schema and one audit event, as after a first real
    use (made once for the module: each test damages its own copy)."""
    root = tmp_path_factory.mktemp("used-db")
    state_dir = root / "state"
    state_dir.mkdir()
    r = werne(write_config(root / "werne.toml", DEMO_INVENTORY, state_dir), "audit")
    assert r.returncode == 0, r.stderr
    db = state_dir / "werne.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return db.read_bytes()


@pytest.fixture
def used_db(first_used_db: bytes, state_dir: Path) -> Path:
    """This test's copy of the first used state database."""
    db = state_dir / "werne.db"
    db.write_bytes(first_used_db)
    return db


@pytest.mark.parametrize("kind", ["garbage", "half", "header", "empty"])
def test_a_damaged_state_database_is_one_line_and_exit_3(kind: str, cfg: Path, used_db: Path) -> None:
    _damage(used_db, kind)
    before = used_db.read_bytes()
    for args in (["enrol", "list"], ["audit"], ["compliance", "verify"]):
        # One kind through a real process: the one line and exit 3 hold at the interpreter's exit too.
        err = one_error_line(werne(cfg, *args, process=kind == "garbage"), 3)
        assert str(used_db) in err and "backup" in err, err
    assert used_db.read_bytes() == before  # nothing was "repaired" into a new, empty history


def test_a_new_state_database_is_never_left_as_a_0_byte_file(cfg: Path, state_dir: Path) -> None:
    r = werne(cfg, "compliance", "verify")
    assert (r.returncode, r.stdout) == (0, "ok: 0 run(s), chain head none; 0 audit event(s) chained (0 from before "
                                        "the chain), head none; 0 signed head(s), 0 signed document(s), signatures "
                                        "not checked: no key configured\n"), r.stderr
    db = state_dir / "werne.db"
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    assert sorted(p.name for p in state_dir.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- ids, listen, port ---------

BIG = "99999999999999999999999"


@pytest.mark.parametrize(
    "args",
    [["enrol", "approve", BIG], ["enrol", "show", BIG], ["report", "--run", BIG, "--out", "r.html"],
     ["compliance", "diff", "1", BIG]],
    ids=["enrol approve", "enrol show", "report --run", "compliance diff"],
)
def test_an_id_too_large_for_the_database_is_bad_input(args: list[str], cfg: Path) -> None:
    r = werne(cfg, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is not in the range 1<=x<=9223372036854775807" in r.stderr


def test_web_listen_nonsense_is_a_config_error(tmp_path: Path, inventory_copy: Path, state_dir: Path) -> None:
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, '[web]\nlisten = "nonsense"\n')
    err = one_error_line(werne(cfg, "web", "serve", env={"WERNE_WEB_SECRET": "x" * 32}, process=True), 2)
    assert err == f"Error: {cfg}: web.listen: Value error, expected HOST:PORT, got 'nonsense'"


def test_webhook_listen_with_a_wrapping_port_is_a_config_error(tmp_path: Path, inventory_copy: Path,
                                                               state_dir: Path) -> None:
    extra = '[mdm]\nwebhook_listen = "127.0.0.1:99999"\n'
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, extra)
    err = one_error_line(werne(cfg, "mdm", "serve-webhook", process=True), 2)
    assert "mdm.webhook_listen" in err and "port must be 1-65535" in err


def test_web_serve_port_out_of_range_does_not_wrap_around(cfg: Path) -> None:
    r = werne(cfg, "web", "serve", "--port", "99999", env={"WERNE_WEB_SECRET": "x" * 32}, timeout=30,
              process=True)
    assert r.returncode == 2 and "99999 is not in the range 1<=x<=65535" in r.stderr, r.stderr


# ---------------------------------------------------------------- report on a read-only fs --


def test_report_out_on_a_read_only_file_system(tmp_path: Path, cfg: Path, state_dir: Path) -> None:
    from tests.parts import require_root

    require_root("a read-only tmpfs mount", why="mounting a read-only tmpfs needs root")
    from core.config import load_config
    from core.db import Database
    from tests.fixtures.compliance import fleet, store_run

    config = load_config(cfg)
    db = Database(config.database_url)
    store_run(db, config, fleet())
    db.dispose()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        err = one_error_line(werne(cfg, "report", "--out", str(ro / "report.html")), 2)
        assert err == f"Error: cannot write {ro / 'report.html'}: Read-only file system"
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# ---------------------------------------------------------------- terminal escapes ----------

HOSTILE_PURPOSE = "Klasse 7c\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZWNobyBoaQ==\x07\u202eevil\x9b31m"


@pytest.fixture
def hostile_site(tmp_path: Path) -> EnrolSite:
    site = make_site(tmp_path / "site")
    db = site.db()
    accounts.add_user(db, "anna", "correct horse battery staple", "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    from sqlalchemy import update

    from core import audit
    from core.inventory import load_inventory
    from enrolment.models import EnrolmentRequest

    inv = load_inventory(site.inventory)
    view = reqs.create_request(db, inv, Principal("anna", "coordinator", frozenset({SCHOOL_A})), SCHOOL_A, "pupil",
                               "Klasse 7c", "ABCDE12345X1")
    # The web form refuses control characters now (issue 22); text stored before that, or put into
    # the database some other way, must still reach the terminal escaped.
    with db.session() as s:
        s.execute(update(EnrolmentRequest).where(EnrolmentRequest.id == view.id).values(purpose=HOSTILE_PURPOSE))
    audit.record(db, "enrol.request", f"request:{view.id}", {"purpose": HOSTILE_PURPOSE}, actor="anna")
    db.dispose()
    return site


@pytest.mark.parametrize("args", [["enrol", "list"], ["enrol", "show", "1"], ["audit"]], ids=["list", "show", "audit"])
def test_escape_sequences_from_the_web_page_never_reach_the_terminal(args: list[str], hostile_site: EnrolSite) -> None:
    r = hostile_site.cli(*args)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "Klasse 7c" in out
    if args[0] == "enrol":
        assert "\\x1b]0;pwned\\x07\\x1b[2J" in out and "\\u202eevil\\x9b31m" in out


# ---------------------------------------------------------------- secrets and key files -----


def test_a_secret_pasted_into_an_env_setting_is_not_echoed(tmp_path: Path, inventory_copy: Path,
                                                          state_dir: Path) -> None:
    secret = "sk-live-4f9a8b7c6d5e"
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, f'[web]\nsecret_key_env = "{secret}"\n')
    r = werne(cfg, "web", "serve", process=True)
    err = one_error_line(r, 2)
    assert "web.secret_key_env" in err
    assert secret not in r.stderr + r.stdout


def test_a_secret_pasted_into_a_file_setting_is_not_echoed(tmp_path: Path, inventory_copy: Path,
                                                           state_dir: Path) -> None:
    secret = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, f'[web]\nsecret_key_file = "{secret}"\n')
    r = werne(cfg, "web", "serve", process=True)
    err = one_error_line(r, 2)
    assert err.startswith("Error: web session key: the configured secret file does not exist")
    assert secret not in r.stderr + r.stdout


def test_a_secret_file_readable_by_everyone_gets_a_warning(tmp_path: Path, inventory_copy: Path,
                                                           state_dir: Path) -> None:
    key = tmp_path / "dep-api-key"
    key.write_text("the-api-key\n", encoding="utf-8")
    key.chmod(0o644)
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir,
                       f'[dep]\napi_key_file = "{key}"\nurl = "http://127.0.0.1:9"\ntimeout = 1.0\n')
    r = werne(cfg, "enrol", "dep-status")  # reads the key, then finds NanoDEP down (exit 3)
    assert r.stderr.startswith(f"warning: NanoDEP API key: secret file {key} is readable by every user on this "
                               "machine (mode 0o644); chmod o-r it\n"), r.stderr
    assert r.returncode == 3 and "the-api-key" not in r.stderr + r.stdout
    key.chmod(0o640)
    r = werne(cfg, "enrol", "dep-status")
    assert r.returncode == 3 and "readable by every user" not in r.stderr

