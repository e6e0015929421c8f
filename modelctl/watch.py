"""`watch`: the loop that follows a live canary (and shadow): poll -> judge -> act.

The loop has no clock of its own: `clock` (wall time, for sample staleness, canary windows and
step times), `monotonic` (poll intervals, durations, detection-to-commit time) and `sleep` are
injected, and so are the metrics provider and the actions, so tests drive it without waiting.

Each poll:

1. reads the deployment at HEAD (committed state, never the work tree) to find the live canary,
   its percent and start (`canary.started`, else the time of the commit that started it), the
   active version and the shadow; the registered baseline is the canary bundle's `baseline`
   (keys it lacks are taken from the active bundle's);
2. fetches the active, canary and shadow versions in one provider call over the canary window
   (seconds since the canary started; the shadow is reported over the same window);
3. judges the canary with `analysis.Judge` and acts on its decision:
   - `rollback`: the same code as `modelctl rollback` (`ops.rollback` with the judged canary as
     precondition and the evidence as trailers); the time from the start of the deciding poll to
     the commit (and push) is measured. Exit 1; exit 0 when another writer had already rolled it
     back (the store re-checks on the remote tip), exit 3 when the canary changed underneath;
   - `hold` (the `on_errors: hold` fail-safe after `consecutive_errors` polls without usable
     data): stop, write nothing, exit 4 (DESIGN §7: the metrics endpoint failed past its limits;
     the canary stays where it is for a human to decide);
   - `alert`: reported once per failing streak, watching goes on;
   - `advance-ok` with `--advance`: after `consecutive_failures` such polls in a row and at least
     `canary.min_step_seconds` on the current step, the canary moves to the next of
     `canary.steps`; past the last step it is promoted to active (exit 0).
4. judges the shadow the same way, for the report only: shadow traffic is mirrored and never
   served, so a bad shadow hurts no user and never rolls anything back (its verdicts say whether
   to promote it; its errors never count towards the canary's fail-safe).

`--once` makes one poll; the tracker state (failing/error streaks, and for http-json the counter
values the increases start from) is kept between `--once` runs of the same canary in the clone's
git directory (`modelctl-watch/<name>.json`, never committed), so `consecutive_failures` means
the same from cron as from a long-running watch, and an http-json endpoint's counters count from
the first run. `--dry-run` judges and reports what it
would do without writing anything (a rollback decision still exits 1: the verdict is negative).

The watch ends when the canary it follows ends (rolled back or promoted by someone else: exit 0),
when `--max-duration` passes without a decision (exit 0), or when there is nothing to watch.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

from .analysis import (ADVANCE_OK, ALERT, HOLD, ROLLBACK, AnalysisConfig, Decision, Judge, Sample,
                       TrackerState)
from .errors import UsageError
from .names import check_name

EXIT_DONE = 0
EXIT_ROLLED_BACK = 1
EXIT_METRICS = 4

# outcomes of a watch (WatchResult.outcome)
ROLLED_BACK = "rolled-back"
ALREADY_ROLLED_BACK = "already-rolled-back"
WOULD_ROLL_BACK = "would-roll-back"
HELD = "held"
PROMOTED = "promoted"
ENDED = "canary-ended"
NOTHING = "nothing-to-watch"
NO_DECISION = "no-decision"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds from `5`, `5s`, `2m`, `1h` or `500ms`; UsageError for anything else or <= 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        if not m:
            raise UsageError(f"invalid {what} {str(text)[:40]!r}", hint="use seconds (5 or 5s), minutes (2m) or hours (1h)")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"invalid {what} {text!r}: it must be more than zero")
    return value


def _unix(stamp: Any) -> float | None:
    """Unix seconds from an ISO time such as 2026-04-20T10:00:00Z (None when unreadable)."""
    if not isinstance(stamp, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def iso(ts: float) -> str:
    """A unix time as ISO 8601 UTC with a Z."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- what is live


@dataclass(frozen=True)
class Split:
    """A canary or shadow: version, percent, when it started and when its percent last changed."""

    version: str
    percent: float
    started: float | None = None  # unix seconds
    started_raw: str | None = None  # as written in the deployment (keys the --once state)
    step_started: float | None = None  # unix seconds of the last percent change


@dataclass(frozen=True)
class Target:
    """What serves one model at the tip, as watch needs it."""

    name: str
    commit: str | None
    active: str | None
    canary: Split | None
    shadow: Split | None
    versions: Mapping[str, str]  # version -> status
    registered: Mapping[str, Any]  # the canary's registered baseline (active bundle's as fallback)
    shadow_registered: Mapping[str, Any]


def read_target(reg, name: str, *, history: bool = True) -> Target:
    """The live canary, shadow and active version of a model at HEAD, with their baselines."""
    check_name(name)
    snap = reg.snapshot()
    dep = reg.deployment(name, snap)
    if dep is None:
        from .errors import NotFound

        raise NotFound(f"no model named {name!r} in this registry", hint="see 'modelctl status' for the models it has")
    active = dep.get("active")
    splits = {}
    for stage in ("canary", "shadow"):
        slot = dep.get(stage) or None
        if slot:
            raw = slot.get("started")
            splits[stage] = Split(slot["version"], slot["percent"], _unix(raw), raw if isinstance(raw, str) else None)
    if history and "canary" in splits:
        splits["canary"] = _with_history(reg, name, splits["canary"])
    if history and "shadow" in splits and splits["shadow"].started is None:
        splits["shadow"] = _with_history(reg, name, splits["shadow"], stage="shadow")
    baselines: dict[str, Mapping[str, Any]] = {}

    def baseline(version: str | None) -> Mapping[str, Any]:
        if version is None:
            return {}
        if version not in baselines:
            data = reg.bundle(name, version, snap).get("baseline")
            baselines[version] = data if isinstance(data, Mapping) else {}
        return baselines[version]

    canary = splits.get("canary")
    shadow = splits.get("shadow")
    fallback = baseline(active)
    registered = {**fallback, **baseline(canary.version)} if canary else dict(fallback)
    shadow_registered = {**fallback, **baseline(shadow.version)} if shadow else {}
    return Target(name=name, commit=snap.commit, active=active, canary=canary, shadow=shadow,
                  versions=dict(dep.get("versions") or {}), registered=registered,
                  shadow_registered=shadow_registered)


def history(reg, name: str, limit: int = 200) -> list[dict]:
    """Recent commits that changed a model's deployment file, newest first, with their trailers."""
    from .registry import deployment_path

    keys = ("Action", "Version", "From", "To")
    fmt = "%x1e%H%x1f%ct%x1f%an <%ae>" + "".join(
        f"%x1f%(trailers:key=Modelctl-{k},valueonly,separator=%x2C)" for k in keys)
    proc = reg.store.git("log", "-n", str(limit), f"--format={fmt}", "HEAD", "--", deployment_path(name),
                         check=False)
    if proc.returncode != 0:
        return []
    out = []
    for record in proc.stdout.decode("utf-8", "replace").split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 3 + len(keys):
            continue
        commit, when, author, *values = parts
        item = {"commit": commit, "time": float(when), "author": author}
        item.update({k.lower(): v.strip() for k, v in zip(keys, values)})
        out.append(item)
    return out


def _with_history(reg, name: str, split: Split, stage: str = "canary") -> Split:
    """Fill in when the split started (if the file does not say) and when its percent last changed."""
    commits = history(reg, name)
    step = None
    started = split.started
    for c in commits:  # newest first
        if c["version"] != split.version or c["to"] != stage:
            continue
        if step is None:
            step = c["time"]
        if c["from"] != stage:  # the commit that started it (earlier ones are an older run)
            if started is None:
                started = c["time"]
            break
    step = step if step is not None else started
    if started is not None and step is not None:
        step = max(step, started)
    return replace(split, started=started, step_started=step)


def who_rolled_back(reg, name: str, version: str) -> str | None:
    """'<short commit> by <author>' of the newest rollback commit of a version, if any."""
    for c in history(reg, name):
        if c["action"] == "rollback" and c["version"] == version:
            return f"commit {c['commit'][:12]} by {c['author']}"
    return None


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class PollReport:
    """Everything one poll saw and decided (what the renderers show)."""

    poll: int
    at: float  # unix seconds
    model: str
    active: str | None
    canary: Split | None
    shadow: Split | None
    since_seconds: float
    decision: Decision | None  # None when there is no canary to judge
    shadow_decision: Decision | None
    error: str | None  # the provider's failure, when the poll got no data
    seconds: float  # how long the poll took
    dry_run: bool = False

    @property
    def action(self) -> str | None:
        return self.decision.action if self.decision else None

    def to_json(self) -> dict:
        """The poll as a JSON-ready dict (one line of `watch --json`)."""
        def split(s: Split | None) -> dict | None:
            return None if s is None else {"version": s.version, "percent": s.percent}

        def metrics(decision: Decision | None) -> list:
            if decision is None:
                return []
            rows = []
            for r in decision.results:
                row = r.evidence()
                row["action"] = r.action
                row["streak"] = decision.streaks.get(r.metric, 0)
                rows.append(row)
            return rows

        doc = {
            "event": "poll",
            "poll": self.poll,
            "time": iso(self.at),
            "model": self.model,
            "active": self.active,
            "canary": split(self.canary),
            "since_seconds": round(self.since_seconds, 3),
            "action": self.action,
            "reason": self.decision.reason if self.decision else None,
            "error_polls": self.decision.error_polls if self.decision else 0,
            "error": self.error,
            "metrics": metrics(self.decision),
            "shadow": None,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }
        if self.shadow is not None:
            doc["shadow"] = {**split(self.shadow),
                             "verdict": self.shadow_decision.action if self.shadow_decision else None,
                             "metrics": metrics(self.shadow_decision)}
        return doc


@dataclass(frozen=True)
class WatchEvent:
    """Something watch did or would do between polls: alert, step, promote."""

    kind: str  # "alert" | "step" | "promote" | "would-step" | "would-promote" | "note"
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"event": self.kind, "message": self.message, **self.data}


@dataclass(frozen=True)
class WatchResult:
    """How a watch ended."""

    outcome: str
    exit_code: int
    message: str
    model: str
    version: str | None = None  # the canary judged
    polls: int = 0
    commit: str | None = None
    pushed: bool = False
    tags: Sequence[str] = ()
    detect_to_commit_seconds: float | None = None
    evidence: Sequence[str] = ()
    reason: str | None = None
    decision: Decision | None = None

    def to_json(self) -> dict:
        return {
            "event": "result",
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "model": self.model,
            "version": self.version,
            "polls": self.polls,
            "commit": self.commit,
            "pushed": self.pushed,
            "tags": list(self.tags),
            "detect_to_commit_seconds": None if self.detect_to_commit_seconds is None
            else round(self.detect_to_commit_seconds, 3),
            "reason": self.reason,
            "evidence": list(self.evidence),
        }


# --------------------------------------------------------------------------- actions


class Actions(Protocol):
    """The writes watch makes (the lifecycle operations by default)."""

    def rollback(self, target: Target, *, reason: str, evidence: list[str]) -> Any:
        """Roll back target.canary (precondition: it is still the live canary); return the store Outcome."""

    def step(self, target: Target, percent: float, *, reason: str, evidence: list[str]) -> Any:
        """Move the live canary to `percent`."""

    def promote(self, target: Target, *, reason: str, evidence: list[str]) -> Any:
        """Promote the live canary to active."""


class OpsActions:
    """Actions through modelctl.ops: the same code paths as the rollback/canary/promote commands."""

    def __init__(self, reg, opts=None):
        self.reg = reg
        self.opts = opts

    def rollback(self, target: Target, *, reason: str, evidence: list[str]) -> Any:
        from . import ops

        # one Modelctl-Evidence trailer; metrics are separated by " | " (each line uses "; " inside)
        return ops.rollback(self.reg, target.name, reason=reason, expect_canary=target.canary.version,
                            evidence=" | ".join(evidence), opts=self.opts)

    def step(self, target: Target, percent: float, *, reason: str, evidence: list[str]) -> Any:
        from . import ops

        return ops.canary(self.reg, target.name, target.canary.version, percent, reason=reason, opts=self.opts)

    def promote(self, target: Target, *, reason: str, evidence: list[str]) -> Any:
        from . import ops

        return ops.promote(self.reg, target.name, target.canary.version, to="active", reason=reason,
                           opts=self.opts)


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class WatchOptions:
    """How to watch (the CLI flags)."""

    interval: float | None = None  # seconds between polls; None -> analysis.interval
    max_duration: float | None = None  # seconds; None -> until a decision
    once: bool = False
    dry_run: bool = False
    advance: bool = False


class Watcher:
    """Follows one model's live canary (and shadow); `run()` returns how the watch ended."""

    def __init__(
        self,
        reg,
        name: str,
        options: WatchOptions = WatchOptions(),
        *,
        provider=None,
        actions: Actions | None = None,
        config: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_poll: Callable[[PollReport], None] | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
        provider_name: str | None = None,
        url: str | None = None,
        write_options=None,
    ):
        self.reg = reg
        self.name = check_name(name)
        self.options = options
        self.config = dict(config) if config is not None else reg.config()
        self.analysis = AnalysisConfig.from_config(self.config)
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.on_poll = on_poll or (lambda report: None)
        self.on_event = on_event or (lambda event: None)
        if provider is None:
            from .metrics import make_provider

            provider = make_provider(self.config, provider=provider_name, url=url, clock=clock, monotonic=monotonic)
        self.provider = provider
        self.actions = actions or OpsActions(reg, write_options)
        interval = options.interval
        if interval is None:
            interval = (self.config.get("analysis") or {}).get("interval", 30)
        self.interval = parse_duration(interval, "interval")
        self.max_duration = None if options.max_duration is None else parse_duration(options.max_duration,
                                                                                     "max duration")
        from .state import canary_steps

        self.steps = canary_steps(self.config)
        self.min_step_seconds = float((self.config.get("canary") or {}).get("min_step_seconds", 300))
        self.need = max(1, self.analysis.consecutive_failures)
        # per followed canary
        self.following: str | None = None
        self.judge: Judge | None = None
        self.shadow_judge: Judge | None = None
        self.shadow_following: str | None = None
        self.ok_streak = 0
        self.step_started: float | None = None
        self.window_start: float | None = None  # when the followed canary started (unix seconds)
        self.alerting = False
        self.announced: set[str] = set()
        self.polls = 0
        self.started_at = 0.0

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> WatchResult:
        """Poll until a decision, the end of the canary, --once or --max-duration."""
        self.started_at = self.clock()
        start = self.monotonic()
        deadline = start + self.max_duration if self.max_duration is not None else None
        while True:
            poll_start = self.monotonic()
            result = self.poll(poll_start)
            if result is not None:
                return result
            if self.options.once:
                return self._end(NO_DECISION, EXIT_DONE, self._once_message())
            next_at = poll_start + self.interval
            if deadline is not None and next_at >= deadline:
                return self._end(NO_DECISION, EXIT_DONE,
                                 f"no decision on {self._subject()} within {_secs(self.max_duration)}; "
                                 "nothing was changed")
            self.sleep(max(0.0, next_at - self.monotonic()))

    def poll(self, poll_start: float | None = None) -> WatchResult | None:
        """One poll: read the tip, fetch, judge, act; a WatchResult when the watch is over."""
        poll_start = self.monotonic() if poll_start is None else poll_start
        # commit history (when the canary started) is read only when a canary is first followed
        target = read_target(self.reg, self.name, history=self.following is None)
        ended = self._follow(target)
        if ended is not None:
            return ended
        self.polls += 1
        now = self.clock()
        window_start = self.window_start or (target.shadow and target.shadow.started) or self.started_at
        since = max(1.0, now - window_start)
        versions = [v for v in (target.active,
                                target.canary.version if target.canary else None,
                                target.shadow.version if target.shadow else None) if v]
        versions = list(dict.fromkeys(versions))
        samples: dict[str, Sample] = {}
        error = None
        try:
            samples = self.provider.fetch(self.name, versions, since)
        except Exception as exc:  # noqa: BLE001 - a watchdog must outlive any bad answer
            error = " ".join(str(exc).split()) or type(exc).__name__
        now = self.clock()
        decision = shadow_decision = None
        if target.canary:
            if error is not None:
                decision = self.judge.unavailable(error)
            else:
                decision = self.judge.poll(samples.get(target.canary.version), samples.get(target.active),
                                           target.registered, now=now)
        if target.shadow and target.shadow.version != (target.canary.version if target.canary else None):
            if error is not None:
                shadow_decision = self.shadow_judge.unavailable(error)
            else:
                shadow_decision = self.shadow_judge.poll(samples.get(target.shadow.version),
                                                         samples.get(target.active), target.shadow_registered,
                                                         now=now)
        report = PollReport(poll=self.polls, at=now, model=self.name, active=target.active, canary=target.canary,
                            shadow=target.shadow, since_seconds=since, decision=decision,
                            shadow_decision=shadow_decision, error=error,
                            seconds=self.monotonic() - poll_start, dry_run=self.options.dry_run)
        self.on_poll(report)
        if decision is None:
            return None
        result = self._act(target, decision, poll_start, now)
        if result is None:
            self._save_once_state(target)
        return result

    # -- following ---------------------------------------------------------------------------
    def _follow(self, target: Target) -> WatchResult | None:
        """Start or stop following the live canary and shadow; a result when there is nothing left."""
        canary = target.canary.version if target.canary else None
        if self.following is not None and canary != self.following:
            status = target.versions.get(self.following, "gone")
            who = who_rolled_back(self.reg, self.name, self.following) if status == "rolled-back" else None
            detail = f" ({who})" if who else ""
            return self._end(ENDED, EXIT_DONE,
                             f"canary {self.following} of {self.name} ended underneath: it is {status} now"
                             f"{detail}; nothing left to do", version=self.following)
        if canary is not None and self.following is None:
            self.following = canary
            self.judge = Judge(self.analysis)
            self.ok_streak = 0
            self.alerting = False
            self.window_start = target.canary.started
            self.step_started = target.canary.step_started or target.canary.started or self.clock()
            self._load_once_state(target)
        shadow = target.shadow.version if target.shadow else None
        if shadow != self.shadow_following:
            self.shadow_following = shadow
            self.shadow_judge = Judge(self.analysis) if shadow else None
        if canary is None and shadow is None:
            if self.polls == 0:
                return self._end(NOTHING, EXIT_DONE,
                                 f"{self.name} has no live canary or shadow; nothing to watch")
            return self._end(ENDED, EXIT_DONE, f"the shadow of {self.name} ended; nothing left to watch")
        return None

    # -- acting ------------------------------------------------------------------------------
    def _act(self, target: Target, decision: Decision, poll_start: float, now: float) -> WatchResult | None:
        action = decision.action
        version = target.canary.version
        if action == ROLLBACK:
            return self._rollback(target, decision, poll_start)
        if action == HOLD:
            return self._end(HELD, EXIT_METRICS,
                             f"no usable metrics for {decision.error_polls} polls in a row; holding: canary "
                             f"{version} of {self.name} stays at {_pct(target.canary.percent)}% and nothing was "
                             f"written (last problem: {_first_reason(decision)})",
                             version=version, decision=decision)
        if action == ALERT:
            if not self.alerting:
                self.alerting = True
                self.on_event(WatchEvent("alert", f"alert: {decision.reason} on canary {version} of {self.name} "
                                         "(action: alert, so it keeps running)",
                                         {"version": version, "evidence": decision.evidence_lines()}))
        else:
            self.alerting = False
        if action != ADVANCE_OK:
            self.ok_streak = 0
            return None
        self.ok_streak += 1
        if not self.options.advance or self.ok_streak < self.need:
            return None
        on_step = now - (self.step_started if self.step_started is not None else now)
        if on_step < self.min_step_seconds:
            return None
        return self._advance(target, decision, now)

    def _rollback(self, target: Target, decision: Decision, poll_start: float) -> WatchResult:
        version = target.canary.version
        evidence = decision.evidence_lines()
        why = "fail-safe: " if decision.fail_safe else ""
        reason = f"watch {why}{decision.reason}"
        if self.options.dry_run:
            return self._end(WOULD_ROLL_BACK, EXIT_ROLLED_BACK,
                             f"dry run: would roll back canary {version} of {self.name} ({decision.reason}); "
                             "nothing was written", version=version, evidence=evidence, reason=reason,
                             decision=decision)
        out = self.actions.rollback(target, reason=reason, evidence=evidence)
        seconds = self.monotonic() - poll_start
        self._clear_once_state()
        if getattr(out, "noop", False):
            note = out.result if isinstance(getattr(out, "result", None), str) else None
            if not note:
                who = who_rolled_back(self.reg, self.name, version)
                note = f"canary {version} of {self.name} was already rolled back{' (' + who + ')' if who else ''}"
            return self._end(ALREADY_ROLLED_BACK, EXIT_DONE, f"{note}; nothing to do", version=version,
                             evidence=evidence, reason=reason, decision=decision)
        pushed = bool(getattr(out, "pushed", False))
        where = "commit and push" if pushed else "commit"
        return self._end(ROLLED_BACK, EXIT_ROLLED_BACK,
                         f"rolled back canary {version} of {self.name} ({decision.reason}); "
                         f"{target.active} keeps serving; {where} {_secs(seconds)} after the deciding poll",
                         version=version, commit=getattr(out, "commit", None), pushed=pushed,
                         tags=tuple(getattr(out, "tags", ()) or ()), detect_to_commit_seconds=seconds,
                         evidence=evidence, reason=reason, decision=decision)

    def _advance(self, target: Target, decision: Decision, now: float) -> WatchResult | None:
        canary = target.canary
        higher = [s for s in self.steps if s > canary.percent]
        evidence = [r.evidence_line() for r in decision.results if r.action == ROLLBACK]
        held = f"{self.ok_streak} passing polls, {_secs(now - self.step_started)} at {_pct(canary.percent)}%"
        if higher:
            nxt = higher[0]
            reason = f"watch --advance: every rollback metric passes ({held})"
            if self.options.dry_run:
                key = f"step:{nxt}"
                if key not in self.announced:
                    self.announced.add(key)
                    self.on_event(WatchEvent("would-step", f"dry run: would move canary {canary.version} of "
                                             f"{self.name} from {_pct(canary.percent)}% to {_pct(nxt)}%",
                                             {"version": canary.version, "percent": nxt}))
                return None
            out = self.actions.step(target, nxt, reason=reason, evidence=evidence)
            self.on_event(WatchEvent("step", f"canary {canary.version} of {self.name}: {_pct(canary.percent)}% -> "
                                     f"{_pct(nxt)}% (commit {str(getattr(out, 'commit', '') or '')[:12]})",
                                     {"version": canary.version, "percent": nxt,
                                      "commit": getattr(out, "commit", None)}))
            self.step_started = self.clock()
            self.ok_streak = 0
            self.judge.reset()  # the split changed: streaks start again at the new step
            return None
        reason = f"watch --advance: every rollback metric passes at the last step ({held})"
        if self.options.dry_run:
            if "promote" not in self.announced:
                self.announced.add("promote")
                self.on_event(WatchEvent("would-promote", f"dry run: would promote canary {canary.version} of "
                                         f"{self.name} to active", {"version": canary.version}))
            return None
        out = self.actions.promote(target, reason=reason, evidence=evidence)
        self._clear_once_state()
        return self._end(PROMOTED, EXIT_DONE, f"promoted {canary.version} of {self.name} to active after its "
                         f"canary passed every step ({', '.join(_pct(s) for s in self.steps)}%)",
                         version=canary.version, commit=getattr(out, "commit", None),
                         pushed=bool(getattr(out, "pushed", False)), tags=tuple(getattr(out, "tags", ()) or ()),
                         reason=reason, decision=decision)

    def _end(self, outcome: str, code: int, message: str, **fields: Any) -> WatchResult:
        fields.setdefault("version", self.following)
        return WatchResult(outcome=outcome, exit_code=code, message=message, model=self.name, polls=self.polls,
                           **fields)

    def _subject(self) -> str:
        if self.following:
            return f"canary {self.following} of {self.name}"
        return f"{self.name}"

    def _once_message(self) -> str:
        if self.following:
            return f"one poll of canary {self.following} of {self.name}: no decision yet; nothing was changed"
        return f"one poll of {self.name}: shadow reported; nothing was changed"

    # -- --once state --------------------------------------------------------------------------
    def _state_path(self):
        return self.reg.store.git_dir / "modelctl-watch" / f"{self.name}.json"

    def _state_key(self, target: Target) -> dict:
        return {"canary": target.canary.version, "started": target.canary.started_raw}

    def _load_once_state(self, target: Target) -> None:
        if not self.options.once or self.options.dry_run:
            return
        try:
            data = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("key") != self._state_key(target):
            return
        try:
            failures = {str(k): int(v) for k, v in (data.get("failures") or {}).items()}
            state = TrackerState(failures=failures, errors=int(data.get("errors", 0)), polls=int(data.get("polls", 0)))
            ok_streak = int(data.get("ok_streak", 0))
        except (TypeError, ValueError, AttributeError):
            return  # a damaged state file is a fresh start, never an error
        self.judge = Judge(self.analysis, state)
        self.ok_streak = ok_streak
        restore = getattr(self.provider, "restore_state", None)
        if restore is not None and data.get("provider") is not None:
            restore(data["provider"])  # http-json: counter increases continue from the last run

    def _save_once_state(self, target: Target) -> None:
        if not self.options.once or self.options.dry_run or self.judge is None or target.canary is None:
            return
        state = self.judge.state
        doc = {"key": self._state_key(target), "failures": dict(state.failures), "errors": state.errors,
               "polls": state.polls, "ok_streak": self.ok_streak}
        export = getattr(self.provider, "export_state", None)
        if export is not None:
            doc["provider"] = export()
        path = self._state_path()
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)
        except OSError:
            pass  # losing streaks costs one more poll; it must not stop the judgement

    def _clear_once_state(self) -> None:
        if not self.options.once:
            return
        try:
            self._state_path().unlink()
        except OSError:
            pass


def watch(reg, name: str, options: WatchOptions = WatchOptions(), **kwargs: Any) -> WatchResult:
    """Watch a model's live canary until a decision (see Watcher for the keyword arguments)."""
    return Watcher(reg, name, options, **kwargs).run()


def _pct(p: float) -> str:
    return f"{p:g}" if isinstance(p, float) else str(p)


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m"


def _first_reason(decision: Decision) -> str:
    for r in decision.deciding or decision.results:
        if r.reason:
            return r.reason
    return decision.reason
