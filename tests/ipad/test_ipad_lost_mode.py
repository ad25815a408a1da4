"""Lost mode with location, and the Activation Lock bypass code, through a real NanoMDM, the real
webhook receiver and simulated iPads: a location is asked for only while an iPad is in lost mode,
its coordinates reach only their own table (never the command results or the audit trail) and go
when lost mode ends; the escrowed bypass code round-trips and is never in a log or a report."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from core.models import AuditEvent
from ipad.models import LostModeLocation, MDMCommand
from tests.ipad.lost_mode_world import World, make_world

pytestmark = pytest.mark.mdm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("lost-mode"), 3)


def _audit_text(db: Any) -> str:
    with db.session() as s:
        return json.dumps([(a.action, a.target, a.detail) for a in s.scalars(select(AuditEvent))], default=str)


def _all_rows_text(db: Any) -> str:
    """Every row of every table, as text: what a backup or a report could ever show."""
    out = []
    with db.engine.connect() as conn:
        tables = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))]
        for t in tables:
            out.extend(str(tuple(r)) for r in conn.execute(text(f'SELECT * FROM "{t}"')))  # noqa: S608
    return "\n".join(out)


def test_location_only_in_lost_mode_audited_and_deleted_when_it_ends(world: World) -> None:
    from ipad.actions.lost_mode import locate, lost_mode, play_sound
    from ipad.errors import NotInLostModeError
    from lab.ipad_sim import sim_location

    serial = world.serials[0]
    udid = world.sim.by_serial[serial].udid
    lat, lon = sim_location(udid)
    # Not in lost mode: refused, nothing sent, the refusal audited; the CLI says so in one line.
    with pytest.raises(NotInLostModeError, match=f"not in lost mode: {serial}"):
        locate(world.ctx(), (serial,))
    r = world.cli("ipad", "locate", serial)
    assert r.exit_code == 2 and r.output.startswith(f"Error: not in lost mode: {serial}; ")
    assert r.output.count("\n") == 1
    with world.db.session() as s:
        assert not list(s.scalars(select(MDMCommand).where(MDMCommand.request_type == "DeviceLocation")))
    assert "refused: not in lost mode" in _audit_text(world.db)

    assert lost_mode(world.ctx(), (serial,), message="Bitte im Sekretariat abgeben").ok
    report = locate(world.ctx(), (serial,), deadline_s=20)
    assert report.ok, report.devices[0].summary()
    assert f"{lat:.5f}, {lon:.5f} ±12 m" in report.devices[0].summary()
    with world.db.session() as s:
        row = s.scalars(select(LostModeLocation)).one()
        assert (row.latitude, row.longitude) == (lat, lon)
        answer = s.scalars(select(MDMCommand).where(MDMCommand.request_type == "DeviceLocation")).one()
        assert answer.result["Latitude"] == "***" and answer.result["Longitude"] == "***"
    audit = _audit_text(world.db)
    assert "ipad.locate" in audit and f"{lat:.4f}"[:6] not in audit and str(lat) not in audit

    sound = play_sound(world.ctx(), (serial,), deadline_s=20)
    assert sound.ok and world.sim.by_serial[serial].sounds_played == 1
    r = world.cli("ipad", "lost-mode", world.serials[1], "--sound")
    assert r.exit_code == 2 and "not in lost mode" in r.output

    assert lost_mode(world.ctx(), (serial,), disable=True, deadline_s=20).ok
    with world.db.session() as s:
        assert list(s.scalars(select(LostModeLocation))) == []
    assert str(lat) not in _all_rows_text(world.db)
    with pytest.raises(NotInLostModeError):
        locate(world.ctx(), (serial,))


def test_bypass_code_round_trips_and_is_never_in_a_log_or_report(world: World, caplog) -> None:
    from ipad.actions.activation_lock import escrow_key, request_codes, show_code
    from lab.ipad_sim import bypass_code_for

    caplog.set_level(logging.DEBUG)
    serial = world.serials[2]
    code = bypass_code_for(world.sim.by_serial[serial].udid)
    ctx = world.ctx()
    assert escrow_key(ctx.config) is not None
    report = request_codes(ctx, serials=(serial,), deadline_s=20)
    assert report.ok, report.devices[0].summary()
    assert show_code(ctx.config, world.db, serial, actor="it-admin") == code
    r = world.cli("ipad", "activation-lock", "show", serial)  # the CLI's actor is the login name: refused
    assert r.exit_code == 2 and code not in r.output
    listing = world.cli("ipad", "list", "--json").output + world.cli("ipad", "query", serial, "--json").output
    for where, content in {
        "the logs": caplog.text,
        "NanoMDM's log": world.nanomdm.log.read_text(errors="replace"),
        "the database": _all_rows_text(world.db),
        "the audit trail": _audit_text(world.db),
        "ipad list and query": listing,
        "the action report": json.dumps(report.to_dict()),
    }.items():
        assert code not in content, f"the bypass code is in {where}"
