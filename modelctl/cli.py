"""The command line: typer only. Each command parses arguments, calls the library, renders.

Heavy modules (git plumbing, jsonschema, httpx) are imported inside the commands so that
`modelctl --help` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TextIO, TypedDict, TypeVar, cast

import typer

from .errors import EXIT_INTERRUPTED, ModelctlError

if TYPE_CHECKING:  # annotations only: the commands import what they use
    import datetime

    from . import render
    from .documents import TransitionResult
    from .exposition import Server as MetricsServer
    from .exposition import WatchMetrics
    from .notify import Notifier
    from .ops import WriteOptions
    from .registry import Registry
    from .store import Outcome

app = typer.Typer(
    name="modelctl",
    help="A git-backed model registry: validated lifecycle commits, GTO-readable tags, automatic rollback.\n\n"
    "\b\nExample:\n  modelctl init registry && cd registry && modelctl register bundle.yaml",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Globals(TypedDict):
    """What the top-level options set for the command that runs."""

    debug: bool
    registry: Path | None


_state: _Globals = {"debug": False, "registry": None}
_default_showwarning = warnings.showwarning
_notes_shown: set[str] = set()

JSON_HELP = 'Print one JSON document (stable keys, "schema": "modelctl/v1").'
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Skip a required stage, release a hold or exceed a budget; needs --reason (all on record)."
    ),
]
ReasonOpt = Annotated[
    str | None,
    typer.Option(
        "--reason", help="Why: one line, recorded in the commit trailers and tag messages.", show_default=False
    ),
]
RouteOpt = Annotated[
    str | None,
    typer.Option("--route", help="Apply to this declared route (feature) only; see `modelctl route`.",
                 show_default=False),
]
REGISTRY_HELP = "Registry directory (default: the git work tree around the current directory)."


P = ParamSpec("P")
R = TypeVar("R")


def funnel(fn: Callable[P, R]) -> Callable[P, R]:
    """The one place errors become `error: ...` on stderr and an exit code (DESIGN §7)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _check_arguments(kwargs)
            return fn(*args, **kwargs)
        except ModelctlError as exc:
            if _state["debug"]:
                import traceback

                traceback.print_exc()
            sys.stderr.write(f"error: {_redacted(str(exc))}\n")
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # the reader went away (`modelctl log NAME | head -1`): not an error, and a write that
            # already landed stays landed and answers 0
            _stdout_gone()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a bug: still one line unless --debug
            if _state["debug"]:
                raise
            sys.stderr.write(
                f"error: internal error: {type(exc).__name__}: {_redacted(' '.join(str(exc).split()))} "
                "(run with --debug for a traceback)\n"
            )
            raise typer.Exit(4) from None

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"modelctl {__version__}\n")
        raise typer.Exit(0)


def _redacted(text: str) -> str:
    """The last line of defence: no message reaches the terminal with a key in it."""
    from .secrets import redact_text

    return redact_text(text)


def _check_arguments(kwargs: Mapping[str, object]) -> None:
    """Refuse what no command can use, before it reaches one: text that is not UTF-8 (surrogate
    escapes from argv) and numbers that are not finite (`--cost-per-request nan` compares false
    with every budget)."""
    import math

    from .errors import UsageError

    for key, value in kwargs.items():
        option = "--" + key.replace("_", "-")
        if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
            raise UsageError(f"{option} is not valid UTF-8 text", hint="pass it as UTF-8")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{option} must be a finite number (got {value})", hint="pass a number such as 0.002")


@app.callback()
def _main(
    registry: Annotated[
        Path | None,
        typer.Option("--registry", "-C", help=REGISTRY_HELP, show_default=False, envvar="MODELCTL_REGISTRY"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    """modelctl: a git-backed model registry."""
    _state["debug"] = debug
    _state["registry"] = registry


def _registry() -> Registry:
    from .registry import Registry

    return Registry(_state["registry"])


def _write_opts(push: bool | None, branch: str | None = None, pr_body: Path | None = None) -> WriteOptions:
    from .ops import WriteOptions

    if pr_body is not None:
        _check_output_path(pr_body, "--pr-body", needs=("--branch", branch))
    return WriteOptions(push=push, branch=branch)


PushOpt = Annotated[
    bool | None,
    typer.Option(
        "--push/--no-push",
        help="Push atomically to the remote (default: modelctl.yaml remote.push).",
        show_default=False,
    ),
]
BranchOpt = Annotated[
    str | None,
    typer.Option(
        "--branch", help="Put the commit on this new branch for review instead (no tags).", show_default=False
    ),
]
PrBodyOpt = Annotated[
    Path | None,
    typer.Option(
        "--pr-body",
        help="With --branch: write the pull-request body to this file instead of stdout.",
        show_default=False,
    ),
]


# -- foundation ------------------------------------------------------------------------------


@app.command()
@funnel
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the registry in (new or empty).")] = Path("."),
    json_out: JsonOpt = False,
) -> None:
    """Create a registry: a git repository laid out from the template, with a first commit.

    \b
    Example:
      modelctl init ./model-registry
    """
    from . import ops, render

    result = ops.init(directory)
    if json_out:
        render.emit_json(result)
    else:
        render.line(f"initialised registry in {result['path']} (commit {result['commit'][:12]})")
        render.say("next: write a bundle file and run 'modelctl register FILE'")


@app.command()
@funnel
def register(
    file: Annotated[Path, typer.Argument(help="Bundle YAML file to register.")],
    bump: Annotated[
        str | None,
        typer.Option("--bump", help="Compute the version from the parent: major, minor or patch.", show_default=False),
    ] = None,
    allow_multi_change: Annotated[
        bool,
        typer.Option(
            "--allow-multi-change", help="Allow more than one of model, prompt, config to change (on record)."
        ),
    ] = False,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Why: recorded in the commit body.", show_default=False)
    ] = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a bundle and commit it as a new immutable version, tagged NAME@vVERSION.

    With --branch the commit goes on a new branch for review (no tags) and the pull-request
    body is printed.

    \b
    Example:
      modelctl register support-agent-2.4.0.yaml -m "shorter system prompt"
    """
    from . import ops

    reg = _registry()
    out = ops.register(
        reg,
        file,
        bump=bump,
        allow_multi_change=allow_multi_change,
        message=message,
        opts=_write_opts(push, branch, pr_body),
    )
    r = out.result
    assert isinstance(r, dict)  # ops.register's RegisterResult, also when nothing was written
    _after_write(
        reg, out, "registered", f"{r['name']} {r['version']}", branch=branch, json_out=json_out, pr_body=pr_body
    )


@app.command()
@funnel
def status(
    name: Annotated[str | None, typer.Argument(help="Only this model.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """What serves: every model's active version, canary and percent, shadow, newest registered.

    \b
    Example:
      modelctl status --json
    """
    from . import render

    doc = _registry().status(name)
    render.emit_json(doc) if json_out else render.status(doc)


@app.command()
@funnel
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION (one bundle).")],
    json_out: JsonOpt = False,
) -> None:
    """A model's versions with status, model id, prompt hash and who registered them; or one bundle.

    \b
    Example:
      modelctl show support-agent@2.4.0
    """
    from . import render
    from .names import parse_ref

    name, version = parse_ref(ref)
    doc = _registry().show(name, version)
    render.emit_json(doc) if json_out else render.show(doc)


@app.command()
@funnel
def diff(
    name: Annotated[str, typer.Argument(help="Model name.")],
    v1: Annotated[str, typer.Argument(help="From version.")],
    v2: Annotated[str, typer.Argument(help="To version.")],
    json_out: JsonOpt = False,
) -> None:
    """Which of model, prompt, config, data and baseline changed between two versions, field by field.

    \b
    Example:
      modelctl diff support-agent 2.3.1 2.4.0
    """
    from . import render
    from .names import check_name, check_version

    doc = _registry().diff(check_name(name), check_version(v1), check_version(v2))
    render.emit_json(doc) if json_out else render.diff(doc)


@app.command()
@funnel
def check(
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="Output: text, json, junit, or github (workflow annotations).")
    ] = "text",
    changed_since: Annotated[
        str | None,
        typer.Option(
            "--changed-since",
            metavar="REF",
            show_default=False,
            help="Check only files changed since the merge base with REF "
            "(what a pull request touches), e.g. origin/main.",
        ),
    ] = None,
    staged: Annotated[
        bool,
        typer.Option(
            "--staged", help="Check what the index is about to commit instead of HEAD (what a pre-commit hook needs)."
        ),
    ] = False,
    require_signatures: Annotated[
        bool,
        typer.Option(
            "--require-signatures",
            help="Every commit changing deployments/ or rendered/ (since --changed-since, or since "
            ".modelctl/allowed_signers was added) must be signed by a key listed there at its parent.",
        ),
    ] = False,
) -> None:
    """Check every file against its schema, prompt hashes, bundle immutability, deployment consistency.

    Also: secrets anywhere in the registry (errors, redacted), pinned models past their retirement
    date in deprecations.yaml (errors; warnings within deprecation.warn_days) for bundles on a route
    or changed, and serving bundles without fallbacks (warnings). With --changed-since, every
    commit that changes a deployment file must be a move the commands allow (no version on hold
    served, no required stage skipped, one canary and one shadow, canary.steps, and with
    gate.required a passing eval gate), or record an override with a reason (Modelctl-Force: true
    with Modelctl-Reason, or Modelctl-Gate-Override); each finding names its rule and file:line.
    Exits 1 when it finds an error (each is listed; warnings alone exit 0).

    \b
    Example:
      modelctl check --changed-since origin/main --format github
    """
    from . import checks, render

    fmt = _check_format(fmt, ("text", "json", "junit", "github"), json_out)
    reg = _registry()
    base = checks.merge_base(reg, changed_since) if changed_since is not None else None
    only = checks.changed_paths(reg, base) if base is not None else None
    doc = checks.run(reg, only=only, base=base, today=_today(None), staged=staged,
                     require_signatures=require_signatures)
    if changed_since is not None:
        doc["changed_since"] = changed_since
    if fmt == "json":
        render.emit_json(doc)
    elif fmt == "junit":
        render.line(render.check_junit(doc).rstrip("\n"))
    elif fmt == "github":
        render.check_github(doc)
    else:
        render.check(doc)
    if not doc["ok"]:
        raise typer.Exit(1)


def _today(text: str | None) -> datetime.date:
    """The day retirement dates are judged on: --today, else MODELCTL_TODAY, else today in UTC."""
    from .deprecations import today_from

    return today_from(text, os.environ)


@app.command()
@funnel
def deprecations(
    today: Annotated[
        str | None,
        typer.Option("--today", metavar="YYYY-MM-DD", show_default=False,
                     help="Judge the dates as of this day (default: MODELCTL_TODAY, else today in UTC)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the retiring models that versions on a route pin (as model or fallback): the retirement date,
    the announced replacement, and the day to start evaluating it (retirement minus deprecation.warn_days).

    Dates come from the list shipped with modelctl, extended and overridden by deprecations.yaml.

    \b
    Example:
      modelctl deprecations --json
    """
    from . import checks, render

    doc = checks.retirement_plan(_registry(), _today(today))
    render.emit_json(doc) if json_out else render.deprecations(doc)


@app.command()
@funnel
def demo(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Build the demo registry here (default: a temporary directory).", show_default=False
        ),
    ] = None,
) -> None:
    """Build a registry in a temporary directory and walk through what modelctl does, with the real commands.

    \b
    Example:
      modelctl demo --dir /tmp/modelctl-demo
    """
    from . import demo as demomod

    raise typer.Exit(demomod.run(directory))


# -- remote and repair --------------------------------------------------------------------------


@app.command()
@funnel
def doctor(
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Repair what is safe: stale locks and temporary files, an interrupted "
            "work-tree update, unpushed commits and tags, missing tags.",
        ),
    ] = False,
    push: Annotated[
        bool | None,
        typer.Option(
            "--push/--no-push",
            help="Compare with the remote and push repairs to it (default: modelctl.yaml remote.push).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain what crashes, interrupted writes and merged pull requests left behind; --fix repairs it.

    Checks stale lock files (with their age), leftover temporary files, local commits and tags
    that never reached the remote, and drift between tags and deployment files. Exits 0 when
    clean (or repaired), 1 when problems remain, 4 when the remote cannot be reached.

    \b
    Example:
      modelctl doctor --fix
    """
    from . import doctor as doctormod
    from . import render

    doc = doctormod.run(_registry(), fix=fix, push=push)
    render.emit_json(doc) if json_out else render.doctor(doc)
    if doc["remote"].get("reachable") is False:
        raise typer.Exit(4)
    if not doc["ok"]:
        raise typer.Exit(1)


# -- watch ------------------------------------------------------------------------------------


@app.command()
@funnel
def watch(
    name: Annotated[
        str | None, typer.Argument(help="Model whose live canary (and shadow) to follow.", show_default=False)
    ] = None,
    every: Annotated[
        bool,
        typer.Option("--all", help="Follow every live canary and shadow of the registry in one process (a controller)."),
    ] = False,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval", help="Time between polls: 5, 5s, 2m (default: analysis.interval).", show_default=False
        ),
    ] = None,
    max_duration: Annotated[
        str | None,
        typer.Option(
            "--max-duration",
            help="Stop after this long without a decision, changing nothing (exit 0): 90s, 10m.",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Poll once and exit (cron, CI); failing streaks carry over between runs.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Judge and report but never write (a rollback verdict still exits 1).")
    ] = False,
    advance: Annotated[
        bool,
        typer.Option(
            "--advance",
            help="Step a passing canary through canary.steps (canary.min_step_seconds each), then promote it.",
        ),
    ] = False,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Metrics provider: prometheus or http-json (default: metrics.provider).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Metrics URL (default: metrics.url); a bearer token only comes from metrics.token_env.",
            show_default=False,
        ),
    ] = None,
    push: PushOpt = None,
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            help="Append every poll to this file (JSONL poll record format; 'modelctl replay' reads it).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="When the watch ends, write a self-contained HTML page of the judgement here.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        str | None,
        typer.Option(
            "--metrics-port",
            help="Serve the watch's own Prometheus metrics on PORT (all interfaces) or HOST:PORT, at /metrics "
            "and /healthz.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON line per poll and a final result line (the default when stdout is not a terminal)."
        ),
    ] = False,
) -> None:
    """Follow a model's live canary: poll its metrics, judge them against the live control, roll back on a breach.

    The rollback is the same commit as 'modelctl rollback', with the evidence in Modelctl-Evidence trailers;
    steps and promotions (--advance) carry evidence too and the precondition that the canary is still what
    watch judged (on the remote tip when pushing). Exit 1 after a rollback; 0 with no decision, after
    --advance promoted the canary, or when someone else ended it (naming who); 3 when the canary changed
    underneath a write (nothing written); 4 after the configured number of polls without usable metrics
    (the hold fail-safe: nothing is written). --max-duration is a hard bound, slow endpoints included.

    \b
    Example:
      modelctl watch support-agent --interval 10s --advance --record polls.jsonl
    """
    from . import render
    from . import watch as watchmod
    from .errors import Conflict, MetricsError, UsageError

    if (name is None) == (not every):
        raise UsageError("give a model NAME or --all, not both" if every else "missing model NAME (or --all)",
                         hint="modelctl watch NAME, or modelctl watch --all for every live canary")
    if every and (record is not None or report is not None):
        raise UsageError("--record and --report follow one model; leave them out with --all",
                         hint="run 'modelctl watch NAME --record FILE' for one model")
    for path, option in ((record, "--record"), (report, "--report")):
        if path is not None:
            _check_output_path(path, option)
    reg = _registry()
    options = watchmod.WatchOptions(
        interval=interval,
        max_duration=max_duration,
        once=once,
        dry_run=dry_run,
        advance=advance,
        record=record,
        report=report,
    )
    view = render.WatchView(json_lines=True if json_out else None)
    served = _metrics_server(metrics_port, interval, reg)
    exported = served[0] if served else None
    notifier = _notifier(reg, view, dry_run, exported)

    def on_poll(report: watchmod.PollReport) -> None:
        if served:
            served[0].poll(report)
            served[1].health.beat()
        view.poll(report)

    def on_event(event: watchmod.WatchEvent) -> None:
        if exported is not None:
            exported.event(event, name)
        view.event(event)

    if every:
        _watch_all(reg, options, view, on_poll, on_event, notifier, served, provider, url, push)
        return
    assert name is not None  # checked above
    try:
        watcher = watchmod.Watcher(
            reg,
            name,
            options,
            provider_name=provider,
            url=url,
            on_poll=on_poll,
            on_event=on_event,
            write_options=_write_opts(push),
            notifier=notifier,
        )
        result = watcher.run()
        if exported is not None:
            exported.ended(result)  # before the server stops, so a last scrape can see it
    finally:
        view.close()
        if served:
            served[1].stop()
    view.result(result)
    if result.exit_code == watchmod.EXIT_METRICS:
        raise MetricsError(result.message, hint="check the metrics endpoint; the canary was left as it is")
    if result.exit_code == watchmod.EXIT_CONFLICT:
        raise Conflict(result.message)
    raise typer.Exit(result.exit_code)


def _watch_all(reg: Registry, options: Any, view: Any, on_poll: Any, on_event: Any, notifier: Notifier | None,
               served: tuple[WatchMetrics, MetricsServer] | None, provider: str | None, url: str | None,
               push: bool | None) -> None:
    """watch --all: the controller loop; exit 1 when it rolled something back, else 0."""
    from .controller import Controller

    def on_cycle(report: Any) -> None:
        if served:
            served[1].health.beat()  # the controller is alive even while no canary is live
            served[0].cycle(report)  # its faults and ended watches, counted while /metrics is served

    try:
        result = Controller(reg, options, write_options=_write_opts(push), notifier=notifier, on_poll=on_poll,
                            on_event=on_event, on_cycle=on_cycle, provider_name=provider, url=url).run()
    finally:
        view.close()
        if notifier is not None:
            notifier.drain(notifier.config.deadline + 1.0)
        if served:
            served[1].stop()
    for decision in result.decisions:
        view.result(decision)
    typer.echo(result.message, err=True)
    raise typer.Exit(result.exit_code)


def _metrics_server(port: str | None, interval: str | None,
                    reg: Registry) -> tuple[WatchMetrics, MetricsServer] | None:
    """--metrics-port: the watch's own /metrics and /healthz (healthy while polls keep completing)."""
    if port is None:
        return None
    from . import exposition
    from .errors import UsageError
    from .watch import parse_duration

    try:
        host, number = exposition.parse_port(port)
    except ValueError as exc:
        raise UsageError(f"--metrics-port: {exc}", hint="give a port such as 9109, or 127.0.0.1:9109") from None
    every = parse_duration(interval if interval is not None else reg.config().analysis.interval, "interval")
    health = exposition.Health(stale_after=max(60.0, 3 * every + reg.config().metrics.timeout * 2))
    exported = exposition.WatchMetrics()
    try:
        server = exposition.Server(exported.metrics, health, host, number).start()
    except OSError as exc:
        raise UsageError(f"--metrics-port: cannot listen on {host}:{number} ({exc.strerror or exc})",
                         hint="choose a free port") from None
    return exported, server


def _notifier(reg: Registry, view: render.WatchView, dry_run: bool,
              exported: WatchMetrics | None = None) -> Notifier | None:
    """The webhooks of modelctl.yaml, URLs and tokens from the environment (a missing one: exit 2 before polling)."""
    import os

    from . import notify
    from . import watch as watchmod

    settings = notify.settings(reg.config().notifications.as_dict(), os.environ)
    if not settings.webhooks or dry_run:  # a dry run decides nothing worth telling
        return None

    def report(delivery: notify.Delivery) -> None:
        if exported is not None:
            exported.notified(delivery.webhook, delivery.event, delivery.ok)
        view.event(watchmod.WatchEvent("notify", delivery.line()))

    return notify.Notifier(settings, report=report)


@app.command()
@funnel
def replay(
    file: Annotated[
        Path, typer.Argument(help="A poll record (JSONL), as 'watch --record' writes it.", show_default=False)
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Judge with this modelctl.yaml (default: the registry's committed one).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write a self-contained HTML page of every canary's judgement here.", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Judge recorded polls again, canary by canary, with the same code as watch: each decision and its evidence.

    Tune analysis: on past canaries, or re-run a decision for an audit. Reads the poll record format
    (docs/reference.md); a canary stops where watch would have stopped (rollback, or the hold fail-safe).

    \b
    Example:
      modelctl replay polls.jsonl --config modelctl.yaml --report judgement.html
    """
    from . import render
    from . import replay as replaymod
    from .errors import UsageError

    if report is not None:
        _check_output_path(report, "--report")
    # no registry, no prior
    prior: Callable[[str | None, str | None], Mapping[str, Any] | None] = lambda model, version: None  # noqa: E731
    if config is not None:
        try:
            raw = config.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {config}: {exc.strerror or exc}") from None
        from .config import parse

        cfg = parse(raw, str(config))
    else:
        reg = _registry()
        cfg = reg.config()
        prior = replaymod.registry_prior(reg)
    items = replaymod.replay(file, cfg.as_dict(), prior)
    if report is not None:
        from . import report_html

        _write_file(report, report_html.render(replaymod.stories(items), title=f"modelctl replay {file.name}"))
    if json_out:
        render.emit_json({"canaries": [item.to_json() for item in items]})
        return
    for item in items:
        doc = item.to_json()
        where = f" at poll {doc['poll']} of {doc['polls']}" if doc["poll"] else f" after {doc['polls']} polls"
        render.line(
            f"{item.model or '-'} {item.canary} vs {item.control or '-'} ({item.canary_id}): {doc['action']}{where}"
        )
        for line in doc["evidence"]:
            render.line(f"  evidence: {line}")


# -- gate and review --------------------------------------------------------------------------


def _check_format(fmt: str, allowed: tuple[str, ...], json_out: bool) -> str:
    from .errors import UsageError

    if json_out:
        if fmt not in ("json", allowed[0]):
            raise UsageError(f"--json and --format {fmt} disagree", hint="pass one of them")
        return "json"
    if fmt not in allowed:
        raise UsageError(f"invalid --format {fmt!r}", hint="use one of " + ", ".join(allowed))
    return fmt


def _check_output_path(path: Path, option: str, needs: tuple[str, str | None] | None = None) -> None:
    """Refuse an output file that cannot be written, before anything is committed."""
    from .errors import UsageError

    if needs is not None and needs[1] is None:
        raise UsageError(f"{option} needs {needs[0]}", hint=f"add {needs[0]} NAME")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"{option} {path}: directory {path.absolute().parent} does not exist")


def _write_file(path: Path, text: str) -> None:
    """Write a whole file at once (a reader never sees half of it)."""
    tmp = path.absolute().with_name(f".{path.name}.modelctl-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _after_write(
    reg: Registry,
    out: Outcome,
    verb: str,
    detail: str = "",
    *,
    branch: str | None = None,
    json_out: bool = False,
    pr_body: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Report a write. With --branch: the pull-request body on stdout (or in --pr-body FILE, or
    under "pull_request" with --json) and the outcome line on stderr."""
    from . import render, review

    body: str | None = None
    base: str | None = None
    if branch is not None and not out.noop and out.commit:
        remote = reg.config().remote
        base = remote.branch if out.pushed else (reg.store.current_branch() or remote.branch)
        body = render.pull_request_markdown(review.pull_request(reg, out.commit, branch=out.branch, base=base))
        if pr_body is not None:
            try:
                _write_file(pr_body, body)
            except OSError as exc:  # the branch exists by now: never lose the body
                render.say(f"warning: cannot write {pr_body} ({exc.strerror}); the pull-request body follows on stdout")
                pr_body = None
    if json_out:
        doc = render.outcome_json(out, extra)
        if body is not None:
            assert base is not None  # found with the body
            doc["pull_request"] = {
                "branch": out.branch,
                "base": base,
                "body": body,
                "body_file": str(pr_body) if pr_body is not None else None,
            }
        render.emit_json(doc)
        return
    if body is None:
        render.outcome(verb, out, detail)
        return
    if pr_body is not None:
        render.outcome(verb, out, detail)
        render.say(f"pull-request body written to {pr_body}")
    else:
        render.outcome(verb, out, detail, stream="stderr")
        render.line(body.rstrip("\n"))
    where = f"{out.branch} (pushed)" if out.pushed else out.branch
    render.say(
        f"next: open a pull request from {where} into {base}; after it merges, "
        f"'modelctl doctor --fix' on {base} creates the tags"
    )


@app.command()
@funnel
def gate(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Candidate version.")],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Candidate eval report file (default: eval.report of the version's bundle).",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Compare with this version's report (default: the serving version's).",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="Output: table, json, markdown (a PR comment) or junit.")
    ] = "table",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the output to this file instead of stdout.", show_default=False),
    ] = None,
) -> None:
    """Judge a version's eval report against the serving version's, under the gate rules of modelctl.yaml.

    Exit 0 when every metric passes, 1 when one fails, 2 when the reports cannot be compared
    (a report is missing, or they used different dataset versions). A first version (nothing
    serves the model yet) has no baseline: it passes with a note when its report carries every
    configured metric.

    \b
    Example:
      modelctl gate support-agent 2.4.0 --format markdown --output gate.md
    """
    from . import render, review
    from .names import check_name, check_version

    fmt = _check_format(fmt, ("table", "json", "markdown", "junit"), json_out)
    check_name(name), check_version(version)
    if output is not None:
        _check_output_path(output, "--output")
    reg = _registry()
    snap = reg.snapshot()
    result = review.run_gate(reg, snap, reg.config(snap), name, version, report=report, baseline=baseline)
    if fmt == "json":
        text = render.json_text(result.to_dict())
    elif fmt == "markdown":
        text = render.gate_markdown(result)
    elif fmt == "junit":
        text = render.gate_junit(result)
    elif output is not None:
        text = render.gate_text(result)
    else:
        text = None
        render.gate_table(result)
    if text is not None:
        if output is not None:
            _write_file(output, text)
        else:
            render.line(text.rstrip("\n"))
    render.say(render.gate_verdict(result) + (f" (written to {output})" if output is not None else ""))
    if not result.passed:
        raise typer.Exit(1)


# -- lifecycle --------------------------------------------------------------------------------


def _summary(out: Outcome) -> TransitionResult | None:
    """What a lifecycle write did (ops' TransitionResult); None when it did nothing."""
    return None if out.noop or not isinstance(out.result, dict) else cast("TransitionResult", out.result)


def _lifecycle_written(reg: Registry, out: Outcome, json_out: bool, branch: str | None, pr_body: Path | None) -> None:
    from . import render

    r = _summary(out)
    if r and not json_out:
        render.lifecycle_before(r, "stderr" if branch else "stdout")
    verb = r["subject"].removeprefix("modelctl: ") if r else "done"
    _after_write(reg, out, verb, branch=branch, json_out=json_out, pr_body=pr_body)
    if r and not json_out:
        render.lifecycle_after(r)


@app.command()
@funnel
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to move.")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Target: staging, shadow, canary, active, deprecated or archived.", show_default=False
        ),
    ],
    force: ForceOpt = False,
    reason: ReasonOpt = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
    route: RouteOpt = None,
) -> None:
    """Move a version to the next stage of the lifecycle, or retire it; one commit plus GTO tags.

    Promoting to active deprecates the old active version and records it as previous. With
    --route R --to active, only route R is pinned to the version (no GTO tag: see README).

    \b
    Example:
      modelctl promote support-agent 2.4.0 --to staging
    """
    from . import ops

    reg = _registry()
    out = ops.promote(reg, name, version, to, force=force, reason=reason, opts=_write_opts(push, branch, pr_body),
                      route=route)
    _lifecycle_written(reg, out, json_out, branch, pr_body)


@app.command()
@funnel
def shadow(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to mirror traffic to.")],
    pct: Annotated[
        float | None,
        typer.Option("--pct", help="Share of traffic to mirror, in (0, 100] (default 100).", show_default=False),
    ] = None,
    requests_per_day: Annotated[
        float | None,
        typer.Option(
            "--requests-per-day",
            help="Traffic estimate for the cost (default: modelctl.yaml shadow.requests_per_day).",
            show_default=False,
        ),
    ] = None,
    cost_per_request: Annotated[
        float | None,
        typer.Option(
            "--cost-per-request",
            help="USD per call for the cost (default: the bundle's baseline.cost_per_request).",
            show_default=False,
        ),
    ] = None,
    force: ForceOpt = False,
    reason: ReasonOpt = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Mirror traffic to a version (never served), or change the mirrored share; prints the daily cost.

    The cost is requests/day x share x cost per call x 2; above shadow.budget_per_day it is refused
    unless --force --reason.

    \b
    Example:
      modelctl shadow support-agent 2.4.0 --pct 25
    """
    from . import ops

    reg = _registry()
    out = ops.shadow(
        reg,
        name,
        version,
        pct,
        force=force,
        reason=reason,
        requests_per_day=requests_per_day,
        cost_per_request=cost_per_request,
        opts=_write_opts(push, branch, pr_body),
    )
    _lifecycle_written(reg, out, json_out, branch, pr_body)


@app.command()
@funnel
def canary(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to send a share of live traffic to.")],
    pct: Annotated[
        float | None,
        typer.Option(
            "--pct",
            help="Percent of traffic: one of canary.steps in modelctl.yaml (default: the first step).",
            show_default=False,
        ),
    ] = None,
    segment: Annotated[
        str | None,
        typer.Option(
            "--segment",
            help="Serve only callers in this segment (segments.rules in modelctl.yaml); --pct is then a share of "
            "the segment (default 100). A later canary without --segment widens it to everyone.",
            show_default=False,
        ),
    ] = None,
    force: ForceOpt = False,
    reason: ReasonOpt = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
    route: RouteOpt = None,
) -> None:
    """Start a canary at an allowed percent, or move the live canary's percent up or down.

    Without --pct a new canary starts at the first of canary.steps (100 within a --segment); a live
    canary needs --pct. With --route R the canary serves that route only.

    \b
    Example:
      modelctl canary support-agent 2.4.0 --segment internal --pct 50
    """
    from . import ops, render
    from .state import fmt_pct

    reg = _registry()
    out = ops.canary(reg, name, version, pct, force=force, reason=reason, opts=_write_opts(push, branch, pr_body),
                     segment=segment, route=route)
    started = _summary(out)
    if pct is None and started is not None and not json_out:
        first = "of the segment" if segment is not None else "first of canary.steps"
        render.say(f"starting at {fmt_pct(started['percent'])}% ({first}; pass --pct to choose)")
    _lifecycle_written(reg, out, json_out, branch, pr_body)


@app.command()
@funnel
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Version to take out of service: the live canary or the "
            "active version (needed when no canary is live).",
            show_default=False,
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version to serve again (a deprecated one; default: previous).", show_default=False),
    ] = None,
    reason: ReasonOpt = None,
    expect_canary: Annotated[
        str | None,
        typer.Option(
            "--expect-canary",
            help="Only roll back if this version is the live canary "
            "(exit 3 if another one is; exit 0 if it is already rolled back).",
            show_default=False,
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option("--evidence", help="What showed the problem (recorded as a trailer).", show_default=False),
    ] = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
    route: RouteOpt = None,
) -> None:
    """End the live canary, or take the named active version out of service; the pulled version goes on hold.

    Every rollback names what it removes: without a live canary, pass --from ACTIVE (previous serves
    again) or --to VERSION. Re-running a rollback whose version is already out of service is
    "already done" (exit 0). A version on hold is refused by canary and promote unless --force --reason.

    With --route R the version leaves route R only: the model and its other routes keep serving it.

    \b
    Example:
      modelctl rollback support-agent --from 2.4.0 --reason "error rate doubled"
    """
    from . import ops

    reg = _registry()
    out = ops.rollback(
        reg,
        name,
        to=to,
        reason=reason,
        expect_canary=expect_canary,
        evidence=evidence,
        from_=from_,
        opts=_write_opts(push, branch, pr_body),
        route=route,
    )
    _lifecycle_written(reg, out, json_out, branch, pr_body)


def _few(versions: list[str], most: int = 8) -> str:
    """A list of versions for a terminal line: all of a few, or the ends of many (--json has them all)."""
    if len(versions) <= most:
        return ", ".join(versions)
    return f"{', '.join(versions[:3])}, ... ({len(versions) - 6} more), {', '.join(versions[-3:])}"


@app.command()
@funnel
def compat(
    name: Annotated[str | None, typer.Argument(help="Only this model.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Serving and candidate versions against what the platform provides (compatibility needs).

    Each active, canary, shadow and staging version's `compatibility:` block (embedding model and
    version, minimum API version, breaking changes) against `platform:` in modelctl.yaml, at the
    model's default traffic and at each of its routes. Exit 1 when a serving version does not fit.

    \b
    Example:
      modelctl compat support-agent
    """
    from . import render
    from .names import check_name

    doc = _registry().compat(check_name(name) if name else None)
    render.emit_json(doc) if json_out else render.compat(doc)
    if not doc["ok"]:
        raise typer.Exit(1)  # the table (or --json) says which


@app.command()
@funnel
def gc(
    name: Annotated[str | None, typer.Argument(help="Model name (default: every model).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be archived; write nothing.")
    ] = False,
    reason: ReasonOpt = None,
    push: PushOpt = None,
    branch: BranchOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Archive the deprecated versions the retention policy lets go, in one commit plus GTO tags.

    retention.keep_deprecated in modelctl.yaml (default 3) keeps the newest deprecated versions of
    each model warm for `rollback --to`; older ones become archived (final). Bundles are never
    deleted. Refused (exit 2, nothing written) when the policy would archive a rollback target.

    \b
    Example:
      modelctl gc --dry-run
    """
    from . import ops, render

    reg = _registry()
    out = ops.gc(reg, name, reason=reason, dry_run=dry_run, opts=_write_opts(push, branch, None))
    result = out.result if isinstance(out.result, dict) else None
    if dry_run and result is not None and not json_out:
        for model, versions in result["archived"].items():
            render.line(f"would archive {len(versions)} deprecated of {model}: {_few(versions)}")
        return
    if not json_out and result is not None and out.commit:
        for model, versions in result["archived"].items():
            render.say(f"{model}: archived {_few(versions)}")
    _after_write(reg, out, "gc", branch=branch, json_out=json_out)


@app.command("route")
@funnel
def route_cmd(
    name: Annotated[str, typer.Argument(help="Model name.")],
    route: Annotated[str, typer.Argument(help="Route (feature) name: a DNS label such as summarise.")],
    fallback: Annotated[
        list[str] | None,
        typer.Option("--fallback", help="A pinned model to fail over to on this route, provider/id "
                     "(provider/id=WEIGHT with --policy weighted); repeat for a chain.", show_default=False),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="ordered (try the chain in order) or weighted (a per-key order by weight).",
                     show_default=False),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Drop the route's pin and canary: it follows the model again.")
    ] = False,
    push: PushOpt = None,
    branch: BranchOpt = None,
    pr_body: PrBodyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Declare a route of a model (it follows the model), set its fallback chain, or make it follow again.

    Then `canary`, `promote --to active` and `rollback` take --route R to act on that route only.

    \b
    Example:
      modelctl route support-agent summarise --fallback openai/gpt-4.1-2025-04-14
    """
    from . import ops

    reg = _registry()
    out = ops.route(reg, name, route, fallback=fallback, policy=policy, follow=follow,
                    opts=_write_opts(push, branch, pr_body))
    _lifecycle_written(reg, out, json_out, branch, pr_body)


@app.command()
@funnel
def log(
    name: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="Show at most this many events (newest first).", show_default=False),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every event of a model from git history: time, author, action, versions, percent, reason, evidence.

    \b
    Example:
      modelctl log support-agent --limit 20
    """
    from . import render
    from .names import check_name

    doc = _registry().log(check_name(name), limit=limit)
    render.emit_json(doc) if json_out else render.log(doc)


AttrOpt = Annotated[
    list[str] | None,
    typer.Option("--attr", help="A caller attribute NAME=VALUE of the request (repeatable), for a canary limited "
                 "to a segment; without it the request is in no segment.", show_default=False),
]


def _attributes(attr: list[str] | None, key: str | None) -> dict[str, str] | None:
    """--attr options as a mapping (they describe the request of --key, so they need one)."""
    from .errors import UsageError
    from .segments import parse_attributes

    attributes = parse_attributes(attr)
    if attributes and key is None:
        raise UsageError("--attr describes the request of --key", hint="add --key KEY")
    return attributes or None


@app.command()
@funnel
def which(
    name: Annotated[str, typer.Argument(help="Model name.")],
    at: Annotated[
        str, typer.Option("--at", help="ISO 8601 time (no zone means UTC), @UNIX seconds, or now.", show_default=False)
    ],
    key: Annotated[
        str | None,
        typer.Option("--key", help="Routing key (user, session...): which version served it.", show_default=False),
    ] = None,
    attr: AttrOpt = None,
    json_out: JsonOpt = False,
    route: RouteOpt = None,
) -> None:
    """What served a model at a past time: active, canary and percent, shadow, and who last changed it.

    With --route R: what served route R then (the deployment file at the commit live at that time).

    \b
    Example:
      modelctl which support-agent --at 2026-02-14T09:30:00Z --key user-42
    """
    from . import render
    from .names import check_name

    attributes = _attributes(attr, key)
    doc = _registry().which(check_name(name), at, key=key, route=route, attributes=attributes)
    render.emit_json(doc) if json_out else render.which(doc)


@app.command()
@funnel
def resolve(
    name: Annotated[str, typer.Argument(help="Model name.")],
    key: Annotated[
        str | None, typer.Option("--key", help="Routing key: print the version that serves it.", show_default=False)
    ] = None,
    attr: AttrOpt = None,
    json_out: JsonOpt = False,
    route: RouteOpt = None,
) -> None:
    """The routing document a gateway needs: active, canary and shadow with bundles and percents.

    With --key, the version that serves that key (stable hash into 10,000 buckets, see README);
    --attr gives the caller's attributes, which decide a canary limited to a segment;
    with --route R as well, the version that serves it on route R.

    \b
    Example:
      modelctl resolve support-agent --key user-42 --attr tier=internal
    """
    from . import render
    from .names import check_name

    attributes = _attributes(attr, key)
    doc = _registry().resolve(check_name(name), key=key, route=route, attributes=attributes)
    render.emit_json(doc) if json_out else render.resolve(doc)


@app.command("render")
@funnel
def render_cmd(
    name: Annotated[str | None, typer.Argument(help="Model name (default: every served model).")] = None,
    format_: Annotated[
        str, typer.Option("--format", help="configmap (Kubernetes YAML), json (routing documents) or litellm.")
    ] = "configmap",
    write: Annotated[
        bool, typer.Option("--write", help="Commit the rendered files that are out of date (one validated write).")
    ] = False,
    push: PushOpt = None,
    branch: BranchOpt = None,
) -> None:
    """Print what serves, rendered for other pipelines; --write brings rendered/ up to date in one commit.

    The ConfigMaps are the files every write keeps in rendered/ (render: in modelctl.yaml) for
    Argo CD and Flux; only models with an active version are rendered.

    \b
    Example:
      modelctl render support-agent --format json
    """
    from . import manifests, ops, render
    from .errors import NotFound, UsageError
    from .names import check_name

    if format_ not in manifests.FORMATS:
        raise UsageError(f"unknown --format {format_!r}", hint="use configmap, json or litellm")
    if name is not None:
        check_name(name)
    if write and format_ != "configmap":
        raise UsageError("--write writes the configmap rendering only", hint="drop --format, or drop --write")
    if not write and (push is not None or branch is not None):
        raise UsageError("--push and --branch go with --write", hint="add --write, or drop them")
    reg = _registry()
    if write:
        render.outcome("rendered", ops.render_write(reg, name, opts=_write_opts(push, branch)))
        return
    snap = reg.snapshot()
    if name is not None and reg.deployment(name, snap) is None:
        raise NotFound(f"no model named {name!r} in this registry", hint="see 'modelctl status' for the models it has")
    docs = ops.rendered_documents(snap, [name] if name else None)
    if name is not None and not docs:
        raise UsageError(f"nothing serves {name} yet (no active version), so there is nothing to render",
                         hint=f"promote a version of {name} to active first")
    if format_ == "json":
        render.emit_json({"documents": docs})
    elif format_ == "litellm":
        import json

        from .integrations import litellm as litellm_integration  # router_config needs no litellm installed

        # LiteLLM's own shape, not a modelctl/v1 document: no "schema" key added
        sys.stdout.write(json.dumps(litellm_integration.router_config(docs), indent=2, sort_keys=True) + "\n")
    else:
        settings = ops.render_settings(snap)
        files = {settings.path(d["name"]): manifests.configmap(d["name"], d, settings) for d in docs}
        sys.stdout.write(manifests.multi_document(files, settings))


def _show_note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               file: TextIO | None = None, line: str | None = None) -> None:
    # the library signals "using the committed modelctl.yaml / eval report" as a warning; users see a note
    if category.__name__ in ("UncommittedNote", "OperatorWarning"):
        if str(message) not in _notes_shown:  # once per process, however often the file is read
            _notes_shown.add(str(message))
            word = "note" if category.__name__ == "UncommittedNote" else "warning"
            sys.stderr.write(f"{word}: {message}\n")
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def _stdout_gone() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again.

    What the Python documentation recommends for SIGPIPE/EPIPE (library/signal.html, "Note on
    SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _named_command(argv: list[str]) -> list[Any]:
    """The one registered command that argv runs, when it names one; else [] (build them all).

    typer builds the parameters of every command on each run (about 30 ms for fifty commands);
    a run of one command needs only that one. Help, completion, an unknown or mistyped name and
    anything unusual before the name get the whole group, with its listing and suggestions.
    """
    if any(key.startswith("_MODELCTL_COMPLETE") for key in os.environ):
        return []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-C", "--registry"):
            i += 2
        elif arg == "--debug" or arg.startswith("--registry=") or (arg.startswith("-C") and len(arg) > 2):
            i += 1
        else:
            break
    if i >= len(argv) or argv[i].startswith("-"):
        return []
    from typer.main import get_command_name

    return [info for info in app.registered_commands if info.callback is not None
            and (info.name or get_command_name(info.callback.__name__)) == argv[i]]


def main() -> None:
    """Console entry point."""
    if os.environ.get("MODELCTL_DEBUG"):
        _state["debug"] = True
    global _default_showwarning
    _default_showwarning = warnings.showwarning
    warnings.showwarning = _show_note
    code: str | int | None = 0
    every = app.registered_commands
    app.registered_commands = _named_command(sys.argv[1:]) or every
    try:
        app(prog_name="modelctl")
    except SystemExit as exc:
        code = exc.code
    except BrokenPipeError:  # outside any command (help text, usage errors)
        code = 0
    finally:
        app.registered_commands = every
    try:
        sys.stdout.flush()  # piped stdout is block-buffered: the last lines leave here
    except BrokenPipeError:
        _stdout_gone()
    except (OSError, ValueError):
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
