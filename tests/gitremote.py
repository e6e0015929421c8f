"""Real git remotes for tests: a bare repository over file://, and `git daemon` on 127.0.0.1.

Also the invariants every shared-remote test asserts on the remote itself: tags point into the
branch history, each operation is there exactly once, every deployment file in every commit is
valid.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import git


def bare_remote(registry: Path, where: Path) -> str:
    """A bare copy of the registry at `where`, made the registry's `origin`; returns its file:// URL."""
    subprocess.run(["git", "clone", "-q", "--bare", str(registry), str(where)], check=True)
    url = "file://" + str(where)
    git(registry, "remote", "add", "origin", url)
    git(registry, "fetch", "-q", "origin")
    git(registry, "branch", "-q", "--set-upstream-to=origin/main", "main")
    return url


def clone(url: str, dest: Path) -> Path:
    """A working clone of the remote."""
    subprocess.run(["git", "clone", "-q", url, str(dest)], check=True, capture_output=True)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GitDaemon:
    """`git daemon` serving every repository under base_path, push (receive-pack) enabled."""

    def __init__(self, base_path: Path):
        self.base = Path(base_path)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", "--informative-errors",
             f"--base-path={self.base}", "--listen=127.0.0.1", f"--port={self.port}", str(self.base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:  # wait for the listening socket: the daemon starts asynchronously
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.02)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# -- what the remote holds -----------------------------------------------------------------

def commits(repo: Path, ref: str = "main") -> list[dict]:
    """Every commit of ref, oldest first: sha, subject, body and parsed trailers."""
    text = git(repo, "log", "--reverse", "--format=%H%x00%s%x00%B%x00%(trailers:only,unfold)%x1e", ref)
    out = []
    for record in text.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, subject, body, trailers = record.split("\x00")
        pairs = [line.split(": ", 1) for line in trailers.splitlines() if ": " in line]
        out.append({"sha": sha, "subject": subject, "body": body, "trailers": dict(pairs)})
    return out


def tags(repo: Path) -> dict[str, str]:
    """Tag name -> the commit it points at."""
    text = git(repo, "for-each-ref", "--format=%(refname:strip=2) %(*objectname) %(objectname)", "refs/tags")
    out = {}
    for line in text.splitlines():
        name, peeled, obj = (line.split(" ") + ["", ""])[:3]
        out[name] = peeled or obj
    return out


def assert_tags_in_history(repo: Path, ref: str = "main") -> None:
    """Every tag is annotated and points into the branch history; stage tags at a registration commit."""
    history = set(git(repo, "rev-list", ref).split())
    all_tags = tags(repo)
    registrations = {}
    for name, commit in all_tags.items():
        assert git(repo, "cat-file", "-t", f"refs/tags/{name}").strip() == "tag", f"{name} is not annotated"
        assert commit in history, f"tag {name} points at {commit}, outside {ref}"
        if "@v" in name:
            registrations.setdefault(name.split("@v")[0], set()).add(commit)
    for name, commit in all_tags.items():
        if "#" in name:
            model = name.split("#")[0]
            assert commit in registrations.get(model, set()), f"stage tag {name} is not on a registration commit"
            body = git(repo, "cat-file", "-p", f"refs/tags/{name}")
            state = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("Modelctl-Commit: ")]
            assert state and state[0] in history, f"stage tag {name} names a state commit outside {ref}"


def assert_deployments_valid(repo: Path, ref: str = "main") -> int:
    """Every version of every deployment file in the history is schema-valid and consistent; returns how many."""
    from modelctl import schema, yamlio
    from modelctl.state import problems as deployment_problems

    text = git(repo, "log", "--format=%x00%H", "--name-only", ref, "--", "deployments/")
    checked = 0
    for block in text.split("\x00")[1:]:
        lines = [x for x in block.splitlines() if x.strip()]
        sha, paths = lines[0], [p for p in lines[1:] if p.endswith(".yaml")]
        for path in paths:
            raw = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=repo, capture_output=True).stdout
            if not raw:
                continue  # deleted in this commit
            dep = schema.validate(yamlio.loads(raw, path), "Deployment")
            name = path[len("deployments/"):-5]
            bundles = {p.rsplit("/", 1)[1][:-5] for p in
                       git(repo, "ls-tree", "-r", "--name-only", sha, f"bundles/{name}/").split()}
            problems = deployment_problems(dep, name, bundles)
            assert not problems, f"{sha[:12]}:{path}: {problems}"
            checked += 1
    return checked


def leftovers(repo: Path) -> list[str]:
    """modelctl's private files in a clone's git directory that should not outlive a write."""
    gd = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    caches = ("modelctl-valid-", "modelctl-summary-", "modelctl-tag-stamps")  # content-addressed, kept on purpose
    found = [p.name for p in gd.iterdir() if p.name.startswith("modelctl-") and not p.name.startswith(caches)]
    lock = gd / "modelctl.lock"
    if lock.exists() and lock.read_text().strip():
        found.append("modelctl.lock (not empty)")
    return found


def index_consistent(repo: Path) -> bool:
    """The index holds exactly HEAD's tree and the work tree matches it (no half-applied update)."""
    staged = subprocess.run(["git", "diff-index", "--cached", "--quiet", "HEAD"], cwd=repo).returncode
    fsck = subprocess.run(["git", "fsck", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True)
    return staged == 0 and fsck.returncode == 0 and git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def env_with(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env
