"""Group commit: what concurrent producers submit while a transaction runs is committed in the next one.

Both relays answer their webhook only once what it must deliver is committed
(state, outbox rows). One transaction per request would make a storm of
hundreds of requests a second queue behind the store's write lock; instead,
``submit`` puts the item in a queue and a single drain task commits everything
that queued up in one ``commit(batch)`` call (one ``BEGIN … COMMIT``), then the
next batch.

If a batch fails for a reason other than the store, its items are retried
one by one, so one bad item cannot fail the others. A store error
(``sqlite3.OperationalError``/``DatabaseError``) fails the whole batch with
``StoreUnavailableError`` (the webhook answers 503 and its sender retries),
except the error types named in ``passthrough``, which the callers get as
they are. A caller that goes away does not cancel the batch other callers'
items are in.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from bot.errors import StoreUnavailableError

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

_STORE_ERRORS = (sqlite3.OperationalError, sqlite3.DatabaseError)


@dataclass
class _Job(Generic[ItemT, ResultT]):
    item: ItemT
    done: asyncio.Future[ResultT]


class GroupCommit(Generic[ItemT, ResultT]):
    """Commits submitted items in batches; ``submit`` returns the item's result once committed.

    ``commit(batch)`` runs under ``lock`` and returns one result per item, in
    order. ``describe(item)`` names an item in the log line of its failure.
    ``on_committed(batch, results)`` runs after a successful commit (counting,
    waking a flusher), even when the callers went away; ``on_failed()`` after
    any failed attempt (e.g. to mark in-memory state for a reload).
    """

    def __init__(
        self,
        commit: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        lock: asyncio.Lock,
        name: str,
        describe: Callable[[ItemT], str],
        on_committed: Callable[[list[ItemT], Sequence[ResultT]], None] | None = None,
        on_failed: Callable[[], None] | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._commit = commit
        self._lock = lock
        self._name = name
        self._describe = describe
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._passthrough = passthrough
        self._queue: list[_Job[ItemT, ResultT]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        """Queue ``item`` and wait until its batch is committed; its result, or the batch's error."""
        job: _Job[ItemT, ResultT] = _Job(item, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name=self._name)
        # Shielded: a caller that goes away does not cancel the batch other
        # callers' items are in.
        return await asyncio.shield(job.done)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                async with self._lock:
                    await self._run(batch)
        finally:
            # Only reached with jobs left if this task itself was cancelled.
            _fail(self._queue, StoreUnavailableError("relay stopped"))
            self._queue = []

    async def _run(self, batch: list[_Job[ItemT, ResultT]]) -> None:
        try:
            results = await self._commit([job.item for job in batch])
        except StoreUnavailableError as error:
            self._failed()
            _fail(batch, error)
            return
        except _STORE_ERRORS as error:
            self._failed()
            if isinstance(error, self._passthrough):
                _fail(batch, error)
            else:
                _fail(batch, StoreUnavailableError(f"{type(error).__name__}: {error}"))
            return
        except asyncio.CancelledError:
            self._failed()
            _fail(batch, StoreUnavailableError("cancelled"))
            raise
        except Exception as error:
            self._failed()
            if len(batch) == 1:
                log.exception("%s failed", self._describe(batch[0].item))
                _fail(batch, error)
                return
            # Find the culprit: the others are committed one by one.
            for job in batch:
                await self._run([job])
            return
        if self._on_committed is not None:
            self._on_committed([job.item for job in batch], results)
        for job, result in zip(batch, results, strict=True):
            if not job.done.done():
                job.done.set_result(result)

    def _failed(self) -> None:
        if self._on_failed is not None:
            self._on_failed()


def _fail(batch: list[_Job[ItemT, ResultT]], error: BaseException) -> None:
    for job in batch:
        if not job.done.done():
            job.done.set_exception(error)
            # Retrieved here, so a caller that went away leaves no warning.
            job.done.exception()
