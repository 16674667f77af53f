"""Dynamic micro-batching: many small calls, few large ones (ONNX runs, pipeline batches).

Items wait in a bounded queue; a batch closes when it holds `max_batch_size` items or when its
first item has waited `max_wait`. Up to `max_concurrent_batches` batches run at once, so a
batch that waits on I/O (the pipeline's calls to other services) does not idle the next one.
A full queue refuses new work at once (the API answers 429)
instead of growing, and an item whose caller has gone (its future cancelled) is dropped before
the batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from services.common.errors import OverloadedError

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[In, Out]):
    """Runs `run_batch(items) -> outputs` (same length, same order) in batches: a function on
    an executor (CPU work: ONNX), or, with no executor, a coroutine function on the event loop
    (work that waits on other services)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out]]
        | Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        executor: Executor | None,
        *,
        max_batch_size: int,
        max_wait_seconds: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        max_concurrent_batches: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for task in list(self._running):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.cancel()

    def submit_many(self, items: Sequence[In]) -> list[asyncio.Future[Out]]:
        """Queues all items or none: a request never half-enters a full queue."""
        if self._queue.qsize() + len(items) > self.max_queue:
            raise OverloadedError(
                f"the embedder is busy ({self._queue.qsize()} images queued, limit "
                f"{self.max_queue}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Out]] = []
        for item in items:
            future: asyncio.Future[Out] = loop.create_future()
            self._queue.put_nowait(_Pending(item, future))
            futures.append(future)
        return futures

    async def _collect(self) -> list[_Pending[In, Out]]:
        first = await self._queue.get()
        batch = [first]
        deadline = first.enqueued_at + self.max_wait_seconds
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                collected = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            live = [p for p in collected if not p.future.done()]
            dropped = len(collected) - len(live)
            if dropped and self._on_drop is not None:
                self._on_drop(dropped)
            if not live:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(live), name="batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, live: list[_Pending[In, Out]]) -> None:
        try:
            started = time.perf_counter()
            try:
                items = [p.item for p in live]
                if self._executor is None:
                    run_async = cast(
                        Callable[[Sequence[In]], Awaitable[Sequence[Out]]], self._run_batch
                    )
                    outputs = await run_async(items)
                else:
                    run_sync = cast(Callable[[Sequence[In]], Sequence[Out]], self._run_batch)
                    outputs = await asyncio.get_running_loop().run_in_executor(
                        self._executor, run_sync, items
                    )
            except Exception as exc:  # the failure belongs to each caller, not to the loop
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - started)
            for pending, output in zip(live, outputs, strict=True):
                if not pending.future.done():
                    pending.future.set_result(output)
        finally:
            self._slots.release()
            for pending in live:  # stopped mid-batch: its callers learn so instead of hanging
                if not pending.future.done():
                    pending.future.cancel()
