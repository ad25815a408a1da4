"""`werne laptop watch`: notice laptops coming online through the VPN and catch them up.

Each poll reads the gateway's handshakes (provisioning.home.presence). An online laptop needs a
catch-up when work is pending for it (a provisioning run it missed, a VPN key rotation) or its
freshest evidence is older than `[homeoffice] evidence_refresh_h`. The scheduler spreads these
(jitter, batches, bounded concurrency). A batch claims its pending items, applies them through
the same library calls as the CLI (provisioning.runner.provision, provisioning.vpn.ops.rotate),
which take the same locks; collects the facts (a callable the compliance side supplies, so this
package never imports compliance); and records every step in the audit trail. An item is marked
done only after success; a laptop gone in the middle, or an IT staff run holding the provisioning
lock, sends the item back to pending with a back-off. Everything is in the database, so a watcher
killed and restarted picks up where it was (items it left `running` go back to pending first).
"""

from __future__ import annotations

import random
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core import audit
from core.config import Config
from core.db import Database
from core.errors import LockHeldError, WerneError
from core.inventory import Inventory
from core.text import one_line
from provisioning import runner
from provisioning.disk import lost
from provisioning.home import pending
from provisioning.home.gather import Gatherer
from provisioning.home.models import KIND_ERASE, KIND_PROVISION, KIND_VPN_ROTATE, LOST_KINDS
from provisioning.home.presence import GatewayReader, peers_seen, record_presence
from provisioning.home.scheduler import CatchupScheduler
from provisioning.known_hosts import PinnedHostKeys
from provisioning.preflight import check_many, known_hosts_path, select_targets
from provisioning.vpn import ops as vpn_ops

ACTOR = "werne laptop watch"
# (what ran, e.g. "provisioning run 12"; the laptop's outcome; its reason)
ProvisionOutcome = tuple[str, str, str | None]

# collect(hosts, now) -> {host: "ok" | "unreachable" | "error" | "deferred"}; stores the evidence.
CollectFn = Callable[[Inventory, list[str], datetime], dict[str, str]]
# evidence_times(hosts) -> {host: when its freshest evidence was collected}
EvidenceTimesFn = Callable[[list[str]], dict[str, datetime]]
# check_host_keys(config, inventory, hosts) -> {host: why it is refused} for laptops whose host key is not
# the pinned one; unreachable ones are not refused here (their work goes on and fails as unreachable).
HostKeyCheckFn = Callable[[Config, Inventory, list[str]], dict[str, str]]


def refused_host_keys(config: Config, inventory: Inventory, hosts: list[str]) -> dict[str, str]:
    """Pre-flight's host-key check (no login) at each laptop's address in use: {host: reason} for
    every laptop whose key is not the pinned one (changed, or none pinned)."""
    targets = select_targets(config, inventory, hosts, False)
    checks = check_many(targets, config, PinnedHostKeys(known_hosts_path(config)), None)
    return {c.host: f"{c.reason} (at {c.address})" for c, _ in checks
            if c.checks.get("host_key") == "failed" and c.reason}


@dataclass
class Step:
    """One thing a catch-up did (or tried) for one laptop."""

    host: str
    action: str  # preflight | collect | provision | vpn_rotate | lock | erase | unlock | catchup | poll
    outcome: str  # done | retry | failed | deferred | unreachable | refused | error
    detail: str = ""


def describe_failure(e: BaseException) -> str:
    """One line for the audit trail about an exception that ended a batch or a poll. A project
    error's message is written for people (no secrets by the project's rules); any other exception
    is a bug whose message may hold anything, so only its type and where it was raised are kept."""
    if isinstance(e, WerneError):
        return one_line(str(e), 400)
    tb = traceback.extract_tb(e.__traceback__)
    where = ""
    if tb:
        f = tb[-1]
        where = f" at {'/'.join(Path(f.filename).parts[-2:])}:{f.lineno} in {f.name}"
    return one_line(f"unexpected {type(e).__name__}{where} (a bug: message not recorded)", 400)


@dataclass
class Watcher:
    """The watch loop's state. `tick(now)` is one poll plus whatever batches are due (tests drive
    it with their own clock); `run(stop)` is the service's loop."""

    config: Config
    db: Database
    load_inventory: Callable[[], Inventory]
    collect: CollectFn
    evidence_times: EvidenceTimesFn
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)
    reader: Any = None  # GatewayReader, or a test double with .dump() -> list[DumpPeer]
    # Handshakes are real-world times: they are judged against the real clock even when a test
    # plays the day with its own `clock` (evidence times, back-offs).
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_step: Callable[[Step], None] | None = None
    # A seam for the fast tests, which have no laptops to connect to.
    check_host_keys: HostKeyCheckFn = refused_host_keys
    # Live progress of a catch-up's provisioning run (after every host event), as the CLI gets it.
    on_provision_progress: Callable[[Any], None] | None = None
    # How a lock, erase or unlock is applied (provisioning.disk.lost.apply_now); a seam for fast tests.
    apply_lost: lost.ApplyFn = lost.apply_now
    scheduler: CatchupScheduler = field(init=False)
    online: set[str] = field(default_factory=set)
    steps: list[Step] = field(default_factory=list)
    # The provisioning run; None: provisioning.runner.provision, looked up at each call.
    provision: Callable[..., Any] | None = None
    _gatherer: Gatherer[pending.PendingItem, ProvisionOutcome] = field(
        default_factory=lambda: Gatherer(lambda i: i.id))
    _steps_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        h = self.config.homeoffice
        self.scheduler = CatchupScheduler(h.catchup_concurrency, h.catchup_batch, h.catchup_jitter_s, self.rng)
        self.owner = pending.owner_id()
        released = pending.release_stale(self.db)
        if released:
            audit.record(self.db, "laptop.watch.resume", ",".join(map(str, released)),
                         {"requeued": released, "why": "left running by a watcher that stopped"}, actor=ACTOR)

    # ---- what needs doing
    def _needs_work(self, hosts: list[str], now: datetime) -> list[str]:
        if not hosts:
            return []
        due = {i.host for i in pending.due(self.db, hosts, now)}
        refresh = timedelta(hours=self.config.homeoffice.evidence_refresh_h)
        times = self.evidence_times(hosts)
        stale = {h for h in hosts if h not in times or now - times[h] > refresh}
        return sorted(due | stale)

    def poll(self, now: datetime) -> tuple[list[str], list[str]]:
        """Read the gateway, store presence, hand laptops that need work to the scheduler."""
        if self.reader is None:
            self.reader = GatewayReader(self.config, self.load_inventory())
        seen = peers_seen(self.db, self.reader.dump(), self.wall_clock(), self.config.homeoffice.online_window_s)
        came, went = record_presence(self.db, seen, now)
        for h in came:
            audit.record(self.db, "laptop.watch.online", h, {"last_handshake": str(seen[h].last_handshake_at)},
                         actor=ACTOR)
        self.online = {h for h, p in seen.items() if p.online}
        for h in went:
            self.scheduler.forget(h)
        for h in self._needs_work(sorted(self.online), now):
            self.scheduler.seen(h, now)
        return came, went

    # ---- one batch
    def _step(self, step: Step) -> None:
        with self._steps_lock:
            self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        audit.record(self.db, f"laptop.catchup.{step.action}", step.host,
                     {"outcome": step.outcome, "detail": step.detail[:500]}, actor=ACTOR)

    def _retry(self, item: pending.PendingItem, error: str, now: datetime, counts: bool = True) -> str:
        h = self.config.homeoffice
        return pending.mark_retry(self.db, item.id, error, now, base_s=h.retry_base_s, max_s=h.retry_max_s,
                                  max_attempts=h.max_attempts if counts else 10**9, counts=counts)

    def _settle(self, kind: str, items: list[pending.PendingItem], now: datetime,
                run: Callable[[list[str]], tuple[str, dict[str, tuple[str, str | None]]]],
                done: frozenset[str]) -> None:
        """Apply `kind` to the items' laptops through `run` (hosts -> (what ran, {host: (outcome,
        reason)})) and settle each item: done, back to pending with a back-off, or failed. A held
        lock (an IT staff member's run) defers without using up an attempt: never run over it."""
        try:
            label, outcomes = run([i.host for i in items])
        except LockHeldError as e:
            for i in items:
                self._retry(i, f"waiting: {e}", now, counts=False)
                self._step(Step(i.host, kind, "deferred", str(e)))
            return
        except WerneError as e:
            for i in items:
                state = self._retry(i, str(e), now)
                self._step(Step(i.host, kind, "failed" if state == "failed" else "retry", str(e)))
            return
        for i in items:
            outcome, reason = outcomes.get(i.host, ("no result", None))
            if outcome in done:
                pending.mark_done(self.db, i.id, label, self.clock())
                self._step(Step(i.host, kind, "done", f"{label}: {outcome}"))
            else:
                why = f"{label}: {reason or outcome}"
                state = self._retry(i, why, now)
                self._step(Step(i.host, kind, "failed" if state == "failed" else "retry", why))

    def _provision_gathered(self, inv: Inventory, take: list[pending.PendingItem]) -> dict[int, ProvisionOutcome]:
        """One provisioning run for every item gathered (provisioning.home.gather)."""
        hosts = sorted({i.host for i in take})
        provision = self.provision or runner.provision
        report = provision(self.config, self.db, inv, hosts, actor=ACTOR, queue_unreachable=False,
                           progress=self.on_provision_progress)
        by_host = {o.host: (o.outcome, o.reason) for o in report.hosts}
        label = f"provisioning run {report.run_id}"
        return {i.id: (label, *by_host.get(i.host, ("no result", None))) for i in take}

    def _apply_provision(self, inv: Inventory, items: list[pending.PendingItem], now: datetime) -> None:
        def run(hosts: list[str]) -> tuple[str, dict[str, tuple[str, str | None]]]:
            # Batches that come while a run holds the lock wait and go into the next run together.
            got = self._gatherer.run(items, lambda take: self._provision_gathered(inv, take))
            hosts_of = {i.id: i.host for i in items}
            label = next(iter(got.values()))[0] if got else "provisioning run"
            return label, {hosts_of[k]: (o, r) for k, (_, o, r) in got.items()}

        self._settle(KIND_PROVISION, items, now, run, frozenset({"ok", "changed"}))

    def _apply_lost(self, inv: Inventory, items: list[pending.PendingItem], now: datetime) -> set[str]:
        """Lock, erase and unlock orders, before anything else; each only on the laptop that shows the
        host key pinned when it was ordered. Returns the laptops erased now (nothing else is done to them)."""
        try:
            results = lost.apply_pending(self.config, self.db, inv, items, apply=self.apply_lost)
        except WerneError as e:
            results = {i.id: ("failed", str(e)) for i in items}
        erased = set()
        for i in items:
            outcome, detail = results.get(i.id, ("unreachable", "no result"))
            if outcome == "done":
                pending.mark_done(self.db, i.id, f"{i.kind} applied: {detail}", self.clock())
                self._step(Step(i.host, i.kind, "done", f"ordered by {i.created_by} at "
                                f"{i.created_at:%Y-%m-%d %H:%M} UTC; {detail}"))
                if i.kind == KIND_ERASE:
                    erased.add(i.host)
            elif outcome == "refused":
                # Another laptop at its address, or its key changed: never applied; the order waits.
                self._retry(i, detail, now, counts=False)
                self._step(Step(i.host, i.kind, "refused", detail))
            else:
                state = self._retry(i, detail, now)
                self._step(Step(i.host, i.kind, "failed" if state == "failed" else "retry", detail))
        return erased

    def _apply_rotate(self, inv: Inventory, items: list[pending.PendingItem], now: datetime) -> None:
        def run(hosts: list[str]) -> tuple[str, dict[str, tuple[str, str | None]]]:
            report = vpn_ops.rotate(self.config, self.db, inv, hosts, actor=ACTOR, queue_unreachable=False)
            return "vpn rotate", {r.host: (r.outcome, r.reason) for r in report.hosts}

        self._settle(KIND_VPN_ROTATE, items, now, run, frozenset({"rotated"}))

    def run_batch(self, hosts: list[str], now: datetime) -> None:
        """Apply what is pending for these laptops, then collect the facts of those that need it.

        Never raises: whatever ends the batch early is recorded as an "error" step for each of its
        laptops, and the items it had claimed and not finished go back to pending (an attempt used
        up, so a bug cannot loop for ever), so the service's loop goes on with the other laptops.
        """
        mine: list[pending.PendingItem] = []
        try:
            inv = self.load_inventory()
            items = pending.due(self.db, hosts, now)
            got = set(pending.claim(self.db, [i.id for i in items], self.owner, now))
            mine = [i for i in items if i.id in got]
            self._catch_up(inv, hosts, mine, now)
        except Exception as e:  # the service outlives one bad batch (see the docstring)
            why = describe_failure(e)
            for i in mine:
                # Only items still `running` change: one already done or retried stays as it is.
                self._retry(i, f"catch-up failed: {why}", now)
            for h in hosts:
                self._step(Step(h, "catchup", "error", why))
        finally:
            self.scheduler.finished(hosts)

    def _catch_up(self, inv: Inventory, hosts: list[str], mine: list[pending.PendingItem], now: datetime) -> None:
        # A laptop showing another host key at its tunnel address may be an interceptor: nothing is
        # applied to it, no facts are taken from it, and its items keep the reason.
        refused = self.check_host_keys(self.config, inv, hosts)
        for h, why in sorted(refused.items()):
            self._step(Step(h, "preflight", "refused", why))
        for i in mine:
            if i.host in refused:
                self._retry(i, refused[i.host], now)
        hosts = [h for h in hosts if h not in refused]
        mine = [i for i in mine if i.host not in refused]
        # A lost laptop first: its lock or erase must not wait behind a provisioning run.
        lost_items = [i for i in mine if i.kind in LOST_KINDS]
        if lost_items:
            erased = self._apply_lost(inv, lost_items, now)
            for i in mine:
                if i.host in erased and i.kind not in LOST_KINDS:
                    self._retry(i, "the laptop was erased", now, counts=True)
            hosts = [h for h in hosts if h not in erased]
            mine = [i for i in mine if i.host not in erased and i.kind not in LOST_KINDS]
        rot = [i for i in mine if i.kind == KIND_VPN_ROTATE]
        prov = [i for i in mine if i.kind == KIND_PROVISION]
        if rot:
            self._apply_rotate(inv, rot, now)
        before = len(self.steps)
        if prov:
            self._apply_provision(inv, prov, now)
        refresh = timedelta(hours=self.config.homeoffice.evidence_refresh_h)
        times = self.evidence_times(hosts)
        # After a provisioning run the evidence must show its result: collect again.
        applied = {s.host for s in self.steps[before:] if s.action == KIND_PROVISION and s.outcome == "done"}
        stale = [h for h in hosts if h in applied or h not in times or now - times[h] > refresh]
        if stale:
            for h, outcome in sorted(self.collect(inv, stale, now).items()):
                self._step(Step(h, "collect", "done" if outcome == "ok" else outcome))

    # ---- the loops
    def tick(self, now: datetime | None = None) -> list[str]:
        """One poll, then every batch due by `now`, one after another (for tests and `--once`)."""
        now = now or self.clock()
        self.poll(now)
        done: list[str] = []
        while batch := self.scheduler.take(now):
            self.run_batch(batch, now)
            done += batch
        return done

    def run(self, stop: threading.Event) -> None:
        """The service: poll every poll_interval_s, run due batches on up to catchup_concurrency threads."""
        interval = self.config.homeoffice.poll_interval_s
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=self.config.homeoffice.catchup_concurrency,
                                thread_name_prefix="werne-catchup") as pool:
            while not stop.is_set():
                now = self.clock()
                try:
                    self.poll(now)
                except Exception as e:  # a bad poll (gateway gone, a bug): the next poll tries again
                    self._step(Step("-", "poll", "error", describe_failure(e)))
                while batch := self.scheduler.take(now):
                    # run_batch records its own failures and never raises.
                    futures.append(pool.submit(self.run_batch, batch, now))
                futures = [f for f in futures if not f.done()]
                nxt = self.scheduler.next_due()
                wait = interval if nxt is None else max(0.2, min(interval, (nxt - self.clock()).total_seconds()))
                stop.wait(wait)
