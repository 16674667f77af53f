"""The micro-batcher: batch size and wait bounds, a bounded queue, and callers who leave."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.batching import MicroBatcher
from services.common.errors import OverloadedError


class Recorder:
    """A batch function that doubles its inputs and remembers every batch it saw.

    `running` is set once a batch has started, so a test knows the batcher is busy."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.running = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.running.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batches.append(list(items))
        return [2 * item for item in items]


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def make(
    recorder: Recorder, executor: ThreadPoolExecutor, **kwargs: float
) -> MicroBatcher[int, int]:
    options = {"max_batch_size": 4, "max_wait_seconds": 0.05, "max_queue": 100, **kwargs}
    return MicroBatcher(
        recorder,
        executor,
        max_batch_size=int(options["max_batch_size"]),
        max_wait_seconds=float(options["max_wait_seconds"]),
        max_queue=int(options["max_queue"]),
    )


def test_each_caller_gets_its_own_result_in_bounded_batches() -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        with ThreadPoolExecutor(1) as executor:
            batcher = make(recorder, executor)
            batcher.start()
            futures = batcher.submit_many(list(range(10)))
            results = await asyncio.gather(*futures)
            await batcher.stop()
            return list(results)

    assert run(scenario()) == [2 * i for i in range(10)]
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(10))


def test_a_lone_item_waits_at_most_max_wait() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        with ThreadPoolExecutor(1) as executor:
            batcher = make(recorder, executor, max_wait_seconds=0.2, max_batch_size=8)
            batcher.start()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await batcher.submit_many([1])[0]
            elapsed = loop.time() - started
            await batcher.stop()
            return elapsed

    elapsed = run(scenario())
    assert 0.15 <= elapsed < 2.0  # type: ignore[operator]
    assert recorder.batches == [[1]]


def test_full_queue_refuses_the_whole_request() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = make(recorder, executor, max_queue=3, max_batch_size=1, max_wait_seconds=0)
            batcher.start()
            first = batcher.submit_many([1])
            assert await asyncio.to_thread(recorder.running.wait, 5)  # held by the gate
            queued = batcher.submit_many([2, 3])
            with pytest.raises(OverloadedError) as refused:
                batcher.submit_many([4, 5])
            assert (refused.value.status_code, refused.value.code) == (429, "overloaded")
            assert batcher.queue_depth == 2  # nothing of the refused request entered
            gate.set()
            assert await asyncio.gather(*first, *queued) == [2, 4, 6]
            await batcher.stop()

    run(scenario())


def test_items_of_callers_who_left_are_dropped_before_inference() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    dropped: list[int] = []

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(
                recorder,
                executor,
                max_batch_size=8,
                max_wait_seconds=0.0,
                max_queue=100,
                on_drop=dropped.append,
            )
            batcher.start()
            busy = batcher.submit_many([1])
            assert await asyncio.to_thread(recorder.running.wait, 5)  # held by the gate
            gone = batcher.submit_many([2, 3])
            staying = batcher.submit_many([4])
            for future in gone:
                future.cancel()
            gate.set()
            assert await asyncio.gather(*busy, *staying) == [2, 8]
            await batcher.stop()

    run(scenario())
    assert [2, 3] not in recorder.batches
    assert all(2 not in batch and 3 not in batch for batch in recorder.batches)
    assert sum(dropped) == 2


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls: list[list[int]] = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("inference failed")
        return list(items)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(
                flaky, executor, max_batch_size=8, max_wait_seconds=0.0, max_queue=10
            )
            batcher.start()
            with pytest.raises(RuntimeError, match="inference failed"):
                await batcher.submit_many([1])[0]
            assert await batcher.submit_many([5])[0] == 5
            await batcher.stop()

    run(scenario())


def test_batches_run_concurrently_up_to_the_limit_and_a_stop_releases_waiting_callers() -> None:
    """With two slots a second batch starts while the first is still held; a third waits."""
    gate = threading.Event()
    running = threading.Semaphore(0)
    peak: list[int] = []
    active = [0]
    lock = threading.Lock()

    def held(items: Sequence[int]) -> list[int]:
        with lock:
            active[0] += 1
            peak.append(active[0])
        running.release()
        gate.wait(timeout=10)
        with lock:
            active[0] -= 1
        return list(items)

    async def scenario() -> list[int]:
        with ThreadPoolExecutor(4) as executor:
            batcher = MicroBatcher(
                held,
                executor,
                max_batch_size=1,
                max_wait_seconds=0.0,
                max_queue=10,
                max_concurrent_batches=2,
            )
            batcher.start()
            futures = batcher.submit_many([1, 2, 3])
            for _ in range(2):
                assert await asyncio.to_thread(running.acquire, True, 5)
            # Both slots are taken, so the third item is still queued, not collected into a batch.
            assert batcher.queue_depth == 1
            assert max(peak) == 2 and len(peak) == 2
            gate.set()
            results = list(await asyncio.gather(*futures))
            # A batch in flight when the batcher stops: its caller is cancelled, not left hanging.
            gate.clear()
            stuck = batcher.submit_many([4])[0]
            assert await asyncio.to_thread(running.acquire, True, 5)
            await batcher.stop()
            gate.set()
            assert stuck.cancelled()
            return results

    assert run(scenario()) == [1, 2, 3]
    assert max(peak) == 2
