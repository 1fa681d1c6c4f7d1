"""Counters, gauges and histograms for ``GET /metrics``, written in the Prometheus text exposition format
(version 0.0.4) without a client library.

A histogram with upper bounds ``b_1 < … < b_k`` (and ``+Inf``) exposes, per label set, the cumulative counts
``name_bucket{le="b_i"} = #{observations ≤ b_i}``, their ``name_sum`` and ``name_count``; a quantile is then
read off with ``histogram_quantile``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[tuple[str, str], ...]


def _labels_text(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, value in pairs)
    return "{" + ",".join(f'{name}="{value}"' for (name, _), value in zip(pairs, escaped)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, registry: Registry) -> None:
        self.name = name
        self.help_text = help_text
        self._lock = registry.lock
        registry.metrics.append(self)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A count that only goes up, one per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, registry: Registry) -> None:
        super().__init__(name, help_text, registry)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels_text(key)} {_number(value)}" for key, value in sorted(self.values.items())]


class Gauge(_Metric):
    """A value that goes up and down (open sessions, requests in progress)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, registry: Registry) -> None:
        super().__init__(name, help_text, registry)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)

    def lines(self) -> list[str]:
        return [f"{self.name} {_number(self.value)}"]


class Histogram(_Metric):
    """Observations counted into cumulative buckets ``le=b_i``, with their sum and count, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, registry: Registry, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text, registry)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[Labels, list[float]] = {}  # labels -> [count per bound..., +Inf count, sum]

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self.series.setdefault(key, [0.0] * (len(self.bounds) + 2))
            for index, bound in enumerate(self.bounds):
                if value <= bound:
                    counts[index] += 1
            counts[-2] += 1
            counts[-1] += value

    def lines(self) -> list[str]:
        lines = []
        for key, counts in sorted(self.series.items()):
            for bound, count in zip((*self.bounds, math.inf), counts[:-1]):
                lines.append(f"{self.name}_bucket{_labels_text(key, (('le', _number(bound)),))} {_number(count)}")
            lines.append(f"{self.name}_sum{_labels_text(key)} {_number(counts[-1])}")
            lines.append(f"{self.name}_count{_labels_text(key)} {_number(counts[-2])}")
        return lines


class Registry:
    """The server's metrics; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: list[_Metric] = []
        self.requests = Counter("grukit_requests_total", "HTTP requests answered, by route, method and status.", self)
        self.latency = Histogram(
            "grukit_request_seconds",
            "Time from a request's arrival to the end of its answer (a whole stream for /v1/generate), by route.",
            self,
            LATENCY_BUCKETS,
        )
        self.in_progress = Gauge("grukit_requests_in_progress", "HTTP requests being answered now.", self)
        self.batch_size = Histogram(
            "grukit_batch_size", "Inputs the model ran in one call of the micro-batcher.", self, BATCH_BUCKETS
        )
        self.batch_requests = Histogram(
            "grukit_batch_requests", "Requests merged into one call of the micro-batcher.", self, BATCH_BUCKETS
        )
        self.sessions_open = Gauge("grukit_sessions_open", "Stateful sessions open now.", self)
        self.sessions_expired = Counter("grukit_sessions_expired_total", "Sessions closed for being idle.", self)
        self.streams_open = Gauge("grukit_streams_open", "Token streams (/v1/generate) running now.", self)
        self.tokens = Counter("grukit_generated_tokens_total", "Tokens sent by /v1/generate.", self)

    def render(self) -> str:
        with self.lock:
            lines = [line for metric in self.metrics for line in (*metric.header(), *metric.lines())]
        return "\n".join(lines) + "\n"
