"""How modelctl's everyday commands scale with the size of the registry.

Builds registries of N models x 10 versions with `git fast-import` (one process, not thousands
of CLI calls: bundles, deployment files and annotated registration tags), then times
`modelctl --help`, `status`, `show NAME` and `register` as a user runs them (a fresh process each
time, median of several runs), next to bare Python start-up on this machine.

    python benchmarks/scale.py               # 2,000 models (and 20 for comparison)
    python benchmarks/scale.py --models 500

Goals (2-core machine): --help <= 0.15 s, show <= 0.3 s and register <= 1 s whatever the number
of other models, status of 2,000 models <= 2 s.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastimport import FastImport, head

ROOT = Path(__file__).resolve().parent.parent
PROMPT = b"You are a helpful assistant.\n"
# PYTHONDONTWRITEBYTECODE dropped: an installed modelctl has its bytecode compiled (pip does it)
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
       "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com", "NO_COLOR": "1",
       "PYTHONPATH": str(ROOT)}


def bundle(name: str, version: str, parent: str | None, temperature: float) -> bytes:
    sha = hashlib.sha256(PROMPT).hexdigest()
    parent_line = f'parent: "{parent}"\n' if parent else ""
    return (f'apiVersion: modelctl/v1\nkind: Bundle\nname: {name}\nversion: "{version}"\n{parent_line}'
            f"model:\n  provider: openai\n  id: gpt-4.1-mini-2025-04-14\nprompt:\n  template: prompts/p.txt\n"
            f'  sha256: "{sha}"\nconfig:\n  temperature: {temperature}\nbaseline:\n  error_rate: 0.01\n'
            f"  latency_p95_ms: 890\n  cost_per_request: 0.0012\n  requests: 12500\n").encode()


def deployment(name: str, versions: list[str]) -> bytes:
    lines = [f'  "{v}": {"active" if v == versions[-2] else ("canary" if v == versions[-1] else "deprecated")}'
             for v in versions]
    return (f"apiVersion: modelctl/v1\nkind: Deployment\nname: {name}\nactive: \"{versions[-2]}\"\n"
            f"previous: \"{versions[-3]}\"\ncanary: {{version: \"{versions[-1]}\", percent: 5}}\nshadow: null\n"
            "versions:\n" + "\n".join(lines) + "\nhold: null\n").encode()


def build(path: Path, models: int, versions: int = 10) -> None:
    """Create a registry with `models` x `versions` bundles, their tags and deployment files."""
    subprocess.run([sys.executable, "-m", "modelctl", "init", str(path)], env=ENV, check=True,
                   capture_output=True)
    fi = FastImport(head(path))
    when = 1_700_000_000
    prompt_mark = fi.blob(PROMPT)
    commit_marks = []
    vers = [f"1.{i}.0" for i in range(versions)]
    for m in range(models):
        name = f"model-{m:05d}"
        files = [(f"bundles/{name}/{v}.yaml", fi.blob(bundle(name, v, vers[i - 1] if i else None, 0.1 + i / 100)))
                 for i, v in enumerate(vers)]
        files.append((f"deployments/{name}.yaml", fi.blob(deployment(name, vers))))
        if m == 0:
            files.append(("prompts/p.txt", prompt_mark))
        commit_marks.append((name, fi.commit(f"register {name} (benchmark)", files, when)))
        when += 1
    for name, cm in commit_marks:
        for v in vers:
            fi.tag(f"{name}@v{v}", cm, f"modelctl: register {name} {v}", when)
            when += 1
    fi.run(path)


def timed(args: list[str], cwd: Path, runs: int = 5, setup=None) -> float:
    """Median wall time of a fresh process running args."""
    samples = []
    for i in range(runs):
        if setup:
            setup(i)
        t = time.perf_counter()
        proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True)
        samples.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{args} failed: {proc.stderr.decode()}")
    return statistics.median(samples)


def measure(path: Path, tmp: Path) -> dict:
    mc = [sys.executable, "-m", "modelctl"]
    results = {
        "python start-up (baseline)": timed([sys.executable, "-c", "pass"], path),
        "modelctl --help": timed(mc + ["--help"], path),
        "modelctl status": timed(mc + ["status"], path, runs=3),
        "modelctl show NAME": timed(mc + ["show", "model-00001"], path),
    }
    counter = {"i": 0}

    def make_bundle(i):
        counter["i"] = i
        (tmp / f"new-{i}.yaml").write_bytes(bundle("model-00001", f"1.9.{i + 1}", "1.9.0" if i == 0 else f"1.9.{i}",
                                                   0.5 + i / 100))

    samples = []
    for i in range(5):
        make_bundle(i)
        t = time.perf_counter()
        proc = subprocess.run(mc + ["register", str(tmp / f"new-{i}.yaml")], cwd=path, env=ENV, capture_output=True)
        samples.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"register failed: {proc.stderr.decode()}")
    results["modelctl register"] = statistics.median(samples)
    return results


GOALS = {"modelctl --help": 0.15, "modelctl status": 2.0, "modelctl show NAME": 0.3, "modelctl register": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--small", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        tmp = Path(tmp)
        rows = {}
        for n in (args.small, args.models):
            reg = tmp / f"reg-{n}"
            t = time.perf_counter()
            build(reg, n)
            print(f"built {n} models x 10 versions ({n * 10} bundles, {n * 10} tags) in {time.perf_counter() - t:.1f}s",
                  flush=True)
            rows[n] = measure(reg, tmp)
        print()
        print(f"{'command':<28}{args.small:>10} models{args.models:>10} models{'goal':>10}{'ratio':>9}  verdict")
        for cmd in rows[args.small]:
            small, big = rows[args.small][cmd], rows[args.models][cmd]
            goal = GOALS.get(cmd)
            ratio = f"{big / goal:.2f}" if goal else "-"
            verdict = "-" if not goal else ("ok" if big <= goal else "over")
            print(f"{cmd:<28}{small:>16.3f}s{big:>16.3f}s{(f'{goal:.2f}s' if goal else '-'):>10}{ratio:>9}  {verdict}")
        print("\nratio = measured / goal at the large size; times are medians of fresh processes.")


if __name__ == "__main__":
    main()
