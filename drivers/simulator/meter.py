"""A physically consistent meter: per-phase V, I and power factor give P, Q and S;
counters integrate power over real (or injected) time.

Every value a profile can hold is derived from one state, so a reader that
decodes a register wrongly (wrong scale, wrong word order, off by one) gets a
number that disagrees with the others and with the truth, and tests catch it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.profile import DeviceKind, Profile, RegisterMap
from drivers.quantities import Quantity as Q

Clock = Callable[[], float]

_PHASE = (0.0, -2 * math.pi / 3, 2 * math.pi / 3)


@dataclass
class Faults:
    """What can go wrong with a meter, each independently and reproducibly (seeded)."""

    #: Probability (0..1) that a request gets no answer at all; 1 = a dead meter.
    timeout: float = 0.0
    #: Answer with this Modbus exception code (with probability ``exception_rate``).
    exception_code: int = 0
    exception_rate: float = 1.0
    #: Probability that the answer is garbage (a frame with the wrong register count).
    garbage: float = 0.0
    #: Seconds after start at which the counters reset to zero (meter replaced).
    reset_after_s: float | None = None
    #: Extra answer delay, to play a slow meter.
    delay_s: float = 0.0


@dataclass
class MeterModel:
    """State of one simulated meter. ``advance`` integrates, ``values`` reads."""

    regmap: RegisterMap
    kind: DeviceKind = DeviceKind.ELECTRICITY
    seed: int = 1
    #: Typical active power; the load wanders around it.
    load_kw: float = 20.0
    #: Transformer ratios the meter reports in its ratio registers (PT, CT).
    ratios: dict[str, float] = field(default_factory=dict)
    #: Start counters this many canonical units below their register's wrap point.
    near_wrap: float | None = None
    #: Counters at start (canonical units), when not near_wrap.
    start_counters: float = 1000.0
    #: Counters start up to this fraction above ``start_counters`` (seeded), so meters
    #: differ; 0 starts them exactly there (a meter continuing a recorded history).
    start_jitter: float = 0.1
    export: bool = False
    #: A load that does not wander: the power is ``load_kw`` at every instant, so the
    #: energy over any span is ``load_kw`` x its hours, and a test's hand arithmetic can
    #: check a window without the simulator's record of its counters.
    steady: bool = False
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._load = 1.0
        self._pf = [0.90 + 0.08 * self._rng.random() for _ in range(3)]
        self._share = [0.30 + 0.06 * self._rng.random() for _ in range(3)]
        total = sum(self._share)
        self._share = [s / total for s in self._share]
        self._volts = [230.0 + 4 * (self._rng.random() - 0.5) for _ in range(3)]
        self._freq = 50.0
        self._t: float | None = None
        self._started: float | None = None
        self._did_reset = False
        self.ratios = {name: self.ratios.get(name, 1.0) for name in self.regmap.ratios}
        # Behind a PT the primary voltage is the secondary's 230 V times its ratio, and the
        # current for the same power that much smaller (it must fit the meter's registers).
        volts = self.regmap.spec(Q.VOLTAGE_L1_V)
        pt = math.prod(self.ratios[name] for name in volts.ratios) if volts else 1.0
        self._volts = [v * pt for v in self._volts]
        self.load_kw = min(self.load_kw, self._rated_load())
        self.counters: dict[Q, float] = {}
        for spec in self.regmap.registers:
            if spec.quantity.is_counter:
                self.counters[spec.quantity] = self._start_value(spec.quantity)

    def _rated_load(self) -> float:
        """The most a meter with a datasheet rating can draw here: the load wanders up to
        1.8 times ``load_kw``, and a real SDM120 (45 A at 230 V) never shows 36 kW."""
        ratings = self.regmap.ratings if isinstance(self.regmap, Profile) else None
        spec = self.regmap.spec(Q.ENERGY_IMPORT_KWH) or self.regmap.spec(Q.ACTIVE_POWER_KW)
        if ratings is None or spec is None:
            return math.inf
        factor = math.prod(self.ratios.get(name, 1.0) for name in spec.ratios)
        return ratings.max_per_h * factor / 2.0

    def _start_value(self, q: Q) -> float:
        spec = self.regmap.spec(q)
        wraps = spec is not None and not spec.type.is_float and not spec.type.is_signed
        if self.near_wrap is not None and spec is not None and wraps:
            factor = spec.scale
            for name in spec.ratios:
                factor *= self.ratios.get(name, 1.0)
            top_raw = (1 << spec.type.bits) - 1
            start = top_raw * factor - self.near_wrap
            # A uint64 in 0.01 kWh tops out at 1.8e17 kWh, where a float64 steps by 32 kWh:
            # `top - 5` is `top`, whose register value rounds past the top and reads 0.
            # Step down to the first float whose register value is still below the top.
            while round(start / factor) > top_raw:
                start = math.nextafter(start, 0.0)
            return start
        return self.start_counters * (1.0 + self.start_jitter * self._rng.random())

    # --- dynamics ---------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move the state to time ``now`` (seconds), integrating counters."""
        if self._t is None:
            self._t = self._started = now
            return
        dt = now - self._t
        if dt <= 0:
            return
        p_before = self.active_power_kw()
        # Load wanders slowly: mean-reverting random walk, seeded.
        steps = 0 if self.steady else max(1, min(int(dt), 60))
        for _ in range(steps):
            self._load += 0.15 * (1.0 - self._load) * min(dt / steps, 1.0)
            self._load += 0.03 * self._rng.gauss(0.0, 1.0) * math.sqrt(min(dt / steps, 1.0))
            self._load = min(max(self._load, 0.05), 1.8)
        self._freq = 50.0 + 0.05 * math.sin(now / 37.0)
        p_after = self.active_power_kw()
        hours = dt / 3600.0
        p_mean = 0.5 * (p_before + p_after)  # trapezoid: exact for the linear path we model
        q_mean = p_mean * self._tan_phi()
        for q in self.counters:
            if q is Q.ENERGY_IMPORT_KWH:
                self.counters[q] += max(p_mean, 0.0) * hours
            elif q is Q.ENERGY_EXPORT_KWH:
                self.counters[q] += max(-p_mean, 0.0) * hours
            elif q is Q.REACTIVE_ENERGY_IMPORT_KVARH:
                self.counters[q] += max(q_mean, 0.0) * hours
            elif q is Q.REACTIVE_ENERGY_EXPORT_KVARH:
                self.counters[q] += max(-q_mean, 0.0) * hours
            elif q is Q.GAS_VOLUME_M3:
                # load_kw of a gas meter is read as m3/h of flow
                self.counters[q] += abs(p_mean) * hours
            elif q is Q.OUTPUT_UNITS:
                self.counters[q] += abs(p_mean) * hours
        self._t = now
        assert self._started is not None
        if (
            self.faults.reset_after_s is not None
            and not self._did_reset
            and now - self._started >= self.faults.reset_after_s
        ):
            self._did_reset = True
            for q in self.counters:
                self.counters[q] = 0.0

    def _tan_phi(self) -> float:
        pf = sum(self._pf) / 3
        return math.tan(math.acos(pf))

    def _currents(self) -> list[float]:
        p_w = abs(self.load_kw) * self._load * 1000.0
        return [
            p_w * s / (v * pf) for s, v, pf in zip(self._share, self._volts, self._pf, strict=True)
        ]

    def active_power_kw(self) -> float:
        sign = -1.0 if self.export else 1.0
        return sign * sum(self._phase_p())

    def _phase_p(self) -> list[float]:
        return [
            v * i * pf / 1000.0
            for v, i, pf in zip(self._volts, self._currents(), self._pf, strict=True)
        ]

    def values(self) -> dict[Q, float]:
        """Every canonical quantity this meter's register map holds, from one state."""
        v, i, pf = self._volts, self._currents(), self._pf
        sign = -1.0 if self.export else 1.0
        p = [sign * x for x in self._phase_p()]
        s = [vv * ii / 1000.0 for vv, ii in zip(v, i, strict=True)]
        q = [
            sign * math.sqrt(max(ss * ss - abs(pp) ** 2, 0.0)) for ss, pp in zip(s, p, strict=True)
        ]
        phasor = [complex(math.cos(a), math.sin(a)) for a in _PHASE]
        vph = [vv * ph for vv, ph in zip(v, phasor, strict=True)]
        iph = [
            ii * ph * complex(pff, -math.sqrt(1 - pff * pff))
            for ii, ph, pff in zip(i, phasor, pf, strict=True)
        ]
        total = {
            Q.VOLTAGE_L1_V: v[0],
            Q.VOLTAGE_L2_V: v[1],
            Q.VOLTAGE_L3_V: v[2],
            Q.VOLTAGE_L1_L2_V: abs(vph[0] - vph[1]),
            Q.VOLTAGE_L2_L3_V: abs(vph[1] - vph[2]),
            Q.VOLTAGE_L3_L1_V: abs(vph[2] - vph[0]),
            Q.CURRENT_L1_A: i[0],
            Q.CURRENT_L2_A: i[1],
            Q.CURRENT_L3_A: i[2],
            Q.CURRENT_N_A: abs(sum(iph)),
            Q.ACTIVE_POWER_L1_KW: p[0],
            Q.ACTIVE_POWER_L2_KW: p[1],
            Q.ACTIVE_POWER_L3_KW: p[2],
            Q.ACTIVE_POWER_KW: sum(p),
            Q.REACTIVE_POWER_KVAR: sum(q),
            Q.APPARENT_POWER_KVA: sum(s),
            Q.POWER_FACTOR: abs(sum(p)) / sum(s) if sum(s) else 1.0,
            Q.FREQUENCY_HZ: self._freq,
        }
        if self.kind is not DeviceKind.ELECTRICITY:
            total = {}
        total.update(self.counters)
        wanted = set(self.regmap.quantities)
        return {k: val for k, val in total.items() if k in wanted}
