"""drivers.errors.retrying: every transport's retry rule, ``timing.retries`` + 1 attempts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.errors import ModbusExceptionResponse, ModbusTimeout, TransportError, retrying


def flaky(
    failures: list[TransportError],
) -> tuple[list[int], Callable[[], Awaitable[list[int]]]]:
    calls: list[int] = []

    async def exchange() -> list[int]:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return [42]

    return calls, exchange


@pytest.mark.parametrize(
    ("attempts", "timeouts", "answer", "calls"),
    [
        (1, 0, [42], 1),
        (1, 1, None, 1),  # no retries: the timeout is the answer
        (2, 1, [42], 2),
        (2, 2, None, 2),
        (3, 2, [42], 3),
    ],
)
async def test_a_retryable_failure_is_tried_again_until_the_attempts_run_out(
    attempts: int, timeouts: int, answer: list[int] | None, calls: int
) -> None:
    made, exchange = flaky([ModbusTimeout(f"no answer {i}") for i in range(timeouts)])
    if answer is None:
        with pytest.raises(ModbusTimeout, match=f"no answer {attempts - 1}"):  # the last one
            await retrying(attempts, exchange)
    else:
        assert await retrying(attempts, exchange) == answer
    assert len(made) == calls


async def test_a_permanent_failure_is_not_tried_again() -> None:
    made, exchange = flaky([ModbusExceptionResponse(2)])
    with pytest.raises(ModbusExceptionResponse):
        await retrying(3, exchange)
    assert len(made) == 1
