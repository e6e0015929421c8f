"""The judgement as pure functions: fixed seeds, no clock, no I/O."""
import json
import math
import random

import pytest

from modelctl.analysis import (
    ADVANCE_OK,
    ALERT,
    CONTINUE,
    ERROR,
    FAIL,
    HOLD,
    INSUFFICIENT,
    ROLLBACK,
    SRM_HOLD,
    AnalysisConfig,
    Judge,
    binomial_llr,
    count_above,
    histogram_quantile,
    indifference_ratio,
)
from modelctl.errors import ValidationError
from modelctl.observation import Counters, Poll, Reading

RATE_ONLY = {"metrics": {"error_rate": {"type": "rate"}}}
BOUNDS = (100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, math.inf)


def _poisson(rng, lam):
    if lam > 40:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _binomial(rng, n, p):
    lam = n * p
    if lam < 30:
        return min(n, _poisson(rng, lam))
    return min(n, max(0, int(round(rng.gauss(lam, math.sqrt(lam * (1 - p)))))))


class Version:
    """Cumulative counters of one simulated version (one segment or several)."""

    def __init__(self):
        self.requests = {}
        self.errors = {}
        self.buckets = {}
        self.cost = {}

    def add(self, seg, n, x, latencies=(), cost=0.0):
        self.requests[seg] = self.requests.get(seg, 0) + n
        self.errors[seg] = self.errors.get(seg, 0) + x
        hist = self.buckets.setdefault(seg, [0] * len(BOUNDS))
        for ms in latencies:
            for i, bound in enumerate(BOUNDS):
                if ms <= bound:
                    hist[i] += 1
        self.cost[seg] = self.cost.get(seg, 0.0) + cost

    def reading(self, with_buckets=False, with_cost=False):
        segs = {}
        for seg in self.requests:
            segs[seg] = Counters(
                requests=self.requests[seg], events={"errors": self.errors[seg]},
                latency_buckets=tuple(zip(BOUNDS, self.buckets[seg])) if with_buckets else (),
                cost_total=self.cost[seg] if with_cost else None)
        return Reading(segments=segs)


def rate_stream(seed, *, polls=240, canary_rps=1.0, percent=5.0, p=0.01, ratio=1.0, onset=0,
                shared=None, canary_only=None, dispersion_cv=0.0):
    """Polls of a canary and its control: errors at rate p (canary: p * ratio from poll `onset`).

    shared/canary_only: {poll index: rate} for incidents hitting both versions / the canary only.
    dispersion_cv: per-interval multiplicative noise on each version's rate (bursty errors).
    """
    rng = random.Random(seed)
    control, canary = Version(), Version()
    total = canary_rps * 100 / percent
    out = []
    for i in range(polls + 1):
        if i:
            n1 = _poisson(rng, canary_rps * 30)
            n0 = _poisson(rng, (total - canary_rps) * 30)
            p0 = p1 = p
            if i >= onset:
                p1 = p * ratio
            if shared and i in shared:
                p0 = p1 = shared[i]
            if canary_only and i in canary_only:
                p1 = canary_only[i]
            if dispersion_cv:
                p0 *= max(0.0, rng.gauss(1, dispersion_cv))
                p1 *= max(0.0, rng.gauss(1, dispersion_cv))
            canary.add("", n1, _binomial(rng, n1, min(p1, 1)))
            control.add("", n0, _binomial(rng, n0, min(p0, 1)))
        out.append(Poll(time=1000.0 + 30 * i, control="1.0.0", canary="1.1.0", percent=percent,
                        readings={"1.0.0": control.reading(), "1.1.0": canary.reading()}))
    return out


def run(config, polls, prior=None, judge=None):
    """Feed polls; return (index of the first rollback or None, judge, last decision)."""
    judge = judge or Judge(config, prior=prior)
    decision = None
    for i, poll in enumerate(polls):
        decision = judge.observe(poll)
        if decision.action == ROLLBACK:
            return i, judge, decision
    return None, judge, decision


def rate_config(**settings):
    return AnalysisConfig.from_section({**RATE_ONLY, **settings})


# --------------------------------------------------------------------------- config


def test_defaults_fill_every_setting_and_the_three_metrics():
    config = AnalysisConfig.from_config({})
    assert [(m.name, m.type, m.action) for m in config.metrics] == [
        ("error_rate", "rate", "rollback"), ("latency", "latency", "rollback"), ("cost_per_request", "cost", "alert")]
    assert config.metric("error_rate").critical and config.metric("error_rate").events == "errors"
    # the critical error rate gets twice the latency's share; the alert metric spends none of the budget
    assert config.metric_alpha(config.metric("error_rate")) == pytest.approx(0.01 * 2 / 3)
    assert config.metric_alpha(config.metric("latency")) == pytest.approx(0.01 / 3)
    assert config.metric_alpha(config.metric("cost_per_request")) == 0.01


def test_the_legacy_ratio_type_is_read_as_an_alert_only_gauge():
    config = AnalysisConfig.from_section({"metrics": {"latency_p95_ms": {"type": "ratio", "max_ratio": 1.2}}})
    spec = config.metric("latency_p95_ms")
    assert (spec.type, spec.action, spec.rolls_back) == ("gauge", "alert", False)


@pytest.mark.parametrize("section, message", [
    ({"alpha": 1.5}, "analysis.alpha must be a number between 0 and 1"),
    ({"srm_alpha": 0}, "analysis.srm_alpha"),
    ({"min_duration_seconds": -1}, "analysis.min_duration_seconds"),
    ({"segments": "eu"}, "analysis.segments must be a list"),
    ({"surprise": 1}, "analysis.surprise is not a setting"),
    ({"metrics": {"error_rate": {"type": "mean"}}}, "analysis.metrics.error_rate.type must be one of"),
    ({"metrics": {"p95": {"type": "gauge", "action": "rollback"}}}, "a gauge can alert but never roll back"),
    ({"metrics": {"latency": {"type": "latency", "quantile": 1.5}}}, "quantile must be a number between 0 and 1"),
    ({"metrics": {"latency": {"type": "latency", "threshold_ms": -3}}}, "threshold_ms"),
    ({"metrics": {"error_rate": {"type": "rate", "max_ratio": 1, "min_delta": 0}}}, "tolerates nothing"),
    ({"metrics": {"error_rate": {"type": "rate", "critical": "yes"}}}, "critical must be true or false"),
    ({"metrics": {}}, "analysis.metrics is empty"),
])
def test_bad_settings_are_refused_with_the_key_named(section, message):
    with pytest.raises(ValidationError) as exc:
        AnalysisConfig.from_section(section)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- statistics


def test_binomial_llr_matches_the_formula_and_the_indifference_point():
    assert binomial_llr(3, 97, 0.05, 0.1) == pytest.approx(3 * math.log(2) + 97 * math.log(0.9 / 0.95))
    assert indifference_ratio(1.5) == pytest.approx(0.5 / math.log(1.5))
    assert round(indifference_ratio(1.5), 2) == 1.23


def test_histogram_quantile_and_count_above_interpolate_inside_a_bucket():
    buckets = ((100.0, 50.0), (200.0, 90.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(100.0)
    assert histogram_quantile(0.7, buckets) == pytest.approx(150.0)
    assert histogram_quantile(0.95, buckets) == 200.0  # in the +Inf bucket: the highest finite bound
    assert count_above(150.0, buckets) == pytest.approx(30.0)
    assert count_above(50.0, buckets) == pytest.approx(75.0)
    assert count_above(5000.0, buckets) == pytest.approx(10.0)


# --------------------------------------------------------------------------- rates


def test_a_healthy_canary_is_not_rolled_back_and_a_doubled_error_rate_is():
    config = rate_config()
    healthy = [run(config, rate_stream(seed))[0] for seed in range(20)]
    assert healthy == [None] * 20
    caught = [run(config, rate_stream(100 + seed, ratio=2.0))[0] for seed in range(20)]
    assert all(i is not None for i in caught)
    assert sorted(caught)[10] * 30 <= 3000  # median: within ~1,800-3,000 canary requests at 1 rps


def test_a_shared_incident_cancels_out_but_the_same_incident_on_the_canary_alone_rolls_back():
    config = rate_config()
    blip = {i: 0.3 for i in range(60, 64)}  # two minutes at 30 % errors
    for seed in range(10):
        polls = rate_stream(seed, shared=blip)
        index, _, _ = run(config, polls)
        assert index is None
        _, before, _ = run(config, polls[:60])
        _, after, _ = run(config, polls[:65])
        # 2,400 events in two minutes, and the canary's share of them is its share of requests
        assert after._tests["error_rate|"].W <= before._tests["error_rate|"].W + 2
    incident = {i: 0.3 for i in range(60, 70)}  # five minutes at 30 % errors on the canary alone
    index, _, decision = run(config, rate_stream(3, canary_only=incident))
    assert index is not None and 60 <= index <= 70
    assert decision.deciding[0].metric == "error_rate"


def test_a_split_change_mid_canary_does_not_look_like_a_regression():
    config = rate_config()
    first = rate_stream(7, polls=120, percent=1.0, canary_rps=0.5)
    second = rate_stream(8, polls=120, percent=50.0, canary_rps=25.0)
    # glue: the second stream continues the cumulative counters of the first
    polls = list(first)
    last = first[-1]
    for poll in second[1:]:
        readings = {}
        for version, reading in poll.readings.items():
            base = last.readings[version].segments[""]
            seg = reading.segments[""]
            readings[version] = Reading(segments={"": Counters(
                requests=base.requests + seg.requests,
                events={"errors": base.events["errors"] + seg.events["errors"]})})
        polls.append(Poll(time=last.time + poll.time - 1000.0, control=poll.control, canary=poll.canary,
                          percent=poll.percent, readings=readings))
    index, _, decision = run(config, polls)
    assert index is None
    assert decision.action != SRM_HOLD


def test_overdispersion_widens_the_test():
    config = rate_config()
    _, plain, _ = run(config, rate_stream(11, canary_rps=50.0))
    _, bursty, _ = run(config, rate_stream(11, canary_rps=50.0, dispersion_cv=0.3))
    assert plain._tests["error_rate|"].burst(config) < 0.02
    assert bursty._tests["error_rate|"].burst(config) > 0.05
    # the same bursty streams judged as if they were binomial roll back healthy canaries
    pinned = rate_config(burst_prior=0, burst_prior_weight=1e12, max_step=1e9)
    streams = [rate_stream(200 + s, canary_rps=50.0, dispersion_cv=0.3) for s in range(8)]
    naive = [run(pinned, polls)[0] for polls in streams]
    judged = [run(config, polls)[0] for polls in streams]
    assert sum(i is not None for i in naive) >= 6
    assert sum(i is not None for i in judged) <= 1


def test_a_late_regression_is_caught_about_as_fast_as_a_fresh_one():
    config = rate_config()
    fresh, late = [], []
    for seed in range(12):
        i, _, _ = run(config, rate_stream(300 + seed, ratio=3.0, polls=360))
        fresh.append(i)
        j, _, _ = run(config, rate_stream(400 + seed, ratio=3.0, onset=180, polls=360))
        late.append(None if j is None else j - 180)
    assert None not in fresh and None not in late
    assert min(late) >= 0  # nothing before the onset
    assert sorted(late)[6] <= 1.5 * sorted(fresh)[6]


def test_one_interval_adds_at_most_max_step_plus_its_own_information():
    config = rate_config()
    incident = {60: 0.05}  # one poll at five times the errors, on the canary alone

    def jump(canary_rps):
        _, before, _ = run(config, rate_stream(31, canary_rps=canary_rps, canary_only=incident)[:60])
        _, after, _ = run(config, rate_stream(31, canary_rps=canary_rps, canary_only=incident)[:61])
        return after._tests["error_rate|"].W - before._tests["error_rate|"].W

    # at 1 canary request/s an interval carries little information: one burst cannot decide alone
    assert 0.5 < jump(1.0) <= config.max_step + 0.1
    # at 50 requests/s the same interval holds 1,500 canary requests and may add more than max_step
    # (the raw log likelihood ratio of 75 errors where 15 were expected is about 20)
    assert config.max_step + 0.3 < jump(50.0) <= config.max_step + 2.0


def test_a_late_regression_at_high_traffic_is_not_held_back_by_the_step_cap():
    config = rate_config()
    fresh, late = [], []
    for seed in range(9):
        i, _, _ = run(config, rate_stream(500 + seed, canary_rps=50.0, ratio=2.0, polls=30))
        fresh.append(i)
        j, _, _ = run(config, rate_stream(600 + seed, canary_rps=50.0, ratio=2.0, onset=120, polls=160))
        late.append(None if j is None else j - 120)
    assert None not in fresh and None not in late
    assert min(late) >= 0
    # with at most max_step per poll the late boundary (about 11 after an hour) took 12 polls or more
    assert sorted(late)[4] <= 1.5 * sorted(fresh)[4]
    assert sorted(late)[4] <= 9


def test_restarts_after_little_information_already_raise_the_boundary():
    config = rate_config()
    _, judge, decision = run(config, rate_stream(41, canary_rps=1.0, polls=120))
    result = next(r for r in decision.results if r.metric == "error_rate")
    test = judge._tests["error_rate|"]
    assert 1.0 < test.Ir < 4.0  # an hour at 1 canary request/s: a few units of information
    # the boundary counts that information in quarter units: ln(1 + Ir / 0.25), not ln(1 + Ir)
    assert result.bound == pytest.approx(math.log(1 / 0.01) + config.cusum_growth * math.log1p(test.Ir / 0.25))
    assert result.bound - math.log(1 / 0.01) > config.cusum_growth * math.log1p(test.Ir) + 1.0


def test_the_bar_comes_from_the_control_and_never_from_a_registered_baseline():
    config = rate_config()
    polls = rate_stream(21, ratio=2.0)
    low = run(config, polls, prior={"error_rate": 0.001})
    high = run(config, polls, prior={"error_rate": 0.05})  # a candidate-style "my rate is 5 %" bar
    unset = run(config, polls, prior=None)
    # the registered rate only weighs as the first prior_requests control requests
    assert None not in (low[0], high[0], unset[0])
    assert high[0] <= unset[0] + 2  # a high registered rate does not lift the bar
    assert high[2].deciding[0].control_source == "control"
    assert high[2].deciding[0].control_value == pytest.approx(unset[2].deciding[0].control_value, rel=0.2)
    # once the control has traffic, a prior changes nothing but the first intervals' bar
    pinned = rate_config(prior_requests=0)
    assert run(pinned, polls, prior={"error_rate": 0.05})[0] == run(pinned, polls)[0]


def test_without_any_control_the_serving_versions_registered_rate_is_the_fallback():
    config = rate_config()
    rng = random.Random(5)
    canary = Version()
    polls = []
    for i in range(120):
        if i:
            n = _poisson(rng, 30)
            canary.add("", n, _binomial(rng, n, 0.04))
        polls.append(Poll(time=30.0 * i, control=None, canary="1.1.0", percent=None,
                          readings={"1.1.0": canary.reading()}))
    index, _, decision = run(config, polls, prior={"error_rate": 0.01})
    assert index is not None
    assert decision.deciding[0].control_source == "prior"
    assert run(config, polls, prior=None)[0] is None  # no control, no prior: nothing to judge against
    assert Judge(config).observe(polls[5]).results[0].verdict == INSUFFICIENT


# --------------------------------------------------------------------------- counters


def _poll(i, control, canary, percent=5.0):
    return Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=percent,
                readings={"1.0.0": Reading(segments={"": control}), "1.1.0": Reading(segments={"": canary})})


def test_a_first_appearance_only_sets_the_start_and_history_never_counts():
    config = rate_config()
    judge = Judge(config)
    # the canary's exporter has a long history of errors before watch started
    decision = judge.observe(_poll(0, Counters(requests=100000, events={"errors": 1000}),
                                   Counters(requests=103000, events={"errors": 9000})))
    assert decision.results[0].verdict == INSUFFICIENT
    decision = judge.observe(_poll(1, Counters(requests=100570, events={"errors": 1006}),
                                   Counters(requests=103030, events={"errors": 9000})))
    assert decision.results[0].canary_n == 30 and decision.results[0].canary_events == 0
    assert decision.action != ROLLBACK


def test_a_counter_that_decreases_is_an_error_poll_and_never_imports_history():
    config = rate_config()
    judge = Judge(config)
    judge.observe(_poll(0, Counters(requests=0, events={"errors": 0}), Counters(requests=0, events={"errors": 0})))
    judge.observe(_poll(1, Counters(requests=570, events={"errors": 6}), Counters(requests=30, events={"errors": 0})))
    # the canary's errors read 0 while its requests keep rising: a glitch, not a reset to add back
    glitch = judge.observe(_poll(2, Counters(requests=1140, events={"errors": 12}),
                                 Counters(requests=60, events={"errors": 1})))
    assert glitch.results[0].verdict != ERROR
    glitch = judge.observe(_poll(3, Counters(requests=1710, events={"errors": 18}),
                                 Counters(requests=90, events={"errors": 0})))
    assert glitch.results[0].verdict == ERROR and "decreased" in glitch.results[0].reason
    after = judge.observe(_poll(4, Counters(requests=2280, events={"errors": 24}),
                                Counters(requests=120, events={"errors": 1})))
    result = after.results[0]
    assert result.verdict != ERROR
    assert result.canary_events == 2  # 1 before the glitch + 1 after it: the glitch's value is a new start
    assert result.canary_n == 90  # the glitched interval is not counted
    assert result.error_intervals == 1


def test_a_control_replica_restart_is_an_error_poll_not_a_rollback():
    config = rate_config()
    polls = rate_stream(31, polls=120)
    restarted = []
    for i, poll in enumerate(polls):
        if i >= 60:  # one of four replicas restarts: the summed control counters drop by a quarter
            control = poll.readings["1.0.0"].segments[""]
            poll = Poll(time=poll.time, control=poll.control, canary=poll.canary, percent=poll.percent,
                        readings={**poll.readings, "1.0.0": Reading(segments={"": Counters(
                            requests=control.requests * 3 // 4, events={"errors": control.events["errors"] * 3 // 4})})})
        restarted.append(poll)
    judge = Judge(config)
    actions = [judge.observe(p) for p in restarted]
    assert actions[60].results[0].verdict == ERROR
    assert all(d.action != ROLLBACK for d in actions)
    assert actions[-1].results[0].verdict != ERROR


@pytest.mark.parametrize("canary", [
    Counters(requests=math.nan, events={"errors": 0}),
    Counters(requests=60, events={"errors": math.inf}),
    Counters(requests=60, events={"errors": -3}),
    Counters(requests=60, events={"errors": 70}),
])
def test_garbage_counts_are_errors_never_a_pass_or_a_rollback(canary):
    config = rate_config()
    judge = Judge(config)
    judge.observe(_poll(0, Counters(requests=0, events={"errors": 0}), Counters(requests=0, events={"errors": 0})))
    judge.observe(_poll(1, Counters(requests=570, events={"errors": 6}), Counters(requests=30, events={"errors": 0})))
    decision = judge.observe(_poll(2, Counters(requests=1140, events={"errors": 12}), canary))
    assert decision.results[0].verdict == ERROR
    assert decision.action == CONTINUE


def test_provider_problems_and_failed_polls_are_error_polls_and_trip_the_fail_safe():
    config = rate_config(consecutive_errors=3)
    judge = Judge(config)
    judge.observe(_poll(0, Counters(requests=0, events={"errors": 0}), Counters(requests=0, events={"errors": 0})))
    bad = Poll(time=30.0, control="1.0.0", canary="1.1.0", percent=5.0, readings={
        "1.0.0": Reading(segments={"": Counters(requests=570, events={"errors": 6})}, problems={"*": "replica r2 restarted"}),
        "1.1.0": Reading(segments={"": Counters(requests=30, events={"errors": 0})})})
    first = judge.observe(bad)
    assert first.results[0].verdict == ERROR and "replica r2 restarted" in first.results[0].reason
    judge.observe(Poll(time=60.0, control="1.0.0", canary="1.1.0", percent=5.0, readings={}, error="connection refused"))
    third = judge.observe(Poll(time=90.0, control="1.0.0", canary="1.1.0", percent=5.0, readings={}, error="timeout"))
    assert third.action == HOLD and third.fail_safe
    assert "error_polls=3" in third.evidence_lines()[0]


def test_export_and_restore_continue_the_statistic_without_fresh_alpha():
    config = rate_config()
    polls = rate_stream(41, ratio=2.0)
    whole, _, _ = run(config, polls)
    assert whole is not None
    judge = Judge(config)
    for poll in polls[:whole - 5]:
        judge.observe(poll)
    state = json.loads(json.dumps(judge.export_state()))  # through JSON, as watch stores it
    resumed = Judge(config, state=state)
    assert resumed._tests["error_rate|"].W == judge._tests["error_rate|"].W > 0
    index, _, decision = run(config, polls[whole - 5:], judge=resumed)
    assert index == 5
    with pytest.raises(ValidationError):
        Judge(config, state={"schema": "something else"})


def test_a_saved_state_without_its_srm_figures_is_damaged_when_read():
    # it used to restore and then fail with a KeyError at the next poll; watch starts a damaged
    # state afresh instead
    config = rate_config()
    judge = Judge(config)
    for poll in rate_stream(41, ratio=1.0)[:3]:
        judge.observe(poll)
    state = json.loads(json.dumps(judge.export_state()))
    Judge(config, state=state).observe(rate_stream(41, ratio=1.0)[3])
    del state["srm"]["held"]
    with pytest.raises(ValidationError, match="damaged"):
        Judge(config, state=state)


# --------------------------------------------------------------------------- latency, cost, gauges


def _latency_stream(seed, slow=1.0, polls=120, canary_rps=5.0, percent=5.0):
    rng = random.Random(seed)
    control, canary = Version(), Version()
    out = []
    total = canary_rps * 100 / percent

    def draw(scale):
        if rng.random() < 0.9:
            return scale * rng.lognormvariate(math.log(700), 0.4)
        return scale * rng.lognormvariate(math.log(2500), 0.5)

    for i in range(polls + 1):
        if i:
            n1, n0 = _poisson(rng, canary_rps * 30), _poisson(rng, (total - canary_rps) * 30)
            canary.add("", n1, 0, [draw(slow) for _ in range(n1)], cost=0.002 * n1 * slow)
            control.add("", n0, 0, [draw(1.0) for _ in range(n0)], cost=0.002 * n0)
        out.append(Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=percent,
                        readings={"1.0.0": control.reading(True, True), "1.1.0": canary.reading(True, True)}))
    return out


def test_latency_from_histograms_catches_a_slower_canary_and_spares_a_heavy_tailed_healthy_one():
    config = AnalysisConfig.from_section({"metrics": {"latency": {"type": "latency"}}})
    for seed in range(3):
        assert run(config, _latency_stream(seed))[0] is None
    index, judge, decision = run(config, _latency_stream(9, slow=1.3))
    assert index is not None
    result = decision.deciding[0]
    assert result.metric == "latency" and result.threshold_ms > 1000  # the control's p95 of this mixture
    assert result.canary_value > result.control_value
    assert judge.trace()[-1]["threshold_ms"] == result.threshold_ms


def test_cost_from_totals_alerts_on_an_expensive_canary():
    config = AnalysisConfig.from_section({"metrics": {"cost_per_request": {"type": "cost", "max_ratio": 1.3}}})
    quiet = Judge(config)
    assert all(quiet.observe(p).action in (CONTINUE, ADVANCE_OK) for p in _latency_stream(1, polls=60))
    judge = Judge(config)
    actions = [judge.observe(p).action for p in _latency_stream(2, slow=2.0, polls=60)]
    assert ALERT in actions and ROLLBACK not in actions


def test_a_gauge_alerts_after_consecutive_polls_never_rolls_back_and_reports_its_sample_count():
    config = AnalysisConfig.from_section({"min_requests": 0, "metrics": {"latency_p95_ms": {"type": "gauge"}}})
    judge = Judge(config)
    decisions = []
    for i in range(4):
        decisions.append(judge.observe(Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=5.0, readings={
            "1.0.0": Reading(segments={"": Counters(requests=570 * i, gauges={"latency_p95_ms": 800.0})}),
            "1.1.0": Reading(segments={"": Counters(requests=30 * i, gauges={"latency_p95_ms": 2000.0})})})))
    assert [d.action for d in decisions] == [CONTINUE, ALERT, ALERT, ALERT][:1] + [d.action for d in decisions[1:]]
    assert decisions[0].action == CONTINUE and decisions[1].action == ALERT
    assert all(d.action != ROLLBACK for d in decisions)
    assert decisions[-1].results[0].canary_n == 30


# --------------------------------------------------------------------------- SRM, segments, decisions


def test_a_sample_ratio_mismatch_holds_instead_of_judging():
    config = rate_config()
    # configured 5 %, the router sends 2 %: a regressed canary is held, not rolled back nor passed
    polls = rate_stream(51, percent=2.0, ratio=3.0)
    polls = [Poll(time=p.time, control=p.control, canary=p.canary, percent=5.0, readings=p.readings) for p in polls]
    judge = Judge(config)
    actions = [judge.observe(p) for p in polls]
    assert actions[-1].action == SRM_HOLD
    assert ROLLBACK not in [d.action for d in actions[: next(i for i, d in enumerate(actions) if d.action == SRM_HOLD)]]
    assert "configured 5%" in actions[-1].reason


def test_a_mismatch_of_a_few_intervals_holds_only_until_the_totals_agree_again():
    # two polls where the canary gets 18 % instead of 10 % (pods scraped at different moments), then
    # the configured split: the verdict is held, then judged again; a lasting mismatch keeps holding
    config = rate_config()
    control, canary = Version(), Version()
    judge = Judge(config)
    actions = []
    for i in range(40):
        if i:
            share = 0.18 if i <= 2 else 0.10
            control.add("", round(2000 * (1 - share)), round(20 * (1 - share)))
            canary.add("", round(2000 * share), round(20 * share))
        actions.append(judge.observe(Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=10.0,
                                          readings={"1.0.0": control.reading(), "1.1.0": canary.reading()})).action)
    assert SRM_HOLD in actions[:4]
    assert actions[-1] != SRM_HOLD and ROLLBACK not in actions


def test_a_canary_that_gets_no_traffic_is_held_and_said_so():
    config = rate_config()
    control = Version()
    judge = Judge(config)
    for i in range(20):
        if i:
            control.add("", 570, 6)
        decision = judge.observe(Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=5.0,
                                      readings={"1.0.0": control.reading()}))
    assert decision.action == SRM_HOLD
    assert "no traffic" in decision.reason


def test_a_regression_in_one_segment_rolls_back_and_names_the_segment():
    config = rate_config()
    rng = random.Random(61)
    control, canary = Version(), Version()
    judge = Judge(config)
    decision = None
    for i in range(241):
        for seg, share in (("eu", 0.1), ("us", 0.9)):
            if not i:  # the first poll already reports both segments
                canary.add(seg, 0, 0)
                control.add(seg, 0, 0)
                continue
            n1, n0 = _poisson(rng, 5 * 30 * share), _poisson(rng, 95 * 30 * share)
            # eu regresses 1 % -> 6 %; us improves, so the whole version looks flat (~1 %)
            canary.add(seg, n1, _binomial(rng, n1, 0.06 if seg == "eu" else 0.005))
            control.add(seg, n0, _binomial(rng, n0, 0.01))
        for version in (control, canary):
            version.add("", 0, 0)
            version.requests[""] = version.requests["eu"] + version.requests["us"]
            version.errors[""] = version.errors["eu"] + version.errors["us"]
        decision = judge.observe(Poll(time=30.0 * i, control="1.0.0", canary="1.1.0", percent=5.0,
                                      readings={"1.0.0": control.reading(), "1.1.0": canary.reading()}))
        if decision.action == ROLLBACK:
            break
    assert decision.action == ROLLBACK
    assert any(r.segment == "eu" for r in decision.deciding)
    assert "segment eu" in decision.reason
    assert any("error_rate[eu] fail" in line for line in decision.evidence_lines())
    eu = next(r for r in decision.deciding if r.segment == "eu")
    assert eu.alpha == pytest.approx(0.01 * 0.5 / 2)  # half the metric's alpha, shared by two segments


def test_advance_ok_waits_for_the_minimum_duration_and_events():
    config = rate_config(min_duration_seconds=1800, beta=0.2)
    judge = Judge(config)
    actions = []
    for poll in rate_stream(71, canary_rps=5.0, ratio=0.8, polls=120):
        decision = judge.observe(poll)
        actions.append((poll.time - 1000.0, decision))
    first = next(t for t, d in actions if d.action == ADVANCE_OK)
    assert first >= 1800
    passing_early = [d for t, d in actions if t < 1800 and d.results[0].verdict == "pass"]
    assert passing_early and "min_duration_seconds" in passing_early[0].reason
    ok = next(d for t, d in actions if d.action == ADVANCE_OK)
    assert ok.evidence_lines() and "error_rate pass" in ok.evidence_lines()[0]


def test_evidence_is_one_line_with_the_figures_of_the_decision():
    config = rate_config()
    _, _, decision = run(config, rate_stream(81, ratio=3.0))
    line = decision.evidence_lines()[0]
    assert "\n" not in line
    for part in ("error_rate fail", "canary=", "control=", "cusum_llr=", ">=", "r1=1.5", "intervals=", "alpha=0.01"):
        assert part in line
    doc = decision.to_json()
    assert doc["action"] == ROLLBACK and doc["deciding"] == ["error_rate"]
    assert doc["results"][0]["verdict"] == FAIL
    json.dumps(doc)


def test_header_lines_give_the_indifference_point_the_time_to_detect_and_a_power_warning():
    config = rate_config()
    judge = Judge(config, prior={"error_rate": 0.01})
    lines = judge.header_lines(rps_canary=1.0, max_duration=7200)
    assert any("above 1.23x the control are failed" in line for line in lines)
    detect = next(line for line in lines if "canary requests to detect" in line)
    assert "WARNING" not in detect
    short = judge.header_lines(rps_canary=0.05, max_duration=3600)
    assert any("WARNING: --max-duration" in line for line in short)
