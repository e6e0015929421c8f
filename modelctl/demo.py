"""`modelctl demo`: build a registry and walk through modelctl with the real commands."""
from __future__ import annotations

import datetime as _dt
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROMPT_V1 = "You are a support agent for Acme. Answer briefly and cite the help centre.\n"
PROMPT_V2 = "You are a support agent for Acme. Answer in at most three sentences; cite the help centre.\n"


def _bundle(version: str, parent: str | None, prompt: str, error_rate: float) -> str:
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
        "  temperature: 0.3",
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

    def __init__(self, workdir: Path, env: dict):
        self.workdir = workdir
        self.env = env
        self.step = 0

    def at(self, when: str) -> None:
        """Date the next commits (a story over two weeks rather than two seconds)."""
        self.env["GIT_AUTHOR_DATE"] = self.env["GIT_COMMITTER_DATE"] = when

    def title(self, text: str) -> None:
        self.step += 1
        print(f"\n== {self.step}. {text}", flush=True)

    def run(self, *args: str, cwd: Path | None = None, ok=(0,)) -> subprocess.CompletedProcess:
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


def _lifecycle(d: Demo, reg: Path, day) -> None:
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
    start = _dt.datetime.now(_dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - _dt.timedelta(days=14)

    def day(n: float) -> str:
        return (start + _dt.timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%SZ")

    d.at(day(0))
    print(f"modelctl demo in {base}")
    d.title("Create a registry (a git repository laid out from the template)")
    d.run("modelctl", "init", str(reg))
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
    d.title("It is all plain git: commits with trailers, GTO-readable tags")
    d.run("git", "log", "--format=%h %s%n%(trailers:only,unfold)", cwd=reg)
    d.run("git", "tag", "-l", "-n1", cwd=reg)
    print(f"\nThe registry is in {reg}; explore it with modelctl or git.")
    return 0
