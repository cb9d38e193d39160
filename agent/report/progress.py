"""The period against its baseline, and progress toward the targets.

Targets are reductions of an intensity: energy (tce) and CO2 per unit of
industrial value added, by default the national −13.5 % and −18 % (docs/report.md
cites them). The intensity's denominator is the value added the config gives
for the period and the baseline; without it, output units (and the statement
says so); without either, there is no progress figure and the report says why.

"On track" means the period's intensity is at least the target's reduction below
the baseline's; otherwise the report says by how many percentage points it is
behind.
"""

from __future__ import annotations

from dataclasses import dataclass

VALUE_ADDED, OUTPUT = "value_added", "output"


@dataclass(frozen=True)
class Basis:
    """One side of the comparison: tce, tonnes of CO2, units, value added."""

    tce: float
    co2_t: float
    units: float | None
    value_added: float | None


@dataclass(frozen=True)
class Progress:
    #: "energy" or "co2".
    metric: str
    #: VALUE_ADDED or OUTPUT: what the intensity is per.
    per: str
    baseline: float
    current: float
    #: Change of the intensity, percent (negative: a reduction).
    change_pct: float
    #: The target's reduction, percent (positive).
    target_pct: float

    @property
    def on_track(self) -> bool:
        return self.change_pct <= -self.target_pct

    @property
    def behind_pts(self) -> float:
        """Percentage points short of the target (0 when on track)."""
        return max(0.0, self.change_pct + self.target_pct)


def denominator(b: Basis, per: str) -> float | None:
    value = b.value_added if per == VALUE_ADDED else b.units
    return value if value is not None and value > 0 else None


def progress(
    current: Basis, baseline: Basis, *, energy_pct: float, co2_pct: float
) -> tuple[list[Progress], str | None]:
    """The two progress figures, or ([], why not)."""
    per = None
    for candidate in (VALUE_ADDED, OUTPUT):
        if denominator(current, candidate) and denominator(baseline, candidate):
            per = candidate
            break
    if per is None:
        return [], "no_denominator"
    now, base = denominator(current, per), denominator(baseline, per)
    assert now is not None and base is not None
    out = []
    for metric, cur, ref, target in (
        ("energy", current.tce, baseline.tce, energy_pct),
        ("co2", current.co2_t, baseline.co2_t, co2_pct),
    ):
        if ref <= 0:
            continue
        i_now, i_base = cur / now, ref / base
        out.append(Progress(metric, per, i_base, i_now, (i_now / i_base - 1) * 100, target))
    return out, None if out else "baseline_zero"
