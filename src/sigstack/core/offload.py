"""Run checks that release the GIL (signature verifications) off the event loop's thread.

An ECDSA or RSA verification in ``cryptography`` releases the GIL while OpenSSL
works. Called on the event loop's thread, that is a trap under load: the loop gives
the GIL away for every verification and then waits to get it back from whichever
thread took it (the log's sequencer, its fsync workers), so each verification costs
the loop several times its own CPU time. Measured on Rekor's write path at full load
on a 2-core machine, the loop's thread spent a third of its time inside
``verify``.

:func:`run_check` hands the check to one daemon thread instead and awaits its result. The
thread takes every check queued meanwhile, runs them one after the other and settles
them with one wake-up of each waiting loop, so the loop's cost per check is a future
and a queue put. A check's exception is raised to its awaiter; a check whose awaiter
was cancelled still runs, and its result is dropped.

The thread is shared by the whole process and started on first use. One is enough:
it verifies about ten thousand P-256 signatures a second on this machine, far more
than one event loop can submit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, Exception | None]

_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_started = False
_start_lock = threading.Lock()


async def run_check(check: Callable[[], T]) -> T:
    """Run ``check()`` on the check thread; return what it returned, raise what it raised."""
    _ensure_started()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _jobs.put((check, loop, future))
    return await future


def _ensure_started() -> None:
    global _started
    if _started:
        return
    with _start_lock:
        if not _started:
            threading.Thread(target=_work, name="sigstack-checks", daemon=True).start()
            _started = True


def _work() -> None:
    while True:
        batch = [_jobs.get()]
        try:
            while True:
                batch.append(_jobs.get_nowait())
        except queue.Empty:
            pass
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for check, loop, future in batch:
            result: Any = None
            error: Exception | None = None
            try:
                result = check()
            except Exception as exc:  # raised to the awaiter, whatever it is
                error = exc
            outcomes.setdefault(loop, []).append((future, result, error))
        del batch
        for loop, settled in outcomes.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop was closed: nobody awaits these any more
                pass


def _settle(settled: list[_Outcome]) -> None:
    for future, result, error in settled:
        if future.done():  # cancelled while its check ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
