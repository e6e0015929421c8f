"""Write throughput and latency against a loopback remote (DESIGN §4).

Builds a throwaway registry, serves it with `git daemon` on 127.0.0.1 (or as a bare repository
over file://) and measures, through the library (the CLI adds its interpreter start-up, shown
in its own row):
- one writer: p50/p95 latency of one `register` including fetch, plan, atomic push and the
  local update;
- N concurrent writers (processes, one clone each), half of their writes to models every writer
  touches: sustained writes per second, p50/p95 latency of a write including its retries, mean
  and worst attempts, writes that gave up (exit 3).

    python benchmarks/writes.py                      # 8 writers x 25 writes, git daemon
    python benchmarks/writes.py --remote file --writers 4 --ops 50
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUNDLE = """\
apiVersion: modelctl/v1
kind: Bundle
name: {name}
version: "{version}"
model:
  provider: openai
  id: gpt-4.1-mini-2025-04-14
prompt:
  template: prompts/p1.txt
config:
  temperature: 0.3
  max_tokens: 1024
baseline:
  error_rate: 0.01
  latency_p95_ms: 890
  cost_per_request: 0.0012
  requests: 12500
"""


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(work: Path, kind: str):
    """A registry published to a loopback remote; returns (url, daemon process or None)."""
    from modelctl import ops

    seed = work / "seed"
    ops.init(seed)
    (seed / "prompts" / "p1.txt").write_text("You are helpful.\n")
    cfg = seed / "modelctl.yaml"
    cfg.write_text(cfg.read_text().replace("  deadline: 30 ", "  deadline: 300 "))
    _git(seed, "add", ".")
    _git(seed, "commit", "-q", "-m", "prompt")
    served = work / "served"
    served.mkdir()
    _git(work, "clone", "-q", "--bare", str(seed), str(served / "registry.git"))
    if kind == "file":
        return "file://" + str(served / "registry.git"), None
    port = _free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                               f"--base-path={served}", "--listen=127.0.0.1", f"--port={port}", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("git daemon did not start") from None
            time.sleep(0.02)
    return f"git://127.0.0.1:{port}/registry.git", daemon


def writer(repo: Path, inbox: Path, plan: list[tuple[str, str]], start_fd: int | None, out: Path) -> None:
    """Register each (model, version) with --push semantics; write [seconds, attempts, exit code] per write."""
    from modelctl import ops
    from modelctl.errors import ModelctlError
    from modelctl.registry import Registry

    if start_fd is not None:
        os.read(start_fd, 1)  # every writer starts at once
    reg = Registry(repo)
    inbox.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, version in plan:
        f = inbox / f"{name}-{version}.yaml"
        f.write_text(BUNDLE.format(name=name, version=version))
        t0 = time.perf_counter()
        try:
            o = ops.register(reg, f, opts=ops.WriteOptions(push=True))
            rows.append([time.perf_counter() - t0, o.attempts, 0])
        except ModelctlError as exc:
            rows.append([time.perf_counter() - t0, 0, exc.exit_code])
    out.write_text(json.dumps(rows))


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def concurrent(url: str, work: Path, writers: int, ops: int, shared: int) -> dict:
    clones = []
    for w in range(writers):
        dest = work / f"clone{w}"
        _git(work, "clone", "-q", url, str(dest))
        clones.append(dest)
    read_fd, write_fd = os.pipe()
    pids = []
    for w in range(writers):
        plan = [(f"s{(w + i) % shared}" if i % 2 == 0 else f"w{w}", f"1.{w}.{i}") for i in range(ops)]
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(write_fd)
                writer(clones[w], work / f"in{w}", plan, read_fd, work / f"rows{w}.json")
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(read_fd)
    t0 = time.perf_counter()
    os.close(write_fd)
    for pid in pids:
        os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t0
    rows = [r for w in range(writers) for r in json.loads((work / f"rows{w}.json").read_text())]
    return summarize(f"{writers} concurrent writers", writers, rows, elapsed)


def summarize(label: str, writers: int, rows: list, elapsed: float) -> dict:
    done = [r for r in rows if r[2] == 0]
    lat = [r[0] * 1000 for r in done]
    attempts = [r[1] for r in done]
    return {"scenario": label, "writers": writers, "writes": len(done), "seconds": elapsed,
            "per_s": len(done) / elapsed if elapsed else 0.0, "p50": pct(lat, 0.5) if lat else 0,
            "p95": pct(lat, 0.95) if lat else 0, "attempts": statistics.mean(attempts) if attempts else 0,
            "max_attempts": max(attempts) if attempts else 0, "failed": len(rows) - len(done)}


def single(url: str, work: Path, n: int) -> dict:
    dest = work / "single"
    _git(work, "clone", "-q", url, str(dest))
    t0 = time.perf_counter()
    writer(dest, work / "in-single", [("solo", f"2.0.{i}") for i in range(n)], None, work / "rows-single.json")
    elapsed = time.perf_counter() - t0
    return summarize("one writer", 1, json.loads((work / "rows-single.json").read_text()), elapsed)


def cli_single(url: str, work: Path, n: int) -> dict:
    dest = work / "cli"
    _git(work, "clone", "-q", url, str(dest))
    (work / "in-cli").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows = []
    t_all = time.perf_counter()
    for i in range(n):
        f = work / "in-cli" / f"{i}.yaml"
        f.write_text(BUNDLE.format(name="cli", version=f"3.0.{i}"))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "modelctl", "register", str(f), "--push"], cwd=dest, env=env,
                              capture_output=True)
        rows.append([time.perf_counter() - t0, 1, proc.returncode])
    return summarize("one writer, CLI process", 1, rows, time.perf_counter() - t_all)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--remote", choices=["daemon", "file"], default="daemon")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--ops", type=int, default=25, help="writes per concurrent writer")
    ap.add_argument("--single", type=int, default=40, help="writes in the one-writer latency run")
    ap.add_argument("--shared", type=int, default=4, help="models every writer writes to")
    args = ap.parse_args()
    os.environ.update({"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                       "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
                       "GIT_CONFIG_NOSYSTEM": "1"})
    work = Path(tempfile.mkdtemp(prefix="modelctl-bench-"))
    os.environ["GIT_CONFIG_GLOBAL"] = str(work / "gitconfig")
    url, daemon = setup(work, args.remote)
    try:
        results = [single(url, work, args.single), cli_single(url, work, max(5, args.single // 4)),
                   concurrent(url, work, args.writers, args.ops, args.shared)]
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
        shutil.rmtree(work, ignore_errors=True)
    remote = "git daemon on 127.0.0.1" if args.remote == "daemon" else "bare repository over file://"
    print(f"modelctl register --push against {remote}; {os.cpu_count()} CPUs; git "
          f"{subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.split()[-1]}")
    head = f"{'scenario':<26}{'writers':>8}{'writes':>8}{'seconds':>9}{'writes/s':>10}{'p50 ms':>9}{'p95 ms':>9}" \
           f"{'attempts':>10}{'max':>5}{'gave up':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['scenario']:<26}{r['writers']:>8}{r['writes']:>8}{r['seconds']:>9.1f}{r['per_s']:>10.1f}"
              f"{r['p50']:>9.0f}{r['p95']:>9.0f}{r['attempts']:>10.2f}{r['max_attempts']:>5}{r['failed']:>9}")


if __name__ == "__main__":
    main()
