"""Routes (features) of one model and their fallback chains: pure rules and transitions, no I/O.

A deployment may declare ``routes:``, a mapping of route name (a DNS label) to its own state
(README "Routes and segments")::

    routes:
      search: {}                       # follows the model: its active version and its canary
      summarise:
        active: "2.3.1"                # pinned; the model's active and canary no longer apply here
        canary: {version: "2.5.0", percent: 10}   # the route's own canary
        fallback: {policy: ordered, chain: [{provider: openai, id: gpt-4.1-mini-2025-04-14}]}

Rules decided here:

* A route without ``active`` follows the model: it serves the model's active version and, unless
  it runs its own canary, the model's canary. A route with ``active`` is pinned: model-level
  promotions and canaries do not move it; ``route NAME R --follow`` makes it follow again.
* A route's own canary takes the place of the model's canary on that route; it is refused while
  the model-level canary is live on the same version (that canary already serves the route).
* ``rollback NAME --route R`` takes a version out of route R only: the route's own canary ends;
  the model's canary on a following route, or the route's active version, is replaced by a pin
  (``--to V``, else the model's active version, else its ``previous``). The model's statuses, its
  hold, its other routes and its tags do not change.
* A route is pinned (``promote NAME V --to active --route R``) to a version that serves (active,
  canary), served before (deprecated) or ran as that route's canary.
* Model-level events reach routes (:func:`after_model`): a version rolled back for the whole model
  leaves every route (pins to it are dropped, so the route follows the model again; route canaries
  of it end); archiving a pinned version is refused; a route canary of the version the model
  promotes to active ends (the route serves it anyway); a model-level canary of a version a route
  runs as its own canary is refused.
* Route events make no GTO stage tag: GTO's stages are the model's, which a route event never
  changes, so ``gto show`` keeps agreeing with ``status`` for the model as a whole; the commit
  carries ``Modelctl-Route``.

Keys are assigned with the model's bucket rule (modelctl.routing): the same key lands in the
same bucket on every route. A weighted fallback chain is ordered per key by :func:`fallback_order`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import state, trailers
from .errors import TransitionError, UsageError
from .names import NAME_RE, check_version, semver_key

# what a route serves is decided with the bucket rule, in routing (the serving client's only import)
from .routing import check_route as check_route
from .routing import effective as effective
from .routing import fallback_order as fallback_order
from .routing import route_of as route_of
from .routing import routes_of as routes_of

POLICIES = ("ordered", "weighted")
# statuses a route may be pinned to: serving now, serving as the model's canary, or served before
PINNABLE = ("active", "canary", "deprecated")
GONE = ("rolled-back", "archived")


# -- names and reading -------------------------------------------------------------------------


def versions(dep: Mapping[str, Any]) -> list[str]:
    """Versions the routes name (pins and route canaries), for resolving their bundles."""
    out: list[str] = []
    for r in routes_of(dep).values():
        r = r or {}
        for v in (r.get("active"), (r.get("canary") or {}).get("version")):
            if isinstance(v, str) and v and v not in out:
                out.append(v)
    return out


# -- fallback chains ---------------------------------------------------------------------------


def parse_fallback(specs: list[str], policy: str | None) -> dict[str, Any]:
    """``--fallback provider/id[=WEIGHT]`` options and ``--policy`` as a route's ``fallback`` mapping."""
    policy = policy or "ordered"
    if policy not in POLICIES:
        raise UsageError(f"invalid --policy {policy!r}", hint="use ordered or weighted")
    chain: list[dict[str, Any]] = []
    for spec in specs:
        target, sep, weight_text = spec.rpartition("=") if "=" in spec else (spec, "", "")
        provider, slash, ident = target.partition("/")
        if not slash or not provider.strip() or not ident.strip() or not target.isprintable() or \
                any(c.isspace() for c in target):
            raise UsageError(f"invalid --fallback {spec!r}", hint="write provider/model-id, e.g. openai/gpt-4.1-mini-2025-04-14")
        entry: dict[str, Any] = {"provider": provider, "id": ident}
        if sep:
            if policy != "weighted":
                raise UsageError(f"--fallback {spec!r} has a weight but the policy is {policy}",
                                 hint="add --policy weighted, or drop the =WEIGHT")
            if not (weight_text.isascii() and weight_text.isdigit()) or int(weight_text) < 1:
                raise UsageError(f"invalid weight in --fallback {spec!r}", hint="a weight is a whole number >= 1")
            entry["weight"] = int(weight_text)
        elif policy == "weighted":
            raise UsageError(f"--fallback {spec!r} needs a weight with --policy weighted",
                             hint="write provider/id=WEIGHT, e.g. openai/gpt-4.1-mini-2025-04-14=3")
        if any((e["provider"], e["id"]) == (provider, ident) for e in chain):
            raise UsageError(f"--fallback {provider}/{ident} is given twice", hint="name each model once")
        chain.append(entry)
    if not chain:
        raise UsageError("--policy needs at least one --fallback provider/id", hint="add --fallback")
    return {"policy": policy, "chain": chain}


def fallback_problems(fallback: Any) -> list[str]:
    """What is wrong with a route's ``fallback`` mapping (empty when sound)."""
    if fallback is None:
        return []
    if not isinstance(fallback, dict) or fallback.get("policy") not in POLICIES:
        return ["fallback.policy must be ordered or weighted"]
    chain = fallback.get("chain")
    if not isinstance(chain, list) or not chain:
        return ["fallback.chain must list at least one {provider, id}"]
    out = []
    for i, entry in enumerate(chain):
        if not isinstance(entry, dict) or not isinstance(entry.get("provider"), str) or not isinstance(entry.get("id"), str):
            out.append(f"fallback.chain[{i}] must name a provider and an id")
            continue
        weight = entry.get("weight")
        if fallback["policy"] == "weighted":
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                out.append(f"fallback.chain[{i}].weight must be a whole number >= 1 (policy weighted)")
        elif weight is not None:
            out.append(f"fallback.chain[{i}].weight applies only to policy weighted")
    return out


# -- transitions ---------------------------------------------------------------------------------


def _with_route(pairs: list[tuple[str, str]], route: str) -> list[tuple[str, str]]:
    """The route trailer right after Action, Model and Version (or Model when there is no version)."""
    at = 3 if len(pairs) >= 3 and pairs[2][0] == trailers.VERSION else 2
    return pairs[:at] + [(trailers.ROUTE, route)] + pairs[at:]


def _new_routes(dep: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    new = state._clone(dep)
    new["routes"] = copy.deepcopy(routes_of(dep))
    return new, new["routes"]


def _tidy(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A route entry with its keys in file order: active, canary, fallback."""
    return {k: entry[k] for k in ("active", "canary", "fallback") if k in entry}


def _route_noop(dep: dict[str, Any], action: str, route: str, version: str | None, note: str) -> state.Transition:
    return state.Transition(deployment=state._clone(dep), action=action, version=version, from_status=None,
                            to_status=None, subject=f"modelctl: {action} {dep.get('name')} route {route} (already done)",
                            noop=True, note=note)


def declare(dep: dict[str, Any], route: str, *, fallback: dict[str, Any] | None = None,
            follow: bool = False) -> state.Transition:
    """Declare a route (it follows the model), set its fallback chain, or make a pinned route follow again."""
    check_route(route)
    name = state._name(dep)
    for problem in fallback_problems(fallback):
        raise UsageError(f"route {route} of {name}: {problem}")
    exists = route in routes_of(dep)
    current = routes_of(dep).get(route) or {}
    wanted = dict(current)
    if follow:
        wanted.pop("active", None)
        wanted.pop("canary", None)
    if fallback is not None:
        wanted["fallback"] = copy.deepcopy(fallback)
    if exists and wanted == current:
        return _route_noop(dep, "route", route, None, f"route {route} of {name} is already declared that way")
    new, routes = _new_routes(dep)
    routes[route] = _tidy(wanted)
    what = []
    if not exists:
        what.append("declared")
    if follow and ("active" in current or "canary" in current):
        what.append("follows the model")
    if fallback is not None and fallback != current.get("fallback"):
        chain = ", ".join(f"{e['provider']}/{e['id']}" + (f"={e['weight']}" if "weight" in e else "")
                          for e in fallback["chain"])
        what.append(f"fallback {fallback['policy']}: {chain}")
    pairs = [(trailers.ACTION, "route"), (trailers.MODEL, name), (trailers.ROUTE, route)]
    return state.Transition(deployment=new, action="route", version=None, from_status=None, to_status=None,
                            trailers=pairs, subject=f"modelctl: route {name} {route} {', '.join(what) or 'declared'}")


def canary(dep: dict[str, Any], route: str, version: str, percent: float | int | None,
           config: Mapping[str, Any] | None = None, *, force: bool = False, reason: str | None = None,
           now: str | None = None) -> state.Transition:
    """Start (or move) a route's own canary at one of canary.steps."""
    name = state._name(dep)
    route_of(dep, route)
    status = state._status(dep, version)
    steps = state.canary_steps(config)
    active, live = effective(dep, route)
    own = (routes_of(dep).get(route) or {}).get("canary") or None
    model_canary = dep.get("canary") or None
    if model_canary and model_canary.get("version") == version and not own:
        raise TransitionError(f"{version} of {name} is the model-level canary at "
                              f"{state.fmt_pct(model_canary['percent'])}%, which already serves route {route}; "
                              f"move that canary (`modelctl canary {name} {version} --pct N`) or roll it back first")
    if own and own.get("version") != version:
        raise TransitionError(f"route {route} of {name} already runs a canary of {own['version']} at "
                              f"{state.fmt_pct(own['percent'])}% (one canary per route); promote it or roll it back "
                              f"on the route first")
    if percent is None and own:
        raise TransitionError(f"{version} of {name} is already in canary on route {route} at "
                              f"{state.fmt_pct(own['percent'])}%; pass --pct to move it")
    percent = steps[0] if percent is None else state._norm_pct(percent)
    if percent not in steps:
        raise TransitionError(f"canary percent {state.fmt_pct(percent)} is not allowed; use one of "
                              f"{', '.join(state.fmt_pct(s) for s in steps)} (canary.steps in modelctl.yaml)")
    if own and state._norm_pct(own.get("percent")) == percent:
        return _route_noop(dep, "canary", route, version,
                           f"{version} of {name} is already in canary on route {route} at {state.fmt_pct(percent)}%")
    reason = state._need_reason(force, reason)
    if active is None:
        raise TransitionError(f"{name} has no active version, so route {route} has nothing to compare a canary "
                              "against; promote a version to active first")
    if version == active:
        raise TransitionError(f"{version} of {name} already serves route {route}; a canary is for another version")
    if status in GONE:
        if status == "archived" or not force:
            raise TransitionError(f"{version} of {name} is {status}; a route canary refuses it"
                                  + ("" if status == "archived" else " unless --force --reason"))
    override = state._hold_gate(dep, version, force, what="canary")
    skipped: list[str] = []
    if status in state._RANK and state._RANK[status] < state._RANK["canary"]:
        _, skipped = state._gap(dep, version, status, "canary", state.required_stages(config), force)
    new, routes = _new_routes(dep)
    routes[route] = dict(routes[route] or {})
    routes[route]["canary"] = state._split(version, percent, None if own else now, own.get("started") if own else None)
    routes[route] = _tidy(routes[route])
    pairs = trailers.transition("canary", name, version, number=state.fmt_pct, percent=percent,
                                from_percent=own.get("percent") if own else None, skipped=skipped,
                                force=force and bool(skipped or override), override="hold" if override else None,
                                reason=reason)
    rest = (f"{state.fmt_pct(own['percent'])}% -> {state.fmt_pct(percent)}%" if own else f"at {state.fmt_pct(percent)}%")
    return state.Transition(deployment=new, action="canary", version=version, from_status=status, to_status=status,
                            percent=percent, trailers=_with_route(pairs, route),
                            subject=f"modelctl: canary {name} {version} route {route} {rest}")


def pin(dep: dict[str, Any], route: str, version: str, config: Mapping[str, Any] | None = None, *,
        force: bool = False, reason: str | None = None) -> state.Transition:
    """Pin a route to a version (``promote NAME V --to active --route R``); ends the route's canary of it."""
    name = state._name(dep)
    r = route_of(dep, route)
    status = state._status(dep, version)
    own = r.get("canary") or None
    if r.get("active") == version:
        return _route_noop(dep, "promote", route, version, f"route {route} of {name} is already pinned to {version}")
    reason = state._need_reason(force, reason)
    ran_here = bool(own and own.get("version") == version)
    if status not in PINNABLE and not ran_here:
        raise TransitionError(f"{version} of {name} is {status}; a route is pinned to a version that serves (active, "
                              f"canary), served before (deprecated) or ran as this route's canary: start it with "
                              f"`modelctl canary {name} {version} --route {route}` first")
    override = state._hold_gate(dep, version, force, what="promote")
    old, _ = effective(dep, route)
    new, routes = _new_routes(dep)
    entry = dict(routes[route] or {})
    entry["active"] = version
    if ran_here or own:
        entry.pop("canary", None)  # the pin replaces what the route served; a canary of another version ends too
    routes[route] = _tidy(entry)
    pairs = trailers.transition("promote", name, version, to_status="active", force=force and override,
                                override="hold" if override else None, reason=reason)
    return state.Transition(deployment=new, action="promote", version=version, from_status=status, to_status=status,
                            trailers=_with_route(pairs, route),
                            subject=f"modelctl: promote {name} {version} route {route} to active"
                                    + (f" (replaces {old})" if old and old != version else ""))


def rollback(dep: dict[str, Any], route: str, *, reason: str | None = None, from_: str | None = None,
             to: str | None = None, evidence: str | None = None) -> state.Transition:
    """Take one version out of one route: its canary, or its active version (pinned to ``to``/previous)."""
    name = state._name(dep)
    r = route_of(dep, route)
    for v in (from_, to):
        if v is not None:
            check_version(v)
            state._status(dep, v)
    reason = state.clean_text(reason)
    evidence = state.clean_text(evidence, limit=2000)
    active, live = effective(dep, route)
    own = r.get("canary") or None
    if from_ is not None and from_ not in (active, (live or {}).get("version")):
        return _route_noop(dep, "rollback", route, from_, f"{from_} of {name} no longer serves route {route}")
    new, routes = _new_routes(dep)
    entry = dict(routes[route] or {})
    if live and (from_ is None or from_ == live["version"]) and to in (None, active):
        pct = live.get("percent")
        if own:
            entry.pop("canary", None)
        else:
            entry["active"] = active  # the model's canary stops reaching this route: pin what it served
        routes[route] = _tidy(entry)
        pairs = trailers.transition("rollback", name, live["version"], number=state.fmt_pct, percent=pct,
                                    restored=active, reason=reason, evidence=evidence)
        return state.Transition(
            deployment=new, action="rollback", version=live["version"], from_status="canary", to_status="canary",
            percent=pct, trailers=_with_route(pairs, route),
            subject=f"modelctl: rollback {name} {live['version']} route {route} (canary at {state.fmt_pct(pct)}%), "
                    f"{active} keeps serving it")
    if live:
        raise TransitionError(f"{live['version']} of {name} is in canary on route {route}; roll it back first "
                              f"(`modelctl rollback {name} --route {route}`), then take {active} out of the route")
    if from_ is None and to is None:
        raise TransitionError(f"route {route} of {name} has no live canary, so rollback must name the version it "
                              f"takes out of the route: `modelctl rollback {name} --route {route} --from {active}` "
                              f"or `--to VERSION`")
    if active is None:
        raise TransitionError(f"route {route} of {name} serves nothing; nothing to roll back")
    restore = to
    if restore is None:
        candidates = [dep.get("active"), dep.get("previous")]
        restore = next((v for v in candidates if v and v != active), None)
    if restore is None:
        served = sorted((v for v, s in dep["versions"].items() if s == "deprecated"), key=semver_key, reverse=True)
        raise TransitionError(f"route {route} of {name} has no version to return to; name one with --to VERSION "
                              f"(served before: {', '.join(served) or 'none'})")
    if restore == active:
        return _route_noop(dep, "rollback", route, active, f"{active} of {name} already serves route {route}")
    st = dep["versions"][restore]
    if st not in ("active", "deprecated"):
        raise TransitionError(f"{restore} of {name} is {st}; a route rolls back to a version that serves or served "
                              f"before (active or deprecated)")
    entry["active"] = restore
    routes[route] = _tidy(entry)
    pairs = trailers.transition("rollback", name, active, restored=restore, reason=reason, evidence=evidence)
    return state.Transition(
        deployment=new, action="rollback", version=active, from_status="active", to_status="active",
        trailers=_with_route(pairs, route),
        subject=f"modelctl: rollback {name} {active} route {route}, {restore} serves it again")


def after_model(t: state.Transition) -> state.Transition:
    """A model-level transition with its effect on routes applied (see the module rules)."""
    if t.noop or not routes_of(t.deployment):
        return t
    new = t.deployment
    statuses = new.get("versions") or {}
    routes = copy.deepcopy(routes_of(new))
    for rname, r in routes.items():
        r = r or {}
        pinned = r.get("active")
        if pinned and statuses.get(pinned) == "archived":
            raise TransitionError(f"route {rname} of {state._name(new)} is pinned to {pinned}; pin it to another "
                                  f"version or run `modelctl route {state._name(new)} {rname} --follow` before "
                                  "archiving it")
        if pinned and statuses.get(pinned) == "rolled-back":
            r.pop("active", None)
        own = r.get("canary") or None
        if own:
            v = own.get("version")
            model_canary = new.get("canary") or None
            if statuses.get(v) in GONE or v == (r.get("active") or new.get("active")):
                r.pop("canary", None)
            elif model_canary and model_canary.get("version") == v:
                raise TransitionError(f"route {rname} of {state._name(new)} runs its own canary of {v}; promote or "
                                      f"roll it back on the route before a model-level canary of it")
        routes[rname] = _tidy(r)
    if routes == routes_of(new):
        return t
    out = dict(new)
    out["routes"] = routes
    return replace(t, deployment=out)


# -- judging the file ----------------------------------------------------------------------------


def problems(dep: Mapping[str, Any], statuses: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """Every inconsistency of a deployment's routes as (message, location); empty when sound."""
    out: list[tuple[str, tuple[str, ...]]] = []
    model_canary = dep.get("canary") or None
    for rname, r in routes_of(dep).items():
        at = ("routes", rname)
        if not NAME_RE.fullmatch(str(rname)):
            out.append((f"route name {rname!r} is not a DNS label", at))
        r = r or {}
        pinned = r.get("active")
        if pinned is not None:
            st = statuses.get(pinned)
            if st is None:
                out.append((f"route {rname} is pinned to {pinned}, which is not a registered version", at + ("active",)))
            elif st in GONE:
                # a pin may also hold a version that ran as the route's canary (any live status): judge() checks how
                out.append((f"route {rname} is pinned to {pinned}, whose status is {st}; a route serves no version "
                            "that was rolled back or archived", at + ("active",)))
        own = r.get("canary") or None
        if own:
            v = own.get("version")
            st = statuses.get(v)
            if st is None or st in GONE:
                out.append((f"route {rname} runs a canary of {v}, whose status is {st or 'unregistered'}",
                            at + ("canary",)))
            if v == (pinned or dep.get("active")):
                out.append((f"route {rname} runs a canary of {v}, which it already serves", at + ("canary",)))
            if model_canary and model_canary.get("version") == v:
                out.append((f"route {rname} runs its own canary of {v} while the model-level canary is live on it",
                            at + ("canary",)))
            if not (pinned or dep.get("active")):
                out.append((f"route {rname} runs a canary without an active version", at + ("canary",)))
        for problem in fallback_problems(r.get("fallback")):
            out.append((f"route {rname}: {problem}", at + ("fallback",)))
    return out


def judge(before: Mapping[str, Any] | None, after: Mapping[str, Any], config: Mapping[str, Any] | None) -> list[state.Finding]:
    """Rules a hand edit of ``routes:`` breaks (state.judge_move's findings for the routes): route
    canary percents, versions on hold, pins to versions that never served nor ran as the route's canary."""
    name = after.get("name", "?")
    old = routes_of(before or {})
    out: list[state.Finding] = []
    steps = state.canary_steps(config)
    versions = after.get("versions") or {}
    hold = (after.get("hold") or {}).get("version")
    for rname, r in routes_of(after).items():
        r = r or {}
        was = old.get(rname) or {}
        own = r.get("canary") or None
        if own and own != (was.get("canary") or None):
            v = own.get("version")
            try:
                pct: object = state._norm_pct(own.get("percent"))
            except UsageError:
                pct = own.get("percent")
            if pct not in steps:
                out.append(state.Finding("canary-percent", v, f"canary percent {pct} of route {rname} of {name} is not one of "
                                                 f"canary.steps ({', '.join(state.fmt_pct(s) for s in steps)})"))
            if versions.get(v) == "rolled-back" or hold == v:
                out.append(state.Finding("hold", v, f"{v} of {name} is on hold after a rollback; a canary on route "
                                                    f"{rname} needs --force --reason", "force"))
        pinned = r.get("active")
        if pinned and pinned != was.get("active"):
            ran_here = (was.get("canary") or {}).get("version") == pinned
            if versions.get(pinned) not in PINNABLE and not ran_here:
                out.append(state.Finding("illegal-move", pinned, f"route {rname} of {name} is pinned to {pinned} "
                                                    f"({versions.get(pinned)}), which never served nor ran as its canary"))
    return out
