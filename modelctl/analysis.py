"""Watch judgement: the canary against its live control, interval by interval (pure: no I/O, no clock).

A loop drives it like this::

    config = AnalysisConfig.from_config(registry_config)   # `analysis:` of modelctl.yaml, defaults filled
    judge = Judge(config, prior=serving_bundle_baseline)    # prior: the SERVING version's registered baseline
    while True:
        decision = judge.observe(poll)                      # observation.Poll: cumulative counters per version
        decision.action      # "continue" | "rollback" | "alert" | "hold" | "advance-ok" | "srm-hold"
        decision.results     # one MetricResult per metric and segment: verdict, figures, statistic
        decision.evidence_lines()   # one line per deciding metric, for `Modelctl-Evidence:` trailers
    judge.export_state()     # JSON-able; Judge(config, prior, state=...) resumes without fresh alpha

This docstring is the rulebook.

Counters. Providers report cumulative counters (summed over replicas); the judge differences
consecutive polls per version, segment and quantity. The first poll in which a quantity appears
only sets its start: earlier history never counts. A counter that decreases (a replica restart, a
glitch, errors reading 0 while requests rise), a value that is not a finite non-negative number,
a stale reading (`stale_seconds`) or a provider problem (`Reading.problems`, "*" for all) makes the
poll an error poll for what it affects; the interval is not counted and the next interval starts
from the new values. No history is ever imported. A poll with `error` set is an error poll.

Verdicts, per metric, segment and poll: `pass`, `fail`, `inconclusive`, `insufficient_data`, `error`.

Rates against the concurrent control (`type: rate`: `events` / requests). For each interval
between two good polls, given the k = x1 + x0 events of canary and control, the canary's count x1
is Binomial(k, s) with s = n1 / (n1 + n0) its share of the interval's requests when both versions
have the same rate; at a rate ratio r it is Binomial(k, theta), theta = r n1 / (r n1 + n0). The
log likelihood ratio of r1 against 1 for the interval is
    x1 ln(theta1 / s) + x0 ln((1 - theta1) / (1 - s)),
and the per-interval ratios multiply into a martingale under "no regression" (a supermartingale
when the canary is better). Anything that moves both versions alike inside an interval (a shared
provider incident, diurnal drift, a split change) cancels: it changes k and s, not the test.
The bar comes from the control, never from the candidate: r1 = max(max_ratio, 1 + min_delta /
p_control), p_control the control's rate so far. The serving version's registered baseline
(`prior`) only stands in while the control has little data (it weighs as `prior_requests`
requests) and, for an interval without any control data, is the rate a one-sample test uses.
The candidate's own bundle baseline is never an input.
The indifference ratio (regressions above it drift to fail, below it to pass) is where the
expected increment is zero: about (r1 - 1) / ln r1 of the control's rate (1.23x for r1 = 1.5).

Overdispersion. Bursty errors make x1 vary more than a binomial. Each version's events are taken
to vary as mu + c mu^2 (a burst of squared coefficient of variation c, on top of Poisson noise),
which through both versions inflates the variance of an interval by phi = 1 + 2 c k s (1 - s), k
the events the interval should hold at the rates so far (not the realised k: a control's dip must
not shrink phi). c is a moment estimate from the excess of the intervals' squared residuals
(against the fitted ratio) over the binomial variance, plus twice the lag-1 covariance (bursts that
outlast a poll correlate neighbouring intervals); it is shrunk towards `burst_prior`^2 (CV 0.3)
weighing as `burst_prior_weight` intervals, a negative excess never lowers the prior, and it is
inflated by 1 + 2 / sqrt(intervals) while it rests on few intervals. Every increment is divided by
the phi estimated from the intervals before it (quasi-likelihood) and capped at `max_step` plus the
interval's own information (k KL(s, theta1) / phi: what an r1 regression is expected to add in it).
Capping a likelihood ratio keeps the supermartingale. At 1 canary request/s an interval carries
little information and the cap is about `max_step`: one burst cannot decide alone; at 50 requests/s
an interval of 1,500 canary requests carries a unit or more, and a real regression is not held
back to `max_step` per poll (which made a late regression at that traffic take twice as long).

Latency (`type: latency`) comes from histogram counters: per interval, the share of requests
slower than a threshold, canary against control, with the same stratified test. The threshold is
`threshold_ms` when configured, else the control's `quantile` (0.95), interpolated from the
control's buckets accumulated over the canary's good intervals; counts above it are interpolated
inside a bucket. Cost (`type: cost`) comes from `cost_total`: per interval the log of the canary's
cost per request over the control's (capped at +-ln 10) is a Gaussian observation weighted by
1 / (1/n1 + 1/n0) requests with a per-request variance estimated from the intervals (shrunk
towards 1); the test is the same likelihood ratio of ln(max_ratio) against 0. A `gauge` (a
provider's quantile or per-request figure) compares canary and control values: it can alert after
`consecutive_failures` failing polls, never roll back, and always reports the sample count (the
canary's requests in the last interval). The legacy `type: ratio` is read as `gauge`.

Decision boundary and late regressions. Each metric and segment keeps the cumulative log
likelihood ratio S and its Page CUSUM W = max(0, W + increment): W forgets good evidence, so a
regression that starts an hour in is judged on what came after it. `fail` when W reaches
    h = ln(1 / alpha_m) + cusum_growth * ln(1 + I_r / 0.25),
alpha_m the metric's (and segment's) share of alpha and I_r the information accumulated under "no
regression" (the sum of the increments' expected magnitude on a healthy canary) up to the last
time W restarted from zero. Until W first restarts, W equals S and the boundary is Ville's: the
chance that S ever reaches ln(1 / alpha_m) on a healthy canary is at most alpha_m however often it
is looked at. Each restart is a fresh chance; the ln(1 + I_r / 0.25) term makes later chances pay
more (a union over restart points weighted 1 / (1 + I_r / 0.25)). Counting information in quarter
units makes the first restarts pay already: at 1 canary request/s a healthy canary gathers only
a few units in two hours, and cheap early restarts were what pushed its false rollbacks above
alpha. That part of the bound is approximate and measured by benchmarks/judgement.py, not proved.
A crossed boundary stays crossed.
`pass` when S <= ln(beta) (at most beta of canaries truly at r1 ever pass), else `inconclusive`.

One error budget. `alpha` bounds false rollbacks for the whole canary. It is split across the
rollback metrics by weight (2 for `critical: true`, 1 otherwise); within a metric, when the
canary reports named segments, the whole version gets 1 - `segment_share` of the metric's alpha
and each segment an equal part of `segment_share` (segments are those in the canary's first
reading or the configured `segments` list, at most `max_segments`; others are shown, not judged).
Alert metrics spend no rollback budget; each is tested at `alpha`.

Sample-ratio mismatch. For intervals whose configured percent did not change, the canary's request
count is compared with its expected share (a version missing from the answer counts 0 requests).
The deviation beyond `srm_tolerance` (relative) is tested with a normal-mixture confidence sequence
at `srm_alpha`; when it is significant the judge holds (`srm-hold`) for the rest of the canary: the
comparison is invalid, which is neither a pass nor a rollback.

The decision of a poll, by precedence: srm-hold; rollback (a rollback metric fails, any segment);
the fail-safe `on_errors` after `consecutive_errors` error polls in a row (a poll is an error poll
when a rollback metric's whole-version result is `error`); alert; advance-ok (every rollback
metric passes on the whole version, no metric fails or errs, and `ready_to_advance`: at least
`min_duration_seconds` since the canary's first reading, `min_requests` canary requests and
`min_events` events of each rate metric); continue.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeGuard, TypeVar

from .config import (
    ANALYSIS_DEFAULTS,
    ANALYSIS_KINDS,
    ANALYSIS_METRICS,
    Config,
    analysis_rules,
    default_events,
    metric_settings,
    raise_first,
)
from .errors import ValidationError
from .observation import Counters, Poll, Reading

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import DecisionDocument, MetricEvidence

_T = TypeVar("_T")

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
SRM_HOLD = "srm-hold"
ACTIONS = (CONTINUE, ROLLBACK, ALERT, HOLD, ADVANCE_OK, SRM_HOLD)

KINDS = ANALYSIS_KINDS
SEQUENTIAL = ("rate", "latency", "cost")

# Defaults tuned with benchmarks/judgement.py (README "How watch judges"); config.py holds them so
# that loading modelctl.yaml does not import the judgement.
DEFAULT_METRICS = ANALYSIS_METRICS
DEFAULTS = ANALYSIS_DEFAULTS
# keys of `analysis:` that belong to watch, not to the judgement
OTHER_KEYS = ("interval",)

_LOG_COST_CAP = math.log(10.0)
_SRM_RHO = 100.0  # normal-mixture scale of the SRM confidence sequence (in requests)
_MAX_R1 = 100.0
_BURST_CAP = 1.0  # the squared burst CV one interval can claim
# the unit in which the CUSUM's restarts count information (see _bound): tuned with the benchmark so
# that restarts after little evidence (rare events at 1 canary request/s) already pay
_INFO_UNIT = 0.25


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is judged (an entry of `analysis.metrics`)."""

    name: str
    type: str  # "rate" | "latency" | "cost" | "gauge"
    max_ratio: float
    min_delta: float = 0.0
    action: str = "rollback"  # "rollback" | "alert"
    critical: bool = False
    events: str | None = None  # rate: the counter of events
    quantile: float = 0.95  # latency: the control's quantile used as threshold
    threshold_ms: float | None = None  # latency: a fixed threshold instead
    gauge: str | None = None  # gauge: the gauge's name (default: the metric's name)
    min_requests: int | None = None

    @property
    def rolls_back(self) -> bool:
        """True when this metric's failure rolls the canary back."""
        return self.action == ROLLBACK and self.type != "gauge"



@dataclass(frozen=True)
class AnalysisConfig:
    """The `analysis:` section of modelctl.yaml with defaults filled in."""

    alpha: float = DEFAULTS["alpha"]
    beta: float = DEFAULTS["beta"]
    consecutive_failures: int = DEFAULTS["consecutive_failures"]
    consecutive_errors: int = DEFAULTS["consecutive_errors"]
    on_errors: str = DEFAULTS["on_errors"]
    min_requests: int = DEFAULTS["min_requests"]
    min_events: int = DEFAULTS["min_events"]
    min_duration_seconds: float = DEFAULTS["min_duration_seconds"]
    stale_seconds: float = DEFAULTS["stale_seconds"]
    srm_alpha: float = DEFAULTS["srm_alpha"]
    srm_tolerance: float = DEFAULTS["srm_tolerance"]
    segment_share: float = DEFAULTS["segment_share"]
    max_segments: int = DEFAULTS["max_segments"]
    cusum_growth: float = DEFAULTS["cusum_growth"]
    burst_prior: float = DEFAULTS["burst_prior"]
    burst_prior_weight: float = DEFAULTS["burst_prior_weight"]
    max_step: float = DEFAULTS["max_step"]
    prior_requests: float = DEFAULTS["prior_requests"]
    segments: tuple[str, ...] | None = None
    metrics: tuple[MetricSpec, ...] = field(default_factory=lambda: _default_specs())

    @classmethod
    def from_config(cls, config: Config | Mapping[str, Any] | None) -> AnalysisConfig:
        """Build from a registry config: a `config.Config` (validated: built as it is) or a plain
        mapping (its `analysis` section is checked by config.analysis_rules first)."""
        if isinstance(config, Config):
            return cls._build(config.analysis.as_dict())
        section = (config or {}).get("analysis") if isinstance(config, Mapping) else None
        return cls.from_section(section)

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> AnalysisConfig:
        """Build from a plain `analysis` mapping; raise ValidationError on what config.analysis_rules finds."""
        raise_first(analysis_rules(section))
        return cls._build(section or {})

    @classmethod
    def _build(cls, section: Mapping[str, Any]) -> AnalysisConfig:
        """The typed form of a section that passed config.analysis_rules (nothing is checked here)."""
        v = {**DEFAULTS, **{k: x for k, x in section.items() if k in DEFAULTS}}
        out: dict[str, Any] = {k: _typed(k, v[k]) for k in DEFAULTS}
        segments = section.get("segments")
        if segments is not None:
            out["segments"] = tuple(dict.fromkeys(segments))
        raw_metrics = section.get("metrics") or DEFAULT_METRICS
        return cls(metrics=tuple(_metric_spec(str(name), spec) for name, spec in raw_metrics.items()), **out)

    def metric(self, name: str) -> MetricSpec:
        """The spec of one metric by name (KeyError if not configured)."""
        for spec in self.metrics:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def counters(self) -> set[str]:
        """Event counters the rate metrics need from the provider (besides requests)."""
        return {spec.events for spec in self.metrics if spec.type == "rate" and spec.events}

    def metric_alpha(self, spec: MetricSpec) -> float:
        """The share of alpha a metric gets: rollback metrics split alpha by weight; alerts get alpha."""
        if not spec.rolls_back:
            return self.alpha
        weights = {s.name: (2.0 if s.critical else 1.0) for s in self.metrics if s.rolls_back}
        return self.alpha * weights[spec.name] / sum(weights.values())


# settings typed as whole numbers; the rest are floats (on_errors stays a string)
_WHOLE = frozenset({"consecutive_failures", "consecutive_errors", "min_requests", "min_events", "max_segments"})


def _typed(key: str, value: Any) -> Any:
    if key == "on_errors":
        return value
    return int(value) if key in _WHOLE else float(value)


def _default_specs() -> tuple[MetricSpec, ...]:
    return tuple(_metric_spec(name, spec) for name, spec in DEFAULT_METRICS.items())


def _metric_spec(name: str, raw: Mapping[str, Any] | None) -> MetricSpec:
    """The typed form of one `analysis.metrics` entry that passed config.analysis_rules."""
    merged = metric_settings(name, raw)
    kind = str(merged.get("type"))
    if kind == "ratio":  # the old point comparison of a provider's figure: now a gauge
        kind = "gauge"
    # a gauge only alerts (the legacy `type: ratio` defaulted to rollback)
    action = ALERT if kind == "gauge" else merged.get("action", ROLLBACK)
    threshold, least = merged.get("threshold_ms"), merged.get("min_requests")
    return MetricSpec(
        name=name, type=kind, max_ratio=float(merged.get("max_ratio", 1.5)),
        min_delta=float(merged.get("min_delta", 0.0)), action=action, critical=merged.get("critical", False),
        events=(merged.get("events", merged.get("numerator")) or default_events(name)) if kind == "rate" else None,
        quantile=float(merged.get("quantile", 0.95)),
        threshold_ms=None if threshold is None else float(threshold),
        gauge=(merged.get("gauge") or name) if kind == "gauge" else None,
        min_requests=None if least is None else int(least),
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricResult:
    """The verdict on one metric (in one segment) at one poll, with the figures behind it."""

    metric: str
    verdict: str
    type: str
    action: str
    segment: str = ""  # "" = the whole version
    canary_value: float | None = None  # rate, share above the threshold, cost per request or gauge
    control_value: float | None = None
    control_source: str | None = None  # "control" (live) | "prior" (serving version's registered baseline)
    canary_n: float | None = None  # requests counted so far (gauge: in the last interval)
    control_n: float | None = None
    canary_events: float | None = None
    control_events: float | None = None
    intervals: int = 0  # good intervals counted
    error_intervals: int = 0
    statistic: str | None = None  # "cusum_llr" | "ratio"
    statistic_value: float | None = None  # W (or the gauge ratio)
    cumulative: float | None = None  # S
    bound: float | None = None  # the fail boundary h (gauge: max_ratio)
    pass_bound: float | None = None  # ln(beta)
    alpha: float | None = None  # alpha spent by this metric and segment
    ratio: float | None = None  # the alternative r1 (cost: max_ratio)
    indifference: float | None = None  # the ratio where the test is indifferent
    dispersion: float | None = None  # phi
    threshold_ms: float | None = None  # latency: the threshold used
    reason: str = ""

    def evidence(self) -> MetricEvidence:
        """The figures as a JSON-ready dict (stable keys)."""
        return {
            "metric": self.metric, "segment": self.segment, "verdict": self.verdict, "type": self.type,
            "action": self.action, "canary": self.canary_value, "control": self.control_value,
            "control_source": self.control_source, "canary_n": self.canary_n, "control_n": self.control_n,
            "canary_events": self.canary_events, "control_events": self.control_events,
            "intervals": self.intervals, "error_intervals": self.error_intervals,
            "statistic": self.statistic, "value": self.statistic_value, "cumulative": self.cumulative,
            "bound": self.bound, "pass_bound": self.pass_bound, "alpha": self.alpha, "ratio": self.ratio,
            "indifference": self.indifference, "dispersion": self.dispersion,
            "threshold_ms": self.threshold_ms, "reason": self.reason,
        }

    def evidence_line(self) -> str:
        """One line (no newlines) for a `Modelctl-Evidence:` trailer."""
        head = self.metric + (f"[{self.segment}]" if self.segment else "")
        parts = [f"{head} {self.verdict}"]
        if self.canary_value is not None:
            parts.append(f"canary={_fmt(self.canary_value)} (n={_fmt(self.canary_n)})")
        if self.control_value is not None:
            parts.append(f"control={_fmt(self.control_value)} ({self.control_source}, n={_fmt(self.control_n)})")
        if self.threshold_ms is not None:
            parts.append(f"threshold={_fmt(self.threshold_ms)}ms")
        if self.statistic == "cusum_llr" and self.statistic_value is not None:
            op = ">=" if self.verdict == FAIL else "vs"
            parts.append(f"cusum_llr={_fmt(self.statistic_value)} {op} {_fmt(self.bound)}")
            parts.append(f"llr={_fmt(self.cumulative)} (pass <= {_fmt(self.pass_bound)})")
            parts.append(f"r1={_fmt(self.ratio)} indifference={_fmt(self.indifference)}x")
            if self.dispersion is not None:
                parts.append(f"phi={_fmt(self.dispersion)}")
        elif self.statistic == "ratio" and self.statistic_value is not None:
            op = ">" if self.verdict == FAIL else "vs"
            parts.append(f"ratio={_fmt(self.statistic_value)} {op} {_fmt(self.bound)}")
        parts.append(f"intervals={self.intervals}")
        if self.alpha is not None:
            parts.append(f"alpha={_fmt(self.alpha)}")
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


@dataclass(frozen=True)
class Decision:
    """What one poll decided, and why."""

    action: str  # one of ACTIONS
    results: tuple[MetricResult, ...]
    deciding: tuple[MetricResult, ...]  # the results behind a rollback, alert, hold or advance-ok
    reason: str
    error_polls: int = 0  # error polls in a row (after this poll)
    fail_safe: bool = False  # True when the action comes from consecutive error polls
    time: float | None = None
    srm: Mapping[str, Any] | None = None  # the sample-ratio figures
    streaks: Mapping[str, int] | None = None  # per metric: polls in a row with a failing result (after this one)

    def evidence(self) -> list[MetricEvidence]:
        """One dict per deciding result."""
        return [r.evidence() for r in self.deciding]

    def evidence_lines(self) -> list[str]:
        """One single-line string per deciding result, for `Modelctl-Evidence:` trailers."""
        lines = [r.evidence_line() for r in self.deciding]
        if self.action == SRM_HOLD and self.srm:
            lines.insert(0, _one_line(f"sample ratio mismatch: {self.reason}"))
        if self.fail_safe:
            lines = [f"{line}; error_polls={self.error_polls}" for line in lines]
        return lines

    def to_json(self) -> DecisionDocument:
        """Stable keys for --json, the poll record and the HTML report."""
        return {
            "action": self.action,
            "reason": self.reason,
            "time": self.time,
            "error_polls": self.error_polls,
            "fail_safe": self.fail_safe,
            "srm": dict(self.srm) if self.srm else None,
            "deciding": [f"{r.metric}[{r.segment}]" if r.segment else r.metric for r in self.deciding],
            "results": [r.evidence() for r in self.results],
        }


# --------------------------------------------------------------------------- statistics (pure)


def binomial_llr(x1: float, x0: float, s: float, theta: float) -> float:
    """Log likelihood ratio of the canary's share theta against s, given x1 canary and x0 control events."""
    out = 0.0
    if x1:
        out += x1 * math.log(theta / s)
    if x0:
        out += x0 * math.log((1 - theta) / (1 - s))
    return out


def bernoulli_kl(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b))."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def indifference_ratio(r1: float) -> float:
    """The rate ratio at which the test of r1 against 1 drifts neither way (Poisson limit)."""
    return 1.0 if r1 <= 1 else (r1 - 1) / math.log(r1)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket (Prometheus' rule)."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the highest finite bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def count_above(threshold: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Requests slower than `threshold` in a cumulative histogram, interpolated inside its bucket."""
    total = buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if threshold <= bound:
            if math.isinf(bound):
                return total - below
            at = below + (count - below) * (threshold - lower) / (bound - lower) if bound > lower else count
            return total - at
        lower, below = bound, count
    return total - below


def srm_boundary(variance: float, alpha: float, rho: float = _SRM_RHO) -> float:
    """Two-sided normal-mixture confidence-sequence radius for a sum with this variance (Robbins)."""
    v = variance + rho
    return math.sqrt(v * (math.log(v / rho) + 2 * math.log(1 / alpha)))


class _Sequential:
    """One metric in one segment: the cumulative LLR S, its CUSUM W, the information I, the dispersion."""

    __slots__ = ("S", "W", "I", "Ir", "m", "m_disp", "n1", "n0", "x1", "x0", "dEx", "dG", "dX", "dE", "dLx", "dGL",
                 "pe", "pes",
                 "errors", "sumy", "sumy2", "sumw", "hist", "hist_bounds", "last", "failed")

    def __init__(self) -> None:
        self.S = self.W = self.I = 0.0
        self.Ir = 0.0  # I when the CUSUM last restarted from zero
        self.m = 0  # good intervals
        self.m_disp = 0  # intervals that informed the dispersion
        self.n1 = self.n0 = self.x1 = self.x0 = 0.0  # requests and events (cost: summed costs in x)
        # sums behind the burst estimate (see burst()): excess variance and its scale, lag-1 products
        self.dEx = self.dG = self.dX = self.dE = self.dLx = self.dGL = 0.0
        # the previous interval's residual and expected canary events (None: no previous interval)
        self.pe: float | None = None
        self.pes: float | None = None
        self.errors = 0
        self.sumy = self.sumy2 = self.sumw = 0.0  # cost: weighted log ratios
        self.hist: dict[float, float] = {}  # latency: the control's accumulated buckets
        self.hist_bounds: tuple[float, ...] = ()
        self.last: dict[str, Any] = {}  # the last interval's figures (for results and the trace)
        self.failed = False

    def to_json(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in self.__slots__ if k not in ("hist", "hist_bounds", "last")}
        doc["hist"] = [[_inf_out(b), c] for b, c in self.hist.items()]
        doc["last"] = dict(self.last)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> _Sequential:
        out = cls()
        for k in cls.__slots__:
            if k in ("hist", "hist_bounds", "last"):
                continue
            setattr(out, k, doc[k])
        out.hist = {_inf_in(b): float(c) for b, c in doc.get("hist", [])}
        out.hist_bounds = tuple(out.hist)
        out.last = dict(doc.get("last", {}))
        return out

    def burst(self, config: AnalysisConfig) -> float:
        """The squared burst CV c: each version's events vary as mu + c mu^2 (moment estimate with a prior)."""
        c0 = config.burst_prior ** 2
        if self.m_disp == 0:
            return c0
        # the prior weighs as burst_prior_weight intervals like the ones seen so far
        w = config.burst_prior_weight * self.dG / self.m_disp
        if w + self.dG <= 0:
            return c0
        # a negative excess never cancels the prior, and the estimate is inflated while it rests on few
        # intervals: an underestimated dispersion is what turns bursts into false rollbacks
        c = (w * c0 + max(0.0, self.dEx)) / (w + self.dG)
        if self.dGL > 0:
            c += 2 * max(0.0, self.dLx) / (w + self.dGL)
        return c * (1 + 2 / math.sqrt(max(1, self.m_disp)))

    def phi(self, config: AnalysisConfig, k: float, s: float) -> float:
        """The dispersion of an interval expecting k events at canary share s: 1 + 2 c k s (1 - s)."""
        return 1.0 + 2.0 * self.burst(config) * k * s * (1 - s)

    def pearson(self, x1: float, k: float, s: float, expected: float) -> None:
        """Add one interval (canary events x1 of k at request share s; `expected` events) to the sums."""
        if k <= 0 or not 0 < s < 1:
            self.pe = None
            return
        ks = k * s
        es = expected * s
        self.dX += x1
        self.dE += ks
        r = (self.dX + 0.5) / (self.dE + 0.5)  # the ratio fitted so far, this interval included
        rs = min(r * s, 0.999)
        e = x1 - r * ks
        # both versions' bursts reach the canary's share: (k s)^2 (1-s)^2 + s^2 (k (1-s))^2
        g = 2 * es * es * (1 - s) * (1 - s)
        # one interval adds at most a burst of CV 1: a sudden regression is a shift, not a burst,
        # and must not pass itself off as dispersion
        self.dEx += min(e * e - r * ks * (1 - rs), _BURST_CAP * g)
        self.dG += g
        if self.pe is not None and self.pes is not None:  # set together (or restored together)
            gl = 2 * es * self.pes * (1 - s) * (1 - s)
            self.dLx += min(e * self.pe, _BURST_CAP * gl)
            self.dGL += gl
        self.pe, self.pes = e, es
        self.m_disp += 1

    def add(self, inc: float, info: float, phi: float, cap: float = math.inf) -> None:
        # capping one interval's likelihood ratio keeps a supermartingale (E[min(LR, C)] <= E[LR] <= 1)
        # and stops one burst from deciding alone
        inc = min(inc / phi, cap)
        self.S += inc
        self.I += info / phi
        self.W += inc
        if self.W <= 0:
            self.W = 0.0
            self.Ir = self.I
        self.m += 1


def _inf_out(x: float) -> Any:
    return "+Inf" if math.isinf(x) else x


def _inf_in(x: Any) -> float:
    return math.inf if x == "+Inf" else float(x)


# --------------------------------------------------------------------------- differencing


class _Bad(Exception):
    """A quantity that cannot be used at this poll (becomes an error verdict)."""


def _ok_number(x: Any) -> TypeGuard[float]:
    if type(x) is float or type(x) is int:  # the common case first: this runs for every counter of every poll
        return x >= 0 and x != math.inf
    return _is_number(x) and math.isfinite(x) and x >= 0


class _Deltas:
    """The increases of one version's counters in one segment over the interval that ended at this poll."""

    __slots__ = ("requests", "events", "buckets", "cost", "gauges", "problems", "missing", "seen")

    def __init__(self) -> None:
        self.missing = False  # the version is not in the answer
        self.seen = False  # the version had a start before this poll
        self.requests: float | None = None
        self.events: dict[str, float] = {}
        self.buckets: tuple[tuple[float, float], ...] | None = None
        self.cost: float | None = None
        self.gauges: dict[str, float] = {}
        self.problems: dict[str, str] = {}  # quantity -> why this interval is unusable for it ("start" = first)

    def why(self, quantity: str) -> str | None:
        return self.problems.get(quantity)


def _diff_scalar(key: str, value: Any, prev: dict[str, Any], out_problems: dict[str, str],
                 problem: str | None) -> float | None:
    """Difference one cumulative counter against its start; update the start (the re-basing rules)."""
    if problem:
        prev.pop(key, None)
        out_problems[key] = problem
        return None
    if value is None:
        if key in prev:
            out_problems[key] = "missing"
            prev.pop(key, None)
        else:
            out_problems[key] = "absent"
        return None
    if not _ok_number(value):
        prev.pop(key, None)
        out_problems[key] = f"not a finite count ({_short(value)})"
        return None
    if key not in prev:
        prev[key] = value
        out_problems[key] = "start"
        return None
    before: float = prev[key]  # a start is only ever stored after _ok_number
    prev[key] = value
    if value < before:
        out_problems[key] = f"decreased from {_fmt(before)} to {_fmt(value)} (reset or glitch)"
        return None
    return value - before


def _diff_buckets(value: tuple[tuple[float, float], ...], prev: dict[str, Any], out: _Deltas,
                  problem: str | None) -> None:
    key = "buckets"
    if problem:
        prev.pop(key, None)
        out.problems[key] = problem
        return
    if not value:
        if key in prev:
            prev.pop(key, None)
            out.problems[key] = "missing"
        else:
            out.problems[key] = "absent"
        return
    # one pass: bounds are numbers increasing from > 0 to +Inf, counts finite, >= 0 and non-decreasing
    valid = True
    last_b, last_c = 0.0, 0.0
    for b, c in value:
        if not (_is_number(b) and b > last_b and _ok_number(c) and c >= last_c):
            valid = False
            break
        last_b, last_c = b, c
    if valid and last_b != math.inf:
        valid = False
    if not valid:
        prev.pop(key, None)
        out.problems[key] = "histogram buckets are not increasing counts ending at +Inf"
        return
    before = prev.get(key)
    prev[key] = value
    if before is None:
        out.problems[key] = "start"
        return
    if len(before) != len(value) or any(b != b0 for (b, _), (b0, _) in zip(value, before)):
        out.problems[key] = "histogram bucket bounds changed"
        return
    deltas = []
    for (b, c), (_, c0) in zip(value, before):
        if c < c0:
            out.problems[key] = "histogram counts decreased (reset or glitch)"
            return
        deltas.append((b, c - c0))
    out.buckets = tuple(deltas)


# --------------------------------------------------------------------------- the judge


class _SrmState(TypedDict):
    """The sample-ratio test's sums over the intervals with an unchanged percent, and the hold (if any)."""

    observed: float
    expected: float
    variance: float
    intervals: int
    held: str | None


class Judge:
    """Judges one canary poll by poll; export_state() and state= carry it over a restart."""

    def __init__(self, config: AnalysisConfig, prior: Mapping[str, Any] | None = None,
                 state: Mapping[str, Any] | None = None, *, keep_trace: bool = True):
        self.config = config
        self.prior = dict(prior or {})
        self.keep_trace = keep_trace
        self._trace: list[dict[str, Any]] = []
        self._alpha = {spec.name: config.metric_alpha(spec) for spec in config.metrics}
        self._rolls = {spec.name: spec.rolls_back for spec in config.metrics}
        self._event_names = tuple(dict.fromkeys(spec.events for spec in config.metrics
                                                if spec.type == "rate" and spec.events))
        self._need_buckets = any(spec.type == "latency" for spec in config.metrics)
        self._need_cost = any(spec.type == "cost" for spec in config.metrics)
        self._priors = {spec.name: self._prior_rate_of(spec) for spec in config.metrics}
        # results that cannot have changed (no new interval): (metric, segment, verdict, reason, m, errors)
        self._cache: dict[tuple[str, str, str, str, int, int], MetricResult] = {}
        self._start: dict[str, dict[str, dict[str, Any]]] = {"control": {}, "canary": {}}  # role -> segment -> key -> value
        self._tests: dict[str, _Sequential] = {}  # "metric|segment" -> test
        self._gauge_streak: dict[str, int] = {}
        self._fail_streak: dict[str, int] = {}  # per metric, whole or any segment: what `watch --json` shows
        self._errors = 0
        self._first_time: float | None = None
        self._last_time: float | None = None
        self._last_percent: float | None = None
        self._canary_requests = 0.0
        self._segments: tuple[str, ...] | None = config.segments[: config.max_segments] if config.segments else None
        self._srm: _SrmState = {"observed": 0.0, "expected": 0.0, "variance": 0.0, "intervals": 0, "held": None}
        self._versions: tuple[str | None, str] | None = None
        self._polls = 0
        if state:
            self._restore(state)

    # ---- state

    def export_state(self) -> dict[str, Any]:
        """Everything needed to resume this canary's judgement (JSON-able)."""
        starts = {role: {seg: {k: ([[_inf_out(b), c] for b, c in v] if k == "buckets" else v)
                               for k, v in keys.items()} for seg, keys in segs.items()}
                  for role, segs in self._start.items()}
        return {
            "schema": "modelctl/judge-state-v1",
            "starts": starts,
            "tests": {k: t.to_json() for k, t in self._tests.items()},
            "gauge_streak": dict(self._gauge_streak),
            "fail_streak": dict(self._fail_streak),
            "errors": self._errors,
            "first_time": self._first_time,
            "last_time": self._last_time,
            "last_percent": self._last_percent,
            "canary_requests": self._canary_requests,
            "segments": list(self._segments) if self._segments is not None else None,
            "srm": dict(self._srm),
            "versions": list(self._versions) if self._versions else None,
            "polls": self._polls,
        }

    def _restore(self, doc: Mapping[str, Any]) -> None:
        if not isinstance(doc, Mapping) or doc.get("schema") != "modelctl/judge-state-v1":
            raise ValidationError("watch state: the judgement state is not modelctl/judge-state-v1",
                                  hint="delete the state to start the canary's judgement afresh")
        try:
            self._start = {role: {seg: {k: (tuple((_inf_in(b), float(c)) for b, c in v) if k == "buckets" else v)
                                        for k, v in keys.items()} for seg, keys in segs.items()}
                           for role, segs in doc["starts"].items()}
            self._tests = {k: _Sequential.from_json(v) for k, v in doc["tests"].items()}
            self._gauge_streak = dict(doc["gauge_streak"])
            # absent in states saved before it was kept: the streak restarts, nothing else does
            self._fail_streak = {str(k): int(v) for k, v in (doc.get("fail_streak") or {}).items()}
            self._errors = int(doc["errors"])
            self._first_time = doc["first_time"]
            self._last_time = doc["last_time"]
            self._last_percent = doc["last_percent"]
            self._canary_requests = float(doc["canary_requests"])
            self._segments = tuple(doc["segments"]) if doc["segments"] is not None else None
            srm = doc["srm"]
            self._srm = {"observed": srm["observed"], "expected": srm["expected"], "variance": srm["variance"],
                         "intervals": srm["intervals"], "held": srm["held"]}
            self._versions = tuple(doc["versions"]) if doc["versions"] else None
            self._polls = int(doc["polls"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValidationError(f"watch state: the judgement state is damaged ({_short(str(exc))})",
                                  hint="delete the state to start the canary's judgement afresh") from None

    # ---- observing

    def observe(self, poll: Poll) -> Decision:
        """Fold one poll into the judgement and decide."""
        self._polls += 1
        versions = (poll.control, poll.canary)
        if self._versions is not None and versions != self._versions:
            # another control or canary: its counters are another series; start them afresh
            if versions[0] != self._versions[0]:
                self._start["control"] = {}
            if versions[1] != self._versions[1]:
                self._start["canary"] = {}
        self._versions = versions
        if poll.error:
            return self._error_poll(poll, _one_line(f"poll failed: {poll.error}"))
        canary = poll.readings.get(poll.canary)
        control = poll.readings.get(poll.control) if poll.control else None
        if canary is not None and self._first_time is None:
            self._first_time = poll.time
        if self._segments is None and canary is not None and canary.segments:
            self._segments = tuple(sorted(s for s in canary.segments if s))[: self.config.max_segments]
        segs = ("",) + (self._segments or ())
        d_can = {seg: self._deltas("canary", canary, seg, poll, poll.canary) for seg in segs}
        d_con = {seg: self._deltas("control", control, seg, poll, poll.control) for seg in segs}
        self._update_srm(poll, d_can[""], d_con[""], d_can[""].missing and not d_can[""].seen)
        n1 = d_can[""].requests
        if n1 is not None:
            self._canary_requests += n1
        results = []
        for spec in self.config.metrics:
            for seg in segs:
                if seg and spec.type == "gauge":
                    continue
                results.append(self._judge(spec, seg, d_can[seg], d_con[seg], poll))
        self._last_time = poll.time
        self._last_percent = poll.percent
        return self._decide(tuple(results), poll)

    def _error_poll(self, poll: Poll, reason: str) -> Decision:
        results = []
        for spec in self.config.metrics:
            test = self._tests.get(f"{spec.name}|")
            if test is not None:
                test.errors += 1
                test.pe = None
            results.append(self._result(spec, "", ERROR, test, reason=reason))
        return self._decide(tuple(results), poll)

    def _deltas(self, role: str, reading: Reading | None, seg: str, poll: Poll, version: str | None) -> _Deltas:
        out = _Deltas()
        prev = self._start[role].setdefault(seg, {})
        out.seen = bool(prev)
        if reading is None:
            out.missing = True
            why = "not in the answer" if version else "no control version"
            for key in list(prev):
                out.problems[key] = why
            out.problems["*"] = why
            return out  # keep the start: a missing answer is not a reset, the next good one differences from it
        stale = None
        if reading.timestamp is not None:
            if not _is_number(reading.timestamp) or not math.isfinite(reading.timestamp):
                stale = "timestamp is not a time"
            elif poll.time - reading.timestamp > self.config.stale_seconds:
                stale = f"data is stale ({poll.time - reading.timestamp:.0f}s old)"
        counters = reading.segments.get(seg)
        if counters is None:
            counters = Counters()
        every = stale or reading.problems.get("*")
        out.requests = _diff_scalar("requests", counters.requests, prev, out.problems,
                                    every or reading.problems.get("requests"))
        for name in self._event_names:
            got = _diff_scalar("events." + name, counters.events.get(name), prev, out.problems,
                               every or reading.problems.get(name))
            if got is not None:
                out.events[name] = got
        if self._need_buckets:
            _diff_buckets(counters.latency_buckets, prev, out,
                          every or reading.problems.get("latency_buckets") or reading.problems.get("latency"))
        if self._need_cost:
            out.cost = _diff_scalar("cost_total", counters.cost_total, prev, out.problems,
                                    every or reading.problems.get("cost_total") or reading.problems.get("cost"))
        for name, value in counters.gauges.items():
            problem = every or reading.problems.get(name)
            if problem:
                out.problems["gauge." + name] = problem
            elif _ok_number(value):
                out.gauges[name] = float(value)
            else:
                out.problems["gauge." + name] = f"not a finite value ({_short(value)})"
        if every:
            out.problems["*"] = every
        return out

    def _update_srm(self, poll: Poll, can: _Deltas, con: _Deltas, canary_missing: bool) -> None:
        srm = self._srm
        if poll.percent is None or self._last_percent != poll.percent:
            return
        n0 = con.requests
        if n0 is None:
            return
        if canary_missing:
            n1 = 0.0  # the provider has no series for a version that served nothing
        elif can.requests is None:
            return
        else:
            n1 = can.requests
        total = n0 + n1
        pi = poll.percent / 100.0
        if total <= 0 or not 0 < pi < 1:
            return
        srm["observed"] += n1
        srm["expected"] += total * pi
        srm["variance"] += total * pi * (1 - pi)
        srm["intervals"] += 1
        dev = abs(srm["observed"] - srm["expected"]) - self.config.srm_tolerance * srm["expected"]
        # judged again at every poll on the whole canary's counts: a skew of a few intervals (pods
        # scraped at different moments, a router warming up) holds the verdict only until the
        # totals agree with the configured percent again; a real mismatch never stops holding
        srm["held"] = None
        if dev > 0 and dev >= srm_boundary(srm["variance"], self.config.srm_alpha):
            share = srm["observed"] / (srm["expected"] / pi) if srm["expected"] else 0.0
            if srm["observed"] == 0:
                why = (f"the canary got no traffic: 0 requests where {_fmt(round(srm['expected']))} were expected "
                       f"at {_fmt(poll.percent)}% over {srm['intervals']} intervals")
            else:
                why = (f"the canary got {_fmt(round(srm['observed']))} requests where "
                       f"{_fmt(round(srm['expected']))} were expected ({share * 100:.3g}% of traffic, "
                       f"configured {_fmt(poll.percent)}%) over {srm['intervals']} intervals")
            srm["held"] = why + "; the comparison is invalid: check the router"

    # ---- one metric

    def _test(self, spec: MetricSpec, seg: str) -> _Sequential:
        key = f"{spec.name}|{seg}"
        test = self._tests.get(key)
        if test is None:
            test = self._tests[key] = _Sequential()
        return test

    def _alpha_of(self, spec: MetricSpec, seg: str) -> float:
        alpha = self._alpha[spec.name]
        if not self._segments:
            return alpha
        if not seg:
            return alpha * (1 - self.config.segment_share)
        return alpha * self.config.segment_share / len(self._segments)

    def _judge(self, spec: MetricSpec, seg: str, can: _Deltas, con: _Deltas, poll: Poll) -> MetricResult:
        if spec.type == "gauge":
            return self._judge_gauge(spec, can, con)
        test = self._test(spec, seg)
        try:
            if spec.type == "rate":
                got = self._rate_interval(spec, test, can, con)
            elif spec.type == "latency":
                got = self._latency_interval(spec, test, can, con)
            else:
                got = self._cost_interval(spec, test, can, con)
        except _Bad as exc:
            test.errors += 1
            test.pe = None
            return self._result(spec, seg, ERROR, test, reason=str(exc))
        if got is not None:  # a reason the interval could not start or carries nothing
            verdict = INSUFFICIENT if test.m == 0 else self._verdict(spec, seg, test)
            return self._result(spec, seg, verdict, test, reason=got)
        if self.keep_trace:
            self._trace.append({"time": poll.time, "metric": spec.name, "segment": seg, **test.last,
                                "statistic": test.W, "cumulative": test.S,
                                "bound": self._bound(spec, seg, test), "pass_bound": math.log(self.config.beta)})
        return self._result(spec, seg, self._verdict(spec, seg, test), test)

    def _needs(self, can: _Deltas, con: _Deltas, keys: Sequence[str]) -> str | None:
        """Why the interval cannot be used: raises _Bad on an error poll, returns a reason when it just started."""
        reasons = []
        for who, d in (("canary", can), ("control", con)):
            if d.missing:
                if d.seen:
                    raise _Bad(f"{who}: {d.why('*')}")
                reasons.append(f"{who}: no data yet ({d.why('*')})")
                continue
            for key in keys:
                why = d.why(key) or (None if key != "requests" else d.why("*"))
                if why is None:
                    continue
                if why in ("start", "absent"):
                    reasons.append(f"{who} {key.replace('events.', '')}: {'first reading' if why == 'start' else 'not reported'}")
                else:
                    raise _Bad(f"{who} {key.replace('events.', '')}: {why}")
        return "; ".join(reasons) if reasons else None

    def _p_control(self, spec: MetricSpec, test: _Sequential) -> tuple[float | None, str]:
        """The control's rate so far, with the serving version's registered rate as a prior (None: unknown)."""
        prior = self._prior_rate(spec)
        if prior is not None and self.config.prior_requests > 0:
            w = self.config.prior_requests
            p = (test.x0 + prior * w) / (test.n0 + w)
            return p, ("control" if test.n0 >= w else "prior")
        if test.n0 > 0:
            return (test.x0 + 0.5) / (test.n0 + 1), "control"
        return prior, "prior"

    def _prior_rate(self, spec: MetricSpec) -> float | None:
        return self._priors[spec.name]

    def _prior_rate_of(self, spec: MetricSpec) -> float | None:
        if spec.type == "latency":
            return 1 - spec.quantile if spec.threshold_ms is None else None
        value = self.prior.get(spec.name)
        if _is_number(value) and math.isfinite(value) and 0 <= value <= 1:
            return float(value)
        return None

    def _r1(self, spec: MetricSpec, test: _Sequential, p: float | None = None) -> float:
        if p is None:
            p, _ = self._p_control(spec, test)
        r1 = spec.max_ratio
        if spec.min_delta > 0 and p is not None:
            r1 = max(r1, 1 + spec.min_delta / p) if p > 0 else _MAX_R1
        return min(r1, _MAX_R1)

    def _rate_interval(self, spec: MetricSpec, test: _Sequential, can: _Deltas, con: _Deltas) -> str | None:
        events = _events_of(spec)
        key = "events." + events
        prior = self._prior_rate(spec)
        if con.missing and not con.seen and prior is not None and not can.missing:
            return self._prior_step(spec, test, can, prior)
        waiting = self._needs(can, con, ("requests", key))
        if waiting:
            return waiting
        n1, n0 = _counted(can.requests), _counted(con.requests)
        x1, x0 = can.events[events], con.events[events]
        if x1 > n1 or x0 > n0:
            raise _Bad(f"{'canary' if x1 > n1 else 'control'}: {events} exceed requests in the interval")
        return self._binomial_step(spec, test, n1, n0, x1, x0)

    def _prior_step(self, spec: MetricSpec, test: _Sequential, can: _Deltas, p0: float) -> str | None:
        """No control at all: the canary against the serving version's registered rate (one-sample test)."""
        events = _events_of(spec)
        waiting = self._needs(can, can, ("requests", "events." + events))
        if waiting:
            return waiting.replace("control ", "canary ")
        n1, x1 = _counted(can.requests), can.events[events]
        if x1 > n1:
            raise _Bad(f"canary: {events} exceed requests in the interval")
        p0 = min(max(p0, 0.5 / max(n1 + test.n1, 1.0)), 0.5)  # a zero baseline counts as half an event
        r1 = self._r1(spec, test)
        p1 = min(r1 * p0, (1 + p0) / 2)
        test.n1 += n1
        test.x1 += x1
        test.last = {"canary_rate": x1 / n1 if n1 else None, "control_rate": p0, "canary_n": n1, "control_n": 0.0}
        inc = x1 * math.log(p1 / p0) + (n1 - x1) * math.log((1 - p1) / (1 - p0))
        test.add(inc, n1 * bernoulli_kl(p0, p1), 1.0)
        return None

    def _binomial_step(self, spec: MetricSpec, test: _Sequential, n1: float, n0: float, x1: float,
                       x0: float) -> str | None:
        r1 = self._r1(spec, test)
        # the events this interval should hold at the rates so far: a version's burst (or dip) moves k,
        # so the dispersion must not follow the realised k
        rate0 = test.x0 / test.n0 if test.n0 > 0 else None
        rhat = max(test.dX, 0.5) / test.dE if test.dE > 0 else 1.0
        test.n1 += n1
        test.n0 += n0
        test.x1 += x1
        test.x0 += x0
        test.last = {"canary_rate": x1 / n1 if n1 else None, "control_rate": x0 / n0 if n0 else None,
                     "canary_n": n1, "control_n": n0}
        if n1 <= 0 or n0 <= 0:
            test.m += 1
            test.pe = None
            return None  # no requests on one side: nothing to compare in this interval
        k = x1 + x0
        s = n1 / (n1 + n0)
        expected = k if rate0 is None else rate0 * (n0 + rhat * n1)
        phi = test.phi(self.config, expected, s)  # from the intervals before this one
        test.last["phi"] = phi
        theta = r1 * n1 / (r1 * n1 + n0)
        inc = binomial_llr(x1, x0, s, theta)
        info = k * bernoulli_kl(s, theta)
        test.pearson(x1, k, s, expected)
        # the cap grows with the interval's own information (what an r1 regression is expected to add
        # in it): at 1 request/s it is about max_step, at 50 requests/s a real regression is not held back
        test.add(inc, info, phi, self.config.max_step + info / phi)
        return None

    def _latency_interval(self, spec: MetricSpec, test: _Sequential, can: _Deltas, con: _Deltas) -> str | None:
        waiting = self._needs(can, con, ("buckets",))
        if waiting:
            return waiting
        cb, kb = _counted(can.buckets), _counted(con.buckets)
        bounds = tuple(b for b, _ in kb)
        tau: float | None
        if spec.threshold_ms is not None:
            tau = spec.threshold_ms
        else:
            if test.hist_bounds != bounds:
                test.hist = {b: 0.0 for b in bounds}
                test.hist_bounds = bounds
            for b, c in kb:
                test.hist[b] += c
            tau = histogram_quantile(spec.quantile, tuple(test.hist.items()))
        n1, n0 = cb[-1][1], kb[-1][1]
        if tau is None or n0 <= 0:
            test.m += 1
            test.n1 += n1
            return None
        x1 = count_above(tau, cb) if n1 > 0 else 0.0
        x0 = count_above(tau, kb)
        out = self._binomial_step(spec, test, n1, n0, x1, x0)
        test.last["threshold_ms"] = tau
        return out

    def _cost_interval(self, spec: MetricSpec, test: _Sequential, can: _Deltas, con: _Deltas) -> str | None:
        waiting = self._needs(can, con, ("requests", "cost_total"))
        if waiting:
            return waiting
        n1, n0 = _counted(can.requests), _counted(con.requests)
        c1, c0 = _counted(can.cost), _counted(con.cost)
        test.last = {"canary_rate": c1 / n1 if n1 else None, "control_rate": c0 / n0 if n0 else None,
                     "canary_n": n1, "control_n": n0}
        test.n1 += n1
        test.n0 += n0
        test.x1 += c1
        test.x0 += c0
        if n1 <= 0 or n0 <= 0 or c0 <= 0 or c1 <= 0:
            test.m += 1
            return None
        y = max(-_LOG_COST_CAP, min(_LOG_COST_CAP, math.log((c1 / n1) / (c0 / n0))))
        w = 1.0 / (1.0 / n1 + 1.0 / n0)
        # per-request variance of the log cost, shrunk towards 1 (a coefficient of variation of 1)
        wd = 4.0  # the prior variance weighs as four intervals
        if test.sumw > 0 and test.m_disp >= 2:
            mean = test.sumy / test.sumw
            est = max(0.0, test.sumy2 - test.sumw * mean * mean) / (test.m_disp - 1)
        else:
            est = 0.0
        var = (wd * 1.0 + est * max(0, test.m_disp - 1)) / (wd + max(0, test.m_disp - 1)) if wd + test.m_disp > 1 else 1.0
        var = max(var, 1e-6)
        mu1 = math.log(spec.max_ratio)
        inc = w * mu1 / var * (y - mu1 / 2)
        info = w * mu1 * mu1 / (2 * var)
        test.sumy += w * y
        test.sumy2 += w * y * y
        test.sumw += w
        test.m_disp += 1
        test.add(inc, info, 1.0)
        return None

    def _judge_gauge(self, spec: MetricSpec, can: _Deltas, con: _Deltas) -> MetricResult:
        name = spec.gauge or spec.name
        n = can.requests
        result = functools.partial(MetricResult, metric=spec.name, type=spec.type, action=spec.action, canary_n=n,
                                   statistic="ratio", bound=spec.max_ratio, alpha=None)
        for who, d in (("canary", can), ("control", con)):
            why = d.why("gauge." + name)
            if why:
                self._gauge_streak[spec.name] = self._gauge_streak.get(spec.name, 0)
                return result(verdict=ERROR, reason=f"{who} {name}: {why}")
        value, base = can.gauges.get(name), con.gauges.get(name)
        if value is None or base is None:
            self._gauge_streak[spec.name] = 0
            return result(verdict=INSUFFICIENT, reason=f"{name}: not reported by both versions")
        min_req = spec.min_requests if spec.min_requests is not None else self.config.min_requests
        if self._canary_requests < min_req:
            self._gauge_streak[spec.name] = 0
            return result(verdict=INSUFFICIENT, canary_value=value, control_value=base, control_source="control",
                          reason=f"canary has {_fmt(self._canary_requests)} of the {min_req} requests needed")
        ratio = value / base if base > 0 else (1.0 if value == 0 else math.inf)
        verdict = FAIL if ratio > spec.max_ratio else PASS
        self._gauge_streak[spec.name] = self._gauge_streak.get(spec.name, 0) + 1 if verdict == FAIL else 0
        return result(verdict=verdict, canary_value=value, control_value=base, control_source="control",
                      statistic_value=ratio, reason=f"a gauge: alerts, never rolls back; n={_fmt(n)}")

    def _bound(self, spec: MetricSpec, seg: str, test: _Sequential) -> float:
        return math.log(1 / self._alpha_of(spec, seg)) + self.config.cusum_growth * math.log1p(test.Ir / _INFO_UNIT)

    def _verdict(self, spec: MetricSpec, seg: str, test: _Sequential) -> str:
        if test.failed or test.W >= self._bound(spec, seg, test):
            test.failed = True  # a crossed boundary stays crossed: the alpha is spent
            return FAIL
        if test.S <= math.log(self.config.beta):
            return PASS
        return INCONCLUSIVE

    def _result(self, spec: MetricSpec, seg: str, verdict: str, test: _Sequential | None,
                reason: str = "") -> MetricResult:
        if test is None:
            return MetricResult(metric=spec.name, verdict=verdict, type=spec.type, action=spec.action,
                                segment=seg, reason=reason, alpha=self._alpha_of(spec, seg))
        key = (spec.name, seg, verdict, reason, test.m, test.errors)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = result = self._build(spec, seg, verdict, test, reason)
        return result

    def _build(self, spec: MetricSpec, seg: str, verdict: str, test: _Sequential, reason: str) -> MetricResult:
        if spec.type == "cost":
            canary = test.x1 / test.n1 if test.n1 else None
            control = test.x0 / test.n0 if test.n0 else None
            source = "control"
            r1 = spec.max_ratio
            indiff = math.sqrt(spec.max_ratio)
            phi = None
        else:
            canary = test.x1 / test.n1 if test.n1 else None
            control, source = self._p_control(spec, test)
            r1 = self._r1(spec, test, control)
            indiff = indifference_ratio(r1)
            phi = test.last.get("phi")
        return MetricResult(
            metric=spec.name, verdict=verdict, type=spec.type, action=spec.action, segment=seg,
            canary_value=canary, control_value=control, control_source=source, canary_n=test.n1,
            control_n=test.n0, canary_events=None if spec.type == "cost" else test.x1,
            control_events=None if spec.type == "cost" else test.x0, intervals=test.m,
            error_intervals=test.errors, statistic="cusum_llr", statistic_value=test.W, cumulative=test.S,
            bound=self._bound(spec, seg, test), pass_bound=math.log(self.config.beta),
            alpha=self._alpha_of(spec, seg), ratio=r1, indifference=indiff, dispersion=phi,
            threshold_ms=test.last.get("threshold_ms") if spec.type == "latency" else None, reason=reason)

    # ---- deciding

    def _decide(self, results: tuple[MetricResult, ...], poll: Poll) -> Decision:
        whole = [r for r in results if not r.segment]
        guards = [r for r in whole if self._rolls[r.metric]] or whole
        error_poll = any(r.verdict == ERROR for r in guards) or not results
        self._errors = self._errors + 1 if error_poll else 0
        failing_now = {r.metric for r in results if r.verdict == FAIL}
        self._fail_streak = {name: self._fail_streak.get(name, 0) + 1 if name in failing_now else 0
                             for name in dict.fromkeys(r.metric for r in results)}
        decision = functools.partial(Decision, results=results, error_polls=self._errors, time=poll.time,
                                     srm=dict(self._srm), streaks=dict(self._fail_streak))
        held = self._srm["held"]
        if held:
            return decision(action=SRM_HOLD, deciding=(), reason=held)
        failing = [r for r in results if r.verdict == FAIL]
        rollbacks = [r for r in failing if self._rolls[r.metric]]
        if rollbacks:
            names = ", ".join(r.metric + (f" in segment {r.segment}" if r.segment else "") for r in rollbacks)
            return decision(action=ROLLBACK, deciding=tuple(rollbacks), reason=f"{names} crossed the rollback boundary")
        if self._errors >= self.config.consecutive_errors:
            errs = [r for r in guards if r.verdict == ERROR] or list(results)
            return decision(action=self.config.on_errors, deciding=tuple(errs), fail_safe=True,
                            reason=f"no usable data for {self._errors} polls in a row "
                                   f"(fail-safe: {self.config.on_errors})")
        alerts = [r for r in failing if r.type != "gauge" or
                  self._gauge_streak.get(r.metric, 0) >= self.config.consecutive_failures]
        if alerts:
            names = ", ".join(r.metric + (f" in segment {r.segment}" if r.segment else "") for r in alerts)
            return decision(action=ALERT, deciding=tuple(alerts), reason=f"{names} failed (alert only)")
        rollback_whole = [r for r in whole if self._rolls[r.metric]]
        if rollback_whole and all(r.verdict == PASS for r in rollback_whole) and \
                not any(r.verdict in (ERROR, FAIL) for r in results):
            ready, why = self.ready_to_advance(poll.time)
            if ready:
                return decision(action=ADVANCE_OK, deciding=tuple(rollback_whole),
                                reason="every rollback metric passes")
            return decision(action=CONTINUE, deciding=(), reason=f"passing, but {why}")
        return decision(action=CONTINUE, deciding=(), reason="error poll" if error_poll else "no decision yet")

    def ready_to_advance(self, now: float) -> tuple[bool, str]:
        """Whether the canary has run long enough and seen enough to step or promote, and why not."""
        if self._first_time is None:
            return False, "the canary has not been seen yet"
        ran = now - self._first_time
        if ran < self.config.min_duration_seconds:
            return False, (f"the canary has run {ran:.0f}s of the {self.config.min_duration_seconds:.0f}s "
                           f"minimum (min_duration_seconds)")
        if self._canary_requests < self.config.min_requests:
            return False, (f"the canary has served {_fmt(self._canary_requests)} of the "
                           f"{self.config.min_requests} requests needed (min_requests)")
        for spec in self.config.metrics:
            if spec.type != "rate" or not spec.rolls_back:
                continue
            test = self._tests.get(f"{spec.name}|")
            events = (test.x1 + test.x0) if test else 0.0
            if events < self.config.min_events:
                return False, (f"{spec.name} has {_fmt(events)} of the {self.config.min_events} events "
                               f"needed (min_events)")
        return True, "ready"

    # ---- reporting

    def trace(self) -> list[dict[str, Any]]:
        """Per-interval series for reports: time, metric, segment, rates, statistic, boundaries."""
        return list(self._trace)

    def header_lines(self, rps_canary: float | None = None, max_duration: float | None = None) -> list[str]:
        """The effective bar per metric, the time to detect its regression at this traffic, power warnings."""
        lines = []
        beta = self.config.beta
        for spec in self.config.metrics:
            if spec.type == "gauge":
                lines.append(f"{spec.name}: a gauge: alerts above {_fmt(spec.max_ratio)}x the control, "
                             f"never rolls back")
                continue
            test = self._tests.get(f"{spec.name}|") or _Sequential()
            alpha = self._alpha_of(spec, "")
            what = "rolls back" if spec.rolls_back else "alerts"
            if spec.type == "cost":
                lines.append(f"{spec.name}: cost per request above {_fmt(math.sqrt(spec.max_ratio))}x the control "
                             f"is failed ({what}), below it passed; alpha {_fmt(alpha)}")
                continue
            p, source = self._p_control(spec, test)
            r1 = self._r1(spec, test)
            indiff = indifference_ratio(r1)
            if spec.type == "latency":
                subject = (f"the share of requests slower than {_fmt(spec.threshold_ms)} ms" if spec.threshold_ms
                           else f"the share of requests slower than the control's p{_fmt(spec.quantile * 100)}")
            else:
                subject = f"{spec.name} (control {_fmt(p)}, {source})"
            lines.append(f"{spec.name}: regressions of {subject} above {indiff:.3g}x the control are failed "
                         f"({what}), below it passed; alpha {_fmt(alpha)}")
            if not p:
                lines.append(f"{spec.name}: no control rate yet (and no registered baseline); "
                             f"the time to detect is unknown")
                continue
            # expected requests to reach the boundary at a regression of r1 (Poisson limit, large control)
            drift = p * (r1 * math.log(r1) - (r1 - 1))
            need = math.log(1 / alpha) / drift if drift > 0 else math.inf
            text = f"{spec.name}: a {r1:.3g}x regression takes about {_fmt(round(need))} canary requests to detect"
            if rps_canary and rps_canary > 0:
                seconds = need / rps_canary
                text += f" ({_duration(seconds)} at {rps_canary:.3g} canary requests/s)"
                if max_duration and seconds > max_duration:
                    text += (f"; WARNING: --max-duration {_duration(max_duration)} is too short to detect it: "
                             f"raise the canary percent or the duration")
            lines.append(text)
        lines.append(f"alpha {_fmt(self.config.alpha)} bounds false rollbacks for the whole canary "
                     f"(split: {', '.join(f'{s.name} {_fmt(self._alpha[s.name])}' for s in self.config.metrics if s.rolls_back)}"
                     f"); a metric passes when its evidence reaches ln(beta) = {math.log(beta):.3g}")
        return lines


def _events_of(spec: MetricSpec) -> str:
    """The event counter of a rate metric (_metric_spec always names one)."""
    if spec.events is None:
        raise AssertionError(f"rate metric {spec.name} has no event counter")
    return spec.events


def _counted(value: _T | None) -> _T:
    """A quantity _needs found counted in this interval (a None there is a bug, not a data problem)."""
    if value is None:
        raise AssertionError("a quantity _needs accepted was not counted")
    return value


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _is_number(value: Any) -> TypeGuard[float]:
    if type(value) is float or type(value) is int:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
