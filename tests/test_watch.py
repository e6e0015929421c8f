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
from modelctl.analysis import Sample
from modelctl.errors import Conflict, MetricsError, UsageError
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


class SimProvider:
    """Traffic on the fake clock: each version serves `rps` at `error_rate` from the first fetch on."""

    name = "sim"

    def __init__(self, clock: FakeClock, rates: dict[str, float], rps: dict[str, float] | None = None,
                 latency: dict[str, float] | None = None, cost: dict[str, float] | None = None):
        self.clock = clock
        self.rates = dict(rates)
        self.rps = rps or {}
        self.latency = latency or {}
        self.cost = cost or {}
        self.start: float | None = None
        self.fail: Exception | None = None
        self.calls: list[tuple[list[str], float]] = []

    def fetch(self, model, versions, since_seconds):
        self.calls.append((list(versions), since_seconds))
        if self.fail is not None:
            raise self.fail
        if self.start is None:
            self.start = self.clock()
        elapsed = self.clock() - self.start
        out = {}
        for v in versions:
            n = math.floor(self.rps.get(v, 100.0) * elapsed)
            out[v] = Sample(requests=n, errors=math.floor(n * self.rates.get(v, 0.01)),
                            latency_p95_ms=self.latency.get(v, 850.0), cost_per_request=self.cost.get(v, 0.0011))
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
    from conftest import bundle_text

    from conftest import new_registry
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
    config = reg.config()
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


def test_healthy_canary_is_left_alone_for_the_whole_duration(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 90, CANARY: 10})
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval="5s", max_duration="2m"))
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
    # two failing polls in a row (consecutive_failures), the first poll being the empty start
    assert [p.decision.results[0].verdict for p in polls][-2:] == ["fail", "fail"]
    assert result.detect_to_commit_seconds is not None and result.detect_to_commit_seconds >= 0
    dep = Registry(canary_registry).deployment(NAME)
    assert dep["canary"] is None and dep["active"] == ACTIVE and dep["versions"][CANARY] == "rolled-back"
    assert git(canary_registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback {NAME} {CANARY}")
    evidence = trailers(canary_registry, "Modelctl-Evidence")
    assert evidence and evidence[0].startswith("error_rate fail; canary=0.03")
    assert "sprt_llr=" in evidence[0] and "threshold=" in evidence[0] and "polls=2" in evidence[0]
    assert trailers(canary_registry, "Modelctl-Reason")[0].startswith("watch error_rate failed 2 poll(s)")
    assert result.commit == git(canary_registry, "rev-parse", "HEAD").strip()


def test_a_single_failing_poll_does_not_roll_back(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5),
                               config_patch={"analysis": {"consecutive_failures": 3}})
    before = repo_state(canary_registry)
    for _ in range(3):
        assert w.poll() is None
        clock.sleep(5)
    assert polls[-1].decision.results[0].verdict == "fail"
    assert polls[-1].decision.streaks["error_rate"] < 3
    assert repo_state(canary_registry) == before
    result = None
    while result is None:
        clock.sleep(5)
        result = w.poll()
    assert result.outcome == watch.ROLLED_BACK
    assert polls[-1].decision.streaks["error_rate"] == 3


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
    assert reason.startswith("watch fail-safe - no usable data for 3 polls") or \
        reason.startswith("watch fail-safe: no usable data for 3 polls")
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


def test_alert_metrics_are_reported_once_and_never_roll_back(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100},
                           cost={ACTIVE: 0.001, CANARY: 0.002})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, max_duration=60))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert [e.kind for e in events] == ["alert"]
    assert "cost_per_request" in events[0].message
    assert any(p.action == "alert" for p in polls)
    assert repo_state(canary_registry) == before


def test_latency_regression_rolls_back(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100},
                           latency={ACTIVE: 850, CANARY: 1400})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK
    assert any(line.startswith("latency_p95_ms fail") for line in trailers(canary_registry, "Modelctl-Evidence"))


def test_once_polls_once_and_carries_streaks_to_the_next_run(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    outcomes = []
    for _ in range(3):
        w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
        result = w.run()
        assert len(polls) == 1 and not clock.slept
        outcomes.append(result.outcome)
        clock.now += 30  # cron runs it again later
    # run 1: no traffic yet; run 2: first failing poll; run 3: the second in a row -> rollback
    assert outcomes == [watch.NO_DECISION, watch.NO_DECISION, watch.ROLLED_BACK]
    assert not (Registry(canary_registry).store.git_dir / "modelctl-watch" / f"{NAME}.json").exists()


def test_once_state_of_another_canary_is_ignored(canary_registry):
    state_dir = Registry(canary_registry).store.git_dir / "modelctl-watch"
    state_dir.mkdir()
    (state_dir / f"{NAME}.json").write_text(json.dumps(
        {"key": {"canary": "9.9.9", "started": None}, "failures": {"error_rate": 5}, "errors": 0, "polls": 9}))
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    provider.start = clock.now - 60  # a minute of traffic already
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
    result = w.run()
    assert result.outcome == watch.NO_DECISION
    assert polls[0].decision.streaks["error_rate"] == 1


def test_damaged_once_state_is_a_fresh_start(canary_registry):
    state_dir = Registry(canary_registry).store.git_dir / "modelctl-watch"
    state_dir.mkdir()
    (state_dir / f"{NAME}.json").write_text("{not json")
    clock = FakeClock()
    w, polls, _ = make_watcher(canary_registry, clock, SimProvider(clock, {}), watch.WatchOptions(once=True))
    assert w.run().outcome == watch.NO_DECISION


def test_canary_window_starts_when_the_canary_started(canary_registry):
    clock = FakeClock()
    started = clock.now - 600
    set_deployment(canary_registry, canary={"version": CANARY, "percent": 10, "started": watch.iso(started)})
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
    w.run()
    versions, since = provider.calls[0]
    assert versions == [ACTIVE, CANARY]
    assert since == pytest.approx(600, abs=1)


def test_canary_without_started_uses_the_commit_that_started_it(canary_registry):
    set_deployment(canary_registry, canary={"version": CANARY, "percent": 10})
    commit_time = int(git(canary_registry, "log", "-1", "--format=%ct"))
    # the test's own commit carries no lifecycle trailers: watch falls back to its start
    target = watch.read_target(Registry(canary_registry), NAME)
    assert target.canary.started is None
    clock = FakeClock(commit_time + 100)
    provider = SimProvider(clock, {})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(once=True))
    w.run()
    assert provider.calls[0][1] == 1  # the window starts with the watch


def test_canary_ended_underneath_stops_the_watch(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    assert w.poll() is None
    set_deployment(canary_registry, canary=None, versions={ACTIVE: "active", CANARY: "rolled-back",
                                                           SHADOW: "registered"})
    result = w.poll()
    assert result.outcome == watch.ENDED and result.exit_code == 0
    assert f"canary {CANARY}" in result.message and "rolled-back" in result.message


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
    reg = Registry(canary_registry)
    w = watch.Watcher(reg, "no-such-model", watch.WatchOptions(once=True), provider=SimProvider(clock, {}),
                      clock=clock, monotonic=clock, sleep=clock.sleep)
    with pytest.raises(UsageError, match="no model named"):
        w.run()


def test_a_failing_shadow_is_reported_and_never_rolled_back(canary_registry):
    set_deployment(canary_registry, shadow={"version": SHADOW, "percent": 100},
                   versions={ACTIVE: "active", CANARY: "canary", SHADOW: "shadow"})
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01, SHADOW: 0.2},
                           rps={ACTIVE: 900, CANARY: 100, SHADOW: 1000})
    before = repo_state(canary_registry)
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, max_duration=60))
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


def test_advance_steps_through_the_canary_steps_then_promotes(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.002}, rps={ACTIVE: 900, CANARY: 300})
    w, polls, events = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=10, advance=True),
                                    config_patch={"canary": {"steps": [10, 25, 50], "min_step_seconds": 60}})
    step_times = []
    w.on_event = lambda e: (events.append(e), step_times.append(clock.now))
    start = clock.now
    result = w.run()
    assert result.outcome == watch.PROMOTED and result.exit_code == 0
    assert [e.kind for e in events] == ["step", "step"]
    assert [e.data["percent"] for e in events] == [25, 50]
    # at least min_step_seconds on every step, by the injected clock
    assert step_times[0] - start >= 60 and step_times[1] - step_times[0] >= 60
    assert clock.now - step_times[1] >= 60
    dep = Registry(canary_registry).deployment(NAME)
    assert dep["active"] == CANARY and dep["canary"] is None
    subjects = git(canary_registry, "log", "-3", "--format=%s").splitlines()
    assert subjects[0].startswith(f"modelctl: promote {NAME} {CANARY}")
    assert "25% -> 50%" in subjects[1] and "10% -> 25%" in subjects[2]


def test_advance_waits_while_the_verdict_is_not_steady(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.0125}, rps={ACTIVE: 900, CANARY: 100})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=10, advance=True, max_duration="3m"),
                                    config_patch={"canary": {"min_step_seconds": 0}})
    result = w.run()
    assert result.outcome == watch.NO_DECISION and not events
    assert repo_state(canary_registry) == before


def test_advance_in_dry_run_only_says_what_it_would_do(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.002}, rps={ACTIVE: 900, CANARY: 300})
    before = repo_state(canary_registry)
    w, polls, events = make_watcher(canary_registry, clock, provider,
                                    watch.WatchOptions(interval=10, advance=True, dry_run=True, max_duration="5m"),
                                    config_patch={"canary": {"min_step_seconds": 0}})
    w.run()
    assert [e.kind for e in events] == ["would-step"]
    assert repo_state(canary_registry) == before


# --------------------------------------------------------------------------- races


def test_second_watcher_finds_the_rollback_done_and_exits_0(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    first, _, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    second, _, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    # both judge the same canary; the first commits while the second is between its polls
    for w in (first, second):
        assert w.poll() is None
    clock.sleep(5)
    assert first.poll() is None and second.poll() is None
    clock.sleep(5)
    r1 = first.poll()
    target = watch.read_target(Registry(canary_registry), NAME)
    assert r1.outcome == watch.ROLLED_BACK and target.canary is None
    count = git(canary_registry, "rev-list", "--count", "HEAD")
    # the second had already decided on the old tip: the lifecycle re-checks and finds it done
    r2 = second._rollback(watch.Target(NAME, None, ACTIVE, watch.Split(CANARY, 10), None, {}, {}, {}),
                          first_decision(second, clock), clock())
    assert r2.outcome == watch.ALREADY_ROLLED_BACK and r2.exit_code == 0
    assert "Ada Tester" in r2.message
    assert git(canary_registry, "rev-list", "--count", "HEAD") == count


def first_decision(w, clock):
    """A rollback decision of watcher w from one more failing poll's results (without reading the tip)."""
    from modelctl.analysis import decide, judge_poll

    samples = w.provider.fetch(NAME, [ACTIVE, CANARY], 10)
    results = judge_poll(w.analysis, samples[CANARY], samples[ACTIVE], {}, now=clock())
    return decide(results, w.judge.state, w.analysis)


def test_rollback_of_a_replaced_canary_is_a_conflict(canary_registry):
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    w, _, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5))
    w.poll()
    clock.sleep(5)
    w.poll()
    clock.sleep(5)
    # someone else promotes the canary to active between the poll and the rollback commit
    set_deployment(canary_registry, canary=None, active=CANARY, previous=ACTIVE,
                   versions={ACTIVE: "deprecated", CANARY: "active", SHADOW: "registered"})
    decision = first_decision(w, clock)
    before = repo_state(canary_registry)
    with pytest.raises(Conflict):
        w._rollback(watch.Target(NAME, None, ACTIVE, watch.Split(CANARY, 10), None, {}, {}, {}), decision, clock())
    assert repo_state(canary_registry) == before


# --------------------------------------------------------------------------- rendering


def test_json_lines_one_per_poll_and_a_result(canary_registry, capsys):
    from modelctl import render

    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.05}, rps={ACTIVE: 900, CANARY: 100})
    view = render.WatchView(json_lines=True)
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, dry_run=True))
    w.on_poll = view.poll
    result = w.run()
    view.result(result)
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [d["event"] for d in lines] == ["poll"] * result.polls + ["result"]
    assert all(d["schema"] == "modelctl/v1" for d in lines)
    metric = lines[-2]["metrics"][0]
    assert set(metric) >= {"metric", "verdict", "canary", "baseline", "threshold", "canary_n", "baseline_n",
                           "statistic", "value", "streak"}
    assert lines[-1]["outcome"] == watch.WOULD_ROLL_BACK and lines[-1]["exit_code"] == 1
    assert "would roll back" in out.err


def test_json_lines_never_contain_nan(capsys):
    from modelctl import render
    from modelctl.analysis import AnalysisConfig, Judge

    judge = Judge(AnalysisConfig())
    decision = judge.poll(Sample(requests=500, errors=5, latency_p95_ms=float("inf"), cost_per_request=0.001),
                          Sample(requests=5000, errors=50, latency_p95_ms=900, cost_per_request=0.001), {})
    report = watch.PollReport(poll=1, at=0, model=NAME, active=ACTIVE, canary=watch.Split(CANARY, 5),
                              shadow=None, since_seconds=10, decision=decision, shadow_decision=None,
                              error=None, seconds=0.01)
    render.WatchView(json_lines=True).poll(report)
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text.replace('"inf"', "")
    json.loads(text)


def test_terminal_table_shows_every_column(monkeypatch):
    from rich.console import Console

    from modelctl import render
    from modelctl.analysis import AnalysisConfig, Judge

    judge = Judge(AnalysisConfig())
    decision = judge.poll(Sample(requests=500, errors=15, latency_p95_ms=950, cost_per_request=0.001),
                          Sample(requests=5000, errors=50, latency_p95_ms=900, cost_per_request=0.001), {})
    table = render._rich_watch_table("t", decision, "decision: continue")
    console = Console(file=io.StringIO(), width=160, no_color=True)
    console.print(table)
    text = console.file.getvalue()
    for column in render.WATCH_COLUMNS:
        assert column in text
    assert "error_rate" in text and "1.00% (live)" in text and "3.00%" in text and "llr" in text


def test_http_json_counters_continue_in_a_new_process_and_garbage_is_a_fresh_start():
    from metrics_servers import JsonMetricsServer
    from modelctl.metrics import HttpJsonProvider

    with JsonMetricsServer(NAME) as server:
        server.traffic(CANARY, 1000, 0.01)
        first = HttpJsonProvider(server.url)
        assert first.fetch(NAME, [CANARY])[CANARY].requests == 0
        saved = json.loads(json.dumps(first.export_state()))
        server.traffic(CANARY, 500, 0.02)
        later = HttpJsonProvider(server.url)
        assert later.restore_state(saved)
        sample = later.fetch(NAME, [CANARY])[CANARY]
        assert (sample.requests, sample.errors) == (500, 10)
        for bad in ({"url": saved["url"], "tracker": {"counters": [[1, 2]]}}, {"url": "http://elsewhere/x"}, None):
            fresh = HttpJsonProvider(server.url)
            assert not fresh.restore_state(bad)
            assert fresh.fetch(NAME, [CANARY])[CANARY].requests == 0
