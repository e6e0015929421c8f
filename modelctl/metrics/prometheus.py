"""Prometheus provider: one instant query (`GET /api/v1/query`) per quantity and version.

Each PromQL template (modelctl.yaml `metrics.queries`) may use `{model}`, `{version}` and
`{since}` (whole seconds since the canary started, at least 1); counters should be read with
`increase(...[{since}s])` so the figures cover the canary period. A query must give exactly one
series with a finite value: an error from Prometheus, a scalar or matrix, no series, several
series, NaN/Inf or a stale sample make that quantity unusable (a per-quantity problem, judged
`error`), not an exception. Prometheus's own staleness handling drops series that stopped being
scraped; the timestamp check catches caches and clock trouble on the way.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

from ..analysis import SAMPLE_FIELDS, Sample
from ..errors import MetricsError
from ..names import check_name, check_version
from .base import HttpLimits, HttpSession, _one_line, parse_json, where

DEFAULT_URL = "http://127.0.0.1:9090"
DEFAULT_QUERIES: dict[str, str] = {
    "requests": 'sum(increase(llm_requests_total{model="{model}",version="{version}"}[{since}s]))',
    "errors": 'sum(increase(llm_errors_total{model="{model}",version="{version}"}[{since}s]))',
    "latency_p95_ms": 'histogram_quantile(0.95, sum by (le) (rate(llm_latency_ms_bucket{model="{model}",version="{version}"}[{since}s])))',
    "cost_per_request": 'sum(increase(llm_cost_total{model="{model}",version="{version}"}[{since}s])) / sum(increase(llm_requests_total{model="{model}",version="{version}"}[{since}s]))',
}


def render_query(template: str, model: str, version: str, since_seconds: float) -> str:
    """Fill `{model}`, `{version}` and `{since}` (PromQL braces are left alone)."""
    return (
        template.replace("{model}", check_name(model))
        .replace("{version}", check_version(version))
        .replace("{since}", str(since_window(since_seconds)))
    )


def since_window(since_seconds: float) -> int:
    """Whole seconds for a range selector: rounded up, at least 1."""
    try:
        value = math.ceil(float(since_seconds))
    except (TypeError, ValueError, OverflowError):
        return 1
    return max(1, value)


class PrometheusProvider:
    """Reads per-version figures from a Prometheus server's HTTP API."""

    name = "prometheus"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        queries: Mapping[str, str] | None = None,
        *,
        limits: HttpLimits = HttpLimits(),
        token: str | None = None,
        stale_seconds: float = 120,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.queries = dict(queries or DEFAULT_QUERIES)
        self.limits = limits
        self._token = token
        self.stale_seconds = stale_seconds
        self._clock = clock
        self._monotonic = monotonic

    def __repr__(self) -> str:
        return f"PrometheusProvider(url={where(self.url)!r}, queries={sorted(self.queries)})"

    @property
    def endpoint(self) -> str:
        """The instant-query URL."""
        base = self.url.rstrip("/")
        return base if base.endswith("/api/v1/query") else base + "/api/v1/query"

    def fetch(self, model: str, versions: Sequence[str], since_seconds: float) -> dict[str, Sample]:
        """One Sample per version; MetricsError when Prometheus cannot be asked at all."""
        endpoint = self.endpoint.replace("{model}", check_name(model))
        out: dict[str, Sample] = {}
        with HttpSession(self.limits, self._token, self._monotonic) as http:
            for version in versions:
                values: dict[str, float] = {}
                problems: dict[str, str] = {}
                stamps: list[float] = []
                for quantity, template in self.queries.items():
                    query = render_query(template, model, version, since_seconds)
                    status, body = http.get(endpoint, {"query": query})
                    value, stamp, problem = self._read(status, body, endpoint)
                    if problem:
                        problems[quantity] = problem
                    else:
                        values[quantity] = value
                        stamps.append(stamp)
                known = {k: v for k, v in values.items() if k in SAMPLE_FIELDS}
                extra = {k: v for k, v in values.items() if k not in SAMPLE_FIELDS}
                out[version] = Sample(**known, extra=extra, problems=problems,
                                      timestamp=min(stamps) if stamps else None)
        return out

    def _read(self, status: int, body: bytes, endpoint: str) -> tuple[float | None, float | None, str | None]:
        """(value, timestamp, problem) of one query response."""
        try:
            doc = parse_json(body, endpoint)
        except MetricsError:
            if status >= 300:
                raise MetricsError(f"Prometheus at {where(endpoint)} answered HTTP {status}") from None
            raise
        if not isinstance(doc, dict) or "status" not in doc:
            if status >= 300:
                raise MetricsError(f"Prometheus at {where(endpoint)} answered HTTP {status}")
            raise MetricsError(f"{where(endpoint)} does not answer like the Prometheus HTTP API",
                               hint="metrics.url should be the Prometheus base URL")
        if doc.get("status") != "success":
            kind = doc.get("errorType", "error")
            return None, None, _one_line(f"Prometheus {kind}: {doc.get('error', doc.get('status'))}")
        if status >= 300:
            raise MetricsError(f"Prometheus at {where(endpoint)} answered HTTP {status}")
        warnings = doc.get("warnings")
        if warnings:
            # a partial response (a store or shard missing): judging on part of the traffic could
            # roll back, or pass, on numbers that are not the canary's
            first = warnings[0] if isinstance(warnings, list) else warnings
            return None, None, _one_line(f"Prometheus warning (partial response): {first}", 200)
        data = doc.get("data")
        if not isinstance(data, dict):
            return None, None, "response has no data"
        kind = data.get("resultType")
        if kind != "vector":
            return None, None, f"expected an instant vector, got {_one_line(kind, 20)}"
        result = data.get("result")
        if not isinstance(result, list):
            return None, None, "response has no result list"
        if not result:
            return None, None, "no series (no data for this version in the window)"
        if len(result) > 1:
            return None, None, f"{len(result)} series where one is expected (aggregate the query, e.g. sum(...))"
        return self._sample_value(result[0])

    def _sample_value(self, series: Any) -> tuple[float | None, float | None, str | None]:
        pair = series.get("value") if isinstance(series, dict) else None
        if not isinstance(pair, list) or len(pair) != 2:
            return None, None, "series has no [timestamp, value] pair"
        stamp, raw = pair
        try:
            value = float(raw) if isinstance(raw, str) else None
            stamp = float(stamp) if not isinstance(stamp, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or stamp is None:
            return None, None, f"unreadable sample {_one_line(repr(pair), 60)}"
        if not math.isfinite(value):
            return None, None, f"value is {raw}"
        if value < 0:
            return None, None, f"value is negative ({raw})"
        if not math.isfinite(stamp):
            return None, None, "sample timestamp is not a time"
        age = self._clock() - stamp
        if age > self.stale_seconds:
            return None, None, f"stale sample ({age:.0f}s old, limit {self.stale_seconds:g}s)"
        return value, stamp, None
