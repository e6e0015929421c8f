"""The eval gate: compare a candidate eval report with a baseline report under `gate:` rules.

Pure functions only: reports and config come in as plain dicts, a GateResult goes out.

Rules (`gate.metrics` in modelctl.yaml), one threshold per metric:

- `better: higher, max_drop: d`   the candidate may be at most `d` below the baseline (absolute);
- `better: lower,  max_rise: d`   the candidate may be at most `d` above the baseline (absolute);
- `better: lower,  max_ratio: r`  the candidate may be at most `r` times the baseline (r >= 1);
- `better: higher, max_ratio: r`  the candidate may be worse by at most a factor `r`: at least
  baseline / r when r >= 1 (1.25: down to 80%), at least r * baseline when r < 1 (0.8: the same).

`better` may be left out with `max_drop` (higher) or `max_rise` (lower). `required: false` makes
a metric optional: when either report lacks it, its row passes with a reason instead of failing.

How a metric is judged:

- Proportions (value in [0, 1]) with `n` in both reports get a one-sided Farrington-Manning score
  test of non-inferiority. H0: the candidate is no worse than the allowed limit (for example
  p_cand >= p_base - max_drop); H1: it is worse than that. The statistic is the observed distance
  to the limit divided by its standard error computed at the restricted maximum-likelihood
  estimate under H0 (the point on the limit that best explains both samples). The metric fails
  only when H0 is rejected, i.e. the candidate is *significantly* worse than the limit; a point
  estimate beyond the limit that the sample cannot distinguish from noise passes, with a reason
  saying so. Why this test: it is the standard test for non-inferiority with a margin (the
  pooled two-proportion z-test assumes equal proportions, which is wrong under a non-zero margin);
  unlike the plain Wald test its variance does not collapse to zero when a proportion is 0 or 1
  (hallucination rates near 0 are common); and it handles the ratio form (p_cand <= r * p_base)
  the same way, with only the standard library.
- `alpha` is the budget for the whole gate: the chance that a candidate which meets every limit
  fails anyway is at most alpha. It is split evenly (Bonferroni) over the metrics that get a test, so adding
  metrics does not make false failures more likely. Each row records the alpha it was judged at.
- Everything else (no `n`, values outside [0, 1]) uses the point rule: the candidate's value must
  be on the right side of the limit.

Missing data: a metric the config requires that is missing (or not a finite number) in the
candidate report fails; missing in the baseline report fails too, because an unverifiable rule is
not a pass (re-run the baseline's eval, or pick another `--baseline`; `--force --reason` exists
for the rest). Reports on different datasets (name or version) are never compared: UsageError.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .config import GATE_DEFAULT_BETTER, GATE_RULE_KINDS, gate_rules, raise_first
from .errors import UsageError

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from typing_extensions import TypeIs  # typing.TypeIs is 3.13+

    from .documents import GateDocument, GateMetric, ReportRef

Better = Literal["higher", "lower"]
Verdict = Literal["pass", "fail"]

SCHEMA = "modelctl/v1"
DEFAULT_ALPHA = 0.05
RULE_KINDS = GATE_RULE_KINDS
_DEFAULT_BETTER = GATE_DEFAULT_BETTER
TEST_NAME = "farrington-manning"


@dataclass(frozen=True)
class Rule:
    """One metric's threshold from `gate.metrics`."""

    metric: str
    better: Better
    kind: str  # one of RULE_KINDS
    amount: float  # the configured number (margin or ratio)
    required: bool = True  # False: a metric missing from a report is not judged

    @property
    def factor(self) -> float:
        """For max_ratio: the multiplier on the baseline that gives the limit."""
        if self.better == "lower" or self.amount < 1:
            return self.amount
        return 1.0 / self.amount

    def describe(self) -> str:
        """The rule in words, e.g. 'drop <= 0.01' or '<= 1.2x baseline'."""
        if self.kind == "max_drop":
            return f"drop <= {fmt_number(self.amount)}"
        if self.kind == "max_rise":
            return f"rise <= {fmt_number(self.amount)}"
        if self.better == "lower":
            return f"<= {fmt_number(self.amount)}x baseline"
        if self.amount < 1:
            return f">= {fmt_number(self.amount)}x baseline"
        return f">= baseline / {fmt_number(self.amount)}"

    def limit(self, baseline: float) -> float:
        """The worst candidate value this rule allows against `baseline`."""
        if self.kind == "max_drop":
            return baseline - self.amount
        if self.kind == "max_rise":
            return baseline + self.amount
        return baseline * self.factor


@dataclass(frozen=True)
class GateRow:
    """The verdict on one metric."""

    metric: str
    rule: str  # Rule.describe()
    better: Better
    baseline: float | None
    candidate: float | None
    n_baseline: int | None
    n_candidate: int | None
    change: float | None  # candidate - baseline
    change_relative: float | None  # (candidate - baseline) / baseline; None when baseline is 0
    limit: float | None  # the worst allowed candidate value
    test: str | None  # TEST_NAME, "point", or None when nothing could be compared
    p_value: float | None
    alpha: float | None  # the alpha this row was judged at (None for the point rule)
    verdict: Verdict
    reason: str

    @property
    def passed(self) -> bool:
        """True when the verdict is pass."""
        return self.verdict == "pass"

    def to_dict(self) -> GateMetric:
        """The row in `gate --json` (the fields in order)."""
        return {"metric": self.metric, "rule": self.rule, "better": self.better, "baseline": self.baseline,
                "candidate": self.candidate, "n_baseline": self.n_baseline, "n_candidate": self.n_candidate,
                "change": self.change, "change_relative": self.change_relative, "limit": self.limit,
                "test": self.test, "p_value": self.p_value, "alpha": self.alpha, "verdict": self.verdict,
                "reason": self.reason}


@dataclass(frozen=True)
class GateResult:
    """The gate's decision: passed only if every required metric passed."""

    passed: bool
    rows: list[GateRow]
    dataset: dict[str, str]  # {"name", "version"}: the same for both reports by construction
    candidate: ReportRef  # {"name", "version"} from the candidate report
    baseline: ReportRef
    alpha: float
    failures: list[str] = field(default_factory=list)  # names of failed metrics
    note: str | None = None  # why nothing was compared (a first version), shown with the verdict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        """The result back from its `to_dict` document (the pull-request body renders a stored one)."""
        rows = [GateRow(**row) for row in data["metrics"]]
        return cls(passed=data["passed"], rows=rows, dataset=data["dataset"], candidate=data["candidate"],
                   baseline=data["baseline"], alpha=data["alpha"], failures=data["failures"], note=data.get("note"))

    def to_dict(self) -> GateDocument:
        """The JSON document for `gate --json` (stable keys)."""
        return {
            "schema": SCHEMA,
            "passed": self.passed,
            "candidate": self.candidate.copy(),
            "baseline": self.baseline.copy(),
            "dataset": dict(self.dataset),
            "alpha": self.alpha,
            "failures": list(self.failures),
            "note": self.note,
            "metrics": [row.to_dict() for row in self.rows],
        }

    def summary(self) -> str:
        """One line for a commit trailer: 'pass (accuracy 0.942 vs 0.94, ...)'."""
        if self.note is not None and self.baseline.get("version") is None:
            head = "pass" if self.passed else "fail"
            return f"{head} (no baseline: {self.note}; dataset {self.dataset['name']} {self.dataset['version']})"
        parts = []
        for row in self.rows:
            if row.candidate is None or row.baseline is None:
                parts.append(f"{row.metric} {row.verdict}")
            else:
                parts.append(f"{row.metric} {fmt_number(row.candidate)} vs {fmt_number(row.baseline)}"
                             + ("" if row.passed else " FAIL"))
        against = self.baseline.get("version") or "baseline"
        head = "pass" if self.passed else "fail"
        detail = ", ".join(parts) or "no metrics configured"
        return f"{head} vs {against} on {self.dataset['name']} {self.dataset['version']} ({detail})"


# ---------------------------------------------------------------------------------------------
# config and reports


def parse_rules(gate_config: Mapping[str, Any] | None) -> tuple[float, list[Rule]]:
    """The `gate:` section as (alpha, rules in config order); raise ValidationError on what
    config.gate_rules finds (a section from a loaded Config has passed them already)."""
    raise_first(gate_rules(gate_config))
    gate_config = gate_config or {}
    rules = []
    for name, spec in (gate_config.get("metrics") or {}).items():
        kind = next(k for k in RULE_KINDS if k in spec)
        rules.append(Rule(metric=str(name), better=spec.get("better", _DEFAULT_BETTER.get(kind)), kind=kind,
                          amount=float(spec[kind]), required=spec.get("required", True)))
    return float(gate_config.get("alpha", DEFAULT_ALPHA)), rules


def _dataset(report: Mapping[str, Any], role: str) -> tuple[str, str]:
    ds = report.get("dataset") if isinstance(report, Mapping) else None
    if not isinstance(ds, Mapping) or ds.get("name") in (None, "") or ds.get("version") in (None, ""):
        raise UsageError(
            f"the {role} eval report names no dataset",
            hint="reports need dataset: {name: ..., version: ...}",
        )
    return str(ds["name"]), str(ds["version"])


def _who(report: Mapping[str, Any]) -> str:
    name, version = report.get("name"), report.get("version")
    return " ".join(str(x) for x in (name, version) if x is not None) or "(unnamed report)"


def _metric(report: Mapping[str, Any], name: str) -> tuple[float | None, int | None, str | None]:
    """(value, n, problem) for one metric of a report; problem is None when usable."""
    metrics = report.get("metrics")
    if not isinstance(metrics, Mapping) or name not in metrics:
        return None, None, "missing"
    entry = metrics[name]
    value, n = (entry.get("value"), entry.get("n")) if isinstance(entry, Mapping) else (entry, None)
    if not _is_number(value) or not math.isfinite(value):
        return None, None, f"not a finite number ({value!r})"
    if n is not None:
        if not _is_number(n) or not math.isfinite(n) or n < 1 or n != int(n):
            return float(value), None, f"n must be a positive integer, got {n!r}"
        n = int(n)
    return float(value), n, None


def _is_number(x: object) -> TypeIs[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------------------
# statistics


def normal_cdf(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _restricted_mle(xc: float, nc: int, xb: float, nb: int, a: float, b: float) -> float:
    """The baseline proportion t maximising the joint likelihood under p_cand = a + b * t.

    The log-likelihood is concave in t, so bisection on its derivative finds the maximum (or the
    edge of the feasible interval when the maximum lies there).
    """
    lo, hi = max(0.0, -a / b), min(1.0, (1.0 - a) / b)
    if hi <= lo:
        return lo

    def slope(t: float) -> float:
        pc = a + b * t
        s = 0.0
        # zero counts contribute nothing (0 * log 0 = 0), so skip them rather than divide by 0
        if xc > 0:
            s += b * xc / pc if pc > 0 else math.inf
        if nc - xc > 0:
            s -= b * (nc - xc) / (1 - pc) if pc < 1 else math.inf
        if xb > 0:
            s += xb / t if t > 0 else math.inf
        if nb - xb > 0:
            s -= (nb - xb) / (1 - t) if t < 1 else math.inf
        return s

    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def noninferiority_p_value(
    p_base: float, n_base: int, p_cand: float, n_cand: int, rule: Rule
) -> float:
    """One-sided Farrington-Manning p-value for H0 'the candidate is within the rule's limit'.

    Small p means the candidate is significantly worse than the limit allows.
    """
    # H0 boundary as a line p_cand = a + b * p_base
    if rule.kind == "max_drop":
        a, b = -rule.amount, 1.0
    elif rule.kind == "max_rise":
        a, b = rule.amount, 1.0
    else:
        a, b = 0.0, rule.factor
    distance = p_cand - (a + b * p_base)  # > 0 is above the limit line
    worse = -distance if rule.better == "higher" else distance  # > 0 means beyond the limit
    xc, xb = p_cand * n_cand, p_base * n_base
    t = _restricted_mle(xc, n_cand, xb, n_base, a, b)
    pc = min(1.0, max(0.0, a + b * t))
    var = pc * (1 - pc) / n_cand + b * b * t * (1 - t) / n_base
    if var <= 0 or not math.isfinite(var):
        # both restricted estimates on 0 or 1: the data are deterministic under H0
        return 0.0 if worse > 1e-12 else 1.0
    return 1.0 - normal_cdf(worse / math.sqrt(var))


# ---------------------------------------------------------------------------------------------
# the gate


def evaluate(
    candidate: Mapping[str, Any],
    baseline: Mapping[str, Any],
    gate_config: Mapping[str, Any] | None,
) -> GateResult:
    """Judge the candidate eval report against the baseline report under the `gate:` config."""
    alpha, rules = parse_rules(gate_config)
    cand_ds, base_ds = _dataset(candidate, "candidate"), _dataset(baseline, "baseline")
    if cand_ds != base_ds:
        raise UsageError(
            f"eval reports on different datasets cannot be compared: candidate {_who(candidate)} "
            f"used {cand_ds[0]} version {cand_ds[1]}, baseline {_who(baseline)} used "
            f"{base_ds[0]} version {base_ds[1]}",
            hint=f"re-run the baseline's eval on {cand_ds[0]} version {cand_ds[1]} or pick another --baseline",
        )

    data = []
    for rule in rules:
        cv, cn, cproblem = _metric(candidate, rule.metric)
        bv, bn, bproblem = _metric(baseline, rule.metric)
        tested = (
            cproblem is None and bproblem is None and cn is not None and bn is not None
            and cv is not None and bv is not None  # (no problem: a value)
            and 0 <= cv <= 1 and 0 <= bv <= 1
        )
        data.append((rule, cv, cn, cproblem, bv, bn, bproblem, tested))
    n_tests = sum(1 for *_, tested in data if tested)
    row_alpha = alpha / n_tests if n_tests else alpha

    rows = [_judge(*item, alpha=row_alpha) for item in data]
    failures = [row.metric for row in rows if not row.passed]
    return GateResult(
        passed=not failures,
        rows=rows,
        dataset={"name": cand_ds[0], "version": cand_ds[1]},
        candidate={"name": _str_or_none(candidate.get("name")), "version": _str_or_none(candidate.get("version"))},
        baseline={"name": _str_or_none(baseline.get("name")), "version": _str_or_none(baseline.get("version"))},
        alpha=alpha,
        failures=failures,
    )


def evaluate_alone(
    candidate: Mapping[str, Any],
    gate_config: Mapping[str, Any] | None,
    note: str,
) -> GateResult:
    """The gate with no baseline report (a first version): nothing is compared, but every metric
    the config requires must be in the candidate report, which becomes the next version's baseline."""
    alpha, rules = parse_rules(gate_config)
    cand_ds = _dataset(candidate, "candidate")
    rows = []
    for rule in rules:
        cv, cn, problem = _metric(candidate, rule.metric)
        if problem is not None and (rule.required or problem != "missing"):
            verdict: Verdict = "fail"
            reason = f"candidate report: {rule.metric} is {problem}"
        elif problem is not None:
            verdict, reason = "pass", "optional metric missing; not judged"
        else:
            verdict, reason = "pass", f"no baseline to compare with ({note})"
        rows.append(GateRow(metric=rule.metric, rule=rule.describe(), better=rule.better, baseline=None, candidate=cv,
                            n_baseline=None, n_candidate=cn, change=None, change_relative=None, limit=None, test=None,
                            p_value=None, alpha=None, verdict=verdict, reason=reason))
    failures = [row.metric for row in rows if not row.passed]
    return GateResult(
        passed=not failures,
        rows=rows,
        dataset={"name": cand_ds[0], "version": cand_ds[1]},
        candidate={"name": _str_or_none(candidate.get("name")), "version": _str_or_none(candidate.get("version"))},
        baseline={"name": None, "version": None},
        alpha=alpha,
        failures=failures,
        note=note,
    )


def _str_or_none(x: Any) -> str | None:
    return None if x is None else str(x)


def _judge(
    rule: Rule,
    cv: float | None,
    cn: int | None,
    cproblem: str | None,
    bv: float | None,
    bn: int | None,
    bproblem: str | None,
    tested: bool,
    *,
    alpha: float,
) -> GateRow:
    def row(verdict: Verdict, reason: str, *, change: float | None = None, change_relative: float | None = None,
            limit: float | None = None, test: str | None = None, p_value: float | None = None,
            alpha: float | None = None) -> GateRow:
        return GateRow(
            metric=rule.metric, rule=rule.describe(), better=rule.better,
            baseline=bv, candidate=cv, n_baseline=bn, n_candidate=cn,
            change=change, change_relative=change_relative, limit=limit, test=test, p_value=p_value, alpha=alpha,
            verdict=verdict, reason=reason,
        )

    if not rule.required and "missing" in (cproblem, bproblem):
        side = "candidate" if cproblem == "missing" else "baseline"
        return row("pass", f"optional metric missing from the {side} report; not judged")
    if cproblem is not None and cv is None:
        return row("fail", f"candidate report: {rule.metric} is {cproblem}")
    if bproblem is not None and bv is None:
        return row(
            "fail",
            f"baseline report: {rule.metric} is {bproblem}; re-run the baseline's eval or pick another --baseline",
        )
    if cproblem is not None:
        return row("fail", f"candidate report: {rule.metric}: {cproblem}")
    if bproblem is not None:
        return row("fail", f"baseline report: {rule.metric}: {bproblem}")
    assert cv is not None and bv is not None

    change = cv - bv
    relative = change / bv if bv != 0 else None
    if rule.kind == "max_ratio" and bv < 0:
        return row("fail", f"max_ratio needs a baseline >= 0, got {fmt_number(bv)}",
                   change=change, change_relative=relative)
    limit = rule.limit(bv)
    slack = 1e-9 * max(abs(limit), abs(bv)) + 1e-15  # a value exactly on the limit passes
    within = cv >= limit - slack if rule.better == "higher" else cv <= limit + slack
    cmp_ok, cmp_bad = (">=", "<") if rule.better == "higher" else ("<=", ">")
    point = f"{fmt_number(cv)} {cmp_ok if within else cmp_bad} limit {fmt_number(limit)} ({rule.describe()})"
    if not tested:
        return row("pass" if within else "fail", point, test="point", change=change, change_relative=relative,
                   limit=limit)

    assert cn is not None and bn is not None
    p = noninferiority_p_value(bv, bn, cv, cn, rule)
    stats = f"p={fmt_p(p)}, alpha={fmt_number(alpha)}, n={cn} vs {bn}"
    if p < alpha:
        return row("fail", f"{point}: significantly worse ({stats})", test=TEST_NAME, p_value=p, alpha=alpha,
                   change=change, change_relative=relative, limit=limit)
    if within:
        return row("pass", f"{point} ({stats})", test=TEST_NAME, p_value=p, alpha=alpha,
                   change=change, change_relative=relative, limit=limit)
    return row("pass", f"{point}, but not significantly ({stats})", test=TEST_NAME, p_value=p, alpha=alpha,
               change=change, change_relative=relative, limit=limit)


# ---------------------------------------------------------------------------------------------
# renderers (pure: they return strings)


def fmt_number(x: float | None) -> str:
    """A short, exact-looking number: 0.942, 870, 0.0012, 1.2e-07."""
    if x is None:
        return "-"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def fmt_p(p: float | None) -> str:
    """A p-value with two significant digits, '<0.0001' below that."""
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def fmt_change(row: GateRow) -> str:
    """'-0.002 (-0.21%)', or '-' when nothing was compared."""
    if row.change is None:
        return "-"
    text = ("+" if row.change > 0 else "") + fmt_number(row.change)
    if row.change_relative is not None:
        text += f" ({row.change_relative * 100:+.2f}%)"
    return text


