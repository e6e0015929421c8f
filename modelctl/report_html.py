"""The judgement of canaries as one self-contained HTML page (inline SVG and CSS; no script, no network).

For each canary (`CanaryStory`, built from the polls and the decisions `watch` or `replay` made):
- the canary's and the control's per-interval rates of each event counter (errors, ...): the
  difference of the cumulative counters between consecutive usable polls;
- each metric's (and segment's) statistic, poll by poll, against its boundary;
- the decision, marked on both charts, and its evidence lines.
"""
from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from .analysis import Decision
    from .observation import Poll

W, H = 720, 220  # chart size in px
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 20, 34
MAX_POINTS = 2000  # per series: a long canary is thinned, never a page of megabytes

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:20px}h2{font-size:17px;margin-top:32px}
.muted{color:#666}.decision{font-weight:600}
.decision.rollback,.decision.hold{color:#b00020}.decision.advance-ok,.decision.promoted{color:#0a7a2f}
svg{background:#fafafa;border:1px solid #ddd;margin:8px 0}
svg text{font:11px system-ui,sans-serif;fill:#444}
polyline{fill:none;stroke-width:1.6}
.canary{stroke:#d2691e}.control{stroke:#1f5fbf}.statistic{stroke:#6a3d9a}.boundary{stroke:#b00020;stroke-dasharray:5 4}
.mark{stroke:#b00020;stroke-width:1.2}.axis{stroke:#999}
code{font-size:12px}
"""


@dataclass
class CanaryStory:
    """What the report shows of one canary."""

    model: str
    canary_id: str
    canary: str
    control: str | None
    times: list[float] = field(default_factory=list)  # poll times (unix seconds)
    rates: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)  # event -> who -> points
    stats: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)  # metric -> stat/bound
    decision: str = "no-decision"
    decided_poll: int | None = None
    decided_time: float | None = None
    evidence: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: str, canary_id: str | None, steps: Sequence[tuple[Poll, Decision | None]],
              final: tuple[int, Decision] | None = None) -> CanaryStory:
        """From (poll, decision) pairs in order; `final` = (poll number, decision) that decided, if any."""
        first = steps[0][0] if steps else None
        story = cls(model=model, canary_id=canary_id or "", canary=first.canary if first else "",
                    control=first.control if first else None)
        last: dict[str, tuple[float, float, dict[str, float]]] = {}  # version -> (time, requests, events) at last usable poll
        for number, (poll, decision) in enumerate(steps, 1):
            story.times.append(poll.time)
            for who, version in (("canary", poll.canary), ("control", poll.control)):
                whole = _whole(poll, version)
                if whole is None or not version:  # (_whole finds nothing without a version)
                    last.pop(version or "", None)
                    continue
                requests, events = whole
                now = (poll.time, requests, dict(events))
                before = last.get(version)
                last[version] = now
                if before is None:
                    continue
                dn = now[1] - before[1]
                for event, value in now[2].items():
                    dx = value - before[2].get(event, math.nan)
                    if dn > 0 and dx >= 0:
                        story.rates.setdefault(event, {}).setdefault(who, []).append((poll.time, dx / dn))
            for row in _rows(decision):
                key = row.get("metric") or "?"
                if row.get("segment"):
                    key += f" [{row['segment']}]"
                statistic, bound = row.get("value"), row.get("bound")
                if _finite(statistic):
                    story.stats.setdefault(key, {}).setdefault("statistic", []).append((poll.time, float(statistic)))
                if _finite(bound):
                    story.stats.setdefault(key, {}).setdefault("boundary", []).append((poll.time, float(bound)))
            if decision is not None and final is None and decision.action in ("rollback", "hold"):
                final = (number, decision)
        if final is not None:
            number, decision = final
            story.decision = decision.action
            story.decided_poll = number
            story.decided_time = steps[number - 1][0].time
            story.evidence = list(decision.evidence_lines())
        elif steps and steps[-1][1] is not None:
            story.decision = f"no decision (last poll: {steps[-1][1].action})"
        return story


def _whole(poll: Poll, version: str | None) -> tuple[float, Mapping[str, float]] | None:
    """(requests, event counters) of a version's whole traffic at a poll; None when unusable."""
    if poll.error is not None or not version or version not in poll.readings:
        return None
    reading = poll.readings[version]
    if reading.problems.get("*"):
        return None
    counters = reading.segments.get("")
    if counters is None or counters.requests is None:
        return None
    return counters.requests, counters.events


def _rows(decision: Decision | None) -> list[Mapping[str, Any]]:
    if decision is None:
        return []
    out: list[Mapping[str, Any]] = []
    for r in decision.results:
        row: Mapping[str, Any] = r.evidence() if hasattr(r, "evidence") else {}
        out.append(row if isinstance(row, dict) else {})
    return out


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


def _chart(title: str, series: dict[str, list[tuple[float, float]]], t0: float, t1: float,
           mark: float | None, mark_label: str, percent: bool) -> str:
    """One SVG line chart: x = minutes since the first poll, y = value; `mark` = the decision time."""
    values = [v for pts in series.values() for _, v in pts]
    lo = min(values + [0.0])
    hi = max(values + [lo + 1e-9])
    hi += (hi - lo) * 0.08
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return PAD_L + (t - t0) / span * (W - PAD_L - PAD_R)

    def y(v: float) -> float:
        return H - PAD_B - (v - lo) / (hi - lo) * (H - PAD_T - PAD_B)

    def label(v: float) -> str:
        return f"{v * 100:.2f}%" if percent else f"{v:.3g}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<title>{html.escape(title)}</title>',
             f'<text x="{PAD_L}" y="14">{html.escape(title)}</text>',
             f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>',
             f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>',
             f'<text x="{PAD_L - 6}" y="{y(hi) + 4:.1f}" text-anchor="end">{label(hi)}</text>',
             f'<text x="{PAD_L - 6}" y="{y(lo) + 4:.1f}" text-anchor="end">{label(lo)}</text>',
             f'<text x="{PAD_L}" y="{H - 12}">0 min</text>',
             f'<text x="{W - PAD_R}" y="{H - 12}" text-anchor="end">{span / 60:.1f} min</text>']
    legend_x = PAD_L + 90
    for name, pts in series.items():
        pts = _thin(pts)
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        parts.append(f'<polyline class="{html.escape(name)}" data-series="{html.escape(name)}" points="{coords}"/>')
        parts.append(f'<text x="{legend_x}" y="14" class="legend">— {html.escape(name)}</text>')
        legend_x += 90
    if mark is not None:
        mx = x(mark)
        parts.append(f'<line class="mark" x1="{mx:.1f}" y1="{PAD_T}" x2="{mx:.1f}" y2="{H - PAD_B}"/>')
        parts.append(f'<text class="mark-label" x="{min(mx + 4, W - 120):.1f}" y="{PAD_T + 12}">'
                     f'{html.escape(mark_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _section(story: CanaryStory) -> str:
    e = html.escape
    t0 = story.times[0] if story.times else 0.0
    t1 = story.times[-1] if story.times else 1.0
    decided = story.decision.split(" ")[0]
    mark_label = f"{story.decision} at poll {story.decided_poll}" if story.decided_poll else ""
    out = [f'<section class="canary" id="{e(story.canary_id)}">',
           f"<h2>{e(story.model)} {e(story.canary)} vs control {e(story.control or '-')}</h2>",
           f'<p class="muted">canary id <code>{e(story.canary_id)}</code>; {len(story.times)} polls</p>',
           f'<p class="decision {e(decided)}">decision: {e(story.decision)}'
           + (f" at poll {story.decided_poll}" if story.decided_poll else "") + "</p>"]
    if story.evidence:
        out.append("<ul class=\"evidence\">" + "".join(f"<li><code>{e(line)}</code></li>" for line in story.evidence)
                   + "</ul>")
    for event, series in sorted(story.rates.items()):
        ordered: dict[str, list[tuple[float, float]]] = {k: series[k] for k in ("control", "canary") if k in series}
        out.append(_chart(f"{event} per request, interval by interval", ordered, t0, t1, story.decided_time,
                          mark_label, percent=True))
    for metric, series in sorted(story.stats.items()):
        out.append(_chart(f"{metric}: statistic against its boundary", series, t0, t1, story.decided_time,
                          mark_label, percent=False))
    if not story.rates and not story.stats:
        out.append('<p class="muted">no usable data was polled</p>')
    out.append("</section>")
    return "\n".join(out)


def render(stories: Sequence[CanaryStory], title: str = "modelctl judgement") -> str:
    """The whole page."""
    e = html.escape
    body = "\n".join(_section(s) for s in stories) or '<p class="muted">no canary in the input</p>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h1>{e(title)}</h1>\n"
            '<p class="muted">Rates: events / requests of each interval between two polls. Statistic: the '
            "sequential test's value at each poll; the metric fails when it crosses its boundary.</p>\n"
            f"{body}\n</body></html>\n")


def write(path: str | os.PathLike[str], page: str) -> None:
    """Write the page whole (a reader never sees half of it)."""
    target = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.modelctl-tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, target)
