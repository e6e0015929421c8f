"""http-json provider: `GET <url>` answering cumulative counters per version (and segment, replica).

The answer (the URL may contain `{model}`)::

    {"model": "support-agent",
     "timestamp": 1767225600,                        # optional, unix seconds of the data
     "versions": {
       "2.3.1": {"requests": 10234,                  # counters: cumulative since the exporter started
                 "errors": 98,                       # numerators of rate metrics (analysis.metrics)
                 "latency_bucket": {"250": 900, "500": 9000, "1000": 10100, "+Inf": 10234},
                 "cost_total": 11.2,                 # summed cost of those requests
                 "latency_p95_ms": 870.0,            # anything else: a gauge (may alert, never roll back)
                 "segments": {"eu": {"requests": 4100, "errors": 51, "latency_bucket": {...}}},
                 "timestamp": 1767225599},           # optional, per version
       "2.4.0": {"replicas": {"r1": {"requests": 300, "errors": 3, "segments": {...}},
                              "r2": {"requests": 220, "errors": 3}},
                 "latency_p95_ms": 910.0}}}

- `latency_bucket` is a cumulative histogram: upper bound in ms (a string, `"+Inf"` last) -> the
  number of requests at or below it, as Prometheus `_bucket` series count.
- `segments` split a version's counters by a label (region, tenant tier); each segment is judged
  with its share of alpha. The version's own counters are the whole; segments need not cover it.
- `replicas` (or per-instance series): the version's counters are the sums over its replicas
  (counters at the version level are then ignored; gauges are read at the version level). A
  replica whose counters drop (it restarted), that appears after the first answer, or that goes
  missing, makes that poll an error poll for the version (problem `"*"`): its restart must never
  count as a huge increase or import its history.

Several models in one answer (`read_many`, what `watch --all` uses when the URL has no `{model}`:
one GET per cycle): `{"timestamp": ..., "models": {"<model>": {"versions": {...}}, ...}}`, each
entry shaped as above; replica restarts are tracked per model.

The provider reports the counters as they are (cumulative); the judgement differences consecutive
polls. A bad value (NaN, Inf, negative, a string) is a per-quantity problem (`"eu/errors"` inside
a segment); a version missing from the answer is absent from the readings; a response that is not
this shape at all is a MetricsError.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..errors import MetricsError
from ..names import check_name
from ..observation import Counters, Reading
from .base import BatchAnswer, HttpLimits, HttpSession, ReadRequest, number_problem, parse_json, where

DEFAULT_URL = "http://127.0.0.1:9108/metrics/{model}"
DEFAULT_COUNTERS = ("errors",)
# keys with a meaning of their own in a version, replica or segment entry
STRUCTURE_KEYS = ("requests", "latency_bucket", "cost_total", "segments", "replicas", "timestamp")
MAX_SEGMENTS = 100
MAX_REPLICAS = 1000


class HttpJsonProvider:
    """Reads the http-json format above from one URL per model."""

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
    ) -> None:
        self.url = url
        # event counters (numerators of rate metrics); "requests" and the structure keys are known
        self.counters = frozenset(counters) - {"requests", "cost_total"} | frozenset(DEFAULT_COUNTERS)
        self.limits = limits
        self._token = token
        self.stale_seconds = stale_seconds
        self._clock = clock
        self._monotonic = monotonic
        # model -> version -> replica -> flat counter values at the last answer (restart detection)
        self._replicas: dict[str, dict[str, dict[str, dict[str, float]]]] = {}

    def __repr__(self) -> str:
        return f"HttpJsonProvider(url={where(self.url)!r}, counters={sorted(self.counters)})"

    def export_state(self, model: str | None = None) -> dict[str, Any]:
        """The replica counters last seen of a model (a restarted watch detects restarts across the gap).

        Without `model`: the only model read so far (what a single watch has).
        """
        if model is None:
            model = next(iter(self._replicas), "")
        return {"url": where(self.url), "replicas": self._replicas.get(model, {})}

    def restore_state(self, data: Any, model: str | None = None) -> bool:
        """Continue from export_state() of the same URL; False (and a fresh start) when it does not fit."""
        key = model or ""
        self._replicas.pop(key, None)
        if not isinstance(data, dict) or data.get("url") != where(self.url):
            return False
        try:
            replicas = {str(v): {str(r): {str(k): float(x) for k, x in flat.items()} for r, flat in reps.items()}
                        for v, reps in data["replicas"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        self._replicas[key] = replicas
        return True

    def _fetch(self, url: str, time_left: float | None, max_bytes: int | None = None) -> Any:
        """GET url and decode its JSON document, or raise MetricsError."""
        limits = self.limits if max_bytes is None else replace(self.limits, max_bytes=max_bytes)
        with HttpSession(limits, self._token, self._monotonic, time_left) as http:
            status, body = http.get(url)
        if status != 200:
            raise MetricsError(f"metrics endpoint {where(url)} answered HTTP {status}")
        return parse_json(body, url)

    def read(self, model: str, versions: Sequence[str], since_seconds: float = 0, *,
             time_left: float | None = None) -> dict[str, Reading]:
        """One Reading per version in the answer; MetricsError if the endpoint fails."""
        url = self.url.replace("{model}", check_name(model))
        return self._model_readings(self._fetch(url, time_left), url, model, versions)

    def read_many(self, requests: Sequence[ReadRequest], *, time_left: float | None = None) -> BatchAnswer:
        """Several models: one GET of the multi-model document when the URL has no `{model}`, else one each."""
        out: BatchAnswer = {}
        if "{model}" in self.url:
            for r in requests:
                try:
                    out[r.model] = self.read(r.model, r.versions, r.since_seconds, time_left=time_left)
                except Exception as exc:  # noqa: BLE001 - one model's failure is that model's error poll
                    out[r.model] = exc
            return out
        try:
            # the byte cap bounds one model's answer; this document carries many
            doc = self._fetch(self.url, time_left, self.limits.max_bytes * max(1, len(requests)))
        except MetricsError as exc:
            return {r.model: exc for r in requests}
        models = doc.get("models") if isinstance(doc, dict) else None
        for r in requests:
            try:
                if isinstance(models, dict):
                    entry = models.get(r.model)
                    if entry is None:
                        out[r.model] = {}  # the model is not in the answer: no reading for any version
                        continue
                    if isinstance(entry, dict) and "timestamp" not in entry and "timestamp" in doc:
                        entry = {**entry, "timestamp": doc["timestamp"]}
                    out[r.model] = self._model_readings(entry, self.url, r.model, r.versions)
                else:
                    out[r.model] = self._model_readings(doc, self.url, r.model, r.versions)
            except MetricsError as exc:
                out[r.model] = exc
        return out

    def _model_readings(self, doc: Any, url: str, model: str, versions: Sequence[str]) -> dict[str, Reading]:
        """The Readings of one model's document (`{"model": ..., "versions": {...}}`)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict):
            raise MetricsError(
                f"metrics endpoint {where(url)} does not answer in the http-json format",
                hint='expected {"model": ..., "versions": {"<version>": {"requests": ..., ...}}} '
                     'or {"models": {"<model>": {"versions": ...}}}',
            )
        if "model" in doc and doc["model"] != model:
            shown = repr(doc["model"])[:40]
            raise MetricsError(f"metrics endpoint {where(url)} answers for model {shown}, not {model!r}")
        now = self._clock()
        entries: Mapping[str, Any] = doc["versions"]
        if model not in self._replicas and "" in self._replicas:
            self._replicas[model] = self._replicas.pop("")  # restored without naming the model: a single watch
        replicas = self._replicas.setdefault(model, {})
        out = {}
        for version in versions:
            if version in entries:
                out[version] = self._reading(version, entries[version], doc.get("timestamp"), now, replicas)
        return out

    # -- one version ---------------------------------------------------------------------------
    def _reading(self, version: str, entry: Any, top_stamp: Any, now: float,
                 seen: dict[str, dict[str, dict[str, float]]]) -> Reading:
        if not isinstance(entry, dict):
            return Reading(segments={}, problems={"*": f"version {version} is not an object in the response"})
        problems: dict[str, str] = {}
        stamp = entry.get("timestamp", top_stamp)
        if stamp is not None:
            bad = number_problem(stamp)
            if bad:
                problems["*"] = f"timestamp {bad}"
                stamp = None
            elif now - stamp > self.stale_seconds:
                problems["*"] = f"stale data ({now - stamp:.0f}s old, limit {self.stale_seconds:g}s)"
        replicas = entry.get("replicas")
        if replicas is None:
            segments = self._entry(entry, problems, prefix="")
        elif not isinstance(replicas, dict) or not replicas or len(replicas) > MAX_REPLICAS:
            problems.setdefault("*", f"replicas of version {version} must be a non-empty object "
                                     f"(at most {MAX_REPLICAS})")
            segments = {}
        else:
            segments = self._replica_sum(version, replicas, problems, seen)
        # gauges live at the version level, also when counters come from replicas
        if replicas is not None and "" in segments:
            gauges: dict[str, float] = {}
            self._gauges(entry, gauges, problems, "")
            segments[""] = Counters(requests=segments[""].requests, events=segments[""].events,
                                    latency_buckets=segments[""].latency_buckets,
                                    cost_total=segments[""].cost_total, gauges=gauges)
        return Reading(segments=segments, problems=problems, timestamp=None if stamp is None else float(stamp))

    def _entry(self, entry: Mapping[str, Any], problems: dict[str, str], prefix: str) -> dict[str, Counters]:
        """The whole ("") and the named segments of one version or replica entry."""
        out = {"": self._counters(entry, problems, prefix)}
        segments = entry.get("segments")
        if segments is None:
            return out
        if not isinstance(segments, dict) or len(segments) > MAX_SEGMENTS:
            problems[f"{prefix}segments"] = f"segments must be an object of at most {MAX_SEGMENTS} entries"
            return out
        for name, seg in segments.items():
            if not isinstance(name, str) or not name or "/" in name or len(name) > 100:
                problems[f"{prefix}segments"] = f"invalid segment name {str(name)[:40]!r}"
                continue
            if not isinstance(seg, dict):
                problems[f"{prefix}{name}/*"] = "not an object"
                continue
            out[name] = self._counters(seg, problems, f"{prefix}{name}/")
        return out

    def _counters(self, entry: Mapping[str, Any], problems: dict[str, str], prefix: str) -> Counters:
        requests = self._number(entry, "requests", problems, prefix)
        cost = self._number(entry, "cost_total", problems, prefix) if "cost_total" in entry else None
        events = {}
        for key in entry:
            if isinstance(key, str) and key in self.counters:
                value = self._number(entry, key, problems, prefix)
                if value is not None:
                    events[key] = value
        buckets: tuple[tuple[float, float], ...] = ()
        if "latency_bucket" in entry:
            buckets, why = parse_buckets(entry["latency_bucket"])
            if why:
                problems[f"{prefix}latency_buckets"] = why
        gauges: dict[str, float] = {}
        if prefix == "":
            self._gauges(entry, gauges, problems, prefix)
        return Counters(requests=requests, events=events, latency_buckets=buckets, cost_total=cost, gauges=gauges)

    def _gauges(self, entry: Mapping[str, Any], gauges: dict[str, float], problems: dict[str, str],
                prefix: str) -> None:
        for key, raw in entry.items():
            if not isinstance(key, str) or key in STRUCTURE_KEYS or key in self.counters:
                continue
            bad = number_problem(raw)
            if bad:
                problems[f"{prefix}{key}"] = bad
            else:
                gauges[key] = float(raw)

    @staticmethod
    def _number(entry: Mapping[str, Any], key: str, problems: dict[str, str], prefix: str) -> float | None:
        bad = number_problem(entry.get(key))
        if bad:
            problems[f"{prefix}{key}"] = bad
            return None
        return float(entry[key])

    # -- replicas --------------------------------------------------------------------------------
    def _replica_sum(self, version: str, replicas: Mapping[str, Any], problems: dict[str, str],
                     seen: dict[str, dict[str, dict[str, float]]]) -> dict[str, Counters]:
        parts: dict[str, dict[str, Counters]] = {}
        flats: dict[str, dict[str, float]] = {}
        for name, entry in replicas.items():
            if not isinstance(entry, dict):
                problems.setdefault("*", f"replica {str(name)[:40]} is not an object")
                continue
            own: dict[str, str] = {}
            parts[name] = self._entry(entry, own, prefix="")
            for key, why in own.items():
                problems.setdefault(key, f"replica {name}: {why}")
            flats[name] = _flat(parts[name])
        previous = seen.get(version)
        if previous is not None:
            change = _replica_change(previous, flats)
            if change:
                problems["*"] = change
        seen[version] = flats
        return _sum_segments(parts.values(), problems)


def parse_buckets(raw: Any) -> tuple[tuple[tuple[float, float], ...], str | None]:
    """Cumulative histogram buckets from {"250": n, ..., "+Inf": n}: (pairs by bound, problem or None)."""
    if not isinstance(raw, dict) or not raw:
        return (), "latency_bucket must be an object of upper bound -> cumulative count"
    pairs = []
    for key, count in raw.items():
        bound = _bound(key)
        if bound is None:
            return (), f"latency_bucket bound {str(key)[:20]!r} is not a number"
        bad = number_problem(count)
        if bad:
            return (), f"latency_bucket[{key}] is {bad}"
        pairs.append((bound, float(count)))
    pairs.sort()
    if pairs[-1][0] != math.inf:
        return (), 'latency_bucket needs a "+Inf" bucket (the count of every request)'
    for (b1, c1), (b2, c2) in zip(pairs, pairs[1:]):
        if b1 == b2:
            return (), f"latency_bucket bound {b1:g} appears twice"
        if c2 < c1:
            return (), f"latency_bucket counts must not decrease with the bound ({b1:g}: {c1:g} > {b2:g}: {c2:g})"
    return tuple(pairs), None


def _bound(key: Any) -> float | None:
    if isinstance(key, str) and key.strip() in ("+Inf", "Inf", "inf", "+inf"):
        return math.inf
    try:
        value = float(key)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _flat(segments: Mapping[str, Counters]) -> dict[str, float]:
    """Every counter of one replica as `segment/quantity` -> value (for restart detection)."""
    out = {}
    for seg, c in segments.items():
        if c.requests is not None:
            out[f"{seg}/requests"] = c.requests
        if c.cost_total is not None:
            out[f"{seg}/cost_total"] = c.cost_total
        for key, value in c.events.items():
            out[f"{seg}/{key}"] = value
        for bound, count in c.latency_buckets:
            out[f"{seg}/le={bound:g}"] = count
    return out


def _replica_change(previous: Mapping[str, Mapping[str, float]], now: Mapping[str, Mapping[str, float]]) -> str | None:
    for name, flat in now.items():
        before = previous.get(name)
        if before is None:
            return f"replica {name} appeared (its counters start now; this poll is not counted)"
        for key, value in flat.items():
            old = before.get(key)
            if old is not None and value < old:
                what = key[1:] if key.startswith("/") else key
                return f"replica {name} restarted ({what} {old:g} -> {value:g})"
    gone = sorted(set(previous) - set(now))
    if gone:
        return f"replica {gone[0]} is missing from the answer"
    return None


def _sum_segments(parts: Iterable[Mapping[str, Counters]], problems: dict[str, str]) -> dict[str, Counters]:
    """Sum counters segment by segment; a quantity some replicas lack is a problem, not a smaller sum."""
    parts = list(parts)
    names = sorted({seg for p in parts for seg in p})
    out = {}
    for seg in names:
        have = [p[seg] for p in parts if seg in p]
        prefix = "" if seg == "" else f"{seg}/"
        if len(have) != len(parts) and seg == "":
            problems.setdefault("*", "a replica has no counters")
        out[seg] = Counters(
            requests=_sum([c.requests for c in have], f"{prefix}requests", problems),
            events={k: v for k in sorted({k for c in have for k in c.events})
                    if (v := _sum([c.events.get(k) for c in have], f"{prefix}{k}", problems)) is not None},
            latency_buckets=_sum_buckets([c.latency_buckets for c in have], f"{prefix}latency_buckets", problems),
            cost_total=_sum([c.cost_total for c in have], f"{prefix}cost_total", problems)
            if any(c.cost_total is not None for c in have) else None,
        )
    return out


def _sum(values: list[float | None], key: str, problems: dict[str, str]) -> float | None:
    present = [v for v in values if v is not None]
    if len(present) != len(values):
        if present:
            problems.setdefault(key, "missing in some replicas")
        return None
    return float(sum(present))


def _sum_buckets(hists: list[tuple[tuple[float, float], ...]], key: str,
                 problems: dict[str, str]) -> tuple[tuple[float, float], ...]:
    present = [h for h in hists if h]
    if not present:
        return ()
    bounds = [tuple(b for b, _ in h) for h in present]
    if len(present) != len(hists) or len(set(bounds)) != 1:
        problems.setdefault(key, "replicas disagree on the histogram buckets")
        return ()
    return tuple((b, float(sum(h[i][1] for h in present))) for i, b in enumerate(bounds[0]))
