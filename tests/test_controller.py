"""watch --all's controller on a fake clock: it follows canaries as they start, drops them as they
end, and one model's failure is a note for that model, never the end of the others."""
from __future__ import annotations

import shutil
import time

import pytest
import test_watch
from conftest import bundle_text
from metrics_servers import LocalServer, Reply, Request
from test_watch import ACTIVE, CANARY, NAME, FakeClock, SimProvider, set_deployment_of

from modelctl import ops, watch
from modelctl.controller import Controller
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


def controller(path, clock, broken=(), options=None):
    events: list[watch.WatchEvent] = []

    def make(name):
        reg = Registry(path)
        config = reg.config().as_dict()
        config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}
        w = watch.Watcher(reg, name, watch.WatchOptions(interval=5), config=config, clock=clock, monotonic=clock,
                          sleep=clock.sleep, on_event=events.append,
                          provider=SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.01}, rps={ACTIVE: 900, CANARY: 100}))
        if name in broken:
            def boom(poll_start=None, **kwargs):
                raise RuntimeError(f"{name} exploded")
            w.prepare = boom
        return w

    ctl = Controller(Registry(path), options or watch.WatchOptions(interval=5), make_watcher=make,
                     on_event=events.append, monotonic=clock, sleep=clock.sleep)
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
    reports = [ctl.cycle() for _ in range(3)]
    assert all(r.errors == {OTHER: f"RuntimeError: {OTHER} exploded"} for r in reports)
    assert all(sorted(r.followed) == sorted([NAME, OTHER]) for r in reports)  # still followed, tried again
    notes = [e.message for e in events if e.kind == "note"]
    assert notes and all(f"{OTHER}: unexpected RuntimeError" in n for n in notes)
    assert ctl.watchers[NAME].polls == 3  # the healthy model was judged every cycle


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


def fleet_controller(path, url: str, clock):
    from modelctl import config as configmod
    from modelctl.metrics import make_provider

    reg = Registry(path)
    config = reg.config().as_dict()
    config["analysis"] = {k: v for k, v in config["analysis"].items() if k != "metrics"}
    config["metrics"] = {**config.get("metrics", {}), "provider": "http-json", "url": url}
    provider = make_provider(config, clock=clock)
    polls: list[watch.PollReport] = []

    def make(name):
        return watch.Watcher(reg, name, watch.WatchOptions(interval=5), provider=provider,
                             config=configmod.build(config), clock=clock, monotonic=clock, sleep=clock.sleep,
                             on_poll=polls.append)

    return Controller(reg, watch.WatchOptions(interval=5), make_watcher=make, monotonic=clock,
                      sleep=clock.sleep), polls


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
    from modelctl.exposition import WatchMetrics

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
