"""The watch loop with an injected clock, sleep and provider, against real registries in tmp_path.

No test sleeps: the fake clock advances when the loop asks to sleep. The provider is a small
traffic simulation on the same fake clock (the real providers are tested in test_metrics.py and
end to end in test_watch_e2e.py); every write goes through the real lifecycle code into git.
"""
from __future__ import annotations

import io
import json
import math
import shutil
import time

import pytest
from conftest import git, repo_state

from modelctl import ops, watch, yamlio
from modelctl.errors import MetricsError, UsageError
from modelctl.observation import Counters, Reading
from modelctl.registry import Registry
from modelctl.store import Plan

NAME = "support-agent"
ACTIVE, CANARY, SHADOW = "1.0.0", "1.0.1", "1.0.2"


class FakeClock:
    """Wall and monotonic time in one; sleeping advances it instantly."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


BOUNDS = (250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, math.inf)


def below(bound: float, latency: float) -> float:
    """Share of requests at or below `bound` when latencies spread evenly over +-20 % of `latency`."""
    lo, hi = latency * 0.8, latency * 1.2
    return min(1.0, max(0.0, (bound - lo) / (hi - lo)))


class SimProvider:
    """Traffic on the fake clock: cumulative counters per version (and segment), as an exporter keeps them.

    Each version serves `rps` at `error_rate`; `segments` splits every version's traffic by share
    ({"eu": 0.1, "us": 0.9}) and `segment_rates[(version, segment)]` overrides a segment's rate.
    Rates may change between reads; `delay` makes each read take that long on the clock (capped by
    the time the watch has left, like the real HTTP deadline).
    """

    name = "sim"

    def __init__(self, clock: FakeClock, rates: dict[str, float], rps: dict[str, float] | None = None,
                 latency: dict[str, float] | None = None, cost: dict[str, float] | None = None,
                 segments: dict[str, float] | None = None):
        self.clock = clock
        self.rates = dict(rates)
        self.rps = rps or {ACTIVE: 900.0}  # and 100 for the others: the canary's 10 %
        self.latency = latency or {}
        self.cost = cost or {}
        self.segments = segments or {"": 1.0}
        self.segment_rates: dict[tuple[str, str], float] = {}
        self.last: float | None = None
        self.fail: Exception | None = None
        self.delay = 0.0
        self.calls: list[tuple[list[str], float, float | None]] = []
        self.router: tuple | None = None
        self.totals: dict[tuple[str, str], dict] = {}
        self._carry: dict[tuple[str, str], list[float]] = {}

    def route(self, path, total_rps: float) -> SimProvider:
        """Split `total_rps` between active and canary as the registry at `path` says, read by read."""
        self.router = (path, total_rps)
        return self

    def _advance(self, versions) -> None:
        if self.router is not None:
            path, total = self.router
            dep = Registry(path).deployment(NAME)
            share = (dep["canary"] or {}).get("percent", 0) / 100
            self.rps[ACTIVE] = total * (1 - share)
            if dep["canary"]:
                self.rps[dep["canary"]["version"]] = total * share
        now = self.clock()
        dt = 0.0 if self.last is None else now - self.last
        self.last = now
        for v in versions:
            for seg, share in self.segments.items():
                key = (v, seg)
                tot = self.totals.setdefault(key, {"requests": 0, "errors": 0, "cost": 0.0,
                                                   "buckets": [0.0] * len(BOUNDS)})
                carry = self._carry.setdefault(key, [0.0, 0.0])
                carry[0] += self.rps.get(v, 100.0) * share * dt
                n = math.floor(carry[0])
                carry[0] -= n
                carry[1] += n * self.segment_rates.get(key, self.rates.get(v, 0.01))
                e = math.floor(carry[1] + 1e-9)
                carry[1] -= e
                tot["requests"] += n
                tot["errors"] += e
                tot["cost"] += n * self.cost.get(v, 0.0011)
                lat = self.latency.get(v, 850.0)
                tot["buckets"] = [c + round(n * below(b, lat)) for c, b in zip(tot["buckets"], BOUNDS)]

    def counters(self, version: str, seg: str) -> Counters:
        tot = self.totals[(version, seg)]
        return Counters(requests=tot["requests"], events={"errors": tot["errors"]},
                        latency_buckets=tuple(zip(BOUNDS, tot["buckets"])), cost_total=round(tot["cost"], 9),
                        gauges={"latency_p95_ms": self.latency.get(version, 850.0)})

    def read(self, model, versions, since_seconds, *, time_left=None):
        self.calls.append((list(versions), since_seconds, time_left))
        if self.delay:
            took = self.delay if time_left is None else min(self.delay, time_left)
            self.clock.now += took
            if took < self.delay:
                raise MetricsError(f"metrics endpoint gave no complete answer within {took:.3g}s")
        if self.fail is not None:
            raise self.fail
        self._advance(versions)
        out = {}
        for v in versions:
            segs = {seg: self.counters(v, seg) for seg in self.segments}
            if "" not in segs:
                parts = list(segs.values())
                segs[""] = Counters(requests=sum(c.requests for c in parts),
                                    events={"errors": sum(c.events["errors"] for c in parts)},
                                    latency_buckets=tuple((b, sum(c.latency_buckets[i][1] for c in parts))
                                                          for i, b in enumerate(BOUNDS)),
                                    cost_total=round(sum(c.cost_total for c in parts), 9),
                                    gauges=dict(parts[0].gauges))
            out[v] = Reading(segments=segs)
        return out


def set_deployment_of(path, name: str, **fields) -> None:
    """Commit a deployment state directly (what the lifecycle commands would have produced)."""
    reg = Registry(path)
    dep = reg.deployment(name)
    dep.update(fields)
    reg.store.transact(lambda snap: Plan(files={f"deployments/{name}.yaml": yamlio.dumps(dep).encode()},
                                         subject="test: set deployment"), branch="main")


def set_deployment(path, **fields) -> None:
    set_deployment_of(path, NAME, **fields)


@pytest.fixture(scope="module")
def canary_template(tmp_path_factory):
    """A registry serving 1.0.0 with 1.0.1 in canary at 10 %, built once per module."""
    from conftest import bundle_text, new_registry
    from lifecyclekit import isolated_env

    base = tmp_path_factory.mktemp("canary")
    with isolated_env(tmp_path_factory):
        path = new_registry(base / "reg")
        reg = Registry(path)
        for filename, fields in (("a.yaml", dict(version=ACTIVE)),
                                 ("b.yaml", dict(version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt")),
                                 ("c.yaml", dict(version=SHADOW, parent=CANARY, temperature=0.5,
                                                 prompt="prompts/p2.txt"))):
            (base / filename).write_text(bundle_text(**fields))
            ops.register(reg, base / filename)
        set_deployment(path, active=ACTIVE,
                       canary={"version": CANARY, "percent": 10, "started": watch.iso(time.time())},
                       versions={ACTIVE: "active", CANARY: "canary", SHADOW: "registered"})
    return path


@pytest.fixture
def canary_registry(canary_template, tmp_path):
    """A fresh copy of the canary registry for one test."""
    dest = tmp_path / "reg"
    shutil.copytree(canary_template, dest, symlinks=True)
    return dest


def make_watcher(path, clock, provider, options=watch.WatchOptions(interval=5), config_patch=None, **kw):
    reg = Registry(path)
    config = reg.config().as_dict()
    config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}  # the judge's defaults
    for section, values in (config_patch or {}).items():
        config[section] = {**config[section], **values}
    polls, events = [], []
    w = watch.Watcher(reg, NAME, options, provider=provider, config=config, clock=clock, monotonic=clock,
                      sleep=clock.sleep, on_poll=polls.append, on_event=events.append, **kw)
    return w, polls, events


def last_message(path) -> str:
    return git(path, "log", "-1", "--format=%B")


def trailers(path, key: str) -> list[str]:
    out = git(path, "log", "-1", f"--format=%(trailers:key={key},valueonly)")
    return [line for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize("text,seconds", [("5", 5), ("5s", 5), ("2m", 120), ("1h", 3600), ("500ms", 0.5),
                                          ("0.5s", 0.5), (" 10s ", 10), (7, 7)])
def test_durations(text, seconds):
    assert watch.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "0s", "-1", "5x", "5 m s", "inf", "nan", "1e3"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError):
        watch.parse_duration(text)


# --------------------------------------------------------------------------- judging and acting

FAST = {"analysis": {"min_duration_seconds": 60}}


def test_healthy_canary_is_left_alone_for_the_whole_duration(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 90, CANARY: 10})
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval="5s", max_duration="2m", dry_run=True))
    result = w.run()
    assert result.outcome == watch.NO_DECISION and result.exit_code == 0
    assert len(polls) == 24 and result.polls == 24  # every 5 s for 2 minutes
    assert clock.slept and all(s == 5 for s in clock.slept)
    assert polls[-1].decision.results[0].verdict in ("pass", "inconclusive")
    assert all(p.action != "rollback" for p in polls)
    assert repo_state(canary_registry) == before


def test_regressed_canary_is_rolled_back_with_evidence(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK and result.exit_code == 1
    assert polls[-1].decision.action == "rollback" and polls[0].decision.action == "continue"
    assert result.detect_to_commit_seconds is not None and result.detect_to_commit_seconds >= 0
    dep = Registry(canary_registry).deployment(NAME)
    assert dep["canary"] is None and dep["active"] == ACTIVE and dep["versions"][CANARY] == "rolled-back"
    assert git(canary_registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback {NAME} {CANARY}")
    evidence = trailers(canary_registry, "Modelctl-Evidence")
    assert evidence and evidence[0].startswith("error_rate fail; canary=0.03")
    for part in ("control=0.01 (control", "cusum_llr=", "intervals=", "alpha="):
        assert part in evidence[0], evidence[0]
    assert trailers(canary_registry, "Modelctl-Reason")[0].startswith("watch error_rate crossed")
    assert result.commit == git(canary_registry, "rev-parse", "HEAD").strip()


def test_metrics_errors_hold_then_exit_4_and_write_nothing(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.5})
    provider.fail = MetricsError("cannot connect to metrics endpoint http://127.0.0.1:9/metrics")
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    result = w.run()
    assert result.outcome == watch.HELD and result.exit_code == 4
    assert len(polls) == 5  # analysis.consecutive_errors
    assert all(p.error and "cannot connect" in p.error for p in polls)
    assert "holding" in result.message and "nothing was written" in result.message
    assert repo_state(canary_registry) == before


def test_unexpected_provider_exceptions_are_error_polls_not_crashes(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    provider.fail = ValueError("garbage")
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, max_duration=15))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert [p.error for p in polls] == ["garbage"] * 3
    assert all(r.verdict == "error" for p in polls for r in p.decision.results)


def test_on_errors_rollback_is_the_fail_safe_rollback(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    provider.fail = MetricsError("metrics endpoint answered HTTP 500")
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5),
                               config_patch={"analysis": {"on_errors": "rollback", "consecutive_errors": 3}})
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK and len(polls) == 3
    reason = trailers(canary_registry, "Modelctl-Reason")[0]
    assert reason.startswith("watch fail-safe - no usable data for 3 polls")  # trailer text neutralises ':'
    assert "HTTP 500" in trailers(canary_registry, "Modelctl-Evidence")[0]


def test_recovering_endpoint_resets_the_error_count(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    for i in range(12):
        provider.fail = MetricsError("down") if i % 4 != 3 else None
        assert w.poll() is None, f"poll {i}"
        clock.sleep(5)
    assert max(p.decision.error_polls for p in polls) == 3


def test_dry_run_reports_the_rollback_it_would_make(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    result = w.run()
    assert result.outcome == watch.WOULD_ROLL_BACK and result.exit_code == 1
    assert result.evidence and result.evidence[0].startswith("error_rate fail")
    assert all(p.dry_run for p in polls)
    assert repo_state(canary_registry) == before
    assert not (Registry(canary_registry).store.git_dir / "modelctl-watch").exists()


def test_json_rows_count_the_failing_polls_in_a_row_of_each_metric(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100},
                           cost={ACTIVE: 0.001, CANARY: 0.003})  # cost fails every poll, alert only
    w, polls, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval=5, max_duration="2m", dry_run=True))
    w.run()
    rows = [{r["metric"]: r["streak"] for r in p.to_json()["metrics"] if not r.get("segment")} for p in polls]
    cost = [r["cost_per_request"] for r in rows]
    first_fail = next(i for i, p in enumerate(polls)
                      if any(r.metric == "cost_per_request" and r.verdict == "fail" for r in p.decision.results))
    assert cost[first_fail:] == list(range(1, len(cost) - first_fail + 1)), cost
    assert all(r["error_rate"] == 0 for r in rows)


def test_alert_metrics_are_reported_once_and_never_roll_back(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100},
                           cost={ACTIVE: 0.001, CANARY: 0.003})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=5, max_duration="5m", dry_run=True))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert [e.kind for e in events if e.kind != "header"] == ["alert"]
    assert "cost_per_request" in [e for e in events if e.kind == "alert"][0].message
    assert any(p.action == "alert" for p in polls)
    assert repo_state(canary_registry) == before


def test_latency_regression_from_histograms_rolls_back(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100},
                           latency={ACTIVE: 850, CANARY: 1400})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK
    assert any(line.startswith("latency fail") for line in trailers(canary_registry, "Modelctl-Evidence"))


def test_segment_regression_rolls_back_naming_the_segment(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 4500, CANARY: 500},
                           segments={"eu": 0.1, "us": 0.9})
    provider.segment_rates[(CANARY, "eu")] = 0.06
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK
    assert "segment eu" in result.message
    assert any(line.startswith("error_rate[eu] fail") for line in trailers(canary_registry, "Modelctl-Evidence"))


def test_sample_ratio_mismatch_holds_the_verdict_and_never_rolls_back(canary_registry):
    clock = FakeClock()
    # configured 10 %, served 2 %: whatever the error rates say, the comparison is invalid
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 980, CANARY: 20})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=5, max_duration="10m", dry_run=True))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert polls[-1].action == "srm-hold" and all(p.action != "rollback" for p in polls)
    assert [e.kind for e in events].count("srm") == 1
    assert repo_state(canary_registry) == before


def test_header_says_the_indifference_point_and_the_time_to_detect(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 9, CANARY: 1})
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=5, max_duration="1m", dry_run=True))
    w.run()
    headers = [e for e in events if e.kind == "header"]
    assert len(headers) == 2  # at the start, and once the canary's traffic is measured
    text = headers[-1].message
    assert "error_rate: regressions of" in text and "x the control are failed" in text
    assert "canary requests to detect" in text and "at 1 canary requests/s" in text
    assert "WARNING: --max-duration 60s is too short" in text


def test_max_duration_is_a_hard_bound_against_a_slow_endpoint(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    provider.delay = 20.0  # every answer takes 20 s
    w, polls, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval=1, max_duration=6, dry_run=True))
    start = clock.now
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert clock.now - start <= 6.0 + 1e-9  # not 20.8 s for 6 s (issue 11)
    assert all(left is not None and left <= 6 for _, _, left in provider.calls)
    assert "within 6" in polls[0].error


def test_a_restarted_watch_resumes_the_judgement_instead_of_spending_fresh_alpha(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    straight, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    needed = straight.run().polls
    assert needed > 3
    # the same canary, watched by processes that each stop after two polls
    clock2 = FakeClock(clock.now + 10_000)
    provider2 = SimProvider(clock2, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    runs = 0
    while True:
        runs += 1
        w, polls, _ = make_watcher(canary_registry, clock2, provider2, watch.WatchOptions(interval=5, max_duration=10))
        result = w.run()
        if result.outcome != watch.NO_DECISION:
            break
        clock2.sleep(5)
        assert runs < needed
    assert result.outcome == watch.ROLLED_BACK
    assert runs * 2 >= needed - 1  # the statistic carried over between runs
    assert runs <= (needed + 1) // 2 + 1
    assert not (Registry(canary_registry).store.git_dir / "modelctl-watch" / f"{NAME}.json").exists()


def test_once_polls_once_and_carries_the_judgement_to_the_next_run(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    outcomes = []
    for _ in range(30):
        w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
        result = w.run()
        assert len(polls) == 1 and not clock.slept
        outcomes.append(result.outcome)
        if result.outcome != watch.NO_DECISION:
            break
        clock.now += 30  # cron runs it again later
    assert outcomes[-1] == watch.ROLLED_BACK and len(outcomes) >= 2
    assert not (Registry(canary_registry).store.git_dir / "modelctl-watch" / f"{NAME}.json").exists()


def test_saved_state_of_another_canary_or_damaged_is_a_fresh_start(canary_registry):
    state_dir = Registry(canary_registry).store.git_dir / "modelctl-watch"
    state_dir.mkdir()
    for text in (json.dumps({"key": {"canary": "9.9.9", "started": None}, "judge": {"schema": "x"}}),
                 "{not json",
                 json.dumps({"key": {"canary": CANARY, "started": watch.read_target(Registry(canary_registry),
                                                                                   NAME).canary.started_raw},
                             "judge": {"schema": "modelctl/judge-state-v1", "tests": 7}})):
        (state_dir / f"{NAME}.json").write_text(text)
        clock = FakeClock()
        w, polls, _ = make_watcher(canary_registry, clock, SimProvider(clock, {}), watch.WatchOptions(once=True))
        assert w.run().outcome == watch.NO_DECISION
        assert polls[0].decision.action == "continue"


def test_canary_window_starts_when_the_canary_started(canary_registry):
    clock = FakeClock()
    started = clock.now - 600
    set_deployment(canary_registry, canary={"version": CANARY, "percent": 10, "started": watch.iso(started)})
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
    w.run()
    versions, since, _ = provider.calls[0]
    assert versions == [ACTIVE, CANARY]
    assert since == pytest.approx(600, abs=1)


def test_canary_ended_elsewhere_stops_the_watch_naming_who(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    assert w.poll() is None
    ops.rollback(Registry(canary_registry), NAME, reason="on-call pulled it")
    result = w.poll()
    assert result.outcome == watch.ENDED and result.exit_code == 0
    assert f"canary {CANARY}" in result.message and "rolled-back" in result.message
    assert f"rollback {CANARY} in commit" in result.message and "by Ada Tester <ada@example.com>" in result.message


def test_nothing_to_watch(canary_registry):
    set_deployment(canary_registry, canary=None, versions={ACTIVE: "active", CANARY: "registered",
                                                           SHADOW: "registered"})
    clock = FakeClock()
    provider = SimProvider(clock, {})
    w, polls, _ = make_watcher(canary_registry, clock, provider)
    result = w.run()
    assert result.outcome == watch.NOTHING and result.exit_code == 0 and not polls and not provider.calls


def test_unknown_model_is_not_found(canary_registry):
    clock = FakeClock()
    w, _, _ = make_watcher(canary_registry, clock, SimProvider(clock, {}), watch.WatchOptions(once=True))
    w.name = "no-such-model"
    with pytest.raises(UsageError, match="no model named"):
        w.run()


def test_a_failing_shadow_is_reported_and_never_rolled_back(canary_registry):
    set_deployment(canary_registry, shadow={"version": SHADOW, "percent": 100},
                   versions={ACTIVE: "active", CANARY: "canary", SHADOW: "shadow"})
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01, SHADOW: 0.2},
                           rps={ACTIVE: 900, CANARY: 100, SHADOW: 1000})
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval=5, max_duration=60, dry_run=True))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert provider.calls[0][0] == [ACTIVE, CANARY, SHADOW]
    assert polls[-1].shadow_decision.action == "rollback"  # what it would deserve, reported only
    doc = polls[-1].to_json()
    assert doc["shadow"]["version"] == SHADOW and doc["shadow"]["verdict"] == "rollback"
    assert repo_state(canary_registry) == before


def test_shadow_alone_is_watched_for_the_report(canary_registry):
    set_deployment(canary_registry, canary=None, shadow={"version": SHADOW, "percent": 50},
                   versions={ACTIVE: "active", CANARY: "registered", SHADOW: "shadow"})
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, SHADOW: 0.3})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, max_duration=30))
    result = w.run()
    assert result.outcome == watch.NO_DECISION and result.exit_code == 0
    assert polls and all(p.decision is None and p.shadow_decision is not None for p in polls)


# --------------------------------------------------------------------------- --advance


def test_advance_steps_through_the_canary_steps_then_promotes_with_evidence(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.005}).route(canary_registry, 3000)
    w, polls, events = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=10, advance=True),
                                    config_patch={"canary": {"steps": [10, 25, 50], "min_step_seconds": 60},
                                                  **FAST})
    step_times = []
    w.on_event = lambda e: (events.append(e), step_times.append(clock.now) if e.kind == "step" else None)
    start = clock.now
    result = w.run()
    assert result.outcome == watch.PROMOTED and result.exit_code == 0
    steps = [e for e in events if e.kind == "step"]
    assert [e.data["percent"] for e in steps] == [25, 50]
    # at least min_step_seconds on every step, by the injected clock
    assert step_times[0] - start >= 60 and step_times[1] - step_times[0] >= 60
    assert clock.now - step_times[1] >= 60
    dep = Registry(canary_registry).deployment(NAME)
    assert dep["active"] == CANARY and dep["canary"] is None
    subjects = git(canary_registry, "log", "-3", "--format=%s").splitlines()
    assert subjects[0].startswith(f"modelctl: promote {NAME} {CANARY}")
    assert "25% -> 50%" in subjects[1] and "10% -> 25%" in subjects[2]
    for rev in ("HEAD", "HEAD~1", "HEAD~2"):  # every decision commit carries its evidence
        evidence = git(canary_registry, "log", "-1", "--format=%(trailers:key=Modelctl-Evidence,valueonly)", rev)
        assert "error_rate pass; canary=" in evidence and "cusum_llr=" in evidence, evidence


def test_advance_waits_while_the_verdict_is_not_steady(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.0125}, rps={ACTIVE: 900, CANARY: 100})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=10, advance=True, max_duration="3m"),
                                    config_patch={"canary": {"min_step_seconds": 0}, **FAST})
    result = w.run()
    assert result.outcome == watch.NO_DECISION and not [e for e in events if e.kind == "step"]
    assert repo_state(canary_registry)["refs"] == before["refs"]


def test_advance_waits_for_the_minimum_duration(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.001}, rps={ACTIVE: 9000, CANARY: 1000})
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=10, advance=True, max_duration="5m", dry_run=True),
                                    config_patch={"canary": {"min_step_seconds": 0},
                                                  "analysis": {"min_duration_seconds": 600}})
    w.run()
    assert not [e for e in events if e.kind == "would-step"]
    assert "min_duration_seconds" in polls[-1].decision.reason


def test_advance_in_dry_run_only_says_what_it_would_do(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.005}).route(canary_registry, 3000)
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=10, advance=True, dry_run=True, max_duration="5m"),
                                    config_patch={"canary": {"min_step_seconds": 0}, **FAST})
    w.run()
    assert [e.kind for e in events if e.kind != "header"] == ["would-step"]
    assert repo_state(canary_registry) == before


def test_a_step_after_a_humans_change_exits_3_and_writes_nothing(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.005}).route(canary_registry, 3000)
    w, polls, events = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=10, advance=True),
                                    config_patch={"canary": {"min_step_seconds": 0}, **FAST})

    class Human:
        """Sets the canary back to 5 % between watch's last read and its step."""

        def __init__(self, inner):
            self.inner = inner

        def step(self, target, percent, **kw):
            ops.canary(Registry(canary_registry), NAME, CANARY, 5, reason="too fast, back to 5 %")
            self.before = repo_state(canary_registry)
            return self.inner.step(target, percent, **kw)

    human = Human(w.actions)
    w.actions = human
    result = w.run()
    assert result.outcome == watch.CHANGED and result.exit_code == 3
    assert f"it was {CANARY} at 10%, now canary {CANARY} at 5%" in result.message
    assert "nothing was written" in result.message and "by Ada Tester" in result.message
    assert repo_state(canary_registry) == human.before


# --------------------------------------------------------------------------- races


def test_second_watcher_finds_the_rollback_done_and_exits_0(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    first, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    r1 = first.run()
    assert r1.outcome == watch.ROLLED_BACK
    count = git(canary_registry, "rev-list", "--count", "HEAD")
    # the second had decided on the old tip: the lifecycle re-checks and finds it done
    second, _, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    target = watch.Target(NAME, None, ACTIVE, watch.Split(CANARY, 10), None, {}, {})
    r2 = second._rollback(target, polls[-1].decision, clock())
    assert r2.outcome == watch.ALREADY_ROLLED_BACK and r2.exit_code == 0
    assert "Ada Tester" in r2.message
    assert git(canary_registry, "rev-list", "--count", "HEAD") == count


def test_rollback_of_a_replaced_canary_exits_3_and_writes_nothing(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    w.run()
    # someone else promotes the canary to active between the poll and the rollback commit
    set_deployment(canary_registry, canary=None, active=CANARY, previous=ACTIVE,
                   versions={ACTIVE: "deprecated", CANARY: "active", SHADOW: "registered"})
    live, _, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    before = repo_state(canary_registry)
    result = live._rollback(watch.Target(NAME, None, ACTIVE, watch.Split(CANARY, 10), None, {}, {}),
                            polls[-1].decision, clock())
    assert result.exit_code == 3 and "no longer the canary version" in result.message
    assert repo_state(canary_registry) == before


# --------------------------------------------------------------------------- record and replay


def test_a_recorded_watch_replays_to_the_same_decision_at_the_same_poll(canary_registry, tmp_path):
    from modelctl import replay

    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.02}, rps={ACTIVE: 900, CANARY: 100},
                           segments={"eu": 0.2, "us": 0.8})
    provider.segment_rates[(ACTIVE, "eu")] = 0.02
    record = tmp_path / "polls.jsonl"
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, record=record))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK
    lines = record.read_text().splitlines()
    assert len(lines) == result.polls and json.loads(lines[0])["schema"] == "modelctl/poll-v1"
    config = {**Registry(canary_registry).config().as_dict(), "analysis": make_watcher.__defaults__ and
              {k: v for k, v in Registry(canary_registry).config().analysis.as_dict().items() if k != "metrics"}}
    [canary] = replay.replay(record, config, replay.registry_prior(Registry(canary_registry)))
    assert canary.action == "rollback" and canary.decided == result.polls
    assert canary.decision.evidence_lines() == list(result.evidence)
    assert [d.action for d in canary.decisions] == [p.decision.action for p in polls]


def test_replay_judges_each_canary_of_a_file_separately(tmp_path):
    from modelctl import replay
    from modelctl.observation import Poll

    lines = []
    for cid, canary_rate in (("m:1.0.1:1", 0.01), ("m:1.0.2:2", 0.05)):
        for i in range(40):
            n0, n1 = 900 * i * 5, 100 * i * 5
            readings = {ACTIVE: Reading(segments={"": Counters(requests=n0, events={"errors": int(n0 * 0.01)})}),
                        cid[2:7]: Reading(segments={"": Counters(requests=n1, events={"errors": int(n1 * canary_rate)})})}
            lines.append(Poll(time=1000.0 + 5 * i, control=ACTIVE, canary=cid[2:7], percent=10, readings=readings,
                              model="m", canary_id=cid).to_json())
    path = tmp_path / "two.jsonl"
    path.write_text("\n".join(json.dumps(doc) for doc in lines) + "\n")
    items = replay.replay(path, {"analysis": {"metrics": {"error_rate": {"type": "rate"}}}})
    assert [(i.canary_id, i.action) for i in items] == [("m:1.0.1:1", "no-decision"), ("m:1.0.2:2", "rollback")]
    assert len(items[0].decisions) == 40 and items[1].decided < 40


@pytest.mark.parametrize("text, message", [
    ("not json\n", "two.jsonl:1: not a JSON object"),
    ('{"schema": "modelctl/poll-v1"}\n', "two.jsonl:1: poll.time must be a number"),
    ("\n" + json.dumps({"schema": "modelctl/poll-v0"}) + "\n", "two.jsonl:2: poll: schema must be"),
])
def test_replay_refuses_a_bad_line_naming_file_and_line(tmp_path, text, message):
    from modelctl import replay
    from modelctl.errors import ValidationError

    path = tmp_path / "two.jsonl"
    path.write_text(text)
    with pytest.raises(ValidationError) as caught:
        replay.replay(path, {})
    assert message in str(caught.value)


# --------------------------------------------------------------------------- rendering


def test_json_lines_one_per_poll_and_a_result(canary_registry, capsys):
    from modelctl import render

    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    view = render.WatchView(json_lines=True)
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    w.on_poll = view.poll
    w.on_event = view.event
    result = w.run()
    view.result(result)
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [d["event"] for d in lines if d["event"] != "header"] == ["poll"] * result.polls + ["result"]
    assert all(d["schema"] == "modelctl/v1" for d in lines)
    metric = [d for d in lines if d["event"] == "poll"][-1]["metrics"][0]
    assert set(metric) >= {"metric", "segment", "verdict", "canary", "control", "canary_n", "control_n",
                           "statistic", "value", "bound", "alpha"}
    assert lines[-1]["outcome"] == watch.WOULD_ROLL_BACK and lines[-1]["exit_code"] == 1
    assert "would roll back" in out.err


def test_terminal_table_shows_every_column(canary_registry):
    from rich.console import Console

    from modelctl import render

    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    w.run()
    table = render._rich_watch_table("t", polls[-1].decision, "decision: rollback")
    console = Console(file=io.StringIO(), width=200, no_color=True)
    console.print(table)
    text = console.file.getvalue()
    for column in render.WATCH_COLUMNS:
        assert column in text
    assert "error_rate" in text and "1.00% (control)" in text and "3.00%" in text and "llr" in text
