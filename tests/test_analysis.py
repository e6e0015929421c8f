"""Watch judgement: verdicts, baselines, the sequential test and the poll tracker (no clock, no network)."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelctl.analysis import (
    ADVANCE_OK,
    ALERT,
    CONTINUE,
    ERROR,
    FAIL,
    HOLD,
    INCONCLUSIVE,
    INSUFFICIENT,
    PASS,
    ROLLBACK,
    AnalysisConfig,
    Judge,
    Sample,
    judge_metric,
    judge_poll,
    sprt_llr,
)
from modelctl.errors import ValidationError

REGISTERED = {"error_rate": 0.010, "latency_p95_ms": 890, "cost_per_request": 0.0012, "requests": 12500}
CONFIG = AnalysisConfig.from_config({})


def verdict(metric: str, canary: Sample, active: Sample | None = None, registered=REGISTERED,
            config: AnalysisConfig = CONFIG, now: float | None = None):
    return judge_metric(config.metric(metric), config, canary, active, registered, now)


def healthy(n: float, rate: float = 0.01, **gauges) -> Sample:
    return Sample(requests=n, errors=round(n * rate), **gauges)


# --------------------------------------------------------------------------- config


def test_defaults_fill_every_setting_and_the_three_metrics():
    config = AnalysisConfig.from_config(None)
    assert [m.name for m in config.metrics] == ["error_rate", "latency_p95_ms", "cost_per_request"]
    assert config.metric("error_rate").type == "rate"
    assert config.metric("cost_per_request").action == "alert"
    assert (config.consecutive_failures, config.consecutive_errors, config.on_errors) == (2, 5, "hold")
    assert 0 < config.alpha <= 0.05


def test_configured_metrics_replace_the_set_and_keep_known_defaults():
    config = AnalysisConfig.from_config({"analysis": {"alpha": 0.02, "metrics": {
        "error_rate": {"type": "rate", "max_ratio": 2},
        "hallucination_rate": {"type": "rate", "min_delta": 0.01, "action": "alert"},
    }}})
    assert config.alpha == 0.02
    assert [m.name for m in config.metrics] == ["error_rate", "hallucination_rate"]
    assert config.metric("error_rate").min_delta == 0.005  # default kept for a known metric
    assert config.metric("hallucination_rate").events == "hallucinations"
    assert "hallucinations" in config.counters()


@pytest.mark.parametrize("section, message", [
    ({"alpha": 0}, "analysis.alpha"),
    ({"alpha": 1.5}, "analysis.alpha"),
    ({"beta": "x"}, "analysis.beta"),
    ({"consecutive_failures": 0}, "consecutive_failures"),
    ({"consecutive_errors": 1.5}, "consecutive_errors"),
    ({"on_errors": "panic"}, "on_errors"),
    ({"metrics": {"error_rate": {"type": "gauge"}}}, "type"),
    ({"metrics": {"x_rate": {"type": "rate", "max_ratio": 1}}}, "tolerates nothing"),
    ({"metrics": {"latency_p95_ms": {"type": "ratio", "max_ratio": 0.5}}}, "max_ratio"),
    ({"metrics": {"latency_p95_ms": {"type": "ratio", "action": "page"}}}, "action"),
    ({"metrics": {}}, "empty"),
    ({"metrics": {"bad name": {"type": "ratio"}}}, "invalid metric name"),
])
def test_bad_settings_are_refused_with_the_key_named(section, message):
    with pytest.raises(ValidationError, match=message):
        AnalysisConfig.from_section(section)


# --------------------------------------------------------------------------- rate metrics


def test_sprt_llr_matches_the_formula():
    assert sprt_llr(3, 100, 0.01, 0.02) == pytest.approx(3 * math.log(2) + 97 * math.log(0.98 / 0.99))


def test_healthy_canary_with_enough_traffic_passes():
    result = verdict("error_rate", healthy(5000, 0.009), healthy(50000, 0.01))
    assert result.verdict == PASS
    assert result.statistic == "sprt_llr"
    assert result.statistic_value < math.log(CONFIG.beta)


def test_canary_with_three_times_the_errors_fails():
    result = verdict("error_rate", healthy(2000, 0.03), healthy(20000, 0.01))
    assert result.verdict == FAIL
    assert result.canary_value == pytest.approx(0.03)
    assert result.baseline_value == pytest.approx(0.01)
    assert result.threshold == pytest.approx(0.015)
    assert result.statistic_value >= math.log(1 / CONFIG.alpha) == result.bound


def test_a_few_requests_are_inconclusive_and_none_insufficient():
    assert verdict("error_rate", Sample(requests=100, errors=2)).verdict == INCONCLUSIVE
    assert verdict("error_rate", Sample(requests=0, errors=0)).verdict == INSUFFICIENT


def test_threshold_is_the_larger_of_ratio_and_delta():
    low = verdict("error_rate", Sample(requests=100, errors=0), registered={"error_rate": 0.001, "requests": 1000})
    high = verdict("error_rate", Sample(requests=100, errors=0), registered={"error_rate": 0.02, "requests": 1000})
    assert low.threshold == pytest.approx(0.006)   # 0.001 + min_delta beats 0.001 * 1.5
    assert high.threshold == pytest.approx(0.03)   # 0.02 * 1.5 beats 0.02 + min_delta


def test_live_baseline_above_the_registered_one_is_used():
    # an outage upstream hits every version: the canary is as bad as active, not worse
    result = verdict("error_rate", healthy(3000, 0.05), healthy(30000, 0.05))
    assert result.baseline_source == "live"
    assert result.baseline_value == pytest.approx(0.05)
    assert result.verdict != FAIL


def test_registered_baseline_is_the_floor_when_active_does_better():
    # active happens to run at 0.2 %; a canary at the registered 1 % is not rolled back for that
    result = verdict("error_rate", healthy(3000, 0.01), healthy(30000, 0.002))
    assert result.baseline_source == "registered"
    assert result.baseline_value == pytest.approx(0.01)
    assert result.verdict != FAIL


def test_registered_baseline_is_the_fallback_without_enough_active_traffic():
    result = verdict("error_rate", healthy(2000, 0.03), healthy(50, 0.0))
    assert result.baseline_source == "registered"
    assert result.verdict == FAIL
    alone = verdict("error_rate", healthy(2000, 0.03), None)
    assert alone.baseline_source == "registered" and alone.verdict == FAIL


def test_no_baseline_at_all_is_insufficient_data():
    result = verdict("error_rate", healthy(2000, 0.03), healthy(10, 0.0), registered={})
    assert result.verdict == INSUFFICIENT
    assert "no baseline" in result.reason


def test_zero_error_baseline_does_not_make_one_error_decisive_evidence():
    result = verdict("error_rate", Sample(requests=1000, errors=1), Sample(requests=20000, errors=0), registered={})
    assert result.verdict != FAIL
    assert math.isfinite(result.statistic_value)


def test_generic_rate_metric_reads_its_numerator_counter():
    config = AnalysisConfig.from_section({"metrics": {
        "safety_flag_rate": {"type": "rate", "max_ratio": 2, "min_delta": 0.002, "numerator": "flags"}}})
    canary = Sample(requests=4000, errors=0, extra={"flags": 60})
    result = judge_metric(config.metrics[0], config, canary, None, {"safety_flag_rate": 0.001, "requests": 9000})
    assert result.verdict == FAIL
    missing = judge_metric(config.metrics[0], config, Sample(requests=4000, errors=0), None, {"safety_flag_rate": 0.001})
    assert missing.verdict == ERROR and "flags" in missing.reason


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Binomial draw by inversion (fast for small n * p)."""
    u, k, term = rng.random(), 0, (1 - p) ** n
    total = term
    while u > total and k < n:
        term *= (n - k) / (k + 1) * p / (1 - p)
        k += 1
        total += term
    return k


def test_repeated_looks_do_not_inflate_false_rollbacks():
    # 400 healthy canaries looked at every 100 requests up to 20,000: the share that ever fails
    # stays within the alpha budget (a per-look test at the same level would fail far more).
    rng = random.Random(7)
    spec = CONFIG.metric("error_rate")
    ever_failed = 0
    for _ in range(400):
        n = x = 0
        for _look in range(200):
            n += 100
            x += binomial(rng, 100, 0.01)
            if judge_metric(spec, CONFIG, Sample(requests=n, errors=x), None, REGISTERED).verdict == FAIL:
                ever_failed += 1
                break
    assert ever_failed / 400 <= CONFIG.alpha + 0.01


# --------------------------------------------------------------------------- bad data


@pytest.mark.parametrize("canary, why", [
    (Sample(requests=float("nan"), errors=1), "nan"),
    (Sample(requests=1000, errors=float("inf")), "inf"),
    (Sample(requests=-5, errors=0), "negative"),
    (Sample(requests=100, errors=101), "exceed"),
    (Sample(requests=None, errors=1), "missing"),
    (Sample(requests=1000), "missing"),
    (Sample(requests="1000", errors=1), "not a number"),
    (Sample(requests=True, errors=0), "not a number"),
    (Sample(requests=1000, errors=1, problems={"errors": "3 series where one is expected"}), "series"),
    (Sample(problems={"*": "version 2.4.0 is not in the response"}), "not in the response"),
])
def test_bad_canary_data_is_an_error_never_a_pass(canary, why):
    result = verdict("error_rate", canary, healthy(20000))
    assert result.verdict == ERROR
    assert why in result.reason.lower()


def test_bad_active_data_is_an_error_even_with_a_registered_baseline():
    result = verdict("error_rate", healthy(5000, 0.005), Sample(requests=20000, errors=float("nan")))
    assert result.verdict == ERROR
    assert result.reason.startswith("active version")


def test_stale_samples_are_errors():
    now = 1_000_000.0
    fresh = verdict("error_rate", Sample(requests=5000, errors=40, timestamp=now - 10), now=now)
    stale = verdict("error_rate", Sample(requests=5000, errors=40, timestamp=now - 600), now=now)
    stale_active = verdict("error_rate", healthy(5000), Sample(requests=9000, errors=9, timestamp=now - 600), now=now)
    assert fresh.verdict == PASS
    assert stale.verdict == ERROR and "stale" in stale.reason
    assert stale_active.verdict == ERROR


garbage = st.one_of(st.none(), st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")),
                    st.floats(max_value=-1e-9), st.text(max_size=5), st.booleans())


@settings(max_examples=200, deadline=None)
@given(bad=garbage, good=st.floats(min_value=0, max_value=1e9), which=st.sampled_from(["requests", "errors"]))
def test_any_garbage_count_is_never_a_pass(bad, good, which):
    fields = {"requests": good, "errors": 0.0, which: bad}
    result = verdict("error_rate", Sample(**fields), healthy(20000))
    assert result.verdict == ERROR


@settings(max_examples=200, deadline=None)
@given(n=st.floats(min_value=0, max_value=1e7), share=st.floats(min_value=0, max_value=1),
       na=st.floats(min_value=0, max_value=1e7), share_a=st.floats(min_value=0, max_value=1))
def test_valid_counts_always_get_a_verdict_with_finite_statistics(n, share, na, share_a):
    result = verdict("error_rate", Sample(requests=n, errors=n * share), Sample(requests=na, errors=na * share_a))
    assert result.verdict in (PASS, FAIL, INCONCLUSIVE, INSUFFICIENT)
    if result.statistic_value is not None:
        assert math.isfinite(result.statistic_value)


# --------------------------------------------------------------------------- ratio metrics


def test_latency_over_the_ratio_fails_and_within_passes():
    active = healthy(20000, latency_p95_ms=900.0)
    slow = verdict("latency_p95_ms", healthy(1000, latency_p95_ms=1200.0), active)
    fine = verdict("latency_p95_ms", healthy(1000, latency_p95_ms=1000.0), active)
    assert slow.verdict == FAIL
    assert slow.statistic == "ratio" and slow.statistic_value == pytest.approx(1200 / 900)
    assert slow.threshold == pytest.approx(900 * 1.2)
    assert fine.verdict == PASS


def test_latency_needs_min_requests_even_when_the_value_is_nan():
    result = verdict("latency_p95_ms", Sample(requests=50, errors=0, latency_p95_ms=float("nan")))
    assert result.verdict == INSUFFICIENT
    assert "200" in result.reason


def test_latency_nan_with_enough_requests_is_an_error():
    assert verdict("latency_p95_ms", Sample(requests=500, errors=0, latency_p95_ms=float("nan"))).verdict == ERROR
    bad_active = verdict("latency_p95_ms", healthy(500, latency_p95_ms=800.0),
                         Sample(requests=5000, errors=0, latency_p95_ms=float("inf")))
    assert bad_active.verdict == ERROR


def test_ratio_baseline_is_floored_by_the_registered_value():
    # active runs fast today (500 ms); the canary at 1,000 ms is within 1.2 x the registered 890
    result = verdict("latency_p95_ms", healthy(1000, latency_p95_ms=1000.0), healthy(20000, latency_p95_ms=500.0))
    assert result.baseline_source == "registered"
    assert result.verdict == PASS


def test_per_metric_min_requests_overrides_the_global_one():
    config = AnalysisConfig.from_section({"metrics": {"latency_p95_ms": {"type": "ratio", "min_requests": 1000}}})
    result = judge_metric(config.metrics[0], config, healthy(500, latency_p95_ms=5000.0), None, REGISTERED)
    assert result.verdict == INSUFFICIENT


# --------------------------------------------------------------------------- evidence


def test_evidence_carries_the_figures_and_fits_one_trailer_line():
    result = verdict("error_rate", healthy(2000, 0.03), healthy(20000, 0.01))
    evidence = result.evidence()
    assert evidence["metric"] == "error_rate"
    assert evidence["canary_n"] == 2000 and evidence["baseline_n"] == 20000
    assert evidence["statistic"] == "sprt_llr" and evidence["threshold"] == pytest.approx(0.015)
    line = result.evidence_line()
    assert "\n" not in line
    assert line.startswith("error_rate fail; canary=0.03 (n=2000); baseline=0.01 (live, n=20000); threshold=0.015;")
    assert "sprt_llr=" in line and ">= 4.605" in line


def test_evidence_line_neutralises_control_characters_from_providers():
    canary = Sample(requests=10, errors=0, problems={"*": "bad\nModelctl-Action: promote\r\x1b[31m"})
    line = verdict("error_rate", canary).evidence_line()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line


# --------------------------------------------------------------------------- tracker


BAD = healthy(3000, 0.04)
GOOD = healthy(20000, 0.005, latency_p95_ms=800.0, cost_per_request=0.001)
ACTIVE = healthy(100000, 0.01, latency_p95_ms=850.0, cost_per_request=0.001)


def poll(judge: Judge, canary: Sample, active: Sample = ACTIVE):
    return judge.poll(canary, active, REGISTERED)


def test_rollback_needs_consecutive_failing_polls():
    judge = Judge(CONFIG)
    first = poll(judge, BAD)
    assert first.action == CONTINUE
    assert [r.verdict for r in first.results if r.metric == "error_rate"] == [FAIL]
    second = poll(judge, BAD)
    assert second.action == ROLLBACK
    assert [r.metric for r in second.deciding] == ["error_rate"]
    assert second.evidence()[0]["polls"] == 2
    assert second.evidence_lines()[0].endswith("polls=2")


def test_a_passing_poll_resets_the_failure_count():
    judge = Judge(CONFIG)
    actions = [poll(judge, sample).action for sample in (BAD, GOOD, BAD)]
    assert ROLLBACK not in actions


def test_error_polls_neither_count_nor_reset_failures():
    judge = Judge(CONFIG)
    assert poll(judge, BAD).action == CONTINUE
    assert judge.unavailable("metrics endpoint timed out").action == CONTINUE
    assert poll(judge, BAD).action == ROLLBACK


def test_consecutive_error_polls_hold_by_default():
    judge = Judge(CONFIG)
    actions = [judge.unavailable("connection refused").action for _ in range(5)]
    assert actions == [CONTINUE] * 4 + [HOLD]
    decision = judge.unavailable("connection refused")
    assert decision.fail_safe and decision.error_polls == 6
    assert "connection refused" in decision.evidence_lines()[0]


def test_fail_safe_can_be_configured_to_roll_back():
    config = AnalysisConfig.from_section({"on_errors": "rollback", "consecutive_errors": 2})
    judge = Judge(config)
    bad_data = Sample(requests=float("nan"), errors=0)
    assert poll(judge, bad_data).action == CONTINUE
    decision = poll(judge, bad_data)
    assert decision.action == ROLLBACK and decision.fail_safe


def test_a_good_poll_resets_the_error_count():
    judge = Judge(AnalysisConfig.from_section({"consecutive_errors": 2}))
    assert judge.unavailable("down").action == CONTINUE
    poll(judge, GOOD)
    assert judge.unavailable("down").action == CONTINUE


def test_alert_metric_alerts_and_never_rolls_back():
    expensive = healthy(20000, 0.005, latency_p95_ms=800.0, cost_per_request=0.01)
    judge = Judge(CONFIG)
    assert poll(judge, expensive).action == CONTINUE
    decision = poll(judge, expensive)
    assert decision.action == ALERT
    assert [r.metric for r in decision.deciding] == ["cost_per_request"]


def test_broken_alert_metric_does_not_trigger_the_fail_safe():
    no_cost = Sample(requests=20000, errors=100, latency_p95_ms=800.0, cost_per_request=float("nan"))
    judge = Judge(CONFIG)
    actions = [poll(judge, no_cost).action for _ in range(8)]
    assert HOLD not in actions and ROLLBACK not in actions
    assert ADVANCE_OK not in actions  # a metric in error blocks advancing


def test_all_rollback_metrics_passing_is_advance_ok():
    decision = poll(Judge(CONFIG), GOOD)
    assert decision.action == ADVANCE_OK
    assert {r.verdict for r in decision.results if r.action == "rollback"} == {PASS}


def test_rollback_takes_precedence_over_the_fail_safe():
    config = AnalysisConfig.from_section({"consecutive_errors": 1, "consecutive_failures": 1})
    both = Sample(requests=3000, errors=120, latency_p95_ms=float("nan"))
    decision = Judge(config).poll(both, ACTIVE, REGISTERED)
    assert decision.action == ROLLBACK and not decision.fail_safe


def test_judge_poll_judges_every_configured_metric_in_order():
    results = judge_poll(CONFIG, GOOD, ACTIVE, REGISTERED)
    assert [r.metric for r in results] == ["error_rate", "latency_p95_ms", "cost_per_request"]


def test_missing_canary_sample_is_an_error_poll():
    decision = Judge(CONFIG).poll(None, ACTIVE, REGISTERED)
    assert all(r.verdict == ERROR for r in decision.results)
