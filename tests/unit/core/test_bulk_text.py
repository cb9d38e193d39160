"""The bulk lane writes each number as the per-slot path's ``json`` does.

``round_many`` rounds whole columns to 9 decimals with numpy and says where it is
certain to be Python's ``round(x, 9)``; ``Numbers`` asks Python where it is not. A
user never sees the difference: the text of every number is the same.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.core.bulk_text import Numbers, round_many


def _as_json(x: float) -> str:
    """What the per-slot path writes: the contract's ``round(x, 9) + 0.0``, then json."""
    return json.dumps(round(x, 9) + 0.0)


#: Numbers at or next to a tie of the 9th decimal: where a fast rounding goes wrong.
near_ties = st.builds(
    lambda n, d: (
        float(np.nextafter((n + 0.5) / 1e9, np.inf if d > 0 else -np.inf)) if d else (n + 0.5) / 1e9
    ),
    st.integers(-(10**15), 10**15),
    st.integers(-1, 1),
)
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), near_ties)


@given(st.lists(numbers, min_size=1, max_size=50))
def test_certain_roundings_are_pythons_to_the_bit(xs: list[float]) -> None:
    rounded, sure = round_many(np.array(xs))
    for x, r, s in zip(xs, rounded.tolist(), sure.tolist(), strict=True):
        if s:
            assert float.__repr__(r) == _as_json(x)


def test_most_roundings_are_certain() -> None:
    """Energy sums of a year at kWh scale: certain, so Python is asked rarely."""
    x = np.random.default_rng(7).uniform(0, 2e6, 100_000)
    assert round_many(x)[1].mean() > 0.99


def test_ties_and_the_unrepresentable_are_left_to_python() -> None:
    x = np.array([0.5e-9, 2.5e-9, 1e300, np.inf, -np.inf, np.nan, 2.0**53])
    assert not round_many(x)[1].any()


@given(st.lists(st.one_of(st.none(), numbers, st.just(-0.0)), max_size=60))
def test_numbers_are_written_as_json_writes_them(xs: list[float | None]) -> None:
    want = ["null" if x is None else _as_json(x) for x in xs]
    numbers = Numbers()
    assert numbers.of(xs) == want
    assert numbers.of(xs) == want  # again, from its cache


def test_a_column_the_same_in_every_row_is_one_text() -> None:
    numbers = Numbers()
    assert numbers.column(np.array([0.25, 0.25, 0.25])) == "0.25"
    assert numbers.column(np.array([0.0, -0.0])) == "0.0"
    assert numbers.column(np.array([1.0, 1.0]), np.array([False, False])) == "null"
    assert numbers.column(np.array([1.0, 2.0]), np.array([True, False])) == ["1.0", "null"]
    assert numbers.column(np.array([np.nan, np.nan])) == ["NaN", "NaN"]
