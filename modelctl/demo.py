"""`modelctl demo`: build a registry and walk through modelctl with the real commands."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT_V1 = "You are a support agent for Acme. Answer briefly and cite the help centre.\n"
PROMPT_V2 = "You are a support agent for Acme. Answer in at most three sentences; cite the help centre.\n"


def _bundle(version: str, parent: str | None, prompt: str, error_rate: float, temperature: float = 0.3) -> str:
    lines = [
        "apiVersion: modelctl/v1",
        "kind: Bundle",
        "name: support-agent",
        f'version: "{version}"',
        *([f'parent: "{parent}"'] if parent else []),
        "model:",
        "  provider: openai",
        "  id: gpt-4.1-mini-2025-04-14",
        "prompt:",
        f"  template: {prompt}",
        "config:                 # inference config, recorded as given",
        f"  temperature: {temperature}",
        "  max_tokens: 1024",
        "baseline:               # production figures this version is judged against",
        f"  error_rate: {error_rate}",
        "  latency_p95_ms: 890",
        "  cost_per_request: 0.0012",
        "  requests: 12500",
        "fallbacks:",
        "  - {provider: anthropic, id: claude-sonnet-4-5-20250929}",
    ]
    return "\n".join(lines) + "\n"


class Demo:
    """Runs modelctl as a user would, printing each command and its output."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.step = 0

    def at(self, when: str) -> None:
        """Date the next commits (a story over two weeks rather than two seconds)."""
        self.env["GIT_AUTHOR_DATE"] = self.env["GIT_COMMITTER_DATE"] = when

    def title(self, text: str) -> None:
        self.step += 1
        print(f"\n== {self.step}. {text}", flush=True)

    def run(self, *args: str, cwd: Path | None = None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        shown = " ".join(shlex.quote(a) for a in args)
        print(f"$ {shown}", flush=True)
        cmd = [sys.executable, "-m", "modelctl", *args[1:]] if args[0] == "modelctl" else list(args)
        proc = subprocess.run(cmd, cwd=cwd or self.workdir, env=self.env, capture_output=True, text=True)
        for text in (proc.stdout, proc.stderr):
            if text.strip():
                print(textwrap.indent(text.rstrip(), "  "), flush=True)
        if proc.returncode not in ok:
            raise SystemExit(f"demo step failed with exit {proc.returncode}: {shown}")
        return proc


def _canary_key(name: str, percent: float) -> str:
    """A routing key that falls inside the canary's share (to show one being served by it)."""
    from .routing import bucket, threshold

    return next(f"user-{i}" for i in range(100_000) if bucket(name, f"user-{i}") < threshold(percent))


def _lifecycle(d: Demo, reg: Path, day: Callable[[float], str]) -> None:
    """The lifecycle over two weeks: first version live, a candidate through shadow and canary, a rollback."""
    m = "support-agent"
    d.title("Serve the first version: staging, then active (shadow and canary are waived: nothing to compare yet)")
    d.at(day(1))
    d.run("modelctl", "promote", m, "1.0.0", "--to", "staging", cwd=reg)
    d.at(day(2))
    d.run("modelctl", "promote", m, "1.0.0", "--to", "active", cwd=reg)
    d.title("The candidate goes through the pipeline; a shadow's daily cost is printed and held to the budget")
    d.at(day(7))
    d.run("modelctl", "promote", m, "1.0.1", "--to", "staging", cwd=reg)
    d.at(day(8))
    d.run("modelctl", "shadow", m, "1.0.1", "--pct", "25", cwd=reg)
    d.title("Canary: 10% of live traffic; what a gateway reads, and where one key goes")
    d.at(day(11))
    d.run("modelctl", "canary", m, "1.0.1", "--pct", "10", cwd=reg)
    key = _canary_key(m, 10)
    d.run("modelctl", "resolve", m, cwd=reg)
    d.run("modelctl", "resolve", m, "--key", key, cwd=reg)
    d.title("A manual rollback with a reason: the canary ends, 1.0.0 keeps serving, 1.0.1 goes on hold")
    d.at(day(13))
    d.run("modelctl", "rollback", m, "--reason", "reviewers found answers too terse", cwd=reg)
    d.title("Automation cannot re-promote what was just pulled (exit 2) without --force --reason")
    d.run("modelctl", "canary", m, "1.0.1", "--pct", "10", cwd=reg, ok=(2,))
    d.title("History, from git alone: every event, and what served a key on a past day")
    d.run("modelctl", "log", m, cwd=reg)
    d.run("modelctl", "which", m, "--at", day(12), "--key", key, cwd=reg)


def _remote(d: Demo, base: Path, reg: Path) -> Path:
    """A bare repository stands in for GitHub; with remote.push every write fetches, checks, pushes atomically."""
    remote = base / "remote.git"
    d.title("Share it: a bare repository stands in for GitHub; remote.push makes every write an atomic push")
    d.run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    d.run("git", "remote", "add", "origin", str(remote), cwd=reg)
    config = reg / "modelctl.yaml"
    config.write_text(config.read_text().replace("  push: false", "  push: true", 1))
    d.run("git", "commit", "--quiet", "-m", "registry: push every write to origin", "modelctl.yaml", cwd=reg)
    d.run("git", "push", "--quiet", "--set-upstream", "origin", "main", cwd=reg)
    return remote


def _watch(d: Demo, base: Path, reg: Path, remote: Path, day: Callable[[float], str]) -> dict[str, Any]:
    """A second candidate in canary; the embedded endpoint simulates a regression; watch rolls it back."""
    from .demo_metrics import DemoMetrics

    m = "support-agent"
    d.title("A second candidate, 1.0.2 (one config change), through staging, shadow and a 10% canary")
    (base / "support-agent-1.0.2.yaml").write_text(
        _bundle("1.0.2", "1.0.0", "prompts/support/v1.txt", 0.010, temperature=0.2))
    d.at(day(13.2))
    d.run("modelctl", "register", str(base / "support-agent-1.0.2.yaml"), "-m", "cooler sampling", cwd=reg)
    d.at(day(13.4))
    d.run("modelctl", "promote", m, "1.0.2", "--to", "staging", cwd=reg)
    d.at(day(13.6))
    d.run("modelctl", "shadow", m, "1.0.2", "--pct", "25", cwd=reg)
    for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        d.env.pop(var, None)  # from here on, now: watch judges live traffic
    d.run("modelctl", "canary", m, "1.0.2", "--pct", "10", cwd=reg)
    regress_after = 3.0
    with DemoMetrics(m, rps=3000) as metrics:
        metrics.set("1.0.0", share=0.9, error_rate=0.01, latency_p95_ms=850, cost_per_request=0.0011)
        metrics.set("1.0.2", share=0.1, error_rate=0.01, latency_p95_ms=860, cost_per_request=0.0011)
        metrics.at(regress_after, "1.0.2", error_rate=0.033)
        regressed_at = time.monotonic() + regress_after
        d.title("watch: an embedded http-json endpoint serves live traffic; 3 s in, the canary's error rate "
                "triples (1% -> 3.3%)")
        result = _stream_watch(d, reg, ["modelctl", "watch", m, "--url", metrics.url, "--interval", "1s",
                                        "--max-duration", "40s"])
        seen = time.monotonic()
    if result is None or result.get("outcome") != "rolled-back":
        raise SystemExit("demo step failed: watch did not roll back the regressed canary")
    print(f"\n  detection to rollback commit (and push): {result['detect_to_commit_seconds']:.2f}s "
          f"after the deciding poll; {seen - regressed_at:.1f}s after the regression began", flush=True)
    d.title("The rollback is an ordinary commit on the remote, with the evidence in its trailers")
    d.run("git", "--git-dir", str(remote), "log", "-1", "--format=%h %an %s%n%(trailers:only,unfold)")
    return result


def _poll_line(doc: dict[str, Any]) -> str:
    """One watch JSON line, condensed for the demo's reader."""
    if doc.get("event") != "poll":
        return str(doc.get("message", ""))
    if doc.get("error"):
        return f"poll {doc['poll']:>2}  no data: {doc['error']}"
    rate = next((r for r in doc["metrics"] if r["metric"] == "error_rate"), None)
    if rate is None or rate["canary"] is None:
        return f"poll {doc['poll']:>2}  waiting for traffic"
    stat = f"llr {rate['value']:+.2f} (fails at {rate['bound']:.2f})" if rate.get("value") is not None else ""
    control = f"{rate['control'] * 100:.2f}% ({rate['control_source']})" if rate.get("control") is not None else "-"
    return (f"poll {doc['poll']:>2}  error_rate canary {rate['canary'] * 100:.2f}% of {rate['canary_n'] or 0:,.0f} "
            f"vs control {control}  {stat}  {rate['verdict']}  -> {doc['action']}")


def _stream_watch(d: Demo, reg: Path, args: list[str]) -> dict[str, Any] | None:
    """Run watch, printing each poll as it happens (condensed from its JSON lines); the result line."""
    print(f"$ {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "modelctl", *args[1:]], cwd=reg, env=d.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None  # both are pipes
    result = None
    for raw in proc.stdout:
        try:
            doc = json.loads(raw)
        except ValueError:
            print(textwrap.indent(raw.rstrip(), "  "), flush=True)
            continue
        if doc.get("event") == "result":
            result = doc
        else:
            print(f"  {_poll_line(doc)}", flush=True)
    err = proc.stderr.read()
    proc.wait()
    if err.strip():
        print(textwrap.indent(err.rstrip(), "  "), flush=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"demo step failed with exit {proc.returncode}: {' '.join(args)}")
    return result


def run(directory: Path | None) -> int:
    """Run the demo; returns the exit code."""
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="modelctl-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    reg = base / "registry"
    env = dict(os.environ)
    env.setdefault("GIT_AUTHOR_NAME", "Demo Engineer")
    env.setdefault("GIT_AUTHOR_EMAIL", "demo@example.com")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    env.pop("MODELCTL_REGISTRY", None)
    env["NO_COLOR"] = "1"
    d = Demo(base, env)
    start = _dt.datetime.now(_dt.UTC).replace(minute=0, second=0, microsecond=0) - _dt.timedelta(days=14)

    def day(n: float) -> str:
        return (start + _dt.timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%SZ")

    d.at(day(0))
    print(f"modelctl demo in {base}")
    d.title("Create a registry (a git repository laid out from the template)")
    d.run("modelctl", "init", str(reg))
    remote = _remote(d, base, reg)
    (reg / "prompts" / "support").mkdir(parents=True, exist_ok=True)
    (reg / "prompts" / "support" / "v1.txt").write_text(PROMPT_V1)
    (reg / "prompts" / "support" / "v2.txt").write_text(PROMPT_V2)
    (base / "support-agent-1.0.0.yaml").write_text(_bundle("1.0.0", None, "prompts/support/v1.txt", 0.010))
    (base / "support-agent-1.0.1.yaml").write_text(_bundle("1.0.1", "1.0.0", "prompts/support/v2.txt", 0.011))
    d.title("Register the first bundle: validated, prompt hashed, committed and tagged")
    d.run("modelctl", "register", str(base / "support-agent-1.0.0.yaml"), cwd=reg)
    d.title("Register a candidate that changes only the prompt (a patch bump)")
    d.run("modelctl", "register", str(base / "support-agent-1.0.1.yaml"), "-m", "shorter answers", cwd=reg)
    d.title("Bad input is refused with one line and exit 2; nothing is written")
    bad = base / "bad.yaml"
    bad.write_text(_bundle("1.1", "1.0.1", "prompts/support/v2.txt", 0.01).replace('version: "1.1"', "version: 1.10")
                   .replace("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini-latest"))
    d.run("modelctl", "register", str(bad), cwd=reg, ok=(2,))
    d.title("What changed between the two versions")
    d.run("modelctl", "diff", "support-agent", "1.0.0", "1.0.1", cwd=reg)
    d.title("What the registry holds")
    d.run("modelctl", "status", cwd=reg)
    d.run("modelctl", "show", "support-agent", cwd=reg)
    d.title("Check every file (what CI runs on pull requests)")
    d.run("modelctl", "check", cwd=reg)
    _lifecycle(d, reg, day)
    watched = _watch(d, base, reg, remote, day)
    d.title("It is all plain git: one commit per action (with trailers, as above), GTO-readable tags")
    d.run("git", "log", "--format=%h %ad %s%d", "--date=short", cwd=reg)
    d.run("git", "tag", "-l", "-n1", cwd=reg)
    d.title("What serves now")
    d.run("modelctl", "status", cwd=reg)
    print(f"\nwatch rolled back canary 1.0.2 and pushed the commit {watched['detect_to_commit_seconds']:.2f}s "
          "after the poll that saw the breach.", flush=True)
    print(f"\nThe registry is in {reg}; explore it with modelctl or git.")
    return 0
