"""watch --all's controller on a fake clock: it follows canaries as they start, drops them as they
end, and one model's failure is a note for that model, never the end of the others."""
from __future__ import annotations

import time

import test_watch
from conftest import bundle_text
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
            def boom(poll_start=None):
                raise RuntimeError(f"{name} exploded")
            w.poll = boom
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
