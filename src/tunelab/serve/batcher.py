"""Dynamic batching: one worker thread takes what is queued (up to a batch size) and decodes it together.

Requests arrive on the server's event loop; generation runs on this one thread, so the event loop
stays free to accept and stream while the model works. The queue is bounded: when it is full,
`submit` raises `QueueFull` and the server answers 429 instead of letting latency grow without end.

While a batch decodes, requests of its adapter that arrive join it as soon as rows finish
(continuous batching, `ServedModel.run`'s `more`), so the model keeps `batch_size` rows busy under
steady load. A batch holds requests of one adapter only (PEFT switches adapters for the whole
model). A request for another adapter waits in `_held`; while one waits, the running batch takes
no newcomers, drains, and the held request opens the next batch, so no adapter starves.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Optional

from tunelab.serve.engine import Job, ServedModel

log = logging.getLogger("tunelab.serve")


class QueueFull(Exception):
    pass


class Batcher:
    def __init__(self, served: ServedModel, *, batch_size: int = 8, queue_size: int = 64, max_wait_s: float = 0.01):
        self.served = served
        self.batch_size = batch_size
        # A short wait after the first request lets requests that arrive together share a batch;
        # 10 ms is small next to one decode step of a real model on CPU (~30-60 ms).
        self.max_wait_s = max_wait_s
        self._queue: "queue.Queue[Job]" = queue.Queue(maxsize=queue_size)
        self._held: collections.deque[Job] = collections.deque()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.batches = 0  # batches run, and requests in them: for tests and the load benchmark
        self.batched_jobs = 0

    def start(self) -> "Batcher":
        self._thread = threading.Thread(target=self._loop, name="tunelab-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        while True:  # whoever still waits gets an answer instead of hanging
            try:
                job = self._held.popleft() if self._held else self._queue.get_nowait()
            except queue.Empty:
                break
            job.emit("error", "the server is shutting down")

    def submit(self, job: Job) -> None:
        if self._stop.is_set():
            raise QueueFull("the server is shutting down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the request queue is full ({self._queue.maxsize} waiting); retry later") from None

    def _next_batch(self) -> list[Job]:
        first = self._held.popleft() if self._held else None
        if first is None:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                return []
        batch, others = [first], collections.deque()
        while self._held and len(batch) < self.batch_size:  # held jobs first: they waited longest
            job = self._held.popleft()
            (batch if job.adapter == first.adapter else others).append(job)
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            (batch if job.adapter == first.adapter else others).append(job)
            if len(others) >= self.batch_size:
                break
        self._held.extendleft(reversed(others))
        return [j for j in batch if not j.cancelled.is_set()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            self.batches += 1
            self.batched_jobs += len(batch)
            self.served.run(batch, lambda n, adapter=batch[0].adapter: self._more(adapter, n),
                            batch_size=self.batch_size)

    def _more(self, adapter, n: int) -> list[Job]:
        """Up to n waiting jobs of `adapter`, without waiting; none while another adapter's job is held."""
        out: list[Job] = []
        while len(out) < n and not self._stop.is_set():
            if self._held:
                if self._held[0].adapter != adapter:
                    break
                job = self._held.popleft()
            else:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job.adapter != adapter:
                    self._held.append(job)
                    break
            if not job.cancelled.is_set():
                out.append(job)
        self.batched_jobs += len(out)
        return out
