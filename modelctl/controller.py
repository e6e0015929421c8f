"""`watch --all`: one process following every live canary and shadow of the registry.

Each cycle (every `--interval`):

1. in a push-configured clone, fetch the branch once, with every model's judgement state
   (`refs/modelctl/watch/*`), and read the remote tip; else read HEAD;
2. list the models with a live canary or shadow there: a new one gets its own `watch.Watcher`
   (its own judge, resuming a saved state), one that ended (rolled back, promoted, removed by
   hand) is dropped after its last report;
3. poll every followed model with its watcher (the same judgement and actions as `watch NAME`).

One model's failure (its metrics, a damaged file, a write that conflicted) is that model's line in
the log and its count on `/metrics`, never the end of the controller. The controller stops at
`--max-duration`, on SIGINT (Ctrl-C), or after one cycle with `--once` (what a CronJob runs).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ModelctlError

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .notify import Notifier
    from .ops import WriteOptions
    from .registry import Registry
    from .watch import PollReport, Watcher, WatchEvent, WatchOptions, WatchResult


@dataclass
class CycleReport:
    """What one cycle did."""

    cycle: int
    followed: list[str]
    started: list[str] = field(default_factory=list)
    ended: list[WatchResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    fetch_error: str | None = None
    seconds: float = 0.0


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
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from .watch import parse_duration

        self.reg = reg
        self.options = options
        self.on_poll = on_poll or (lambda report: None)
        self.on_event = on_event or (lambda event: None)
        self.on_cycle = on_cycle or (lambda report: None)
        self.monotonic = monotonic
        self.sleep = sleep
        config = reg.config()
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
        self.watchers: dict[str, Watcher] = {}
        self.decisions: list[WatchResult] = []
        self.cycles = 0
        self._fetch_note = False

    def _default_watcher(self, name: str) -> Watcher:
        from dataclasses import replace

        from .watch import Watcher

        # the controller owns the loop: each watcher is polled once per cycle, never sleeps or ends on --once
        opts = replace(self.options, once=False, max_duration=None, record=None, report=None)
        return Watcher(self.reg, name, opts, provider_name=self._provider_name, url=self._url,
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
        """One cycle: fetch once, follow what is live, poll each followed model."""
        from .watch import ALREADY_ROLLED_BACK, ENDED, NOTHING, WatchEvent

        self.cycles += 1
        began = self.monotonic()
        report = CycleReport(self.cycles, [])
        ref = self._tip(report)
        try:
            live = self._live(ref)
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
            watcher.started_at = watcher.clock()  # what run() does for a single watch
            self.watchers[name] = watcher
            report.started.append(name)
        for name in sorted(self.watchers):
            watcher = self.watchers[name]
            try:
                result = watcher.poll()
            except ModelctlError as exc:
                report.errors[name] = str(exc)
                self.on_event(WatchEvent("note", f"note: {name}: {exc}; trying again next cycle"))
                continue
            except Exception as exc:  # noqa: BLE001 - one model's bug must not stop the others
                report.errors[name] = f"{type(exc).__name__}: {exc}"
                self.on_event(WatchEvent("note", f"note: {name}: unexpected {type(exc).__name__}: {exc}; "
                                                 "trying again next cycle"))
                continue
            if result is not None:
                del self.watchers[name]
                report.ended.append(result)
                if result.outcome != NOTHING:
                    self.decisions.append(result)
                if result.outcome not in (ENDED, NOTHING, ALREADY_ROLLED_BACK):
                    self.on_event(WatchEvent("note", result.message))
        report.followed = sorted(self.watchers)
        report.seconds = self.monotonic() - began
        self.on_cycle(report)
        return report

    def _tip(self, report: CycleReport) -> str:
        if not self.pushing:
            return "HEAD"
        from .watch import WatchEvent

        store = self.reg.store
        try:
            models = tuple(sorted(self.watchers)) or None
            store.fetch(self.remote, self.branch, timeout=30, models=models,
                        extra=("+refs/modelctl/watch/*:refs/modelctl/watch/*",))
            self._fetch_note = False
        except ModelctlError as exc:
            report.fetch_error = str(exc)
            if not self._fetch_note:
                self.on_event(WatchEvent("note", f"note: cannot fetch {self.remote}/{self.branch} ({exc}); "
                                                 "judging the last fetched state"))
                self._fetch_note = True
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        return ref if store.rev(ref) else "HEAD"

    def _live(self, ref: str) -> set[str]:
        """Models with a live canary or shadow at `ref`."""
        doc: Any = self.reg.status(ref=ref)
        return {row["name"] for row in doc["models"] if row.get("canary") or row.get("shadow")}
