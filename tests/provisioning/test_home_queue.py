"""Fast tests of the home-office side on a real SQLite database: the pending queue, the catch-up
scheduler's spreading, the watcher's restart idempotency and its respect for the provisioning lock,
and the address werne uses for a home-office laptop. No lab: the gateway dump is a test double
built from the same DumpPeer the real reader returns, and provisioning is the real provision()
only where it is stopped by the lock before it touches a host."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from provisioning.home import pending
from provisioning.home.models import KIND_PROVISION, STATE_DONE, STATE_FAILED, STATE_PENDING, STATE_RUNNING
from provisioning.home.scheduler import CatchupScheduler
from provisioning.vpn.status import DumpPeer

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
DEAD_OWNER = "999999999:1"


@pytest.fixture
def home_config(tmp_path: Path, inventory_copy: Path):  # type: ignore[no-untyped-def]
    hosts = inventory_copy / "hosts.yml"
    text = hosts.read_text(encoding="utf-8")
    # Every demo laptop is a home-office laptop.
    lines = []
    for line in text.splitlines():
        lines.append(line)
        if line.strip().startswith("asset_tag:"):
            lines.append(line[: len(line) - len(line.lstrip())] + "home_office: true")
    hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inventory_copy}"\nstate_dir = "{tmp_path / "state"}"\n'
                   "[homeoffice]\ncatchup_jitter_s = 30\ncatchup_batch = 3\ncatchup_concurrency = 2\n"
                   "retry_base_s = 60\nretry_max_s = 600\nmax_attempts = 3\n", encoding="utf-8")
    return load_config(cfg)


@pytest.fixture
def db(home_config, migrated_db):  # type: ignore[no-untyped-def]
    assert home_config.database_url == migrated_db(home_config.state_dir / "werne.db")
    d = Database(home_config.database_url)
    yield d
    d.dispose()


# ---- the queue
def test_enqueue_is_one_open_item_per_host_and_kind(db):  # type: ignore[no-untyped-def]
    a, created_a = pending.enqueue(db, "lap01", KIND_PROVISION, "anna", "off at 22:00", now=T0)
    b, created_b = pending.enqueue(db, "lap01", KIND_PROVISION, "bert", "again", now=T0)
    assert (created_a, created_b) == (True, False) and a.id == b.id
    assert [(i.host, i.kind, i.state, i.created_by) for i in pending.list_items(db)] == [
        ("lap01", KIND_PROVISION, STATE_PENDING, "anna")]
    with pytest.raises(pending.PendingInputError, match="unknown pending kind 'reboot'"):
        pending.enqueue(db, "lap01", "reboot", "anna")


def test_retry_backs_off_doubling_then_fails_and_done_closes(db):  # type: ignore[no-untyped-def]
    item, _ = pending.enqueue(db, "lap02", KIND_PROVISION, "anna", now=T0)
    now = T0
    waits = []
    for _ in range(3):
        assert pending.claim(db, [item.id], "me:1", now) == [item.id]
        assert pending.claim(db, [item.id], "other:1", now) == []  # claimed once only
        state = pending.mark_retry(db, item.id, "unreachable", now, base_s=60, max_s=600, max_attempts=3)
        got = pending.list_items(db, include_closed=True)[0]
        if state == STATE_PENDING:
            waits.append((got.not_before - now).total_seconds())
            assert pending.due(db, ["lap02"], now) == []  # not before its back-off
            now = got.not_before
    assert waits == [60.0, 120.0]
    assert state == STATE_FAILED and got.attempts == 3 and got.last_error == "unreachable"
    # a new request for a failed laptop opens a new item; done closes it
    new, created = pending.enqueue(db, "lap02", KIND_PROVISION, "anna", now=now)
    assert created
    pending.claim(db, [new.id], "me:1", now)
    pending.mark_done(db, new.id, "provisioning run 7", now)
    assert pending.list_items(db, ["lap02"]) == []
    assert [(i.state, i.result) for i in pending.list_items(db, ["lap02"], include_closed=True)] == [
        (STATE_FAILED, None), (STATE_DONE, "provisioning run 7")]


def test_lock_held_does_not_use_up_attempts(db):  # type: ignore[no-untyped-def]
    item, _ = pending.enqueue(db, "lap03", KIND_PROVISION, "anna", now=T0)
    for _ in range(5):
        pending.claim(db, [item.id], "me:1", T0)
        assert pending.mark_retry(db, item.id, "lock held", T0, base_s=1, max_s=1, max_attempts=3,
                                  counts=False) == STATE_PENDING
    assert pending.list_items(db)[0].attempts == 0


def test_release_stale_requeues_only_dead_claimers(db):  # type: ignore[no-untyped-def]
    a, _ = pending.enqueue(db, "lap01", KIND_PROVISION, "anna", now=T0)
    b, _ = pending.enqueue(db, "lap02", KIND_PROVISION, "anna", now=T0)
    pending.claim(db, [a.id], DEAD_OWNER, T0)
    pending.claim(db, [b.id], pending.owner_id(), T0)  # this test process: alive
    assert pending.release_stale(db) == [a.id]
    states = {i.host: (i.state, i.last_error) for i in pending.list_items(db)}
    assert states["lap01"][0] == STATE_PENDING and "stopped while applying" in states["lap01"][1]
    assert states["lap02"] == (STATE_RUNNING, None)
    assert not pending.owner_alive(DEAD_OWNER) and pending.owner_alive(pending.owner_id())


# ---- the scheduler
def test_scheduler_spreads_70_laptops_seen_at_once():  # type: ignore[no-untyped-def]
    s = CatchupScheduler(concurrency=2, batch=10, jitter_s=60, rng=random.Random(7))
    hosts = [f"lap{i:02d}" for i in range(1, 71)]
    for h in hosts:
        s.seen(h, T0)
    assert s.take(T0) == []  # nobody is due at the very moment they were seen: all jittered
    started: list[tuple[float, list[str]]] = []
    t = T0
    while s.waiting() or s.running_batches:
        t += timedelta(seconds=5)
        while batch := s.take(t):
            assert len(batch) <= 10 and s.running_batches <= 2
            started.append(((t - T0).total_seconds(), batch))
        # each batch takes 5 s here, then its slot is free again
        for _, b in started:
            if any(h in s._running for h in b):
                s.finished(b)
    done = [h for _, b in started for h in b]
    assert sorted(done) == hosts and len(set(done)) == 70  # each once
    firsts = [sec for sec, _ in started]
    assert firsts[0] > 0 and firsts[-1] <= 65  # spread over the jitter window, none before
    per_step = {}
    for sec, _batch in started:
        per_step[sec] = per_step.get(sec, 0) + 1
    assert max(per_step.values()) <= 2  # never more than `concurrency` batches start together


def test_scheduler_keeps_first_due_time_and_forgets_offline():  # type: ignore[no-untyped-def]
    s = CatchupScheduler(concurrency=1, batch=5, jitter_s=10, rng=random.Random(1))
    s.seen("lap01", T0)
    due = s.next_due()
    s.seen("lap01", T0 + timedelta(seconds=9))
    assert s.next_due() == due
    s.forget("lap01")
    assert s.waiting() == [] and s.take(T0 + timedelta(hours=1)) == []


# ---- the watcher: restart idempotency and the provisioning lock
class FakeGateway:
    """The gateway's dump as parse_wg_dump returns it: one DumpPeer per enrolled laptop."""

    def __init__(self) -> None:
        self.handshakes: dict[str, int] = {}

    def dump(self) -> list[DumpPeer]:
        return [DumpPeer(k, "192.0.2.1:51820", ("10.77.0.9/32",), t, 0, 0, 25) for k, t in self.handshakes.items()]


def _enrol(db, host: str, key: str, address: str) -> None:  # type: ignore[no-untyped-def]
    from provisioning.vpn.models import PEER_ACTIVE, VPNPeer

    with db.session() as s:
        s.add(VPNPeer(host=host, status=PEER_ACTIVE, public_key=key, address_v4=address, key_created_at=T0))


def keys_as_pinned(config, inv, hosts):  # type: ignore[no-untyped-def]
    """The host-key gate of a fleet whose keys are all as pinned (no laptops here to connect to)."""
    return {}


def _watcher(config, db, gateway, collected, clock):  # type: ignore[no-untyped-def]
    from provisioning.home.watch import Watcher

    def collect(inv, hosts, now):  # type: ignore[no-untyped-def]
        for h in hosts:
            collected.setdefault(h, []).append(now)
        return dict.fromkeys(hosts, "ok")

    def times(hosts):  # type: ignore[no-untyped-def]
        return {h: v[-1] for h, v in collected.items() if h in hosts}

    return Watcher(config=config, db=db, load_inventory=lambda: load_inventory(config.inventory_dir),
                   collect=collect, evidence_times=times, clock=clock, rng=random.Random(3), reader=gateway,
                   wall_clock=clock, check_host_keys=keys_as_pinned)


def test_watcher_restart_requeues_and_applies_nothing_twice(home_config, db, monkeypatch):  # type: ignore[no-untyped-def]
    from provisioning import runner
    from provisioning.models import HostOutcome, ProvisioningReport

    key = "K" * 43 + "="
    _enrol(db, "lap01", key, "10.77.0.11")
    gw = FakeGateway()
    collected: dict[str, list[datetime]] = {}
    now = {"t": T0}
    calls: list[list[str]] = []

    def fake_provision(config, db_, inv, names, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(names))
        return ProvisioningReport(run_id=41, status="ok", check_mode=False, artifact_dir="-",
                                  hosts=[HostOutcome(host=n, outcome="changed") for n in names])

    monkeypatch.setattr(runner, "provision", fake_provision)
    item, _ = pending.enqueue(db, "lap01", KIND_PROVISION, "anna", "off at night", now=T0 - timedelta(hours=10))
    # A first watcher claimed it and was killed before it finished: the item is still `running`.
    pending.claim(db, [item.id], DEAD_OWNER, T0 - timedelta(minutes=1))
    gw.handshakes[key] = int(T0.timestamp()) - 5
    w = _watcher(home_config, db, gw, collected, lambda: now["t"])  # the restart
    assert [i.state for i in pending.list_items(db)] == [STATE_PENDING]
    assert w.tick(T0) == []  # seen: due after its jitter (at most 30 s)
    assert w.tick(T0 + timedelta(seconds=31)) == ["lap01"]
    assert calls == [["lap01"]]
    [closed] = pending.list_items(db, include_closed=True)
    assert (closed.state, closed.result, closed.attempts) == (STATE_DONE, "provisioning run 41", 2)
    # A third watcher (restart again): nothing is applied twice, the evidence is fresh.
    w2 = _watcher(home_config, db, gw, collected, lambda: now["t"])
    assert w2.tick(T0 + timedelta(minutes=2)) == [] and w2.tick(T0 + timedelta(minutes=3)) == []
    assert calls == [["lap01"]] and len(collected["lap01"]) == 1
    from core.audit import list_events

    actions = [(e.action, e.target) for e in list_events(db)]
    assert ("laptop.watch.resume", str(item.id)) in actions
    assert ("laptop.catchup.provision", "lap01") in actions and ("laptop.catchup.collect", "lap01") in actions


def test_watcher_never_runs_over_a_staff_provisioning_run(home_config, db):  # type: ignore[no-untyped-def]
    from provisioning.runner import provisioning_lock

    key = "L" * 43 + "="
    _enrol(db, "lap02", key, "10.77.0.12")
    gw = FakeGateway()
    gw.handshakes[key] = int(T0.timestamp())
    collected: dict[str, list[datetime]] = {}
    item, _ = pending.enqueue(db, "lap02", KIND_PROVISION, "anna", now=T0)
    # provision() loads the controller's key before anything else: give it a real one.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keyfile = home_config.state_dir / "id_ed25519"
    keyfile.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    keyfile.chmod(0o600)
    home_config.ssh.private_key_file = keyfile
    w = _watcher(home_config, db, gw, collected, lambda: T0)
    with provisioning_lock(home_config.state_dir):  # IT staff's run in progress
        w.tick(T0)
        w.tick(T0 + timedelta(seconds=40))
    [it] = pending.list_items(db)
    assert it.state == STATE_PENDING and it.attempts == 0 and "another provisioning run" in (it.last_error or "")
    assert [(s.host, s.action, s.outcome) for s in w.steps][:1] == [("lap02", "provision", "deferred")]


# ---- the watcher outlives a bad batch and a bad poll
SECRET_IN_MESSAGE = "hunter2-secret"


def _flaky_provision(monkeypatch, fail_times: int):  # type: ignore[no-untyped-def]
    """provision() that raises a non-werne exception (a bug) the first `fail_times` calls."""
    from provisioning import runner
    from provisioning.models import HostOutcome, ProvisioningReport

    calls: list[list[str]] = []

    def provision(config, db_, inv, names, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(names))
        if len(calls) <= fail_times:
            raise RuntimeError(f"boom with password={SECRET_IN_MESSAGE}\nsecond line")
        return ProvisioningReport(run_id=50 + len(calls), status="ok", check_mode=False, artifact_dir="-",
                                  hosts=[HostOutcome(host=n, outcome="changed") for n in names])

    monkeypatch.setattr(runner, "provision", provision)
    return calls


def _error_events(db, action: str):  # type: ignore[no-untyped-def]
    from core.audit import list_events

    return [e for e in list_events(db) if e.action == action and e.detail.get("outcome") == "error"]


def test_a_batch_that_raises_puts_its_items_back_and_the_next_batch_runs(home_config, db, monkeypatch):  # type: ignore[no-untyped-def]
    home_config.homeoffice.catchup_batch = 1
    calls = _flaky_provision(monkeypatch, fail_times=1)
    gw = FakeGateway()
    for host, key, addr in (("lap01", "N" * 43 + "=", "10.77.0.11"), ("lap02", "P" * 43 + "=", "10.77.0.12")):
        _enrol(db, host, key, addr)
        gw.handshakes[key] = int(T0.timestamp())
    item, _ = pending.enqueue(db, "lap01", KIND_PROVISION, "anna", now=T0)
    collected: dict[str, list[datetime]] = {}
    w = _watcher(home_config, db, gw, collected, lambda: T0)
    w.tick(T0)
    # Both batches ran in this tick: lap01's raised, and lap02's was collected all the same.
    assert sorted(w.tick(T0 + timedelta(seconds=31))) == ["lap01", "lap02"]
    assert calls == [["lap01"]] and list(collected) == ["lap02"]
    [it] = pending.list_items(db)
    assert (it.state, it.attempts, it.done_at) == (STATE_PENDING, 1, None)
    assert it.last_error.startswith("catch-up failed: unexpected RuntimeError at ")
    assert [(s.host, s.action, s.outcome) for s in w.steps if s.outcome == "error"] == [("lap01", "catchup", "error")]
    [ev] = _error_events(db, "laptop.catchup.catchup")
    assert ev.target == "lap01" and "unexpected RuntimeError at " in ev.detail["detail"]
    for text in (ev.detail["detail"], it.last_error):
        assert "\n" not in text and "Traceback" not in text and SECRET_IN_MESSAGE not in text
    # After its back-off the item is applied once and closed.
    w.tick(T0 + timedelta(minutes=2))
    w.tick(T0 + timedelta(minutes=3))
    assert calls == [["lap01"], ["lap01"]]
    [closed] = pending.list_items(db, include_closed=True)
    assert (closed.state, closed.result) == (STATE_DONE, "provisioning run 52")


class FlakyGateway(FakeGateway):
    """A gateway double whose first dump raises a non-werne exception (a bug in the reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0

    def dump(self) -> list[DumpPeer]:
        self.dumps += 1
        if self.dumps == 1:
            raise ValueError(f"unexpected dump line with {SECRET_IN_MESSAGE}")
        return super().dump()


def test_the_service_loop_survives_a_bad_poll_and_a_bad_batch(home_config, db, monkeypatch):  # type: ignore[no-untyped-def]
    import threading
    import time

    from provisioning.home.watch import Watcher

    h = home_config.homeoffice
    h.poll_interval_s, h.catchup_jitter_s, h.retry_base_s, h.retry_max_s = 0.05, 0, 0.05, 0.05
    calls = _flaky_provision(monkeypatch, fail_times=1)
    gw = FlakyGateway()
    _enrol(db, "lap01", "Q" * 43 + "=", "10.77.0.11")
    gw.handshakes["Q" * 43 + "="] = int(time.time()) + 3600  # online for the whole test
    pending.enqueue(db, "lap01", KIND_PROVISION, "anna", now=datetime.now(UTC))
    w = Watcher(config=home_config, db=db, load_inventory=lambda: load_inventory(home_config.inventory_dir),
                collect=lambda inv, hosts, now: dict.fromkeys(hosts, "ok"), evidence_times=lambda hosts: {},
                rng=random.Random(3), reader=gw, check_host_keys=keys_as_pinned)
    stop = threading.Event()
    died: list[BaseException] = []

    def serve() -> None:
        try:
            w.run(stop)
        except BaseException as e:  # what would end the service
            died.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not died and time.monotonic() < deadline and pending.list_items(db):
        time.sleep(0.05)
    stop.set()
    t.join(30)
    assert died == [] and not t.is_alive()
    # The bad poll and the bad batch are in the audit trail; the item was then applied once.
    assert calls == [["lap01"], ["lap01"]]
    [closed] = pending.list_items(db, include_closed=True)
    assert (closed.state, closed.attempts) == (STATE_DONE, 2)
    [poll] = _error_events(db, "laptop.catchup.poll")
    assert poll.detail["detail"].startswith("unexpected ValueError at ")
    [batch] = _error_events(db, "laptop.catchup.catchup")
    assert batch.target == "lap01"
    for text in (poll.detail["detail"], batch.detail["detail"]):
        assert SECRET_IN_MESSAGE not in text and "\n" not in text


def test_a_laptop_with_another_host_key_is_refused_before_any_work(home_config, db, monkeypatch):  # type: ignore[no-untyped-def]
    from core.audit import list_events
    from provisioning.home.watch import Watcher

    calls = _flaky_provision(monkeypatch, fail_times=0)
    gw = FakeGateway()
    for host, key, addr in (("lap01", "R" * 43 + "=", "10.77.0.11"), ("lap02", "S" * 43 + "=", "10.77.0.12")):
        _enrol(db, host, key, addr)
        gw.handshakes[key] = int(T0.timestamp())
        pending.enqueue(db, host, KIND_PROVISION, "anna", now=T0)
    collected: dict[str, list[datetime]] = {}
    why = "host key changed: possible interception (at 10.77.0.11)"
    w = _watcher(home_config, db, gw, collected, lambda: T0)
    w.check_host_keys = lambda config, inv, hosts: {"lap01": why} if "lap01" in hosts else {}
    assert isinstance(w, Watcher)
    w.tick(T0)
    w.tick(T0 + timedelta(seconds=31))
    assert calls == [["lap02"]] and list(collected) == ["lap02"]  # nothing applied to lap01, no facts taken
    items = {i.host: i for i in pending.list_items(db, include_closed=True)}
    assert (items["lap01"].state, items["lap01"].last_error, items["lap01"].attempts) == (STATE_PENDING, why, 1)
    assert items["lap02"].state == STATE_DONE
    assert ("lap01", "preflight", "refused", why) in [(s.host, s.action, s.outcome, s.detail) for s in w.steps]
    assert [(e.target, e.detail["detail"]) for e in list_events(db) if e.action == "laptop.catchup.preflight"] == [
        ("lap01", why)]


# ---- the address in use
def test_home_office_laptop_is_reached_at_its_tunnel_address_with_the_same_key(home_config, db):  # type: ignore[no-untyped-def]
    from provisioning.home.reach import inventory_in_use, reach_map
    from provisioning.preflight import known_hosts_path

    inv = load_inventory(home_config.inventory_dir)
    office = str(inv.laptops["lap01"].ansible_host)
    kh = known_hosts_path(home_config)
    kh.parent.mkdir(parents=True, exist_ok=True)
    pub = "AAAAC3NzaC1lZDI1NTE5AAAAIPhXO5ow2ky7HVmKtE6Rzu9C1P4Ja6zdH0Gc5XeE2S7w"
    kh.write_text(f"{office} ssh-ed25519 {pub}\n", encoding="utf-8")
    r = reach_map(db, inv)["lap01"]
    assert (r.via, r.address) == ("office", office) and "not (or no longer) enrolled" in r.why
    _enrol(db, "lap01", "M" * 43 + "=", "10.77.0.11")
    used = inventory_in_use(home_config, db, inv)
    assert str(used.laptops["lap01"].ansible_host) == "10.77.0.11"
    assert used.hosts_file == home_config.state_dir / "reach" / "hosts.yml"
    assert str(used.laptops["lap02"].ansible_host) == str(inv.laptops["lap02"].ansible_host)  # not enrolled
    assert f"10.77.0.11 ssh-ed25519 {pub}" in kh.read_text(encoding="utf-8")
    assert reach_map(db, inv)["lap01"].why == "home-office laptop with an active VPN peer: tunnel address"


KEY_A = "AAAAC3NzaC1lZDI1NTE5AAAAIGllAJOSnb8R0fjONf3BNxVhBTQDKunT2OPdITwf8os/"
KEY_B = "AAAAC3NzaC1lZDI1NTE5AAAAIFOL6siDgieQ7fD+Gu3zPBCh9sESWI9XcUAh+sVVsibl"
KEY_C = "AAAAC3NzaC1lZDI1NTE5AAAAIP6hvjicMnjuNzYqWgYqBLxrxH6niB/pMA2iTZG4xEZQ"


def _pins(path: Path) -> set[tuple[str, str]]:
    return {(f[0], f[2]) for f in (line.split() for line in path.read_text(encoding="utf-8").splitlines()) if f}


def _set_peer(db, host: str, status: str, address: str | None) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from provisioning.vpn.models import VPNPeer

    with db.session() as s:
        s.execute(update(VPNPeer).where(VPNPeer.host == host).values(status=status, address_v4=address))


def test_tunnel_pins_follow_the_peers_and_office_pins_stay(home_config, db):  # type: ignore[no-untyped-def]
    from core.audit import list_events
    from provisioning.home.reach import inventory_in_use
    from provisioning.preflight import known_hosts_path
    from provisioning.vpn.models import PEER_ACTIVE, PEER_REVOKED

    inv = load_inventory(home_config.inventory_dir)
    o1, o2 = str(inv.laptops["lap01"].ansible_host), str(inv.laptops["lap02"].ansible_host)
    kh = known_hosts_path(home_config)
    kh.parent.mkdir(parents=True, exist_ok=True)
    # Office pins of lap01 (key A) and lap02 (key B); a pin in the pool that werne did not copy
    # from an office pin (someone's own, key C): only werne's copies are ever removed.
    kh.write_text(f"{o1} ssh-ed25519 {KEY_A}\n{o2} ssh-ed25519 {KEY_B}\n10.77.0.50 ssh-ed25519 {KEY_C}\n",
                  encoding="utf-8")
    office_and_foreign = {(o1, KEY_A), (o2, KEY_B), ("10.77.0.50", KEY_C)}
    _enrol(db, "lap01", "A" * 43 + "=", "10.77.0.11")
    inventory_in_use(home_config, db, inv)
    assert _pins(kh) == office_and_foreign | {("10.77.0.11", KEY_A)}
    # lap01's peer is revoked: its tunnel address is no longer pinned with its key.
    _set_peer(db, "lap01", PEER_REVOKED, None)
    inventory_in_use(home_config, db, inv)
    assert _pins(kh) == office_and_foreign
    assert [e.target for e in list_events(db) if e.action == "laptop.reach.unpin"] == ["10.77.0.11"]
    # The address goes to lap02, which has another key: pinned with lap02's key, not refused.
    # (Without a load of the inventory in between, so lap01's old pin is still there.)
    _set_peer(db, "lap01", PEER_ACTIVE, "10.77.0.11")
    inventory_in_use(home_config, db, inv)
    _set_peer(db, "lap01", PEER_REVOKED, None)
    _enrol(db, "lap02", "B" * 43 + "=", "10.77.0.11")
    inventory_in_use(home_config, db, inv)
    assert _pins(kh) == office_and_foreign | {("10.77.0.11", KEY_B)}
    # lap02 moves to another address in the pool: the old one is unpinned, the new one pinned.
    _set_peer(db, "lap02", PEER_ACTIVE, "10.77.0.12")
    inventory_in_use(home_config, db, inv)
    assert _pins(kh) == office_and_foreign | {("10.77.0.12", KEY_B)}
