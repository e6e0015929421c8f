"""`watch`: the loop that follows a live canary (and shadow): poll -> judge -> act.

The loop has no clock of its own: `clock` (wall time: poll times, canary windows, step times),
`monotonic` (intervals, --max-duration, detection-to-commit time) and `sleep` are injected, and so
are the metrics provider and the actions, so tests drive it without waiting.

Each poll:

1. reads the deployment to find the live canary, its percent and start (`canary.started`, else
   the time of the commit that started it), the active version (the live control) and the shadow.
   In a push-configured clone (`remote.push` or `--push`) it first fetches the branch, and reads
   the REMOTE tip: what another clone did a second ago is what watch judges and acts on;
2. reads the active, canary and shadow versions in one provider call (`metrics.take_poll`): an
   `observation.Poll` of cumulative counters, or one with `error` set; `--record FILE` appends
   it to FILE in the poll record format;
3. feeds the Poll to `analysis.Judge` (`judge.observe`, the same call `modelctl replay` makes, see
   `judge_polls`) and acts on its decision:
   - `rollback`: the same code as `modelctl rollback` (precondition: the judged canary; evidence
     as trailers); the time from the start of the deciding poll to the commit (and push) is
     measured. Exit 1; exit 0 when another writer had already rolled it back, 3 when the canary
     changed underneath;
   - `hold` (the fail-safe after `consecutive_errors` polls without usable data): stop, write
     nothing, exit 4; `srm-hold` (the canary's share of traffic disagrees with its percent) is
     reported and the watch goes on, neither passing nor rolling back;
   - `alert`: reported once per streak, watching goes on;
   - `advance-ok` with `--advance`: when `judge.ready_to_advance(now)` (minimum duration and
     events) and at least `canary.min_step_seconds` on the current step, the canary moves to the
     next of `canary.steps`; past the last step it is promoted to active (exit 0). Each step and
     promotion carries the evidence and the precondition "the canary is still VERSION at PERCENT%"
     (judged on the remote tip when pushing): if someone changed it, exit 3 and nothing is written;
4. judges the shadow the same way, for the report only (mirrored traffic hurts no user).

The judge's state (`Judge.export_state()`) is kept after every poll in the clone's git directory
(`modelctl-watch/<name>.json`, never committed), keyed by the canary's version and start, so a
restarted watch (or the next `--once` run from cron) resumes the statistic instead of spending a
fresh alpha. `--dry-run` judges and reports without writing anything (not even that state).

The watch ends when the canary ends elsewhere (rolled back or promoted by someone else: exit 0,
naming the commit and its author), when `--max-duration` passes without a decision (exit 0; a hard
bound: each poll's HTTP deadline is capped by the time left), or when there is nothing to watch.
`--report FILE.html` writes a self-contained page of the judgement when the watch ends.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from . import trailers
from .errors import Conflict, ModelctlError, UsageError
from .names import check_name
from .observation import Poll, Reading

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .analysis import Decision, Judge
    from .config import Config
    from .documents import MetricRow, PollSplit, WatchEventLine, WatchPollLine, WatchResultLine
    from .metrics.base import Provider, ReadRequest
    from .notify import Notifier
    from .observation import Reading
    from .ops import WriteOptions
    from .reader import Reader
    from .store import Outcome, Snapshot

EXIT_DONE = 0
EXIT_ROLLED_BACK = 1
EXIT_CONFLICT = 3
EXIT_METRICS = 4

# decision actions (analysis.Decision.action)
CONTINUE, ROLLBACK, ALERT, HOLD, ADVANCE_OK, SRM_HOLD = "continue", "rollback", "alert", "hold", "advance-ok", \
    "srm-hold"

# outcomes of a watch (WatchResult.outcome)
ROLLED_BACK = "rolled-back"
ALREADY_ROLLED_BACK = "already-rolled-back"
WOULD_ROLL_BACK = "would-roll-back"
HELD = "held"
PROMOTED = "promoted"
ENDED = "canary-ended"
CHANGED = "canary-changed"
NOTHING = "nothing-to-watch"
NO_DECISION = "no-decision"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


LOST_RACE = "another watch of this model saved its state first"


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
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def iso(ts: float) -> str:
    """A unix time as ISO 8601 UTC with a Z."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the shared judgement


def judge_polls(judge: Judge, polls: Iterable[Poll]) -> Iterator[tuple[int, Poll, Decision]]:
    """Feed polls to a Judge in order: (1-based poll number, poll, decision). watch and replay both use this."""
    for number, poll in enumerate(polls, 1):
        yield number, poll, judge.observe(poll)


def within_segment(poll: Poll, segment: str) -> Poll:
    """The poll as a canary limited to `segment` is judged: each version's counters in that segment
    become its whole, so the control is the active version's traffic in the same segment (the
    provider labels it: http-json `segments`, Prometheus `{segment}`); other segments are left out."""
    readings = {}
    for version, r in poll.readings.items():
        if segment in r.segments:
            readings[version] = Reading(segments={"": r.segments[segment]}, problems=r.problems, timestamp=r.timestamp)
        else:
            readings[version] = Reading(segments={}, problems={**r.problems, "*": f"no counters for segment {segment} "
                                                               "(the canary serves only that segment)"},
                                        timestamp=r.timestamp)
    return replace(poll, readings=readings)


def ends_watch(decision: Decision) -> bool:
    """Whether a decision ends a watch by itself (a rollback, or the hold fail-safe)."""
    return decision.action in (ROLLBACK, HOLD)


def canary_id(model: str, version: str, started: float | None) -> str:
    """The id that separates canaries in a poll record: model:version:start (unix seconds)."""
    return f"{model}:{version}:{0 if started is None else int(started)}"


def exact(poll: Poll) -> Poll:
    """The poll as its record line reads back, so a replay sees exactly what watch judged."""
    return Poll.from_json(json.loads(json.dumps(poll.to_json(), allow_nan=False)))


def metric_rows(decision: Decision | None) -> list[MetricRow]:
    """One JSON-ready row per metric (and segment) result of a decision."""
    if decision is None:
        return []
    rows: list[MetricRow] = []
    streaks = decision.streaks or {}
    for r in decision.results:
        evidence = r.evidence()
        rows.append({**evidence, "streak": streaks.get(evidence["metric"], 0)})
    return rows


def _reason(decision: Decision) -> str:
    return decision.reason or decision.action


# --------------------------------------------------------------------------- what is live


@dataclass(frozen=True)
class Split:
    """A canary or shadow: version, percent, when it started and when its percent last changed."""

    version: str
    percent: float
    started: float | None = None  # unix seconds
    started_raw: str | None = None  # as written in the deployment (keys the saved judge state)
    step_started: float | None = None  # unix seconds of the last percent change
    segment: str | None = None  # a canary limited to a caller segment: judged within it


@dataclass(frozen=True)
class Target:
    """What serves one model at the tip, as watch needs it."""

    name: str
    commit: str | None
    active: str | None
    canary: Split | None
    shadow: Split | None
    versions: Mapping[str, str]  # version -> status
    prior: Mapping[str, Any]  # the ACTIVE bundle's registered baseline (never the candidate's)
    ref: str = "HEAD"


def read_target(reg: Reader, name: str, *, history: bool = True, ref: str = "HEAD", snap: Snapshot | None = None,
                dep: Mapping[str, Any] | None = None, priors: dict[str, Mapping[str, Any]] | None = None,
                changes: list[DeploymentChange] | None = None) -> Target:
    """The live canary, shadow and active version of a model at `ref`, with the serving baseline.

    `watch --all` passes the snapshot and the deployment it read once for every model, a `priors`
    cache (bundles never change, so the active bundle's baseline is read once per version) and the
    model's `changes` from one `histories` walk for every model it starts following.
    """
    check_name(name)
    snap = snap or reg.snapshot(ref)
    dep = reg.deployment(name, snap) if dep is None else dep
    if dep is None:
        from .errors import NotFound

        raise NotFound(f"no model named {name!r} in this registry", hint="see 'modelctl status' for the models it has")
    active = dep.get("active")
    splits: dict[str, Split] = {}
    for stage in ("canary", "shadow"):
        slot = dep.get(stage) or None
        if slot:
            raw = slot.get("started")
            splits[stage] = Split(slot["version"], slot["percent"], _unix(raw), raw if isinstance(raw, str) else None,
                                  segment=slot.get("segment"))
    if history and "canary" in splits:
        splits["canary"] = _with_history(reg, name, splits["canary"], ref=ref, commits=changes)
    if history and "shadow" in splits and splits["shadow"].started is None:
        splits["shadow"] = _with_history(reg, name, splits["shadow"], stage="shadow", ref=ref, commits=changes)
    prior: Mapping[str, Any] = {}
    if active and priors is not None and active in priors:
        prior = priors[active]
    elif active:
        data = reg.bundle(name, active, snap).get("baseline")
        prior = data if isinstance(data, Mapping) else {}
        if priors is not None:
            priors[active] = prior
    return Target(name=name, commit=snap.commit, active=active, canary=splits.get("canary"),
                  shadow=splits.get("shadow"), versions=dict(dep.get("versions") or {}), prior=dict(prior), ref=ref)


# one commit that changed a deployment file: its trailers ("" when absent); "from" is a keyword
DeploymentChange = TypedDict("DeploymentChange", {
    "commit": str, "time": float, "author": str,
    "action": str, "version": str, "from": str, "to": str, "percent": str,
})


def history(reg: Reader, name: str, limit: int = 200, ref: str = "HEAD") -> list[DeploymentChange]:
    """Recent commits that changed a model's deployment file, newest first, with their trailers."""
    from .reader import deployment_path

    records = reg.store.log_records(["%H", "%ct", "%an <%ae>", "%(trailers:only,unfold)"], ref,
                                    [deployment_path(name)], limit=limit, check=False) or []
    out: list[DeploymentChange] = []
    for commit, when, author, block in records:
        said = trailers.parse(block)
        out.append({"commit": commit, "time": float(when), "author": author,
                    "action": said.get(trailers.ACTION, ""), "version": said.get(trailers.VERSION, ""),
                    "from": said.get(trailers.FROM, ""), "to": said.get(trailers.TO, ""),
                    "percent": said.get(trailers.PERCENT, "")})
    return out


def histories(reg: Reader, names: Iterable[str], ref: str = "HEAD") -> dict[str, list[DeploymentChange]]:
    """`history` of several models from one walk of the log (each commit goes to the model its trailer names)."""
    from .reader import deployment_path

    wanted = sorted(set(names))
    out: dict[str, list[DeploymentChange]] = {name: [] for name in wanted}
    if not wanted:
        return out
    records = reg.store.log_records(["%H", "%ct", "%an <%ae>", "%(trailers:only,unfold)"], ref,
                                    [deployment_path(n) for n in wanted], check=False) or []
    for commit, when, author, block in records:
        said = trailers.parse(block)
        mine = out.get(said.get(trailers.MODEL, ""))
        if mine is None:
            continue  # a direct edit: no trailers, nothing _with_history would use
        mine.append({"commit": commit, "time": float(when), "author": author,
                     "action": said.get(trailers.ACTION, ""), "version": said.get(trailers.VERSION, ""),
                     "from": said.get(trailers.FROM, ""), "to": said.get(trailers.TO, ""),
                     "percent": said.get(trailers.PERCENT, "")})
    return out


def _with_history(reg: Reader, name: str, split: Split, stage: str = "canary", ref: str = "HEAD",
                  commits: list[DeploymentChange] | None = None) -> Split:
    """Fill in when the split started (if the file does not say) and when its percent last changed."""
    commits = history(reg, name, ref=ref) if commits is None else commits
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


def who_rolled_back(reg: Reader, name: str, version: str, ref: str = "HEAD") -> str | None:
    """'<short commit> by <author>' of the newest rollback commit of a version, if any."""
    for c in history(reg, name, ref=ref):
        if c["action"] == "rollback" and c["version"] == version:
            return f"commit {c['commit'][:12]} by {c['author']}"
    return None


def last_change(reg: Reader, name: str, ref: str = "HEAD") -> str | None:
    """'<action> in commit <short> by <author>' of the newest change of a model's deployment."""
    for c in history(reg, name, limit=1, ref=ref):
        what = f"{c['action']} {c['version']}".strip() if c["action"] else "a direct edit"
        return f"{what} in commit {c['commit'][:12]} by {c['author']}"
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

    def to_json(self) -> WatchPollLine:
        """The poll as a JSON-ready dict (one line of `watch --json`)."""
        def split(s: Split | None) -> PollSplit | None:
            return None if s is None else {"version": s.version, "percent": s.percent}

        doc: WatchPollLine = {
            "event": "poll",
            "poll": self.poll,
            "time": iso(self.at),
            "model": self.model,
            "active": self.active,
            "canary": split(self.canary),
            "since_seconds": round(self.since_seconds, 3),
            "action": self.action,
            "reason": _reason(self.decision) if self.decision else None,
            "error_polls": self.decision.error_polls if self.decision else 0,
            "error": self.error,
            "metrics": metric_rows(self.decision),
            "shadow": None,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }
        if self.shadow is not None:
            doc["shadow"] = {"version": self.shadow.version, "percent": self.shadow.percent,
                             "verdict": self.shadow_decision.action if self.shadow_decision else None,
                             "metrics": metric_rows(self.shadow_decision)}
        return doc


class EventData(TypedDict, total=False):
    """What an event carries besides its kind and message (which keys depends on the kind)."""

    lines: list[str]
    rps_canary: float | None
    model: str  # the model concerned (under `watch --all`, the only way to tell)
    version: str
    percent: float
    commit: str | None
    evidence: list[str]


@dataclass(frozen=True)
class WatchEvent:
    """Something watch did or would do between polls: header, alert, step, promote, note."""

    kind: str  # "header" | "alert" | "srm" | "step" | "promote" | "would-step" | "would-promote" | "note" | "notify"
    message: str
    data: EventData = field(default_factory=EventData)

    def to_json(self) -> WatchEventLine:
        """The event as a JSON-ready dict (one line of `watch --json`)."""
        # mypy cannot rule out extra keys (such as "schema") in a TypedDict that is not closed (PEP 728)
        return {"event": self.kind, "message": self.message, **self.data}  # type: ignore[typeddict-item]


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

    def to_json(self) -> WatchResultLine:
        """The result as a JSON-ready dict (the last line of `watch --json`)."""
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
    """The writes watch makes (the lifecycle operations by default); each checks what watch saw."""

    def rollback(self, target: Target, *, reason: str, evidence: list[str]) -> Outcome:
        """Roll back target.canary (precondition: it is still the live canary); return the store Outcome."""

    def step(self, target: Target, percent: float, *, reason: str, evidence: list[str]) -> Outcome:
        """Move the live canary to `percent` (precondition: still target.canary's version and percent)."""

    def promote(self, target: Target, *, reason: str, evidence: list[str]) -> Outcome:
        """Promote the live canary to active (precondition: still target.canary's version and percent)."""


def _judged(target: Target) -> Split:
    """The canary watch judged: it acts only while one is live."""
    assert target.canary is not None, "watch acts only on a live canary"
    return target.canary


class OpsActions:
    """Actions through modelctl.ops: the same code paths as the rollback/canary/promote commands."""

    def __init__(self, reg: Reader, opts: WriteOptions | None = None) -> None:
        self.reg = reg
        self.opts = opts

    def rollback(self, target: Target, *, reason: str, evidence: list[str]) -> Outcome:
        """`modelctl rollback`, only if the judged canary is still live."""
        from . import ops

        # one Modelctl-Evidence trailer; metrics are separated by " | " (each line uses "; " inside)
        return ops.rollback(self.reg, target.name, reason=reason, expect_canary=_judged(target).version,
                            evidence=" | ".join(evidence), opts=self.opts)

    def step(self, target: Target, percent: float, *, reason: str, evidence: list[str]) -> Outcome:
        """`modelctl canary --pct`, only if the judged canary is still live at its percent."""
        from . import ops

        canary = _judged(target)
        # a canary limited to a segment steps within it: widening to everyone is a person's call
        return ops.canary(self.reg, target.name, canary.version, percent, reason=reason, opts=self.opts,
                          expect_canary=(canary.version, canary.percent), evidence=" | ".join(evidence),
                          segment=canary.segment)

    def promote(self, target: Target, *, reason: str, evidence: list[str]) -> Outcome:
        """`modelctl promote --to active`, only if the judged canary is still live at its percent."""
        from . import ops

        canary = _judged(target)
        return ops.promote(self.reg, target.name, canary.version, to="active", reason=reason,
                           opts=self.opts, expect_canary=(canary.version, canary.percent),
                           evidence=" | ".join(evidence))


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class PollPlan:
    """Half a poll: what is live, the versions to read and the canary's age (`Watcher.prepare`)."""

    target: Target
    since: float  # seconds since the canary (or shadow) started, at least 1
    versions: tuple[str, ...]
    poll_start: float  # monotonic

    @property
    def main(self) -> Split:
        """The split judged: the canary, else the shadow."""
        main = self.target.canary or self.target.shadow
        assert main is not None  # prepare() ends the watch when neither is live
        return main

    def request(self) -> ReadRequest:
        """What to ask the metrics provider for this model."""
        from .metrics.base import ReadRequest

        return ReadRequest(self.target.name, self.versions, self.since)


@dataclass(frozen=True)
class WatchOptions:
    """How to watch (the CLI flags)."""

    interval: float | str | None = None  # seconds between polls; None -> analysis.interval
    max_duration: float | str | None = None  # seconds; None -> until a decision
    once: bool = False
    dry_run: bool = False
    advance: bool = False
    record: str | os.PathLike[str] | None = None  # append every poll to this JSONL file
    report: str | os.PathLike[str] | None = None  # write the HTML report here when the watch ends


class Watcher:
    """Follows one model's live canary (and shadow); `run()` returns how the watch ended."""

    def __init__(
        self,
        reg: Reader,
        name: str,
        options: WatchOptions = WatchOptions(),
        *,
        provider: Provider | None = None,
        actions: Actions | None = None,
        config: Config | Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_poll: Callable[[PollReport], None] | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
        provider_name: str | None = None,
        url: str | None = None,
        write_options: WriteOptions | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        from .analysis import AnalysisConfig

        self.reg = reg
        self.name = check_name(name)
        self.options = options
        from . import config as configmod

        # a mapping (tests, library callers) is read like modelctl.yaml: merged over the defaults
        cfg = reg.config() if config is None else config if isinstance(config, configmod.Config) \
            else configmod.build(config)
        self.config = cfg
        self.analysis = AnalysisConfig.from_section(cfg.analysis.as_dict())
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.on_poll = on_poll or (lambda report: None)
        self.on_event = on_event or (lambda event: None)
        if provider is None:
            from .metrics import make_provider

            provider = make_provider(cfg.as_dict(), provider=provider_name, url=url, clock=clock, monotonic=monotonic)
        self.provider = provider
        self.actions = actions or OpsActions(reg, write_options)
        interval = options.interval
        if interval is None:
            interval = cfg.analysis.interval
        self.interval = parse_duration(interval, "interval")
        self.max_duration = None if options.max_duration is None else parse_duration(options.max_duration,
                                                                                     "max duration")
        remote = cfg.remote
        push = getattr(write_options, "push", None)
        self.pushing = bool(remote.push if push is None else push) and \
            getattr(write_options, "branch", None) is None
        self.remote = remote.name
        self.branch = remote.branch
        self.record = Path(options.record) if options.record is not None else None
        from .state import canary_steps

        self.steps = canary_steps({"canary": cfg.canary.as_dict()})
        self.min_step_seconds = float(cfg.canary.min_step_seconds)
        # per followed canary
        self.following: str | None = None
        self.following_id: str | None = None
        self.judge: Judge | None = None
        self.shadow_judge: Judge | None = None
        self.shadow_following: str | None = None
        self.step_started: float | None = None
        self.window_start: float | None = None  # when the followed canary started (unix seconds)
        self.alerting = False
        self.srm_said = False
        self.header_said = 0
        self.announced: set[str] = set()
        self.polls = 0
        self.started_at = 0.0
        self.deadline: float | None = None  # monotonic time --max-duration ends
        self.history: list[tuple[Poll, Decision]] = []  # (poll, decision) of the followed canary (the report)
        self.fetch_failed = False
        self.notifier = notifier  # tells webhooks of this process's own decisions (never a lost race)
        self.fetches = True  # False under `watch --all`, which fetches once per cycle for every model
        self.priors: dict[str, Mapping[str, Any]] = {}  # active version -> its bundle's baseline (immutable)
        self.state_expect: str | None = None  # the remote state ref's id this process last saw or wrote
        self.state_note = False
        # under `watch --all` the controller pushes every model's state in one push per cycle: the
        # watcher leaves (commit message, state text) here instead of pushing it itself
        self.defer_state = False
        self.pending_state: tuple[str, str] | None = None

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> WatchResult:
        """Poll until a decision, the end of the canary, --once or --max-duration."""
        self.started_at = self.clock()
        start = self.monotonic()
        self.deadline = start + self.max_duration if self.max_duration is not None else None
        try:
            while True:
                poll_start = self.monotonic()
                result = self.poll(poll_start)
                if result is not None:
                    return result
                if self.options.once:
                    return self._end(NO_DECISION, EXIT_DONE, self._once_message())
                next_at = poll_start + self.interval
                if self.deadline is not None and (next_at >= self.deadline or self.monotonic() >= self.deadline):
                    return self._end(NO_DECISION, EXIT_DONE,
                                     f"no decision on {self._subject()} within {_secs(self.max_duration)}; "
                                     "nothing was changed")
                self.sleep(max(0.0, next_at - self.monotonic()))
        finally:
            if self.options.report is not None:
                self.write_report(self.options.report)
            if self.notifier is not None:
                # the decision is made and pushed; give delivery its own deadline before exiting
                self.notifier.drain(self.notifier.config.deadline + 1.0)

    def time_left(self) -> float | None:
        """Seconds left before --max-duration (None without one)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.monotonic())

    def poll(self, poll_start: float | None = None) -> WatchResult | None:
        """One poll: read the tip, read the metrics, judge, act; a WatchResult when the watch is over."""
        plan = self.prepare(poll_start)
        if isinstance(plan, WatchResult):
            return plan
        from .metrics import take_poll

        main = plan.main
        poll = take_poll(self.provider, self.name, control=plan.target.active, canary=main.version,
                         percent=main.percent if plan.target.canary else None, versions=plan.versions,
                         since_seconds=plan.since, clock=self.clock, time_left=self.time_left(),
                         canary_id=self.following_id if plan.target.canary else None)
        return self._judge(plan, poll)

    def prepare(self, poll_start: float | None = None, *, target: Target | None = None) -> PollPlan | WatchResult:
        """The first half of a poll: what is live and which versions to read (a result when the watch is over).

        `watch --all` hands the `target` it read for every model at one tip; a single watch reads its own.
        """
        poll_start = self.monotonic() if poll_start is None else poll_start
        if target is None:
            ref = self._tip()
            # commit history (when the canary started) is read only when a canary is first followed
            target = read_target(self.reg, self.name, history=self.following is None, ref=ref)
        ended = self._follow(target)
        if ended is not None:
            return ended
        window_start = self.window_start or (target.shadow and target.shadow.started) or self.started_at
        since = max(1.0, self.clock() - window_start)
        versions = [v for v in (target.active,
                                target.canary.version if target.canary else None,
                                target.shadow.version if target.shadow else None) if v]
        return PollPlan(target, since, tuple(dict.fromkeys(versions)), poll_start)

    def complete(self, plan: PollPlan, answer: Mapping[str, Reading] | Exception) -> WatchResult | None:
        """The second half of a poll: judge the readings handed in (or the read's failure) and act."""
        from .observation import Poll

        readings: dict[str, Reading] = {}
        error = None
        if isinstance(answer, Exception):
            error = " ".join(str(answer).split()) or type(answer).__name__
        else:
            readings = {v: answer[v] for v in plan.versions if v in answer}
        main = plan.main
        poll = Poll(time=self.clock(), control=plan.target.active, canary=main.version,
                    percent=main.percent if plan.target.canary else None, readings=readings, error=error,
                    model=self.name, canary_id=self.following_id if plan.target.canary else None)
        return self._judge(plan, poll)

    def _judge(self, plan: PollPlan, poll: Poll) -> WatchResult | None:
        target, since, poll_start = plan.target, plan.since, plan.poll_start
        self.polls += 1
        try:
            poll = exact(poll)
        except ModelctlError as exc:  # an answer the record cannot carry is no data, never a crash
            poll = replace(poll, readings={}, error=f"unusable answer: {exc}")
        decision: Decision | None = None
        shadow_decision: Decision | None = None
        if target.canary:
            assert self.judge is not None  # _follow made it when it began following this canary
            judged = within_segment(poll, target.canary.segment) if target.canary.segment else poll
            self._record(judged)
            decision = self.judge.observe(judged)
            self.history.append((judged, decision))
        if target.shadow and target.shadow.version != (target.canary.version if target.canary else None):
            shadow_poll = replace(poll, canary=target.shadow.version, percent=None, canary_id=None)
            assert self.shadow_judge is not None  # _follow made it with the shadow
            shadow_decision = self.shadow_judge.observe(shadow_poll)
        report = PollReport(poll=self.polls, at=poll.time, model=self.name, active=target.active,
                            canary=target.canary, shadow=target.shadow, since_seconds=since, decision=decision,
                            shadow_decision=shadow_decision, error=poll.error,
                            seconds=self.monotonic() - poll_start, dry_run=self.options.dry_run)
        self.on_poll(report)
        if decision is None:
            return None
        self._header(poll)
        result = self._act(target, decision, poll_start, poll.time)
        if result is None:
            self._save_state(target)
        return result

    def _tip(self) -> str:
        """The ref to judge: the remote tip, freshly fetched, in a push-configured clone; else HEAD."""
        if not self.pushing:
            return "HEAD"
        if not self.fetches:  # a controller fetched the branch for every model it follows
            ref = f"refs/remotes/{self.remote}/{self.branch}"
            return ref if self.reg.store.rev(ref) else "HEAD"
        left = self.time_left()
        try:
            self.reg.store.fetch(self.remote, self.branch, timeout=max(1.0, min(30.0, left if left else 30.0)),
                                 models=(self.name,), extra=(f"+{self._state_refs()}:{self._state_refs()}",))
            self.fetch_failed = False
        except ModelctlError as exc:
            # judging goes on with the last fetched tip: every write re-checks on the remote anyway
            if not self.fetch_failed:
                self.on_event(WatchEvent("note", f"note: cannot fetch {self.remote}/{self.branch} ({exc}); "
                                                 "judging the last fetched state"))
            self.fetch_failed = True
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        return ref if self.reg.store.rev(ref) else "HEAD"

    def _record(self, poll: Poll) -> None:
        if self.record is None:
            return
        try:
            with open(self.record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(poll.to_json(), allow_nan=False, separators=(",", ":")) + "\n")
        except OSError as exc:
            # the record is evidence, not the judgement: say so once and keep watching
            if "record" not in self.announced:
                self.announced.add("record")
                self.on_event(WatchEvent("note", f"note: cannot append to {self.record}: {exc.strerror or exc}"))

    def _header(self, poll: Poll) -> None:
        """The judgement's header: at the first poll, and again once the canary's traffic is measured."""
        if self.header_said >= 2:
            return
        rps = self._canary_rps()
        if self.header_said == 1 and rps is None:
            return
        self.header_said = 2 if rps is not None else 1
        header = getattr(self.judge, "header_lines", None)
        if header is None:
            return
        try:
            lines = list(header(rps_canary=rps, max_duration=self.max_duration))
        except Exception:  # noqa: BLE001 - a planning figure must never stop the watch
            return
        if lines:
            self.on_event(WatchEvent("header", "\n".join(lines), {"lines": lines, "rps_canary": rps}))

    def _canary_rps(self) -> float | None:
        """The canary's requests per second between the first and last polls that saw it."""
        seen: list[tuple[float, float]] = []
        for p, _ in self.history:
            reading = p.readings.get(p.canary) if p.error is None else None
            whole = reading.segments.get("") if reading is not None else None
            if whole is not None and whole.requests is not None:
                seen.append((p.time, whole.requests))
        if len(seen) < 2 or seen[-1][0] <= seen[0][0] or seen[-1][1] < seen[0][1]:
            return None
        return (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])

    # -- following ---------------------------------------------------------------------------
    def _follow(self, target: Target) -> WatchResult | None:
        """Start or stop following the live canary and shadow; a result when there is nothing left."""
        from .analysis import Judge

        canary = target.canary.version if target.canary else None
        if self.following is not None and canary != self.following:
            status = target.versions.get(self.following, "gone")
            who = last_change(self.reg, self.name, ref=target.ref)
            detail = f" ({who})" if who else ""
            self._clear_state()
            return self._end(ENDED, EXIT_DONE,
                             f"canary {self.following} of {self.name} ended elsewhere: it is {status} now"
                             f"{detail}; nothing left to do", version=self.following)
        if target.canary is not None and self.following is None:
            self.following = target.canary.version
            self.following_id = canary_id(self.name, target.canary.version, target.canary.started or self.started_at)
            self.judge = Judge(self.analysis, prior=target.prior or None, state=self._load_state(target))
            self.alerting = False
            self.window_start = target.canary.started
            self.step_started = target.canary.step_started or target.canary.started or self.clock()
        shadow = target.shadow.version if target.shadow else None
        if shadow != self.shadow_following:
            self.shadow_following = shadow
            self.shadow_judge = Judge(self.analysis, prior=target.prior or None) if shadow else None
        if canary is None and shadow is None:
            if self.polls == 0:
                return self._end(NOTHING, EXIT_DONE,
                                 f"{self.name} has no live canary or shadow; nothing to watch")
            return self._end(ENDED, EXIT_DONE, f"the shadow of {self.name} ended; nothing left to watch")
        return None

    # -- acting ------------------------------------------------------------------------------
    def _act(self, target: Target, decision: Decision, poll_start: float, now: float) -> WatchResult | None:
        action = decision.action
        canary = _judged(target)
        version = canary.version
        if action == ROLLBACK:
            return self._rollback(target, decision, poll_start)
        if action == HOLD:
            self._clear_state()
            self._notify("hold", version, decision, percent=canary.percent, active=target.active)
            return self._end(HELD, EXIT_METRICS,
                             f"no usable metrics for {getattr(decision, 'error_polls', 0) or 'several'} polls in a "
                             f"row; holding: canary {version} of {self.name} stays at {_pct(canary.percent)}% "
                             f"and nothing was written (last problem: {_first_reason(decision)})",
                             version=version, decision=decision)
        if action == ALERT:
            if not self.alerting:
                self.alerting = True
                self.on_event(WatchEvent("alert", f"alert: {_reason(decision)} on canary {version} of {self.name} "
                                         "(action: alert, so it keeps running)",
                                         {"model": self.name, "version": version,
                                          "evidence": decision.evidence_lines()}))
        else:
            self.alerting = False
        if action == SRM_HOLD:
            if not self.srm_said:
                self.srm_said = True
                self.on_event(WatchEvent("srm", f"holding the verdict on canary {version} of {self.name}: "
                                         f"{_reason(decision)} (neither a pass nor a rollback)",
                                         {"model": self.name, "version": version}))
        else:
            self.srm_said = False
        if action != ADVANCE_OK or not self.options.advance:
            return None
        assert self.judge is not None  # _follow made it when it began following this canary
        ready, _why = self.judge.ready_to_advance(now)
        on_step = now - (self.step_started if self.step_started is not None else now)
        if not ready or on_step < self.min_step_seconds:
            return None
        return self._advance(target, decision, on_step)

    def _rollback(self, target: Target, decision: Decision, poll_start: float) -> WatchResult:
        version = _judged(target).version
        evidence = list(decision.evidence_lines())
        why = "fail-safe: " if getattr(decision, "fail_safe", False) else ""
        reason = f"watch {why}{_reason(decision)}"
        if self.options.dry_run:
            return self._end(WOULD_ROLL_BACK, EXIT_ROLLED_BACK,
                             f"dry run: would roll back canary {version} of {self.name} ({_reason(decision)}); "
                             "nothing was written", version=version, evidence=evidence, reason=reason,
                             decision=decision)
        try:
            out = self.actions.rollback(target, reason=reason, evidence=evidence)
        except Conflict as exc:
            return self._changed(exc, version)
        seconds = self.monotonic() - poll_start
        self._clear_state()
        if getattr(out, "noop", False):
            note = out.result if isinstance(getattr(out, "result", None), str) else None
            if not note:
                who = who_rolled_back(self.reg, self.name, version, ref=self._ref_after_write())
                note = f"canary {version} of {self.name} was already rolled back{' (' + who + ')' if who else ''}"
            return self._end(ALREADY_ROLLED_BACK, EXIT_DONE, f"{note}; nothing to do", version=version,
                             evidence=evidence, reason=reason, decision=decision)
        pushed = bool(getattr(out, "pushed", False))
        self._notify("rollback", version, decision, percent=0.0, active=target.active, reason=reason,
                     commit=getattr(out, "commit", None))
        where = "commit and push" if pushed else "commit"
        seg = _judged(target).segment
        return self._end(ROLLED_BACK, EXIT_ROLLED_BACK,
                         f"rolled back canary {version} of {self.name}{f' in segment {seg}' if seg else ''} "
                         f"({_reason(decision)}); "
                         f"{target.active} keeps serving; {where} {_secs(seconds)} after the deciding poll",
                         version=version, commit=getattr(out, "commit", None), pushed=pushed,
                         tags=tuple(getattr(out, "tags", ()) or ()), detect_to_commit_seconds=seconds,
                         evidence=evidence, reason=reason, decision=decision)

    def _notify(self, kind: str, version: str, decision: Decision, *, percent: float | None,
                active: str | None, reason: str = "", commit: str | None = None) -> None:
        """Queue a webhook notification of a decision this process made (delivery never blocks it)."""
        if not self.notifier:
            return
        from .notify import Event

        metrics = tuple({"name": r.metric, "verdict": r.verdict, "statistic": _finite(r.statistic_value),
                         "boundary": _finite(r.bound), "segment": r.segment or None} for r in decision.results)
        self.notifier.notify(Event(kind, self.name, version, active=active, percent=percent,
                                   reason=reason or _reason(decision), commit=commit, metrics=metrics,
                                   at=self.clock()))

    def _ref_after_write(self) -> str:
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        return ref if self.pushing and self.reg.store.rev(ref) else "HEAD"

    def _changed(self, exc: Conflict, version: str) -> WatchResult:
        """A write whose precondition failed: exit 3, nothing written, naming the change and who made it."""
        who = last_change(self.reg, self.name, ref=self._ref_after_write())
        self._clear_state()
        return self._end(CHANGED, EXIT_CONFLICT, f"{exc.message}{f' (last change: {who})' if who else ''}",
                         version=version)

    def _advance(self, target: Target, decision: Decision, on_step: float) -> WatchResult | None:
        """Move the passing canary to the next step, or promote it past the last (`on_step`: seconds on this one)."""
        canary = _judged(target)
        higher = [s for s in self.steps if s > canary.percent]
        evidence = list(decision.evidence_lines())
        held = f"{_secs(on_step)} at {_pct(canary.percent)}%"
        if higher:
            nxt = higher[0]
            reason = f"watch --advance: every rollback metric passes ({held})"
            if self.options.dry_run:
                key = f"step:{nxt}"
                if key not in self.announced:
                    self.announced.add(key)
                    self.on_event(WatchEvent("would-step", f"dry run: would move canary {canary.version} of "
                                             f"{self.name} from {_pct(canary.percent)}% to {_pct(nxt)}%",
                                             {"model": self.name, "version": canary.version, "percent": nxt}))
                return None
            try:
                out = self.actions.step(target, nxt, reason=reason, evidence=evidence)
            except Conflict as exc:
                return self._changed(exc, canary.version)
            self.on_event(WatchEvent("step", f"canary {canary.version} of {self.name}: {_pct(canary.percent)}% -> "
                                     f"{_pct(nxt)}% (commit {str(getattr(out, 'commit', '') or '')[:12]})",
                                     {"model": self.name, "version": canary.version, "percent": nxt,
                                      "commit": getattr(out, "commit", None), "evidence": evidence}))
            self.step_started = self.clock()
            if getattr(out, "commit", None):
                self._notify("step", canary.version, decision, percent=nxt, active=target.active, reason=reason,
                             commit=getattr(out, "commit", None))
            return None
        reason = f"watch --advance: every rollback metric passes at the last step ({held})"
        if self.options.dry_run:
            if "promote" not in self.announced:
                self.announced.add("promote")
                self.on_event(WatchEvent("would-promote", f"dry run: would promote canary {canary.version} of "
                                         f"{self.name} to active", {"model": self.name, "version": canary.version}))
            return None
        try:
            out = self.actions.promote(target, reason=reason, evidence=evidence)
        except Conflict as exc:
            return self._changed(exc, canary.version)
        self._clear_state()
        if getattr(out, "commit", None):
            self._notify("promotion", canary.version, decision, percent=None, active=canary.version, reason=reason,
                         commit=getattr(out, "commit", None))
        return self._end(PROMOTED, EXIT_DONE, f"promoted {canary.version} of {self.name} to active after its "
                         f"canary passed every step ({', '.join(_pct(s) for s in self.steps)}%)",
                         version=canary.version, commit=getattr(out, "commit", None),
                         pushed=bool(getattr(out, "pushed", False)), tags=tuple(getattr(out, "tags", ()) or ()),
                         reason=reason, evidence=evidence, decision=decision)

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

    # -- the judge's state between runs --------------------------------------------------------
    def _state_path(self) -> Path:
        return self.reg.store.private_path("modelctl-watch") / f"{self.name}.json"

    def _state_refs(self) -> str:
        """The remote's refs of this model's judgement state (a glob: fetching it never fails)."""
        return f"refs/modelctl/watch/{self.name}/*"

    def _state_ref(self) -> str:
        return f"refs/modelctl/watch/{self.name}/state"

    def _saved_state(self) -> Any:
        """The saved state document: in a push-configured clone the remote's (a cron job's fresh
        clone has no other), else this clone's file."""
        if self.pushing:
            if self.state_expect is None:  # not fetched yet this process: _tip fetches it with the branch
                self.state_expect = self.reg.store.rev(self._state_ref()) or ""
            data = self.reg.store.file_at(self._state_ref(), "state.json")
            if data is not None:
                try:
                    return json.loads(data)
                except ValueError:
                    return None
        try:
            return json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return None

    def _state_key(self, target: Target) -> dict[str, str | None]:
        canary = _judged(target)
        return {"canary": canary.version, "started": canary.started_raw}

    def _load_state(self, target: Target) -> Any:
        """The saved judge state of this very canary (None: a fresh start)."""
        if self.options.dry_run:
            return None
        data = self._saved_state()
        if not isinstance(data, dict) or data.get("key") != self._state_key(target) or "judge" not in data:
            return None
        from .analysis import Judge

        try:
            Judge(self.analysis, prior=target.prior or None, state=data["judge"])
        except Exception:  # noqa: BLE001 - a damaged state file is a fresh start, never an error
            return None
        restore = getattr(self.provider, "restore_state", None)
        if restore is not None and data.get("provider") is not None:
            restore(data["provider"], self.name)  # http-json: which replicas it saw, to notice restarts across the gap
        self.step_started = data.get("step_started") if isinstance(data.get("step_started"), (int, float)) else None
        return data["judge"]

    def _save_state(self, target: Target) -> None:
        if self.options.dry_run or self.judge is None or target.canary is None:
            return
        doc = {"key": self._state_key(target), "judge": self.judge.export_state(), "step_started": self.step_started}
        export = getattr(self.provider, "export_state", None)
        if export is not None:
            doc["provider"] = export(self.name)
        path = self._state_path()
        try:
            text = json.dumps(doc, allow_nan=False)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        except (OSError, ValueError, TypeError):
            return  # losing the state costs a fresh start later; it must not stop the judgement
        if not self.pushing:
            return
        version = target.canary.version if target.canary else "-"
        message = f"modelctl watch state: {self.name} {version}"
        if self.defer_state:
            self.pending_state = (message, text)  # watch --all pushes every model's state in one push
        else:
            self.push_state(message, text)

    def push_state(self, message: str, text: str) -> None:
        """Keep the state on the remote too (compare-and-swap), so a fresh clone resumes it."""
        store = self.reg.store
        try:
            commit = store.commit_file("state.json", text.encode(), message)
            expect = self.state_expect if self.state_expect is not None else store.rev(self._state_ref())
            landed = store.push_ref(self.remote, commit, self._state_ref(), expect or None,
                                    timeout=max(1.0, min(30.0, self.time_left() or 30.0)))
        except ModelctlError as exc:
            self.state_lost(str(exc))
            return
        if landed:
            self.state_pushed(commit)
        else:
            self.state_lost(LOST_RACE)

    def state_pushed(self, commit: str) -> None:
        """The state commit `commit` is the remote's now (the next save expects it)."""
        self.state_expect = commit
        self.state_note = False

    def state_lost(self, reason: str | None) -> None:
        """The state did not land: forget the expected id, and say so once (reason None: said elsewhere)."""
        # another watch of this model saved first (a replica): the next poll's fetch brings its
        # state's id, and the next save replaces it; the decisions themselves are compare-and-swap
        self.state_expect = None
        if reason is None:
            return
        if not self.state_note:
            self.on_event(WatchEvent("note", f"note: cannot keep the judgement state of {self.name} on "
                                             f"{self.remote} ({reason}); a fresh clone would start it over"))
            self.state_note = True

    def _clear_state(self) -> None:
        if self.options.dry_run:
            return
        try:
            self._state_path().unlink()
        except OSError:
            pass

    # -- the report --------------------------------------------------------------------------
    def write_report(self, path: str | os.PathLike[str]) -> None:
        """Write the HTML report of the followed canary (what was judged, poll by poll)."""
        from . import report_html

        if self.following is None:
            return
        page = report_html.render([report_html.CanaryStory.build(self.name, self.following_id, self.history)],
                                  title=f"modelctl watch {self.name}")
        report_html.write(path, page)


def watch(reg: Reader, name: str, options: WatchOptions = WatchOptions(), **kwargs: Any) -> WatchResult:
    """Watch a model's live canary until a decision (see Watcher for the keyword arguments)."""
    return Watcher(reg, name, options, **kwargs).run()


def _finite(value: Any) -> float | None:
    """A number for a JSON document (None for a missing, NaN or infinite one)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


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
    for r in (*decision.deciding, *decision.results):
        if r.reason:
            return r.reason
    return _reason(decision)
