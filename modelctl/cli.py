"""The command line: typer only. Each command parses arguments, calls the library, renders.

Heavy modules (git plumbing, jsonschema, httpx) are imported inside the commands so that
`modelctl --help` starts fast.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import EXIT_INTERRUPTED, ModelctlError

app = typer.Typer(
    name="modelctl",
    help="A git-backed model registry: validated lifecycle commits, GTO-readable tags, automatic rollback.\n\n"
         "Example: modelctl init registry && cd registry && modelctl register bundle.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False, "registry": None}

JSON_HELP = "Print one JSON document (stable keys, \"schema\": \"modelctl/v1\")."
REGISTRY_HELP = "Registry directory (default: the git work tree around the current directory)."


def funnel(fn):
    """The one place errors become `error: ...` on stderr and an exit code (DESIGN §7)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ModelctlError as exc:
            if _state["debug"]:
                import traceback

                traceback.print_exc()
            sys.stderr.write(f"error: {exc}\n")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a bug: still one line unless --debug
            if _state["debug"]:
                raise
            sys.stderr.write(f"error: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                             "(run with --debug for a traceback)\n")
            raise typer.Exit(4) from None

    return wrapper


@app.callback()
def _main(
    registry: Optional[Path] = typer.Option(None, "--registry", "-C", help=REGISTRY_HELP, show_default=False),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
):
    """modelctl: a git-backed model registry."""
    _state["debug"] = debug
    _state["registry"] = registry


def _registry():
    from .registry import Registry

    return Registry(_state["registry"])


def _write_opts(push: Optional[bool], branch: Optional[str] = None):
    from .ops import WriteOptions

    return WriteOptions(push=push, branch=branch)


PUSH_OPT = typer.Option(None, "--push/--no-push", help="Push atomically to the remote (default: modelctl.yaml remote.push).",
                        show_default=False)
BRANCH_OPT = typer.Option(None, "--branch", help="Put the commit on this new branch for review instead (no tags).",
                          show_default=False)


# -- foundation ------------------------------------------------------------------------------

@app.command()
@funnel
def init(
    directory: Path = typer.Argument(Path("."), help="Directory to create the registry in (new or empty)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Create a registry: a git repository laid out from the template, with a first commit.

    Example: modelctl init ./model-registry
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
    file: Path = typer.Argument(..., help="Bundle YAML file to register."),
    bump: Optional[str] = typer.Option(None, "--bump", help="Compute the version from the parent: major, minor or patch.",
                                       show_default=False),
    allow_multi_change: bool = typer.Option(False, "--allow-multi-change",
                                            help="Allow more than one of model, prompt, config to change (on record)."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Why: recorded in the commit body.",
                                          show_default=False),
    push: Optional[bool] = PUSH_OPT,
    branch: Optional[str] = BRANCH_OPT,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Validate a bundle and commit it as a new immutable version, tagged NAME@vVERSION.

    Example: modelctl register support-agent-2.4.0.yaml --message "shorter system prompt"
    """
    from . import ops, render

    reg = _registry()
    out = ops.register(reg, file, bump=bump, allow_multi_change=allow_multi_change, message=message,
                       opts=_write_opts(push, branch))
    if json_out:
        render.emit_json(render.outcome_json(out))
    else:
        r = out.result
        render.outcome("registered", out, f"{r['name']} {r['version']}")


@app.command()
@funnel
def status(
    name: Optional[str] = typer.Argument(None, help="Only this model.", show_default=False),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """What serves: every model's active version, canary and percent, shadow, newest registered.

    Example: modelctl status --json
    """
    from . import render

    doc = _registry().status(name)
    render.emit_json(doc) if json_out else render.status(doc)


@app.command()
@funnel
def show(
    ref: str = typer.Argument(..., help="NAME (all versions) or NAME@VERSION (one bundle)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """A model's versions with status, model id, prompt hash and who registered them; or one bundle.

    Example: modelctl show support-agent@2.4.0
    """
    from . import render
    from .names import parse_ref

    name, version = parse_ref(ref)
    doc = _registry().show(name, version)
    render.emit_json(doc) if json_out else render.show(doc)


@app.command()
@funnel
def diff(
    name: str = typer.Argument(..., help="Model name."),
    v1: str = typer.Argument(..., help="From version."),
    v2: str = typer.Argument(..., help="To version."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Which of model, prompt, config, data and baseline changed between two versions, field by field.

    Example: modelctl diff support-agent 2.3.1 2.4.0
    """
    from . import render
    from .names import check_name, check_version

    doc = _registry().diff(check_name(name), check_version(v1), check_version(v2))
    render.emit_json(doc) if json_out else render.diff(doc)


@app.command()
@funnel
def check(
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Check every file against its schema, prompt hashes, bundle immutability, deployment consistency.

    Exits 1 when it finds a problem (each is listed). Example: modelctl check
    """
    from . import checks, render

    doc = checks.run(_registry())
    render.emit_json(doc) if json_out else render.check(doc)
    if not doc["ok"]:
        raise typer.Exit(1)


@app.command()
@funnel
def demo(
    directory: Optional[Path] = typer.Option(None, "--dir", help="Build the demo registry here (default: a temporary directory).",
                                             show_default=False),
):
    """Build a registry in a temporary directory and walk through what modelctl does, with the real commands.

    Example: modelctl demo --dir /tmp/modelctl-demo
    """
    from . import demo as demomod

    raise typer.Exit(demomod.run(directory))


# -- remote and repair --------------------------------------------------------------------------

@app.command()
@funnel
def doctor(
    fix: bool = typer.Option(False, "--fix", help="Repair what is safe: stale locks and temporary files, an interrupted "
                                                  "work-tree update, unpushed commits and tags, missing tags."),
    push: Optional[bool] = typer.Option(None, "--push/--no-push", help="Compare with the remote and push repairs to it "
                                        "(default: modelctl.yaml remote.push).", show_default=False),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Explain what crashes, interrupted writes and merged pull requests left behind; --fix repairs it.

    Checks stale lock files (with their age), leftover temporary files, local commits and tags
    that never reached the remote, and drift between tags and deployment files. Exits 0 when
    clean (or repaired), 1 when problems remain, 4 when the remote cannot be reached.

    Example: modelctl doctor --fix
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
    name: str = typer.Argument(..., help="Model whose live canary (and shadow) to follow."),
    interval: Optional[str] = typer.Option(None, "--interval", help="Time between polls: 5, 5s, 2m (default: analysis.interval).",
                                           show_default=False),
    max_duration: Optional[str] = typer.Option(None, "--max-duration",
                                               help="Stop after this long without a decision, changing nothing (exit 0): 90s, 10m.",
                                               show_default=False),
    once: bool = typer.Option(False, "--once", help="Poll once and exit (cron, CI); failing streaks carry over between runs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Judge and report but never write (a rollback verdict still exits 1)."),
    advance: bool = typer.Option(False, "--advance",
                                 help="Step a passing canary through canary.steps (canary.min_step_seconds each), then promote it."),
    provider: Optional[str] = typer.Option(None, "--provider", help="Metrics provider: prometheus or http-json (default: metrics.provider).",
                                           show_default=False),
    url: Optional[str] = typer.Option(None, "--url", help="Metrics URL (default: metrics.url); a bearer token only comes from metrics.token_env.",
                                      show_default=False),
    push: Optional[bool] = PUSH_OPT,
    json_out: bool = typer.Option(False, "--json", help="One JSON line per poll and a final result line (the default when stdout is not a terminal)."),
):
    """Follow a model's live canary: poll its metrics, judge them against the baseline, roll back on a breach.

    The rollback is the same commit as 'modelctl rollback', with the evidence in Modelctl-Evidence trailers.
    Exit 1 after a rollback; 0 with no decision, after --advance promoted the canary, or when someone else
    ended it; 3 when the canary changed underneath the rollback; 4 after the configured number of polls
    without usable metrics (the hold fail-safe: nothing is written).

    Example: modelctl watch support-agent --interval 10s --max-duration 30m --advance
    """
    from . import render
    from . import watch as watchmod
    from .errors import MetricsError

    reg = _registry()
    options = watchmod.WatchOptions(interval=interval, max_duration=max_duration, once=once, dry_run=dry_run,
                                    advance=advance)
    view = render.WatchView(json_lines=True if json_out else None)
    try:
        watcher = watchmod.Watcher(reg, name, options, provider_name=provider, url=url, on_poll=view.poll,
                                   on_event=view.event, write_options=_write_opts(push))
        result = watcher.run()
    finally:
        view.close()
    view.result(result)
    if result.exit_code == watchmod.EXIT_METRICS:
        raise MetricsError(result.message, hint="check the metrics endpoint; the canary was left as it is")
    raise typer.Exit(result.exit_code)


def main() -> None:
    """Console entry point."""
    if os.environ.get("MODELCTL_DEBUG"):
        _state["debug"] = True
    app(prog_name="modelctl")


if __name__ == "__main__":
    main()
