"""watch --all's controller on a fake clock: it follows canaries as they start, drops them as they
end, and one model's failure is a note for that model, never the end of the others."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import test_watch
from conftest import bundle_text
from metrics_servers import LocalServer, Reply, Request
from test_watch import ACTIVE, CANARY, NAME, FakeClock, SimProvider, set_deployment_of

from modelctl import ops, watch
from modelctl.controller import Controller
from modelctl.exposition import WatchMetrics
from modelctl.registry import Registry

OTHER = "other-agent"
canary_template = test_watch.canary_template  # the fixtures: a registry with a live canary
canary_registry = test_watch.canary_registry


def add_other(path, tmp_path) -> None:
    reg = Registry(path)
    for filename, fields in (("o1.yaml", dict(name=OTHER, version=ACTIVE)),
                             ("o2.yaml", dict(name=OTHER, version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt"))):
        (tmp_path / filename).write_text(bundle_text(**fields))
        ops.register(reg, tmp_path / filename)
    set_deployment_of(path, OTHER, active=ACTIVE, versions={ACTIVE: "active", CANARY: "registered"})


def controller(path, clock, broken=(), options=None, write_options=None, rates=None):
    events: list[watch.WatchEvent] = []

    def make(name):
        reg = Registry(path)
        config = reg.config().as_dict()
        config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}
        w = watch.Watcher(reg, name, watch.WatchOptions(interval=5), config=config, clock=clock, monotonic=clock,
                          sleep=clock.sleep, on_event=events.append,
                          provider=SimProvider(clock, rates or {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100}))
        if name in broken:
            def boom(poll_start=None, **kwargs):
                raise RuntimeError(f"{name} exploded")
            w.prepare = boom
        return w

    ctl = Controller(Registry(path), options or watch.WatchOptions(interval=5), make_watcher=make,
                     on_event=events.append, monotonic=clock, sleep=clock.sleep, clock=clock,
                     write_options=write_options)
    return ctl, events


def test_canaries_are_followed_as_they_start_and_dropped_as_they_end(canary_registry, tmp_path):
    add_other(canary_registry, tmp_path)
    clock = FakeClock()
    ctl, events = controller(canary_registry, clock)
    first = ctl.cycle()
    assert (first.started, first.followed) == ([NAME], [NAME])  # the other model has no canary yet
    set_deployment_of(canary_registry, OTHER, canary={"version": CANARY, "percent": 5,
                                                      "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})
    clock.sleep(5)
    second = ctl.cycle()
    assert (second.started, second.followed) == ([OTHER], sorted([OTHER, NAME]))
    Registry(canary_registry).rollback(NAME, reason="by hand")
    clock.sleep(5)
    third = ctl.cycle()
    assert [(r.model, r.outcome) for r in third.ended] == [(NAME, watch.ENDED)]
    assert third.followed == [OTHER] and third.errors == {}


def test_one_model_failing_is_a_note_and_the_others_go_on(canary_registry, tmp_path):
    add_other(canary_registry, tmp_path)
    set_deployment_of(canary_registry, OTHER, canary={"version": CANARY, "percent": 5,
                                                      "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})
    clock = FakeClock()
    ctl, events = controller(canary_registry, clock, broken=(OTHER,))
    exported = WatchMetrics()
    ctl.on_cycle = exported.cycle
    reports = [ctl.cycle() for _ in range(3)]
    assert all(r.errors == {OTHER: f"RuntimeError: {OTHER} exploded"} for r in reports)
    assert all(sorted(r.followed) == sorted([NAME, OTHER]) for r in reports)  # still followed, tried again
    notes = [e.message for e in events if e.kind == "note"]
    assert notes and all(f"{OTHER}: unexpected RuntimeError" in n for n in notes)
    assert ctl.watchers[NAME].polls == 3  # the healthy model was judged every cycle
    assert exported.metrics.value("modelctl_controller_model_errors_total", model=OTHER) == 3
    assert exported.metrics.value("modelctl_controller_model_errors_total", model=NAME) is None
    assert exported.metrics.value("modelctl_controller_followed_models") == 2


def test_once_is_one_cycle_and_a_quiet_registry_is_exit_0(canary_registry):
    clock = FakeClock()
    ctl, _ = controller(canary_registry, clock, options=watch.WatchOptions(interval=5, once=True))
    result = ctl.run()
    assert (result.cycles, result.exit_code, result.decisions) == (1, 0, [])
    assert clock.slept == []


def test_max_duration_bounds_the_loop_on_the_fake_clock(canary_registry):
    clock = FakeClock()
    ctl, _ = controller(canary_registry, clock, options=watch.WatchOptions(interval=5, max_duration="30s"))
    result = ctl.run()
    assert result.cycles == 6 and sum(clock.slept) <= 30


# --------------------------------------------------------------------------- a fleet: batched reads


FLEET = 20


@pytest.fixture(scope="module")
def fleet_template(tmp_path_factory):
    """A registry of FLEET models, each serving ACTIVE with CANARY at 5 % (files written in one commit)."""
    from conftest import git, new_registry
    from lifecyclekit import isolated_env

    base = tmp_path_factory.mktemp("fleet")
    with isolated_env(tmp_path_factory):
        path = new_registry(base / "reg")
        reg = Registry(path)
        for filename, fields in (("a.yaml", dict(version=ACTIVE)),
                                 ("b.yaml", dict(version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt"))):
            (base / filename).write_text(bundle_text(**fields))
            ops.register(reg, base / filename)
        started = watch.iso(time.time())
        for i in range(FLEET):
            name = f"fleet-{i:02d}"
            (path / "bundles" / name).mkdir(parents=True)
            for version in (ACTIVE, CANARY):
                text = (path / "bundles" / NAME / f"{version}.yaml").read_text()
                (path / "bundles" / name / f"{version}.yaml").write_text(text.replace(f"name: {NAME}", f"name: {name}"))
            (path / "deployments" / f"{name}.yaml").write_text(
                f"apiVersion: modelctl/v1\nkind: Deployment\nname: {name}\nactive: \"{ACTIVE}\"\n"
                f"canary: {{version: \"{CANARY}\", percent: 5, started: \"{started}\"}}\nshadow: null\n"
                f"versions:\n  \"{ACTIVE}\": active\n  \"{CANARY}\": canary\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "test: a fleet of canaries")
    return path


@pytest.fixture
def fleet(fleet_template, tmp_path):
    dest = tmp_path / "reg"
    shutil.copytree(fleet_template, dest, symlinks=True)
    return dest


def keep_only(path, count: int) -> list[str]:
    """End the canaries of every fleet model but the first `count`; the names still live."""
    from conftest import git

    names = [f"fleet-{i:02d}" for i in range(FLEET)]
    for name in names[count:]:
        (path / "deployments" / f"{name}.yaml").write_text(
            f"apiVersion: modelctl/v1\nkind: Deployment\nname: {name}\nactive: \"{ACTIVE}\"\ncanary: null\n"
            f"shadow: null\nversions:\n  \"{ACTIVE}\": active\n  \"{CANARY}\": rolled-back\n")
    git(path, "commit", "-q", "--allow-empty", "-am", f"test: {count} live canaries")
    return names[:count]


class FleetServer(LocalServer):
    """http-json for every model in one document (`GET /metrics`), healthy traffic growing per GET."""

    def __init__(self):
        super().__init__(self._answer)
        self.gets = 0

    def _answer(self, request: Request) -> Reply:
        self.gets += 1
        n = self.gets
        versions = {ACTIVE: {"requests": 9000 * n, "errors": 90 * n}, CANARY: {"requests": 1000 * n, "errors": 10 * n}}
        return Reply(200, {"models": {f"fleet-{i:02d}": {"versions": versions} for i in range(FLEET)}})


def fleet_controller(path, url: str, clock, push: bool = False):
    from modelctl import config as configmod
    from modelctl.metrics import make_provider
    from modelctl.ops import WriteOptions

    reg = Registry(path)
    config = reg.config().as_dict()
    config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}
    config["metrics"] = {**config.get("metrics", {}), "provider": "http-json", "url": url}
    provider = make_provider(config, clock=clock)
    polls: list[watch.PollReport] = []

    write_options = WriteOptions(push=True) if push else None

    def make(name):
        return watch.Watcher(reg, name, watch.WatchOptions(interval=5), provider=provider,
                             config=configmod.build(config), clock=clock, monotonic=clock, sleep=clock.sleep,
                             on_poll=polls.append, write_options=write_options)

    return Controller(reg, watch.WatchOptions(interval=5), make_watcher=make, monotonic=clock,
                      sleep=clock.sleep, write_options=write_options), polls


@pytest.mark.parametrize("count", [1, 5, 20])
def test_one_metrics_request_per_cycle_whatever_the_number_of_followed_models(fleet, count):
    live = keep_only(fleet, count)
    clock = FakeClock()
    with FleetServer() as server:
        ctl, polls = fleet_controller(fleet, f"{server.base_url}/metrics", clock)
        for cycle in range(1, 4):
            report = ctl.cycle()
            assert (server.gets, report.reads) == (cycle, 1)  # one GET per cycle for 1, 5 or 20 models
            clock.sleep(5)
    assert report.followed == live and report.errors == {}
    # the baselines read in one batch for the models followed together are the registered ones
    assert ctl.watchers[live[-1]].priors == {ACTIVE: Registry(fleet).bundle(live[-1], ACTIVE)["baseline"]}
    assert {p.model for p in polls} == set(live) and len(polls) == 3 * count
    assert all(p.error is None for p in polls)
    assert polls[-1].decision.results  # judged from the shared document


def test_each_cycle_reads_only_the_deployment_files_that_changed(fleet, monkeypatch):
    clock = FakeClock()
    with FleetServer() as server:
        ctl, _ = fleet_controller(fleet, f"{server.base_url}/metrics", clock)
        read: list[int] = []
        real = ctl.reg.store.read_blobs
        monkeypatch.setattr(ctl.reg.store, "read_blobs", lambda oids: read.append(len(oids)) or real(oids))
        ctl.cycle()
        assert read == [FLEET + 1]  # every deployment file once (the fleet and support-agent)
        ctl.cycle()
        assert read == [FLEET + 1]  # nothing changed: nothing read
        set_deployment_of(fleet, "fleet-03", canary=None, versions={ACTIVE: "active", CANARY: "rolled-back"})
        report = ctl.cycle()
    assert read == [FLEET + 1, 1]  # one changed file, one read
    assert [(r.model, r.outcome) for r in report.ended] == [("fleet-03", watch.ENDED)]
    assert len(report.followed) == FLEET - 1


def test_steps_under_all_name_their_model_on_the_event_and_on_metrics(canary_registry, tmp_path):
    add_other(canary_registry, tmp_path)
    set_deployment_of(canary_registry, OTHER, canary={"version": CANARY, "percent": 10,
                                                      "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})
    clock = FakeClock()
    events: list[watch.WatchEvent] = []
    exported = WatchMetrics()

    def on_event(event):  # what `watch --all --metrics-port` does with every event
        events.append(event)
        exported.event(event, None)

    def make(name):
        reg = Registry(canary_registry)
        config = reg.config().as_dict()
        config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}
        config["analysis"]["min_duration_seconds"] = 60
        config["canary"] = {**config["canary"], "steps": [10, 25, 50], "min_step_seconds": 60}
        return watch.Watcher(reg, name, watch.WatchOptions(interval=10, advance=True), config=config, clock=clock,
                             monotonic=clock, sleep=clock.sleep, on_event=on_event,
                             provider=SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.005}, rps={ACTIVE: 2700, CANARY: 300}))

    ctl = Controller(Registry(canary_registry), watch.WatchOptions(interval=10, advance=True), make_watcher=make,
                     on_event=on_event, monotonic=clock, sleep=clock.sleep)
    for _ in range(12):  # each canary passes at 10 % and steps to 25 % (then its traffic no longer matches)
        ctl.cycle()
        clock.sleep(10)
    steps = [e for e in events if e.kind == "step"]
    assert {e.data["model"] for e in steps} == {NAME, OTHER}
    assert all(e.data["model"] in e.message for e in steps)
    for model in (NAME, OTHER):
        counted = exported.metrics.value("modelctl_watch_decisions_total", model=model, kind="step")
        assert counted == len([e for e in steps if e.data["model"] == model]) >= 1


def test_one_history_walk_gives_each_model_what_its_own_history_says(canary_registry, tmp_path):
    add_other(canary_registry, tmp_path)
    reg = Registry(canary_registry)
    ops.canary(reg, OTHER, CANARY, 5, force=True, reason="start")
    ops.canary(reg, NAME, CANARY, 25, reason="step")
    ops.canary(reg, OTHER, CANARY, 10, reason="step")
    both = watch.histories(reg, [NAME, OTHER])
    for name in (NAME, OTHER):
        # the commits modelctl wrote (a hand edit has no trailers, and nothing in it tells a start)
        assert both[name] == [c for c in watch.history(reg, name) if c["action"]]
    assert [c["percent"] for c in both[OTHER]][:2] == ["10", "5"]


# --------------------------------------------------------------------------- faults: a line in the log and a series


def rollbacks(path) -> list[str]:
    from conftest import git

    return [s for s in git(path, "log", "--format=%s").splitlines() if s.startswith("modelctl: rollback")]


def test_an_unreachable_remote_is_one_note_and_a_series_and_judging_goes_on(canary_registry, tmp_path):
    from gitremote import bare_remote

    from modelctl.ops import WriteOptions

    bare = tmp_path / "origin.git"
    bare_remote(canary_registry, bare)
    clock = FakeClock()
    ctl, events = controller(canary_registry, clock, write_options=WriteOptions(push=True))
    exported = WatchMetrics()
    ctl.on_cycle = exported.cycle
    first = ctl.cycle()
    fetched_at = clock.now
    assert (first.fetch_error, first.fetch_failures, first.last_fetch) == (None, 0, fetched_at)
    bare.rename(tmp_path / "moved-aside.git")  # the remote is gone for minutes
    for _ in range(3):
        clock.sleep(60)
        report = ctl.cycle()
    value = exported.metrics.value
    assert report.fetch_failures == 3 and report.fetch_error and report.followed == [NAME]
    assert value("modelctl_controller_consecutive_fetch_failures") == 3
    assert value("modelctl_controller_fetch_failures_total") == 3
    assert value("modelctl_controller_last_successful_fetch_timestamp_seconds") == fetched_at
    notes = [e.message for e in events if e.kind == "note"]
    assert len([n for n in notes if n.startswith("note: cannot fetch origin/main")]) == 1  # one line per outage
    assert ctl.watchers[NAME].polls == 4 and rollbacks(canary_registry) == []  # judged on the last fetched state
    (tmp_path / "moved-aside.git").rename(bare)
    clock.sleep(60)
    report = ctl.cycle()
    assert report.fetch_failures == 0 and value("modelctl_controller_consecutive_fetch_failures") == 0
    assert value("modelctl_controller_last_successful_fetch_timestamp_seconds") == clock.now
    assert events[-1].message == "note: fetching origin/main works again after 3 failed cycle(s)"


class FlakyFleetServer(FleetServer):
    """The fleet's http-json server, answering 503 while `down` is set."""

    down = False

    def _answer(self, request: Request) -> Reply:
        if self.down:
            return Reply(503, "unavailable")
        return super()._answer(request)


def test_a_metrics_backend_that_fails_or_goes_away_is_one_note_and_series_never_a_rollback(fleet):
    live = keep_only(fleet, 5)
    clock = FakeClock()
    exported = WatchMetrics()
    events: list[watch.WatchEvent] = []
    server = FlakyFleetServer().start()
    try:
        ctl, polls = fleet_controller(fleet, f"{server.base_url}/metrics", clock)
        ctl.on_event, ctl.on_cycle = events.append, exported.cycle
        ctl.cycle()
        server.down = True  # 503 for every request
        clock.sleep(5)
        answered_503 = ctl.cycle()
    finally:
        server.stop()  # then nothing listens at all
    clock.sleep(5)
    refused = ctl.cycle()
    assert "HTTP 503" in answered_503.read_errors[0] and "cannot connect" in refused.read_errors[0]
    assert exported.metrics.value("modelctl_controller_metrics_read_errors_total") == 2
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and "the metrics backend failed for all 5 followed model(s)" in notes[0]
    assert [p.error is not None for p in polls[-10:]] == [True] * 10  # every model's poll is an error poll
    assert refused.followed == live and not refused.ended and rollbacks(fleet) == []


def run_regression(path, hand_at: int | None = None):
    """Cycles over a clearly regressed canary until its watch ends; `hand_at`: roll it back by hand during
    that metrics read (after the data is read, before it is judged)."""
    clock = FakeClock(start=1_800_000_000.0)
    ctl, events = controller(path, clock, rates={ACTIVE: 0.01, CANARY: 0.2})
    exported = WatchMetrics()
    ctl.on_cycle = exported.cycle
    ended: list[watch.WatchResult] = []
    for cycle in range(1, 30):
        watcher = ctl.watchers.get(NAME)
        if watcher is not None and cycle == hand_at:
            provider, real = watcher.provider, watcher.provider.read

            def read_then_roll_back(*args, real=real, provider=provider, **kwargs):
                answer = real(*args, **kwargs)
                provider.read = real
                Registry(path).rollback(NAME, reason="by hand")
                return answer

            provider.read = read_then_roll_back
        ended += ctl.cycle().ended
        clock.sleep(5)
        if ended:
            return ctl, exported, events, ended, cycle
    raise AssertionError("the regression was never decided")


def test_a_canary_rolled_back_by_hand_mid_poll_ends_its_watch_cleanly(canary_registry, tmp_path):
    probe = tmp_path / "probe"
    shutil.copytree(canary_registry, probe, symlinks=True)
    *_, decided = run_regression(probe)  # the cycle at which the watch alone rolls it back
    assert len(rollbacks(probe)) == 1
    ctl, exported, events, ended, cycle = run_regression(canary_registry, hand_at=decided)
    [result] = ended
    # the watch judged data that called for a rollback, but the canary was gone by then: no second write
    assert (cycle, result.outcome) == (decided, watch.ALREADY_ROLLED_BACK)
    assert len(rollbacks(canary_registry)) == 1
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and notes[0].startswith(f"note: {CANARY} of {NAME} was already rolled back by Ada Tester")
    assert notes[0].endswith("nothing to do")
    assert exported.metrics.value("modelctl_watch_ended_total", model=NAME, outcome=result.outcome) == 1
    assert exported.metrics.value("modelctl_watch_canary_percent", model=NAME, version=CANARY) is None
    assert not ctl.watchers


def test_a_renamed_model_ends_its_watch_with_a_line_and_the_new_name_is_followed(fleet):
    from conftest import git

    keep_only(fleet, 2)
    clock = FakeClock()
    exported = WatchMetrics()
    with FleetServer() as server:
        ctl, _ = fleet_controller(fleet, f"{server.base_url}/metrics", clock)
        events: list[watch.WatchEvent] = []
        ctl.on_event, ctl.on_cycle = events.append, exported.cycle
        ctl.cycle()
        git(fleet, "mv", "deployments/fleet-01.yaml", "deployments/fleet-renamed.yaml")
        git(fleet, "mv", "bundles/fleet-01", "bundles/fleet-renamed")
        git(fleet, "commit", "-q", "-m", "rename fleet-01")
        clock.sleep(5)
        report = ctl.cycle()
    [gone] = report.ended
    assert gone.model == "fleet-01" and "deployments/fleet-01.yaml is gone" in gone.message
    assert report.followed == ["fleet-00", "fleet-renamed"] and report.started == ["fleet-renamed"]
    assert any("deployments/fleet-01.yaml is gone" in e.message for e in events if e.kind == "note")
    assert exported.metrics.value("modelctl_watch_ended_total", model="fleet-01", outcome=watch.ENDED) == 1
    assert rollbacks(fleet) == []


# -- the judgement states on the remote: one push per cycle ------------------------------------------

class VariedFleetServer(FleetServer):
    """The fleet's document, each model's canary with its own error count (so each judgement state differs)."""

    def _answer(self, request: Request) -> Reply:
        self.gets += 1
        n = self.gets
        return Reply(200, {"models": {f"fleet-{i:02d}": {"versions": {
            ACTIVE: {"requests": 9000 * n, "errors": 90 * n},
            CANARY: {"requests": 1000 * n, "errors": (5 + i % 7) * n}}} for i in range(FLEET)}})


def hooked_remote(path, where):
    """`path` pushing to a bare remote at `where` whose pre-receive hook logs one line per push: the refs it
    updates. Returns (bare, log)."""
    from gitremote import bare_remote

    bare_remote(path, where)
    log = where.parent / f"{where.name}.pushes"
    hook = where / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho $(cut -d' ' -f3) >> '{log}'\n")
    hook.chmod(0o755)
    return where, log


def pushes(log) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def state_ref(name: str) -> str:
    return f"refs/modelctl/watch/{name}/state"


def remote_state(bare, name: str) -> dict:
    from conftest import git

    return json.loads(git(bare, "cat-file", "blob", f"{state_ref(name)}:state.json"))


@pytest.mark.parametrize("count", [1, 5, 20])
def test_one_push_per_cycle_carries_the_state_of_every_followed_model(fleet, tmp_path, count):
    from conftest import git

    live = keep_only(fleet, count)
    bare, log = hooked_remote(fleet, tmp_path / "origin.git")
    clock = FakeClock()
    with VariedFleetServer() as server:
        ctl, _ = fleet_controller(fleet, f"{server.base_url}/metrics", clock, push=True)
        for cycle in range(1, 4):
            report = ctl.cycle()
            assert len(pushes(log)) == cycle  # one push, whether 1, 5 or 20 models saved their state
            assert sorted(pushes(log)[-1]) == sorted(state_ref(n) for n in live)
            assert (report.state_error, report.state_lost, report.errors) == (None, [], {})
            clock.sleep(5)
    states = {name: remote_state(bare, name) for name in live}
    for name in live:  # each ref holds that model's own judge, the one its watcher judges with
        assert states[name]["judge"] == ctl.watchers[name].judge.export_state()
        assert states[name]["key"]["canary"] == CANARY
        # parentless, as `watch NAME` makes it: the ref never grows a history
        assert git(bare, "log", "-1", "--format=%s|%P", state_ref(name)).strip() == f"modelctl watch state: {name} {CANARY}|"
        remote_id = git(bare, "rev-parse", state_ref(name)).strip()
        assert ctl.watchers[name].state_expect == remote_id  # the next save's lease
        assert git(fleet, "rev-parse", state_ref(name)).strip() == remote_id  # the local ref followed
    assert len({json.dumps(s["judge"], sort_keys=True) for s in states.values()}) == min(count, 7)
    assert rollbacks(fleet) == []


def test_watch_all_once_in_fresh_clones_resumes_every_models_state_from_the_remote(fleet, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, git
    from gitremote import clone

    live = keep_only(fleet, 4)
    bare, log = hooked_remote(fleet, tmp_path / "origin.git")
    runs = []
    with FleetServer() as server:
        for i in range(3):  # what a CronJob without a volume does: a brand-new clone every run
            where = clone(f"file://{bare}", tmp_path / f"run{i}")
            proc = subprocess.run(
                [sys.executable, "-m", "modelctl", "watch", "--all", "--once", "--push", "--json",
                 "--provider", "http-json", "--url", f"{server.base_url}/metrics"],
                cwd=where, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert "note:" not in proc.stderr, proc.stderr
            lines = [json.loads(line) for line in proc.stdout.splitlines()]
            runs.append({d["model"]: d["metrics"][0]["canary_n"] for d in lines if d["event"] == "poll"})
            assert len(pushes(log)) == i + 1  # each run: one push for the 4 models
    assert [sorted(r) for r in runs] == [live] * 3
    # one interval counted at the second run, two at the third: every model's judgement carried over
    assert [set(r.values()) for r in runs[1:]] == [{1_000}, {2_000}]
    listed = git(bare, "for-each-ref", "--format=%(refname)", "refs/modelctl/watch").split()
    assert listed == [state_ref(n) for n in live]


def test_a_state_a_replica_saved_first_is_noted_and_the_others_land_in_the_same_cycle(fleet, tmp_path):
    from conftest import git

    live = keep_only(fleet, 5)
    bare, log = hooked_remote(fleet, tmp_path / "origin.git")
    clock = FakeClock()
    events: list[watch.WatchEvent] = []
    with VariedFleetServer() as server:
        ctl, _ = fleet_controller(fleet, f"{server.base_url}/metrics", clock, push=True)
        ctl.on_event = events.append
        ctl.cycle()
        for w in ctl.watchers.values():
            w.on_event = events.append
        before = {n: git(bare, "rev-parse", state_ref(n)).strip() for n in live}
        # a replica saves fleet-02's state after this controller's last fetch: its lease is stale now
        contended = "fleet-02"
        tree = git(bare, "rev-parse", f"{state_ref(contended)}^{{tree}}").strip()
        replica = git(bare, "commit-tree", tree, "-m", "replica").strip()
        git(bare, "update-ref", state_ref(contended), replica)
        real_fetch = ctl.reg.store.fetch
        ctl.reg.store.fetch = lambda *a, **k: None  # the replica saved between this cycle's fetch and its push
        clock.sleep(5)
        report = ctl.cycle()
        ctl.reg.store.fetch = real_fetch
        after = {n: git(bare, "rev-parse", state_ref(n)).strip() for n in live}
        assert report.state_lost == [contended] and report.state_error is None and report.errors == {}
        assert after[contended] == replica  # the replica's save stands
        assert all(after[n] != before[n] for n in live if n != contended)  # the others landed, this cycle
        assert [len(p) for p in pushes(log)] == [5, 4]  # the retry left the contended ref out
        assert ctl.watchers[contended].state_expect is None
        notes = [e.message for e in events if e.kind == "note"]
        assert notes == [f"note: cannot keep the judgement state of {contended} on origin (another watch of this "
                         "model saved its state first); a fresh clone would start it over"]
        # the next cycle fetches the replica's id and replaces it; nothing is rolled back, nothing said twice
        clock.sleep(5)
        report = ctl.cycle()
    assert report.state_lost == [] and sorted(ctl.watchers) == live
    assert git(bare, "rev-parse", state_ref(contended)).strip() != replica
    assert remote_state(bare, contended)["judge"] == ctl.watchers[contended].judge.export_state()
    assert len([e for e in events if e.kind == "note"]) == 1
    assert rollbacks(fleet) == []


def test_an_unreachable_remote_loses_no_judgement_and_says_so_once(fleet, tmp_path):
    from conftest import git

    live = keep_only(fleet, 3)
    bare, log = hooked_remote(fleet, tmp_path / "origin.git")
    clock = FakeClock()
    events: list[watch.WatchEvent] = []
    exported = WatchMetrics()
    with VariedFleetServer() as server:
        ctl, polls = fleet_controller(fleet, f"{server.base_url}/metrics", clock, push=True)
        ctl.on_event, ctl.on_cycle = events.append, exported.cycle
        ctl.cycle()
        bare.rename(tmp_path / "aside.git")  # the remote is gone: the fetch and the push fail
        for _ in range(2):
            clock.sleep(5)
            report = ctl.cycle()
        assert report.state_error and report.fetch_failures == 2 and report.errors == {}
        assert exported.metrics.value("modelctl_controller_consecutive_fetch_failures") == 2
        assert len(polls) == 3 * 3  # judging went on for every model
        notes = [e.message for e in events if e.kind == "note"]
        assert len(notes) == 1 and notes[0].startswith("note: cannot fetch origin/main")  # one line, the fetch's
        (tmp_path / "aside.git").rename(bare)
        clock.sleep(5)
        report = ctl.cycle()
    assert report.state_error is None and report.state_lost == []
    assert len(pushes(log)) == 2
    for name in live:  # the states of the cycles in between were never lost: the judge carried them
        assert remote_state(bare, name)["judge"] == ctl.watchers[name].judge.export_state()
        assert git(fleet, "rev-parse", state_ref(name)) == git(bare, "rev-parse", state_ref(name))
    assert rollbacks(fleet) == []


def test_a_remote_refusing_the_push_is_one_note_for_all_models_and_judging_goes_on(fleet, tmp_path):
    live = keep_only(fleet, 3)
    bare, log = hooked_remote(fleet, tmp_path / "origin.git")
    clock = FakeClock()
    events: list[watch.WatchEvent] = []
    (bare / "hooks" / "pre-receive").write_text("#!/bin/sh\necho 'refs/modelctl/ is read-only here' >&2\nexit 1\n")
    with VariedFleetServer() as server:
        ctl, polls = fleet_controller(fleet, f"{server.base_url}/metrics", clock, push=True)
        ctl.on_event = events.append
        for _ in range(3):
            report = ctl.cycle()
            clock.sleep(5)
    assert report.state_error and "pre-receive hook declined" in report.state_error
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and notes[0].startswith("note: cannot keep the judgement states of 3 model(s) on origin")
    assert len(polls) == 9 and sorted(ctl.watchers) == live and rollbacks(fleet) == []
    assert all(w.state_expect is None for w in ctl.watchers.values())
