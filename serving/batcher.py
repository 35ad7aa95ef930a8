"""Dynamic batching: collect concurrent requests for a few ms, run them as one forward pass.

The queue is bounded: when it is full, `submit` raises QueueFull at once (the server answers 429)
instead of letting requests pile up. Items with different sampling settings never share a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class QueueFull(Exception):
    pass


@dataclass
class _Pending:
    item: object
    key: tuple
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, run_batch: Callable[[list], list], max_batch: int, wait_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] = lambda n, s: None) -> None:
        self.run_batch, self.max_batch, self.wait_s = run_batch, max_batch, wait_ms / 1000
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self._task: asyncio.Task | None = None
        self._carry: list[_Pending] = []  # collected but incompatible with the batch that ran

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    def submit(self, items: list, key_of: Callable[[object], tuple]) -> list[asyncio.Future]:
        """Enqueue all of a request's items or none of them."""
        if self.queue.maxsize - self.queue.qsize() < len(items):
            raise QueueFull
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            fut = loop.create_future()
            self.queue.put_nowait(_Pending(item, key_of(item), fut))
            futures.append(fut)
        return futures

    async def _collect(self) -> list[_Pending]:
        batch = self._carry or [await self.queue.get()]
        self._carry = []
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout))
            except asyncio.TimeoutError:
                break
        key = batch[0].key
        self._carry = [p for p in batch if p.key != key]
        return [p for p in batch if p.key == key]

    async def _loop(self) -> None:
        while True:
            batch = [p for p in await self._collect() if not p.future.cancelled()]
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                results = await asyncio.to_thread(self.run_batch, [p.item for p in batch])
            except Exception as e:  # one bad batch fails its requests, not the server
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            self.on_batch(len(batch), time.monotonic() - t0)
            for p, r in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(r)
