"""Prometheus provider: one instant query (`GET /api/v1/query`) per quantity and version; under
`watch --all`, one query per quantity for every followed model (`read_many`, `batch_template`).

Each PromQL template (modelctl.yaml `metrics.queries`, quantity -> template) may use `{model}`,
`{version}`, `{since}` (whole seconds since the canary started, at least 1) and `{segment}` (the
segment label's name, `segment`). What a quantity's name means:

| quantity | reads | Counters field |
| --- | --- | --- |
| `requests` | cumulative requests | `requests` |
| a rate metric's numerator (`errors`, ...) | cumulative events | `events[name]` |
| `latency_bucket` | cumulative histogram: one series per `le` label | `latency_buckets` |
| `cost_total` | cumulative cost | `cost_total` |
| anything else (`latency_p95_ms`, ...) | an instantaneous value | `gauges[name]` |

Counters are read as Prometheus keeps them (`sum(x_total{...})`, resets and all) or as the
increase over the canary (`sum(increase(x_total{...}[{since}s]))`); either way the judgement
differences consecutive polls and treats a drop as an error poll, never as an increase. An event
series that does not exist yet (no error so far) while requests flow counts as zero events.
Aggregate with `sum by ({segment}) (...)` (histograms: `sum by (le, {segment}) (...)`) to judge
segments: series with a `segment` label are the named segments and the whole version is their
sum; a single series without the label is the whole version.

A query must give one series per segment (and `le`) with a finite, non-negative value: an error
from Prometheus, a scalar or matrix, no series, duplicate series, NaN/Inf or a stale sample make
that quantity unusable (a per-quantity problem, judged `error`), not an exception. `warnings` in
a response (a partial answer: a failed store, a dropped series) make the whole poll an error.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..errors import MetricsError
from ..names import check_name, check_version
from ..observation import Counters, Reading
from .base import BatchAnswer, HttpLimits, HttpSession, ReadRequest, _one_line, parse_json, read_each, where
from .http_json import parse_buckets

DEFAULT_URL = "http://127.0.0.1:9090"
SEGMENT_LABEL = "segment"
_SEL = '{model="{model}",version="{version}"}'
DEFAULT_QUERIES: dict[str, str] = {
    "requests": "sum by ({segment}) (llm_requests_total" + _SEL + ")",
    "errors": "sum by ({segment}) (llm_errors_total" + _SEL + ")",
    "latency_bucket": "sum by (le, {segment}) (llm_latency_ms_bucket" + _SEL + ")",
    "cost_total": "sum by ({segment}) (llm_cost_total" + _SEL + ")",
}
MAX_SERIES = 2000


def render_query(template: str, model: str, version: str, since_seconds: float) -> str:
    """Fill `{model}`, `{version}`, `{since}` and `{segment}` (PromQL braces are left alone)."""
    return (
        template.replace("{model}", check_name(model))
        .replace("{version}", check_version(version))
        .replace("{since}", str(since_window(since_seconds)))
        .replace("{segment}", SEGMENT_LABEL)
    )


_MATCHER_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"\{(model|version)\}"')
_AGG_BY_RE = re.compile(r"\b(sum|avg|min|max|count)\s+by\s*\(")
_AGG_BARE_RE = re.compile(r"\b(sum|avg|min|max|count)\s*\(")


def batch_template(template: str) -> tuple[str, str, str] | None:
    """The batched form of a per-version template: (template, model label, version label), or None.

    `name="{model}"` and `name="{version}"` become regex matchers (`=~"{models}"`, `=~"{versions}"`)
    and every aggregation (`sum`, `avg`, `min`, `max`, `count`, with or without `by`) keeps the two
    labels, so one answer holds every model and version, cut apart by those labels. None when the
    template has no such matchers or no aggregation to extend (it is then read per model).
    """
    labels = {kind: label for label, kind in _MATCHER_RE.findall(template)}
    if set(labels) != {"model", "version"} or labels["model"] == labels["version"]:
        return None
    if " without" in template or re.search(r"\)\s*by\s*\(", template) or not (_AGG_BY_RE.search(template) or _AGG_BARE_RE.search(template)):
        return None
    keep = f"{labels['model']}, {labels['version']}"
    out = _MATCHER_RE.sub(lambda m: f'{m.group(1)}=~"{{{m.group(2)}s}}"', template)
    out = _AGG_BY_RE.sub(lambda m: f"{m.group(1)} by ({keep}, ", out)
    out = _AGG_BARE_RE.sub(lambda m: f"{m.group(1)} by ({keep}) (", out)
    out = out.replace(f"({keep}, )", f"({keep})")  # `sum by () (...)` had no label of its own
    return out, labels["model"], labels["version"]


def _regex_alternatives(values: Iterable[str]) -> str:
    """`a|b|c` for a PromQL regex matcher: each value escaped for RE2, then for the PromQL string."""
    return "|".join(re.escape(v).replace("\\", "\\\\") for v in sorted(set(values)))


def render_batch(template: str, requests: Sequence[ReadRequest]) -> str:
    """Fill a batched template for several models (they share one `{since}`, see `_by_window`)."""
    since = requests[0].since_seconds if requests else 1
    return (
        template.replace("{models}", _regex_alternatives(check_name(r.model) for r in requests))
        .replace("{versions}", _regex_alternatives(check_version(v) for r in requests for v in r.versions))
        .replace("{since}", str(since_window(since)))
        .replace("{segment}", SEGMENT_LABEL)
    )


def _by_window(template: str, requests: Sequence[ReadRequest]) -> list[list[ReadRequest]]:
    """One group for a template without `{since}`; else one group per distinct window (exact figures)."""
    if "{since}" not in template:
        return [list(requests)] if requests else []
    groups: dict[int, list[ReadRequest]] = {}
    for r in requests:
        groups.setdefault(since_window(r.since_seconds), []).append(r)
    return [groups[w] for w in sorted(groups)]


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
        counters: Iterable[str] = ("errors",),
        limits: HttpLimits = HttpLimits(),
        token: str | None = None,
        stale_seconds: float = 120,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.queries = dict(queries or DEFAULT_QUERIES)
        self.counters = frozenset(counters) - {"requests", "cost_total", "latency_bucket"}
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

    def read(self, model: str, versions: Sequence[str], since_seconds: float, *,
             time_left: float | None = None) -> dict[str, Reading]:
        """One Reading per version; MetricsError when Prometheus cannot be asked at all."""
        endpoint = self.endpoint.replace("{model}", check_name(model))
        out: dict[str, Reading] = {}
        with HttpSession(self.limits, self._token, self._monotonic, time_left) as http:
            for version in versions:
                values: dict[str, dict[str, Any]] = {}  # quantity -> segment -> value (or buckets)
                problems: dict[str, str] = {}
                stamps: list[float] = []
                for quantity, template in self.queries.items():
                    query = render_query(template, model, version, since_seconds)
                    status, body = http.get(endpoint, {"query": query})
                    series, problem = self._read(status, body, endpoint)
                    self._take(quantity, series, problem, values, problems, stamps)
                reading = self._reading(values, problems, stamps)
                if reading is not None:
                    out[version] = reading
        return out

    def read_many(self, requests: Sequence[ReadRequest], *,
                  time_left: float | None = None) -> BatchAnswer:
        """Several models at once: one query per quantity (and distinct `{since}`), `sum by (model, version)`.

        Each answer is cut by its model and version labels and read exactly as `read` reads a
        per-version answer, so the figures are the same. A template the batch form cannot be
        derived from (see `batch_template`), and an endpoint URL with `{model}`, are read per model.
        """
        if "{model}" in self.endpoint:
            return read_each(self, requests, time_left=time_left)
        out: BatchAnswer = {}
        endpoint = self.endpoint
        wanted = {(r.model, v) for r in requests for v in r.versions}
        values: dict[tuple[str, str], dict[str, dict[str, Any]]] = {key: {} for key in wanted}
        problems: dict[tuple[str, str], dict[str, str]] = {key: {} for key in wanted}
        stamps: dict[tuple[str, str], list[float]] = {key: [] for key in wanted}
        # the byte cap bounds one model's answer; a batch carries many
        limits = replace(self.limits, max_bytes=self.limits.max_bytes * max(1, len(requests)))
        try:
            with HttpSession(limits, self._token, self._monotonic, time_left) as http:
                for quantity, template in self.queries.items():
                    batched = batch_template(template)
                    if batched is None:
                        for r in requests:
                            for version in r.versions:
                                query = render_query(template, r.model, version, r.since_seconds)
                                status, body = http.get(endpoint, {"query": query})
                                series, problem = self._read(status, body, endpoint)
                                key = (r.model, version)
                                self._take(quantity, series, problem, values[key], problems[key], stamps[key])
                        continue
                    template_text, model_label, version_label = batched
                    for group in _by_window(template_text, requests):
                        query = render_batch(template_text, group)
                        status, body = http.get(endpoint, {"query": query})
                        series, problem = self._read(status, body, endpoint)
                        cut: dict[tuple[str, str], list[Any]] = {}
                        for item in series:
                            labels = item.get("metric") if isinstance(item, dict) else None
                            labels = labels if isinstance(labels, dict) else {}
                            found = (str(labels.get(model_label)), str(labels.get(version_label)))
                            if found in wanted:
                                cut.setdefault(found, []).append(item)
                        for r in group:
                            for version in r.versions:
                                key = (r.model, version)
                                self._take(quantity, cut.get(key, []), problem, values[key], problems[key],
                                           stamps[key])
        except MetricsError as exc:  # the server as a whole failed: every model's poll is an error poll
            return {r.model: exc for r in requests}
        for r in requests:
            readings: dict[str, Reading] = {}
            for version in r.versions:
                key = (r.model, version)
                reading = self._reading(values[key], problems[key], stamps[key])
                if reading is not None:
                    readings[version] = reading
            out[r.model] = readings
        return out

    def _take(self, quantity: str, series: list[Any], problem: str | None, values: dict[str, dict[str, Any]],
              problems: dict[str, str], stamps: list[float]) -> None:
        """File one quantity's answer for one version: its values by segment, or its problem."""
        if problem is None:
            by_segment, problem = self._by_segment(quantity, series, stamps)
        if problem is not None:
            problems[self._field(quantity)] = problem
        else:
            values[quantity] = by_segment

    def _reading(self, values: dict[str, dict[str, Any]], problems: dict[str, str],
                 stamps: list[float]) -> Reading | None:
        """One version's Reading from its quantities (None: no data at all, it is not in the answer)."""
        if not values and problems and all("no series" in p for p in problems.values()):
            return None
        if "requests" in values:
            # an event series appears with its first event: none yet while requests flow is zero
            for quantity in [q for q in self.counters if problems.get(q, "").startswith("no series")]:
                del problems[quantity]
                values[quantity] = {seg: 0.0 for seg in values["requests"]}
        return Reading(segments=self._segments(values), problems=problems, timestamp=min(stamps) if stamps else None)

    def _field(self, quantity: str) -> str:
        """The Counters name of a quantity (the key of its problems)."""
        return "latency_buckets" if quantity == "latency_bucket" else quantity

    def _segments(self, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Counters]:
        names = sorted({seg for by_seg in values.values() for seg in by_seg})
        out = {}
        for seg in names or [""]:
            kw: dict[str, Any] = {"events": {}, "gauges": {}}
            for quantity, by_seg in values.items():
                if seg not in by_seg:
                    continue
                value = by_seg[seg]
                if quantity == "requests":
                    kw["requests"] = value
                elif quantity == "cost_total":
                    kw["cost_total"] = value
                elif quantity == "latency_bucket":
                    kw["latency_buckets"] = value
                elif quantity in self.counters:
                    kw["events"][quantity] = value
                else:
                    kw["gauges"][quantity] = value
            out[seg] = Counters(**kw)
        return out

    def _by_segment(self, quantity: str, series: list[Any], stamps: list[float]) -> tuple[dict[str, Any], str | None]:
        """segment ("" = the whole) -> value (buckets for latency_bucket), or a problem."""
        if not series:
            return {}, "no series (no data for this version yet)"
        if len(series) > MAX_SERIES:
            return {}, f"{len(series)} series; aggregate the query (sum by ({SEGMENT_LABEL}) (...))"
        groups: dict[str, dict[str, float]] = {}
        for item in series:
            labels = item.get("metric") if isinstance(item, dict) else None
            labels = labels if isinstance(labels, dict) else {}
            sample = self._sample_value(item)
            if isinstance(sample, str):
                return {}, sample
            value, stamp = sample
            stamps.append(stamp)
            seg = labels.get(SEGMENT_LABEL, "")
            if not isinstance(seg, str) or "/" in seg:
                return {}, f"invalid {SEGMENT_LABEL} label {str(seg)[:40]!r}"
            key = labels.get("le", "") if quantity == "latency_bucket" else ""
            if quantity == "latency_bucket" and key == "":
                return {}, "a histogram series without an le label (use sum by (le) (..._bucket))"
            if key in groups.setdefault(seg, {}):
                return {}, (f"{len(series)} series where one per {SEGMENT_LABEL} is expected "
                            f"(aggregate the query, e.g. sum by ({SEGMENT_LABEL}) (...))")
            groups[seg][key] = value
        out: dict[str, Any] = {}
        if quantity == "latency_bucket":
            for seg, buckets in groups.items():
                parsed, why = parse_buckets(buckets)
                if why:
                    return {}, why
                out[seg] = parsed
        else:
            out = {seg: g[""] for seg, g in groups.items()}
        named = [s for s in out if s]
        if named and "" not in out:
            out[""] = _total(quantity, [out[s] for s in named])
        elif named:
            # unlabelled traffic plus labelled segments: the whole is all of it
            out[""] = _total(quantity, [out[s] for s in out])
        if out.get("") is None:
            return {}, "histogram segments disagree on their buckets"
        return out, None

    def _read(self, status: int, body: bytes, endpoint: str) -> tuple[list[Any], str | None]:
        """(series, problem) of one query response."""
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
            return [], _one_line(f"Prometheus {kind}: {doc.get('error', doc.get('status'))}")
        if status >= 300:
            raise MetricsError(f"Prometheus at {where(endpoint)} answered HTTP {status}")
        warnings = doc.get("warnings")
        if warnings:
            # a partial answer (a store or a shard failed): counts from it would look like a drop
            first = warnings[0] if isinstance(warnings, list) and warnings else warnings
            raise MetricsError(f"Prometheus at {where(endpoint)} answered with warnings (a partial result): "
                               f"{_one_line(str(first), 120)}")
        data = doc.get("data")
        if not isinstance(data, dict):
            return [], "response has no data"
        kind = data.get("resultType")
        if kind != "vector":
            return [], f"expected an instant vector, got {_one_line(kind, 20)}"
        result = data.get("result")
        if not isinstance(result, list):
            return [], "response has no result list"
        return result, None

    def _sample_value(self, series: Any) -> tuple[float, float] | str:
        """(value, timestamp) of one series' sample, or why it is unusable."""
        pair = series.get("value") if isinstance(series, dict) else None
        if not isinstance(pair, list) or len(pair) != 2:
            return "series has no [timestamp, value] pair"
        stamp, raw = pair
        try:
            value = float(raw) if isinstance(raw, str) else None
            stamp = float(stamp) if not isinstance(stamp, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or stamp is None:
            return f"unreadable sample {_one_line(repr(pair), 60)}"
        if not math.isfinite(value):
            return f"value is {raw}"
        if value < 0:
            return f"value is negative ({raw})"
        if not math.isfinite(stamp):
            return "sample timestamp is not a time"
        age = self._clock() - stamp
        if age > self.stale_seconds:
            return f"stale sample ({age:.0f}s old, limit {self.stale_seconds:g}s)"
        return value, stamp


def _total(quantity: str, values: list[Any]) -> Any:
    """The whole version from its segments (bucket by bucket for histograms; None when they disagree)."""
    if quantity != "latency_bucket":
        return float(sum(values))
    bounds = {tuple(b for b, _ in h) for h in values}
    if len(bounds) != 1:
        return None
    first = values[0]
    return tuple((b, float(sum(h[i][1] for h in values))) for i, (b, _) in enumerate(first))
