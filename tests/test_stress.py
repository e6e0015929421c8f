"""Stress (DESIGN §4): 8 processes x 25 mixed operations against one remote served by git daemon.

Six workers have a clone each; two share one clone (serialized by its lock). Half of every
worker's operations hit four models that all workers write, so pushes race constantly. Each
operation carries a unique marker (`op-W-I`, in the commit body or the reason trailer), so the
test can assert on the remote itself that
- every operation reported successful is in the branch history exactly once, as the very commit
  it reported, and every failed one left nothing;
- every version of every deployment file in the history is valid;
- every tag points into the branch history (stage tags at registration commits);
- `modelctl check` and `modelctl doctor` are clean afterwards, and no clone has leftovers.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from conftest import bundle_text, git, run_cli
from gitremote import (
    GitDaemon,
    assert_deployments_valid,
    assert_tags_in_history,
    clone,
    commits,
    index_consistent,
    leftovers,
    tags,
)

WORKERS = 8
OPS = 25
SHARED = ["s0", "s1", "s2", "s3"]


def plan_ops(wid: int) -> list[dict]:
    """The operations of one worker: registers of shared and own models, lifecycle moves when available."""
    from modelctl import ops as opsmod

    lifecycle = all(hasattr(opsmod, f) for f in ("canary", "promote", "rollback"))
    out = []
    for i in range(OPS):
        model = SHARED[(wid + i) % len(SHARED)] if i % 2 == 0 else f"w{wid}"
        out.append({"id": f"op-{wid}-{i}", "kind": "register", "model": model, "version": f"1.{wid}.{i}"})
    if lifecycle:
        out = _with_lifecycle(wid, out)
    return out


def _with_lifecycle(wid: int, planned: list[dict]) -> list[dict]:
    """Turn every fourth write to a shared model into a promotion, a canary move or a rollback."""
    moves = ["promote", "canary", "rollback", "canary"]
    mixed = []
    for n, op in enumerate(planned):
        if op["model"] in SHARED and n >= 4 and n % 4 == 0:
            mixed.append({**op, "kind": moves[(wid + n // 4) % len(moves)], "version": None})
        else:
            mixed.append(op)
    return mixed


def run_op(reg, op: dict, tmp) -> dict:
    """Run one operation through the library; what it reported."""
    from modelctl import ops
    from modelctl.errors import ModelctlError

    started = time.monotonic()
    result = {**op, "ok": False, "noop": False, "commit": None, "tags": [], "code": 0, "attempts": 0}
    opts = ops.WriteOptions(push=True)
    try:
        if op["kind"] == "register":
            f = tmp / f"{op['id']}.yaml"
            f.write_text(bundle_text(name=op["model"], version=op["version"], temperature=0.3))
            out = ops.register(reg, f, message=op["id"], opts=opts)
        else:
            out = _lifecycle(reg, op, opts)
        result.update(ok=True, noop=out.noop, commit=out.commit, tags=out.tags, attempts=out.attempts)
    except ModelctlError as exc:
        result.update(code=exc.exit_code, error=str(exc))
    result["seconds"] = time.monotonic() - started
    return result


def _lifecycle(reg, op: dict, opts):
    """A lifecycle move decided on what this clone last saw; the write re-checks it on the remote tip."""
    from modelctl import ops
    from modelctl.names import semver_key

    name = op["model"]
    dep = reg.deployment(name) or {"versions": {}}
    live = (dep.get("canary") or {}).get("version")
    fresh = sorted((v for v, s in dep["versions"].items() if s == "registered"), key=semver_key)
    candidate = fresh[-1] if fresh else "0.0.1"
    if op["kind"] == "promote":
        return ops.promote(reg, name, live or candidate, "active", force=not live, reason=op["id"], opts=opts)
    if op["kind"] == "canary":
        if live:
            step = {1: 5, 5: 10, 10: 25, 25: 50, 50: 25}[int(dep["canary"]["percent"])]
            return ops.canary(reg, name, live, step, reason=op["id"], opts=opts)
        return ops.canary(reg, name, candidate, 5, force=True, reason=op["id"], opts=opts)
    return ops.rollback(reg, name, reason=op["id"], expect_canary=live, opts=opts)


def worker(wid: int, repo, tmp, start_fd: int, out_path) -> None:
    """A forked writer: wait for the start signal, run its operations, write what each reported."""
    code = 0
    try:
        from modelctl.registry import Registry

        os.read(start_fd, 1)  # returns at EOF: every worker starts at once
        reg = Registry(repo)
        tmp.mkdir(parents=True, exist_ok=True)
        results = [run_op(reg, op, tmp) for op in plan_ops(wid)]
        out_path.write_text(json.dumps(results))
    except BaseException as exc:  # report, never return into pytest
        out_path.write_text(json.dumps({"crash": repr(exc)}))
        code = 1
    finally:
        os._exit(code)


@pytest.fixture
def served(registry, tmp_path):
    """The registry as a bare repository served by git daemon (with a generous retry deadline)."""
    cfg = registry / "modelctl.yaml"
    text, n = re.subn(r"(?m)^  deadline: \d+", "  deadline: 120", cfg.read_text())
    assert n == 1
    cfg.write_text(text)
    git(registry, "commit", "-q", "-am", "longer retry deadline for the stress test")
    base = tmp_path / "served"
    base.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(registry), str(base / "registry.git")], check=True)
    daemon = GitDaemon(base)
    yield daemon.url("registry.git"), base / "registry.git"
    daemon.stop()


def test_eight_writers_twenty_five_operations_each(served, tmp_path):
    url, bare = served
    clones = [clone(url, tmp_path / f"clone{c}") for c in range(7)]
    homes = [clones[min(w, 6)] for w in range(WORKERS)]  # workers 6 and 7 share a clone
    read_fd, write_fd = os.pipe()
    pids = []
    for wid in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            os.close(write_fd)
            worker(wid, homes[wid], tmp_path / f"in{wid}", read_fd, tmp_path / f"result{wid}.json")
        pids.append(pid)
    os.close(read_fd)
    started = time.monotonic()
    os.close(write_fd)  # go
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, (tmp_path / f"result{pids.index(pid)}.json").read_text()
    elapsed = time.monotonic() - started
    results = [r for w in range(WORKERS) for r in json.loads((tmp_path / f"result{w}.json").read_text())]
    assert len(results) == WORKERS * OPS

    log = commits(bare)
    by_marker: dict[str, list[dict]] = {}
    for c in log:  # the marker is in the body (register -m) or the reason trailer (lifecycle)
        for word in set(c["body"].split()):
            if word.startswith("op-"):
                by_marker.setdefault(word, []).append(c)
    remote_tags = tags(bare)
    for r in results:
        landed = by_marker.get(r["id"], [])
        if r["ok"] and not r["noop"]:
            assert len(landed) == 1 and landed[0]["sha"] == r["commit"], r
            assert landed[0]["trailers"]["Modelctl-Model"] == r["model"], r
            if r["kind"] == "register":
                assert landed[0]["trailers"]["Modelctl-Version"] == r["version"]
                assert remote_tags[f"{r['model']}@v{r['version']}"] == r["commit"], r
            else:
                assert landed[0]["trailers"]["Modelctl-Action"] in ("promote", "canary", "rollback"), r
            for name in r["tags"]:  # its tags are on the remote and name its commit
                assert f"Modelctl-Commit: {r['commit']}" in git(bare, "cat-file", "-p", f"refs/tags/{name}"), r
        else:
            assert landed == [], r  # a refusal, a conflict or a no-op wrote nothing
            assert r["noop"] or r["code"] in (2, 3), r
    registers = [r for r in results if r["kind"] == "register"]
    assert all(r["ok"] and not r["noop"] for r in registers), [(r["id"], r.get("code"), r.get("error"), r["seconds"])
                                                              for r in registers if not r["ok"] or r["noop"]]
    assert set(by_marker) <= {r["id"] for r in results if r["ok"]}

    # every registered version has its bundle (registered versions are implicit in deployment files)
    for model in SHARED + [f"w{w}" for w in range(WORKERS)]:
        for r in registers:
            if r["model"] == model:
                git(bare, "cat-file", "-e", f"main:bundles/{model}/{r['version']}.yaml")
    assert_tags_in_history(bare)
    actions = [c["trailers"] for c in log if c["trailers"].get("Modelctl-Action") not in (None, "init")]
    created = {t.get("Modelctl-Model") for t in actions if t["Modelctl-Action"] == "register"}
    assert assert_deployments_valid(bare) == len(created) + sum(1 for t in actions if t["Modelctl-Action"] != "register")

    fresh = clone(url, tmp_path / "fresh")
    check = run_cli("check", cwd=fresh)
    assert check.returncode == 0, check.stdout
    doctor = run_cli("doctor", "--push", "--json", cwd=fresh)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["findings"] == [], doctor.stdout
    for repo in clones:
        report = json.loads(run_cli("doctor", "--push", "--json", cwd=repo).stdout)
        assert report["ok"] and {f["kind"] for f in report["findings"]} <= {"behind"}, report
        assert leftovers(repo) == [] and index_consistent(repo)

    ok = [r for r in results if r["ok"] and not r["noop"]]
    attempts = sorted(r["attempts"] for r in ok)
    kinds = {k: sum(1 for r in ok if r["kind"] == k) for k in ("register", "promote", "canary", "rollback")}
    print(f"\n{len(ok)} writes landed in {elapsed:.1f}s ({len(ok) / elapsed:.1f}/s), "
          f"attempts median {attempts[len(attempts) // 2]} max {attempts[-1]}; {kinds}; "
          f"refused {sum(1 for r in results if not r['ok'])}, no-ops {sum(1 for r in results if r['noop'])}")
