"""The ledger's word on every hour of the period (docs/ledger.md, docs/report.md).

An hour is ``verified`` when ledger periods that verified cover all of it,
``broken`` when a period that overlaps it failed (a record changed, missing or
extra, a bad signature or chain), and ``not verified`` otherwise: no entry
covers it yet, the source has no ledger, or no key to check it with. The report
prints the count of each and one line saying what was not verified and why, so
a figure is never presented as more certain than it is.

From the history and from an export the chain and the records are checked here
(:func:`agent.ledger.verify.verify`); from the central store the bridge has
checked them already and its verdict is read back with the entry's point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000

VERIFIED = "verified"
BROKEN = "broken"
NOT_VERIFIED = "not_verified"


@dataclass(frozen=True)
class Verification:
    #: (hour start in Unix ms, status) for every hour of the period.
    hours: list[tuple[int, str]]
    #: Why some hours are not verified: the suffix of an i18n key ``report.why_<note>``
    #: (empty when all are), and a technical detail for ``other``.
    note: str = ""
    detail: str = ""
    #: What broke, one line per broken ledger period.
    problems: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for _, s in self.hours if s == status)


def _hours(start_ms: int, end_ms: int) -> list[int]:
    first = start_ms - start_ms % HOUR_MS
    return list(range(first, end_ms, HOUR_MS))


def statuses(
    start_ms: int, end_ms: int, units: Iterable[tuple[int, int, bool]], why_not: str
) -> Verification:
    """``why_not``: the note for hours no verified period covers (see :class:`Verification`)."""
    """Each hour's status from ledger periods ``(start, end, ok)`` (module doc)."""
    ok_spans: list[tuple[int, int]] = []
    bad_spans: list[tuple[int, int]] = []
    for s, e, ok in units:
        (ok_spans if ok else bad_spans).append((s, e))
    ok_spans.sort()
    hours: list[tuple[int, str]] = []
    for h in _hours(start_ms, end_ms):
        lo, hi = max(h, start_ms), min(h + HOUR_MS, end_ms)
        if any(s < hi and e > lo for s, e in bad_spans):
            hours.append((h, BROKEN))
        elif _covered(lo, hi, ok_spans):
            hours.append((h, VERIFIED))
        else:
            hours.append((h, NOT_VERIFIED))
    v = Verification(hours)
    note = why_not if v.count(NOT_VERIFIED) else ""
    return Verification(hours, note)


def _covered(lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Do the sorted spans cover ``[lo, hi)`` without a hole?"""
    at = lo
    for s, e in spans:
        if e <= at:
            continue
        if s > at:
            return False
        at = e
        if at >= hi:
            return True
    return at >= hi


def unverified(start_ms: int, end_ms: int, why: str, detail: str = "") -> Verification:
    """Every hour not verified, for the reason ``why`` (an i18n key's suffix)."""
    return Verification([(h, NOT_VERIFIED) for h in _hours(start_ms, end_ms)], why, detail)


def from_chain(
    entries: Sequence[Mapping[str, Any]],
    records: Iterable[Any],
    trusted: Sequence[Any],
    *,
    prefix: str,
    span: tuple[int, int],
    pruned_before: int | None,
) -> Verification:
    """Verify the chain and the span's records (:func:`agent.ledger.verify.verify`)."""
    from agent.ledger.entry import Keyring
    from agent.ledger.verify import verify

    result = verify(
        entries, records, Keyring(list(trusted)), prefix=prefix, span=span,
        pruned_before=pruned_before,
    )  # fmt: skip
    return from_result(entries, result, span=span, pruned_before=pruned_before)


def from_result(
    entries: Sequence[Mapping[str, Any]],
    result: Any,
    *,
    span: tuple[int, int],
    pruned_before: int | None,
) -> Verification:
    """Each hour's status from a verification's result (agent.ledger.verify.Result):
    each period an entry covers is ``ok`` unless the verification found it broken."""
    start_ms, end_ms = span
    broken = {(b.start, b.end) for b in result.broken}
    covers: set[tuple[int, int]] = set()
    for e in entries:
        for c in e.get("covers", ()):
            s, t = int(c["start"]), int(c["end"])
            if t > start_ms and s < end_ms and (pruned_before is None or s >= pruned_before):
                covers.add((s, t))
    units = [(s, e, (s, e) not in broken) for s, e in covers]
    units += [(s, e, False) for s, e in broken]
    v = statuses(start_ms, end_ms, units, "not_sealed")
    problems = [str(b) for b in sorted(result.broken, key=lambda b: b.start)]
    return Verification(v.hours, v.note, v.detail, problems)


def from_verdicts(
    points: Sequence[tuple[int, Mapping[str, Any]]], start_ms: int, end_ms: int
) -> Verification:
    """The bridge's verdicts: a ledger point at each entry's period end with
    ``period_start`` and, once checked, ``verified`` (1 or 0)."""
    units = [
        (int(f["period_start"]), ts, int(f["verified"]) == 1)
        for ts, f in points
        if "period_start" in f and "verified" in f
    ]
    return statuses(start_ms, end_ms, units, "no_verdict")
