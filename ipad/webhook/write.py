"""The batch writer: group commit of webhook events into the store, in the event loop's thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from core.locks import FileLock
from ipad.store import EnrolmentEvent, ParsedEvent, Registry

log = logging.getLogger("werne.mdm.webhook")


class BatchWriter:
    """Stores events in batches, in the event loop's thread: group commit without a writer thread.

    A request hands its event to `submit` and waits; the first waiting event schedules one flush
    (`loop.call_soon`, or after `batch_ms` if set), which runs after the requests that are ready
    in the same turn of the loop have been parsed, so the batch is everything that arrived since
    the previous commit (at most `batch_max`; the rest go to the next flush). The transaction runs
    in the loop itself: a batch takes a few milliseconds, during which new requests wait in the
    socket buffers and form the next batch. A worker thread was measured slower: it and the loop
    handed the interpreter lock back and forth around every SQLite call. With two receiver
    processes, a loop may wait on the write lock while the other process commits its batch.

    Idle polls are only kept (newest per device) and written every `idle_flush_s`. When
    `checkpoints` is on (Database.defer_checkpoints), the same tick starts a passive WAL checkpoint
    in a worker thread (SQLite runs it without the interpreter lock, beside the loop's commits).
    """

    def __init__(
        self,
        registry: Registry,
        batch_ms: int = 0,
        batch_max: int = 500,
        idle_flush_s: float = 2.0,
        write_lock: Path | None = None,
        checkpoints: bool = False,
        on_enrolled: Callable[[EnrolmentEvent], None] | None = None,
    ):
        self.registry = registry
        # Called with each stored Authenticate/TokenUpdate after its commit (serve's hook registry).
        self.on_enrolled = on_enrolled
        # Receiver processes sharing one SQLite file take this lock around each batch's
        # transaction: flock wakes the next writer at once, where SQLite's busy handler sleeps.
        self._write_lock = FileLock(write_lock, wait=None) if write_lock is not None else contextlib.nullcontext()
        self.idle_flush_s = idle_flush_s
        self.batch_s = batch_ms / 1000
        self.batch_max = batch_max
        self.checkpoints = checkpoints
        self._pending: list[tuple[ParsedEvent, asyncio.Future[bool]]] = []
        self._idle: dict[str, ParsedEvent] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointed_at = 0
        self._checkpointing: asyncio.Future[None] | None = None
        self.batches = 0
        self.events = 0
        self.duplicates = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick_handle = self._loop.call_later(self.idle_flush_s, self._tick)

    def stop(self) -> None:
        """Write what is pending (the loop still runs), then the idle polls and a last checkpoint."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        while self._pending:
            self._flush()
        self._flush_idle()
        if self.checkpoints:
            self._checkpoint()
        if self.batches:
            log.info(
                "webhook: wrote %d events in %d batches (%.1f per batch), %d of them duplicates",
                self.events,
                self.batches,
                self.events / self.batches,
                self.duplicates,
            )

    def note_idle(self, event: ParsedEvent) -> None:
        self._idle[event.enrollment_id] = event

    def submit(self, event: ParsedEvent) -> asyncio.Future[bool]:
        """Queue one event; the future resolves to stored (True) or duplicate (False) after commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._pending.append((event, fut))
        if self._flush_handle is None:
            self._flush_handle = (
                loop.call_later(self.batch_s, self._flush) if self.batch_s > 0 else loop.call_soon(self._flush)
            )
        return fut

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending[: self.batch_max], self._pending[self.batch_max :]
        if self._pending:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        if not batch:
            return
        try:
            with self._write_lock:
                stored, hooks = self.registry.apply_events([event for event, _ in batch])
        except Exception as e:  # noqa: BLE001 - a failed batch must answer every waiting request
            log.error("webhook: storing a batch of %d events failed: %s", len(batch), e)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.batches += 1
        self.events += len(batch)
        self.duplicates += stored.count(False)
        for (_, fut), ok in zip(batch, stored, strict=True):
            if not fut.done():  # the client may have gone; its event is stored all the same
                fut.set_result(ok)
        if self.on_enrolled is not None:
            for h in hooks:
                self.on_enrolled(h)

    def _tick(self) -> None:
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(self.idle_flush_s, self._tick)
        self._flush_idle()

    def _flush_idle(self) -> None:
        idle, self._idle = list(self._idle.values()), {}
        if idle:
            try:
                with self._write_lock:
                    self.registry.apply_events(idle)
            except Exception as e:  # noqa: BLE001 - last_seen is best effort; results are not
                log.error("webhook: storing %d Idle polls failed: %s", len(idle), e)
        busy = self._checkpointing is not None and not self._checkpointing.done()
        if self.checkpoints and self.batches != self._checkpointed_at and not busy and self._loop is not None:
            self._checkpointed_at = self.batches
            self._checkpointing = self._loop.run_in_executor(None, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            self.registry.db.checkpoint()
        except Exception as e:  # noqa: BLE001 - the next tick tries again; SQLite stays consistent
            log.warning("webhook: WAL checkpoint failed: %s", e)
