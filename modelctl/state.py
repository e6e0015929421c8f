"""Deployment state and its pure transitions: the lifecycle lives here (no I/O, no clock).

A deployment is the loaded ``deployments/<name>.yaml`` (DESIGN §2). Every transition takes it,
never mutates it, and returns a :class:`Transition`: the new deployment, the tag events in the
order their tags must be created, the commit subject and trailers (DESIGN §3), or ``noop`` when
the requested state already holds (the caller exits 0, "already done", and writes nothing).
Refusals raise :class:`~modelctl.errors.TransitionError` (exit 2) with what is allowed instead;
an unknown version raises :class:`~modelctl.errors.NotFound`.

Rules decided here (README "Lifecycle" repeats them for users):

* Statuses ``registered -> staging -> shadow -> canary -> active -> deprecated -> archived``,
  plus ``rolled-back``. ``pipeline.required`` (default: staging, shadow, canary) names the
  stages a version must pass. The state keeps only the current status, so "passed" is read from
  the order: a version moves forward and may not jump over a required stage, so a version in
  canary has passed every required stage before canary. Optional stages may be entered or
  skipped freely. Moving backwards (e.g. canary -> staging) is refused.
* ``--force`` with a non-empty ``--reason`` jumps over required stages (trailers
  ``Modelctl-Force: true`` and ``Modelctl-Skipped: <stages>``) and releases a hold
  (``Modelctl-Override: hold``). Force never relaxes anything else: one canary and one shadow
  per model, allowed percents, no shadow/canary without an active version.
* First version: with no active version there is no traffic to mirror or split, so ``shadow``
  and ``canary`` are refused and, when required, waived on the way to active
  (``Modelctl-Waived: shadow,canary``). ``staging`` still applies when required.
* Canary percents are exactly ``canary.steps`` (default 1, 5, 10, 25, 50); 100 is not a canary
  unless the registry lists it: ``promote --to active`` ends the canary instead. A live canary's
  percent may move up or down between steps. ``promote --to canary`` starts at the first step.
  Shadow percents are any number in (0, 100]; ``promote --to shadow`` mirrors 100 %.
* Promoting to active moves the old active to ``deprecated`` and records it as ``previous``; it
  ends a canary or shadow of the promoted version (unassign events) and is refused while another
  version is in canary (finish or roll back that canary first).
* ``deprecated`` and ``archived`` retire a version: allowed from any status except ``active``
  (replace it first) and from ``archived`` (final). Retiring a canary or shadow version ends its
  traffic. Retiring is not re-promotion, so it needs no force for a version on hold.
* Every rollback names the version it takes out of service. With a live canary that is the
  canary: it ends, its version becomes ``rolled-back``, active is unchanged (``--to`` is refused
  then). Without one, a plain rollback is refused with the exact command: ``--from ACTIVE``
  and/or ``--to VERSION`` name it; active returns to ``previous`` or ``--to`` (a ``deprecated``
  version: one that served before), the replaced version becomes ``rolled-back`` and
  ``previous`` is cleared, so a second rollback must name ``--to`` (nothing returns to a
  version that was itself just replaced by mistake). ``--from`` a version already out of
  service (rolled-back, deprecated, archived) is a no-op. ``hold`` records the rolled-back
  version, the reason and ``now``.
* ``canary NAME VERSION`` without a percent starts a new canary at the first step; on a live
  canary of that version it is refused (name the percent).
* On hold: a version whose status is ``rolled-back`` or that ``hold`` names. ``promote``,
  ``shadow`` and ``canary`` refuse it unless ``--force --reason``; a forced move clears ``hold``.
* No-ops: promoting to the current status, ``shadow``/``canary`` at the current percent, and a
  rollback whose ``expect``\\ed or ``from_`` version is already out of service (a second
  watcher, a retried push, a re-run).
* Tag events: an ``assign`` of the target stage; an ``unassign`` before it for every stage a
  version leaves (staging, shadow, canary, and active: the old active when a promotion replaces
  it, the rolled-back active), so every GTO view (``gto show --vs -1 --av -1`` too) lists only
  what the deployment says. Archiving adds a ``deregister`` event (GTO's ``NAME@vX.Y.Z!``); a
  deprecated version stays registered with no stage, because ``rollback --to`` may serve it
  again. A percent change is a new ``canary`` (or ``shadow``) assignment, so tags index the
  percent history.
* :func:`judge_move` replays a change made outside the commands (a hand edit, a merged pull
  request) through these same transitions and names each rule it breaks.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import names, trailers
from .errors import Conflict, NotFound, TransitionError, UsageError
from .names import PROMOTE_TARGETS, VERSION_RE, SemverKey, check_stage, check_version, semver_key

PIPELINE = ("staging", "shadow", "canary")
DEFAULT_REQUIRED = PIPELINE
DEFAULT_STEPS = (1, 5, 10, 25, 50)
DEFAULT_SHADOW_PERCENT = 100
OUT_OF_SERVICE = ("rolled-back", "deprecated", "archived")
_RANK = {"registered": 0, "staging": 1, "shadow": 2, "canary": 3, "active": 4}
_REASON_LIMIT = 500
# C0/C1 controls and Unicode line/paragraph separators: anything that could break a trailer line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
# "Key-Name:" inside a reason reads like a trailer to naive log parsers; defuse the colon.
_TRAILER_LIKE = re.compile(r"\b([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+)\s*:(?=\s|$)")


class TagEvent(NamedTuple):
    """One tag to create: ``(stage, version, "assign" | "unassign")``, or ``(None, version,
    "deregister")`` when a version is archived."""

    stage: str | None
    version: str
    kind: str


@dataclass(frozen=True)
class Transition:
    """The result of one lifecycle action: new state, tag events, commit subject and trailers."""

    deployment: dict[str, Any]
    action: str
    version: str | None
    from_status: str | None
    to_status: str | None
    percent: float | int | None = None
    events: list[TagEvent] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    noop: bool = False
    note: str = ""


# -- config ----------------------------------------------------------------------------------


def required_stages(config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Stages ``pipeline.required`` names, in pipeline order (default: staging, shadow, canary)."""
    pipeline = (config or {}).get("pipeline") or {}
    required = pipeline.get("required", DEFAULT_REQUIRED)
    if required is None:
        required = DEFAULT_REQUIRED
    return tuple(s for s in PIPELINE if s in required)


def canary_steps(config: Mapping[str, Any] | None) -> tuple[int | float, ...]:
    """Allowed canary percents: ``canary.steps`` sorted (default 1, 5, 10, 25, 50)."""
    steps = ((config or {}).get("canary") or {}).get("steps") or DEFAULT_STEPS
    return tuple(sorted({_norm_pct(s) for s in steps}))


# -- helpers ---------------------------------------------------------------------------------


def clean_text(text: object, limit: int = _REASON_LIMIT) -> str | None:
    """One line of user text for a trailer: controls become spaces, whitespace collapses."""
    if text is None:
        return None
    one_line = _TRAILER_LIKE.sub(r"\1 -", names.clean_text(_CONTROL.sub(" ", str(text)), limit=10 * limit))
    if len(one_line) > limit:
        one_line = one_line[: limit - 3] + "..."
    return one_line or None


def _norm_pct(value: object) -> int | float:
    # 5.0 and 5 are the same step; keep ints as ints so files and trailers read "5".
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"invalid percent {value!r}", hint="use a number such as 5")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fmt_pct(value: object) -> str:
    """A percent as written in subjects and trailers: ``5``, ``0.5`` (UsageError when not a number)."""
    value = _norm_pct(value)
    return str(value)


def _name(dep: dict[str, Any]) -> str:
    name: str = dep.get("name", "?")  # a validated deployment: its name is a string
    return name


def _status(dep: dict[str, Any], version: str) -> str:
    check_version(version)
    versions = dep.get("versions") or {}
    if version not in versions:
        known = sorted(versions, key=semver_key, reverse=True)
        listing = ", ".join(known[:8]) if known else "none yet"
        raise NotFound(
            f"version {version} of {_name(dep)} is not registered (registered: {listing})",
            hint="register it first with `modelctl register`",
        )
    status: str = versions[version]
    return status


def _slot(dep: dict[str, Any], stage: str) -> dict[str, Any] | None:
    return dep.get(stage) or None


def _on_hold(dep: dict[str, Any], version: str) -> bool:
    hold = dep.get("hold") or None
    return dep["versions"].get(version) == "rolled-back" or bool(hold and hold.get("version") == version)


def _hold_text(dep: dict[str, Any], version: str) -> str:
    hold = dep.get("hold") or None
    if hold and hold.get("version") == version:
        bits = [b for b in (hold.get("at"), hold.get("reason")) if b]
        if bits:
            return f" ({': '.join(bits)})"
    return ""


def _need_reason(force: bool, reason: str | None) -> str | None:
    reason = clean_text(reason)
    if force and not reason:
        raise UsageError("--force needs --reason TEXT", hint="the reason is recorded in the commit")
    return reason


def _subject(action: str, name: str, version: str, rest: str = "") -> str:
    return f"modelctl: {action} {name} {version}" + (f" {rest}" if rest else "")


def _trailers(action: str, name: str, version: str, **extra: object) -> list[tuple[str, str]]:
    # Fixed order (trailers.TRANSITION_ORDER) so commits read the same everywhere; None values are left out.
    return trailers.transition(action, name, version, number=fmt_pct, **extra)


def _clone(dep: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a deployment, its versions map (strings only, ten thousand entries for a big
    model) copied flat: copy.deepcopy of that map was a tenth of a write's time."""
    out = {}
    for key, value in dep.items():
        if key == "versions" and isinstance(value, dict):
            out[key] = dict(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _noop(dep: dict[str, Any], action: str, version: str, status: str, note: str,
          percent: float | int | None = None) -> Transition:
    return Transition(
        deployment=_clone(dep),
        action=action,
        version=version,
        from_status=status,
        to_status=status,
        percent=percent,
        subject=_subject(action, _name(dep), version, "(already done)"),
        noop=True,
        note=note,
    )


def _pipeline_note(required: tuple[str, ...]) -> str:
    return f"pipeline requires {', '.join(required)}" if required else "pipeline requires no stage"


def _gap(
    dep: dict[str, Any], version: str, status: str, target: str, required: tuple[str, ...], force: bool
) -> tuple[list[str], list[str]]:
    """Required stages between status and target: (waived for a first version, forced skips)."""
    lo, hi = _RANK[status], _RANK[target]
    gap = [s for s in required if lo < _RANK[s] < hi]
    waived = []
    if target == "active" and not dep.get("active"):
        waived = [s for s in gap if s in ("shadow", "canary")]
    missing = [s for s in gap if s not in waived]
    if missing and not force:
        raise TransitionError(
            f"{version} of {_name(dep)} is {status}; promote it to {missing[0]} first "
            f"({_pipeline_note(required)}) or use --force --reason"
        )
    return waived, missing


def _check_movable(
    dep: dict[str, Any], version: str, status: str, target: str, force: bool, *, what: str
) -> bool:
    """Refuse moves out of final/served statuses and held versions; True when a hold is overridden."""
    name = _name(dep)
    if _on_hold(dep, version):
        if not force:
            raise TransitionError(
                f"{version} of {name} is on hold after a rollback{_hold_text(dep, version)}; "
                f"{what} refuses it unless --force --reason"
            )
        if status == "rolled-back":
            return True
    if status == "archived":
        raise TransitionError(f"{version} of {name} is archived, which is final; register a new version")
    if status == "deprecated":
        raise TransitionError(
            f"{version} of {name} is deprecated (it served before); "
            f"use `modelctl rollback {name} --to {version}` to serve it again"
        )
    if status == "active":
        raise TransitionError(
            f"{version} of {name} is already active; {target} is for a new version (register one)"
        )
    if status != "rolled-back" and _RANK[status] > _RANK[target]:
        raise TransitionError(
            f"{version} of {name} is {status}, past {target}; the lifecycle only moves forward "
            "(retire it with --to deprecated or --to archived, or roll it back)"
        )
    return _on_hold(dep, version)


def _leave(dep: dict[str, Any], new: dict[str, Any], version: str, status: str, events: list[TagEvent]) -> None:
    """Take the version out of the stage it is in (slot cleared, unassign event)."""
    if status in ("shadow", "canary"):
        slot = _slot(new, status)
        if slot and slot.get("version") == version:
            new[status] = None
        events.append(TagEvent(status, version, "unassign"))
    elif status == "staging":
        events.append(TagEvent("staging", version, "unassign"))
    # A held version that moves on is released; a retired one stays held.


def _release_hold(new: dict[str, Any], version: str) -> None:
    hold = new.get("hold") or None
    if hold and hold.get("version") == version:
        new["hold"] = None


def _split(version: str, percent: float | int, now: str | None, started: str | None = None) -> dict[str, Any]:
    split: dict[str, Any] = {"version": version, "percent": percent}
    if started or now:
        split["started"] = started or now
    return split


# -- transitions -----------------------------------------------------------------------------


def new_deployment(name: str) -> dict[str, Any]:
    """An empty deployment for a model that has no versions yet."""
    return {
        "apiVersion": "modelctl/v1",
        "kind": "Deployment",
        "name": name,
        "active": None,
        "previous": None,
        "canary": None,
        "shadow": None,
        "versions": {},
        "hold": None,
    }


def register(dep: dict[str, Any], version: str) -> Transition:
    """Add a new version with status ``registered``."""
    check_version(version)
    name = _name(dep)
    if version in (dep.get("versions") or {}):
        raise TransitionError(
            f"version {version} of {name} exists; pick a new version or use --bump"
        )
    new = _clone(dep)
    new.setdefault("versions", {})
    new["versions"] = dict(new["versions"] or {})
    new["versions"][version] = "registered"
    return Transition(
        deployment=new,
        action="register",
        version=version,
        from_status=None,
        to_status="registered",
        trailers=_trailers("register", name, version, to_status="registered"),
        subject=_subject("register", name, version),
    )


def promote(
    dep: dict[str, Any],
    version: str,
    to: str,
    config: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    now: str | None = None,
    percent: float | int | None = None,
) -> Transition:
    """Move a version to a stage or retire it (``promote NAME VERSION --to STAGE``)."""
    check_stage(to, PROMOTE_TARGETS)
    if to == "shadow":
        return shadow(dep, version, percent, config, force=force, reason=reason, now=now, action="promote")
    if to == "canary":
        return canary(dep, version, percent, config, force=force, reason=reason, now=now, action="promote")
    if to in ("deprecated", "archived"):
        return _retire(dep, version, to, reason=_need_reason(force, reason))
    if to == "staging":
        return _to_staging(dep, version, config, force=force, reason=reason)
    return _to_active(dep, version, config, force=force, reason=reason)


def _to_staging(dep: dict[str, Any], version: str, config: Mapping[str, Any] | None, *, force: bool,
                reason: str | None) -> Transition:
    name = _name(dep)
    status = _status(dep, version)
    if status == "staging":
        return _noop(dep, "promote", version, status, f"{version} of {name} is already in staging")
    reason = _need_reason(force, reason)
    override = _check_movable(dep, version, status, "staging", force, what="promote")
    new = _clone(dep)
    events: list[TagEvent] = []
    _leave(dep, new, version, status, events)
    new["versions"][version] = "staging"
    _release_hold(new, version)
    events.append(TagEvent("staging", version, "assign"))
    return Transition(
        deployment=new,
        action="promote",
        version=version,
        from_status=status,
        to_status="staging",
        events=events,
        trailers=_trailers(
            "promote", name, version, from_status=status, to_status="staging",
            force=force and override, override="hold" if override else None, reason=reason,
        ),
        subject=_subject("promote", name, version, "to staging"),
    )


def _to_active(dep: dict[str, Any], version: str, config: Mapping[str, Any] | None, *, force: bool,
               reason: str | None) -> Transition:
    name = _name(dep)
    status = _status(dep, version)
    if status == "active":
        return _noop(dep, "promote", version, status, f"{version} of {name} is already active")
    reason = _need_reason(force, reason)
    override = _check_movable(dep, version, status, "active", force, what="promote")
    live = _slot(dep, "canary")
    if live and live.get("version") != version:
        raise TransitionError(
            f"{live['version']} of {name} is in canary at {fmt_pct(live['percent'])}%; promote it "
            f"to active or roll it back before making {version} active"
        )
    waived: list[str] = []
    skipped: list[str] = []
    if status != "rolled-back":
        waived, skipped = _gap(dep, version, status, "active", required_stages(config), force)
    new = _clone(dep)
    events: list[TagEvent] = []
    _leave(dep, new, version, status, events)
    old = dep.get("active")
    if old:
        new["versions"][old] = "deprecated"
        new["previous"] = old
        events.append(TagEvent("active", old, "unassign"))  # GTO: the old active leaves the stage
    new["active"] = version
    new["versions"][version] = "active"
    _release_hold(new, version)
    events.append(TagEvent("active", version, "assign"))
    return Transition(
        deployment=new,
        action="promote",
        version=version,
        from_status=status,
        to_status="active",
        events=events,
        trailers=_trailers(
            "promote", name, version, from_status=status, to_status="active", replaces=old,
            waived=waived, skipped=skipped, force=force and bool(skipped or override),
            override="hold" if override else None, reason=reason,
        ),
        subject=_subject("promote", name, version, "to active" + (f" (replaces {old})" if old else "")),
    )


def _retire(dep: dict[str, Any], version: str, to: str, *, reason: str | None) -> Transition:
    name = _name(dep)
    status = _status(dep, version)
    if status == to:
        return _noop(dep, "promote", version, status, f"{version} of {name} is already {to}")
    if status == "active":
        raise TransitionError(
            f"{version} of {name} is active; promote another version to active or roll back "
            f"before retiring it"
        )
    if status == "archived":
        raise TransitionError(f"{version} of {name} is archived, which is final")
    new = _clone(dep)
    events: list[TagEvent] = []
    _leave(dep, new, version, status, events)
    new["versions"][version] = to
    if to == "archived":
        events.append(TagEvent(None, version, "deregister"))  # final: GTO's deregistration
    if to == "archived" and new.get("previous") == version:
        # rollback must never return to an archived version
        new["previous"] = None
    return Transition(
        deployment=new,
        action="promote",
        version=version,
        from_status=status,
        to_status=to,
        events=events,
        trailers=_trailers("promote", name, version, from_status=status, to_status=to, reason=reason),
        subject=_subject("promote", name, version, f"to {to}"),
    )


def shadow(
    dep: dict[str, Any],
    version: str,
    percent: float | int | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    now: str | None = None,
    action: str = "shadow",
) -> Transition:
    """Start mirroring ``percent`` of traffic (default 100) to a version, or change the percent."""
    name = _name(dep)
    status = _status(dep, version)
    percent = DEFAULT_SHADOW_PERCENT if percent is None else _norm_pct(percent)
    current = _slot(dep, "shadow")
    if action == "promote" and status == "shadow":
        return _noop(dep, action, version, status, f"{version} of {name} is already in shadow",
                     current.get("percent") if current else None)
    if not 0 < percent <= 100:
        raise TransitionError(f"shadow percent {fmt_pct(percent)} is out of range; use a number in (0, 100]")
    if current and current.get("version") == version:
        if _norm_pct(current.get("percent")) == percent:
            return _noop(dep, action, version, status,
                         f"{version} of {name} is already in shadow at {fmt_pct(percent)}%", percent)
        reason = _need_reason(force, reason)
        override = _hold_gate(dep, version, force, what="shadow")
        new = _clone(dep)
        new["shadow"] = _split(version, percent, None, current.get("started"))
        _release_hold(new, version)
        return Transition(
            deployment=new, action=action, version=version, from_status="shadow", to_status="shadow",
            percent=percent, events=[TagEvent("shadow", version, "assign")],
            trailers=_trailers(action, name, version, from_status="shadow", to_status="shadow",
                               percent=percent, from_percent=current.get("percent"),
                               force=force and override, override="hold" if override else None,
                               reason=reason),
            subject=_subject(action, name, version,
                             f"{fmt_pct(current.get('percent'))}% -> {fmt_pct(percent)}%"),
        )
    if current:
        raise TransitionError(
            f"{current['version']} of {name} is already in shadow (one shadow per model); promote "
            f"it to canary or retire it (--to archived) before shadowing {version}"
        )
    reason = _need_reason(force, reason)
    if not dep.get("active"):
        raise TransitionError(
            f"{name} has no active version, so there is no traffic to mirror; promote {version} to "
            "active (shadow and canary are waived for the first version)"
        )
    return _enter_split(dep, name, version, status, "shadow", percent, config, force=force, reason=reason,
                        now=now, action=action)


def _hold_gate(dep: dict[str, Any], version: str, force: bool, *, what: str) -> bool:
    if _on_hold(dep, version):
        if not force:
            raise TransitionError(
                f"{version} of {_name(dep)} is on hold after a rollback{_hold_text(dep, version)}; "
                f"{what} refuses it unless --force --reason"
            )
        return True
    return False


def canary(
    dep: dict[str, Any],
    version: str,
    percent: float | int | None,
    config: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    now: str | None = None,
    action: str = "canary",
) -> Transition:
    """Start a canary at ``percent`` (one of ``canary.steps``) or change a live canary's percent."""
    name = _name(dep)
    status = _status(dep, version)
    steps = canary_steps(config)
    current = _slot(dep, "canary")
    if action == "promote" and status == "canary":
        return _noop(dep, action, version, status, f"{version} of {name} is already in canary",
                     current.get("percent") if current else None)
    if percent is None and current and current.get("version") == version:
        raise TransitionError(
            f"{version} of {name} is already in canary at {fmt_pct(current['percent'])}%; pass --pct to move "
            f"it (one of {', '.join(fmt_pct(s) for s in steps)})"
        )
    percent = steps[0] if percent is None else _norm_pct(percent)
    if percent not in steps:
        raise TransitionError(
            f"canary percent {fmt_pct(percent)} is not allowed; use one of "
            f"{', '.join(fmt_pct(s) for s in steps)} (canary.steps in modelctl.yaml), "
            "or promote to active for 100%"
        )
    if current and current.get("version") == version:
        old_pct = current.get("percent")
        if _norm_pct(old_pct) == percent:
            return _noop(dep, action, version, status,
                         f"{version} of {name} is already in canary at {fmt_pct(percent)}%", percent)
        reason = _need_reason(force, reason)
        override = _hold_gate(dep, version, force, what="canary")
        new = _clone(dep)
        new["canary"] = _split(version, percent, None, current.get("started"))
        _release_hold(new, version)
        return Transition(
            deployment=new, action=action, version=version, from_status="canary", to_status="canary",
            percent=percent, events=[TagEvent("canary", version, "assign")],
            trailers=_trailers(action, name, version, from_status="canary", to_status="canary",
                               percent=percent, from_percent=old_pct, force=force and override,
                               override="hold" if override else None, reason=reason),
            subject=_subject(action, name, version, f"{fmt_pct(old_pct)}% -> {fmt_pct(percent)}%"),
        )
    if current:
        raise TransitionError(
            f"{current['version']} of {name} is already in canary at {fmt_pct(current['percent'])}% "
            f"(one canary per model); promote it to active or roll it back before starting {version}"
        )
    reason = _need_reason(force, reason)
    if not dep.get("active"):
        raise TransitionError(
            f"{name} has no active version, so there is nothing to compare a canary against; promote "
            f"{version} to active (shadow and canary are waived for the first version)"
        )
    return _enter_split(dep, name, version, status, "canary", percent, config, force=force, reason=reason,
                        now=now, action=action)


def _enter_split(dep: dict[str, Any], name: str, version: str, status: str, stage: str, percent: float | int,
                 config: Mapping[str, Any] | None, *, force: bool,
                 reason: str | None, now: str | None, action: str) -> Transition:
    """Start a shadow or canary of `version` at `percent` (the checks common to both are done)."""
    override = _check_movable(dep, version, status, stage, force, what=stage)
    skipped: list[str] = []
    if status != "rolled-back":
        _, skipped = _gap(dep, version, status, stage, required_stages(config), force)
    new = _clone(dep)
    events: list[TagEvent] = []
    _leave(dep, new, version, status, events)
    new["versions"][version] = stage
    new[stage] = _split(version, percent, now)
    _release_hold(new, version)
    events.append(TagEvent(stage, version, "assign"))
    return Transition(
        deployment=new, action=action, version=version, from_status=status, to_status=stage,
        percent=percent, events=events,
        trailers=_trailers(action, name, version, from_status=status, to_status=stage,
                           percent=percent, skipped=skipped, force=force and bool(skipped or override),
                           override="hold" if override else None, reason=reason),
        subject=_subject(action, name, version,
                         (f"to {stage} " if action == "promote" else "") + f"at {fmt_pct(percent)}%"),
    )


def rollback_target(dep: dict[str, Any]) -> tuple[str, str] | None:
    """What ``rollback`` would pull now: ``("canary", v)``, ``("active", v)`` or None."""
    live = _slot(dep, "canary")
    if live:
        return ("canary", live["version"])
    if dep.get("active"):
        return ("active", dep["active"])
    return None


def rollback_command(dep: dict[str, Any]) -> str:
    """Why a plain rollback without a live canary is refused, with the exact commands that name a version."""
    name = _name(dep)
    active = dep.get("active")
    previous = dep.get("previous")
    if previous:
        return (f"{name} has no live canary, so rollback must name the version it takes out of service: "
                f"`modelctl rollback {name} --from {active}` (active {active} goes on hold, {previous} serves "
                f"again), or name the version to serve with `modelctl rollback {name} --to {previous}`")
    deprecated = sorted((v for v, s in (dep.get("versions") or {}).items() if s == "deprecated"),
                        key=semver_key, reverse=True)
    target = deprecated[0] if deprecated else "VERSION"
    return (f"{name} has no live canary and no previous version, so rollback must name both versions: "
            f"`modelctl rollback {name} --from {active} --to {target}` "
            f"(deprecated versions that served before: {', '.join(deprecated) or 'none'})")


def rollback(
    dep: dict[str, Any],
    config: Mapping[str, Any] | None = None,
    *,
    reason: str | None = None,
    now: str,
    to: str | None = None,
    expect: tuple[str, str] | None = None,
    evidence: str | None = None,
    from_: str | None = None,
) -> Transition:
    """Pull the live canary, or return active to ``previous``/``to``; the pulled version is held.

    Every rollback names the version it takes out of service: the live canary, ``from_``, or
    the active version when ``to`` names the target. A plain rollback (none of ``from_``,
    ``to``, ``expect``) without a live canary is refused with the exact command to run.
    ``from_`` that is already out of service (rolled-back, deprecated, archived) is a no-op.

    ``expect`` is the ``(stage, version)`` the caller decided to roll back (from
    :func:`rollback_target` or ``Transition.from_status``/``version`` of a first attempt): when
    it no longer holds, the result is a no-op if that version is already rolled back and
    :class:`~modelctl.errors.Conflict` otherwise, so retries and racing watchers never roll
    back twice.
    """
    name = _name(dep)
    reason = clean_text(reason)
    evidence = clean_text(evidence, limit=2000)
    target = rollback_target(dep)
    if expect is not None:
        stage, version = expect
        if target != (stage, version):
            status = (dep.get("versions") or {}).get(version)
            if status == "rolled-back":
                return _noop(dep, "rollback", version, status,
                             f"{version} of {name} was already rolled back")
            raise Conflict(
                f"{version} is no longer the {stage} version of {name} (it is {status or 'unknown'}); "
                "nothing was rolled back",
                hint=f"check `modelctl status {name}` and decide again",
            )
    if from_ is not None:
        status = _status(dep, from_)
        live = _slot(dep, "canary")
        if live and live.get("version") == from_:
            target = ("canary", from_)
        elif dep.get("active") == from_:
            if live:
                raise TransitionError(
                    f"{live['version']} of {name} is in canary at {fmt_pct(live['percent'])}%; roll it back first "
                    f"(`modelctl rollback {name} --from {live['version']}`), then take active {from_} out of service"
                )
            target = ("active", from_)
        elif status in OUT_OF_SERVICE:
            return _noop(dep, "rollback", from_, status,
                         f"{from_} of {name} is already out of service ({status})")
        else:
            raise TransitionError(
                f"{from_} of {name} is {status}, not serving, so there is nothing to roll back; "
                f"see `modelctl status {name}`"
            )
    elif expect is None and to is None and target is not None and target[0] == "active":
        raise TransitionError(rollback_command(dep))
    if target is None:
        raise TransitionError(f"{name} has no active version and no canary; nothing to roll back")
    stage, version = target
    new = _clone(dep)
    hold = {"version": version, "reason": reason or "rolled back", "at": now}
    if stage == "canary":
        active = dep.get("active")
        if to is not None and to != active:
            raise TransitionError(
                f"{version} of {name} is in canary, so rollback ends the canary and {active} keeps "
                f"serving; --to does not apply (run rollback again afterwards to change the active version)"
            )
        pct = dep["canary"].get("percent")
        new["canary"] = None
        new["versions"][version] = "rolled-back"
        new["hold"] = hold
        return Transition(
            deployment=new, action="rollback", version=version, from_status="canary",
            to_status="rolled-back", percent=pct,
            events=[TagEvent("canary", version, "unassign")],
            trailers=_trailers("rollback", name, version, from_status="canary", to_status="rolled-back",
                               percent=pct, restored=active, reason=reason, evidence=evidence),
            subject=_subject("rollback", name, version,
                             f"(canary at {fmt_pct(pct)}%), {active} keeps serving"),
        )
    restore = to if to is not None else dep.get("previous")
    deprecated = sorted((v for v, s in dep["versions"].items() if s == "deprecated"),
                        key=semver_key, reverse=True)
    listing = ", ".join(deprecated) if deprecated else "none"
    if restore is None:
        raise TransitionError(
            f"{name} has no previous version recorded; name one with --to VERSION "
            f"(deprecated versions that served before: {listing})"
        )
    restore_status = _status(dep, restore)
    if restore == version:
        if to is not None:  # a re-run of `rollback --to V` after it landed: V already serves
            return _noop(dep, "rollback", version, "active", f"{version} of {name} is already active")
        raise TransitionError(f"{restore} of {name} is already active; nothing to roll back to")
    if restore_status != "deprecated":
        raise TransitionError(
            f"{restore} of {name} is {restore_status}; rollback returns to a version that served "
            f"before (deprecated: {listing}); promote it through the pipeline instead"
        )
    new["versions"][version] = "rolled-back"
    new["versions"][restore] = "active"
    new["active"] = restore
    new["previous"] = None
    new["hold"] = hold
    return Transition(
        deployment=new, action="rollback", version=version, from_status="active",
        to_status="rolled-back",
        events=[TagEvent("active", version, "unassign"), TagEvent("active", restore, "assign")],
        trailers=_trailers("rollback", name, version, from_status="active", to_status="rolled-back",
                           restored=restore, reason=reason, evidence=evidence),
        subject=_subject("rollback", name, version, f"(active), {restore} serves again"),
    )


# -- judging a change made outside the commands ---------------------------------------------

_EPOCH = "1970-01-01T00:00:00Z"  # replays never record a time


@dataclass(frozen=True)
class Finding:
    """One lifecycle rule a deployment change breaks.

    ``rule``: ``hold``, ``skipped-stage``, ``gate``, ``one-canary``, ``one-shadow``,
    ``canary-percent`` or ``illegal-move``; ``override``: what a commit must record for the
    change to stand (``force``: ``Modelctl-Force: true`` with a ``Modelctl-Reason``; ``gate``:
    ``Modelctl-Gate-Override``), or None when no override exists (force never relaxes it).
    """

    rule: str
    version: str | None
    message: str
    override: str | None = None


class Move(NamedTuple):
    """One version's status change between two deployments (None: absent)."""

    version: str
    before: str | None
    after: str | None


def _order(version: object) -> tuple[int, SemverKey | tuple[()], str]:
    # a hand edit may hold anything: valid versions in SemVer order, anything else after them
    if not isinstance(version, str):
        return (1, (), str(version))
    try:
        return (0, semver_key(version), "")
    except (AttributeError, TypeError, ValueError):
        return (1, (), str(version))


def moves(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Move]:
    """Every version whose status differs between two deployments, in version order."""
    b = (before or {}).get("versions") or {}
    a = after.get("versions") or {}
    return [Move(v, b.get(v), a.get(v)) for v in sorted(set(a) | set(b), key=_order) if b.get(v) != a.get(v)]


def _replay(dep: dict[str, Any], after: dict[str, Any], move: Move, config: Mapping[str, Any] | None, force: bool) -> Transition | None:
    """The command that makes `move` from `dep`, run as the commands run it (None: part of another move)."""
    v, s0, s1 = move
    reason = "replay" if force else None
    if s1 == "rolled-back" and s0 in ("canary", "active"):
        to = after.get("active") if s0 == "active" else None
        return rollback(dep, config, now=_EPOCH, from_=v, to=to)
    if s0 == "active" and s1 == "deprecated":
        if after.get("active") and after.get("active") != v:
            return None  # replaced: the new active's promotion (or rollback) is judged on its own
        raise TransitionError(f"{v} of {_name(dep)} stopped being active with nothing active in its place")
    if s0 == "deprecated" and s1 == "active":
        return rollback(dep, config, now=_EPOCH, to=v)
    if s1 in PROMOTE_TARGETS:
        slot = after.get(s1) if s1 in ("canary", "shadow") else None
        percent = slot.get("percent") if slot and slot.get("version") == v else None
        return promote(dep, v, s1, config, force=force, reason=reason, now=_EPOCH, percent=percent)
    raise TransitionError(f"{v} of {_name(dep)} moved from {s0} to {s1}, which no modelctl command does")


def judge_move(before: dict[str, Any] | None, after: dict[str, Any], config: Mapping[str, Any] | None = None, *,
               gate: Callable[[str, str | None], str | None] | None = None) -> list[Finding]:
    """The lifecycle rules a change from `before` to `after` breaks, judged by replaying each
    version's move through the transitions the commands use (so the rules live once, here).

    `gate(version, baseline)` (optional, when gate.required) answers why the eval gate fails a
    version entering canary or active, or None when it passes.
    """
    name = after.get("name") or (before or {}).get("name") or "?"
    base = _clone(before) if before else new_deployment(name)
    base.setdefault("versions", {})
    out: list[Finding] = []
    versions = after.get("versions") or {}
    for stage in ("canary", "shadow"):
        holders = sorted((v for v, st in versions.items() if st == stage), key=_order)
        if len(holders) > 1:
            out.append(Finding(f"one-{stage}", holders[-1],
                               f"{name} has {len(holders)} versions in {stage} ({', '.join(holders)}); "
                               f"one {stage} per model"))
    live = _slot(after, "canary")
    if live and live != _slot(base, "canary"):
        pct: object
        try:
            pct = _norm_pct(live.get("percent"))
        except UsageError:
            pct = live.get("percent")
        steps = canary_steps(config)
        if pct not in steps:
            out.append(Finding("canary-percent", live.get("version"),
                               f"canary percent {pct} of {name} is not one of canary.steps "
                               f"({', '.join(fmt_pct(s) for s in steps)})"))
    crowded = {f.rule.split("-", 1)[1] for f in out if f.rule.startswith("one-")}
    for move in moves(base, after):
        v, s0, s1 = move
        if s1 is None:
            out.append(Finding("illegal-move", v, f"{v} of {name} was removed from versions; versions stay listed"))
            continue
        dep = base
        if s0 is None:
            if s1 == "registered":
                continue
            try:
                dep = register(base, v).deployment
            except UsageError as exc:
                out.append(Finding("illegal-move", v, exc.message))
                continue
            move = Move(v, "registered", s1)
        if s1 in crowded:
            continue  # already explained as one-canary / one-shadow
        try:
            t = _replay(dep, after, move, config, force=False)
        except (TransitionError, UsageError) as exc:
            refused = exc.message
            try:
                t = _replay(dep, after, move, config, force=True)
            except (TransitionError, UsageError) as again:
                out.append(Finding("illegal-move", v, again.message))
                continue
            said = trailers.only(t.trailers, (trailers.OVERRIDE, trailers.SKIPPED)) if t else {}
            rules = (["hold"] if said.get(trailers.OVERRIDE) == "hold" else []) + \
                (["skipped-stage"] if said.get(trailers.SKIPPED) else [])
            for rule in rules or ["illegal-move"]:
                out.append(Finding(rule, v, refused, "force" if rules else None))
        if gate is not None and s1 in ("canary", "active") and move.before != "deprecated":  # as the commands: a rollback is not gated
            failed = gate(v, base.get("active") if base.get("active") != v else None)
            if failed:
                out.append(Finding("gate", v, f"{name} {v} moves to {s1} but gate.required is set and the eval "
                                              f"gate fails: {failed}", "gate"))
    return out


def infer_event(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any] | None:
    """The lifecycle event a change without trailers most likely was (a squash merge, a hand
    edit): ``action``, ``version``, ``from``, ``to``, ``percent``... or None when nothing moved."""
    found = moves(before, after)

    def was(m: Move) -> str:
        # a version with a bundle but not listed in `versions:` is registered (the compact map)
        return m.before or "registered"

    by_to = {m.after: m for m in found}
    old_active = (before or {}).get("active")
    event: dict[str, Any] = {}
    if "rolled-back" in by_to:
        m = by_to["rolled-back"]
        event = {"action": "rollback", "version": m.version, "from": m.before, "to": m.after,
                 "restored": after.get("active")}
        if m.before == "canary":
            event["percent"] = ((before or {}).get("canary") or {}).get("percent")
    elif "active" in by_to:
        m = by_to["active"]
        event = {"action": "promote", "version": m.version, "from": was(m), "to": "active",
                 "replaces": old_active}
    else:
        for stage in ("canary", "shadow"):
            # not `was`: that name is the status helper above, which the loop below still calls
            slot, prior = _slot(after, stage), _slot(before or {}, stage)
            if slot and slot != prior:
                event = {"action": stage, "version": slot.get("version"), "to": stage, "percent": slot.get("percent"),
                         "from": (before or {}).get("versions", {}).get(slot.get("version")) or "registered"}
                if prior and prior.get("version") == slot.get("version"):
                    event["from_percent"] = prior.get("percent")
                break
        else:
            for m in found:
                if m.after in ("staging", "deprecated", "archived"):
                    event = {"action": "promote", "version": m.version, "from": was(m), "to": m.after}
                    break
                if m.before is None and m.after == "registered":
                    event = {"action": "register", "version": m.version, "from": None, "to": "registered"}
                    break
    return event or None


# -- reading ---------------------------------------------------------------------------------


def next_moves(dep: dict[str, Any], version: str, config: Mapping[str, Any] | None = None) -> list[str]:
    """Promotion targets the lifecycle allows for a version now, without --force."""
    allowed = []
    for target in PROMOTE_TARGETS:
        try:
            t = promote(dep, version, target, config, now="1970-01-01T00:00:00Z")
        except (TransitionError, UsageError):
            continue
        if not t.noop:
            allowed.append(target)
    return allowed


def status_summary(dep: dict[str, Any]) -> dict[str, Any]:
    """The deployment as `status` shows it: who serves what share, and every version's status."""
    live = _slot(dep, "canary")
    share = _norm_pct(live["percent"]) if live else 0
    traffic = []
    if dep.get("active"):
        traffic.append({"version": dep["active"], "role": "active", "percent": _norm_pct(100 - share)})
    if live:
        traffic.append({"version": live["version"], "role": "canary", "percent": share})
    versions = dep.get("versions") or {}
    return {
        "name": dep.get("name"),
        "active": dep.get("active"),
        "previous": dep.get("previous"),
        "canary": copy.deepcopy(live),
        "shadow": copy.deepcopy(_slot(dep, "shadow")),
        "hold": copy.deepcopy(dep.get("hold") or None),
        "traffic": traffic,
        "versions": [
            {"version": v, "status": versions[v]}
            for v in sorted(versions, key=semver_key, reverse=True)
        ],
    }


# -- the versions map of a deployment file ------------------------------------------------------
# A model may have thousands of versions; its deployment file must stay small (GitOps controllers
# sync it, reviewers read it) and always under the size modelctl reads back. So the file lists
# only what a reader needs: `versions:` names the versions whose status is neither `registered`
# nor `archived`; a version with a bundle under bundles/NAME/ that is not listed is `registered`;
# archived versions are runs of consecutive bundle versions (SemVer order) in `archived:`, e.g.
# ["1.0.0..1.4.7", "2.0.1"]. In memory the map is always whole: `expand_versions` on reading,
# `compact_versions` on writing. Files that list registered and archived versions still load.

def bundle_versions(names: list[str], ordered: bool = True) -> list[str]:
    """Versions from bundle file names (`2.4.0.yaml`), in SemVer order; other names are ignored."""
    found = [entry[:-5] for entry in names if entry.endswith(".yaml") and VERSION_RE.fullmatch(entry[:-5])]
    return sorted(found, key=version_key) if ordered else found


def version_key(version: str) -> SemverKey:
    """names.semver_key, quicker for the common MAJOR.MINOR.PATCH (ten thousand versions get sorted)."""
    if "-" not in version:
        major, minor, patch = version.split(".")
        return (int(major), int(minor), int(patch), 1, ())
    return semver_key(version)


def expand_versions(dep: dict[str, Any], bundles: list[str]) -> dict[str, Any]:
    """The deployment with its whole versions map: listed statuses, archived runs, the rest registered."""
    listed = dict(dep.get("versions") or {})
    runs = dep.get("archived") or []
    if not runs and all(v in listed for v in bundles):
        out = dict(dep)
        out.pop("archived", None)
        out["versions"] = listed
        return out
    keys = [version_key(v) for v in bundles] if runs else []
    archived: set[str] = set()
    for run in runs:
        lo, _, hi = str(run).partition("..")
        try:
            lo_key, hi_key = semver_key(lo), semver_key(hi or lo)
        except (ValueError, AttributeError):
            continue  # the schema refuses it; a reader never guesses
        archived.update(v for v, k in zip(bundles, keys) if lo_key <= k <= hi_key)
    versions = dict(listed)
    for v in bundles:
        if v not in versions:
            versions[v] = "archived" if v in archived else "registered"
    out = {k: val for k, val in dep.items() if k != "archived"}
    out["versions"] = versions
    return out


def compact_versions(dep: dict[str, Any]) -> dict[str, Any]:
    """The deployment as written: registered versions left out, archived ones as runs (see above)."""
    versions = dep.get("versions") or {}
    ordered = sorted(versions, key=version_key) if "archived" in versions.values() else []
    runs: list[list[str]] = []
    prev_archived = False
    for v in ordered:
        if versions[v] == "archived":
            if prev_archived:
                runs[-1][1] = v
            else:
                runs.append([v, v])
        prev_archived = versions[v] == "archived"
    out = {k: val for k, val in dep.items() if k not in ("versions", "archived", "hold")}
    out["versions"] = {v: s for v, s in versions.items() if s not in ("registered", "archived")}
    if runs:
        out["archived"] = [lo if lo == hi else f"{lo}..{hi}" for lo, hi in runs]
    if "hold" in dep:
        out["hold"] = dep["hold"]  # keep hold last, where earlier versions of modelctl wrote it
    return out


def problems(dep: dict[str, Any], name: str, bundles: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Every inconsistency of one deployment file, in itself and against the model's bundles, as
    (message, location in the file); empty when sound. The one deployment-invariant check (`check`)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    registered = set(bundles)
    if dep.get("name") != name:
        out.append((f"file says name {dep.get('name')} but lives at deployments/{name}.yaml", ("name",)))
    for v in dep.get("versions") or {}:
        if v not in registered:
            out.append((f"version {v} is listed but has no bundle bundles/{name}/{v}.yaml", ("versions", v)))
    # a bundle not listed in versions is `registered` (or archived, in `archived:`): README "Many versions"
    versions = expand_versions(dep, sorted(registered, key=version_key))["versions"]
    active = dep.get("active")
    if active and versions.get(active) != "active":
        out.append((f"active is {active} but its status is {versions.get(active) or 'missing (not a listed version)'}",
                    ("active",)))
    for key in ("canary", "shadow"):
        split = dep.get(key)
        if split and versions.get(split["version"]) != key:
            out.append((f"{key} is {split['version']} but its status is "
                        f"{versions.get(split['version']) or 'missing (not a listed version)'}", (key,)))
    for v, st in versions.items():
        if st == "active" and active != v:
            out.append((f"{v} has status active but active is {active}", ("versions", v)))
        if st in ("canary", "shadow") and (dep.get(st) or {}).get("version") != v:
            split = dep.get(st)
            out.append((f"{v} has status {st} but {st} is {split['version'] if split else 'null'}", ("versions", v)))
    if dep.get("canary") and not active:
        out.append(("a canary without an active version: a rollback would have nothing to return to", ("canary",)))
    previous = dep.get("previous")
    if previous and previous not in versions:
        out.append((f"previous is {previous}, which is not a registered version", ("previous",)))
    hold = dep.get("hold") or None
    if hold and hold.get("version") not in versions:
        out.append((f"hold names {hold.get('version')}, which is not a registered version", ("hold",)))
    return out
