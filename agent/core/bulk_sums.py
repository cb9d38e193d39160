"""The site's window sums of many interval ends in one call (replay's bulk lane).

:meth:`agent.core.series.SiteSeries.tail_sums` sums the slot rows behind one
interval end, shortest window first, each slot once: ``acc = acc + rows[a:b].sum(0)``.
This does the same for every end of a batch, with **the same float operations in
the same order** (numpy sums a C-ordered block over its first axis row after row,
so the rows of a segment are added one by one, then the segment to the running
sum), so the windows are bit-identical to the per-interval path's; a running sum
over all slots (prefix sums) would be faster and differ in the last bits. Under
numba when it runs, else the same code as Python (:mod:`agent.core.jit`).
"""

from __future__ import annotations

import os

import numpy as np

from agent.core.jit import choose

JIT, njit = choose(os.environ)


@njit(cache=True)
def tail_sums(
    data: np.ndarray, base: int, ends: np.ndarray, lengths: np.ndarray, out: np.ndarray
) -> None:
    """``out[k, i]``: the sums over the ``lengths[k, i]`` slots before ``ends[k]`` (slot
    ``base`` is row 0 of ``data``), as ``SiteSeries.tail_sums(ends[k], lengths[k])``."""
    rows, width = data.shape
    m = lengths.shape[1]
    order = np.empty(m, dtype=np.int64)
    seg = np.empty(width, dtype=np.float64)
    acc = np.empty(width, dtype=np.float64)
    for k in range(ends.shape[0]):
        end = ends[k]
        # the windows by length, ties in their order (Python's sorted() is stable)
        for i in range(m):
            j = i
            while j > 0 and lengths[k, order[j - 1]] > lengths[k, i]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = i
        acc[:] = 0.0
        done = 0
        for o in order:
            n = int(lengths[k, o])
            a = min(max(end - n - base, 0), rows)
            b = min(max(end - done - base, 0), rows)
            if b > a:
                seg[:] = data[a]
                for r in range(a + 1, b):
                    for w in range(width):
                        seg[w] += data[r, w]
                for w in range(width):
                    acc[w] = acc[w] + seg[w]
            done = max(done, n)
            out[k, o] = acc
