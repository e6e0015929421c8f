"""The only module that formats output: rich tables on a terminal, plain text otherwise, JSON.

stdout is data, stderr is talk. Colour honours NO_COLOR / FORCE_COLOR and TTY detection.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from typing_extensions import TypeIs  # typing.TypeIs is 3.13+

    from .analysis import Decision
    from .documents import (
        CheckDocument,
        CheckFinding,
        CompatDocument,
        DeprecationsDocument,
        DiffDocument,
        DoctorDocument,
        LogDocument,
        RegisterResult,
        ResolveDocument,
        ShadowCost,
        ShowBundleDocument,
        ShowDocument,
        StatusDocument,
        TransitionResult,
        WhichDocument,
        WriteDocument,
    )
    from .gate import GateResult
    from .store import Outcome
    from .watch import PollReport, WatchEvent, WatchResult

API_SCHEMA = "modelctl/v1"


def is_tty(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False,
                   soft_wrap=False, force_terminal=True if os.environ.get("FORCE_COLOR") else None)


def emit_json(doc: Mapping[str, Any]) -> None:
    """One JSON document on stdout with the schema key first."""
    out = {"schema": API_SCHEMA, **{k: v for k, v in doc.items() if k != "schema"}}
    sys.stdout.write(json.dumps(out, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    """Talk to the human on stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def line(text: str = "") -> None:
    """A line of data on stdout."""
    sys.stdout.write(text + "\n")


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "version" in value and "percent" in value:
        of = f" of {value['segment']}" if value.get("segment") else ""  # a canary limited to a segment
        return f"{value['version']} ({_pct(value['percent'])}%{of})"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def _pct(p: object) -> str:
    return f"{p:g}" if isinstance(p, float) else str(p)


def table(title: str | None, columns: list[str], rows: Iterable[list[Any]]) -> None:
    """A table: rich on a terminal, aligned plain text (no colour, no box) otherwise."""
    rows = [[c if type(c) is str else fmt(c) for c in r] for r in rows]
    if is_tty():
        from rich.table import Table

        t = Table(title=title, title_justify="left", header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*r)
        _console().print(t)
        return
    cells = list(zip(*rows)) if rows else [()] * len(columns)
    widths = [max([len(c), *map(len, col)]) for c, col in zip(columns, cells)]
    out = [title] if title else []
    out.append("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    out.extend("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
    sys.stdout.write("\n".join(out) + "\n")  # one write: a model with ten thousand versions is 10,000 lines


# -- per-command renderers -----------------------------------------------------------------

def compat(doc: CompatDocument) -> None:
    """compat: what the platform provides, then each version at each place, mismatches spelled out."""
    p = doc["platform"]
    emb = p.get("embedding")
    index = f"{emb['model']}@{emb['version']}" if emb else "none declared"
    say(f"platform: embedding {index}; API versions {', '.join(p.get('api_versions') or []) or 'none declared'}; "
        f"accepts breaking changes {', '.join(p.get('accepts_breaking') or []) or 'none'}")
    if not doc["rows"]:
        say("no serving or candidate versions")
        return
    rows = [[r["model"], r["version"], r["role"], r["place"],
             "yes" if r["compatible"] else "NO", "; ".join(r["mismatches"]) or ("-" if r["declares"] else "declares no needs")]
            for r in doc["rows"]]
    table(None, ["model", "version", "role", "place", "compatible", "why"], rows)


def status(doc: StatusDocument) -> None:
    rows = [[m["name"], m["active"], m["canary"], m["shadow"], m["latest"], m["versions"]] for m in doc["models"]]
    if not rows:
        say("no models registered yet; try 'modelctl register FILE'")
        return
    table(None, ["model", "active", "canary", "shadow", "latest", "versions"], rows)


def _is_bundle(doc: ShowDocument) -> TypeIs[ShowBundleDocument]:
    return "bundle" in doc  # show NAME@VERSION; show NAME has "versions" instead


def show(doc: ShowDocument) -> None:
    if _is_bundle(doc):
        from . import yamlio

        say(f"{doc['name']} {doc['version']}: {doc['status']}")
        sys.stdout.write(yamlio.dumps(doc["bundle"]))
        return
    head = f"{doc['name']}: active {fmt(doc['active'])}, canary {fmt(doc['canary'])}, shadow {fmt(doc['shadow'])}"
    rows = [[v["version"], v["status"], f"{v['provider']}/{v['model']}" + (f"+{v['adapter']}" if v["adapter"] else ""),
             (v["prompt_sha256"] or "")[:12], v["registered_at"], v["registered_by"]] for v in doc["versions"]]
    table(head, ["version", "status", "model", "prompt", "registered", "by"], rows)


def diff(doc: DiffDocument) -> None:
    if not doc["changed"]:
        line(f"{doc['name']} {doc['from']} and {doc['to']} do not differ")
        return
    rows = []
    for section in doc["changed"]:
        for r in doc["fields"][section]:
            rows.append([section, r["field"], r["from"], r["to"]])
    title = f"{doc['name']} {doc['from']} -> {doc['to']}: {', '.join(doc['changed'])} changed"
    if doc.get("semver"):
        title += f" (a {doc['semver']} change)"
    table(title, ["part", "field", doc["from"], doc["to"]], rows)


def check(doc: CheckDocument) -> None:
    if not doc["findings"]:
        line(f"ok: {doc['checked']} files checked, no problems")
        return
    for f in doc["findings"]:
        where = f"{f['path']}:{f['line']}" if f.get("line") else f["path"]
        line(f"{f['level']}: {where}: {f['message']}")
    errors = sum(1 for f in doc["findings"] if f["level"] == "error")
    warnings = len(doc["findings"]) - errors
    line(f"{errors} error(s), {warnings} warning(s) in {doc['checked']} files")


def outcome(verb: str, out: Outcome, detail: str = "", stream: str = "stdout") -> None:
    """What a write did, on stdout (data) with a human line on stderr (stream="stderr": all on stderr)."""
    emit = say if stream == "stderr" else line
    if out.noop:
        note = out.result.get("note") if isinstance(out.result, dict) else None
        emit(f"already done: {out.result if isinstance(out.result, str) else note or verb}")
        return
    assert out.commit is not None  # a write that was not a no-op made a commit
    where = f" on branch {out.branch}" if out.branch else ""
    pushed = " (pushed)" if out.pushed else ""
    emit(f"{verb}{(' ' + detail) if detail else ''}: commit {out.commit[:12]}{where}{pushed}")
    for tag in out.tags:
        emit(f"  tag {tag}")
    if not getattr(out, "synced", True):
        say(f"note: your checkout of {out.branch} was left as it was (uncommitted changes in the way); "
            "'git pull' brings it up to date")


def outcome_json(out: Outcome, extra: Mapping[str, Any] | None = None) -> WriteDocument:
    """What a write did, as the `--json` document of the write commands."""
    # the store keeps a plan's result as an opaque object; the writes in ops return one of these
    result = cast("RegisterResult | TransitionResult | str | None", out.result)
    doc: WriteDocument = {"commit": out.commit, "tags": out.tags, "pushed": out.pushed, "noop": out.noop,
                          "branch": out.branch, "attempts": out.attempts, "seconds": round(out.seconds, 3),
                          "result": result}
    if extra:
        # a plain mapping cannot say that its keys are the document's optional ones (pull_request)
        doc = cast("WriteDocument", {**doc, **extra})
    return doc


def doctor(doc: DoctorDocument) -> None:
    """doctor: what was repaired, what is wrong (with what --fix does), and a summary line."""
    for text in doc["fixed"]:
        line(f"fixed: {text}")
    for f in doc["findings"]:
        hint = f" (--fix: {f['fix']})" if f["fix"] and not doc["fix"] and f["level"] != "info" else ""
        line(f"{f['level']}: {f['message']}{hint}")
    remote = doc["remote"]
    where = f"{remote['name']}/{remote['branch']}" if remote["push"] and remote.get("remote") else remote["branch"]
    at = remote.get("checked")
    checked = f" (checked {where} at {at[:12]})" if at else ""
    if doc["ok"]:
        line(f"ok: {'repaired, ' if doc['fixed'] else ''}no problems{checked}")
    elif doc["fix"] or not any(f["fix"] for f in doc["findings"] if f["level"] == "error"):
        line(f"{doc['problems']} problem(s) remain that need a human{checked}")
    else:
        line(f"{doc['problems']} problem(s){checked}; 'modelctl doctor --fix' repairs those marked --fix")


# -- watch ------------------------------------------------------------------------------------

_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "insufficient_data": "dim",
                  "error": "magenta"}


def _metric_value(value: Any, kind: str | None) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value * 100:.2f}%"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def watch_rows(decision: Decision) -> list[list[str]]:
    """One row per metric and segment: metric, control, canary, samples, statistic, verdict."""
    from .watch import metric_rows

    rows: list[list[str]] = []
    for r in metric_rows(decision):
        kind = "rate" if r.get("type") in ("rate", "latency") else None
        name = r["metric"] + (f" [{r['segment']}]" if r.get("segment") else "")
        control = _metric_value(r.get("control"), kind)
        if r.get("control_source"):
            control += f" ({r['control_source']})"
        samples = f"{_count(r.get('canary_n'))} / {_count(r.get('control_n'))}"
        value, bound = r.get("value"), r.get("bound")
        if value is not None and bound is not None:
            label = "ratio" if r.get("statistic") == "ratio" else "llr"
            stat = f"{label} {value:.3g} / {bound:.3g}"
        else:
            stat = "-"
        verdict = r.get("verdict") or "-"
        if verdict == "fail" and r.get("action") != "rollback":
            verdict += f" ({r.get('action')})"
        elif verdict in ("error", "insufficient_data") and r.get("reason"):
            verdict += f": {r['reason']}"
        rows.append([name, control, _metric_value(r.get("canary"), kind), samples, stat, verdict])
    return rows


WATCH_COLUMNS = ["metric", "control", "canary", "samples", "statistic", "verdict"]


def _watch_title(report: PollReport) -> str:
    parts = [report.model]
    if report.canary:
        parts.append(f"canary {report.canary.version} at {_pct(report.canary.percent)}% vs active {report.active}")
    parts.append(f"poll {report.poll}")
    parts.append(f"{_span(report.since_seconds)} window")
    if report.dry_run:
        parts.append("dry run")
    return " · ".join(parts)


def _rich_watch_table(title: str, decision: Decision | None, caption: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", header_style="bold", caption=caption, caption_justify="left")
    for c in WATCH_COLUMNS:
        t.add_column(c, overflow="fold")
    if decision is not None:
        for row, result in zip(watch_rows(decision), decision.results):
            t.add_row(*row[:-1], Text(row[-1], style=_VERDICT_STYLE.get(getattr(result, "verdict", ""), "")))
    return t


class WatchView:
    """What watch prints: a live rich table on a terminal, otherwise one JSON line per poll and event."""

    def __init__(self, json_lines: bool | None = None) -> None:
        self.json_lines = (not is_tty()) if json_lines is None else json_lines
        self._live: Live | None = None
        self._console: Console | None = None

    def _emit(self, doc: Mapping[str, Any]) -> None:
        sys.stdout.write(json.dumps({"schema": API_SCHEMA, **doc}, default=str, allow_nan=False) + "\n")
        sys.stdout.flush()

    def poll(self, report: PollReport) -> None:
        """Show one poll."""
        if self.json_lines:
            self._emit(_finite(report.to_json()))
            return
        from rich.console import Group

        parts = []
        if report.decision is not None:
            caption = f"decision: {report.decision.action} ({getattr(report.decision, 'reason', '')})"
            if report.error:
                caption += f"; metrics unavailable: {report.error}"
            parts.append(_rich_watch_table(_watch_title(report), report.decision, caption))
        if report.shadow is not None and report.shadow_decision is not None:
            d = report.shadow_decision
            title = f"shadow {report.shadow.version} at {_pct(report.shadow.percent)}% (report only, never rolled back)"
            parts.append(_rich_watch_table(title, d, f"verdict: {d.action} ({getattr(d, 'reason', '')})"))
        if not parts:
            return
        group = Group(*parts)
        if self._live is None:
            from rich.live import Live

            self._console = _console()
            self._live = Live(group, console=self._console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(group, refresh=True)

    def event(self, event: WatchEvent) -> None:
        """Show an alert, a step or a promotion."""
        if self.json_lines:
            self._emit(_finite(event.to_json()))
            if event.kind != "header":  # the header is planning figures: in the JSON line only
                say(event.message)
        elif self._live is not None:
            self._live.console.print(event.message)
        else:
            line(event.message)

    def result(self, result: WatchResult) -> None:
        """Show how the watch ended (a hold or a changed canary is left to the error funnel)."""
        self.close()
        if self.json_lines:
            self._emit(_finite(result.to_json()))
            if result.exit_code not in (3, 4):
                say(result.message)
            return
        if result.exit_code in (3, 4):
            return
        line(result.message)
        if result.commit:
            line(f"  commit {result.commit[:12]}{' (pushed)' if result.pushed else ''}")
        for tag in result.tags:
            line(f"  tag {tag}")
        for ev in result.evidence:
            line(f"  evidence: {ev}")

    def close(self) -> None:
        """Stop the live table (its last state stays on the terminal)."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such floats become their names as strings."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- gate and check for CI --------------------------------------------------------------------

def json_text(doc: Mapping[str, Any]) -> str:
    """The JSON document emit_json prints, as text (for --output files)."""
    out = {"schema": API_SCHEMA, **{k: v for k, v in doc.items() if k != "schema"}}
    return json.dumps(out, indent=2, sort_keys=False, default=str) + "\n"


def _gate_rows(result: GateResult) -> list[list[str]]:
    from .gate import fmt_change, fmt_p

    with_n = _with_n
    return [[r.metric, with_n(r.baseline, r.n_baseline), with_n(r.candidate, r.n_candidate), fmt_change(r),
             r.rule, fmt_p(r.p_value), r.verdict] for r in result.rows]


GATE_COLUMNS = ["metric", "baseline", "candidate", "change", "rule", "p", "verdict"]


def _gate_title(result: GateResult) -> str:
    c, b = result.candidate, result.baseline
    who = " ".join(x for x in (c.get("name"), c.get("version")) if x) or "candidate"
    ds = f"{result.dataset['name']} {result.dataset['version']}"
    if b.get("version") is None:
        return f"gate {who}: no baseline ({result.note}); dataset {ds}"
    return f"gate {who} vs {b.get('version')} on dataset {ds} (alpha {result.alpha:g})"


def gate_text(result: GateResult) -> str:
    """The gate as a plain aligned table with failure reasons (for files and pipes)."""
    rows = _gate_rows(result)
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(GATE_COLUMNS)]
    out = [_gate_title(result), "  ".join(c.upper().ljust(w) for c, w in zip(GATE_COLUMNS, widths)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    out += [f"{r.metric}: {r.reason}" for r in result.rows if not r.passed]
    return "\n".join(out) + "\n"


def gate_table(result: GateResult) -> None:
    """The gate on stdout: a rich table on a terminal, plain text otherwise."""
    if not is_tty():
        sys.stdout.write(gate_text(result))
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=_gate_title(result), title_justify="left", header_style="bold")
    for c in GATE_COLUMNS:
        t.add_column(c)
    for row, r in zip(_gate_rows(result), result.rows):
        t.add_row(*row[:-1], Text(row[-1], style="green" if r.passed else "bold red"))
    console = _console()
    console.print(t)
    for r in result.rows:
        if not r.passed:
            console.print(f"{r.metric}: {r.reason}", markup=False)


def gate_verdict(result: GateResult) -> str:
    """One line for stderr: passed, or which metrics failed."""
    who = " ".join(x for x in (result.candidate.get("name"), result.candidate.get("version")) if x)
    if result.passed:
        return f"gate passed: {who}" + (" (no baseline: first version)" if result.baseline.get("version") is None else "")
    return f"gate failed: {who}: {', '.join(result.failures)}"


def check_junit(doc: CheckDocument) -> str:
    """check as JUnit XML: a testcase per file with findings (errors fail it), or one passing case."""
    by_path: dict[str, list[CheckFinding]] = {}
    for f in doc["findings"]:
        by_path.setdefault(f["path"], []).append(f)
    props = [("commit", doc.get("commit") or ""), ("checked", str(doc.get("checked")))]
    if doc.get("changed_since"):
        props.append(("changed_since", doc["changed_since"]))
    cases: list[tuple[str, str, str | None, str]] = []
    if not by_path:
        cases.append(("modelctl.check", "registry", None, f"{doc['checked']} files checked, no problems"))
    for path, fs in by_path.items():
        text = "\n".join(f"{f['level']}: {f['path']}" + (f":{f['line']}" if f.get("line") else "")
                         + f": {f['message']}" for f in fs)
        errors = [f for f in fs if f["level"] == "error"]
        failed = errors[0]["message"] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "") if errors else None
        cases.append(("modelctl.check", path, failed, text))
    return junit("modelctl check", "modelctl check", props, cases, failure_type="check")


def github_escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped (GitHub's toolkit rules)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_escape_property(text: str) -> str:
    """A workflow command's property value: as data, plus ':' and ','."""
    return github_escape_data(text).replace(":", "%3A").replace(",", "%2C")


def check_github(doc: CheckDocument) -> None:
    """check as GitHub workflow annotations (::error file=...,line=...::message) and a summary line."""
    for f in doc["findings"]:
        props = [f"file={github_escape_property(f['path'])}"]
        line_no = f.get("line")
        if line_no:
            props.append(f"line={int(line_no)}")
        props.append(f"title={github_escape_property('modelctl check')}")
        level = "error" if f["level"] == "error" else "warning"
        line(f"::{level} {','.join(props)}::{github_escape_data(f['message'])}")
    errors = doc.get("errors", 0)
    line(f"modelctl check: {errors} error(s), {doc.get('warnings', 0)} warning(s) in {doc['checked']} files")



# -- lifecycle --------------------------------------------------------------------------------

def _money(x: float) -> str:
    return f"${x:,.2f}"


def shadow_cost(cost: ShadowCost, stream: str = "stdout") -> None:
    """The daily cost line of a shadow (data: stdout, or stderr when stdout is a pull-request body)."""
    over = " OVER BUDGET (forced)" if cost["over_budget"] else ""
    (line if stream == "stdout" else say)(f"shadow cost: {_money(cost['per_day'])}/day = {cost['requests_per_day']:g} requests/day x "
         f"{_pct(cost['percent'])}% x ${cost['cost_per_request']:g} per call x 2 "
         f"(budget {_money(cost['budget_per_day'])}/day){over}")


def lifecycle_before(r: TransitionResult, stream: str = "stdout") -> None:
    """What precedes a lifecycle write's outcome line: the shadow cost."""
    if r.get("cost"):
        shadow_cost(r["cost"], stream)


def lifecycle_after(r: TransitionResult) -> None:
    """Talk after a lifecycle write: what a rollback put on hold."""
    hold = r.get("hold")
    change = r.get("change")
    if change and r["action"] == "rollback":
        what = ("the model changed: gateways redeploy or warm it" if change["redeploy"]
                else "no model changes: no redeploy or warm-up needed")
        say(f"change {change['from']} -> {change['to']}: {change['kind']} ({what})")
    if hold and r["action"] == "rollback" and not r.get("route"):  # a route rollback puts nothing on hold
        say(f"{hold['version']} is on hold: canary, shadow and promote refuse it unless --force --reason")


def log(doc: LogDocument) -> None:
    """A model's events, newest first."""
    rows: list[list[Any]] = []
    for e in doc["events"]:
        change = f"{e['from'] or ''} -> {e['to']}" if e.get("to") else None
        pct: object = e.get("percent")
        if pct is not None and e.get("from_percent") is not None:
            pct = f"{_pct(e['from_percent'])} -> {_pct(pct)}"
        action = f"{e['action']} (inferred)" if e.get("inferred") else e["action"]
        from .trailers import ROUTE

        route = (e.get("trailers") or {}).get(ROUTE)
        if route:
            action += f" [{route}]"  # a route event: the model's own state did not move
        rows.append([e["time"], e["author"], action, e["version"], change, pct,
                     e.get("restored") or e.get("replaces"), e.get("reason"), e.get("evidence")])
        signer = e.get("signer")
        if signer is not None:  # the registry lists allowed signers: say who signed each change
            rows[-1].insert(2, signer["principal"] if signer["status"] == "verified" else signer["status"])
    heads = ["time", "by", "action", "version", "status", "percent", "restored/replaced", "reason", "evidence"]
    if any(e.get("signer") is not None for e in doc["events"]):
        heads.insert(2, "signed by")
        for row in rows:
            if len(row) < len(heads):
                row.insert(2, None)
    table(f"{doc['name']}: {len(rows)} event(s), newest first", heads, rows)


def deprecations(doc: DeprecationsDocument) -> None:
    """Retiring models that versions on a route pin: when, the replacement, when to start evaluating."""
    rows = [[m["model"], ", ".join(f"{u['name']} {u['version']} ({u['status']}{', fallback' if u['field'] != 'model.id' else ''})"
                                   for u in m["versions"]),
             m["retires"], m["state"] if m["state"] != "planned" else f"in {m['days_left']} days",
             m["replacement"], m["evaluate_from"]] for m in doc["models"]]
    if not rows:
        line(f"no version on a route pins a model with an announced retirement (as of {doc['today']})")
        return
    table(f"retiring models as of {doc['today']} (warn {doc['warn_days']} days ahead)",
          ["model", "pinned by", "retires", "state", "replacement", "evaluate from"], rows)


def which(doc: WhichDocument) -> None:
    """What served at a time."""
    commit, e = doc["commit"], doc["event"]
    if commit is None:
        line(f"{doc['name']} at {doc['at']}: nothing served yet (its first event is {doc['first_event']})")
        return
    assert e is not None  # history.which names the event with the commit
    line(f"{doc['name']}" + (f" route {doc['route']}" if doc.get("route") else "") + f" at {doc['at']}:")
    live = doc["canary"]
    share = live["percent"] if live else 0
    active_pct = 100 - share if doc["active"] else None
    line(f"  active  {fmt(doc['active'])}" + (f" ({_pct(active_pct)}%)" if doc["active"] else ""))
    line(f"  canary  {fmt(live)}")
    line(f"  shadow  {fmt(doc['shadow'])} (mirrored, never served)" if doc["shadow"] else "  shadow  -")
    if doc.get("key") is not None:
        line(f"  key {doc['key']!r} (bucket {doc['bucket']}) was served by {fmt(doc['served_by'])}"
             + (f" ({doc['role']})" if doc.get("role") else ""))
    why = f", reason: {e['reason']}" if e.get("reason") else ""
    guess = (f", inferred from the deployment diff: {e['action']} {e['version']} (the commit has no modelctl "
             "trailers)") if e.get("inferred") else ""
    say(f"state since {doc['since']}: {e['subject']} by {e['author']} <{e['email']}> "
        f"(commit {commit[:12]}){why}{guess}")


def resolve(doc: ResolveDocument) -> None:
    """The routing document as a table; with a key, just the version that serves it on stdout."""
    if doc.get("key"):
        k = doc["key"]
        line(fmt(k["version"]))
        route = k.get("route")
        canary = ((doc.get("routes") or {}).get(route) or {}).get("canary") if route else doc.get("canary")
        said = f"key {k['key']!r}" + (f" on route {route}" if route else "")
        seg = canary.get("segment") if canary else None
        if seg and k["version"] is not None and k["role"] != "canary":
            inside = k.get("attributes", {}).get(seg["attribute"])
            values = seg["equals"] if "equals" in seg else ", ".join(seg["in"])
            if inside is None or (inside != seg.get("equals") and inside not in seg.get("in", [])):
                say(f"{said}: not in segment {seg['name']} ({seg['attribute']} is "
                    f"{inside if inside is not None else 'not given'}; the segment is {values}) -> active {k['version']}")
                return
        if canary and k["version"] is not None:
            edge = round(canary["percent"] * 100)
            rel = "<" if k["role"] == "canary" else ">="
            say(f"{said}: bucket {k['bucket']} {rel} {edge} -> {k['role']} {k['version']}")
        elif k["version"] is not None:
            say(f"{said}: bucket {k['bucket']}, no canary -> active {k['version']}")
        else:
            say(f"{doc['name']} has no active version yet; nothing serves key {k['key']!r}")
        return
    rows: list[list[Any]] = []
    for role, e in (("active", doc.get("active")), ("canary", doc.get("canary")), ("shadow", doc.get("shadow"))):
        if e:
            model = e["model"]
            rows.append([role, e["version"], f"{_pct(e['percent'])}%",
                         f"{model.get('provider')}/{model.get('id')}" + (f"+{model['adapter']}" if model.get("adapter") else ""),
                         e["prompt"].get("template"), (e["prompt"].get("sha256") or "")[:12]])
    if not rows:
        say(f"{doc['name']} has no active version yet; promote one to active")
        return
    canary = doc.get("canary")
    seg = canary.get("segment") if canary else None
    if seg:  # the canary's percent is a share of this segment only
        rows[1][2] = f"{rows[1][2]} of {seg['name']}"
    table(f"{doc['name']} (commit {doc['commit'][:12]}; shadow traffic is mirrored, never served)",
          ["role", "version", "traffic", "model", "prompt", "sha256"], rows)
    change = doc.get("change")
    if change:
        say(f"last rollback {change['from']} -> {change['to']} changed {change['kind']}"
            + ("" if change["redeploy"] else " (no model to redeploy)"))
    served = doc.get("routes") or {}
    if served:
        route_rows = []
        for name, r in served.items():
            active, canary, fb = r.get("active"), r.get("canary"), r.get("fallback")
            chain = ", ".join(f"{x['provider']}/{x['id']}" + (f"={x['weight']}" if "weight" in x else "")
                              for x in (fb or {}).get("chain", []))
            route_rows.append([name, active["version"] if active else None,
                               f"{canary['version']} at {_pct(canary['percent'])}%" if canary else None,
                               "model" if r.get("follows_model") else "pinned",
                               f"{fb['policy']}: {chain}" if fb else None])
        table(f"{doc['name']} routes", ["route", "active", "canary", "follows", "fallback"], route_rows)


# -- Markdown: the eval gate's comment and the promotion pull request's body -----------------------

def md(text: Any) -> str:
    """Text as one line of Markdown that renders as itself (no markup, no HTML from the user's values)."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)


def _with_n(value: float | None, n: int | None) -> str:
    from .gate import fmt_number  # imported when a gate is rendered, not by every command

    return fmt_number(value) + (f" (n={n})" if n is not None else "")


def _candidate_name(result: GateResult) -> str:
    c = result.candidate
    return " ".join(x for x in (c.get("name"), c.get("version")) if x) or "candidate"


def gate_markdown(result: GateResult) -> str:
    """A pull-request comment: headline, per-metric table, and the reasons for failures."""
    from .gate import fmt_change, fmt_number, fmt_p

    mark, word = ("✅", "passed") if result.passed else ("❌", "failed")
    b = result.baseline
    base = " ".join(x for x in (b.get("name"), b.get("version")) if x) or "baseline"
    if result.baseline.get("version") is None and result.note:
        compared = (f"No baseline: {md(result.note)}. Dataset {md(result.dataset['name'])} version "
                    f"{md(result.dataset['version'])}.")
    else:
        compared = (f"Compared with {md(base)} on dataset {md(result.dataset['name'])} version "
                    f"{md(result.dataset['version'])} (alpha {fmt_number(result.alpha)}).")
    lines = [f"### {mark} Eval gate {word}: {md(_candidate_name(result))}", "", compared, ""]
    if not result.rows:
        lines.append("No metrics are configured under `gate.metrics` in modelctl.yaml.")
        return "\n".join(lines) + "\n"
    lines += [
        "| Metric | Baseline | Candidate | Change | Rule | p | Verdict |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for row in result.rows:
        verdict = "pass" if row.passed else "**fail**"
        lines.append(
            f"| {md(row.metric)} | {md(_with_n(row.baseline, row.n_baseline))} "
            f"| {md(_with_n(row.candidate, row.n_candidate))} | {md(fmt_change(row))} "
            f"| {md(row.rule)} | {md(fmt_p(row.p_value))} | {verdict} |"
        )
    failed = [row for row in result.rows if not row.passed]
    if failed:
        lines += ["", "**Failed:**", ""]
        lines += [f"- {md(row.metric)}: {md(row.reason)}" for row in failed]
    return "\n".join(lines) + "\n"


def fence(text: str, lang: str = "") -> str:
    """A code block whose fence no backtick run inside `text` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _val(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and set(value) >= {"version", "percent"}:
        return f"{value['version']} at {value['percent']}%"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def pull_request_markdown(doc: Mapping[str, Any]) -> str:
    """The pull-request body (pure): what changes, against what, and the gate's answer."""
    name, version = doc.get("name"), doc.get("version")
    lines = [f"## {md(doc['subject'])}", ""]
    base = doc.get("base")
    lines.append(f"Branch `{md(doc['branch'])}`" + (f" into `{md(base)}`" if base else "")
                 + f", commit `{doc['commit'][:12]}`. Made by `modelctl`; review it like any other change.")
    lines.append("")
    if doc.get("state"):
        b, a = doc["state"]["before"], doc["state"]["after"]
        lines += ["### State change", "",
                  f"{md(name)} {md(version)}: **{md(b['status'] or 'new')}** → **{md(a['status'] or '-')}**", "",
                  "| | before | after |", "| --- | --- | --- |"]
        for key in ("active", "previous", "canary", "shadow", "hold"):
            if b[key] != a[key] or key in ("active",):
                mark = "" if b[key] == a[key] else " (changed)"
                lines.append(f"| {key} | {md(_val(b[key]))} | {md(_val(a[key]))}{mark} |")
        lines.append("")
        if doc.get("deployment_diff"):
            lines += [f"<details><summary>deployments/{md(name)}.yaml</summary>", "",
                      fence(doc["deployment_diff"], "diff"), "", "</details>", ""]
    if doc.get("files"):
        lines += ["Files: " + ", ".join(f"`{md(f['path'])}` ({md(f['status'])})" for f in doc["files"]), ""]
    if doc.get("state") is not None:
        lines += ["### Bundle against the serving version", ""]
        diff = doc.get("bundle_diff")
        serving = doc.get("serving")
        if diff is None:
            lines.append(f"Nothing serves {md(name)} yet: {md(version)} is its first version." if not serving
                         else f"{md(version)} is the serving version itself.")
        elif not diff["changed"]:
            lines.append(f"{md(version)} does not differ from the serving {md(serving)}.")
        else:
            what = ", ".join(diff["changed"]) + (f" (a {diff['semver']} change)" if diff.get("semver") else "")
            lines += [f"{md(version)} against the serving {md(serving)}: {md(what)} changed.", "",
                      f"| field | {md(serving)} (serving) | {md(version)} |", "| --- | --- | --- |"]
            for section in diff["changed"]:
                for row in diff["fields"][section]:
                    lines.append(f"| {md(row['field'])} | {md(_val(row['from']))} | {md(_val(row['to']))} |")
        lines.append("")
    g = doc.get("gate")
    if g is not None:
        lines += ["### Eval gate", ""]
        if not g["applies"]:
            lines.append(md(g["reason"]) + ".")
        else:
            for key, value in g.get("recorded", {}).items():
                lines.append(f"Recorded in the commit: `{md(key)}: {md(value)}`")
                lines.append("")
            if g["result"] is not None:
                from .gate import GateResult

                body = gate_markdown(GateResult.from_dict(g["result"]))
                lines.append(body.replace("### ", "#### ", 1).rstrip())
            else:
                lines.append(f"The gate could not run: {md(g['error'])}.")
        lines.append("")
    trailer_text = "\n".join(f"{k}: {v}" for k, v in doc.get("trailers", []))
    if trailer_text:
        lines += ["<details><summary>Commit trailers</summary>", "", fence(trailer_text), "", "</details>", ""]
    lines += ["### After merging", "",
              "Tags cannot be made on a review branch. Once this is merged, run `modelctl doctor --fix` on "
              + (f"`{md(base)}`" if base else "the base branch")
              + " (the registry's CI workflow does this on every push) to create the registration and stage "
              "tags that GTO and `modelctl log` read.", ""]
    return "\n".join(lines)


# -- JUnit XML: the one writer, for the eval gate and for check ---------------------------------------

# XML 1.0 forbids most control characters even when escaped; drop them.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: Any) -> str:
    return _XML_BAD.sub("", str(text))


def junit(name: str, suite_name: str, properties: list[tuple[str, str]],
          cases: list[tuple[str, str, str | None, str]], *, failure_type: str) -> str:
    """A JUnit XML report with one suite: cases are (classname, name, failure message or None, text);
    a failed case carries its text in <failure>, a passing one in <system-out>."""
    import xml.etree.ElementTree as ET

    failures = str(sum(1 for case in cases if case[2] is not None))
    tests = str(len(cases))
    suites = ET.Element("testsuites", name=_x(name), tests=tests, failures=failures, errors="0")
    suite = ET.SubElement(suites, "testsuite", name=_x(suite_name), tests=tests, failures=failures, errors="0",
                          skipped="0")
    props = ET.SubElement(suite, "properties")
    for key, value in properties:
        ET.SubElement(props, "property", name=key, value=_x(value))
    for classname, case_name, failed, text in cases:
        case = ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(case_name), time="0")
        if failed is not None:
            failure = ET.SubElement(case, "failure", message=_x(failed), type=failure_type)
            failure.text = _x(text)
        else:
            ET.SubElement(case, "system-out").text = _x(text)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def gate_junit(result: GateResult) -> str:
    """The eval gate as JUnit XML: one testcase per metric, a failure for each failed metric."""
    from .gate import fmt_change, fmt_number, fmt_p

    props = [("dataset", f"{result.dataset['name']} version {result.dataset['version']}"),
             ("baseline", " ".join(x for x in (result.baseline["name"], result.baseline["version"]) if x)),
             ("alpha", fmt_number(result.alpha))]
    if result.note:
        props.append(("note", result.note))
    classname = f"modelctl.gate.{result.candidate.get('name') or 'candidate'}"
    cases = []
    for row in result.rows:
        detail = (f"baseline {_with_n(row.baseline, row.n_baseline)}, candidate "
                  f"{_with_n(row.candidate, row.n_candidate)}, change {fmt_change(row)}, rule {row.rule}, "
                  f"p {fmt_p(row.p_value)}: {row.reason}")
        cases.append((classname, row.metric, None if row.passed else row.reason, detail))
    return junit("modelctl gate", f"gate {_candidate_name(result)}", props, cases, failure_type="gate")
