"""Wiring: consumer -> writer -> acknowledgements, metrics, and an orderly stop.

Threads, not asyncio: both clients are blocking libraries with threads of their
own (paho's network loop, urllib3 under influxdb-client). The main thread only
waits for the stop signal.

Stop order: stop taking batches (the writer writes and acknowledges what it has,
for up to a few seconds), then disconnect. The MQTT session stays at the broker,
so whatever was not acknowledged is delivered again at the next start.
"""

from __future__ import annotations

import logging
import threading

from agent.bridge.consumer import Consumer, Inbound
from agent.bridge.metrics import BridgeMetrics
from agent.bridge.validate import Limits, Rejected, Validator
from agent.bridge.writer import STOP_GRACE_S, InfluxTarget, InfluxWriter, Writer
from agent.config.bridge import BridgeConfig

log = logging.getLogger(__name__)


class Bridge:
    def __init__(self, config: BridgeConfig, *, client_id: str | None = None) -> None:
        self.config = config
        self.metrics = BridgeMetrics()
        self.influx = InfluxWriter(InfluxTarget.from_config(config.influx))
        b = config.bridge
        limits = Limits(
            prefix=config.mqtt.prefix,
            max_payload_bytes=b.max_payload_bytes,
            max_past_s=b.max_past_s,
            max_future_s=b.max_future_s,
        )
        self.writer = Writer(
            b, self.metrics, self.influx.write, self._ack, self._reject, Validator(limits)
        )
        self.consumer = Consumer(
            config.mqtt, config.bridge, self.metrics, self.writer.put, client_id=client_id
        )
        self.stop_event = threading.Event()

    def _ack(self, batch: list[Inbound]) -> int:
        return self.consumer.ack(batch)

    def _reject(self, item: Inbound, rejected: Rejected) -> None:
        self.consumer.reject(
            item.topic, item.payload, item.mid, item.qos, item.generation, rejected
        )

    def run(self) -> None:
        """Until :attr:`stop_event` is set (the CLI sets it on SIGTERM / Ctrl-C)."""
        b = self.config.bridge
        if b.metrics_listen is not None:
            self.metrics.serve(b.metrics_listen)
        self.writer.start()
        self.consumer.start()
        log.info(
            "bridge %s: group %r, receive maximum %d, batches of %d points / %d ms, "
            "writing to %s bucket %r, metrics on %s",
            self.consumer.client_id,
            b.group,
            b.receive_max,
            b.batch_size,
            b.flush_interval_ms,
            self.config.influx.url,
            self.config.influx.bucket,
            b.metrics_listen or "(off)",
        )
        try:
            self.stop_event.wait()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        log.info("stopping: writing what has arrived, then disconnecting")
        self.writer.stop()
        self.writer.join(STOP_GRACE_S + 5)
        self.consumer.stop()
        self.influx.close()
