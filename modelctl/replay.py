"""`replay`: judge recorded polls again, canary by canary, with the code `watch` uses.

The input is the poll record format (`observation`: one `Poll.to_json()` per line, what `watch
--record FILE` appends). Lines are grouped by `canary_id` in file order; each canary gets a fresh
`analysis.Judge` fed through `watch.judge_polls`, exactly as watch feeds it, and stops where watch
would have stopped (`watch.ends_watch`: a rollback, or the hold fail-safe). So a recorded watch
replays to the same decision at the same poll, and tuning `analysis:` on past canaries is a loop
over one file in one process.

The prior (the serving version's registered baseline) comes from the registry when replay runs in
one (the control's bundle at HEAD: bundles are immutable, so it is the one watch used); with
`--config` outside a registry, there is none.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UsageError, ValidationError
from .observation import Poll
from .watch import ends_watch, judge_polls

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .analysis import Decision
    from .documents import CanaryReplayDocument
    from .reader import Reader
    from .report_html import CanaryStory

MAX_LINE = 16 * 1024 * 1024


@dataclass
class CanaryReplay:
    """One canary of the file and what the judgement made of it."""

    canary_id: str
    model: str | None
    canary: str
    control: str | None
    polls: list[Poll] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # one per poll judged (up to the deciding one)
    decided: int | None = None  # 1-based poll number of the decision that ended it

    @property
    def decision(self) -> Decision | None:
        """The deciding decision, or the last one (None before the first poll is judged)."""
        if self.decided is not None:
            return self.decisions[self.decided - 1]
        return self.decisions[-1] if self.decisions else None

    @property
    def action(self) -> str:
        """What watch would have done: the deciding action, or no-decision."""
        decision = self.decision
        if self.decided is not None and decision is not None:
            return decision.action
        return "no-decision"

    def to_json(self) -> CanaryReplayDocument:
        """A JSON-ready summary with the decision's own document."""
        decision = self.decision
        decided_time = self.polls[self.decided - 1].time if self.decided else None
        return {
            "canary_id": self.canary_id,
            "model": self.model,
            "canary": self.canary,
            "control": self.control,
            "polls": len(self.polls),
            "judged": len(self.decisions),
            "action": self.action,
            "poll": self.decided,
            "time": decided_time,
            "last_action": decision.action if decision is not None else None,
            "evidence": list(decision.evidence_lines()) if decision is not None else [],
            "decision": decision.to_json() if decision is not None and hasattr(decision, "to_json") else None,
        }


def read_polls(path: str | os.PathLike[str]) -> Iterator[Poll]:
    """The polls of a record file, in order; ValidationError naming FILE:LINE for a bad line."""
    name = os.fspath(path)
    try:
        fh = open(name, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}",
                         hint="pass a file written by watch --record") from None
    with fh:
        for number, raw in enumerate(fh, 1):
            if len(raw) > MAX_LINE:
                raise ValidationError(f"{name}:{number}: line longer than {MAX_LINE} bytes")
            text = raw.strip()
            if not text:
                continue
            try:
                doc = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise ValidationError(f"{name}:{number}: not a JSON object (the poll record format is one "
                                      "JSON object per line)") from None
            try:
                yield Poll.from_json(doc)
            except ValidationError as exc:
                raise ValidationError(f"{name}:{number}: {exc.message}") from None


def replay(path: str | os.PathLike[str], config: Mapping[str, Any] | None,
           prior: Callable[[str | None, str | None], Mapping[str, Any] | None] = lambda model, version: None,
           ) -> list[CanaryReplay]:
    """Judge every canary of a record file; `prior(model, control)` gives the serving baseline."""
    from .analysis import AnalysisConfig, Judge

    analysis = AnalysisConfig.from_config(config or {})
    canaries: dict[str, CanaryReplay] = {}
    for poll in read_polls(path):
        cid = poll.canary_id or f"{poll.model or '-'}:{poll.canary}"
        item = canaries.get(cid)
        if item is None:
            item = canaries[cid] = CanaryReplay(cid, poll.model, poll.canary, poll.control)
        item.polls.append(poll)
    for item in canaries.values():
        judge = Judge(analysis, prior=prior(item.model, item.control) or None, state=None)
        for number, _poll, decision in judge_polls(judge, item.polls):
            item.decisions.append(decision)
            if ends_watch(decision):
                item.decided = number
                break
    return list(canaries.values())


def registry_prior(reg: Reader) -> Callable[[str | None, str | None], Mapping[str, Any] | None]:
    """prior(model, version): that version's registered baseline at HEAD (None when unknown)."""
    cache: dict[tuple[str | None, str | None], Mapping[str, Any] | None] = {}
    snap = reg.snapshot()

    def prior(model: str | None, version: str | None) -> Mapping[str, Any] | None:
        key = (model, version)
        if key not in cache:
            value = None
            if model and version:
                try:
                    data = reg.bundle(model, version, snap).get("baseline")
                    value = dict(data) if isinstance(data, Mapping) else None
                except Exception:  # noqa: BLE001 - an unknown model or version simply has no prior
                    value = None
            cache[key] = value
        return cache[key]

    return prior


def stories(items: list[CanaryReplay]) -> list[CanaryStory]:
    """The report's view of each canary."""
    from .report_html import CanaryStory

    out: list[CanaryStory] = []
    for item in items:
        steps = list(zip(item.polls, item.decisions))
        decision = item.decision
        final = (item.decided, decision) if item.decided and decision is not None else None
        out.append(CanaryStory.build(item.model or "-", item.canary_id, steps, final))
    return out
