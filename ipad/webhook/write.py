"""The batch writer: group commit of webhook events into the store, in the event loop's thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from core.locks import FileLock
from ipad.store.events import EnrolmentEvent, ParsedEvent
from ipad.store.registry import Registry

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
    processes, the write lock is tried without waiting; when the other process holds it, a worker
    thread waits for it while the loop goes on reading and parsing requests (which join the batch),
    and the batch is written in the loop once the lock is this process's (flock belongs to the open
    file, not to a thread). Waiting in the loop instead stalled one process while the other wrote:
    two processes took little more than one's throughput (issue 27).

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
        self._write_lock = FileLock(write_lock, wait=None) if write_lock is not None else None
        self._lock_wait: asyncio.Future[None] | None = None  # a worker thread waiting for the write lock
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
            with self._locked():
                self._write_batch()
        self._flush_idle(wait=True)
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

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        """The write lock, waited for (stop, idle polls at stop), or nothing with one process."""
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    def _flush(self) -> None:
        self._flush_handle = None
        if self._lock_wait is not None:
            return  # a worker waits for the write lock; the batch is written when it has it
        lock = self._write_lock
        if lock is not None and not lock.try_acquire():
            assert self._loop is not None
            self._lock_wait = self._loop.run_in_executor(None, lock.acquire)
            self._lock_wait.add_done_callback(self._lock_taken)
            return
        try:
            self._write_batch()
        finally:
            if lock is not None:
                lock.release()
        self._again()

    def _lock_taken(self, wait: asyncio.Future[None]) -> None:
        """The worker has the write lock (or failed to get it): write what is pending now."""
        self._lock_wait = None
        lock = self._write_lock
        assert lock is not None
        if wait.cancelled():
            return  # the loop is closing; stop() writes what is pending
        e = wait.exception()
        if e is not None:
            log.error("webhook: the write lock could not be taken: %s", e)
            self._fail(self._take_batch(), e)
        else:
            try:
                self._write_batch()
            finally:
                lock.release()
        self._again()

    def _again(self) -> None:
        if self._pending and self._flush_handle is None and self._lock_wait is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _take_batch(self) -> list[tuple[ParsedEvent, asyncio.Future[bool]]]:
        batch, self._pending = self._pending[: self.batch_max], self._pending[self.batch_max :]
        return batch

    @staticmethod
    def _fail(batch: list[tuple[ParsedEvent, asyncio.Future[bool]]], e: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(e)

    def _write_batch(self) -> None:
        """Store the next batch (the caller holds the write lock) and answer its requests."""
        batch = self._take_batch()
        if not batch:
            return
        try:
            stored, hooks = self.registry.apply_events([event for event, _ in batch])
        except Exception as e:  # noqa: BLE001 - a failed batch must answer every waiting request
            log.error("webhook: storing a batch of %d events failed: %s", len(batch), e)
            self._fail(batch, e)
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

    def _flush_idle(self, wait: bool = False) -> None:
        idle, self._idle = list(self._idle.values()), {}
        lock = self._write_lock
        if idle and not wait and (self._lock_wait is not None or (lock is not None and not lock.try_acquire())):
            # The other process is writing: keep them for the next tick (newer polls replace them).
            self._idle = {**{e.enrollment_id: e for e in idle}, **self._idle}
            idle = []
        elif idle and lock is not None and wait:
            lock.acquire()
        if idle:
            try:
                self.registry.apply_events(idle)
            except Exception as e:  # noqa: BLE001 - last_seen is best effort; results are not
                log.error("webhook: storing %d Idle polls failed: %s", len(idle), e)
            finally:
                if lock is not None:
                    lock.release()
        busy = self._checkpointing is not None and not self._checkpointing.done()
        if self.checkpoints and self.batches != self._checkpointed_at and not busy and self._loop is not None:
            self._checkpointed_at = self.batches
            self._checkpointing = self._loop.run_in_executor(None, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            self.registry.db.checkpoint()
        except Exception as e:  # noqa: BLE001 - the next tick tries again; SQLite stays consistent
            log.warning("webhook: WAL checkpoint failed: %s", e)
