"""Prometheus figures of one server (its own registry, so several apps in one process don't clash)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UNKNOWN = "-"  # the adapter label of requests that name no served adapter: user input never becomes a label


@dataclass
class ServeMetrics:
    registry: Any = field(init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("hfadapt_requests", "Requests answered, by adapter and endpoint", ["adapter", "endpoint"], registry=self.registry)
        self.errors = Counter("hfadapt_request_errors", "Requests answered with an error status", ["adapter", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "hfadapt_request_latency_seconds", "Time from request to the last byte of the answer", ["adapter"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter("hfadapt_generated_tokens", "Tokens generated", ["adapter"], registry=self.registry)
        self.batch_size = Histogram("hfadapt_batch_size", "Requests per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def observe(self, adapter: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(adapter, endpoint).inc()
        self.latency.labels(adapter).observe(seconds)
        if status >= 400:
            self.errors.labels(adapter, endpoint, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
