"""What signing costs a write, and what verifying costs `check --require-signatures` and `log`.

Builds throwaway registries (no remote), registers N versions through the library with signing
off and with an SSH key (ssh-keygen -t ed25519), and prints per write the median latency and the
number of processes started (git, ssh-keygen); then times `check --require-signatures` and `log`
over the signed history, in process.

    python benchmarks/signing.py            # 20 writes each
    python benchmarks/signing.py --writes 50
"""
from __future__ import annotations

import argparse
import os
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
name: bench
version: "{version}"
model:
  provider: openai
  id: gpt-4.1-mini-2025-04-14
prompt:
  template: prompts/p1.txt
config:
  temperature: {temperature}
baseline:
  error_rate: 0.01
  latency_p95_ms: 890
  cost_per_request: 0.0012
  requests: 12500
"""


class Spawns:
    """Counts the processes started in this interpreter (subprocess.Popen is what run() uses too)."""

    def __init__(self) -> None:
        self.count = 0
        self._real = subprocess.Popen.__init__

    def __enter__(self) -> Spawns:
        real, outer = self._real, self

        def counting(popen: subprocess.Popen[bytes], *args: object, **kw: object) -> None:
            outer.count += 1
            real(popen, *args, **kw)  # type: ignore[arg-type]

        subprocess.Popen.__init__ = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.Popen.__init__ = self._real  # type: ignore[method-assign]


def registry(work: Path, signed: bool, key: Path | None) -> Path:
    from modelctl import ops

    repo = work / ("signed" if signed else "plain")
    ops.init(repo)
    (repo / "prompts" / "p1.txt").write_text("You are helpful.\n")
    cfg = repo / "modelctl.yaml"
    if signed:
        cfg.write_text(cfg.read_text().replace("signing:\n  enabled: false", "signing:\n  enabled: true"))
        for args in (("gpg.format", "ssh"), ("user.signingkey", str(key))):
            subprocess.run(["git", "config", *args], cwd=repo, check=True)
        pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        (repo / ".modelctl").mkdir()
        (repo / ".modelctl" / "allowed_signers").write_text(f"bench@example.com {pub}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "set-up"], cwd=repo, check=True)
    return repo


def writes(repo: Path, drafts: Path, n: int) -> tuple[float, float]:
    """Median seconds and mean processes of one register + promote pair."""
    from modelctl import ops
    from modelctl.registry import Registry

    times, spawned = [], []
    for i in range(n):
        version = f"1.{i}.0"
        f = drafts / f"{repo.name}-{version}.yaml"
        f.write_text(BUNDLE.format(version=version, temperature=round(0.3 + 0.001 * i, 3)))
        with Spawns() as s:
            started = time.perf_counter()
            reg = Registry(repo)
            ops.register(reg, f)
            ops.promote(reg, "bench", version, "active", force=True, reason="benchmark")
            times.append(time.perf_counter() - started)
        spawned.append(s.count)
    return statistics.median(times), statistics.mean(spawned)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        work = Path(tmp)
        os.environ.update({"HOME": str(work), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(work / ".gitconfig"),
                           "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"})
        key = work / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        drafts = work / "drafts"
        drafts.mkdir()
        rows = []
        for signed in (False, True):
            repo = registry(work, signed, key if signed else None)
            median, procs = writes(repo, drafts, args.writes)
            rows.append((f"register + promote, signing {'on (ssh)' if signed else 'off'}",
                         f"{median * 1000:.0f} ms", f"{procs:.1f}"))
        from modelctl import checks, history
        from modelctl.registry import Registry

        signed_repo = work / "signed"
        reg = Registry(signed_repo)
        today = __import__("datetime").date.today()
        rows.append((f"check --require-signatures ({2 * args.writes} signed commits)",
                     f"{timed(lambda: checks.run(reg, today=today, require_signatures=True)) * 1000:.0f} ms", "-"))
        rows.append(("check (the same registry, no signatures)",
                     f"{timed(lambda: checks.run(reg, today=today)) * 1000:.0f} ms", "-"))
        for repo in (work / "plain", signed_repo):
            label = "with allowed_signers" if repo == signed_repo else "no allowed_signers"
            rows.append((f"log bench ({2 * args.writes} events, {label})",
                         f"{timed(lambda r=repo: history.log(Registry(r).store, 'bench')) * 1000:.0f} ms", "-"))
        width = max(len(r[0]) for r in rows)
        print(f"{'what':<{width}}  {'median/total':>12}  {'processes/write':>15}")
        for what, t, p in rows:
            print(f"{what:<{width}}  {t:>12}  {p:>15}")


if __name__ == "__main__":
    main()
