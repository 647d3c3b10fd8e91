"""run_check: checks run on the shared check thread, results and errors come back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sigstack.core import offload
from sigstack.core.errors import VerificationError


def test_a_check_runs_off_the_loop_thread_and_its_result_or_error_reaches_the_awaiter() -> None:
    ran_on: list[str] = []

    def good() -> str:
        ran_on.append(threading.current_thread().name)
        return "verified"

    def bad() -> None:
        raise VerificationError("signature does not verify")

    async def main() -> None:
        assert await offload.run_check(good) == "verified"
        with pytest.raises(VerificationError, match="does not verify"):
            await offload.run_check(bad)

    asyncio.run(main())
    assert ran_on == ["sigstack-checks"]


def test_many_concurrent_checks_each_get_their_own_outcome() -> None:
    def check(n: int) -> None:
        if n % 3 == 0:
            raise ValueError(n)

    async def one(n: int) -> int | None:
        try:
            await offload.run_check(lambda: check(n))
        except ValueError as exc:
            return int(exc.args[0])
        return None

    async def main() -> list[int | None]:
        return await asyncio.gather(*(one(n) for n in range(500)))

    outcomes = asyncio.run(main())
    assert outcomes == [n if n % 3 == 0 else None for n in range(500)]


def test_loops_in_several_threads_share_the_check_thread() -> None:
    results: dict[int, list[int]] = {}

    def run(k: int) -> None:
        seen: list[int] = []

        async def main() -> None:
            for i in range(50):
                await offload.run_check(lambda i=i: seen.append(i))

        asyncio.run(main())
        results[k] = seen

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: list(range(50)) for k in range(4)}


def test_a_cancelled_awaiter_leaves_the_check_thread_working() -> None:
    started = threading.Event()
    release = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)

    async def main() -> None:
        task = asyncio.create_task(offload.run_check(slow))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await offload.run_check(lambda: None)  # the thread went on to the next check

    asyncio.run(main())
