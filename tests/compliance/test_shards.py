"""The nightly run in shards without PostgreSQL: which shard a device is in, and the one-line refusal
of shards on SQLite (the queue and the workers share a PostgreSQL state database)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from compliance.models import ComplianceRun
from compliance.shards import shard_of
from core.db import Database


def test_a_device_stays_in_its_shard_and_the_shards_share_the_fleet() -> None:
    names = [f"ZX{i:08d}" for i in range(2000)]
    first = [shard_of(n, 4) for n in names]
    assert first == [shard_of(n, 4) for n in names]  # stable: the same on every host, every night
    # Pinned: a new hash would move devices between shards of a running fleet.
    assert (shard_of("lap01", 4), shard_of("lap02", 4), shard_of("ZXCSVKLU1R", 4)) == (2, 3, 3)
    sizes = [first.count(k) for k in range(4)]
    assert min(sizes) > 400  # a hash, not a range: no shard gets a school or a prefix alone
    assert {shard_of(n, 1) for n in names} == {0}


def test_shards_on_sqlite_are_refused_before_any_run_begins(werne_cli, tmp_path: Path) -> None:
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\nstate_dir = "{tmp_path / "state"}"\n[compliance]\nshards = 2\n', encoding="utf-8")
    r = werne_cli(cfg, "compliance", "run", "--laptops")
    assert r.exit_code == 2
    assert r.output == ("Error: compliance.shards > 1 needs the PostgreSQL state database (site.database_url); "
                        "with SQLite set shards = 1\n")
    db = Database(f"sqlite:///{tmp_path / 'state' / 'werne.db'}")
    try:
        with db.session() as s:
            assert s.scalars(select(ComplianceRun)).all() == []
    finally:
        db.dispose()
