"""Polls of a canary's metrics as plain data, and their JSONL record format (pure: no I/O).

A provider answers one poll with a `Reading` per version: cumulative `Counters` per segment ("" is
the whole version), the problems it saw, and the time of the data. `Poll` bundles the readings with
the poll's time, the live control, the canary and the configured split. The judgement
(`analysis.Judge`) differences consecutive polls itself; nothing here interprets the numbers.

Record format (`watch --record FILE` appends, `replay FILE` reads): one JSON object per line,
`Poll.to_json()`, with `"schema": "modelctl/poll-v1"`. Numbers that JSON cannot carry are strings:
`"+Inf"` (the last histogram bound), `"-Inf"`, `"NaN"` (a provider's garbage, kept so a replay sees
what watch saw).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

SCHEMA = "modelctl/poll-v1"

_SPECIAL = {"+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one version in one segment, as read at one poll."""

    requests: float | None = None
    events: Mapping[str, float] = field(default_factory=dict)  # numerators of rate metrics: {"errors": 98}
    # cumulative histogram: (upper bound ms, count <= bound), increasing bounds, last bound math.inf
    latency_buckets: tuple[tuple[float, float], ...] = ()
    cost_total: float | None = None  # summed cost of those requests
    gauges: Mapping[str, float] = field(default_factory=dict)  # instantaneous values: may alert, never roll back

    def to_json(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        doc: dict[str, Any] = {}
        if self.requests is not None:
            doc["requests"] = _num_out(self.requests)
        if self.events:
            doc["events"] = {k: _num_out(v) for k, v in self.events.items()}
        if self.latency_buckets:
            doc["latency_buckets"] = [[_num_out(b), _num_out(c)] for b, c in self.latency_buckets]
        if self.cost_total is not None:
            doc["cost_total"] = _num_out(self.cost_total)
        if self.gauges:
            doc["gauges"] = {k: _num_out(v) for k, v in self.gauges.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "counters") -> Counters:
        """Parse `to_json()` output; ValidationError with a one-line reason."""
        _mapping(doc, where)
        _only(doc, ("requests", "events", "latency_buckets", "cost_total", "gauges"), where)
        buckets = doc.get("latency_buckets", [])
        if not isinstance(buckets, list):
            raise ValidationError(f"{where}.latency_buckets must be a list of [bound, count] pairs")
        pairs = []
        for i, pair in enumerate(buckets):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValidationError(f"{where}.latency_buckets[{i}] must be a [bound, count] pair")
            pairs.append((_num_in(pair[0], f"{where}.latency_buckets[{i}][0]"),
                          _num_in(pair[1], f"{where}.latency_buckets[{i}][1]")))
        return cls(
            requests=_opt_num(doc.get("requests"), f"{where}.requests"),
            events=_num_map(doc.get("events", {}), f"{where}.events"),
            latency_buckets=tuple(pairs),
            cost_total=_opt_num(doc.get("cost_total"), f"{where}.cost_total"),
            gauges=_num_map(doc.get("gauges", {}), f"{where}.gauges"),
        )


@dataclass(frozen=True)
class Reading:
    """What the provider returned for one version at one poll."""

    segments: Mapping[str, Counters]  # "" = the whole version; other keys = named segments
    problems: Mapping[str, str] = field(default_factory=dict)  # quantity or "*" -> why unusable now
    timestamp: float | None = None  # unix seconds of the data, when known

    def problem(self, quantity: str) -> str | None:
        """Why `quantity` cannot be used at this poll ("*" covers every quantity), if it cannot."""
        return self.problems.get("*") or self.problems.get(quantity)

    def to_json(self) -> dict[str, Any]:
        """The reading as a JSON-ready dict."""
        return {
            "segments": {name: c.to_json() for name, c in self.segments.items()},
            "problems": dict(self.problems),
            "timestamp": None if self.timestamp is None else _num_out(self.timestamp),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str = "reading") -> Reading:
        """Parse `to_json()` output; ValidationError with a one-line reason."""
        _mapping(doc, where)
        _only(doc, ("segments", "problems", "timestamp"), where)
        segments = doc.get("segments", {})
        _mapping(segments, f"{where}.segments")
        problems = doc.get("problems")
        problems = {} if problems is None else problems
        _mapping(problems, f"{where}.problems")
        for key, why in problems.items():
            if not isinstance(why, str):
                raise ValidationError(f"{where}.problems.{key} must be a string (why the quantity is unusable)")
        return cls(
            segments={str(k): Counters.from_json(v, f"{where}.segments.{k or '(whole)'}") for k, v in segments.items()},
            problems={str(k): v for k, v in problems.items()},
            timestamp=_opt_num(doc.get("timestamp"), f"{where}.timestamp"),
        )


@dataclass(frozen=True)
class Poll:
    """One poll: when, the configured split, and each version's reading."""

    time: float  # unix seconds the poll was made
    control: str | None  # the active version (the live control)
    canary: str  # the version under judgement
    percent: float | None  # configured canary percent at this poll
    readings: Mapping[str, Reading]  # version -> Reading (a missing version = not in the answer)
    error: str | None = None  # the whole poll failed (unreachable, bad answer)
    model: str | None = None  # carried by the record format only
    canary_id: str | None = None  # separates canaries in one record file

    def to_json(self) -> dict[str, Any]:
        """One JSONL line of the poll record format."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "canary_id": self.canary_id,
            "time": _num_out(self.time),
            "control": self.control,
            "canary": self.canary,
            "percent": None if self.percent is None else _num_out(self.percent),
            "readings": {v: r.to_json() for v, r in self.readings.items()},
            "error": self.error,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Poll:
        """Parse one record line (already JSON-decoded); strict: ValidationError with a one-line reason."""
        _mapping(doc, "poll")
        if doc.get("schema") != SCHEMA:
            raise ValidationError(f"poll: schema must be {SCHEMA!r} (got {_short(doc.get('schema'))})")
        _only(doc, ("schema", "model", "canary_id", "time", "control", "canary", "percent", "readings", "error"),
              "poll")
        time = _num_in(doc.get("time"), "poll.time")
        if not math.isfinite(time):
            raise ValidationError("poll.time must be a finite number of unix seconds")
        for key in ("model", "canary_id", "control", "error"):
            if doc.get(key) is not None and not isinstance(doc.get(key), str):
                raise ValidationError(f"poll.{key} must be a string or null")
        canary = doc.get("canary")
        if not isinstance(canary, str) or not canary:
            raise ValidationError("poll.canary must be the canary's version (a non-empty string)")
        percent = _opt_num(doc.get("percent"), "poll.percent")
        if percent is not None and not 0 <= percent <= 100:
            raise ValidationError(f"poll.percent must be between 0 and 100 (got {percent!r})")
        readings = doc.get("readings")
        readings = {} if readings is None else readings
        _mapping(readings, "poll.readings")
        return cls(
            time=time,
            control=doc.get("control"),
            canary=canary,
            percent=percent,
            readings={str(v): Reading.from_json(r, f"poll.readings.{v}") for v, r in readings.items()},
            error=doc.get("error"),
            model=doc.get("model"),
            canary_id=doc.get("canary_id"),
        )


def _num_out(value: float) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return value


def _num_in(value: Any, where: str) -> float:
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{where} must be a number (got {_short(value)})")
    return float(value)


def _opt_num(value: Any, where: str) -> float | None:
    return None if value is None else _num_in(value, where)


def _num_map(doc: Any, where: str) -> dict[str, float]:
    _mapping(doc, where)
    return {str(k): _num_in(v, f"{where}.{k}") for k, v in doc.items()}


def _mapping(doc: Any, where: str) -> None:
    if not isinstance(doc, Mapping):
        raise ValidationError(f"{where} must be a JSON object (got {_short(doc)})")


def _only(doc: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    extra = sorted(str(k) for k in doc if k not in keys)
    if extra:
        raise ValidationError(f"{where}: unknown key {extra[0]!r} (expected one of {', '.join(keys)})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
