"""Read-your-writes in the embedded mode: a write's answer waits for the in-process read
model, woken by the projector's thread (api.service.queries.PositionWaiters)."""

from __future__ import annotations

import asyncio
import threading

from api.service.queries import PositionWaiters
from projections.readmodel import MemoryReadModel


def _advance(model: MemoryReadModel, position: int, delay: float) -> threading.Thread:
    """The projector's thread: writes `position` into the model after `delay` seconds."""
    thread = threading.Timer(delay, model.write, args=([], position, None, None))
    thread.start()
    return thread


async def test_a_write_answer_waits_until_the_projector_thread_includes_it() -> None:
    """Given a model at position 3, when a shop's write at position 5 waits for it and the
    projector's thread writes position 5 shortly after, then the wait ends True as soon as
    the model includes 5 (the answer never goes before the model has the write), and
    nothing is left waiting."""
    model = MemoryReadModel()
    model.write([], 3, None, None)
    waiters = PositionWaiters(asyncio.get_running_loop(), lambda: model.position)
    model.on_write = waiters.reached
    projector = _advance(model, 5, 0.05)
    assert await waiters.wait(5, seconds=5.0)
    assert model.position >= 5
    assert waiters.waiting == []
    projector.join()


async def test_a_position_already_included_does_not_wait() -> None:
    """Given a model at position 9, when writes at 4 and 9 wait, then both return at once."""
    model = MemoryReadModel()
    model.write([], 9, None, None)
    waiters = PositionWaiters(asyncio.get_running_loop(), lambda: model.position)
    model.on_write = waiters.reached
    assert await asyncio.wait_for(waiters.wait(4, seconds=5.0), timeout=0.5)
    assert await asyncio.wait_for(waiters.wait(9, seconds=5.0), timeout=0.5)


async def test_each_waiter_wakes_when_its_own_position_is_included() -> None:
    """Given waiters at 6 and 12, when the model reaches 8, then only the first is done; when
    it reaches 12, the second is too. A model that never reaches a position lets its waiter
    go after the deadline (False) and forgets it."""
    model = MemoryReadModel()
    waiters = PositionWaiters(asyncio.get_running_loop(), lambda: model.position)
    model.on_write = waiters.reached
    first = asyncio.create_task(waiters.wait(6, seconds=5.0))
    second = asyncio.create_task(waiters.wait(12, seconds=5.0))
    await asyncio.sleep(0.01)
    await asyncio.to_thread(model.write, [], 8, None, None)
    assert await asyncio.wait_for(first, timeout=1.0)
    assert not second.done()
    await asyncio.to_thread(model.write, [], 12, None, None)
    assert await asyncio.wait_for(second, timeout=1.0)
    assert not await waiters.wait(50, seconds=0.05)
    assert waiters.waiting == []
