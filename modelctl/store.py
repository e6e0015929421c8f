"""The only module that runs git.

Reads happen at a commit (never the work tree), through `git cat-file --batch` so that reading
two thousand deployment files is one process. Writes are transactions: a pure `plan` function is
evaluated on the tip the write will extend (the remote tip after a fetch when pushing), its files
become one commit built in a temporary index (the user's index and work tree are only brought up
to date afterwards), its tag events become annotated tag objects, and branch and tags move
together: `git update-ref --stdin` locally, `git push --atomic` to a remote. A rejected push is
retried from scratch (fetch, re-plan) with jittered backoff until a deadline.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import Conflict, LockTimeout, ModelctlError, RemoteError, UsageError
from .tags import TagEvent, TagRef, last_time, next_counter, registration_tag, stage_tag

ZERO = "0" * 40
LOCK_NAME = "modelctl.lock"


def fault(point: str) -> None:
    """Crash here when MODELCTL_FAULT names this point (crash-safety tests)."""
    if os.environ.get("MODELCTL_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class GitFailed(ModelctlError):
    """A git command failed unexpectedly."""

    exit_code = 4


def _base_env() -> dict:
    env = dict(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env.pop("GIT_INDEX_FILE", None)
    return env


@dataclass
class Plan:
    """What a write wants: files to set (None deletes), the commit message, tags to create."""

    files: dict[str, bytes | None] = field(default_factory=dict)
    subject: str = ""
    body: str = ""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    tags: list[TagEvent] = field(default_factory=list)
    noop: bool = False
    result: object = None  # whatever the caller wants back (noop explanation, summary)

    def message(self) -> str:
        """Commit message: subject, optional body, trailers."""
        parts = [self.subject.strip()]
        if self.body.strip():
            parts.append(self.body.strip())
        if self.trailers:
            parts.append("\n".join(f"{k}: {v}" for k, v in self.trailers))
        return "\n\n".join(parts) + "\n"


@dataclass
class Outcome:
    """What a write did."""

    commit: str | None
    tags: list[str]
    pushed: bool
    noop: bool
    result: object
    branch: str
    attempts: int = 1
    seconds: float = 0.0


class Snapshot:
    """The registry as of one commit (plus the tag index as of now)."""

    def __init__(self, store: "Store", commit: str | None):
        self.store = store
        self.commit = commit
        self._cache: dict[str, bytes | None] = {}

    def read(self, path: str) -> bytes | None:
        """File content at this commit, or None if absent."""
        if path not in self._cache:
            self._cache.update(self.store.read_many(self.commit, [path]))
        return self._cache[path]

    def read_many(self, paths: list[str]) -> dict[str, bytes | None]:
        """Several files at once (one git process)."""
        missing = [p for p in paths if p not in self._cache]
        if missing:
            self._cache.update(self.store.read_many(self.commit, missing))
        return {p: self._cache[p] for p in paths}

    def list(self, directory: str) -> list[str]:
        """Names of the entries directly under `directory` at this commit."""
        return self.store.list_dir(self.commit, directory)

    def model_tags(self, model: str) -> list[TagRef]:
        """Every registration and stage tag of one model."""
        return self.store.model_tags(model)


class Store:
    """A registry clone: git plumbing, reads at a ref, and write transactions."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._git_dir: Path | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, check: bool = True, env: dict | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run one git command in the registry; every subprocess goes through here."""
        full_env = _base_env()
        if env:
            full_env.update(env)
        cmd = ["git", "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0", *args]
        try:
            proc = subprocess.run(cmd, cwd=self.root, input=input, capture_output=True, env=full_env,
                                  timeout=timeout)
        except FileNotFoundError:
            raise GitFailed("git is not installed; install git and try again") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"git {args[0]} timed out after {timeout:.0f}s") from None
        if check and proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GitFailed(f"git {args[0]} failed: {msg[-1] if msg else proc.returncode}")
        return proc

    def out(self, *args: str, **kw) -> str:
        """stdout of a git command, stripped."""
        return self.git(*args, **kw).stdout.decode("utf-8", "replace").strip()

    @property
    def git_dir(self) -> Path:
        if self._git_dir is None:
            self._git_dir = Path(self.out("rev-parse", "--absolute-git-dir"))
        return self._git_dir

    def rev(self, ref: str) -> str | None:
        """Commit id of a ref, or None."""
        proc = self.git("rev-parse", "--verify", "--quiet", ref + "^{commit}", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def current_branch(self) -> str | None:
        """The checked-out branch name, or None when HEAD is detached."""
        proc = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def read_many(self, commit: str | None, paths: list[str]) -> dict[str, bytes | None]:
        """Contents of paths at a commit through one `cat-file --batch`."""
        if commit is None or not paths:
            return {p: None for p in paths}
        request = "".join(f"{commit}:{p}\n" for p in paths).encode("utf-8")
        data = self.git("cat-file", "--batch", input=request).stdout
        out: dict[str, bytes | None] = {}
        pos = 0
        for path in paths:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if len(header) == 3 and header[1] in (b"blob",):
                size = int(header[2])
                out[path] = data[pos:pos + size]
                pos += size + 1
            elif len(header) == 3:  # a tree or other object: not a file
                pos += int(header[2]) + 1
                out[path] = None
            else:
                out[path] = None
        return out

    def list_dir(self, commit: str | None, directory: str) -> list[str]:
        """Entry names directly under a directory at a commit."""
        if commit is None:
            return []
        proc = self.git("ls-tree", "--name-only", "-z", commit, directory.rstrip("/") + "/", check=False)
        if proc.returncode != 0:
            return []
        prefix = directory.rstrip("/") + "/"
        return [p[len(prefix):] for p in proc.stdout.decode("utf-8").split("\0") if p]

    def model_tags(self, model: str) -> list[TagRef]:
        """Registration and stage tags of one model (pattern-matched, never every tag)."""
        fmt = "%(refname:strip=2)%00%(objectname)%00%(*objectname)%00%(taggerdate:unix)%00%(taggername) %(taggeremail)%00%(contents:subject)"
        text = self.out("for-each-ref", f"--format={fmt}", f"refs/tags/{model}@v*", f"refs/tags/{model}#*")
        refs = []
        for line in text.splitlines():
            name, obj, peeled, when, tagger, subject = (line.split("\0") + [""] * 6)[:6]
            refs.append(TagRef(name, obj, peeled or obj, int(when or 0), tagger.strip(), subject))
        return refs

    def snapshot(self, ref: str = "HEAD") -> Snapshot:
        """A read view of the registry at a ref."""
        return Snapshot(self, self.rev(ref))

    # -- locking ----------------------------------------------------------------------------
    def lock(self, timeout: float | None = None) -> "_Lock":
        """Serialize writers of this clone (a process that dies releases it with its file descriptor)."""
        if timeout is None:
            timeout = float(os.environ.get("MODELCTL_LOCK_TIMEOUT", "60"))
        return _Lock(self.git_dir / LOCK_NAME, timeout)

    # -- writing ----------------------------------------------------------------------------
    def _build_commit(self, parent: str | None, plan: Plan, when: int) -> str:
        """Make the commit object for a plan on top of parent, in a temporary index."""
        index = self.git_dir / f"modelctl-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            if parent:
                self.git("read-tree", parent, env=env)
            else:
                self.git("read-tree", "--empty", env=env)
            info = []
            for path, content in plan.files.items():
                if content is None:
                    info.append(f"0 {ZERO}\t{path}")
                else:
                    blob = self.out("hash-object", "-w", "--stdin", input=content)
                    info.append(f"100644 {blob}\t{path}")
            if info:
                self.git("update-index", "--index-info", input=("\n".join(info) + "\n").encode(), env=env)
            tree = self.out("write-tree", env=env)
        finally:
            try:
                index.unlink()
            except FileNotFoundError:
                pass
        args = ["commit-tree", tree]
        if parent:
            args += ["-p", parent]
        date = f"{when} +0000"
        env = {"GIT_AUTHOR_DATE": os.environ.get("GIT_AUTHOR_DATE", date),
               "GIT_COMMITTER_DATE": os.environ.get("GIT_COMMITTER_DATE", date)}
        return self.out(*args, input=plan.message().encode("utf-8"), env=env)

    def _tagger(self) -> str:
        ident = self.out("var", "GIT_COMMITTER_IDENT")
        return ident.rsplit(" ", 2)[0]  # drop the date: we set our own

    def _build_tags(self, events: list[TagEvent], commit: str, model_tags: Callable[[str], list[TagRef]],
                    now: int) -> list[tuple[str, str]]:
        """Annotated tag objects for events: counters and tagger seconds strictly increase per model."""
        made: list[tuple[str, str]] = []
        tagger = self._tagger() if events else ""
        state: dict[str, list[int]] = {}
        for ev in events:
            if ev.model not in state:
                existing = model_tags(ev.model)
                state[ev.model] = [next_counter(existing), max(now, last_time(existing) + 1)]
            counter, when = state[ev.model]
            if ev.stage is None:
                name, target = registration_tag(ev.model, ev.version), commit
            else:
                name = stage_tag(ev.model, ev.stage, counter, ev.assign)
                state[ev.model][0] += 1
                target = self.rev(f"refs/tags/{registration_tag(ev.model, ev.version)}")
                if target is None:
                    raise Conflict(f"{ev.model} {ev.version} has no registration tag; run 'modelctl doctor --fix'")
            state[ev.model][1] += 1
            body = ev.message.strip()
            text = (f"object {target}\ntype commit\ntag {name}\ntagger {tagger} {when} +0000\n\n"
                    f"{body}\n\nModelctl-Commit: {commit}\n")
            made.append((name, self.out("mktag", input=text.encode("utf-8"))))
        return made

    def _sync_worktree(self, old: str, new: str, paths: list[str]) -> None:
        """Bring index and work tree of the checked-out branch from old to new for `paths`."""
        if not paths:
            return
        proc = self.git("read-tree", "-m", "-u", old, new, check=False)
        if proc.returncode != 0:
            # an untracked copy of a file we just committed (e.g. the bundle being registered)
            self.git("checkout", new, "--", *paths, check=False)

    def dirty(self, paths: list[str]) -> list[str]:
        """Paths with uncommitted changes in the work tree (tracked files only)."""
        if not paths or self.is_bare():
            return []
        text = self.out("status", "--porcelain", "--untracked-files=no", "--", *paths)
        return [line[3:] for line in text.splitlines() if line.strip()]

    def is_bare(self) -> bool:
        return self.out("rev-parse", "--is-bare-repository") == "true"

    def remote_url(self, remote: str) -> str | None:
        proc = self.git("remote", "get-url", remote, check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def fetch(self, remote: str, branch: str, timeout: float = 30) -> str | None:
        """Fetch the branch and every tag from the remote; return the remote tip (None if empty)."""
        proc = self.git("fetch", "--quiet", "--no-write-fetch-head", remote,
                        f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
                        "+refs/tags/*:refs/tags/*", check=False, timeout=timeout)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace")
            if "couldn't find remote ref" in err:
                return None
            last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
            raise RemoteError(f"cannot fetch from remote {remote!r}: {last}",
                              hint="check the network and 'git remote -v', or use --no-push")
        return self.rev(f"refs/remotes/{remote}/{branch}")

    def transact(self, plan_fn: Callable[[Snapshot], Plan], *, push: bool = False, remote: str = "origin",
                 branch: str | None = None, new_branch: str | None = None, deadline: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> Outcome:
        """Evaluate plan_fn on the tip and land its commit and tags atomically (retrying on races)."""
        started = clock()
        with self.lock():
            attempt = 0
            while True:
                attempt += 1
                outcome = self._attempt(plan_fn, push=push, remote=remote, branch=branch, new_branch=new_branch,
                                        clock=clock)
                if outcome is not None:
                    outcome.attempts = attempt
                    outcome.seconds = clock() - started
                    return outcome
                if clock() - started > deadline:
                    raise Conflict(f"the remote kept changing; gave up after {attempt} attempts in {deadline:.0f}s",
                                   hint="run the command again")
                # jittered exponential backoff: racing writers spread out instead of colliding again
                sleep(min(2.0, 0.05 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.5))

    def _attempt(self, plan_fn, *, push, remote, branch, new_branch, clock) -> Outcome | None:
        local_branch = branch or self.current_branch() or "main"
        if push:
            if self.remote_url(remote) is None:
                raise UsageError(f"no git remote named {remote!r}",
                                 hint=f"add it with 'git remote add {remote} URL' or use --no-push")
            fault("before-fetch")
            base = self.fetch(remote, local_branch)
        else:
            base = self.rev(f"refs/heads/{local_branch}")
        snap = Snapshot(self, base)
        plan = plan_fn(snap)
        branch_name = new_branch or local_branch
        if plan.noop:
            return Outcome(None, [], False, True, plan.result, branch_name)
        now = int(clock())
        checked_out = self.current_branch() == local_branch and not new_branch and not self.is_bare()
        touched = sorted(plan.files)
        if checked_out:
            dirty = self.dirty(touched)
            if dirty:
                raise UsageError(f"{dirty[0]} has uncommitted changes",
                                 hint="commit or stash them first; modelctl writes that file")
        commit = self._build_commit(base, plan, now)
        fault("after-commit-object")
        tags = [] if new_branch else self._build_tags(plan.tags, commit, snap.model_tags, now)
        fault("after-tag-objects")
        if new_branch:
            if self.rev(f"refs/heads/{new_branch}"):
                raise UsageError(f"branch {new_branch!r} already exists", hint="pick another --branch name")
        if push:
            target = f"refs/heads/{branch_name}"
            refspecs = [f"{commit}:{target}"] + [f"{obj}:refs/tags/{name}" for name, obj in tags]
            fault("before-push")
            result = self._push(remote, refspecs)
            if result == "retry":
                return None
            fault("after-push")
        # local refs: branch (or the new branch), remote-tracking ref, tags, all in one transaction
        lines = ["start"]
        local_tip = self.rev(f"refs/heads/{branch_name}")
        move_local = new_branch is not None or local_tip == base or local_tip is None or (
            push and local_tip is not None and self._is_ancestor(local_tip, commit))
        if move_local:
            lines.append(f"update refs/heads/{branch_name} {commit} {local_tip or ZERO}")
        if push:
            lines.append(f"update refs/remotes/{remote}/{branch_name} {commit}")
        for name, obj in tags:
            lines.append(f"update refs/tags/{name} {obj}")
        lines += ["prepare", "commit"]
        proc = self.git("update-ref", "--stdin", input=("\n".join(lines) + "\n").encode(), check=False)
        if proc.returncode != 0:
            if push:  # the remote has it; the local clone catches up at the next fetch
                return Outcome(commit, [n for n, _ in tags], True, False, plan.result, branch_name)
            return None  # another writer moved the branch between plan and update: plan again
        fault("after-local-refs")
        if move_local and checked_out and local_tip:
            self._sync_worktree(local_tip, commit, touched)
        return Outcome(commit, [n for n, _ in tags], push, False, plan.result, branch_name)

    def _is_ancestor(self, a: str, b: str) -> bool:
        return self.git("merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    def _push(self, remote: str, refspecs: list[str]) -> str:
        """Atomic push of branch and tags; 'ok', 'retry', or raise on a refusal that retrying cannot fix."""
        proc = self.git("push", "--atomic", "--porcelain", "--no-verify", remote, *refspecs, check=False,
                        timeout=60)
        if proc.returncode == 0:
            return "ok"
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if any(s in text for s in ("non-fast-forward", "fetch first", "already exists", "stale info",
                                   "cannot lock ref", "failed to update ref", "(atomic push failed)")) \
                and "hook declined" not in text:
            return "retry"
        if "hook declined" in text or "rejected" in text:
            said = [line[len("remote: "):] for line in text.splitlines() if line.startswith("remote: ")]
            detail = f": {said[-1].strip()}" if said else ""
            raise RemoteError(f"the remote refused the push (server hook or policy){detail}",
                              hint="nothing was written; fix what the remote says and run the command again")
        last = [line for line in text.strip().splitlines() if line.strip()]
        raise RemoteError(f"push to {remote!r} failed: {last[-1] if last else proc.returncode}",
                          hint="check the remote; nothing was written, run the command again")


class _Lock:
    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        waited = 0.0
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited >= self.timeout:
                    holder = self.path.read_text(errors="replace").strip() if self.path.exists() else ""
                    os.close(self.fd)
                    self.fd = None
                    raise LockTimeout(f"another modelctl process holds {self.path.name} ({holder or 'unknown'}); "
                                      f"waited {self.timeout:.0f}s",
                                      hint="let it finish, or run 'modelctl doctor' if it died") from None
                time.sleep(0.05)  # waiting for another process, not for a test
                waited += 0.05
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps({"pid": os.getpid(), "since": int(time.time())}).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty lock file is not a stale lock
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
