"""`modelctl demo`: build a registry and walk through modelctl with the real commands."""
from __future__ import annotations

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
    d.title("It is all plain git: commits with trailers, GTO-readable tags")
    d.run("git", "log", "--format=%h %s%n%(trailers:only,unfold)", cwd=reg)
    d.run("git", "tag", "-l", "-n1", cwd=reg)
    print(f"\nThe registry is in {reg}; explore it with modelctl or git.")
    return 0
