"""Read one device: plan once, then every poll is a few block reads and decodes.

Ratio registers (PT/CT) are read before the first measurement and then
re-read only every ``ratio_max_age_s``: they change when an electrician
reconfigures the meter, not every second, and each read costs bus time.

Every decoded value is checked against its plausible range (the register map's,
else the default of :data:`drivers.quantities.PLAUSIBLE`) here, where the map is
known: a value outside is returned as None, like a "not available" pattern, and
listed with what the meter said in :attr:`Sample.implausible`, so the payload can
say why it is missing and a counter reading 3.4e38 never reaches the core.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.decode import BlockDecoder, DecodeError, Value
from drivers.errors import MalformedResponse
from drivers.planner import Read, Strategy, plan
from drivers.profile import RegisterMap
from drivers.quantities import Quantity
from drivers.registers import RatioRegister, RegisterSpec
from drivers.transport import Transport

#: Ratio registers have their own check (> 0) in :meth:`DeviceReader.read`.
_ANY = (-math.inf, math.inf)


@dataclass(frozen=True)
class Sample:
    """One poll of one device."""

    #: Every quantity of the register map; None where the meter had no value for it
    #: or the value was implausible.
    values: dict[Quantity, Value]
    #: The values outside their plausible range, as the meter gave them.
    implausible: dict[Quantity, float] = field(default_factory=dict)
    #: The transformer ratios the values were scaled with (read now or cached): a
    #: counter's wrap range and glitch limit follow them. Not to be modified.
    ratios: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Step:
    read: Read
    decoder: BlockDecoder
    targets: tuple[Quantity | str, ...]
    #: ``(min, max)`` per target, both included (ratio registers: any positive value).
    ranges: tuple[tuple[float, float], ...]

    @functools.cached_property
    def quantities(self) -> tuple[Quantity, ...]:
        """The targets as quantities, converted once, not at every poll."""
        return tuple(Quantity(q) for q in self.targets)


#: Plans already made, by (``id`` of the register map, strategy): the readers of many
#: devices with one register map (a profile, or inline registers the config loader
#: shares) share one plan, ~10 KB a device of decoders and steps otherwise. The map is
#: kept in the value, so its ``id`` is not reused while the entry lives.
Plans = dict[tuple[int, Strategy], tuple[RegisterMap, list[_Step], list[_Step]]]


class DeviceReader:
    """Reads all quantities of one register map from one unit id."""

    def __init__(
        self,
        regmap: RegisterMap,
        unit: int,
        *,
        strategy: Strategy = Strategy.MERGE,
        ratio_max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        plans: Plans | None = None,
    ) -> None:
        self.regmap = regmap
        self.unit = unit
        self.ratio_max_age_s = ratio_max_age_s
        self._clock = clock
        key = (id(regmap), strategy)
        known = plans.get(key) if plans is not None else None
        if known is None:
            ratio_items = list(regmap.ratios.items())
            ratio_steps = _steps(
                [r for _, r in ratio_items], regmap, strategy, names=[n for n, _ in ratio_items]
            )
            known = (regmap, _steps(list(regmap.registers), regmap, strategy), ratio_steps)
            if plans is not None:
                plans[key] = known
        # The steps hold no state of a unit: readers of one map can share them.
        _, self._steps, self._ratio_steps = known
        self._ratios: dict[str, float] = {}
        self._ratios_at = -float("inf")

    @property
    def reads(self) -> list[Read]:
        """Requests of one poll (ratio reads excluded: they are cached)."""
        return [s.read for s in self._steps]

    @property
    def ratios(self) -> dict[str, float]:
        return dict(self._ratios)

    async def read(self, transport: Transport) -> Sample:
        """One poll. Transport errors propagate: one bad block means the poll failed."""
        if self._ratio_steps and self._clock() - self._ratios_at >= self.ratio_max_age_s:
            ratios: dict[str, float] = {}
            for step in self._ratio_steps:
                values = await self._run(transport, step, None)
                for name, v in zip(step.targets, values, strict=True):
                    if v is None or v <= 0:
                        raise MalformedResponse(
                            f"ratio register '{name}' reads {v!r}; a transformer ratio must be > 0",
                            unit=self.unit,
                            function_code=int(step.read.function_code),
                            address=step.read.address,
                        )
                    ratios[str(name)] = v
            self._ratios, self._ratios_at = ratios, self._clock()
        out: dict[Quantity, Value] = {}
        implausible: dict[Quantity, float] = {}
        for step in self._steps:
            values = await self._run(transport, step, self._ratios)
            for q, v, (lo, hi) in zip(step.quantities, values, step.ranges, strict=True):
                if v is not None and not lo <= v <= hi:
                    implausible[q] = v
                    v = None
                out[q] = v
        return Sample(out, implausible, self._ratios)

    async def _run(
        self, transport: Transport, step: _Step, ratios: dict[str, float] | None
    ) -> list[Value]:
        r = step.read
        words = await transport.read(self.unit, r.function_code, r.address, r.count)
        try:
            return step.decoder.decode(words, ratios)
        except DecodeError as exc:
            raise MalformedResponse(
                str(exc),
                unit=self.unit,
                function_code=int(r.function_code),
                address=r.address,
                count=r.count,
            ) from exc


def _steps(
    items: list[RegisterSpec] | list[RatioRegister],
    regmap: RegisterMap,
    strategy: Strategy,
    names: list[str] | None = None,
) -> list[_Step]:
    reads = plan(
        items,
        max_registers=regmap.limits.max_registers,
        max_gap=regmap.limits.max_gap,
        holes=regmap.limits.unreadable,
        strategy=strategy,
    )
    steps = []
    for r in reads:
        specs = [items[i] for i in r.items]
        targets: list[Quantity | str] = [
            names[i] if names is not None else items[i].quantity  # type: ignore[union-attr]
            for i in r.items
        ]
        ranges = tuple(
            regmap.plausible_range(t) if isinstance(t, Quantity) else _ANY for t in targets
        )
        steps.append(_Step(r, BlockDecoder(r.address, r.count, specs), tuple(targets), ranges))
    return steps
