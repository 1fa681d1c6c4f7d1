"""The model thread and the micro-batcher.

Every model call runs in ONE worker thread (:class:`ModelWorker`), so the model never runs two calls at once,
whatever the engine underneath promises. Concurrent ``/v1/predict`` requests wait in :class:`MicroBatcher`'s
queue; it gathers them for at most ``max_wait`` seconds or until ``max_batch_size`` inputs, merges requests
with the same batch key into one model call and splits the outputs back. While the model runs one batch, the
next one gathers, so under load batches fill without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from grukit.serve.metrics import Registry

Result = TypeVar("Result")
REQUEST_ERRORS = (ValueError, TypeError)  # a bad input: answered 400 with the message


class ModelWorker:
    """One thread that runs every model call, in the order they are submitted, under ``torch.no_grad``."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grukit-model")

    @staticmethod
    def _no_grad(function: Callable[..., Result], *args: Any) -> Result:
        with torch.no_grad():
            return function(*args)

    async def call(self, function: Callable[..., Result], *args: Any) -> Result:
        """``function(*args)`` run in the model thread, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._no_grad, function, *args)

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)`` in the model thread without waiting (clean-up from a cancelled task)."""
        self.executor.submit(self._no_grad, function, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Request:
    inputs: list
    key: Hashable | None
    future: asyncio.Future = field(repr=False)


def run_merged(predict: Callable[[list], list], requests: list[list]) -> list[list | Exception]:
    """The outputs of each request in ``requests`` (each a list of inputs) from one ``predict`` call over all
    of them. When that call refuses the inputs, each request runs alone, so the error reaches the request that
    caused it and the others are still answered."""
    if len(requests) > 1:
        try:
            outputs = predict([item for inputs in requests for item in inputs])
        except REQUEST_ERRORS:
            pass
        else:
            answers, start = [], 0
            for inputs in requests:
                answers.append(outputs[start : start + len(inputs)])
                start += len(inputs)
            return answers
    answers = []
    for inputs in requests:
        try:
            answers.append(predict(inputs))
        except REQUEST_ERRORS as error:
            answers.append(error)
    return answers


class MicroBatcher:
    """Merge concurrent predict requests into model calls of at most ``max_batch_size`` inputs (a request with
    more runs alone), waiting at most ``max_wait_s`` for a batch to fill. ``max_batch_size=1`` answers one
    request at a time."""

    def __init__(
        self,
        predict: Callable[[list], list],
        worker: ModelWorker,
        metrics: Registry,
        max_batch_size: int,
        max_wait_s: float,
    ) -> None:
        self.predict = predict
        self.worker = worker
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._held: _Request | None = None  # taken from the queue but did not fit the last batch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, inputs: list, key: Hashable | None) -> list:
        """The outputs for ``inputs``; raises what the model raised for them."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Request(inputs, key, future))
        return await future

    async def _gather(self) -> list[_Request]:
        first = self._held or await self.queue.get()
        self._held = None
        batch, size = [first], len(first.inputs)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                if self.queue.empty():
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    request = await asyncio.wait_for(self.queue.get(), remaining)
                else:
                    request = self.queue.get_nowait()
            except asyncio.TimeoutError:
                break
            if size + len(request.inputs) > self.max_batch_size:
                self._held = request
                break
            batch.append(request)
            size += len(request.inputs)
        return [request for request in batch if not request.future.done()]  # drop requests whose client left

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            groups: dict[Hashable, list[_Request]] = {}
            for index, request in enumerate(batch):
                groups.setdefault(request.key if request.key is not None else ("alone", index), []).append(request)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Request]) -> None:
        self.metrics.batch_size.observe(sum(len(request.inputs) for request in group))
        self.metrics.batch_requests.observe(len(group))
        try:
            answers = await self.worker.call(run_merged, self.predict, [request.inputs for request in group])
        except Exception as error:  # a bug in the model: every request of the call gets it (answered 500)
            answers = [error] * len(group)
        for request, answer in zip(group, answers):
            if request.future.done():
                continue
            if isinstance(answer, Exception):
                request.future.set_exception(answer)
            else:
                request.future.set_result(answer)
