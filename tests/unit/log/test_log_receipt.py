"""Receipts: the light futures ``TransparencyLog.submit`` returns."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest

from sigstack.log.receipt import Receipt, fail_all, finish_all, start_all, wait_async

WAIT = 10.0


def test_result_after_finish() -> None:
    r: Receipt[int] = Receipt()
    assert not r.done() and not r.running() and not r.cancelled()
    assert start_all([r]) == [r]
    assert r.running() and not r.done()
    finish_all([r], [7])
    assert r.done() and not r.running()
    assert r.result(timeout=0) == 7
    assert r.exception(timeout=0) is None


def test_error_is_raised_by_result_and_returned_by_exception() -> None:
    r: Receipt[int] = Receipt()
    error = ValueError("bad batch")
    fail_all([r], error)
    assert r.done()
    with pytest.raises(ValueError, match="bad batch"):
        r.result(timeout=0)
    assert r.exception(timeout=0) is error


def test_timeout_when_nothing_answers() -> None:
    r: Receipt[int] = Receipt()
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        r.result(timeout=0.05)
    assert time.monotonic() - t >= 0.05
    with pytest.raises(TimeoutError):
        r.exception(timeout=0)


def test_cancel_only_before_the_sequencer_takes_it() -> None:
    pending: Receipt[int] = Receipt()
    taken: Receipt[int] = Receipt()
    start_all([taken])
    assert pending.cancel() and pending.cancelled() and pending.done()
    assert pending.cancel()  # cancelling twice still says it is cancelled
    assert not taken.cancel() and taken.running()
    with pytest.raises(CancelledError):
        pending.result(timeout=0)
    # The sequencer leaves cancelled receipts out and never answers them.
    assert start_all([pending]) == []
    finish_all([pending], [1])
    fail_all([pending], ValueError("late"))
    assert pending.cancelled()
    finish_all([taken], [2])
    assert not taken.cancel()
    assert taken.result(timeout=0) == 2


def test_a_done_receipt_keeps_its_first_answer() -> None:
    r: Receipt[int] = Receipt()
    finish_all([r], [1])
    finish_all([r], [2])
    fail_all([r], ValueError("late"))
    assert r.result(timeout=0) == 1


def test_callbacks_run_once_when_done_or_at_once_if_done() -> None:
    calls: list[tuple[str, Receipt[int]]] = []
    r: Receipt[int] = Receipt()
    r.add_done_callback(lambda x: calls.append(("before", x)))
    assert calls == []
    finish_all([r], [3])
    assert calls == [("before", r)]
    r.add_done_callback(lambda x: calls.append(("after", x)))
    assert calls == [("before", r), ("after", r)]
    c: Receipt[int] = Receipt()
    c.add_done_callback(lambda x: calls.append(("cancelled", x)))
    c.cancel()
    assert calls[-1] == ("cancelled", c)


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    r: Receipt[int] = Receipt()

    def broken(_: Receipt[int]) -> None:
        raise RuntimeError("callback bug")

    r.add_done_callback(broken)
    r.add_done_callback(lambda x: seen.append(x.result()))
    finish_all([r], [5])
    assert seen == [5]
    assert "callback failed" in caplog.text


def test_waiters_on_other_receipts_keep_waiting() -> None:
    """One condition serves every receipt: a wake-up for another batch must neither
    answer nor time out a waiter early."""
    mine: Receipt[int] = Receipt()
    other: Receipt[int] = Receipt()
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(mine.result(timeout=WAIT))
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    finish_all([other], [1])  # wakes the waiter, whose receipt is not done
    time.sleep(0.05)
    assert outcome == [] and waiter.is_alive()
    finish_all([mine], [2])
    waiter.join(WAIT)
    assert outcome == [2]


def test_a_batch_answers_many_waiting_threads() -> None:
    receipts: list[Receipt[int]] = [Receipt() for _ in range(50)]
    got: dict[int, int] = {}

    def wait(i: int) -> None:
        got[i] = receipts[i].result(timeout=WAIT)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(receipts))]
    for t in threads:
        t.start()
    assert start_all(receipts) == receipts
    finish_all(receipts, [i * 10 for i in range(len(receipts))])
    for t in threads:
        t.join(WAIT)
    assert got == {i: i * 10 for i in range(len(receipts))}


def test_wait_async_delivers_results_and_errors_across_threads() -> None:
    async def main() -> None:
        ok: Receipt[str] = Receipt()
        bad: Receipt[str] = Receipt()
        threading.Timer(0.02, finish_all, args=([ok], ["logged"])).start()
        threading.Timer(0.02, fail_all, args=([bad], ValueError("refused"))).start()
        assert await asyncio.wait_for(wait_async(ok), WAIT) == "logged"
        with pytest.raises(ValueError, match="refused"):
            await asyncio.wait_for(wait_async(bad), WAIT)

    asyncio.run(main())


def test_cancelling_the_awaiting_task_withdraws_a_pending_entry() -> None:
    async def main() -> tuple[Receipt[str], Receipt[str]]:
        pending: Receipt[str] = Receipt()
        taken: Receipt[str] = Receipt()
        start_all([taken])
        for r in (pending, taken):
            task = asyncio.ensure_future(wait_async(r))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return pending, taken

    pending, taken = asyncio.run(main())
    assert pending.cancelled()
    assert taken.running()  # already in a batch: it will still be logged
    finish_all([taken], ["late"])  # the loop is gone: answering it is harmless
    assert taken.result(timeout=0) == "late"


def test_a_cancelled_receipt_cancels_its_awaiter() -> None:
    async def main() -> None:
        r: Receipt[str] = Receipt()
        threading.Timer(0.02, r.cancel).start()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wait_async(r), WAIT)

    asyncio.run(main())


def test_a_batch_awaited_on_one_loop_wakes_it_once_and_answers_every_awaiter() -> None:
    receipts: list[Receipt[int]] = [Receipt() for _ in range(50)]
    wakeups = 0

    async def main() -> list[int]:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counted(*args: object, **kw: object) -> object:
            nonlocal wakeups
            wakeups += 1
            return real(*args, **kw)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        waits = [asyncio.ensure_future(wait_async(r)) for r in receipts]
        # Two awaiters of one receipt both get its answer.
        waits.append(asyncio.ensure_future(wait_async(receipts[7])))
        await asyncio.sleep(0)  # every awaiter registered
        settler = threading.Thread(target=finish_all, args=(receipts, list(range(50))))
        settler.start()
        answers = await asyncio.gather(*waits)
        settler.join()
        return answers

    assert asyncio.run(main()) == [*range(50), 7]
    assert wakeups == 1


def test_a_receipt_done_before_it_is_awaited_answers_at_once() -> None:
    done: Receipt[str] = Receipt()
    done.set_result("ok")
    failed: Receipt[str] = Receipt()
    failed.set_exception(RuntimeError("disk full"))

    async def main() -> None:
        assert await wait_async(done) == "ok"
        with pytest.raises(RuntimeError, match="disk full"):
            await wait_async(failed)

    asyncio.run(main())
