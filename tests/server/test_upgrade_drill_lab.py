"""The upgrade drill (docs/operations.md, "Upgrading"): the previous release, v0.1.0 (werne revision
0011, before `werne server install`), runs its MDM lab with simulated iPads, its nightly twice and
coordinators' enrolment requests; then this werne takes over the same config and state dir with the
documented steps: werne's processes stopped, `werne db status` (behind), a normal command refused
with exit 3 and nothing changed, `werne db upgrade`, the processes started again. Nothing is lost,
`werne compliance verify` passes over the old and new runs, a new nightly chains onto the old ones
and diffs against the last of them, and the same iPads answer `werne ipad query` with the same
enrollment ids, without enrolling again (the lab's NanoMDM, scepserver, KMFDDM and nginx keep running:
they are the same pinned binaries, and the lab's NanoMDM keeps its enrolments in memory).

v0.1.0's tree comes from this clone's git history (`git archive`). In a clone without that history
(a shallow one) the test skips with a plain reason, even with CI=true: setup cannot install git
history. That is the one deliberate exception to a missing part failing under CI.

An interrupted upgrade (one transaction: the old revision stays, a second run completes it) is
tested in tests/core/test_db_upgrade.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.config import REPO_ROOT, load_config
from core.db import head_revision
from lab import kmfddm as lab_kmfddm
from lab import mdm as lab_mdm
from lab.mdm import NANOMDM_BIN
from tests import parts
from tests.fixtures.mdm_lab import wait_for

pytestmark = [pytest.mark.mdm, pytest.mark.kmfddm, pytest.mark.slow]

OLD_RELEASE = "v0.1.0"
OLD_COMMIT = "8f77bf6d1fc6cfaa62eea7cbe239d2ec46ad1c5e"  # v0.1.0, if the tag is not in this clone
OLD_REVISION = "0011"
N_IPADS = 6
WERNE = "import sys; from cli import main; sys.exit(main())"

# The coordinators' requests, made with v0.1.0's own library code (what its web page calls): two
# requests of new serials by a coordinator, the second rejected by IT.
MAKE_REQUESTS = """
import json, sys
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from enrolment.accounts import add_user, cli_principal
from enrolment.requests import create_request, reject_request
cfg = load_config(sys.argv[1], state_dir=sys.argv[2])
db, inv = Database(cfg.database_url), load_inventory(cfg.inventory_dir)
school = sorted(inv.schools)[0]
p = add_user(db, "anna.schmidt", "a-long-lab-password-1", "coordinator", [school], set(inv.schools), "drill")
first = create_request(db, inv, p, school, "pupil", "Klasse 5a", pasted="DMPXQ1A2B3C4\\nDMPXQ1A2B3C5")
second = create_request(db, inv, p, school, "teacher", "Lehrerzimmer", pasted="DMPXQ1A2B3C6")
reject_request(db, cli_principal("drill"), second.id, "teachers' iPads come with the next order")
print(json.dumps([first.id, second.id]))
"""


def old_commit() -> str | None:
    """v0.1.0's commit in this clone, or None if its history is not here."""
    for ref in (f"{OLD_RELEASE}^{{commit}}", f"{OLD_COMMIT}^{{commit}}"):
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", "--quiet", ref],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
    return None


def materialise(commit: str, dest: Path) -> Path:
    """The release's tree in `dest`, with this checkout's .tools (the same pinned Go binaries)."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], capture_output=True, check=True)
    tar = dest.parent / "old.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    (dest / ".tools").symlink_to(REPO_ROOT / ".tools")
    return dest


@dataclass
class Site:
    """One site's config and state dir, run by the werne of `tree` (the old release's or this one)."""

    root: Path
    config_file: Path
    state: Path

    def run(self, tree: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`python args` with `tree`'s code first on sys.path (before the venv's editable finder)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(tree)
        return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def werne(self, tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(tree, "-c", WERNE, "--config", str(self.config_file), "--state-dir", str(self.state), *args)

    def ok(self, tree: Path, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
        """`werne args --json` by that werne, its exit code in `codes`; the parsed output."""
        r = self.werne(tree, *args, "--json")
        assert r.returncode in codes, (args, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
        return json.loads(r.stdout)


def database(state: Path) -> Path:
    return state / "werne.db"


def revision(state: Path) -> str:
    with sqlite3.connect(database(state)) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def schema(state: Path) -> dict[str, list[str]]:
    """table -> its columns, of every table but alembic_version."""
    with sqlite3.connect(database(state)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'")]
        return {n: [c[1] for c in conn.execute(f'PRAGMA table_info("{n}")')] for n in names}


def snapshot(state: Path, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of these tables, in these columns (an old schema's, also from the upgraded
    database), sorted."""
    def select(table: str, cols: list[str]) -> str:
        return "SELECT " + ", ".join(f'"{c}"' for c in cols) + f' FROM "{table}"'

    with sqlite3.connect(database(state)) as conn:
        return {t: sorted(conn.execute(select(t, cols)).fetchall(), key=repr) for t, cols in columns.items()}


def enrolled(site: Site, tree: Path) -> dict[str, str]:
    """serial -> enrollment id of the enrolled iPads, as that werne's `ipad list` says."""
    return {r["serial"]: r["enrollment_id"] for r in site.ok(tree, "ipad", "list")
            if r["state"] == "enrolled"}


@pytest.fixture
def old_site(tmp_path: Path) -> Iterator[tuple[Site, Path]]:
    commit = old_commit()
    if commit is None:
        # Not parts.require: no setup step can bring git history, so this skips under CI too.
        pytest.skip(f"{OLD_RELEASE} ({OLD_COMMIT[:7]}) is not in this clone's history (a shallow clone?)")
    parts.require_file("NanoMDM", NANOMDM_BIN, marker="mdm", hint="scripts/setup.sh installs it")
    parts.require_file("KMFDDM", lab_kmfddm.KMFDDM_BIN, marker="kmfddm", hint="scripts/setup.sh installs it")
    old = materialise(commit, tmp_path / "v0.1.0")
    state = tmp_path / "state"
    cfg = tmp_path / "werne.toml"
    # The site's own inventory: the old release's demo inventory, kept as it was.
    cfg.write_text(f'[site]\ninventory = "{old / "inventories" / "demo"}"\nstate_dir = "{state}"\n', encoding="utf-8")
    site = Site(tmp_path, cfg, state)
    try:
        yield site, old
    finally:
        lab_mdm.down(state)  # this werne's down stops what either release started (the same pid files)


def test_v0_1_0_upgrades_to_this_werne_with_nothing_lost_and_the_ipads_still_answering(old_site) -> None:
    site, old = old_site
    new = REPO_ROOT

    # --- v0.1.0 runs the site ------------------------------------------------------------------
    r = site.run(old, "-c", "import cli, core.db; print(cli.__file__); print(core.db.__file__)")
    assert r.stdout.split() == [str(old / "cli.py"), str(old / "core" / "db.py")], r.stderr
    r = site.run(old, "-c", "import sys; from pathlib import Path; from core.config import load_config; "
                 "from lab import mdm; mdm.up(Path(sys.argv[2]), int(sys.argv[3]), "
                 "config=load_config(sys.argv[1], state_dir=sys.argv[2]), faults=False)",
                 str(site.config_file), str(site.state), str(N_IPADS))
    assert r.returncode == 0, r.stderr[-3000:]
    before_ids = wait_for(f"{N_IPADS} iPads enrolled under v0.1.0",
                          lambda: (ids := enrolled(site, old)) and len(ids) == N_IPADS and ids, timeout=180)
    query = site.ok(old, "ipad", "query", *sorted(before_ids), "--deadline", "90")
    assert query["counts"] == {"ok": N_IPADS}
    old_runs = [site.ok(old, "compliance", "run", "--ipads", codes=(0, 1)) for _ in range(2)]
    assert [r["run"] for r in old_runs] == [1, 2]
    old_diff = site.ok(old, "compliance", "diff", "1", "2")
    r = site.run(old, "-c", MAKE_REQUESTS, str(site.config_file), str(site.state))
    assert r.returncode == 0, r.stderr[-3000:]
    request_ids = json.loads(r.stdout)
    old_requests = {v["id"]: v for v in site.ok(old, "enrol", "list")}
    assert sorted(old_requests) == sorted(request_ids)
    assert old_requests[request_ids[1]]["status"] == "rejected"
    assert revision(site.state) == OLD_REVISION

    # --- the upgrade, as docs/operations.md "Upgrading" says for a manual site ------------------
    lab_mdm.stop_werne(site.state)  # werne-web, werne-webhook
    old_schema = schema(site.state)
    old_rows = snapshot(site.state, old_schema)
    status = site.ok(new, "db", "status")
    assert status["werne"]["current"] == OLD_REVISION and status["werne"]["upgrade_needed"] is True
    r = site.werne(new, "compliance", "run", "--ipads")
    assert (r.returncode, r.stderr) == (3, f"Error: state database is at revision {OLD_REVISION}, this werne "
                                           f"needs {head_revision()}: run werne db upgrade\n")
    # The refusal changed nothing.
    assert revision(site.state) == OLD_REVISION and snapshot(site.state, old_schema) == old_rows
    upgraded = site.ok(new, "db", "upgrade")
    assert upgraded["werne"]["before"] == OLD_REVISION and upgraded["werne"]["after"] == head_revision()
    assert site.ok(new, "db", "status")["werne"]["upgrade_needed"] is False
    # Every row of every table v0.1.0 had is still there, unchanged (in the columns it knew).
    assert set(schema(site.state)) >= set(old_schema)
    after = snapshot(site.state, old_schema)
    assert {t: rows for t, rows in after.items() if rows != old_rows[t]} == {}
    assert sum(len(rows) for rows in after.values()) > 0
    lab_mdm.start_werne(site.state, load_config(site.config_file, state_dir=site.state))

    # --- this werne on the upgraded site --------------------------------------------------------
    assert {v["id"]: v for v in site.ok(new, "enrol", "list")} == old_requests
    assert site.ok(new, "compliance", "diff", "1", "2") == old_diff
    new_run = site.ok(new, "compliance", "run", "--ipads", codes=(0, 1))
    assert new_run["run"] == 3
    verified = site.ok(new, "compliance", "verify")
    assert verified["ok"] is True and verified["runs"] == 3 and verified["head"] == new_run["record_hash"]
    with sqlite3.connect(database(site.state)) as conn:
        chain = conn.execute("SELECT id, prev_hash, record_hash FROM compliance_runs ORDER BY id").fetchall()
    assert [(i, h) for i, _, h in chain[:2]] == [(r["run"], r["record_hash"]) for r in old_runs]
    assert chain[2][1] == old_runs[1]["record_hash"]  # the new run chains onto the last old one
    diff = site.ok(new, "compliance", "diff", "2", "3")
    assert diff["run_a"] == 2 and diff["run_b"] == 3
    # The same iPads, enrolled once: same enrollment ids, and they answer this werne's query.
    assert enrolled(site, new) == before_ids
    query = site.ok(new, "ipad", "query", *sorted(before_ids), "--deadline", "90")
    assert query["counts"] == {"ok": N_IPADS}
    assert {d["serial"]: d["enrollment_id"] for d in query["devices"]} == before_ids

