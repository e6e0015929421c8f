"""`watch --all`: one process following every live canary and shadow of the registry.

Each cycle (every `--interval`):

1. in a push-configured clone, fetch the branch once, with every model's judgement state
   (`refs/modelctl/watch/*`), and read the remote tip; else read HEAD;
2. list the models with a live canary or shadow there: a new one gets its own `watch.Watcher`
   (its own judge, resuming a saved state), one that ended (rolled back, promoted, removed by
   hand) is dropped after its last report;
3. poll every followed model with its watcher (the same judgement and actions as `watch NAME`), in
   two halves: each watcher says which versions it needs (`Watcher.prepare`), the metrics of every
   model are read in one batch (`metrics.base.read_batch`: one query per quantity for Prometheus,
   one GET for http-json without `{model}`), and each watcher judges its share (`Watcher.complete`);
4. in a push-configured clone, push the judgement state every watcher saved this cycle in one atomic
   push (a compare-and-swap lease per model's ref; a ref a replica saved first is left out and that
   model's watcher noted, the others land in the same cycle).

One model's failure (its metrics, a damaged file, a write that conflicted) is that model's line in
the log and its count on `/metrics`, never the end of the controller. The controller stops at
`--max-duration`, on SIGINT (Ctrl-C), or after one cycle with `--once` (what a CronJob runs).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ModelctlError

# a deployment file as modelctl writes it (block style), with canary and shadow both null
_QUIET = re.compile(rb"^kind: Deployment$", re.MULTILINE)
_NULL_STAGE = re.compile(rb"^(?:canary|shadow): null$", re.MULTILINE)

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .metrics.base import Provider
    from .notify import Notifier
    from .ops import WriteOptions
    from .registry import Registry
    from .store import Snapshot
    from .watch import DeploymentChange, PollPlan, PollReport, Target, Watcher, WatchEvent, WatchOptions, WatchResult


@dataclass
class CycleReport:
    """What one cycle did."""

    cycle: int
    followed: list[str]
    started: list[str] = field(default_factory=list)
    ended: list[WatchResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    fetch_error: str | None = None
    fetch_failures: int = 0  # consecutive cycles whose fetch failed, this one included
    last_fetch: float | None = None  # unix time of the last successful fetch (None: never, or not pushing)
    read_errors: list[str] = field(default_factory=list)  # metrics reads that failed for every model at once
    at: float = 0.0  # unix time the cycle began
    seconds: float = 0.0
    reads: int = 0  # batched metrics reads (one per provider; the provider makes one query per quantity)
    state_error: str | None = None  # why the push of this cycle's judgement states failed
    state_lost: list[str] = field(default_factory=list)  # models whose state a replica saved first


@dataclass
class ControllerResult:
    """How `watch --all` ended."""

    cycles: int
    decisions: list[WatchResult]
    exit_code: int
    message: str


class Controller:
    """Follows every live canary and shadow of a registry (`run()`), one Watcher per model."""

    def __init__(
        self,
        reg: Registry,
        options: WatchOptions,
        *,
        make_watcher: Callable[[str], Watcher] | None = None,
        write_options: WriteOptions | None = None,
        notifier: Notifier | None = None,
        on_poll: Callable[[PollReport], None] | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
        provider_name: str | None = None,
        url: str | None = None,
        provider: Provider | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        from .watch import parse_duration

        self.reg = reg
        self.options = options
        self.on_poll = on_poll or (lambda report: None)
        self.on_event = on_event or (lambda event: None)
        self.on_cycle = on_cycle or (lambda report: None)
        self.monotonic = monotonic
        self.sleep = sleep
        self.clock = clock
        config = reg.config()
        self.config = config  # the tip's, read again each cycle (a watcher starts with what is current)
        self.interval = parse_duration(options.interval if options.interval is not None else config.analysis.interval,
                                       "interval")
        self.max_duration = (None if options.max_duration is None
                             else parse_duration(options.max_duration, "max duration"))
        push = getattr(write_options, "push", None)
        self.pushing = bool(config.remote.push if push is None else push)
        self.remote, self.branch = config.remote.name, config.remote.branch
        self._make = make_watcher or self._default_watcher
        self._write_options = write_options
        self._notifier = notifier
        self._provider_name, self._url = provider_name, url
        self._provider = provider  # shared by every default watcher: their reads are batched
        self.watchers: dict[str, Watcher] = {}
        # model -> (blob id of its deployment file, the file read, None when not live, or why it is unreadable)
        self._deployments: dict[str, tuple[str, dict[str, Any] | Exception | None]] = {}
        self._damaged: set[str] = set()
        self._changes: dict[str, list[DeploymentChange]] = {}
        self._snap: Snapshot | None = None
        self.decisions: list[WatchResult] = []
        self.cycles = 0
        self.fetch_failures = 0  # consecutive cycles whose fetch failed
        self.last_fetch: float | None = None  # unix time of the last successful fetch
        self._read_failing = False
        self._state_failing = False  # the last push of the judgement states failed (said once)

    def _default_watcher(self, name: str) -> Watcher:
        from dataclasses import replace

        from .watch import Watcher

        # the controller owns the loop: each watcher is polled once per cycle, never sleeps or ends on --once
        opts = replace(self.options, once=False, max_duration=None, record=None, report=None)
        if self._provider is None:
            from .metrics import make_provider

            self._provider = make_provider(self.reg.config().as_dict(), provider=self._provider_name, url=self._url)
        return Watcher(self.reg, name, opts, provider=self._provider, config=self.config,
                       on_poll=self.on_poll, on_event=self.on_event, write_options=self._write_options,
                       notifier=self._notifier)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> ControllerResult:
        """Cycle until --max-duration (or one cycle with --once)."""
        start = self.monotonic()
        deadline = start + self.max_duration if self.max_duration is not None else None
        while True:
            began = self.monotonic()
            self.cycle()
            if self.options.once:
                break
            next_at = began + self.interval
            if deadline is not None and next_at >= deadline:
                break
            self.sleep(max(0.0, next_at - self.monotonic()))
        rolled = [d for d in self.decisions if d.outcome == "rolled-back"]
        message = (f"{self.cycles} cycle(s); {len(self.decisions)} canary(ies) ended, {len(rolled)} rolled back "
                   f"by this controller; following {len(self.watchers)} now")
        return ControllerResult(self.cycles, list(self.decisions), 1 if rolled else 0, message)

    def cycle(self) -> CycleReport:
        """One cycle: fetch once, follow what is live, read every followed model's metrics in one batch."""
        from .metrics.base import read_batch
        from .watch import WatchEvent, WatchResult

        self.cycles += 1
        began = self.monotonic()
        report = CycleReport(self.cycles, [], at=self.clock())
        ref = self._tip(report)
        snap: Snapshot | None = None
        try:
            live, snap = self._live(ref, report)
        except ModelctlError as exc:  # the registry itself is unreadable: nothing to judge this cycle
            report.errors["*"] = str(exc)
            self.on_event(WatchEvent("note", f"note: cannot read the registry at {ref} ({exc}); next cycle"))
            live = set(self.watchers)
        for name in sorted(live - set(self.watchers)):
            try:
                watcher = self._make(name)
            except ModelctlError as exc:
                report.errors[name] = str(exc)
                self.on_event(WatchEvent("note", f"note: cannot follow {name} ({exc})"))
                continue
            if self.pushing:
                watcher.fetches = False
                watcher.defer_state = True  # saved by _save_states, every model in one push
            watcher.started_at = watcher.clock()  # what run() does for a single watch
            self.watchers[name] = watcher
            report.started.append(name)
        # first half of every poll: what is live, which versions to read
        plans: dict[str, PollPlan] = {}
        self._changes = self._new_histories(ref) if snap is not None else {}
        for name in sorted(self.watchers):
            if snap is not None and name not in self._deployments:
                self._ended(report, name, self._gone(name))
                continue
            got = self._guarded(report, name, self._prepare, name, ref, snap)
            if isinstance(got, WatchResult):
                self._ended(report, name, got)
            elif got is not None:
                plans[name] = got
        # one read for every model sharing a provider (the default: all of them), so the queries per
        # cycle do not grow with the number of models
        groups: dict[int, list[str]] = {}
        for name in plans:
            groups.setdefault(id(self.watchers[name].provider), []).append(name)
        for names in groups.values():
            provider = self.watchers[names[0]].provider
            answers = read_batch(provider, [plans[n].request() for n in names])
            report.reads += 1
            self._whole_read(report, answers)
            for name in names:
                answer = answers.get(name, {})
                got = self._guarded(report, name, self.watchers[name].complete, plans[name], answer)
                if isinstance(got, WatchResult):
                    self._ended(report, name, got)
        if self.pushing:
            self._save_states(report)
        report.followed = sorted(self.watchers)
        report.seconds = self.monotonic() - began
        self.on_cycle(report)
        return report

    def _save_states(self, report: CycleReport) -> None:
        """Every judgement state saved this cycle, onto the remote in one push (one `fast-import` builds the
        commits, one atomic `push` with a lease per ref, one `update-ref`): 200 canaries cost 3 git
        processes, not 1,000."""
        from .watch import LOST_RACE, WatchEvent

        pending = {name: w.pending_state for name, w in sorted(self.watchers.items()) if w.pending_state}
        for name in pending:
            self.watchers[name].pending_state = None
        if not pending:
            return
        store = self.reg.store
        names = list(pending)
        try:
            commits = store.commit_files([("state.json", text.encode(), message)
                                          for message, text in pending.values()])
            updates: dict[str, tuple[str, str | None]] = {}
            for name, commit in zip(names, commits):
                w = self.watchers[name]
                expect = w.state_expect if w.state_expect is not None else store.rev(w._state_ref())
                updates[w._state_ref()] = (commit, expect or None)
            landed = store.push_refs(self.remote, updates, timeout=30)
        except ModelctlError as exc:
            report.state_error = str(exc)
            # one line per outage, none when this cycle's fetch already said the remote is unreachable
            if not self._state_failing and report.fetch_error is None:
                self.on_event(WatchEvent("note", f"note: cannot keep the judgement states of {len(names)} model(s) "
                                                 f"on {self.remote} ({exc}); judging goes on, a fresh clone would "
                                                 "start them over"))
            self._state_failing = True
            for name in names:
                self.watchers[name].state_lost(None)
            return
        self._state_failing = False
        for name, (ref, (commit, _expect)) in zip(names, updates.items()):
            if landed.get(ref):
                self.watchers[name].state_pushed(commit)
            else:
                report.state_lost.append(name)
                self.watchers[name].state_lost(LOST_RACE)

    def _target(self, watcher: Watcher, name: str, ref: str, snap: Snapshot | None) -> Target | None:
        """What serves `name` at this cycle's tip, from the deployment read once (None: the watcher reads it)."""
        from .watch import read_target

        dep = self._deployments.get(name, ("", None))[1]
        if snap is None or dep is None:
            return None
        if isinstance(dep, Exception):
            raise dep
        return read_target(self.reg, name, history=watcher.following is None, ref=ref, snap=snap, dep=dep,
                           priors=watcher.priors, changes=self._changes.get(name))

    def _new_histories(self, ref: str) -> dict[str, list[DeploymentChange]]:
        """The deployment history of every model whose canary is followed from this cycle on, in one log walk
        (200 canaries starting at once cost one `git log`, not 200)."""
        from .watch import histories

        fresh = [n for n, w in self.watchers.items() if w.following is None
                 and isinstance(self._deployments.get(n, ("", None))[1], dict)]
        if len(fresh) <= 1:
            return {}
        self._load_priors(fresh)
        return histories(self.reg, fresh, ref)

    def _load_priors(self, names: list[str]) -> None:
        """The active bundles' baselines of models followed from now on, read in one `cat-file --batch`."""

        from . import schema, yamlio
        from .bundle import bundle_path

        wanted: dict[str, tuple[str, str]] = {}
        for name in names:
            dep = self._deployments[name][1]
            active = dep.get("active") if isinstance(dep, dict) else None
            if isinstance(active, str) and active not in self.watchers[name].priors:
                wanted[bundle_path(name, active)] = (name, active)
        if not wanted or self._snap is None:
            return
        cache = schema.ValidCache(self.reg.store, "Bundle")
        for path, raw in self._snap.read_many(sorted(wanted)).items():
            if raw is None:
                continue  # read_target reads it and says what is missing
            name, active = wanted[path]
            try:
                baseline = cache.validate(yamlio.loads(raw, path), schema.blob_id(raw)).get("baseline")
            except ModelctlError:
                continue  # the same: read_target raises it for this model alone
            self.watchers[name].priors[active] = baseline if isinstance(baseline, Mapping) else {}
        cache.save()

    def _gone(self, name: str) -> WatchResult:
        """A followed model whose deployment file is gone (renamed or removed): its watch ends, nothing written."""
        from .watch import ENDED, EXIT_DONE, WatchResult

        version = self.watchers[name].following
        what = f"canary {version} of {name}" if version else name
        return WatchResult(ENDED, EXIT_DONE, f"{what}: deployments/{name}.yaml is gone at the tip (the model was "
                           "renamed or removed); no longer followed, nothing was written", model=name, version=version)

    def _prepare(self, name: str, ref: str, snap: Snapshot | None) -> PollPlan | WatchResult:
        watcher = self.watchers[name]
        return watcher.prepare(target=self._target(watcher, name, ref, snap))

    def _whole_read(self, report: CycleReport, answers: Mapping[str, object]) -> None:
        """A read that failed for every model at once (the metrics backend is down): one line, not one per model."""
        from .watch import WatchEvent

        failures = {" ".join(str(a).split()) for a in answers.values() if isinstance(a, Exception)}
        whole = bool(answers) and len(failures) == 1 and all(isinstance(a, Exception) for a in answers.values())
        if whole:
            why = failures.pop()
            report.read_errors.append(why)
            if not self._read_failing:
                self.on_event(WatchEvent("note", f"note: the metrics backend failed for all {len(answers)} followed "
                                                 f"model(s) ({why}); their polls count as errors, nothing is "
                                                 "rolled back on missing data"))
        elif self._read_failing:
            self.on_event(WatchEvent("note", "note: the metrics backend answers again"))
        self._read_failing = whole

    def _guarded(self, report: CycleReport, name: str, step: Callable[..., Any], *args: Any) -> Any:
        """Run one model's step; its failure is a note and an error for that model only (None)."""
        from .watch import WatchEvent

        try:
            return step(*args)
        except ModelctlError as exc:
            report.errors[name] = str(exc)
            self.on_event(WatchEvent("note", f"note: {name}: {exc}; trying again next cycle"))
        except Exception as exc:  # noqa: BLE001 - one model's bug must not stop the others
            report.errors[name] = f"{type(exc).__name__}: {exc}"
            self.on_event(WatchEvent("note", f"note: {name}: unexpected {type(exc).__name__}: {exc}; "
                                             "trying again next cycle"))
        return None

    def _ended(self, report: CycleReport, name: str, result: WatchResult) -> None:
        """A followed model's watch is over: drop it, keep its decision."""
        from .watch import ALREADY_ROLLED_BACK, ENDED, NOTHING, WatchEvent

        del self.watchers[name]
        report.ended.append(result)
        if result.outcome != NOTHING:
            self.decisions.append(result)
        if result.outcome != NOTHING:  # said when it happens: a controller runs for days
            self.on_event(WatchEvent("note", f"note: {result.message}" if result.outcome in (ENDED, ALREADY_ROLLED_BACK)
                                     else result.message))

    def _tip(self, report: CycleReport) -> str:
        if not self.pushing:
            return "HEAD"
        from .watch import WatchEvent

        store = self.reg.store
        try:
            models = tuple(sorted(self.watchers)) or None
            store.fetch(self.remote, self.branch, timeout=30, models=models,
                        extra=("+refs/modelctl/watch/*:refs/modelctl/watch/*",))
            if self.fetch_failures:
                self.on_event(WatchEvent("note", f"note: fetching {self.remote}/{self.branch} works again after "
                                                 f"{self.fetch_failures} failed cycle(s)"))
            self.fetch_failures = 0
            self.last_fetch = self.clock()
        except ModelctlError as exc:
            report.fetch_error = str(exc)
            self.fetch_failures += 1
            if self.fetch_failures == 1:
                self.on_event(WatchEvent("note", f"note: cannot fetch {self.remote}/{self.branch} ({exc}); "
                                                 "judging the last fetched state (every write re-checks on the "
                                                 "remote)"))
        report.fetch_failures = self.fetch_failures
        report.last_fetch = self.last_fetch
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        return ref if store.rev(ref) else "HEAD"

    def _live(self, ref: str, report: CycleReport) -> tuple[set[str], Snapshot]:
        """Models with a live canary or shadow at `ref`, reading only the deployment files that changed.

        One `ls-tree` of deployments/ gives every file's blob id; a file whose id is the one of the
        last cycle is not read again (a tip with one changed model reads one file, not 2,000).
        """
        from . import schema, yamlio
        from .watch import WatchEvent

        snap = self._snap = self.reg.snapshot(ref)
        store = self.reg.store
        ids = {file[:-5]: oid for file, oid in store.list_ids(snap.commit, "deployments").items()
               if file.endswith(".yaml")}
        changed = {name: oid for name, oid in ids.items() if self._deployments.get(name, ("",))[0] != oid}
        blobs = store.read_blobs(sorted(set(changed.values()))) if changed else {}
        cache = schema.ValidCache(store, "Deployment") if changed else None
        for name, oid in changed.items():
            raw = blobs.get(oid) or b""
            # what modelctl writes for a model with neither stage live: 2,000 quiet models cost no parse
            if name not in self.watchers and _QUIET.search(raw) and len(_NULL_STAGE.findall(raw)) == 2:
                self._deployments[name] = (oid, None)
                continue
            try:
                assert cache is not None
                data = cache.validate(yamlio.loads(raw, f"deployments/{name}.yaml"), oid)
            except ModelctlError as exc:  # one damaged file is that model's problem, every cycle it stays so
                self._deployments[name] = (oid, exc)
                continue
            self._deployments[name] = (oid, data)
        if cache is not None:
            cache.save()
        self.config = self.reg.config(snap)  # parsed once per content: new watchers judge with the tip's settings
        for name in set(self._deployments) - set(ids):
            del self._deployments[name]
        live: set[str] = set()
        for name, (_oid, dep) in self._deployments.items():
            if isinstance(dep, Exception):
                report.errors[name] = str(dep)
                if name not in self._damaged:
                    self._damaged.add(name)
                    self.on_event(WatchEvent("note", f"note: {name}: {dep}; judging it again when the file changes"))
            elif dep is not None and (dep.get("canary") or dep.get("shadow")):
                live.add(name)
        self._damaged &= {n for n, (_o, d) in self._deployments.items() if isinstance(d, Exception)}
        return live, snap
