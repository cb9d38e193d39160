"""Who may hold a connection to the gateway's page, and for how long.

The page listens on the plant network, where any host can open sockets to it.
Connections are kept in two pools so that hosts without the password cannot
crowd out the people who have it:

* **pending**: accepted, the request head not yet complete (or, with a
  password, not yet authenticated). A pending connection must finish its head
  within ``HEAD_TIMEOUT_S`` (a total, not a per-byte timeout: sending one byte
  a second does not help) and then gets its answer or a refusal. One address
  holds at most ``MAX_PENDING_PER_ADDRESS`` of them and all addresses together
  ``MAX_PENDING``. A newcomer over either limit is not refused: the oldest
  pending connection of its own address (per-address limit) or of the address
  holding the most (total limit) is dropped for it. A flood therefore churns
  the flooder's own connections, and a viewer with one request in flight is
  only dropped when as many addresses as ``MAX_PENDING`` hold one each.
* **admitted**: connections that sent a complete request and, with a
  password, the right credentials: at most ``MAX_CLIENTS``, of which
  ``MAX_STREAMS`` event streams. Without a password every complete request is
  admitted, so each address may also hold at most ``MAX_CLIENTS_PER_ADDRESS``
  admitted connections and ``MAX_STREAMS_PER_ADDRESS`` streams. With a
  password there is no per-address limit here: the password holders are the
  operators, and a TLS reverse proxy shows all of them as one address.

``/metrics`` shows the pools (``energy_agent_http_connections{pool}``) and
the pending connections dropped (``energy_agent_http_dropped_total``): a
flood is visible there before anyone notices a slow page.

IPv6 clients are counted per /64, the block one host usually gets: counting
single addresses would give a host as many slots as it has addresses.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Seconds from accept to the end of the request head (slowloris is cut off here).
HEAD_TIMEOUT_S = 3.0
#: Pending (not yet authenticated) connections per client address, and in all.
MAX_PENDING_PER_ADDRESS = 8
MAX_PENDING = 64
#: Admitted connections (event streams included) and event streams, in all.
MAX_CLIENTS = 64
MAX_STREAMS = 32
#: Without a password: admitted connections and event streams per client address.
MAX_CLIENTS_PER_ADDRESS = 16
MAX_STREAMS_PER_ADDRESS = 8


@dataclass(frozen=True)
class Limits:
    """The limits above; tests and embedders may tighten them."""

    head_timeout_s: float = HEAD_TIMEOUT_S
    pending_per_address: int = MAX_PENDING_PER_ADDRESS
    pending: int = MAX_PENDING
    clients: int = MAX_CLIENTS
    streams: int = MAX_STREAMS
    clients_per_address: int = MAX_CLIENTS_PER_ADDRESS
    streams_per_address: int = MAX_STREAMS_PER_ADDRESS


def address_key(peername: object) -> str:
    """The client a connection is counted against: its IPv4 address or IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(eq=False)
class Slot:
    """One connection's place in the gate; ``drop`` ends it when it is evicted."""

    address: str
    drop: Callable[[], object]
    admitted: bool = False
    stream: bool = False
    #: Evicted from the pending pool. Its task is cancelled, but may still run on:
    #: asyncio.wait_for (3.11) returns a result that arrived with the cancellation.
    dropped: bool = False


class Gate:
    """Counts connections per pool and address; refuses or evicts at the limits."""

    def __init__(self, limits: Limits, *, per_address_admitted: bool) -> None:
        self.limits = limits
        self.per_address_admitted = per_address_admitted
        #: Pending slots per address, oldest first (dicts and lists keep order).
        self._pending: dict[str, list[Slot]] = {}
        self._admitted: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()
        self.evicted = 0

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._pending.values())

    @property
    def admitted(self) -> int:
        return self._admitted.total()

    @property
    def streams(self) -> int:
        return self._streams.total()

    def arrive(self, address: str, drop: Callable[[], object]) -> Slot:
        """A new connection from ``address``: always taken, an older pending one may go."""
        own = self._pending.get(address, [])
        if len(own) >= self.limits.pending_per_address:
            self._evict(own[0])
        elif self.pending >= self.limits.pending:
            heaviest = max(self._pending.values(), key=len)
            self._evict(heaviest[0])
        slot = Slot(address, drop)
        self._pending.setdefault(address, []).append(slot)
        return slot

    def admit(self, slot: Slot) -> str | None:
        """Move ``slot`` to the admitted pool; the reason for a 503 when it is full."""
        if slot.dropped:
            return "dropped for newer connections"
        if self.admitted >= self.limits.clients:
            return "too many connections"
        if (
            self.per_address_admitted
            and self._admitted[slot.address] >= self.limits.clients_per_address
        ):
            return "too many connections from this address"
        self._unpend(slot)
        slot.admitted = True
        self._admitted[slot.address] += 1
        return None

    def open_stream(self, slot: Slot) -> str | None:
        """Count an admitted connection as an event stream; the reason when it may not."""
        if self.streams >= self.limits.streams:
            return "too many event streams"
        if self.per_address_admitted and self._streams[slot.address] >= (
            self.limits.streams_per_address
        ):
            return "too many event streams from this address"
        slot.stream = True
        self._streams[slot.address] += 1
        return None

    def leave(self, slot: Slot) -> None:
        """The connection ended (any way, any number of times)."""
        self._unpend(slot)
        if slot.admitted:
            slot.admitted = False
            _decrement(self._admitted, slot.address)
        if slot.stream:
            slot.stream = False
            _decrement(self._streams, slot.address)

    def _evict(self, slot: Slot) -> None:
        self._unpend(slot)
        slot.dropped = True
        self.evicted += 1
        slot.drop()

    def _unpend(self, slot: Slot) -> None:
        own = self._pending.get(slot.address)
        if own is not None and slot in own:
            own.remove(slot)
            if not own:
                del self._pending[slot.address]


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class GateCollector(Collector):
    """The gate's pools on /metrics, read at scrape time."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def describe(self) -> Iterable[Metric]:
        return []  # read on scrape; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        pools = GaugeMetricFamily(
            "energy_agent_http_connections",
            "Connections to the page: pending (no complete authenticated request yet), "
            "admitted (event streams included), streams",
            labels=["pool"],
        )
        gate = self._gate
        for pool, n in (
            ("pending", gate.pending),
            ("admitted", gate.admitted),
            ("streams", gate.streams),
        ):
            pools.add_metric([pool], float(n))
        yield pools
        yield CounterMetricFamily(
            "energy_agent_http_dropped",
            "Pending connections dropped to make room for newer ones (a flood)",
            value=float(gate.evicted),
        )
