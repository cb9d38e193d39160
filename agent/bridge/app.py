"""Wiring: consumer -> writer -> acknowledgements, metrics, liveness, and an orderly stop.

Threads, not asyncio: both clients are blocking libraries with threads of their
own (paho's network loop, urllib3 under influxdb-client). The main thread only
watches: every few seconds it probes paho's network thread, judges the evidence
of progress (:mod:`agent.bridge.liveness`) and, when the bridge is healthy, feeds
systemd's watchdog (``WATCHDOG=1``, with a ``STATUS=`` line for ``systemctl
status``). It is never on the data path, so a wedged data path cannot feed it.

Stop order: take no more messages from the broker, let the writer write and
acknowledge what it holds (for up to ``STOP_GRACE_S`` plus one write's time
limit), then disconnect (within ``MQTT_STOP_S``). Every wait has a limit: a
thread that does not finish in time is left behind and :meth:`Bridge.run`
returns False (the CLI exits 1). The MQTT session stays at the broker, so
whatever was not acknowledged is delivered again at the next start.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.bridge.consumer import BridgeSetupError, Consumer, Inbound
from agent.bridge.ledger import LedgerVerifier
from agent.bridge.liveness import Liveness, Verdict, stall_limit
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Limits, Rejected, Validator
from agent.bridge.writer import STOP_GRACE_S, InfluxTarget, InfluxWriter, Writer
from agent.config.bridge import BridgeConfig
from agent.ledger import crypto_missing
from agent.sdnotify import Notifier, State
from agent.store import PointStore
from agent.store.flux import FluxStore
from agent.store.victoria import VictoriaMetricsStore

log = logging.getLogger(__name__)

#: For the MQTT side of a stop: dead letters' answers, DISCONNECT, paho's thread.
MQTT_STOP_S = 5.0
#: The main thread looks at the bridge at least this often (more often under a
#: watchdog: at half its interval, as sd_watchdog_enabled() advises).
WATCH_EVERY_S = 5.0


class Bridge:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        client_id: str | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.metrics = BridgeMetrics()
        self.notifier = notifier or Notifier()
        self.influx = InfluxWriter(InfluxTarget.from_config(config.influx))
        b = config.bridge
        self.liveness = Liveness(
            stall_limit(b.flush_interval_ms / 1000.0, config.influx.timeout_s, b.retry_max_s),
            self.metrics.last_progress,
        )
        limits = Limits(
            prefix=config.mqtt.prefix,
            max_payload_bytes=b.max_payload_bytes,
            max_past_s=b.max_past_s,
            max_future_s=b.max_future_s,
        )
        self._verdict_writer: InfluxWriter | None = None
        #: The ledger's verification (a thread of its own), when ``ledger:`` is configured.
        self.verifier = self._verifier(config)
        self.writer = Writer(
            b,
            self.metrics,
            self.influx.write,
            self._ack,
            self._reject,
            Validator(limits),
            self.liveness,
            written=None if self.verifier is None else self._written,
        )
        self.consumer = Consumer(
            config.mqtt,
            config.bridge,
            self.metrics,
            self.writer.put,
            client_id=client_id,
            progress=self.liveness.progressed,
        )
        self.metrics.pending.set_function(self.pending)
        self.metrics.last_progress.set(time.time())
        self.stop_event = threading.Event()
        self._healthy = True

    def _verifier(self, config: BridgeConfig) -> LedgerVerifier | None:
        if config.ledger is None:
            return None
        missing = crypto_missing()
        if missing is not None:
            raise BridgeSetupError(f"ledger: {missing}")
        influx = config.influx
        store: PointStore
        if config.ledger.database == "victoriametrics":
            store = VictoriaMetricsStore(influx.url, timeout_s=influx.timeout_s)
        else:
            target = self.influx.target
            store = FluxStore(
                influx.url,
                org=influx.org,
                bucket=influx.bucket,
                token=target.token,
                timeout_s=influx.timeout_s,
                verify_tls=influx.verify_tls,
                ca=target.ca,
            )
        # Verdicts go through a client of their own: never in the data path's way.
        verdicts = InfluxWriter(self.influx.target)
        self._verdict_writer = verdicts
        return LedgerVerifier(config.ledger, store, self.metrics, verdicts.write)

    def _written(self, batch: list[Inbound]) -> None:
        verifier = self.verifier
        assert verifier is not None
        for item in batch:
            if item.measurement == "ledger":
                verifier.submit(item.payload)

    def _ack(self, batch: list[Inbound]) -> int:
        return self.consumer.ack(batch)

    def _reject(self, item: Inbound, rejected: Rejected) -> None:
        self.consumer.reject(
            item.topic, item.payload, item.mid, item.qos, item.generation, rejected
        )

    def pending(self) -> int:
        """Received and not yet acknowledged: queued, in a batch, or awaiting a dead letter."""
        return self.writer.pending + self.consumer.dead_letters_pending

    def run(self) -> bool:
        """Until :attr:`stop_event` is set (the CLI sets it on SIGTERM / Ctrl-C).

        True when everything stopped in time, False when a thread was left behind.
        """
        b = self.config.bridge
        if b.metrics_listen is not None:
            self.metrics.serve(b.metrics_listen)
        self.writer.start()
        if self.verifier is not None:
            self.verifier.start()
        self.consumer.start()
        log.info(
            "bridge %s: group %r, receive maximum %d, batches of %d points / %d ms, "
            "writing to %s bucket %r, metrics on %s, stalled after %.0f s without progress",
            self.consumer.client_id,
            b.group,
            b.receive_max,
            b.batch_size,
            b.flush_interval_ms,
            self.config.influx.url,
            self.config.influx.bucket,
            b.metrics_listen or "(off)",
            self.liveness.stall_s,
        )
        self.notifier.notify(State.READY, status=f"started, {self.consumer.client_id}")
        every = min(self.notifier.watchdog_s or WATCH_EVERY_S, WATCH_EVERY_S)
        try:
            while not self.stop_event.wait(every):
                self.watch()
        finally:
            self.notifier.notify(State.STOPPING, status="stopping")
            clean = self.shutdown()
        return clean

    def watch(self) -> Verdict:
        """One look: probe, judge, feed the watchdog only when healthy."""
        verdict = self.liveness.verdict(
            self.pending(), self.consumer.unanswered_s(time.monotonic())
        )
        status = f"{verdict.why}; {self.pending()} pending"
        if verdict.healthy:
            if not self._healthy:
                log.warning("the bridge moves again (%s); feeding the watchdog", verdict.why)
            self.notifier.notify(State.WATCHDOG, status=status)
        else:
            if self._healthy:
                log.error("the bridge is stalled: %s; not feeding the watchdog", verdict.why)
            self.notifier.notify(status=f"stalled: {status}")
        self._healthy = verdict.healthy
        return verdict

    def shutdown(self) -> bool:
        log.info("stopping: writing what has arrived, then disconnecting")
        self.consumer.pause()
        self.writer.stop()
        self.writer.join(STOP_GRACE_S + self.config.influx.timeout_s + 1.0)
        clean = not self.writer.is_alive()
        if not clean:
            log.error(
                "the writer did not finish in time: its %d messages stay unacknowledged "
                "and come back at the next start",
                self.writer.pending,
            )
        if not self.consumer.stop(MQTT_STOP_S):
            log.error("paho's network thread did not stop in %.0f s; leaving it", MQTT_STOP_S)
            clean = False
        if self.verifier is not None:
            # Entries not yet verified are in the database; `verify` checks them offline.
            self.verifier.stop()
            self.verifier.join(5.0)
            self.verifier.store.close()
        if self._verdict_writer is not None:
            self._verdict_writer.close()
        self.influx.close()
        return clean
