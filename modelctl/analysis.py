"""Watch judgement: thresholds from the baseline, sequential tests, verdicts (pure: no I/O, no clock).

A loop drives it like this::

    config = AnalysisConfig.from_config(registry_config)   # `analysis:` of modelctl.yaml, defaults filled
    judge = Judge(config)
    while True:
        try:
            samples = provider.fetch(model, [active, canary], since_seconds)
        except MetricsError as exc:
            decision = judge.unavailable(str(exc))          # a poll without data: never a pass
        else:
            decision = judge.poll(samples[canary], samples.get(active), bundle["baseline"], now=clock())
        decision.action      # "continue" | "rollback" | "alert" | "hold" | "advance-ok"
        decision.results     # one MetricResult per configured metric: verdict, values, statistic
        decision.evidence_lines()   # one line per deciding metric, for `Modelctl-Evidence:` trailers

Inputs are `Sample`s: per version, the increase of the counters since the canary started (or since
watch started) and the current gauges. Any value may be None (missing); a provider that saw bad
data for one quantity says why in `Sample.problems` (key `"*"` for the whole version).

Verdicts, per metric and poll: `pass`, `fail`, `inconclusive`, `insufficient_data`, `error`.
Bad data (missing, NaN, Inf, negative counts, errors > requests, stale, several series) is `error`
and never a pass.

Baseline. The active version's live figures over the same period are the control; the bundle's
registered `baseline` is the fallback (no active version, or fewer than `min_requests` active
requests) and the floor: the baseline used is the larger of the two, so a canary that meets its
registered baseline is not rolled back because the active version happens to do better today.

Rate metrics (`type: rate`: errors / requests, or `numerator` / requests) use a one-sided Wald
sequential probability ratio test on the cumulative canary counts, H0: p <= p0 against H1: p >= p1,
with p0 the baseline rate and p1 = max(p0 * max_ratio, p0 + min_delta) (the reported threshold).
The log likelihood ratio is
    llr = x * ln(p1 / p0) + (n - x) * ln((1 - p1) / (1 - p0)).
`fail` when llr >= ln(1 / alpha), `pass` when llr <= ln(beta), `inconclusive` between. The test is
never stopped or restarted: every poll re-evaluates the counts since the canary started. Under H0
the likelihood ratio is a non-negative martingale, so by Ville's inequality the chance that it
*ever* reaches 1 / alpha is at most alpha, however often it is looked at and however long the
canary runs: `alpha` is the false-rollback budget of the whole canary, not of one poll. (These
boundaries are slightly wider than Wald's stopped-test ln((1 - beta) / alpha) for exactly that
reason; symmetrically, a canary truly at p1 is ever called `pass` with probability at most beta.)
The baseline rate is treated as known: the active version normally carries many times the
canary's traffic, and the registered floor bounds how low it can go. A baseline rate of zero from
n requests counts as half an event (0.5 / n), so a single canary error is strong but finite
evidence.

Ratio metrics (`type: ratio`: latency, cost) compare the canary value to the baseline value:
`fail` when canary > baseline * max_ratio, else `pass`; `insufficient_data` until the canary has
`min_requests` requests (a p95 over a handful of requests means nothing).

The tracker (`decide`, or the `Judge` wrapper) turns verdicts into a poll decision:
- a metric acts after `consecutive_failures` failing polls in a row (a pass, inconclusive or
  insufficient poll resets its count; an error poll neither counts nor resets, so a flaky
  endpoint cannot postpone a rollback forever); its `action` says what it does: `rollback` or `alert`;
- a poll where any rollback-action metric is `error` is an error poll; after `consecutive_errors`
  of them in a row, the fail-safe `on_errors` (`hold` or `rollback`) applies;
- precedence: rollback > fail-safe > alert > advance-ok (every rollback-action metric passes and
  no metric at all fails or is in error) > continue.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .errors import ValidationError

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
INSUFFICIENT = "insufficient_data"
ERROR = "error"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, INSUFFICIENT, ERROR)

CONTINUE = "continue"
ROLLBACK = "rollback"
ALERT = "alert"
HOLD = "hold"
ADVANCE_OK = "advance-ok"
ACTIONS = (CONTINUE, ROLLBACK, ALERT, HOLD, ADVANCE_OK)

# Sample fields that hold a quantity directly; anything else lives in Sample.extra.
SAMPLE_FIELDS = ("requests", "errors", "latency_p95_ms", "cost_per_request")

# Defaults tuned with benchmarks/detection.py: at a 1 % baseline, alpha 0.01 keeps false
# rollbacks under 1 % and still catches a doubled error rate within ~2,000 canary requests.
DEFAULT_METRICS: dict[str, dict[str, Any]] = {
    "error_rate": {"type": "rate", "max_ratio": 1.5, "min_delta": 0.005, "action": "rollback"},
    "latency_p95_ms": {"type": "ratio", "max_ratio": 1.2, "action": "rollback"},
    "cost_per_request": {"type": "ratio", "max_ratio": 1.3, "action": "alert"},
}
DEFAULTS: dict[str, Any] = {
    "alpha": 0.01,
    "beta": 0.2,
    "consecutive_failures": 2,
    "consecutive_errors": 5,
    "on_errors": "hold",
    "min_requests": 200,
    "stale_seconds": 120,
}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Sample:
    """One version's figures for one poll: counter increases since the start, current gauges."""

    requests: float | None = None
    errors: float | None = None
    latency_p95_ms: float | None = None
    cost_per_request: float | None = None
    extra: Mapping[str, float | None] = field(default_factory=dict)
    timestamp: float | None = None  # unix seconds of the data, when the provider knows it
    problems: Mapping[str, str] = field(default_factory=dict)  # quantity (or "*") -> why unusable

    def raw(self, name: str) -> Any:
        """The raw value of a quantity (None when absent)."""
        if name in SAMPLE_FIELDS:
            return getattr(self, name)
        return self.extra.get(name)

    def problem(self, name: str) -> str | None:
        """Why the provider could not give this quantity, if it could not."""
        return self.problems.get(name) or self.problems.get("*")


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is judged (an entry of `analysis.metrics`)."""

    name: str
    type: str  # "rate" | "ratio"
    max_ratio: float
    min_delta: float = 0.0
    action: str = "rollback"  # "rollback" | "alert"
    numerator: str | None = None  # rate: the counter of events; None -> default_numerator(name)
    min_requests: int | None = None  # None -> AnalysisConfig.min_requests

    @property
    def events(self) -> str:
        """The counter a rate metric counts."""
        return self.numerator or default_numerator(self.name)


def default_numerator(metric: str) -> str:
    """The counter behind a rate metric by convention: error_rate -> errors, x_rate -> xs."""
    if metric == "error_rate":
        return "errors"
    if metric.endswith("_rate"):
        return metric[: -len("_rate")] + "s"
    return metric


@dataclass(frozen=True)
class AnalysisConfig:
    """The `analysis:` section of modelctl.yaml with defaults filled in."""

    alpha: float = DEFAULTS["alpha"]
    beta: float = DEFAULTS["beta"]
    consecutive_failures: int = DEFAULTS["consecutive_failures"]
    consecutive_errors: int = DEFAULTS["consecutive_errors"]
    on_errors: str = DEFAULTS["on_errors"]
    min_requests: int = DEFAULTS["min_requests"]
    stale_seconds: float = DEFAULTS["stale_seconds"]
    metrics: tuple[MetricSpec, ...] = field(default_factory=lambda: _default_specs())

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "AnalysisConfig":
        """Build from a whole registry config (reads its `analysis` section)."""
        section = (config or {}).get("analysis") if isinstance(config, Mapping) else None
        return cls.from_section(section)

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> "AnalysisConfig":
        """Build from the `analysis` mapping itself; raise ValidationError on bad values."""
        section = section or {}
        if not isinstance(section, Mapping):
            raise ValidationError("modelctl.yaml: analysis must be a mapping")
        values = {**DEFAULTS, **{k: v for k, v in section.items() if k in DEFAULTS}}
        alpha = _setting(values, "alpha", lambda v: 0 < v < 1, "a number between 0 and 1")
        beta = _setting(values, "beta", lambda v: 0 < v < 1, "a number between 0 and 1")
        cons_f = _setting(values, "consecutive_failures", lambda v: v >= 1 and v == int(v), "a whole number >= 1")
        cons_e = _setting(values, "consecutive_errors", lambda v: v >= 1 and v == int(v), "a whole number >= 1")
        min_req = _setting(values, "min_requests", lambda v: v >= 0 and v == int(v), "a whole number >= 0")
        stale = _setting(values, "stale_seconds", lambda v: v > 0, "a number of seconds > 0")
        on_errors = values["on_errors"]
        if on_errors not in (HOLD, ROLLBACK):
            raise ValidationError(f"modelctl.yaml: analysis.on_errors must be hold or rollback (got {on_errors!r})")
        raw_metrics = section.get("metrics", DEFAULT_METRICS)
        if raw_metrics is None:
            raw_metrics = DEFAULT_METRICS
        if not isinstance(raw_metrics, Mapping):
            raise ValidationError("modelctl.yaml: analysis.metrics must be a mapping of metric name to settings")
        metrics = tuple(_metric_spec(str(name), spec) for name, spec in raw_metrics.items())
        if not metrics:
            raise ValidationError("modelctl.yaml: analysis.metrics is empty; watch would have nothing to judge",
                                  hint="remove the key to use the defaults")
        return cls(
            alpha=alpha,
            beta=beta,
            consecutive_failures=int(cons_f),
            consecutive_errors=int(cons_e),
            on_errors=on_errors,
            min_requests=int(min_req),
            stale_seconds=stale,
            metrics=metrics,
        )

    def metric(self, name: str) -> MetricSpec:
        """The spec of one metric by name (KeyError if not configured)."""
        for spec in self.metrics:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def counters(self) -> set[str]:
        """Quantities that are counters (providers must turn them into increases)."""
        names = {"requests", "errors"}
        names.update(spec.events for spec in self.metrics if spec.type == "rate")
        return names


def _setting(values: Mapping[str, Any], key: str, ok, want: str) -> float:
    value = values[key]
    if not _is_number(value) or not math.isfinite(value) or not ok(value):
        raise ValidationError(f"modelctl.yaml: analysis.{key} must be {want} (got {value!r})")
    return float(value) if key in ("alpha", "beta", "stale_seconds") else value


def _default_specs() -> tuple[MetricSpec, ...]:
    return tuple(_metric_spec(name, spec) for name, spec in DEFAULT_METRICS.items())


_METRIC_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def _metric_spec(name: str, raw: Any) -> MetricSpec:
    where = f"modelctl.yaml: analysis.metrics.{name}"
    if not _METRIC_NAME_RE.match(name):
        raise ValidationError(f"modelctl.yaml: analysis.metrics has an invalid metric name {name!r}",
                              hint="use letters, digits and '_'")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be a mapping")
    merged = {**DEFAULT_METRICS.get(name, {}), **raw}
    kind = merged.get("type")
    if kind not in ("rate", "ratio"):
        raise ValidationError(f"{where}.type must be rate or ratio (got {kind!r})")
    max_ratio = merged.get("max_ratio", 1.5 if kind == "rate" else 1.2)
    min_delta = merged.get("min_delta", 0.0)
    action = merged.get("action", "rollback")
    numerator = merged.get("numerator")
    min_requests = merged.get("min_requests")
    if not _is_number(max_ratio) or not math.isfinite(max_ratio) or max_ratio < 1:
        raise ValidationError(f"{where}.max_ratio must be a number >= 1 (got {max_ratio!r})")
    if not _is_number(min_delta) or not math.isfinite(min_delta) or not 0 <= min_delta < 1:
        raise ValidationError(f"{where}.min_delta must be a number in [0, 1) (got {min_delta!r})")
    if kind == "rate" and max_ratio == 1 and min_delta == 0:
        raise ValidationError(f"{where} tolerates nothing: max_ratio 1 and min_delta 0",
                              hint="set max_ratio above 1 or min_delta above 0")
    if action not in (ROLLBACK, ALERT):
        raise ValidationError(f"{where}.action must be rollback or alert (got {action!r})")
    if numerator is not None and (not isinstance(numerator, str) or not _METRIC_NAME_RE.match(numerator)):
        raise ValidationError(f"{where}.numerator must be a counter name (got {numerator!r})")
    if min_requests is not None and (
            not _is_number(min_requests) or min_requests < 0 or min_requests != int(min_requests)):
        raise ValidationError(f"{where}.min_requests must be a whole number >= 0 (got {min_requests!r})")
    return MetricSpec(
        name=name,
        type=kind,
        max_ratio=float(max_ratio),
        min_delta=float(min_delta),
        action=action,
        numerator=numerator,
        min_requests=None if min_requests is None else int(min_requests),
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricResult:
    """The verdict on one metric at one poll, with the figures behind it."""

    metric: str
    verdict: str
    type: str
    action: str
    canary_value: float | None = None
    baseline_value: float | None = None
    baseline_source: str | None = None  # "live" (active version) | "registered" (bundle baseline)
    canary_n: float | None = None
    baseline_n: float | None = None
    statistic: str | None = None  # "sprt_llr" | "ratio"
    statistic_value: float | None = None
    bound: float | None = None  # the statistic's fail boundary: ln(1/alpha) or max_ratio
    threshold: float | None = None  # in the metric's unit: p1, or baseline * max_ratio
    reason: str = ""

    def evidence(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return {
            "metric": self.metric,
            "verdict": self.verdict,
            "canary": self.canary_value,
            "baseline": self.baseline_value,
            "baseline_source": self.baseline_source,
            "canary_n": self.canary_n,
            "baseline_n": self.baseline_n,
            "statistic": self.statistic,
            "value": self.statistic_value,
            "bound": self.bound,
            "threshold": self.threshold,
            "reason": self.reason,
        }

    def evidence_line(self) -> str:
        """One line (no newlines) for a `Modelctl-Evidence:` trailer."""
        parts = [f"{self.metric} {self.verdict}"]
        if self.canary_value is not None:
            parts.append(f"canary={_fmt(self.canary_value)} (n={_fmt(self.canary_n)})")
        if self.baseline_value is not None:
            parts.append(f"baseline={_fmt(self.baseline_value)} ({self.baseline_source}, n={_fmt(self.baseline_n)})")
        if self.threshold is not None:
            parts.append(f"threshold={_fmt(self.threshold)}")
        if self.statistic is not None and self.statistic_value is not None:
            op = ">=" if self.statistic == "sprt_llr" else ">"
            if self.verdict != FAIL:
                op = "vs"
            parts.append(f"{self.statistic}={_fmt(self.statistic_value)} {op} {_fmt(self.bound)}")
        if self.reason and self.verdict in (ERROR, INSUFFICIENT):
            parts.append(self.reason)
        return _one_line("; ".join(parts))


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.1f}"
    return f"{value:.4g}"


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(text: str) -> str:
    return _CONTROL_RE.sub(" ", text).strip()[:500]


# --------------------------------------------------------------------------- judgement


def judge_poll(
    config: AnalysisConfig,
    canary: Sample,
    active: Sample | None,
    registered: Mapping[str, Any] | None,
    now: float | None = None,
) -> tuple[MetricResult, ...]:
    """Judge every configured metric for one poll."""
    return tuple(judge_metric(spec, config, canary, active, registered, now) for spec in config.metrics)


def unavailable_results(config: AnalysisConfig, reason: str) -> tuple[MetricResult, ...]:
    """Error verdicts for every metric when the poll got no data at all (endpoint down, garbage)."""
    reason = _one_line(reason)
    return tuple(_result(spec, ERROR, reason=reason) for spec in config.metrics)


def judge_metric(
    spec: MetricSpec,
    config: AnalysisConfig,
    canary: Sample,
    active: Sample | None,
    registered: Mapping[str, Any] | None,
    now: float | None = None,
) -> MetricResult:
    """Judge one metric: the canary sample against the live active sample and the registered baseline."""
    for who, sample in (("canary", canary), ("active version", active)):
        stale = _staleness(sample, config.stale_seconds, now)
        if stale:
            return _result(spec, ERROR, reason=f"{who}: {stale}")
    if spec.type == "rate":
        return _judge_rate(spec, config, canary, active, registered or {})
    return _judge_ratio(spec, config, canary, active, registered or {})


def _staleness(sample: Sample | None, stale_seconds: float, now: float | None) -> str | None:
    if sample is None or sample.timestamp is None or now is None:
        return None
    ts = sample.timestamp
    if not _is_number(ts) or not math.isfinite(ts):
        return f"sample timestamp {ts!r} is not a time"
    age = now - ts
    if age > stale_seconds:
        return f"sample is stale ({age:.0f}s old, limit {stale_seconds:g}s)"
    return None


class _Bad(Exception):
    """A quantity that cannot be used (internal: becomes an `error` verdict)."""


def _value(sample: Sample, name: str, who: str) -> float:
    problem = sample.problem(name)
    if problem:
        raise _Bad(f"{who} {name}: {problem}")
    raw = sample.raw(name)
    if raw is None:
        raise _Bad(f"{who} {name}: missing")
    if not _is_number(raw):
        raise _Bad(f"{who} {name}: not a number ({_short(raw)})")
    if not math.isfinite(raw):
        raise _Bad(f"{who} {name}: {raw!r}")
    if raw < 0:
        raise _Bad(f"{who} {name}: negative ({raw!r})")
    return float(raw)


def _counts(sample: Sample, events: str, who: str) -> tuple[float, float]:
    n = _value(sample, "requests", who)
    x = _value(sample, events, who)
    if x > n:
        raise _Bad(f"{who}: {events} ({_fmt(x)}) exceed requests ({_fmt(n)})")
    return n, x


def _registered(registered: Mapping[str, Any], name: str, *, rate: bool) -> tuple[float | None, float | None]:
    value = registered.get(name)
    if value is None:
        return None, None
    if not _is_number(value) or not math.isfinite(value) or value < 0 or (rate and value > 1):
        raise _Bad(f"registered baseline {name}: invalid ({_short(value)})")
    n = registered.get("requests")
    n = float(n) if _is_number(n) and math.isfinite(n) and n > 0 else None
    return float(value), n


def _judge_rate(spec: MetricSpec, config: AnalysisConfig, canary: Sample, active: Sample | None,
                registered: Mapping[str, Any]) -> MetricResult:
    events = spec.events
    min_requests = spec.min_requests if spec.min_requests is not None else config.min_requests
    try:
        n, x = _counts(canary, events, "canary")
        live = live_n = None
        if active is not None:
            na, xa = _counts(active, events, "active version")
            if na >= max(min_requests, 1):
                live, live_n = xa / na, na
        reg, reg_n = _registered(registered, spec.name, rate=True)
    except _Bad as exc:
        return _result(spec, ERROR, reason=str(exc))
    p0, source, base_n = _pick_baseline(live, live_n, reg, reg_n)
    canary_rate = x / n if n > 0 else None
    if p0 is None:
        return _result(spec, INSUFFICIENT, canary_value=canary_rate, canary_n=n,
                       reason=f"no baseline yet: active version has fewer than {min_requests} requests "
                              f"and the bundle registers no {spec.name}")
    p0_used = p0
    if p0_used <= 0:
        # half an event: a zero baseline would make one canary error infinite evidence
        p0_used = 0.5 / (base_n or max(min_requests, 1))
    p0_used = min(p0_used, 1 - 1e-9)
    p1 = max(p0_used * spec.max_ratio, p0_used + spec.min_delta)
    if p1 >= 1:
        p1 = (1 + p0_used) / 2  # a baseline near 100 % leaves only the gap to 100 % to detect
    upper = math.log(1 / config.alpha)
    lower = math.log(config.beta)
    common = dict(canary_value=canary_rate, canary_n=n, baseline_value=p0, baseline_source=source,
                  baseline_n=base_n, statistic="sprt_llr", bound=upper, threshold=p1)
    if n == 0:
        return _result(spec, INSUFFICIENT, **common, reason="no canary requests yet")
    llr = sprt_llr(x, n, p0_used, p1)
    if llr >= upper:
        verdict = FAIL
    elif llr <= lower:
        verdict = PASS
    else:
        verdict = INCONCLUSIVE
    return _result(spec, verdict, **common, statistic_value=llr)


def sprt_llr(x: float, n: float, p0: float, p1: float) -> float:
    """Log likelihood ratio of p1 against p0 for x events in n Bernoulli trials."""
    return x * math.log(p1 / p0) + (n - x) * math.log((1 - p1) / (1 - p0))


def _judge_ratio(spec: MetricSpec, config: AnalysisConfig, canary: Sample, active: Sample | None,
                 registered: Mapping[str, Any]) -> MetricResult:
    min_requests = spec.min_requests if spec.min_requests is not None else config.min_requests
    try:
        n = _value(canary, "requests", "canary")
        if n < min_requests:
            return _result(spec, INSUFFICIENT, canary_n=n,
                           reason=f"canary has {_fmt(n)} of the {min_requests} requests needed")
        value = _value(canary, spec.name, "canary")
        live = live_n = None
        if active is not None:
            na = _value(active, "requests", "active version")
            if na >= max(min_requests, 1):
                live, live_n = _value(active, spec.name, "active version"), na
        reg, reg_n = _registered(registered, spec.name, rate=False)
    except _Bad as exc:
        return _result(spec, ERROR, reason=str(exc))
    base, source, base_n = _pick_baseline(live, live_n, reg, reg_n)
    if base is None:
        return _result(spec, INSUFFICIENT, canary_value=value, canary_n=n,
                       reason=f"no baseline yet: active version has fewer than {min_requests} requests "
                              f"and the bundle registers no {spec.name}")
    threshold = base * spec.max_ratio
    if base > 0:
        ratio = value / base
    else:
        ratio = 1.0 if value == 0 else math.inf
    verdict = FAIL if value > threshold else PASS
    return _result(spec, verdict, canary_value=value, canary_n=n, baseline_value=base,
                   baseline_source=source, baseline_n=base_n, statistic="ratio",
                   statistic_value=ratio, bound=spec.max_ratio, threshold=threshold)


def _pick_baseline(live, live_n, reg, reg_n):
    """The larger of the live and registered figures: registered is the fallback and the floor."""
    if live is None and reg is None:
        return None, None, None
    if reg is None or (live is not None and live >= reg):
        return live, "live", live_n
    return reg, "registered", reg_n


def _result(spec: MetricSpec, verdict: str, **fields: Any) -> MetricResult:
    return MetricResult(metric=spec.name, verdict=verdict, type=spec.type, action=spec.action, **fields)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class TrackerState:
    """What the tracker remembers between polls."""

    failures: Mapping[str, int] = field(default_factory=dict)  # metric -> failing polls in a row
    errors: int = 0  # error polls in a row
    polls: int = 0


@dataclass(frozen=True)
class Decision:
    """What one poll decided, and why."""

    action: str  # one of ACTIONS
    results: tuple[MetricResult, ...]
    deciding: tuple[MetricResult, ...]  # the metrics behind a rollback/alert/hold
    streaks: Mapping[str, int]  # metric -> failing polls in a row (after this poll)
    error_polls: int  # error polls in a row (after this poll)
    fail_safe: bool  # True when the action comes from consecutive error polls
    reason: str
    state: TrackerState

    def evidence(self) -> list[dict[str, Any]]:
        """One dict per deciding metric (with the number of polls behind it)."""
        out = []
        for result in self.deciding:
            item = result.evidence()
            item["polls"] = self.error_polls if self.fail_safe else self.streaks.get(result.metric, 0)
            out.append(item)
        return out

    def evidence_lines(self) -> list[str]:
        """One single-line string per deciding metric, for `Modelctl-Evidence:` trailers."""
        lines = []
        for result in self.deciding:
            polls = self.error_polls if self.fail_safe else self.streaks.get(result.metric, 0)
            lines.append(f"{result.evidence_line()}; polls={polls}")
        return lines


def decide(results: Sequence[MetricResult], state: TrackerState, config: AnalysisConfig) -> Decision:
    """Fold one poll's verdicts into the tracker state and pick the poll's action (pure)."""
    results = tuple(results)
    streaks = dict(state.failures)
    for r in results:
        if r.verdict == FAIL:
            streaks[r.metric] = streaks.get(r.metric, 0) + 1
        elif r.verdict != ERROR:
            streaks[r.metric] = 0
    guards = [r for r in results if r.action == ROLLBACK] or list(results)
    error_poll = any(r.verdict == ERROR for r in guards) or not results
    error_polls = state.errors + 1 if error_poll else 0
    new_state = TrackerState(failures=streaks, errors=error_polls, polls=state.polls + 1)
    need = config.consecutive_failures

    def made(action, deciding, reason, fail_safe=False):
        return Decision(action=action, results=results, deciding=tuple(deciding), streaks=dict(streaks),
                        error_polls=error_polls, fail_safe=fail_safe, reason=reason, state=new_state)

    failing = [r for r in results if r.verdict == FAIL and streaks.get(r.metric, 0) >= need]
    rollbacks = [r for r in failing if r.action == ROLLBACK]
    if rollbacks:
        names = ", ".join(r.metric for r in rollbacks)
        return made(ROLLBACK, rollbacks, f"{names} failed {need} poll(s) in a row")
    if error_polls >= config.consecutive_errors:
        errs = [r for r in guards if r.verdict == ERROR] or list(results)
        return made(config.on_errors, errs,
                    f"no usable data for {error_polls} polls in a row (fail-safe: {config.on_errors})",
                    fail_safe=True)
    alerts = [r for r in failing if r.action == ALERT]
    if alerts:
        names = ", ".join(r.metric for r in alerts)
        return made(ALERT, alerts, f"{names} failed {need} poll(s) in a row")
    rollback_metrics = [r for r in results if r.action == ROLLBACK]
    if rollback_metrics and all(r.verdict == PASS for r in rollback_metrics) and \
            not any(r.verdict in (ERROR, FAIL) for r in results):
        return made(ADVANCE_OK, [], "every rollback metric passes")
    return made(CONTINUE, [], "error poll" if error_poll else "no decision yet")


class Judge:
    """Holds the tracker state for a watch: feed it one poll at a time."""

    def __init__(self, config: AnalysisConfig, state: TrackerState | None = None):
        self.config = config
        self.state = state or TrackerState()

    def poll(self, canary: Sample | None, active: Sample | None, registered: Mapping[str, Any] | None,
             now: float | None = None) -> Decision:
        """Judge one poll's samples and decide (a missing canary sample is an error poll)."""
        if canary is None:
            return self.unavailable("the provider returned no sample for the canary")
        return self.observe(judge_poll(self.config, canary, active, registered, now))

    def unavailable(self, reason: str) -> Decision:
        """Record a poll that got no data at all."""
        return self.observe(unavailable_results(self.config, reason))

    def observe(self, results: Sequence[MetricResult]) -> Decision:
        """Fold already-judged results into the state."""
        decision = decide(results, self.state, self.config)
        self.state = decision.state
        return decision

    def reset(self) -> None:
        """Forget streaks (for example after a canary step changes the traffic split)."""
        self.state = replace(TrackerState(), polls=self.state.polls)
