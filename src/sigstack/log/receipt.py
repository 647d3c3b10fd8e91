"""What ``TransparencyLog.submit`` returns: a light future of one entry's answer.

A :class:`Receipt` has the part of :class:`concurrent.futures.Future`'s interface
that callers of a log use (``result``, ``exception``, ``done``, ``cancel``,
``cancelled``, ``running``, ``add_done_callback``) with the same meaning, and
:func:`wait_async` awaits one from asyncio.

Why not ``concurrent.futures.Future``: the log answers tens of thousands of
entries a second, and a ``Future`` costs one ``threading.Condition`` (a lock, a
deque and five bound methods) per entry, plus a lock round trip for each state
change. A receipt is one slotted object; every receipt shares one condition, and
the sequencer settles a whole batch under one acquisition of it with one
``notify_all`` (:func:`start_all`, :func:`finish_all`, :func:`fail_all`). A
waiter woken for someone else's batch re-checks its own receipt and waits on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError
from typing import Generic, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)

_PENDING = 0
_RUNNING = 1
_CANCELLED = 2
_FINISHED = 3  # with a result or an exception

_settled = threading.Condition()
"""Guards every receipt's state changes; notified whenever receipts become done."""


class Receipt(Generic[T]):
    """A future of one submitted entry's answer (see the module docstring)."""

    __slots__ = ("_callbacks", "_error", "_result", "_state", "_waiters")

    def __init__(self) -> None:
        self._state = _PENDING
        self._result: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Receipt[T]], object]] | None = None
        # The loop and future of each wait_async awaiting this receipt.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[T]]] | None = None

    def __repr__(self) -> str:
        state = ("pending", "running", "cancelled", "finished")[self._state]
        return f"<Receipt {state}>"

    # -- what callers use ---------------------------------------------------------------------

    def done(self) -> bool:
        """True once the receipt has an answer, an error, or was cancelled."""
        return self._state >= _CANCELLED

    def running(self) -> bool:
        """True while the entry is being integrated (it can no longer be cancelled)."""
        return self._state == _RUNNING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def cancel(self) -> bool:
        """Withdraw the entry if the sequencer has not taken it yet (True if so)."""
        with _settled:
            if self._state == _RUNNING or self._state == _FINISHED:
                return False
            if self._state == _CANCELLED:
                return True
            self._state = _CANCELLED
            _settled.notify_all()
        self._run_callbacks()
        _relay([self])
        return True

    def result(self, timeout: float | None = None) -> T:
        """The answer; raises the entry's error, ``CancelledError``, or ``TimeoutError``."""
        self._wait(timeout)
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set before _FINISHED

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The entry's error (None if it succeeded); waits like :meth:`result`."""
        self._wait(timeout)
        if self._state == _CANCELLED:
            raise CancelledError()
        return self._error

    def add_done_callback(self, fn: Callable[[Receipt[T]], object]) -> None:
        """Call ``fn(receipt)`` once it is done (at once if it already is), in the
        thread that settles it."""
        with _settled:
            if self._state < _CANCELLED:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    # -- what the log uses (one receipt; batches use the functions below) ---------------------

    def set_result(self, value: T) -> None:
        finish_all([self], [value])

    def set_exception(self, error: BaseException) -> None:
        fail_all([self], error)

    def _wait(self, timeout: float | None) -> None:
        if self._state >= _CANCELLED:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with _settled:
            while self._state < _CANCELLED:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("the log has not answered this entry yet")
                _settled.wait(remaining)

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:  # as Future does: one bad callback must not stop the others
                _log.exception("a receipt callback failed")


def start_all(receipts: Iterable[Receipt[T]]) -> list[Receipt[T]]:
    """Mark pending receipts running; return them (cancelled ones are left out)."""
    with _settled:
        live = [r for r in receipts if r._state == _PENDING]
        for r in live:
            r._state = _RUNNING
    return live


def finish_all(receipts: Sequence[Receipt[T]], results: Sequence[T]) -> None:
    """Give each receipt its result (a receipt already done keeps what it has)."""
    if len(receipts) != len(results):
        raise ValueError(f"{len(receipts)} receipts but {len(results)} results")
    _settle(receipts, results, None)


def fail_all(receipts: Iterable[Receipt[T]], error: BaseException) -> None:
    """Fail every receipt not yet done with ``error``."""
    _settle(receipts, itertools.repeat(None), error)


def _settle(
    receipts: Iterable[Receipt[T]], results: Iterable[T | None], error: BaseException | None
) -> None:
    """Mark the receipts not yet done finished, wake every waiter once, run callbacks."""
    with _settled:
        settled = []
        for r, value in zip(receipts, results, strict=False):  # results may be endless
            if r._state < _CANCELLED:
                r._result = value
                r._error = error
                r._state = _FINISHED
                settled.append(r)
        _settled.notify_all()
    for r in settled:
        if r._callbacks is not None:
            r._run_callbacks()
    _relay(settled)


def _relay(receipts: Iterable[Receipt[T]]) -> None:
    """Hand done receipts to their wait_async awaiters: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[T], Receipt[T]]]] = {}
    for r in receipts:
        waiters, r._waiters = r._waiters, None
        for loop, waiter in waiters or ():
            by_loop.setdefault(loop, []).append((waiter, r))
    for loop, done in by_loop.items():
        if loop.is_closed():
            continue
        try:
            loop.call_soon_threadsafe(_deliver_all, done)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass


def _deliver_all(done: list[tuple[asyncio.Future[T], Receipt[T]]]) -> None:
    for waiter, r in done:
        _deliver(waiter, r)


def _deliver(waiter: asyncio.Future[T], done: Receipt[T]) -> None:
    if waiter.done():  # the awaiting task was cancelled
        return
    if done.cancelled():
        waiter.cancel()
    elif done._error is not None:
        waiter.set_exception(done._error)
    else:
        waiter.set_result(done._result)  # type: ignore[arg-type]


def loop_future(receipt: Receipt[T]) -> asyncio.Future[T]:
    """An asyncio future of the running loop that settles with ``receipt``.

    All of a batch's receipts that one loop awaits are relayed to it with one
    ``call_soon_threadsafe``. Cancelling the future does not withdraw the entry
    (:func:`wait_async` does that for an awaiting task).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    # Registered under the lock that settling takes, so a receipt settled meanwhile is
    # either seen done here or relayed by the settler.
    with _settled:
        pending = receipt._state < _CANCELLED
        if pending:
            if receipt._waiters is None:
                receipt._waiters = []
            receipt._waiters.append((loop, waiter))
    if not pending:
        _deliver(waiter, receipt)
    return waiter


async def wait_async(receipt: Receipt[T]) -> T:
    """Await ``receipt`` from asyncio; cancelling the awaiting task cancels the entry
    if the sequencer has not taken it yet (as ``asyncio.wrap_future`` does)."""
    try:
        return await loop_future(receipt)
    except asyncio.CancelledError:
        receipt.cancel()
        raise
