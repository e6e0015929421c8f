"""http-json provider: `GET <url>` answering cumulative counters and current gauges per version.

    {"model": "support-agent",
     "timestamp": 1767225600,                       # optional, unix seconds
     "versions": {"2.3.1": {"requests": 10234, "errors": 98,
                            "latency_p95_ms": 870.0, "cost_per_request": 0.0011},
                  "2.4.0": {...}}}

Counters (`requests`, `errors` and the numerators of rate metrics) are cumulative; the provider
remembers the first poll and reports increases since then (counter resets handled). Everything
else is a gauge, passed through. `since_seconds` is not needed: the start is remembered. A bad
value (NaN, Inf, negative, a string) or a missing version becomes a per-quantity problem; a
response that is not this shape at all is a MetricsError.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..analysis import SAMPLE_FIELDS, Sample
from ..errors import MetricsError
from ..names import check_name
from .base import CounterTracker, HttpLimits, HttpSession, number_problem, parse_json, where

DEFAULT_URL = "http://127.0.0.1:9108/metrics/{model}"
DEFAULT_COUNTERS = ("requests", "errors")


class HttpJsonProvider:
    """Reads the http-json format of DESIGN §5 from one URL per model."""

    name = "http-json"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        counters: Iterable[str] = DEFAULT_COUNTERS,
        limits: HttpLimits = HttpLimits(),
        token: str | None = None,
        stale_seconds: float = 120,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.counters = frozenset(counters) | frozenset(DEFAULT_COUNTERS)
        self.limits = limits
        self._token = token
        self.stale_seconds = stale_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._tracker = CounterTracker()

    def __repr__(self) -> str:
        return f"HttpJsonProvider(url={where(self.url)!r}, counters={sorted(self.counters)})"

    def reset(self) -> None:
        """Start counting increases afresh at the next poll."""
        self._tracker.reset()

    def export_state(self) -> dict:
        """Where the counters started (for a later process to continue: watch --once)."""
        return {"url": where(self.url), "tracker": self._tracker.export()}

    def restore_state(self, data: Any) -> bool:
        """Continue counting from export_state() of the same URL; False when it does not fit."""
        if not isinstance(data, dict) or data.get("url") != where(self.url):
            return False
        return self._tracker.restore(data.get("tracker"))

    def fetch(self, model: str, versions: Sequence[str], since_seconds: float = 0) -> dict[str, Sample]:
        """One Sample per version (increases since the first poll); MetricsError if the endpoint fails."""
        url = self.url.replace("{model}", check_name(model))
        with HttpSession(self.limits, self._token, self._monotonic) as http:
            status, body = http.get(url)
        if status != 200:
            raise MetricsError(f"metrics endpoint {where(url)} answered HTTP {status}")
        doc = parse_json(body, url)
        if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict):
            raise MetricsError(
                f"metrics endpoint {where(url)} does not answer in the http-json format",
                hint='expected {"model": ..., "versions": {"<version>": {"requests": ..., ...}}}',
            )
        if "model" in doc and doc["model"] != model:
            shown = repr(doc["model"])[:40]
            raise MetricsError(f"metrics endpoint {where(url)} answers for model {shown}, not {model!r}")
        now = self._clock()
        top_stamp = doc.get("timestamp")
        entries: Mapping[str, Any] = doc["versions"]
        out = {version: self._sample(version, entries.get(version), top_stamp, now) for version in versions}
        present = [v for v in versions if isinstance(entries.get(v), dict)]
        self._tracker.finish_poll(present)
        return out

    def _sample(self, version: str, entry: Any, top_stamp: Any, now: float) -> Sample:
        if entry is None:
            return Sample(problems={"*": f"version {version} is not in the response"})
        if not isinstance(entry, dict):
            return Sample(problems={"*": f"version {version} is not an object in the response"})
        problems: dict[str, str] = {}
        stamp = entry.get("timestamp", top_stamp)
        if stamp is not None:
            bad = number_problem(stamp)
            if bad:
                problems["*"] = f"timestamp {bad}"
                stamp = None
            elif now - stamp > self.stale_seconds:
                problems["*"] = f"stale sample ({now - stamp:.0f}s old, limit {self.stale_seconds:g}s)"
        values: dict[str, float] = {}
        for key, raw in entry.items():
            if key == "timestamp" or not isinstance(key, str):
                continue
            bad = number_problem(raw)
            if bad:
                problems[key] = bad
            elif key in self.counters:
                values[key] = self._tracker.update(version, key, float(raw))
            else:
                values[key] = float(raw)
        known = {k: v for k, v in values.items() if k in SAMPLE_FIELDS}
        extra = {k: v for k, v in values.items() if k not in SAMPLE_FIELDS}
        return Sample(**known, extra=extra, problems=problems, timestamp=stamp)
