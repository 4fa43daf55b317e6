"""``GET /metrics``: Prometheus text exposition format 0.0.4.

Series (every name starts with ``locker_``):

* ``locker_database_up``, ``locker_broker_connected`` (gauges, 0/1)
* ``locker_outbox_depth`` (gauge): outbox rows waiting for the relay
* ``locker_banks{status}``, ``locker_command_transactions{action,status}`` (gauges, from the
  read models: the whole fleet, whichever process did the work)
* ``locker_command_latency_seconds{action}`` (histogram): request to the device's answer,
  for commands answered in time, observed from the events this process records
* ``locker_alerts_open{kind}`` (gauge): open alerts by kind (read model, the whole fleet)
* ``locker_banks_clock_skewed`` (gauge): banks whose clock is off by more than 5 s
* ``locker_runtime_condition{condition}`` (gauge, 0/1): this instance's runtime conditions
  (``broker_down``, ``store_unwritable``): not stored, per instance
* ``locker_hook_requests_total{endpoint,result}`` (counter): auth hook answers;
  ``locker_hook_latency_seconds{endpoint}`` (histogram): their answer time;
  ``locker_hook_store_lookups_total``: directory misses asked of the store
* ``locker_http_event_streams`` (gauge): open ``/api/events/stream`` connections
* ``locker_mqtt_<key>_total[{kind|result}]`` (counters): whatever the MQTT runtime's
  provider reports, e.g. messages by kind, duplicates, rejected, commands by result

The MQTT runtime is plugged in through a provider callable returning
``{key: number | {label_value: number}}`` (``backend.mqtt.metrics.Metrics.snapshot``
has that shape); values are taken as counters. Nothing here needs the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeGuard

from aiohttp import web

from backend.domain.errors import NotFound
from backend.domain.events import (
    CommandExpired,
    CommandFailed,
    CommandTimedOut,
    CompartmentOpened,
    CompartmentOpeningRequested,
    ConfigApplied,
    ConfigApplyRequested,
)
from backend.http.health import HealthMonitor
from backend.http.hook import HookMetrics
from backend.service import LockerService
from backend.store import metric_counts
from backend.store.event_store import RecordedEvent

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "CommandLatency",
    "MetricsEndpoint",
    "MqttMetricsProvider",
    "PrometheusText",
]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STORE_TIMEOUT: Final = 3.0
MqttMetricsProvider = Callable[[], Mapping[str, float | Mapping[str, float]]]

_NAME_BAD: Final = re.compile(r"[^a-zA-Z0-9_:]")
_MQTT_LABELS: Final[Mapping[str, str]] = {"commands": "result", "registrations": "result"}


def metric_name(text: str) -> str:
    """A valid Prometheus metric name from ``text``."""
    name = _NAME_BAD.sub("_", text)
    return name if name and not name[0].isdigit() else "_" + name


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class PrometheusText:
    """Builds one exposition: each family's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._declared: set[str] = set()

    def family(self, name: str, kind: str, help_text: str) -> None:
        if name in self._declared:
            return
        self._declared.add(name)
        self._lines.append(f"# HELP {name} {help_text.replace(chr(10), ' ')}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self._lines.append(f"{name} {_number(value)}")

    def raw(self, lines: list[str]) -> None:
        """Lines already in the exposition format (a whole family with HELP and TYPE)."""
        self._lines.extend(lines)

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


# ----- command latency -------------------------------------------------------------------


@dataclass
class Histogram:
    """Cumulative buckets, sum and count of one label set."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


_ANSWERS: Final = (CompartmentOpened, CommandFailed, ConfigApplied)


class CommandLatency:
    """Request-to-answer latency of commands, fed by the service's recorded events.

    Pass ``on_events`` to ``LockerService.subscribe``. Request times are kept
    in memory for up to ``max_tracked`` open commands; an answer to a command
    requested before this process started (or by another process) is looked
    up in the read model once. Late answers (after a timeout) are not
    observed: the command already counted as timed out.
    """

    def __init__(
        self,
        service: LockerService,
        *,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        max_tracked: int = 10_000,
    ) -> None:
        self.service = service
        self.buckets = buckets
        self.max_tracked = max_tracked
        self._requested: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._histograms: dict[str, Histogram] = {}
        self.closed = False

    def observe(self, action: str, seconds: float) -> None:
        histogram = self._histograms.get(action)
        if histogram is None:
            histogram = self._histograms[action] = Histogram(self.buckets)
        histogram.observe(seconds)

    def histograms(self) -> dict[str, Histogram]:
        return dict(self._histograms)

    def _track(self, transaction_id: str, action: str, requested_at: datetime) -> None:
        self._requested[transaction_id] = (action, requested_at)
        while len(self._requested) > self.max_tracked:
            self._requested.popitem(last=False)

    async def _requested_at(self, transaction_id: str) -> tuple[str, datetime] | None:
        known = self._requested.pop(transaction_id, None)
        if known is not None:
            return known
        try:
            txn = await self.service.get_transaction(transaction_id)
        except NotFound:
            return None
        return txn.action, txn.requested_at

    async def on_events(self, recorded: list[RecordedEvent]) -> None:
        """The service listener: track requests, observe answers."""
        if self.closed:
            return
        for item in recorded:
            event = item.event
            if isinstance(event, CompartmentOpeningRequested):
                self._track(event.transaction_id, "open_compartment", event.occurred_at)
            elif isinstance(event, ConfigApplyRequested):
                self._track(event.transaction_id, "apply_config", event.occurred_at)
            elif isinstance(event, (CommandTimedOut, CommandExpired)):
                self._requested.pop(event.transaction_id, None)
            elif isinstance(event, _ANSWERS):
                if event.late:
                    self._requested.pop(event.transaction_id, None)
                    continue
                found = await self._requested_at(event.transaction_id)
                if found is not None:
                    action, requested_at = found
                    self.observe(action, (event.occurred_at - requested_at).total_seconds())


# ----- the endpoint ----------------------------------------------------------------------


@dataclass(frozen=True)
class _StoreCounts:
    banks: dict[str, int]
    transactions: dict[tuple[str, str], int]
    outbox_depth: int
    alerts: dict[str, int]
    skewed: int = 0


class MetricsEndpoint:
    """Gathers every source and renders the exposition."""

    def __init__(
        self,
        service: LockerService,
        monitor: HealthMonitor,
        *,
        hook_metrics: HookMetrics | None = None,
        mqtt_metrics: MqttMetricsProvider | None = None,
        latency: CommandLatency | None = None,
        open_streams: Callable[[], int] | None = None,
        connect_refusals: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.service = service
        self.monitor = monitor
        self.hook_metrics = hook_metrics
        self.mqtt_metrics = mqtt_metrics
        self.latency = latency
        self.open_streams = open_streams
        self.connect_refusals = connect_refusals

    async def _store_counts(self) -> _StoreCounts:
        async with asyncio.timeout(STORE_TIMEOUT):
            banks, txns = await self.service.read(metric_counts.read_model_counts)
            depth = await self.service.devices.outbox_depth()
            alerts = await self.service.open_alert_counts()
            skewed = await self.service.read(metric_counts.clock_skewed_banks)
        return _StoreCounts(banks, txns, depth, alerts, skewed)

    async def render(self) -> str:
        out = PrometheusText()
        database_ok = await self.monitor.database_ok()
        out.family("locker_database_up", "gauge", "1 when the database answers.")
        out.sample("locker_database_up", int(database_ok))
        out.family("locker_broker_connected", "gauge", "1 when the MQTT runtime is connected.")
        out.sample("locker_broker_connected", int(self.monitor.broker_connected()))
        out.family(
            "locker_runtime_condition",
            "gauge",
            "1 while a runtime condition holds here.",
        )
        for name, held in sorted(self.monitor.conditions(database_ok).items()):
            out.sample("locker_runtime_condition", int(held), {"condition": name})
        counts: _StoreCounts | None = None
        if database_ok:
            try:
                counts = await self._store_counts()
            except Exception as exc:
                log.warning("metrics: reading the store failed: %s", exc)
        if counts is not None:
            self._store_section(out, counts)
        if self.latency is not None:
            self._latency_section(out, self.latency)
        if self.connect_refusals is not None:
            out.family(
                "locker_mqtt_refused_total",
                "counter",
                "MQTT CONNECTs (hook, embedded broker) and registrations (embedded broker) "
                "refused, by reason.",
            )
            for reason, n in sorted(self.connect_refusals().items()):
                out.sample("locker_mqtt_refused_total", n, {"reason": reason})
        if self.hook_metrics is not None:
            out.raw(self.hook_metrics.exposition())
        if self.open_streams is not None:
            out.family("locker_http_event_streams", "gauge", "Open event streams.")
            out.sample("locker_http_event_streams", self.open_streams())
        if self.mqtt_metrics is not None:
            try:
                snapshot = dict(self.mqtt_metrics())
            except Exception:
                log.exception("metrics: the MQTT metrics provider failed")
                snapshot = {}
            self._mqtt_section(out, snapshot)
        return out.render()

    @staticmethod
    def _store_section(out: PrometheusText, counts: _StoreCounts) -> None:
        out.family("locker_outbox_depth", "gauge", "Outbox rows waiting to be published.")
        out.sample("locker_outbox_depth", counts.outbox_depth)
        out.family("locker_banks", "gauge", "Locker banks by status.")
        for status in ("unprovisioned", "provisioned", "online", "offline", "revoked"):
            out.sample("locker_banks", counts.banks.get(status, 0), {"status": status})
        for status, n in sorted(counts.banks.items()):
            if status not in ("unprovisioned", "provisioned", "online", "offline", "revoked"):
                out.sample("locker_banks", n, {"status": status})
        out.family(
            "locker_command_transactions", "gauge", "Command transactions by action and status."
        )
        for (action, status), n in sorted(counts.transactions.items()):
            out.sample("locker_command_transactions", n, {"action": action, "status": status})
        out.family("locker_banks_clock_skewed", "gauge", "Banks whose clock is off by > 5 s.")
        out.sample("locker_banks_clock_skewed", counts.skewed)
        out.family("locker_alerts_open", "gauge", "Open alerts by kind.")
        for kind, n in sorted(counts.alerts.items()):
            out.sample("locker_alerts_open", n, {"kind": kind})

    @staticmethod
    def _latency_section(out: PrometheusText, latency: CommandLatency) -> None:
        name = "locker_command_latency_seconds"
        out.family(name, "histogram", "Command request to device answer (answered in time).")
        for action, hist in sorted(latency.histograms().items()):
            for bound, n in zip(hist.buckets, hist.counts, strict=True):
                out.sample(f"{name}_bucket", n, {"action": action, "le": _number(bound)})
            out.sample(f"{name}_bucket", hist.count, {"action": action, "le": "+Inf"})
            out.sample(f"{name}_sum", hist.total, {"action": action})
            out.sample(f"{name}_count", hist.count, {"action": action})

    @staticmethod
    def _mqtt_section(out: PrometheusText, snapshot: Mapping[str, object]) -> None:
        for key, value in sorted(snapshot.items()):
            base = metric_name(f"locker_mqtt_{key}")
            name = base if base.endswith("_total") else base + "_total"
            if isinstance(value, Mapping):
                label = _MQTT_LABELS.get(key, "kind")
                out.family(name, "counter", f"MQTT runtime: {key} by {label}.")
                for label_value, n in sorted(value.items()):
                    if _is_number(n):
                        out.sample(name, n, {label: str(label_value)})
            elif _is_number(value):
                out.family(name, "counter", f"MQTT runtime: {key}.")
                out.sample(name, value)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        return web.Response(
            body=(await self.render()).encode(), headers={"Content-Type": CONTENT_TYPE}
        )


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
