"""The lifecycle rules of DESIGN §2, as pure transitions: every allowed and refused move."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelctl import state as S
from modelctl.errors import Conflict, InvalidName, NotFound, TransitionError, UsageError

NOW = "2026-04-20T10:00:00Z"
FORCE = {"force": True, "reason": "hotfix approved by on-call"}


def problems(dep):
    """state.problems of a deployment whose listed versions are its bundles, messages only."""
    return [message for message, _ in S.problems(dep, dep["name"], dep.get("versions") or {})]


def make(active=None, previous=None, canary=None, shadow=None, hold=None, **versions):
    """A deployment of support-agent; versions given as v2_4_0="canary"."""
    dep = S.new_deployment("support-agent")
    dep["versions"] = {k[1:].replace("_", "."): s for k, s in versions.items()}
    dep.update(active=active, previous=previous, canary=canary, shadow=shadow, hold=hold)
    assert problems(dep) == [], problems(dep)
    return dep


def base(status, **extra):
    """1.0.0 active plus 2.0.0 in ``status`` (slots filled to match)."""
    kw = {"active": "1.0.0", "v1_0_0": "active", "v2_0_0": status}
    if status in ("shadow", "canary"):
        kw[status] = {"version": "2.0.0", "percent": 100 if status == "shadow" else 5}
    if status == "rolled-back":
        kw["hold"] = {"version": "2.0.0", "reason": "error rate", "at": NOW}
    kw.update(extra)
    return make(**kw)


def trailers(t):
    return dict(t.trailers)


def events(t):
    return [tuple(e) for e in t.events]


def apply(fn, dep, *args, **kw):
    """Run a transition and check the input was not mutated."""
    before = copy.deepcopy(dep)
    t = fn(dep, *args, **kw)
    assert dep == before, "transition mutated its input"
    return t


# -- new / register --------------------------------------------------------------------------


def test_new_deployment_is_empty():
    dep = S.new_deployment("support-agent")
    assert dep["name"] == "support-agent"
    assert [dep[k] for k in ("active", "previous", "canary", "shadow", "hold")] == [None] * 5
    assert dep["versions"] == {}


def test_register_adds_a_registered_version():
    t = apply(S.register, S.new_deployment("support-agent"), "2.4.0")
    assert t.deployment["versions"] == {"2.4.0": "registered"}
    assert t.subject == "modelctl: register support-agent 2.4.0"
    assert trailers(t)["Modelctl-Action"] == "register"
    assert t.events == [] and not t.noop


def test_register_refuses_an_existing_version():
    dep = make(v2_4_0="registered")
    with pytest.raises(TransitionError, match="2.4.0 of support-agent exists"):
        S.register(dep, "2.4.0")


@pytest.mark.parametrize("bad", ["v2.4.0", "1.10", "2.4", "2.4.0+build", ""])
def test_register_refuses_bad_versions(bad):
    with pytest.raises(InvalidName):
        S.register(S.new_deployment("support-agent"), bad)


# -- the happy path ----------------------------------------------------------------------------


def test_full_pipeline_moves_one_stage_at_a_time():
    dep = base("registered")
    t = apply(S.promote, dep, "2.0.0", "staging")
    assert events(t) == [("staging", "2.0.0", "assign")]
    assert trailers(t)["Modelctl-From"] == "registered" and trailers(t)["Modelctl-To"] == "staging"

    t = apply(S.shadow, t.deployment, "2.0.0", None, now=NOW)
    assert t.deployment["shadow"] == {"version": "2.0.0", "percent": 100, "started": NOW}
    assert events(t) == [("staging", "2.0.0", "unassign"), ("shadow", "2.0.0", "assign")]
    assert t.subject == "modelctl: shadow support-agent 2.0.0 at 100%"

    t = apply(S.canary, t.deployment, "2.0.0", 5, now=NOW)
    assert t.deployment["shadow"] is None
    assert t.deployment["canary"] == {"version": "2.0.0", "percent": 5, "started": NOW}
    assert events(t) == [("shadow", "2.0.0", "unassign"), ("canary", "2.0.0", "assign")]
    assert trailers(t)["Modelctl-Percent"] == "5"
    assert t.subject == "modelctl: canary support-agent 2.0.0 at 5%"

    t = apply(S.promote, t.deployment, "2.0.0", "active")
    d = t.deployment
    assert (d["active"], d["previous"], d["canary"]) == ("2.0.0", "1.0.0", None)
    assert d["versions"] == {"1.0.0": "deprecated", "2.0.0": "active"}
    # the replaced active leaves the stage too, so GTO's "all versions in a stage" view agrees
    assert events(t) == [("canary", "2.0.0", "unassign"), ("active", "1.0.0", "unassign"),
                         ("active", "2.0.0", "assign")]
    assert trailers(t)["Modelctl-Replaces"] == "1.0.0"
    assert t.subject == "modelctl: promote support-agent 2.0.0 to active (replaces 1.0.0)"
    assert problems(d) == []


def test_trailers_come_in_a_fixed_order():
    t = S.promote(base("staging"), "2.0.0", "active", force=True, reason="incident 7")
    assert [k for k, _ in t.trailers] == [
        "Modelctl-Action", "Modelctl-Model", "Modelctl-Version", "Modelctl-From", "Modelctl-To",
        "Modelctl-Replaces", "Modelctl-Skipped", "Modelctl-Force", "Modelctl-Reason",
    ]


@pytest.mark.parametrize(
    "status,target",
    [("registered", "staging"), ("staging", "shadow"), ("shadow", "canary"), ("canary", "active")],
)
def test_promote_allows_next_stage(status, target):
    t = apply(S.promote, base(status), "2.0.0", target, now=NOW)
    assert t.deployment["versions"]["2.0.0"] == target
    assert t.events[-1] == ("canary" if target == "canary" else target, "2.0.0", "assign")


# -- required stages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,target,first_missing",
    [
        ("registered", "shadow", "staging"),
        ("registered", "canary", "staging"),
        ("registered", "active", "staging"),
        ("staging", "canary", "shadow"),
        ("staging", "active", "shadow"),
        ("shadow", "active", "canary"),
    ],
)
def test_promote_refuses_to_skip_a_required_stage(status, target, first_missing):
    dep = base(status)
    with pytest.raises(TransitionError) as err:
        S.promote(dep, "2.0.0", target, now=NOW)
    msg = str(err.value)
    assert f"2.0.0 of support-agent is {status}; promote it to {first_missing} first" in msg
    assert "pipeline requires staging, shadow, canary" in msg and "--force --reason" in msg


@pytest.mark.parametrize(
    "required,status,target,ok",
    [
        ([], "registered", "active", True),
        ([], "registered", "canary", True),
        (["canary"], "registered", "canary", True),
        (["canary"], "registered", "active", False),
        (["canary"], "staging", "shadow", True),
        (["staging"], "staging", "active", True),
        (["staging"], "registered", "shadow", False),
        (["shadow"], "registered", "canary", False),
        (["shadow"], "registered", "shadow", True),
    ],
)
def test_pipeline_required_is_read_from_config(required, status, target, ok):
    config = {"pipeline": {"required": required}}
    if ok:
        t = S.promote(base(status), "2.0.0", target, config, now=NOW)
        assert t.deployment["versions"]["2.0.0"] == target
        assert "Modelctl-Skipped" not in trailers(t)
    else:
        with pytest.raises(TransitionError, match="first"):
            S.promote(base(status), "2.0.0", target, config, now=NOW)


@pytest.mark.parametrize(
    "status,target,skipped",
    [
        ("registered", "active", "staging,shadow,canary"),
        ("registered", "canary", "staging,shadow"),
        ("staging", "active", "shadow,canary"),
        ("shadow", "active", "canary"),
    ],
)
def test_force_with_reason_skips_required_stages_on_record(status, target, skipped):
    t = apply(S.promote, base(status), "2.0.0", target, None, now=NOW, **FORCE)
    assert t.deployment["versions"]["2.0.0"] == target
    tr = trailers(t)
    assert tr["Modelctl-Skipped"] == skipped
    assert tr["Modelctl-Force"] == "true"
    assert tr["Modelctl-Reason"] == "hotfix approved by on-call"


@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_force_without_a_reason_is_refused(reason):
    with pytest.raises(UsageError, match="--force needs --reason"):
        S.promote(base("registered"), "2.0.0", "active", force=True, reason=reason)


def test_force_that_overrides_nothing_is_not_recorded_as_force():
    t = S.promote(base("registered"), "2.0.0", "staging", **FORCE)
    assert "Modelctl-Force" not in trailers(t)
    assert trailers(t)["Modelctl-Reason"] == FORCE["reason"]


# -- backwards, served, final ------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,target,hint",
    [
        ("shadow", "staging", "only moves forward"),
        ("canary", "staging", "only moves forward"),
        ("canary", "shadow", "only moves forward"),
        ("deprecated", "staging", "rollback support-agent --to 2.0.0"),
        ("deprecated", "canary", "rollback support-agent --to 2.0.0"),
        ("deprecated", "active", "rollback support-agent --to 2.0.0"),
        ("archived", "staging", "final"),
        ("archived", "active", "final"),
        ("archived", "deprecated", "final"),
    ],
)
def test_backward_and_final_moves_are_refused(status, target, hint):
    with pytest.raises(TransitionError, match=hint):
        S.promote(base(status), "2.0.0", target, now=NOW)


@pytest.mark.parametrize("target", ["staging", "shadow", "canary"])
def test_the_active_version_cannot_go_back_into_the_pipeline(target):
    with pytest.raises(TransitionError, match="1.0.0 of support-agent is already active"):
        S.promote(base("registered"), "1.0.0", target, now=NOW)


@pytest.mark.parametrize("fn", ["promote", "shadow", "canary"])
def test_unknown_version_is_not_found(fn):
    dep = base("registered")
    call = {
        "promote": lambda: S.promote(dep, "9.9.9", "staging"),
        "shadow": lambda: S.shadow(dep, "9.9.9", 100),
        "canary": lambda: S.canary(dep, "9.9.9", 5),
    }[fn]
    with pytest.raises(NotFound, match="version 9.9.9 of support-agent is not registered .*2.0.0, 1.0.0"):
        call()


def test_unknown_target_stage_is_refused():
    with pytest.raises(InvalidName, match="invalid stage 'production'"):
        S.promote(base("registered"), "2.0.0", "production")


# -- the first version -------------------------------------------------------------------------


def test_first_version_waives_shadow_and_canary_but_not_staging():
    dep = make(v1_0_0="registered")
    with pytest.raises(TransitionError, match="promote it to staging first"):
        S.promote(dep, "1.0.0", "active")
    t = S.promote(S.promote(dep, "1.0.0", "staging").deployment, "1.0.0", "active")
    d = t.deployment
    assert (d["active"], d["previous"]) == ("1.0.0", None)
    assert trailers(t)["Modelctl-Waived"] == "shadow,canary"
    assert "Modelctl-Force" not in trailers(t) and "Modelctl-Replaces" not in trailers(t)
    assert events(t) == [("staging", "1.0.0", "unassign"), ("active", "1.0.0", "assign")]


def test_first_version_waives_only_the_required_stages():
    config = {"pipeline": {"required": ["canary"]}}
    t = S.promote(make(v1_0_0="registered"), "1.0.0", "active", config)
    assert trailers(t)["Modelctl-Waived"] == "canary"
    t = S.promote(make(v1_0_0="registered"), "1.0.0", "active", {"pipeline": {"required": []}})
    assert "Modelctl-Waived" not in trailers(t)


def test_first_version_forced_past_staging_records_both():
    t = S.promote(make(v1_0_0="registered"), "1.0.0", "active", **FORCE)
    tr = trailers(t)
    assert (tr["Modelctl-Waived"], tr["Modelctl-Skipped"], tr["Modelctl-Force"]) == (
        "shadow,canary", "staging", "true")


@pytest.mark.parametrize("fn", [S.shadow, S.canary])
@pytest.mark.parametrize("force", [False, True])
def test_no_shadow_or_canary_without_an_active_version(fn, force):
    dep = make(v1_0_0="staging")
    with pytest.raises(TransitionError, match="support-agent has no active version"):
        fn(dep, "1.0.0", 5, **(FORCE if force else {}))


# -- active promotion side effects -------------------------------------------------------------


def test_promote_to_active_is_refused_while_another_version_is_in_canary():
    dep = make(active="1.0.0", canary={"version": "2.0.0", "percent": 10},
               v1_0_0="active", v2_0_0="canary", v2_1_0="staging")
    with pytest.raises(TransitionError, match="2.0.0 of support-agent is in canary at 10%"):
        S.promote(dep, "2.1.0", "active", **FORCE)


def test_promote_to_active_keeps_another_versions_shadow():
    dep = make(active="1.0.0", canary={"version": "2.0.0", "percent": 50},
               shadow={"version": "3.0.0", "percent": 20},
               v1_0_0="active", v2_0_0="canary", v3_0_0="shadow")
    d = S.promote(dep, "2.0.0", "active").deployment
    assert d["shadow"] == {"version": "3.0.0", "percent": 20}
    assert d["versions"]["3.0.0"] == "shadow"


def test_promote_to_active_from_shadow_ends_the_shadow():
    dep = base("shadow")
    t = S.promote(dep, "2.0.0", "active", {"pipeline": {"required": ["staging"]}})
    assert t.deployment["shadow"] is None
    assert events(t) == [("shadow", "2.0.0", "unassign"), ("active", "1.0.0", "unassign"),
                         ("active", "2.0.0", "assign")]


def test_each_promotion_to_active_records_the_one_it_replaces():
    dep = make(active="1.0.0", previous="0.9.0", v0_9_0="deprecated", v1_0_0="active", v2_0_0="canary",
               canary={"version": "2.0.0", "percent": 5})
    d = S.promote(dep, "2.0.0", "active").deployment
    assert d["previous"] == "1.0.0"
    assert d["versions"] == {"0.9.0": "deprecated", "1.0.0": "deprecated", "2.0.0": "active"}


# -- one canary, one shadow --------------------------------------------------------------------


def test_one_canary_per_model():
    dep = make(active="1.0.0", canary={"version": "2.0.0", "percent": 5},
               v1_0_0="active", v2_0_0="canary", v2_1_0="shadow", shadow={"version": "2.1.0", "percent": 100})
    with pytest.raises(TransitionError,
                       match="2.0.0 of support-agent is already in canary at 5% .one canary"):
        S.canary(dep, "2.1.0", 5, **FORCE)


def test_one_shadow_per_model():
    dep = make(active="1.0.0", shadow={"version": "2.0.0", "percent": 100},
               v1_0_0="active", v2_0_0="shadow", v2_1_0="staging")
    with pytest.raises(TransitionError, match="2.0.0 of support-agent is already in shadow .one shadow"):
        S.shadow(dep, "2.1.0", 50, **FORCE)


def test_a_canary_and_a_shadow_of_different_versions_coexist():
    dep = make(active="1.0.0", canary={"version": "2.0.0", "percent": 5},
               v1_0_0="active", v2_0_0="canary", v2_1_0="staging")
    d = S.shadow(dep, "2.1.0", 50).deployment
    assert d["canary"]["version"] == "2.0.0" and d["shadow"]["version"] == "2.1.0"
    assert problems(d) == []


# -- percents ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pct", [1, 5, 10, 25, 50, 25.0])
def test_canary_accepts_the_default_steps(pct):
    t = S.canary(base("shadow"), "2.0.0", pct, now=NOW)
    assert t.deployment["canary"]["percent"] == pct
    assert type(t.deployment["canary"]["percent"]) is int


@pytest.mark.parametrize("pct", [0, 2, 3, 49.5, 100, 150, -5])
def test_canary_refuses_percents_outside_the_steps(pct):
    with pytest.raises(TransitionError, match=r"not allowed; use one of 1, 5, 10, 25, 50 \(canary.steps"):
        S.canary(base("shadow"), "2.0.0", pct, **FORCE)


@pytest.mark.parametrize("pct", ["5", True, [5]])
def test_canary_refuses_non_numbers(pct):
    with pytest.raises(UsageError):
        S.canary(base("shadow"), "2.0.0", pct)


def test_canary_steps_come_from_config_and_may_include_100():
    config = {"canary": {"steps": [0.5, 20, 100]}}
    assert S.canary(base("shadow"), "2.0.0", 0.5, config).deployment["canary"]["percent"] == 0.5
    assert S.canary(base("shadow"), "2.0.0", 100, config).deployment["canary"]["percent"] == 100
    with pytest.raises(TransitionError, match="use one of 0.5, 20, 100"):
        S.canary(base("shadow"), "2.0.0", 5, config)


def test_promote_to_canary_starts_at_the_first_step():
    t = S.promote(base("shadow"), "2.0.0", "canary", {"canary": {"steps": [10, 2]}}, now=NOW)
    assert t.deployment["canary"]["percent"] == 2
    assert t.subject == "modelctl: promote support-agent 2.0.0 to canary at 2%"
    assert trailers(t)["Modelctl-Action"] == "promote"


@pytest.mark.parametrize("old,new", [(5, 10), (25, 50), (50, 1)])
def test_changing_a_live_canary_percent(old, new):
    dep = base("canary", canary={"version": "2.0.0", "percent": old, "started": "2026-04-19T00:00:00Z"})
    t = apply(S.canary, dep, "2.0.0", new, now=NOW)
    assert t.deployment["canary"] == {"version": "2.0.0", "percent": new, "started": "2026-04-19T00:00:00Z"}
    assert events(t) == [("canary", "2.0.0", "assign")]
    tr = trailers(t)
    assert (tr["Modelctl-From"], tr["Modelctl-To"], tr["Modelctl-Percent"], tr["Modelctl-From-Percent"]) == (
        "canary", "canary", str(new), str(old))
    assert t.subject == f"modelctl: canary support-agent 2.0.0 {old}% -> {new}%"


@pytest.mark.parametrize("pct", [0, -1, 100.5, 200])
def test_shadow_percent_must_be_in_range(pct):
    with pytest.raises(TransitionError, match=r"shadow percent .* out of range; use a number in \(0, 100\]"):
        S.shadow(base("staging"), "2.0.0", pct)


def test_shadow_percent_can_change():
    t = S.shadow(base("shadow"), "2.0.0", 25, now=NOW)
    assert t.deployment["shadow"]["percent"] == 25
    assert events(t) == [("shadow", "2.0.0", "assign")]
    assert trailers(t)["Modelctl-From-Percent"] == "100"


# -- no-ops ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,call",
    [
        ("staging", lambda d: S.promote(d, "2.0.0", "staging")),
        ("shadow", lambda d: S.promote(d, "2.0.0", "shadow")),
        ("shadow", lambda d: S.shadow(d, "2.0.0", 100)),
        ("shadow", lambda d: S.shadow(d, "2.0.0", None)),
        ("canary", lambda d: S.promote(d, "2.0.0", "canary")),
        ("canary", lambda d: S.canary(d, "2.0.0", 5)),
        ("canary", lambda d: S.canary(d, "2.0.0", 5.0)),
        ("deprecated", lambda d: S.promote(d, "2.0.0", "deprecated")),
        ("archived", lambda d: S.promote(d, "2.0.0", "archived")),
        ("registered", lambda d: S.promote(d, "1.0.0", "active")),
    ],
)
def test_already_in_the_requested_state_is_a_noop(status, call):
    dep = base(status)
    before = copy.deepcopy(dep)
    t = call(dep)
    assert t.noop
    assert t.deployment == before and dep == before
    assert t.events == [] and t.trailers == []
    assert "already" in t.note


def test_noop_wins_over_hold_and_force_checks():
    dep = base("canary", hold={"version": "2.0.0", "reason": "watch fail-safe", "at": NOW})
    assert S.canary(dep, "2.0.0", 5).noop


# -- retiring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["registered", "staging", "shadow", "canary", "rolled-back", "deprecated"])
def test_archive_from_any_non_active_status(status):
    t = apply(S.promote, base(status), "2.0.0", "archived")
    d = t.deployment
    assert d["versions"]["2.0.0"] == "archived"
    assert d["canary"] is None and d["shadow"] is None
    # archived is final: GTO's deregistration (NAME@v2.0.0!) after leaving any stage
    if status in ("staging", "shadow", "canary"):
        assert events(t) == [(status, "2.0.0", "unassign"), (None, "2.0.0", "deregister")]
    else:
        assert events(t) == [(None, "2.0.0", "deregister")]
    assert problems(d) == []


@pytest.mark.parametrize("status", ["registered", "staging", "shadow", "canary", "rolled-back"])
def test_deprecate_from_any_non_active_status(status):
    d = S.promote(base(status), "2.0.0", "deprecated").deployment
    assert d["versions"]["2.0.0"] == "deprecated"


@pytest.mark.parametrize("target", ["deprecated", "archived"])
def test_the_active_version_cannot_be_retired(target):
    with pytest.raises(TransitionError, match="1.0.0 of support-agent is active; promote another version"):
        S.promote(base("registered"), "1.0.0", target)


def test_archiving_the_previous_version_clears_previous():
    dep = make(active="2.0.0", previous="1.0.0", v1_0_0="deprecated", v2_0_0="active")
    d = S.promote(dep, "1.0.0", "archived").deployment
    assert d["previous"] is None


def test_retiring_a_held_version_keeps_the_hold():
    d = S.promote(base("rolled-back"), "2.0.0", "archived").deployment
    assert d["hold"]["version"] == "2.0.0"


# -- hold --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda d, **kw: S.promote(d, "2.0.0", "staging", **kw),
        lambda d, **kw: S.promote(d, "2.0.0", "shadow", **kw),
        lambda d, **kw: S.promote(d, "2.0.0", "canary", **kw),
        lambda d, **kw: S.promote(d, "2.0.0", "active", **kw),
        lambda d, **kw: S.canary(d, "2.0.0", 5, **kw),
        lambda d, **kw: S.shadow(d, "2.0.0", 50, **kw),
    ],
)
def test_a_rolled_back_version_is_on_hold_until_forced(call):
    dep = base("rolled-back")
    with pytest.raises(TransitionError) as err:
        call(dep)
    expected = "2.0.0 of support-agent is on hold after a rollback (2026-04-20T10:00:00Z: error rate)"
    assert expected in str(err.value)
    assert "--force --reason" in str(err.value)
    t = call(dep, **FORCE)
    assert t.deployment["hold"] is None
    assert trailers(t)["Modelctl-Override"] == "hold"
    assert trailers(t)["Modelctl-Force"] == "true"
    assert problems(t.deployment) == []


def test_an_older_rolled_back_version_stays_on_hold_after_the_hold_moves_on():
    dep = make(active="1.0.0", v1_0_0="active", v2_0_0="rolled-back", v2_1_0="rolled-back",
               hold={"version": "2.1.0", "reason": "latency", "at": NOW})
    with pytest.raises(TransitionError, match="2.0.0 of support-agent is on hold after a rollback;"):
        S.canary(dep, "2.0.0", 5)
    # forcing 2.0.0 leaves the record of 2.1.0's hold alone
    assert S.canary(dep, "2.0.0", 5, **FORCE).deployment["hold"]["version"] == "2.1.0"


def test_a_hold_on_a_live_canary_freezes_its_percent():
    dep = base("canary", hold={"version": "2.0.0", "reason": "metrics unavailable", "at": NOW})
    with pytest.raises(TransitionError, match="on hold"):
        S.canary(dep, "2.0.0", 10)
    with pytest.raises(TransitionError, match="on hold"):
        S.promote(dep, "2.0.0", "active")
    t = S.canary(dep, "2.0.0", 10, **FORCE)
    assert t.deployment["hold"] is None and trailers(t)["Modelctl-Override"] == "hold"


# -- rollback ----------------------------------------------------------------------------------


def test_rollback_with_a_live_canary_ends_it_and_keeps_active():
    dep = make(active="1.0.0", previous="0.9.0", canary={"version": "2.0.0", "percent": 10},
               v0_9_0="deprecated", v1_0_0="active", v2_0_0="canary")
    t = apply(S.rollback, dep, None, reason="error rate 3x baseline", now=NOW)
    d = t.deployment
    assert (d["active"], d["previous"], d["canary"]) == ("1.0.0", "0.9.0", None)
    assert d["versions"]["2.0.0"] == "rolled-back"
    assert d["hold"] == {"version": "2.0.0", "reason": "error rate 3x baseline", "at": NOW}
    assert events(t) == [("canary", "2.0.0", "unassign")]
    assert (t.from_status, t.to_status, t.percent) == ("canary", "rolled-back", 10)
    tr = trailers(t)
    assert tr["Modelctl-Action"] == "rollback" and tr["Modelctl-Version"] == "2.0.0"
    assert tr["Modelctl-Restored"] == "1.0.0" and tr["Modelctl-Percent"] == "10"
    assert t.subject == "modelctl: rollback support-agent 2.0.0 (canary at 10%), 1.0.0 keeps serving"
    assert problems(d) == []


def test_rollback_of_a_canary_refuses_to_other_than_active():
    dep = make(active="1.0.0", previous="0.9.0", canary={"version": "2.0.0", "percent": 10},
               v0_9_0="deprecated", v1_0_0="active", v2_0_0="canary")
    with pytest.raises(TransitionError, match="--to does not apply"):
        S.rollback(dep, reason="x", now=NOW, to="0.9.0")
    assert S.rollback(dep, reason="x", now=NOW, to="1.0.0").deployment["active"] == "1.0.0"


def test_rollback_without_a_canary_returns_to_previous():
    dep = make(active="2.0.0", previous="1.0.0", v1_0_0="deprecated", v2_0_0="active",
               shadow={"version": "3.0.0", "percent": 10}, v3_0_0="shadow")
    t = apply(S.rollback, dep, reason=None, now=NOW, from_="2.0.0")
    d = t.deployment
    assert (d["active"], d["previous"]) == ("1.0.0", None)
    assert d["versions"] == {"1.0.0": "active", "2.0.0": "rolled-back", "3.0.0": "shadow"}
    assert d["shadow"] == {"version": "3.0.0", "percent": 10}
    assert d["hold"] == {"version": "2.0.0", "reason": "rolled back", "at": NOW}
    assert events(t) == [("active", "2.0.0", "unassign"), ("active", "1.0.0", "assign")]
    assert (t.from_status, t.to_status) == ("active", "rolled-back")
    assert trailers(t)["Modelctl-Restored"] == "1.0.0"
    assert "Modelctl-Reason" not in trailers(t)
    assert t.subject == "modelctl: rollback support-agent 2.0.0 (active), 1.0.0 serves again"


def test_rollback_to_a_named_deprecated_version():
    dep = make(active="3.0.0", previous="2.0.0", v1_0_0="deprecated", v2_0_0="deprecated", v3_0_0="active")
    d = S.rollback(dep, reason="x", now=NOW, to="1.0.0").deployment
    assert d["active"] == "1.0.0" and d["versions"]["3.0.0"] == "rolled-back"
    assert d["versions"]["2.0.0"] == "deprecated"


def test_a_second_rollback_needs_to_and_lists_candidates():
    dep = make(active="3.0.0", previous="2.0.0", v1_0_0="deprecated", v2_0_0="deprecated", v3_0_0="active")
    d = S.rollback(dep, reason="x", now=NOW, from_="3.0.0").deployment
    with pytest.raises(TransitionError, match=r"no previous version recorded; name one with --to VERSION "
                                              r"\(deprecated versions that served before: 1.0.0\)"):
        S.rollback(d, reason="again", now=NOW, from_="2.0.0")
    d = S.rollback(d, reason="again", now=NOW, to="1.0.0").deployment
    assert d["active"] == "1.0.0"
    assert d["versions"] == {"1.0.0": "active", "2.0.0": "rolled-back", "3.0.0": "rolled-back"}


@pytest.mark.parametrize(
    "to,exc,match",
    [
        ("4.0.0", TransitionError, "4.0.0 of support-agent is staging; rollback returns to a version"),
        ("9.9.9", NotFound, "not registered"),
        ("v1.0.0", InvalidName, "without 'v'"),
    ],
)
def test_rollback_to_must_name_a_version_that_served(to, exc, match):
    dep = make(active="2.0.0", previous="1.0.0", v1_0_0="deprecated", v2_0_0="active", v4_0_0="staging")
    with pytest.raises(exc, match=match):
        S.rollback(dep, reason="x", now=NOW, to=to)


def test_rollback_with_nothing_served_is_refused():
    with pytest.raises(TransitionError, match="nothing to roll back"):
        S.rollback(make(v1_0_0="staging"), reason="x", now=NOW)


def test_rollback_of_the_first_version_needs_somewhere_to_go():
    dep = make(active="1.0.0", v1_0_0="active")
    with pytest.raises(TransitionError, match="no previous version recorded.*: none"):
        S.rollback(dep, reason="x", now=NOW, from_="1.0.0")


def test_rollback_reason_and_evidence_become_one_line_trailers():
    dep = base("canary")
    t = S.rollback(dep, reason="bad\nModelctl-Action: promote\r\x00", now=NOW,
                   evidence="error_rate: canary 0.031 (n=812) vs 0.010; llr 3.2 > 2.9")
    tr = trailers(t)
    assert tr["Modelctl-Reason"] == "bad Modelctl-Action - promote"
    assert tr["Modelctl-Evidence"].startswith("error_rate: canary 0.031")
    assert all("\n" not in v for _, v in t.trailers)
    assert t.deployment["hold"]["reason"] == "bad Modelctl-Action - promote"


def test_rollback_expect_makes_a_repeat_a_noop():
    dep = base("canary")
    first = S.rollback(dep, reason="watch", now=NOW)
    expect = (first.from_status, first.version)
    assert S.rollback_target(dep) == expect == ("canary", "2.0.0")
    again = S.rollback(first.deployment, reason="watch 2", now=NOW, expect=expect)
    assert again.noop and again.events == [] and again.deployment == first.deployment
    assert "already rolled back" in again.note


def test_rollback_expect_matches_proceeds():
    t = S.rollback(base("canary"), reason="w", now=NOW, expect=("canary", "2.0.0"))
    assert not t.noop and t.deployment["versions"]["2.0.0"] == "rolled-back"


def test_rollback_expect_refuses_when_the_canary_was_promoted_meanwhile():
    promoted = S.promote(base("canary"), "2.0.0", "active").deployment
    with pytest.raises(Conflict,
                       match="2.0.0 is no longer the canary version of support-agent .it is active"):
        S.rollback(promoted, reason="w", now=NOW, expect=("canary", "2.0.0"))


def test_rollback_expect_refuses_when_the_canary_was_replaced():
    dep = S.promote(base("canary"), "2.0.0", "archived").deployment
    with pytest.raises(Conflict) as err:
        S.rollback(dep, reason="w", now=NOW, expect=("canary", "2.0.0"))
    assert err.value.exit_code == 3


# -- reading helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,moves",
    [
        ("registered", ["staging", "deprecated", "archived"]),
        ("staging", ["shadow", "deprecated", "archived"]),
        ("shadow", ["canary", "deprecated", "archived"]),
        ("canary", ["active", "deprecated", "archived"]),
        ("rolled-back", ["deprecated", "archived"]),
        ("deprecated", ["archived"]),
        ("archived", []),
    ],
)
def test_next_moves(status, moves):
    assert S.next_moves(base(status), "2.0.0") == moves


def test_status_summary_shows_traffic_shares():
    dep = base("canary", canary={"version": "2.0.0", "percent": 25})
    s = S.status_summary(dep)
    assert s["traffic"] == [{"version": "1.0.0", "role": "active", "percent": 75},
                            {"version": "2.0.0", "role": "canary", "percent": 25}]
    assert s["versions"] == [{"version": "2.0.0", "status": "canary"},
                             {"version": "1.0.0", "status": "active"}]


def test_problems_finds_inconsistent_files():
    dep = make(active="1.0.0", v1_0_0="active", v2_0_0="staging")
    dep["versions"]["2.0.0"] = "canary"
    assert problems(dep) == ["2.0.0 has status canary but canary is null"]


# -- a whole lifecycle, and tags that agree with the state ----------------------------------------


def replay(events_so_far):
    """Read tag events the way GTO does: per stage, every version still assigned (oldest first);
    the deregistered versions apart."""
    latest: dict[str, list[str]] = {}
    for stage, version, kind in events_so_far:
        holders = latest.setdefault(stage or "deregistered", [])
        if version in holders:
            holders.remove(version)
        if kind in ("assign", "deregister"):
            holders.append(version)
    return latest


def check_tags_agree(dep, log):
    seen = replay(log)
    # GTO's default view (latest per stage) and its --vs -1 view (every version per stage)
    assert seen.get("active", []) == ([dep["active"]] if dep["active"] else [])
    for stage in ("canary", "shadow"):
        assert seen.get(stage, []) == ([dep[stage]["version"]] if dep[stage] else [])
    staging = sorted(v for v, s in dep["versions"].items() if s == "staging")
    assert sorted(seen.get("staging", [])) == staging
    assert sorted(seen.get("deregistered", [])) == sorted(v for v, s in dep["versions"].items() if s == "archived")


def test_scripted_lifecycle_with_two_rollbacks():
    dep, log = S.new_deployment("support-agent"), []

    def step(t):
        nonlocal dep
        assert not t.noop
        dep = t.deployment
        log.extend(t.events)
        assert problems(dep) == []
        check_tags_agree(dep, log)

    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        step(S.register(dep, v))
    step(S.promote(dep, "1.0.0", "staging"))
    step(S.promote(dep, "1.0.0", "active"))
    for v in ("1.1.0", "1.2.0"):
        step(S.promote(dep, v, "staging"))
        step(S.shadow(dep, v, 100, now=NOW))
        step(S.canary(dep, v, 5, now=NOW))
        step(S.canary(dep, v, 25, now=NOW))
        step(S.promote(dep, v, "active"))
    step(S.rollback(dep, reason="latency", now=NOW, from_="1.2.0"))  # 1.2.0 -> 1.1.0
    assert dep["active"] == "1.1.0"
    step(S.promote(dep, "1.3.0", "staging"))
    step(S.shadow(dep, "1.3.0", 50, now=NOW))
    step(S.canary(dep, "1.3.0", 1, now=NOW))
    step(S.rollback(dep, reason="errors", now=NOW))                  # canary pulled
    assert dep["active"] == "1.1.0" and dep["canary"] is None
    assert dep["versions"] == {"1.0.0": "deprecated", "1.1.0": "active",
                               "1.2.0": "rolled-back", "1.3.0": "rolled-back"}
    step(S.rollback(dep, reason="back to the start", now=NOW, to="1.0.0"))
    assert dep["active"] == "1.0.0"


VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.1.0", "3.0.0")
# Weighted towards moves that can succeed, so walks reach canaries, promotions and rollbacks.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["promote"] * 4 + ["shadow", "canary", "canary", "rollback"]),
        st.sampled_from(VERSIONS),
        st.sampled_from(["staging"] * 3 + ["shadow", "canary", "active", "active", "deprecated", "archived"]),
        st.sampled_from([None, 1, 5, 5, 25, 50, 100]),
        st.sampled_from([False, False, False, True]),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, required=st.sets(st.sampled_from(S.PIPELINE)))
def test_any_sequence_of_actions_keeps_the_file_sound_and_the_tags_in_step(ops, required):
    config = {"pipeline": {"required": sorted(required)}}
    dep, log = S.new_deployment("support-agent"), []
    for version in VERSIONS:
        dep = S.register(dep, version).deployment
    for op, version, target, pct, force in ops:
        kw = FORCE if force else {}
        before = copy.deepcopy(dep)
        try:
            if op == "promote":
                t = S.promote(dep, version, target, config, now=NOW, **kw)
            elif op == "shadow":
                t = S.shadow(dep, version, pct, config, now=NOW, **kw)
            elif op == "canary":
                t = S.canary(dep, version, pct, config, now=NOW, **kw)
            else:
                t = S.rollback(dep, config, reason="r", now=NOW, to=version if force else None,
                               from_=None if force else version)
        except (TransitionError, NotFound, UsageError):
            assert dep == before
            continue
        assert dep == before
        if t.noop:
            assert t.deployment == dep and not t.events
            continue
        dep = t.deployment
        log.extend(t.events)
        assert problems(dep) == []
        check_tags_agree(dep, log)
        assert all(k.startswith("Modelctl-") and "\n" not in v for k, v in t.trailers)
        if dep["canary"] or dep["shadow"]:
            assert dep["active"]


def test_rollback_to_the_version_already_serving_is_already_done():
    from modelctl import state as st

    dep = st.new_deployment("m")
    dep.update(active="1.1.0", previous=None, versions={"1.0.0": "deprecated", "1.1.0": "active"})
    t = st.rollback(dep, None, to="1.1.0", reason="re-run", now="2026-01-01T00:00:00Z")
    assert t.noop and "already active" in t.note and t.deployment == dep


# -- every rollback names what it takes out of service -----------------------------------------


def test_a_plain_rollback_without_a_canary_is_refused_with_the_exact_command():
    dep = make(active="2.0.0", previous="1.0.0", v1_0_0="deprecated", v2_0_0="active")
    with pytest.raises(TransitionError) as err:
        S.rollback(dep, reason="x", now=NOW)
    assert "`modelctl rollback support-agent --from 2.0.0`" in err.value.message
    assert "`modelctl rollback support-agent --to 1.0.0`" in err.value.message
    no_previous = make(active="2.0.0", v1_0_0="deprecated", v2_0_0="active")
    with pytest.raises(TransitionError, match=r"`modelctl rollback support-agent --from 2.0.0 --to 1.0.0`"):
        S.rollback(no_previous, reason="x", now=NOW)
    # naming the target is enough: it says what serves instead of the active version
    assert S.rollback(dep, reason="x", now=NOW, to="1.0.0").deployment["active"] == "1.0.0"


@pytest.mark.parametrize("status", ["rolled-back", "deprecated", "archived"])
def test_rollback_from_a_version_already_out_of_service_is_already_done(status):
    dep = make(active="1.0.0", v1_0_0="active", v2_0_0=status)
    t = S.rollback(dep, reason="x", now=NOW, from_="2.0.0")
    assert t.noop and t.deployment == dep and t.events == []
    assert t.note == f"2.0.0 of support-agent is already out of service ({status})"


def test_rollback_from_names_the_canary_or_the_active_version():
    dep = base("canary", previous=None)
    t = S.rollback(dep, reason="x", now=NOW, from_="2.0.0")
    assert (t.from_status, t.version) == ("canary", "2.0.0")
    with pytest.raises(TransitionError, match=r"roll it back first \(`modelctl rollback support-agent --from 2.0.0`\)"):
        S.rollback(dep, reason="x", now=NOW, from_="1.0.0")
    with pytest.raises(TransitionError, match="is staging, not serving"):
        S.rollback(base("staging"), reason="x", now=NOW, from_="2.0.0")
    with pytest.raises(NotFound):
        S.rollback(dep, reason="x", now=NOW, from_="9.9.9")


def test_canary_without_a_percent_starts_at_the_first_step_but_never_moves_a_live_canary():
    t = S.canary(base("shadow"), "2.0.0", None, {"canary": {"steps": [2, 10]}}, now=NOW)
    assert t.percent == 2
    live = base("canary", canary={"version": "2.0.0", "percent": 25})
    with pytest.raises(TransitionError, match=r"already in canary at 25%; pass --pct to move it \(one of 1, 5"):
        S.canary(live, "2.0.0", None)


# -- judging a change made by hand ---------------------------------------------------------------


def rules(before, after, config=None, **kw):
    return [(f.rule, f.version, f.override) for f in S.judge_move(before, after, config, **kw)]


def test_judge_move_accepts_what_the_commands_do():
    dep = base("registered")
    for step in (lambda d: S.promote(d, "2.0.0", "staging"), lambda d: S.shadow(d, "2.0.0", 50, now=NOW),
                 lambda d: S.canary(d, "2.0.0", 5, now=NOW), lambda d: S.canary(d, "2.0.0", 25, now=NOW),
                 lambda d: S.promote(d, "2.0.0", "active"), lambda d: S.rollback(d, now=NOW, from_="2.0.0"),
                 lambda d: S.promote(d, "2.0.0", "archived")):
        after = step(dep).deployment
        assert rules(dep, after) == [], after
        dep = after
    first = S.register(S.new_deployment("support-agent"), "1.0.0").deployment
    assert rules(None, first) == []
    staged = S.promote(first, "1.0.0", "staging").deployment
    assert rules(staged, S.promote(staged, "1.0.0", "active").deployment) == []  # waived for a first version


def test_judge_move_names_each_broken_rule():
    hold = {"version": "2.0.0", "reason": "errors", "at": NOW}
    held = base("rolled-back", hold=hold)
    served = copy.deepcopy(held)
    served["versions"]["2.0.0"], served["canary"] = "canary", {"version": "2.0.0", "percent": 5}
    assert rules(held, served) == [("hold", "2.0.0", "force")]
    found = S.judge_move(held, served)[0]
    assert "on hold after a rollback" in found.message

    skipped = copy.deepcopy(base("registered"))
    skipped["versions"]["2.0.0"], skipped["canary"] = "canary", {"version": "2.0.0", "percent": 5}
    assert rules(base("registered"), skipped) == [("skipped-stage", "2.0.0", "force")]

    two = copy.deepcopy(base("canary"))
    two["versions"]["3.0.0"] = "canary"
    before = copy.deepcopy(base("canary"))
    before["versions"]["3.0.0"] = "shadow"
    before["shadow"] = {"version": "3.0.0", "percent": 10}
    assert rules(before, two) == [("one-canary", "3.0.0", None)]

    odd = copy.deepcopy(base("canary"))
    odd["canary"]["percent"] = 7
    assert rules(base("canary"), odd) == [("canary-percent", "2.0.0", None)]

    back = copy.deepcopy(base("canary"))
    back["versions"]["2.0.0"], back["canary"] = "staging", None
    assert rules(base("canary"), back)[0][::2] == ("illegal-move", None)


def test_judge_move_asks_the_gate_for_canary_and_active_but_not_for_a_rollback():
    asked = []

    def gate(version, baseline):
        asked.append((version, baseline))
        return "accuracy: dropped 0.04"

    after = S.canary(base("shadow"), "2.0.0", 5, now=NOW).deployment
    assert rules(base("shadow"), after, gate=gate) == [("gate", "2.0.0", "gate")]
    assert asked == [("2.0.0", "1.0.0")]
    dep = make(active="2.0.0", previous="1.0.0", v1_0_0="deprecated", v2_0_0="active")
    assert rules(dep, S.rollback(dep, now=NOW, from_="2.0.0").deployment, gate=gate) == []


def test_infer_event_reads_the_move_from_the_diff():
    dep = base("canary")
    promoted = S.promote(dep, "2.0.0", "active").deployment
    assert S.infer_event(dep, promoted) == {"action": "promote", "version": "2.0.0", "from": "canary",
                                            "to": "active", "replaces": "1.0.0"}
    pulled = S.rollback(dep, now=NOW).deployment
    assert S.infer_event(dep, pulled)["action"] == "rollback"
    moved = S.canary(dep, "2.0.0", 25, now=NOW).deployment
    assert S.infer_event(dep, moved) == {"action": "canary", "version": "2.0.0", "to": "canary", "percent": 25,
                                         "from": "canary", "from_percent": 5}
    assert S.infer_event(dep, dep) is None


def test_infer_event_reads_staging_retirement_and_registration_from_the_diff():
    # these are read after the canary/shadow loop, whose slot variable once shadowed the `was`
    # helper: the call raised TypeError and `log` showed such a squash merge as a plain edit
    dep = base("registered")
    staged = S.promote(dep, "2.0.0", "staging").deployment
    assert S.infer_event(dep, staged) == {"action": "promote", "version": "2.0.0", "from": "registered",
                                          "to": "staging"}
    retired = S.promote(staged, "2.0.0", "deprecated").deployment
    assert S.infer_event(staged, retired) == {"action": "promote", "version": "2.0.0", "from": "staging",
                                              "to": "deprecated"}
    added = copy.deepcopy(dep)
    added["versions"]["3.0.0"] = "registered"
    assert S.infer_event(dep, added) == {"action": "register", "version": "3.0.0", "from": None, "to": "registered"}


def test_judge_move_reports_a_hand_written_bogus_version_instead_of_failing():
    after = S.new_deployment("support-agent")
    after["versions"] = {"latest": "active"}
    [found] = S.judge_move(None, after)
    assert (found.rule, found.version) == ("illegal-move", "latest") and "invalid version" in found.message
