"""The only module that runs git.

Reads happen at a commit (never the work tree), through `git cat-file --batch` so that reading
two thousand deployment files is one process. Writes are transactions under the clone's lock:

1. the base is the remote tip after a fetch (with `push`) or the local branch tip;
2. a pure `plan` function is evaluated on that base, so every precondition is judged on the state
   the commit will extend, never on a stale checkout;
3. its files become one commit built in a temporary index (the user's index is untouched), its
   tag events become annotated tag objects (`git mktag`);
4. branch and tags move together: `git push --atomic` to the remote, never forced, with client
   hooks disabled; a rejection caused by another writer (non-fast-forward, tag name taken, ref
   lock held) is retried from step 1 with jittered backoff until a deadline, anything else is
   reported without retrying;
5. the local refs follow in one `git update-ref --stdin` transaction and the checked-out work
   tree is brought forward only where it is clean; a journal file makes that last step
   resumable after a crash (`recover`, and `modelctl doctor`).

A process killed at any point therefore leaves either nothing on the remote or the whole
operation; what it leaves locally (a temporary index, a journal, an unreferenced object) is
harmless and `doctor` explains and removes it. `MODELCTL_FAULT=<point>` kills the process at a
named point (`<point>:stop` stops it instead) so that tests can prove this.
"""
from __future__ import annotations

import builtins
import fcntl
import json
import os
import random
import re
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

from . import trailers
from .errors import Conflict, LockTimeout, ModelctlError, RemoteError, UsageError
from .tags import TagEvent, TagRef, last_time, next_counter, registration_tag, stage_tag

ZERO = "0" * 40
LOCK_NAME = "modelctl.lock"
TEMP_INDEX_PREFIX = "modelctl-index-"
JOURNAL_NAME = "modelctl-sync.json"

# Where MODELCTL_FAULT may stop a write, in the order a write passes them.
FAULT_POINTS = ("before-fetch", "during-index", "after-commit-object", "after-tag-objects", "before-push",
                "after-push-timeout", "after-push", "after-local-refs", "during-sync")

_LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}  # paths we pass are file names, never globs
_LOCK_BLOCKED = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def fault(point: str) -> None:
    """Crash (SIGKILL) here when MODELCTL_FAULT names this point; `<point>:stop` sends SIGSTOP instead."""
    want = os.environ.get("MODELCTL_FAULT")
    if not want:
        return
    name, _, how = want.partition(":")
    if name == point:
        os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)


def backoff(attempt: int, rand: float, unit: float = 0.05) -> float:
    """Seconds to wait before retry `attempt` (1-based): capped exponential with full jitter, rand in [0, 1).

    `unit` is how long one attempt takes here: the window grows in attempts, not in fixed
    milliseconds, so the same writers spread out as well on a slow remote as on a fast one.
    """
    unit = min(max(unit, 0.02), 0.5)
    cap = min(1.5, unit * 2.0 ** min(attempt, 8))
    # full jitter spreads racing writers over the whole window instead of bunching them again
    return 0.01 + cap * rand


class GitFailed(ModelctlError):
    """A git command failed unexpectedly."""

    exit_code = 4


class GitTimeout(RemoteError):
    """A git command (fetch, push) ran past its time limit and was killed."""


def push_timeout() -> float:
    """Seconds one `git push` may take (MODELCTL_PUSH_TIMEOUT, default 60) before the remote is asked what landed."""
    try:
        value = float(os.environ.get("MODELCTL_PUSH_TIMEOUT", "60"))
    except ValueError:
        raise UsageError(f"invalid MODELCTL_PUSH_TIMEOUT {os.environ['MODELCTL_PUSH_TIMEOUT']!r}",
                         hint="use a number of seconds such as 60") from None
    return value if value > 0 else 60.0


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env.pop("GIT_INDEX_FILE", None)
    return env


def _blocked_by_lock(stderr: str) -> Conflict | None:
    """A git lock file in the way: usually another git process, sometimes one that died."""
    m = _LOCK_BLOCKED.search(stderr)
    if not m:
        return None
    return Conflict(f"git lock file {m.group(1)} exists: another git process is using this clone",
                    hint="wait for it; if none is running, 'modelctl doctor --fix' removes a stale lock")


IDENTITY_HINT = 'set one with git config user.name "Your Name" && git config user.email "you@example.com"'


def require_identity(cwd: str | os.PathLike[str]) -> str:
    """Refuse (exit 2) before anything is created when git has no author/committer identity.

    Every write is a commit and annotated tags: without an identity git would fail half-way
    (`modelctl init` used to leave an empty `.git` behind).
    """
    idents = []
    for var in ("GIT_COMMITTER_IDENT", "GIT_AUTHOR_IDENT"):
        try:
            proc = subprocess.run(["git", "var", var], cwd=cwd, capture_output=True, env=_base_env())
        except FileNotFoundError:
            raise GitFailed("git is not installed; install git and try again") from None
        if proc.returncode != 0:
            who = "committer" if var == "GIT_COMMITTER_IDENT" else "author"
            raise UsageError(f"git has no {who} identity (user.name and user.email are not configured), "
                             "so modelctl cannot make commits; nothing was written", hint=IDENTITY_HINT)
        idents.append(proc.stdout.decode("utf-8", "replace").strip())
    return idents[0]  # the committer's, "Name <email> time zone"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        return trailers.message(self.subject.strip(), self.body, self.trailers)


@dataclass
class TagSpec:
    """A tag to add on existing history (doctor --fix): the event, its state commit, its target."""

    event: TagEvent
    commit: str  # the state commit the tag message names (Modelctl-Commit)
    target: str | None = None  # registration tags: the commit that added the bundle (default: commit)


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
    synced: bool = True  # False: the local checkout was left behind (uncommitted changes in the way)


@dataclass(frozen=True)
class SignatureRecord:
    """A commit's signature as `git log` reports it (%G? and the key fields), with what it changed."""

    commit: str
    parent: str | None
    code: str  # %G?: G good, U good but unknown key, B bad, N none, E cannot check, X/Y/R expired/revoked
    key: str  # %GK: the SSH key's SHA256 fingerprint, or the OpenPGP key id
    fingerprint: str  # %GF (OpenPGP)
    primary_fingerprint: str  # %GP (OpenPGP)
    committer_email: str
    author_email: str
    subject: str
    paths: tuple[str, ...]


@dataclass
class _Target:
    push: bool
    remote: str
    branch: str  # the branch the write extends
    new_branch: str | None
    checked_out: bool  # `branch` is checked out in a work tree whose files must follow
    worktree: Store | None = None  # that work tree (this one, or a linked worktree that has the branch)
    models: tuple[str, ...] | None = None  # whose tags the write needs (None: every tag)


@dataclass
class _Sync:
    old: str
    new: str
    paths: list[str]
    entries: dict[str, tuple[str, str]]  # path -> (mode, blob) at `new`


class Snapshot:
    """The registry as of one commit (plus the tag index as of now)."""

    def __init__(self, store: Store, commit: str | None):
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

    def read_ids(self, ids: Mapping[str, str]) -> dict[str, bytes | None]:
        """Files whose blob ids are known (path -> id, from `tree_files`), read by id in one
        process: a path lookup scans its directory, so reading ten thousand bundles by path is
        quadratic."""
        blobs = self.store.read_blobs(sorted(set(ids.values())))
        for path, oid in ids.items():
            self._cache[path] = blobs.get(oid)
        return {p: self._cache[p] for p in ids}

    def list(self, directory: str) -> list[str]:
        """Names of the entries directly under `directory` at this commit."""
        return self.store.list_dir(self.commit, directory)

    def model_tags(self, model: str) -> builtins.list[TagRef]:  # (`list` here is the method above)
        """Every registration and stage tag of one model."""
        return self.store.model_tags(model)


TAG_STAMPS = "modelctl-tag-stamps"  # tag object id -> tagger time and tagger (see Store.tag_stamps)
BLOB_AT = "modelctl-blob-at"  # "commit:path" -> blob id or null (see Store.blob_ids_at)
_REF_LINE = re.compile(r"^(\w*) ([0-9a-f]+) (.+)$", re.M)
_NO_STAMP = (0, "")
_LS_BLOB = re.compile(r"(?:^|\0)\d+ blob ([0-9a-f]+)\t([^\0]*)")  # `ls-tree -z` entries that are files


def read_json_lines(path: Path) -> dict[str, Any]:
    """A content-addressed cache file: one JSON object per line (one line per append), merged.

    A torn line (a process killed mid-append) is skipped: what it held is simply read again.
    """
    out: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    chunk = json.loads(line)
                except ValueError:
                    continue
                if isinstance(chunk, dict):
                    out.update(chunk)
    except (OSError, UnicodeDecodeError):
        pass
    return out


def append_json_line(path: Path, chunk: Mapping[str, Any]) -> None:
    """Add what was learnt to a content-addressed cache file as one line (read_json_lines merges
    them). Best effort: a read-only clone just stays slower, and a torn line is read again."""
    if not chunk:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(chunk, separators=(",", ":")) + "\n")
    except OSError:
        pass


def _tagger_line(body: bytes) -> tuple[int, str]:
    """(time, "Name <email>") from an annotated tag object's header; (0, "") without one."""
    head = body.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    for line in head.splitlines():
        if line.startswith("tagger "):
            who, _, stamp = line[len("tagger "):].rpartition(">")
            parts = stamp.split()
            return (int(parts[0]) if parts and parts[0].isdigit() else 0), (who + ">").strip()
    return 0, ""


class Store:
    """A registry clone: git plumbing, reads at a ref, and write transactions."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._git_dir: Path | None = None
        self._ident: str | None = None
        self._cat: subprocess.Popen[bytes] | None = None
        self._cat_pid = 0
        self._stamp_cache: dict[str, tuple[int, str]] | None = None
        # set for one write when modelctl.yaml asks for signing: signs a tag payload (signing.SigningKey.sign);
        # None keeps the unsigned path free of any extra process
        self._signer: Callable[[bytes], bytes] | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, check: bool = True, env: dict[str, str] | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run one git command in the registry; every subprocess goes through here."""
        full_env = _base_env()
        if env:
            full_env.update(env)
        cmd = ["git", "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0", *args]
        try:
            if timeout is None:
                proc = subprocess.run(cmd, cwd=self.root, input=input, capture_output=True, env=full_env)
            else:
                proc = _run_group(cmd, self.root, input, full_env, timeout)
        except FileNotFoundError:
            raise GitFailed("git is not installed; install git and try again") from None
        except subprocess.TimeoutExpired:
            raise GitTimeout(f"git {args[0]} timed out after {timeout:g}s") from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace")
            blocked = _blocked_by_lock(err)
            if blocked:
                raise blocked
            msg = err.strip().splitlines()
            raise GitFailed(f"git {args[0]} failed: {msg[-1] if msg else proc.returncode}")
        return proc

    def out(self, *args: str, **kw: Any) -> str:
        """stdout of a git command, stripped."""
        return self.git(*args, **kw).stdout.decode("utf-8", "replace").strip()

    def locate(self) -> Path | None:
        """The work tree's top directory, the git directory of a bare repository (a gateway sidecar's
        mirror), or None outside a repository. One `rev-parse` that also learns the git directory,
        whether the clone is shallow and whether it is bare (asked for by every command); in a bare
        repository `--show-toplevel`, asked last, fails after the other three have answered."""
        proc = self.git("rev-parse", "--absolute-git-dir", "--is-shallow-repository", "--is-bare-repository",
                        "--show-toplevel", check=False)
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        if len(lines) < 3 or lines[2] not in ("true", "false"):
            return None
        bare = lines[2] == "true"
        if not bare and (proc.returncode != 0 or len(lines) != 4):
            return None  # inside the git directory of a work tree, say
        self._git_dir, self._shallow, self._bare = Path(lines[0]), lines[1] == "true", bare
        return self._git_dir if bare else Path(lines[3])

    def adopt(self, other: Store) -> None:
        """Take what `other`, a Store of the same repository, already learnt (see locate)."""
        for attr in ("_git_dir", "_shallow", "_bare"):
            if getattr(other, attr, None) is not None:
                setattr(self, attr, getattr(other, attr))

    def private_path(self, name: str) -> Path:
        """A file (or directory) of modelctl's own in the git directory: never in the work tree,
        never pushed (docs/reference.md lists them)."""
        if not name.startswith("modelctl") or "/" in name or name in (".", ".."):
            raise ValueError(f"not a modelctl file name: {name!r}")
        return self.git_dir / name

    @property
    def git_dir(self) -> Path:
        if self._git_dir is None:
            self._git_dir = Path(self.out("rev-parse", "--absolute-git-dir"))
        return self._git_dir

    def rev(self, ref: str) -> str | None:
        """Commit id of a ref, or None."""
        proc = self.git("rev-parse", "--verify", "--quiet", ref + "^{commit}", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def is_shallow(self) -> bool:
        """Whether this clone has a truncated history (`git clone --depth N`)."""
        if not hasattr(self, "_shallow"):
            self._shallow = self.out("rev-parse", "--is-shallow-repository") == "true"
        return self._shallow

    def require_full_history(self, what: str) -> None:
        """Refuse (exit 2) in a shallow clone: `what` needs the whole history to be right."""
        if self.is_shallow():
            raise UsageError(f"this clone is shallow (its history is truncated), so {what} would be wrong; "
                             "nothing was written",
                             hint="fetch the whole history with 'git fetch --unshallow' and run the command again")

    def require_identity(self) -> None:
        """Refuse (exit 2) when git has no identity to commit and tag with."""
        if self._ident is None:
            self._ident = require_identity(self.root).rsplit(" ", 2)[0]  # the tagger, without a date

    def unborn(self) -> str | None:
        """Why HEAD names no commit (an unborn branch, a dangling remote HEAD), or None when it does."""
        if self.rev("HEAD"):
            return None
        branch = self.current_branch()
        if branch is None:
            return None
        remotes = [r for r in self.out("remote").splitlines() if r]
        known = [r for r in self.out("for-each-ref", "--format=%(refname:strip=2)", "refs/remotes").splitlines()
                 if r and not r.endswith("/HEAD")]
        locals_ = [r for r in self.out("for-each-ref", "--format=%(refname:strip=2)", "refs/heads").splitlines() if r]
        if known:
            have = ", ".join(k.split("/", 1)[1] for k in known[:5])
            first = known[0].split("/", 1)[1]
            return (f"the checked-out branch {branch!r} has no commits (unborn): the remote's HEAD names a branch "
                    f"it does not have (a dangling remote HEAD), while it has {have}; "
                    f"check one of those out, e.g. 'git checkout {first}'")
        if locals_:
            return (f"the checked-out branch {branch!r} has no commits (unborn), while branch {locals_[0]!r} has; "
                    f"check it out with 'git checkout {locals_[0]}'")
        if remotes:
            return (f"the checked-out branch {branch!r} has no commits (unborn): remote {remotes[0]!r} was empty "
                    f"when this clone was made; once a registry is pushed there, run 'git pull {remotes[0]} {branch}', "
                    "or create one here with 'modelctl init .' and push it")
        return (f"this git repository has no commits yet (branch {branch!r} is unborn); "
                "create a registry in it with 'modelctl init .'")

    def current_branch(self) -> str | None:
        """The checked-out branch name, or None when HEAD is detached."""
        try:  # one file read instead of a process on every write
            head = (self.git_dir / "HEAD").read_text().strip()
            if head.startswith("ref: refs/heads/"):
                return head[len("ref: refs/heads/"):]
            if len(head) in (40, 64) and all(c in "0123456789abcdef" for c in head):
                return None
        except OSError:
            pass
        proc = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def read_many(self, commit: str | None, paths: list[str], ids: dict[str, str] | None = None) -> dict[str, bytes | None]:
        """Contents of paths at a commit through one `cat-file --batch` (blob ids into `ids`)."""
        if commit is None or not paths:
            return {p: None for p in paths}
        if len(paths) <= 16 and not any("\n" in p for p in paths):
            return self._read_small(commit, paths, ids)
        request = "".join(f"{commit}:{p}\n" for p in paths).encode("utf-8")
        return self._parse_batch(self.git("cat-file", "--batch", input=request).stdout, paths, ids)

    @staticmethod
    def _parse_batch(data: bytes, paths: list[str], ids: dict[str, str] | None,
                     kind: bytes = b"blob") -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        pos = 0
        for path in paths:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if len(header) == 3 and header[-1] not in (b"missing", b"ambiguous"):
                size = int(header[2])
                if header[1] == kind:
                    out[path] = data[pos:pos + size]
                    if ids is not None:
                        ids[path] = header[0].decode()
                else:  # a tree or other object: not a file
                    out[path] = None
                pos += size + 1
            else:
                out[path] = None
        return out

    def _read_small(self, commit: str, paths: list[str], ids: dict[str, str] | None) -> dict[str, bytes | None]:
        """A few files through one long-lived `cat-file --batch` (a write reads a handful per attempt).

        The requests are small enough never to fill the pipe, so writing them all before reading
        cannot deadlock; bigger batches use a one-shot process.
        """
        if self._cat is None or self._cat_pid != os.getpid() or self._cat.poll() is not None:
            self._cat = subprocess.Popen(["git", "-c", "core.hooksPath=/dev/null", "cat-file", "--batch"], cwd=self.root,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env=_base_env())
            self._cat_pid = os.getpid()
            weakref.finalize(self, _close_batch, self._cat)
        proc = self._cat
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # both opened as pipes above
        try:
            stdin.write("".join(f"{commit}:{p}\n" for p in paths).encode("utf-8"))
            stdin.flush()
            out: dict[str, bytes | None] = {}
            for path in paths:
                header = stdout.readline().split()
                if not header:
                    raise BrokenPipeError
                if len(header) == 3 and header[-1] not in (b"missing", b"ambiguous"):
                    body = stdout.read(int(header[2]) + 1)[:-1]
                    if header[1] == b"blob":
                        out[path] = body
                        if ids is not None:
                            ids[path] = header[0].decode()
                        continue
                out[path] = None
            return out
        except (BrokenPipeError, OSError, ValueError):
            _close_batch(proc)  # the reader died or lost step: fall back to a one-shot process
            self._cat = None
            request = "".join(f"{commit}:{p}\n" for p in paths).encode("utf-8")
            return self._parse_batch(self.git("cat-file", "--batch", input=request).stdout, paths, ids)

    def list_dir(self, commit: str | None, directory: str) -> list[str]:
        """Entry names directly under a directory at a commit."""
        if commit is None:
            return []
        proc = self.git("ls-tree", "--name-only", "-z", commit, directory.rstrip("/") + "/", check=False)
        if proc.returncode != 0:
            return []
        prefix = directory.rstrip("/") + "/"
        return [p[len(prefix):] for p in proc.stdout.decode("utf-8").split("\0") if p]

    def list_ids(self, commit: str | None, directory: str) -> dict[str, str]:
        """Blob entries directly under a directory at a commit: name -> blob id (one `ls-tree`)."""
        if commit is None:
            return {}
        proc = self.git("ls-tree", "-z", commit, directory.rstrip("/") + "/", check=False)
        if proc.returncode != 0:
            return {}
        prefix = directory.rstrip("/") + "/"
        # one regex over the listing, not a split per entry: a model directory has ten thousand
        return {path[len(prefix):]: oid for oid, path in _LS_BLOB.findall(proc.stdout.decode("utf-8", "replace"))
                if path.startswith(prefix)}

    def list_files(self, commit: str | None, directory: str) -> list[str]:
        """Every file path under a directory at a commit, recursively (one `ls-tree -r`)."""
        if commit is None:
            return []
        proc = self.git("ls-tree", "-r", "-z", "--name-only", commit, directory.rstrip("/") + "/", check=False)
        return [p for p in proc.stdout.decode("utf-8", "replace").split("\0") if p] if proc.returncode == 0 else []

    def read_blobs(self, oids: list[str]) -> dict[str, bytes | None]:
        """Blob contents by id through one `cat-file --batch`.

        By id, not by path: git finds `commit:dir/file` by scanning the directory's tree, which
        is quadratic over a directory of ten thousand bundles.
        """
        if not oids:
            return {}
        request = "".join(f"{o}\n" for o in oids).encode()
        return self._parse_batch(self.git("cat-file", "--batch", input=request).stdout, list(oids), None)

    def read_tags(self, oids: list[str]) -> dict[str, bytes | None]:
        """Annotated tag objects by id through one `cat-file --batch` (None: not a tag, or missing)."""
        if not oids:
            return {}
        request = "".join(f"{o}\n" for o in oids).encode()
        return self._parse_batch(self.git("cat-file", "--batch", input=request).stdout, list(oids), None, b"tag")

    def tag_clock(self, model: str) -> tuple[int, int]:
        """(next stage-tag counter, newest tagger time) of one model's tags.

        Stage tags are read whole (their counters); registration tags only for their tagger
        time, through the stamp cache: a model with ten thousand versions has ten thousand of them.
        """
        refs = self.tag_refs(f"refs/tags/{model}#*", f"refs/tags/{model}@v*#*")  # any tag with a counter
        oids = self.out("for-each-ref", "--format=%(objectname)", f"refs/tags/{model}@v*").split()
        known = self._learn_stamps(oids)
        newest = max((known[oid][0] for oid in oids), default=0)
        return next_counter(refs), max(last_time(refs), newest)

    def registrations(self, model: str) -> dict[str, tuple[int, str]]:
        """Tag name -> (tagger time, tagger) of one model's registration tags (no messages read)."""
        return self.tag_stamps(f"refs/tags/{model}@v*")

    def tag_stamps(self, pattern: str) -> dict[str, tuple[int, str]]:
        """Tag name -> (tagger time, tagger) of the tags matching a for-each-ref pattern.

        Listing ten thousand tag names and ids costs ~10 ms; reading their tagger lines costs ~90 ms
        more, every call. A tag object never changes, so the stamps are kept by object id in
        `.git/modelctl-tag-stamps` and only tags not seen before are read (a lightweight tag, which
        has no tagger, is (0, "")).
        """
        text = self.out("for-each-ref", "--format=%(objecttype) %(objectname) %(refname:strip=2)", pattern)
        listed = _REF_LINE.findall(text)
        known = self._learn_stamps([oid for kind, oid, _ in listed if kind == "tag"])
        return {name: known[oid] if kind == "tag" else _NO_STAMP for kind, oid, name in listed}

    def _learn_stamps(self, oids: list[str]) -> dict[str, tuple[int, str]]:
        """The stamp cache, with these object ids in it (those not seen before read and appended)."""
        known = self._stamps()
        missing = sorted({oid for oid in oids if oid not in known})
        if missing:
            learnt = {}
            for oid, body in self.read_tags(missing).items():
                # a lightweight tag names a commit: no stamp (a listed ref's object is always here)
                learnt[oid] = known[oid] = _NO_STAMP if body is None else _tagger_line(body)
            append_json_line(self.private_path(TAG_STAMPS), learnt)
        return known

    def _stamps(self) -> dict[str, tuple[int, str]]:
        """The stamp cache: one JSON object per line, {tag object id: [time, tagger]}."""
        if self._stamp_cache is None:
            self._stamp_cache = read_json_lines(self.private_path(TAG_STAMPS))
        return self._stamp_cache

    def model_tags(self, model: str) -> list[TagRef]:
        """Registration and stage tags of one model (pattern-matched, never every tag)."""
        return self.tag_refs(f"refs/tags/{model}@v*", f"refs/tags/{model}#*")

    def tag_refs(self, *patterns: str) -> list[TagRef]:
        """Tags matching for-each-ref patterns (default: every tag), with target commit and tagger."""
        fmt = ("%(refname:strip=2)%00%(objectname)%00%(*objectname)%00%(taggerdate:unix)%00"
               "%(taggername) %(taggeremail)%00%(contents:subject)")
        text = self.out("for-each-ref", f"--format={fmt}", *(patterns or ("refs/tags",)))
        refs = []
        for line in text.splitlines():
            name, obj, peeled, when, tagger, subject = (line.split("\0") + [""] * 6)[:6]
            refs.append(TagRef(name, obj, peeled or obj, int(when or 0), tagger.strip(), subject))
        return refs

    def snapshot(self, ref: str = "HEAD") -> Snapshot:
        """A read view of the registry at a ref."""
        return Snapshot(self, self.rev(ref))

    def is_bare(self) -> bool:
        if not hasattr(self, "_bare"):
            self._bare = self.out("rev-parse", "--is-bare-repository") == "true"
        return self._bare

    def remote_url(self, remote: str) -> str | None:
        proc = self.git("remote", "get-url", remote, check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether commit a is in the history of commit b."""
        return self.git("merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    _is_ancestor = is_ancestor

    # -- named queries: history, trees and diffs (every git command line modelctl runs is here) --
    def tree_files(self, commit: str) -> dict[str, str]:
        """path -> blob id of every file at a commit; a symlink's id is prefixed "symlink:"."""
        text = self.git("ls-tree", "-r", "-z", "--full-tree", commit).stdout.decode("utf-8", "replace")
        out = {}
        for entry in text.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, _kind, obj = meta.split()
            out[path] = ("symlink:" if mode == "120000" else "") + obj
        return out

    def tree_entry(self, commit: str, path: str) -> tuple[str, str] | None:
        """(mode, size) of one path at a commit (`ls-tree -l`), or None when it is not there."""
        line = self.out("ls-tree", "-l", commit, "--", path, env=_LITERAL)
        if not line:
            return None
        meta = line.split("\t", 1)[0].split()
        return meta[0], meta[-1]

    def blob_id(self, commit: str, path: str) -> str | None:
        """The blob id of `path` at a commit, or None."""
        proc = self.git("rev-parse", "--verify", "--quiet", f"{commit}:{path}", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def blob_ids_at(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Blob ids of many (commit, path) pairs (None: no such file) in one `cat-file --batch-check`.

        What a commit holds never changes, so the answers are kept in `.git/modelctl-blob-at`
        (content-addressed: never stale) and a later `check` of ten thousand bundles asks git
        for none of them again."""
        known: dict[str, str | None] = read_json_lines(self.private_path(BLOB_AT))
        wanted = sorted(set(pairs))
        ask = [(c, p) for c, p in wanted if f"{c}:{p}" not in known and "\n" not in p]
        if ask:
            request = "".join(f"{c}:{p}\n" for c, p in ask).encode()
            text = self.git("cat-file", "--batch-check", input=request).stdout.decode("utf-8", "replace")
            learnt: dict[str, str | None] = {}
            for (c, p), line in zip(ask, text.splitlines(), strict=True):
                fields = line.split()
                learnt[f"{c}:{p}"] = fields[0] if len(fields) == 3 and fields[1] == "blob" else None
            known.update(learnt)
            append_json_line(self.private_path(BLOB_AT), learnt)
        return {(c, p): known[f"{c}:{p}"] if f"{c}:{p}" in known else self.blob_id(c, p) for c, p in wanted}

    def index_tree(self) -> str | None:
        """The tree the index would commit (`write-tree`), or None when it has unmerged paths."""
        proc = self.git("write-tree", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def tracked(self, path: str) -> bool:
        """Whether the index tracks `path`."""
        return bool(self.out("ls-files", "--", path, env=_LITERAL))

    def registration_commits(self, names: list[str]) -> dict[str, str]:
        """Tag name -> the commit it names, for these tags (exact names; absent ones left out), in
        one `for-each-ref` (a write's stage and deregistration tags point at these)."""
        wanted = set(names)
        # for-each-ref also matches a name as a directory prefix: keep the exact ones
        return {name: commit for name, commit in self.tags_and_commits(*(f"refs/tags/{n}" for n in names))
                if name in wanted} if names else {}

    def tags_and_commits(self, *patterns: str) -> list[tuple[str, str]]:
        """(tag name, the commit it names) for the tags matching for-each-ref patterns, in one
        `for-each-ref`; a tag of a tag (rare: never made by modelctl) is peeled the whole way by `rev`."""
        fmt = "--format=%(refname:strip=2) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"
        out = []
        for row in self.out("for-each-ref", fmt, *patterns).splitlines():
            name, kind, obj, peeled_kind, peeled = (row.split(" ") + [""] * 5)[:5]
            if kind == "commit" or peeled_kind == "commit":
                out.append((name, obj if kind == "commit" else peeled))
            elif kind == "tag" and (commit := self.rev(f"refs/tags/{name}")) is not None:
                out.append((name, commit))
        return out

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, or None when they share no history."""
        proc = self.git("merge-base", a, b, check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def changed_since(self, base: str, tip: str = "HEAD") -> set[str]:
        """Files that differ between the merge base of base and tip, and tip (`git diff base...tip`)."""
        text = self.git("diff", "--name-only", "-z", "--no-renames", f"{base}...{tip}").stdout.decode("utf-8", "replace")
        return {p for p in text.split("\0") if p}

    def name_status(self, a: str | None, b: str) -> list[tuple[str, str]]:
        """(status letter, path) of every file that differs from a (None: the empty tree) to b."""
        text = self.out("diff", "--name-status", "--no-renames", a or self.empty_tree(), b)
        return [(line.split("\t", 1)[0], line.split("\t", 1)[-1]) for line in text.splitlines() if line]

    def diff_text(self, a: str | None, b: str, path: str) -> str:
        """The unified diff (3 lines of context, no colour) of one path from a (None: empty tree) to b."""
        return self.git("diff", "--no-color", "--no-ext-diff", "-U3", a or self.empty_tree(), b, "--", path,
                        env=_LITERAL).stdout.decode("utf-8", "replace")

    def empty_tree(self) -> str:
        """The id of the empty tree (the diff base of a root commit)."""
        return self.out("hash-object", "-t", "tree", "--stdin", input=b"")

    def commit_message(self, commit: str) -> tuple[str, str]:
        """(whole message, its trailer block as git parses it, unfolded) of one commit."""
        text = self.git("log", "-1", "--format=%B%x00%(trailers:only,unfold)", commit).stdout.decode("utf-8", "replace")
        message, _, block = text.partition("\0")
        return message.rstrip("\n") + "\n" if message.strip() else "", block

    def count_commits(self, rev_range: str) -> int:
        """How many commits a range (`a..b`, or a tip: its whole history) holds."""
        return int(self.out("rev-list", "--count", rev_range) or 0)

    def ahead_behind(self, local: str, remote: str) -> tuple[int, int]:
        """(commits only in local, commits only in remote)."""
        ahead, behind = (int(x) for x in self.out("rev-list", "--left-right", "--count", f"{local}...{remote}").split())
        return ahead, behind

    def subjects(self, rev_range: str, limit: int) -> list[str]:
        """`<short id> <subject>` of the newest commits of a range."""
        return self.out("log", "--format=%h %s", "-n", str(limit), rev_range).splitlines()

    def reachable(self, tip: str) -> set[str]:
        """Every commit in tip's history."""
        return set(self.out("rev-list", tip).split())

    def last_change(self, commit: str, path: str) -> str | None:
        """The newest commit in commit's history that changed `path`, or None."""
        return self.out("log", "-1", "--format=%H", commit, "--", path, env=_LITERAL) or None

    def adding_commits(self, tip: str, paths: list[str]) -> dict[str, str]:
        """The commit in tip's history that added each path (the oldest, if it was added twice)."""
        text = self.git("log", "--format=%x00%H", "--name-only", "--diff-filter=A", "--no-renames", tip, "--", *paths,
                        env=_LITERAL).stdout.decode("utf-8", "replace")
        out: dict[str, str] = {}
        for block in text.split("\0")[1:]:
            lines = [x for x in block.splitlines() if x.strip()]
            if not lines:
                continue
            commit, files = lines[0], lines[1:]
            for f in files:
                out[f] = commit  # log runs newest first: the last seen is the oldest
        return out

    def log_records(self, fields: list[str], rev: str, paths: tuple[str, ...] | list[str] = (), *, limit: int | None = None,
                    before: str | None = None, grep: str | None = None, first_parent: bool = False,
                    reverse: bool = False, no_merges: bool = False, check: bool = True) -> list[list[str]] | None:
        """Commits of `rev` (a tip or a range) touching paths, newest first unless `reverse`: each a
        list of the `git log` format fields asked for (e.g. "%H", "%(trailers:only,unfold)").

        Fields are split by \\x1f and records by \\x1e, which never occur in what modelctl writes
        (trailer values are cleaned of control characters). None when git refuses the revision and
        check is False.
        """
        args = ["log", "--format=%x1e" + "%x1f".join(fields)]
        if first_parent:
            args.append("--first-parent")
        if reverse:
            args.append("--reverse")
        if no_merges:
            args.append("--no-merges")
        if limit is not None:
            args.append(f"--max-count={int(limit)}")
        if before is not None:
            args.append(f"--before={before}")
        if grep is not None:
            args += ["--fixed-strings", f"--grep={grep}"]
        proc = self.git(*args, rev, "--", *paths, check=check, env=_LITERAL)
        if proc.returncode != 0:
            return None
        out = []
        for record in proc.stdout.decode("utf-8", "replace").split("\x1e")[1:]:
            parts = record.strip("\n").split("\x1f")
            if len(parts) == len(fields):
                out.append(parts)
        return out

    def signature_records(self, revs: list[str], paths: list[str]) -> list[SignatureRecord]:
        """Non-merge commits of `revs` changing `paths`, oldest first, with their signatures as git
        verifies them. No allowed-signers file is given to git (SSH keys come back as %G? U with their
        fingerprint): which keys count is the caller's decision (signing.judge)."""
        fields = "%x1f".join(["%H", "%P", "%G?", "%GK", "%GF", "%GP", "%ce", "%ae", "%s"])
        proc = self.git("-c", f"gpg.ssh.allowedSignersFile={os.devnull}", "log", "--reverse", "--no-merges",
                        "--no-renames", f"--format=%x1e{fields}", "--name-only", *revs, "--", *paths, env=_LITERAL)
        out = []
        for block in proc.stdout.decode("utf-8", "replace").split("\x1e")[1:]:
            head, _, names = block.partition("\n")
            parts = head.split("\x1f")
            if len(parts) != 9:
                continue
            sha, parents, code, key, fpr, primary, committer, author, subject = parts
            out.append(SignatureRecord(sha, parents.split()[0] if parents.split() else None, code.strip() or "N",
                                       key, fpr, primary, committer, author, subject,
                                       tuple(n for n in names.splitlines() if n.strip())))
        return out

    def signing_settings(self) -> tuple[dict[str, str], str]:
        """git's signing settings here (user.signingkey, gpg.*; keys lower-case) and the committer
        identity "Name <email>" (OpenPGP's default key)."""
        proc = self.git("config", "-z", "--get-regexp", r"^(user\.signingkey|gpg\.)", check=False)
        settings: dict[str, str] = {}
        for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
            key, _, value = entry.partition("\n")
            if key:
                settings[key.lower()] = value
        return settings, self._tagger()

    # -- the repository itself ----------------------------------------------------------------
    def branch_name_ok(self, name: str) -> bool:
        """Whether git accepts `name` as a branch name (`check-ref-format`)."""
        return self.git("check-ref-format", f"refs/heads/{name}", check=False).returncode == 0

    def remotes(self) -> list[str]:
        """The names of the configured remotes."""
        return self.out("remote").split()

    def object_format(self) -> str:
        """"sha1" or "sha256" ("" when git cannot tell)."""
        return self.out("rev-parse", "--show-object-format")

    def init_repo(self, branch: str = "main") -> None:
        """`git init` in the root, with `branch` as the unborn branch."""
        self.git("init", "--quiet", f"--initial-branch={branch}")

    def checkout_head(self) -> None:
        """Make the index and the work tree match HEAD (after a first commit made with plumbing)."""
        self.git("read-tree", "-u", "--reset", "HEAD")

    def dirty(self, paths: list[str]) -> list[str]:
        """Paths with uncommitted changes in the work tree (tracked files only)."""
        if not paths or self.is_bare():
            return []
        # -z: no stripping or quoting, so the "XY " status prefix is always three characters
        raw = self.git("status", "--porcelain", "-z", "--untracked-files=no", "--", *paths, env=_LITERAL).stdout
        return [entry[3:] for entry in raw.decode("utf-8", "replace").split("\0") if len(entry) > 3]

    def staged_reverts(self) -> list[dict[str, Any]]:
        """Lifecycle files whose index, in any worktree of this clone, undoes the last modelctl commit.

        That is what a branch moved under a checked-out worktree leaves (its index still holds the
        old files): the next innocent commit there would silently undo the promotion. Each finding:
        worktree, paths, the commit being undone, and a message saying what to do.
        """
        trees = {str(p.resolve()): b or "detached HEAD" for p, b in self.worktree_list()}
        if not self.is_bare():
            trees.setdefault(str(self.root.resolve()), self.current_branch() or "detached HEAD")
        found: list[dict[str, Any]] = []
        for path, branch in sorted(trees.items()):
            tree = self if Path(path) == self.root.resolve() else Store(path)
            proc = tree.git("diff-index", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", "HEAD", "--",
                            "deployments", "bundles", check=False, env=_LITERAL)
            if proc.returncode != 0:
                continue  # an unborn branch, a worktree that is gone
            fields = proc.stdout.decode("utf-8", "replace").split("\0")
            journal = tree.journal()  # an interrupted update of this worktree: doctor explains and finishes it
            pending = set(journal["paths"]) if journal else set()
            undone: dict[str, list[str]] = {}
            for meta, rel in zip(fields[0::2], fields[1::2]):
                if rel in pending or not meta.startswith(":") or not (
                        rel.startswith("bundles/") or (rel.startswith("deployments/") and rel.endswith(".yaml"))):
                    continue
                index_blob = meta[1:].split()[3]
                last = tree.out("log", "-1", f"--format=%H%x00%(trailers:key={trailers.ACTION},valueonly)", "HEAD",
                                "--", rel, env=_LITERAL).split("\0")
                if len(last) < 2 or not last[1].strip():
                    continue  # not a modelctl commit: a hand edit staged on purpose
                before = tree.git("rev-parse", "--verify", "--quiet", f"{last[0]}^:{rel}", check=False)
                before_blob = before.stdout.decode().strip() if before.returncode == 0 else ZERO
                if index_blob == before_blob:
                    undone.setdefault(last[0], []).append(rel)
            for commit, paths in undone.items():
                subject = tree.out("log", "-1", "--format=%s", commit)
                found.append({
                    "worktree": path, "branch": branch, "commit": commit, "paths": paths,
                    "message": f"the index of the worktree at {path} ({branch}) holds a staged revert of "
                               f"{', '.join(paths)}: committing there would undo '{subject}' ({commit[:12]}); "
                               f"restore it with 'git -C {path} restore --source=HEAD --staged --worktree -- "
                               f"{' '.join(paths)}' (check 'git -C {path} diff --cached' first)"})
        return found

    # -- locking ----------------------------------------------------------------------------
    def lock(self, timeout: float | None = None, *, holds: float = 0.0) -> _Lock:
        """Serialize writers of this clone (a process that dies releases it with its file descriptor).

        `holds` is how long a writer of this kind may keep the lock retrying its push (the write's
        deadline): without MODELCTL_LOCK_TIMEOUT a waiter waits that long on top of the default,
        so it never gives up on a holder that is still within its own deadline."""
        if timeout is None:
            timeout = lock_timeout(os.environ.get("MODELCTL_LOCK_TIMEOUT"), holds)
        return _Lock(self.lock_path, timeout)

    def lock_status(self) -> LockInfo:
        """The clone lock: whether a live process holds it, and the pid/since it records."""
        return read_lock(self.lock_path)

    @property
    def lock_path(self) -> Path:
        return self.private_path(LOCK_NAME)

    def temp_indexes(self) -> list[tuple[Path, int]]:
        """Temporary indexes of writes in this clone, with the pid that made each (0 when unreadable)."""
        out = []
        for path in sorted(self.git_dir.glob(TEMP_INDEX_PREFIX + "*")):
            pid_text = path.name[len(TEMP_INDEX_PREFIX):].split(".", 1)[0]
            out.append((path, int(pid_text) if pid_text.isdigit() else 0))
        return out

    def git_lock_files(self) -> list[Path]:
        """git's own *.lock files in the git directory (objects/ skipped; modelctl's lock is not git's)."""
        found = []
        for top, dirs, files in os.walk(self.git_dir):
            if Path(top) == self.git_dir:
                dirs[:] = [d for d in dirs if d != "objects"]  # large, and git locks nothing there by name
            for name in files:
                if name.endswith(".lock") and name != LOCK_NAME and not name.startswith(TEMP_INDEX_PREFIX):
                    found.append(Path(top) / name)
        return sorted(found)

    # -- the remote -------------------------------------------------------------------------
    def fetch(self, remote: str, branch: str, timeout: float = 30, models: tuple[str, ...] | None = None,
              extra: tuple[str, ...] = ()) -> str | None:
        """Fetch the branch and the tags (of `models` only, when given); return the remote tip (None if empty).

        `extra` refspecs come along in the same process; make them globs (`refs/x/*`), which match
        nothing without failing, since a missing exact ref fails the whole fetch."""
        if models:
            # a write needs only its model's tags (counters, tagger times, registration commits):
            # fetching every tag costs seconds on registries with tens of thousands of them
            tagspecs = [f"+refs/tags/{m}{sep}*:refs/tags/{m}{sep}*" for m in models for sep in ("@", "#")]
        else:
            tagspecs = ["+refs/tags/*:refs/tags/*"]
        proc = self.git("fetch", "--quiet", "--no-write-fetch-head", "--no-recurse-submodules", remote,
                        f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
                        *tagspecs, *extra, check=False, timeout=timeout)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace")
            if "couldn't find remote ref" in err:
                return None
            blocked = _blocked_by_lock(err)
            if blocked:
                raise blocked
            if self.remote_url(remote) is None:
                raise UsageError(f"no git remote named {remote!r}",
                                 hint=f"add it with 'git remote add {remote} URL' or use --no-push")
            last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
            raise RemoteError(f"cannot fetch from remote {remote!r}: {last}",
                              hint="check the network and 'git remote -v', or use --no-push")
        return self.rev(f"refs/remotes/{remote}/{branch}")

    # -- state on a ref of the remote (never on a branch) --------------------------------------
    def file_at(self, ref: str, name: str) -> bytes | None:
        """The content of file `name` in the commit `ref` points to (None: no such ref or file)."""
        proc = self.git("cat-file", "blob", f"{ref}:{name}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def commit_file(self, name: str, data: bytes, message: str) -> str:
        """A parentless commit holding one file: state that lives on a ref, so no history grows
        (commit_files with one; the state is the controller's, not a person's: a fixed identity,
        so clones without user.name can keep it too)."""
        return self.commit_files([(name, data, message)])[0]

    def push_ref(self, remote: str, commit: str, ref: str, expect: str | None, timeout: float = 30) -> bool:
        """Compare-and-swap `ref` on the remote from `expect` (None: absent) to `commit` (push_refs with one).

        True when it landed (the local ref follows), False when the remote's ref was not `expect`
        (another process saved first); RemoteError when the remote cannot be reached or refuses."""
        return self.push_refs(remote, {ref: (commit, expect)}, timeout=timeout)[ref]

    def commit_files(self, commits: list[tuple[str, bytes, str]]) -> list[str]:
        """Parentless one-file commits like commit_file's, (name, data, message) each, built in one
        `git fast-import` whatever their number; their ids, in order."""
        if not commits:
            return []
        # one scratch branch, emptied before each commit (so each is parentless) and after the last
        # (so fast-import writes no ref at all): the ids come back from get-mark
        scratch = "refs/modelctl-batch/state"
        stream = bytearray()
        for mark, (name, data, message) in enumerate(commits, 1):
            text = message.encode()
            stream += (b"reset %s\ncommit %s\nmark :%d\ncommitter modelctl <modelctl@localhost> now\n"
                       b"data %d\n%s\nM 100644 inline %s\ndata %d\n"
                       % (scratch.encode(), scratch.encode(), mark, len(text), text, name.encode(), len(data)))
            stream += data + b"\n\n"
        stream += b"reset %s\n" % scratch.encode()
        stream += b"".join(b"get-mark :%d\n" % mark for mark in range(1, len(commits) + 1))
        ids = self.out("fast-import", "--quiet", "--date-format=now", input=bytes(stream)).split()
        if len(ids) != len(commits):
            raise GitFailed(f"git fast-import gave {len(ids)} commit id(s) for {len(commits)} commit(s)")
        return ids

    def push_refs(self, remote: str, updates: Mapping[str, tuple[str, str | None]],
                  timeout: float = 30) -> dict[str, bool]:
        """Compare-and-swap many refs on the remote in one atomic push: {ref: (commit, expect)}
        (expect None: absent). Ref -> whether it landed (the local refs that did follow).

        A lease that fails (another process saved that ref first) fails the atomic push whole: the
        push is tried again without those refs, so one contended ref never holds back the others.
        RemoteError when the remote cannot be reached or refuses."""
        result: dict[str, bool] = {}
        todo = dict(updates)
        for _attempt in range(3):  # each retry drops at least one ref; a third lost race is next cycle's
            if not todo:
                break
            leases = [f"--force-with-lease={ref}:{expect or ''}" for ref, (_c, expect) in todo.items()]
            specs = [f"{commit}:{ref}" for ref, (commit, _e) in todo.items()]
            try:
                proc = self.git("push", "--atomic", "--porcelain", "--no-verify", *leases, remote, *specs,
                                check=False, timeout=timeout)
            except GitTimeout:
                raise RemoteError(f"git push of {len(todo)} ref(s) to remote {remote!r} timed out after "
                                  f"{timeout:g}s", hint="check the network") from None
            if proc.returncode == 0:
                self.git("update-ref", "--stdin",
                         input="".join(f"update {ref} {commit}\n" for ref, (commit, _e) in todo.items()).encode())
                result.update(dict.fromkeys(todo, True))
                todo = {}
                break
            said = proc.stdout.decode("utf-8", "replace")
            stale = {line.split("\t")[1].rpartition(":")[2] for line in said.splitlines()
                     if line.startswith("!\t") and line.count("\t") >= 2
                     and ("(stale info)" in line or "(fetch first)" in line or "(non-fast-forward)" in line)}
            stale &= set(todo)
            if not stale:
                # the remote's reason (a hook that declined) rather than git's closing "failed to push"
                refused = [line.split("\t")[2] for line in said.splitlines() if line.startswith("!\t")
                           and line.count("\t") >= 2 and "(atomic push failed)" not in line]
                err = [line for line in proc.stderr.decode("utf-8", "replace").strip().splitlines() if line.strip()]
                raise RemoteError(f"cannot push {len(todo)} ref(s) to remote {remote!r}: "
                                  f"{refused[0] if refused else err[-1] if err else proc.returncode}",
                                  hint="check the network and 'git remote -v'")
            result.update(dict.fromkeys(stale, False))
            todo = {ref: update for ref, update in todo.items() if ref not in stale}
        result.update(dict.fromkeys(todo, False))
        return result

    def remote_tags(self, remote: str, timeout: float = 30) -> dict[str, str]:
        """Tag name -> tag object on the remote (`git ls-remote`)."""
        proc = self.git("ls-remote", "--tags", "--refs", remote, check=False, timeout=timeout)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RemoteError(f"cannot list tags of remote {remote!r}: {err[-1] if err else proc.returncode}",
                              hint="check the network and 'git remote -v'")
        out = {}
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            obj, _, ref = line.partition("\t")
            if ref.startswith("refs/tags/"):
                out[ref[len("refs/tags/"):]] = obj
        return out

    def _push(self, remote: str, refspecs: list[str], timeouts: bool = False) -> str:
        """Atomic push; 'ok', 'retry' when another writer won the race, or raise on a refusal.

        With `timeouts`, a push killed at its time limit answers 'timeout' (the caller asks the
        remote what landed) instead of raising.
        """
        limit = push_timeout()
        try:
            proc = self.git("push", "--atomic", "--porcelain", "--no-verify", remote, *refspecs, check=False,
                            timeout=limit)
        except GitTimeout:
            if timeouts:
                return "timeout"
            raise RemoteError(f"git push to remote {remote!r} timed out after {limit:g}s (MODELCTL_PUSH_TIMEOUT)",
                              hint="run 'modelctl doctor' to see what reached the remote") from None
        if proc.returncode == 0:
            return "ok"
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        verdict, reason = classify_push(out, err)
        if verdict == "retry":
            return "retry"
        said = remote_said(err)
        if verdict == "refused":
            raise RemoteError(f"the remote refused the push ({reason}){': ' + said if said else ''}",
                              hint="nothing was written; fix what the remote says, then run the command again")
        last = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("hint:")]
        raise RemoteError(f"cannot push to remote {remote!r}: {last[-1] if last else proc.returncode}",
                          hint="nothing was written; check the network and 'git remote -v', then run the command again")

    # -- writing ----------------------------------------------------------------------------
    def transact(self, plan_fn: Callable[[Snapshot], Plan], *, push: bool = False, remote: str = "origin",
                 branch: str | None = None, new_branch: str | None = None, deadline: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 models: tuple[str, ...] | None = None, signer: Callable[[bytes], bytes] | None = None) -> Outcome:
        """Evaluate plan_fn on the tip and land its commit and tags atomically (retrying on races).

        `models` names the models whose tags the plan creates; when pushing, only their tags are
        fetched. With a `signer`, the commit is signed by `git commit-tree -S` and every tag
        payload gets the signer's armored signature appended, as `git tag -s` does."""
        self.require_identity()
        if not push and new_branch is None:
            # tag counters and registration commits come from the local tags and history
            self.require_full_history("the tags this write makes (counters, registration commits)")
        with self.lock(holds=deadline):
            # the deadline is for racing other clones' writers; waiting for this clone's lock is
            # the lock timeout's business, so the retries get their whole deadline once it is held
            started = clock()
            self.recover()
            target = replace(self._target(push, remote, branch, new_branch), models=models)
            self._deadline_at = started + deadline
            if target.worktree is not None and target.worktree is not self:
                target.worktree.recover()  # an update of that worktree a killed write left unfinished
            self._signer = signer
            try:
                return self._retry(lambda: self._attempt(plan_fn, target, clock), deadline, sleep, clock, started)
            finally:
                self._signer = None

    def add_tags(self, plan_fn: Callable[[Snapshot], list[TagSpec]], *, push: bool = False, remote: str = "origin",
                 branch: str | None = None, deadline: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, locked: bool = False,
                 signer: Callable[[bytes], bytes] | None = None) -> Outcome:
        """Create tags on commits already in the branch history (doctor --fix), pushed atomically
        (signed by `signer` when given, as in `transact`)."""
        started = clock()
        self.require_full_history("tags rebuilt from the history")
        self.require_identity()
        self._signer = signer
        try:
            if locked:
                return self._add_tags(plan_fn, push, remote, branch, deadline, sleep, clock, started)
            with self.lock(holds=deadline):
                return self._add_tags(plan_fn, push, remote, branch, deadline, sleep, clock, clock())
        finally:
            self._signer = None

    def _add_tags(self, plan_fn: Callable[[Snapshot], list[TagSpec]], push: bool, remote: str, branch: str | None,
                  deadline: float, sleep: Callable[[float], None], clock: Callable[[], float],
                  started: float) -> Outcome:
        target = self._target(push, remote, branch, None)

        def attempt() -> Outcome | None:
            base = self._base(target)
            specs = plan_fn(Snapshot(self, base))
            if not specs:
                return Outcome(None, [], False, True, None, target.branch)
            tags = self._build_tags(specs, int(clock()))
            if push:
                fault("before-push")
                if self._push(remote, [f"{obj}:refs/tags/{name}" for name, obj in tags]) == "retry":
                    return None
            lines = [f"create refs/tags/{name} {obj}" if not push else f"update refs/tags/{name} {obj}"
                     for name, obj in tags]
            proc = self.git("update-ref", "--stdin", input=_ref_txn(lines), check=False)
            if proc.returncode != 0 and not push:
                return None
            return Outcome(base, [n for n, _ in tags], push, False, None, target.branch)

        return self._retry(attempt, deadline, sleep, clock, started)

    def publish(self, remote: str, branch: str, tags: list[str]) -> bool:
        """Push the local branch (fast-forward only) and local tags, atomically; False when the remote diverged."""
        tip = self.rev(f"refs/heads/{branch}")
        if tip is None:
            raise UsageError(f"there is no local branch {branch!r} to publish")
        refspecs = [f"{tip}:refs/heads/{branch}"] + [f"refs/tags/{t}:refs/tags/{t}" for t in tags]
        if self._push(remote, refspecs) == "retry":
            return False
        self.git("update-ref", f"refs/remotes/{remote}/{branch}", tip)
        return True

    def publish_tags(self, remote: str, tags: list[str]) -> bool:
        """Push local tags the remote lacks, atomically; False when a name was taken meanwhile."""
        return self._push(remote, [f"refs/tags/{t}:refs/tags/{t}" for t in tags]) == "ok"

    def delete_local_tags(self, names: list[str]) -> None:
        """Delete local tags in one ref transaction (only ones that never reached a remote)."""
        self.git("update-ref", "--stdin", input=_ref_txn([f"delete refs/tags/{n}" for n in names]))

    def catch_up(self, remote: str, branch: str) -> bool:
        """Fast-forward the local branch (and its clean work tree) to the fetched remote tip."""
        tip = self.rev(f"refs/remotes/{remote}/{branch}")
        if tip is None:
            return False
        target = self._target(False, remote, branch, None)
        return self._advance_local(target, tip, []) == "moved"

    def _retry(self, attempt: Callable[[], Outcome | None], deadline: float, sleep: Callable[[float], None],
               clock: Callable[[], float], started: float) -> Outcome:
        tries = 0
        while True:
            tries += 1
            began = time.monotonic()
            outcome = attempt()
            if outcome is not None:
                outcome.attempts = tries
                outcome.seconds = clock() - started
                return outcome
            delay = backoff(tries, random.random(), time.monotonic() - began)
            if clock() + delay - started > deadline:
                raise Conflict(f"other writers kept changing the registry; gave up after {tries} attempts "
                               f"in {clock() - started:.0f}s, nothing was written", hint="run the command again")
            sleep(delay)

    def _target(self, push: bool, remote: str, branch: str | None, new_branch: str | None) -> _Target:
        current = self.current_branch()
        base_branch = branch or current or "main"
        tree: Store | None = None
        if new_branch is None:
            if current == base_branch and not self.is_bare():
                tree = self
            else:
                # another worktree (git worktree add) may have the branch checked out: moving the
                # branch under it without its index would leave it a staged revert of this write
                path = self.worktrees().get(base_branch)
                tree = Store(path) if path else None
        return _Target(push, remote, base_branch, new_branch, tree is not None, tree)

    def worktree_list(self) -> list[tuple[Path, str | None]]:
        """Every (non-bare) work tree of this repository with its checked-out branch (None: detached)."""
        proc = self.git("worktree", "list", "--porcelain", check=False)
        out: list[tuple[Path, str | None]] = []
        for block in proc.stdout.decode("utf-8", "replace").split("\n\n"):
            lines = block.splitlines()
            if not lines or not lines[0].startswith("worktree ") or "bare" in lines:
                continue
            branch = next((ln[len("branch refs/heads/"):] for ln in lines if ln.startswith("branch refs/heads/")), None)
            out.append((Path(lines[0][len("worktree "):]), branch))
        return out

    def worktrees(self) -> dict[str, Path]:
        """Branch name -> the work tree that has it checked out, over every linked worktree."""
        out: dict[str, Path] = {}
        for path, branch in self.worktree_list():
            if branch:
                out.setdefault(branch, path)
        return out


    def _base(self, t: _Target) -> str | None:
        if not t.push:
            return self.rev(f"refs/heads/{t.branch}")
        fault("before-fetch")
        base = self.fetch(t.remote, t.branch, models=t.models)
        if base is None:
            raise UsageError(f"remote {t.remote!r} has no branch {t.branch!r}",
                             hint=f"publish the registry first ('git push {t.remote} {t.branch}' "
                                  "or 'modelctl doctor --fix --push')")
        return base

    def _attempt(self, plan_fn: Callable[[Snapshot], Plan], t: _Target, clock: Callable[[], float]) -> Outcome | None:
        base = self._base(t)
        snap = Snapshot(self, base)
        plan = plan_fn(snap)
        branch_name = t.new_branch or t.branch
        if plan.noop:
            synced = True
            # a re-run after a crash: the checkout catches up (a push always has a base: _base refuses none)
            if t.push and t.new_branch is None and base is not None:
                synced = self._advance_local(t, base, []) != "left"
            return Outcome(None, [], False, True, plan.result, branch_name, synced=synced)
        now = int(clock())
        touched = sorted(plan.files)
        if t.checked_out and t.worktree is not None:  # (checked_out: there is a worktree)
            dirty = t.worktree.dirty(touched)
            if dirty:
                where = "" if t.worktree is self else f" in the worktree at {t.worktree.root} (it has {t.branch} checked out)"
                raise UsageError(f"{dirty[0]} has uncommitted changes{where}",
                                 hint="commit or stash them first; modelctl writes that file")
        commit = self._build_commit(base, plan, now)
        fault("after-commit-object")
        if t.new_branch:
            return self._land_new_branch(t, t.new_branch, commit, plan)
        tags = self._build_tags([TagSpec(ev, commit) for ev in plan.tags], now)
        fault("after-tag-objects")
        if t.push:
            refspecs = [f"{commit}:refs/heads/{t.branch}"] + [f"{obj}:refs/tags/{name}" for name, obj in tags]
            fault("before-push")
            pushed = self._push(t.remote, refspecs, timeouts=True)
            if pushed == "timeout":
                pushed = self._landed(t, commit, base, clock)
            if pushed == "retry":
                return None
            fault("after-push")
            moved = self._advance_local(t, commit, tags, parent=base)
            return Outcome(commit, [n for n, _ in tags], True, False, plan.result, branch_name,
                           synced=moved != "left")
        moved = self._advance_local(t, commit, tags, cas=True, expect=base)
        if moved == "race":
            return None
        return Outcome(commit, [n for n, _ in tags], False, False, plan.result, branch_name, synced=moved != "left")

    def _landed(self, t: _Target, commit: str, base: str | None, clock: Callable[[], float]) -> str:
        """After a push that timed out: 'ok' if the remote branch has our commit, 'retry' if it cannot.

        A killed `git push` says nothing about the remote: the server may have taken the whole
        atomic update (a slow hook, a slow network) or nothing. Answering from the remote's
        branch keeps a landed write from being reported as failed and re-run. While the branch is
        still at the base, the server may yet accept it: ask again until the write's deadline.
        """
        fault("after-push-timeout")
        attempt = 0
        while True:
            attempt += 1
            proc = self.git("ls-remote", t.remote, f"refs/heads/{t.branch}", check=False, timeout=30)
            tip = proc.stdout.decode().split("\t", 1)[0].strip() or None if proc.returncode == 0 else None
            if proc.returncode == 0:
                if tip == commit:
                    return "ok"
                if tip != base:
                    # another writer moved it: ours landed underneath theirs, or never can (compare-and-swap)
                    fetched = self.fetch(t.remote, t.branch, models=t.models)
                    return "ok" if fetched and self.is_ancestor(commit, fetched) else "retry"
            if clock() + backoff(attempt, random.random(), 0.2) > self._deadline_at:
                raise RemoteError(f"git push to remote {t.remote!r} timed out after {push_timeout():g}s and the "
                                  f"remote's {t.branch} does not have the commit {commit[:12]} (yet)",
                                  hint="run the command again: if the push landed meanwhile it answers 'already "
                                       "done'; 'modelctl doctor' shows what reached the remote")
            time.sleep(backoff(attempt, random.random(), 0.2))  # waiting for the server, not for a test

    def _land_new_branch(self, t: _Target, name: str, commit: str, plan: Plan) -> Outcome:
        if self.rev(f"refs/heads/{name}"):
            raise UsageError(f"branch {name!r} already exists", hint="pick another --branch name")
        lines = [f"create refs/heads/{name} {commit}"]
        if t.push:
            fault("before-push")
            proc = self.git("push", "--porcelain", "--no-verify", t.remote, f"{commit}:refs/heads/{name}",
                            check=False, timeout=60)
            if proc.returncode != 0:
                out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
                verdict, reason = classify_push(out, err)
                if verdict == "retry":
                    raise UsageError(f"branch {name!r} already exists on remote {t.remote!r}",
                                     hint="pick another --branch name")
                said = remote_said(err)
                if verdict == "refused":
                    raise RemoteError(f"the remote refused the push ({reason}){': ' + said if said else ''}",
                                      hint="nothing was written; fix what the remote says, then run the command again")
                raise RemoteError(f"cannot push to remote {t.remote!r}: {(err.strip().splitlines() or ['?'])[-1]}",
                                  hint="check the network and 'git remote -v', then run the command again")
            fault("after-push")
            lines.append(f"update refs/remotes/{t.remote}/{name} {commit}")
        self.git("update-ref", "--stdin", input=_ref_txn(lines))
        return Outcome(commit, [], t.push, False, plan.result, name)

    def _build_commit(self, parent: str | None, plan: Plan, when: int) -> str:
        """Make the commit object for a plan on top of parent, in a temporary index."""
        index = self.git_dir / f"{TEMP_INDEX_PREFIX}{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            if parent:
                self.git("read-tree", parent, env=env)
            else:
                self.git("read-tree", "--empty", env=env)
            fault("during-index")
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
            for leftover in (index, index.with_name(index.name + ".lock")):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        args = ["commit-tree", tree]
        if self._signer is not None:
            args.append("-S")  # git's own signing settings, the ones the signer was made from
        if parent:
            args += ["-p", parent]
        date = f"@{when} +0000"
        env = {"GIT_AUTHOR_DATE": os.environ.get("GIT_AUTHOR_DATE", date),
               "GIT_COMMITTER_DATE": os.environ.get("GIT_COMMITTER_DATE", date)}
        return self.out(*args, input=plan.message().encode("utf-8"), env=env)

    def _tagger(self) -> str:
        if self._ident is None:
            ident = self.out("var", "GIT_COMMITTER_IDENT")
            self._ident = ident.rsplit(" ", 2)[0]  # drop the date: we set our own
        return self._ident

    def _build_tags(self, specs: list[TagSpec], now: int) -> list[tuple[str, str]]:
        """Annotated tag objects: counters and tagger seconds strictly increase per model."""
        made: list[tuple[str, str]] = []
        tagger = self._tagger() if specs else ""
        state: dict[str, list[int]] = {}
        registered: dict[tuple[str, str], str] = {}  # registrations made in this batch
        # the commits of the registration tags that stage and deregistration tags point at, in one
        # for-each-ref (gc archiving many versions asked git once per version)
        made_here = {(s.event.model, s.event.version) for s in specs if s.event.stage is None and s.event.assign}
        targets = self.registration_commits(sorted({
            registration_tag(s.event.model, s.event.version) for s in specs
            if s.target is None and (s.event.stage is not None or not s.event.assign)
            and (s.event.model, s.event.version) not in made_here}))
        for spec in specs:
            ev = spec.event
            if ev.model not in state:
                counter, newest = self.tag_clock(ev.model)
                state[ev.model] = [counter, max(now, newest + 1)]
            counter, when = state[ev.model]
            if ev.stage is None and not ev.assign:  # deregistration (archived): NAME@vX.Y.Z!
                name = registration_tag(ev.model, ev.version) + "!"
                target = spec.target or registered.get((ev.model, ev.version)) or \
                    targets.get(registration_tag(ev.model, ev.version))
                if target is None:
                    raise Conflict(f"{ev.model} {ev.version} has no registration tag; run 'modelctl doctor --fix'")
            elif ev.stage is None:
                name = registration_tag(ev.model, ev.version)
                target = spec.target or spec.commit
                registered[(ev.model, ev.version)] = target
            else:
                name = stage_tag(ev.model, ev.stage, counter, ev.assign)
                state[ev.model][0] += 1
                target = spec.target or registered.get((ev.model, ev.version)) or \
                    targets.get(registration_tag(ev.model, ev.version))
                if target is None:
                    raise Conflict(f"{ev.model} {ev.version} has no registration tag; run 'modelctl doctor --fix'")
            state[ev.model][1] += 1
            text = (f"object {target}\ntype commit\ntag {name}\ntagger {tagger} {when} +0000\n\n"
                    + trailers.message(ev.message.strip(), pairs=[(trailers.COMMIT, spec.commit)]))
            payload = text.encode("utf-8")
            if self._signer is not None:
                # git tag -s: the signature follows the message; git verify-tag checks it over what precedes it
                payload = payload.rstrip(b"\n") + b"\n"
                payload += self._signer(payload)
            made.append((name, self.out("mktag", input=payload)))
        return made

    # -- the local clone after a write ------------------------------------------------------
    def _advance_local(self, t: _Target, new_tip: str, tags: list[tuple[str, str]], *, cas: bool = False,
                       expect: str | None = None, parent: str | None = None) -> str:
        """Move local refs (and a clean checkout) to new_tip: 'moved', 'left' (checkout kept), or 'race'.

        With `cas` (local writes) the branch must still be at `expect`, the tip the commit was
        planned on; otherwise (after a push) the local branch follows only by fast-forward.
        """
        if cas:
            move, old = True, expect
        else:
            old = self.rev(f"refs/heads/{t.branch}")
            move = old is None or old in (new_tip, parent) or self.is_ancestor(old, new_tip)
        sync = None
        tree = t.worktree or self  # the work tree that has the branch checked out follows it
        if move and t.checked_out and old and old != new_tip:
            sync = tree._sync_plan(old, new_tip)
            if sync is None:
                if cas:
                    where = "" if tree is self else f" at {tree.root} (it has {t.branch} checked out)"
                    raise UsageError(f"uncommitted changes in the work tree{where} are in the way of this commit",
                                     hint="commit or stash them first (see 'git status')")
                move = False
            elif sync.paths and (tree.git_dir / "index.lock").exists():
                # the checkout could not follow: refuse a local write, leave the clone behind a pushed one
                if cas:
                    blocked = _blocked_by_lock(f"Unable to create '{tree.git_dir / 'index.lock'}': File exists")
                    assert blocked is not None  # the message is git's own, which _blocked_by_lock recognises
                    raise blocked
                move, sync = False, None
        lines = []
        if move and old != new_tip:
            lines.append(f"update refs/heads/{t.branch} {new_tip} {old or ZERO}")
        if t.push:
            lines.append(f"update refs/remotes/{t.remote}/{t.branch} {new_tip}")
        lines += [f"update refs/tags/{name} {obj}" for name, obj in tags]
        if lines:
            if sync:
                tree._write_journal(t.branch, sync)
            proc = self.git("update-ref", "--stdin", input=_ref_txn(lines), check=False)
            if proc.returncode != 0:
                tree._drop_journal()
                blocked = _blocked_by_lock(proc.stderr.decode("utf-8", "replace"))
                if cas:
                    if blocked:
                        raise blocked
                    return "race"  # another writer moved the branch between plan and update: plan again
                return "left"  # the remote has it; the clone catches up at its next write or doctor --fix
            fault("after-local-refs")
            if sync:
                try:
                    tree._apply_sync(sync)
                except ModelctlError:
                    return "left"  # the journal stays: doctor explains it, the next write finishes it
                tree._drop_journal()
        return "moved" if move else "left"

    def _changes(self, old: str, new: str) -> dict[str, tuple[str | None, tuple[str, str] | None]]:
        """path -> (blob at old or None, (mode, blob) at new or None) for every file that differs."""
        text = self.git("diff", "--raw", "-z", "--no-abbrev", "--no-renames", old, new).stdout.decode("utf-8", "replace")
        fields = text.split("\0")
        out = {}
        for meta, path in zip(fields[0::2], fields[1::2]):
            if not meta.startswith(":"):
                continue
            _, new_mode, old_obj, new_obj, _status = meta[1:].split()
            out[path] = (None if old_obj == ZERO else old_obj,
                         None if new_obj == ZERO else (new_mode, new_obj))
        return out

    def _sync_plan(self, old: str, new: str) -> _Sync | None:
        """How to bring index and work tree from old to new; None when local changes are in the way.

        Each changed path's index entry and work-tree file must already be the old or the new
        version (an untracked copy identical to the new file, such as a prompt that was just
        registered, is fine): anything else is the user's work and is never overwritten.
        """
        changes = self._changes(old, new)
        paths = sorted(changes)
        if not paths:
            return _Sync(old, new, [], {})
        text = self.git("ls-files", "-s", "-z", "--", *paths, env=_LITERAL).stdout.decode("utf-8", "replace")
        index: dict[str, str | None] = {}
        for entry in text.split("\0"):
            if entry:
                meta, path = entry.split("\t", 1)
                mode, obj, stage = meta.split()
                index[path] = obj if stage == "0" else "conflict"
        files: list[str] = []
        kinds: dict[str, str | None] = {}
        for p in paths:
            full = self.root / p
            if not os.path.lexists(full):
                kinds[p] = None
            elif os.path.isfile(full) and not os.path.islink(full):
                files.append(p)
            else:
                kinds[p] = "other"
        if files:
            hashed = self.git("hash-object", "--stdin-paths", input=("\n".join(files) + "\n").encode("utf-8"))
            kinds.update(zip(files, hashed.stdout.decode().split()))
        for p in paths:
            before, after = changes[p]
            allowed = {before, after[1] if after else None}
            if index.get(p) not in allowed or kinds.get(p) not in allowed:
                return None
        return _Sync(old, new, paths, {p: at_new for p in paths if (at_new := changes[p][1])})

    def _apply_sync(self, sync: _Sync) -> None:
        if not sync.paths:
            return
        info = [f"{sync.entries[p][0]} {sync.entries[p][1]}\t{p}" if p in sync.entries else f"0 {ZERO}\t{p}"
                for p in sync.paths]
        self.git("update-index", "--index-info", input=("\n".join(info) + "\n").encode("utf-8"))
        fault("during-sync")
        present = [p for p in sync.paths if p in sync.entries]
        if present:
            self.git("checkout-index", "-f", "-q", "-z", "--stdin", input=("\0".join(present) + "\0").encode("utf-8"))
        for p in sync.paths:
            if p not in sync.entries:
                try:
                    (self.root / p).unlink()
                except FileNotFoundError:
                    pass

    @property
    def journal_path(self) -> Path:
        return self.private_path(JOURNAL_NAME)

    def _write_journal(self, branch: str, sync: _Sync) -> None:
        tmp = self.journal_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"branch": branch, "old": sync.old, "new": sync.new, "paths": sync.paths,
                                   "pid": os.getpid(), "since": int(time.time())}))
        os.replace(tmp, self.journal_path)

    def _drop_journal(self) -> None:
        for p in (self.journal_path, self.journal_path.with_suffix(".tmp")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def journal(self) -> dict[str, Any] | None:
        """The record of a work-tree update that a killed process did not finish, or None."""
        try:
            data = json.loads(self.journal_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) and {"branch", "old", "new", "paths"} <= set(data) else None

    def recover(self) -> str | None:
        """Finish an interrupted work-tree update (call under the lock): 'done', 'stale', 'blocked' or None."""
        j = self.journal()
        if j is None:
            if self.journal_path.with_suffix(".tmp").exists():
                self._drop_journal()
            return None
        if self.rev(f"refs/heads/{j['branch']}") != j["new"] or self.current_branch() != j["branch"]:
            self._drop_journal()  # the ref never moved, or the user has moved on
            return "stale"
        sync = self._sync_plan(j["old"], j["new"])
        if sync is None:
            return "blocked"
        self._apply_sync(sync)
        self._drop_journal()
        return "done"


def _run_group(cmd: list[str], cwd: Path, input: bytes | None, env: dict[str, str],
               timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run a command with a time limit that ends its helpers too (ssh, a local receive-pack).

    Killing only `git` would leave its children holding our pipes, and waiting for them would
    outlast the limit.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:  # the time limit, or an interrupt: the whole group goes
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _close_batch(proc: subprocess.Popen[bytes]) -> None:
    """End a long-lived `cat-file --batch` (EOF on its input makes it exit)."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()


def classify_push(stdout: str, stderr: str) -> tuple[str, str]:
    """Why an atomic push failed: ('retry' | 'refused' | 'error', reason) from its porcelain output.

    Races (another writer moved the branch or took a tag name first, a ref lock held on the
    server) are retried; a hook or policy refusal is final: retrying cannot change its answer.
    """
    reasons = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "!":
            reasons.append(parts[2])
    if not reasons:
        return "error", "no answer"
    # the server's own ref transaction lost to a concurrent push (same ref, same moment)
    server_races = ("failed to update ref", "cannot lock ref", "failed to lock", "incorrect old value",
                    "atomic transaction failed")
    races = ("non-fast-forward", "fetch first", "already exists", "stale info") + server_races
    significant = [r for r in reasons if "atomic push fail" not in r]
    if not significant:
        return "retry", reasons[0]
    for r in significant:
        if "[remote rejected]" in r and not any(s in r for s in server_races):
            return "refused", r.split("(", 1)[-1].rstrip(")") if "(" in r else r
    if all(any(s in r for s in races) for r in significant):
        return "retry", significant[0]
    return "refused", significant[0]


def remote_said(stderr: str) -> str:
    """The remote's own words (hook output) from push stderr, one line, git's boilerplate dropped."""
    said = []
    for line in stderr.splitlines():
        if line.startswith("remote: "):
            text = line[len("remote: "):].strip()
            if text and not text.startswith("error: hook declined"):
                said.append(text)
    return " ".join(" ".join(said).split())[:300]


def _ref_txn(lines: list[str]) -> bytes:
    return ("\n".join(["start", *lines, "prepare", "commit"]) + "\n").encode("utf-8")


class LockInfo(TypedDict):
    """What a lock file says (read_lock)."""

    path: str
    exists: bool
    held: bool  # a live process has it flocked
    pid: int  # 0 when empty, -1 when unreadable
    since: int  # unix seconds, 0 when empty


def read_lock(path: Path) -> LockInfo:
    """What a lock file says: held (a live process has it flocked), pid and since (0 when empty)."""
    info: LockInfo = {"path": str(path), "exists": path.exists(), "held": False, "pid": 0, "since": 0}
    if not info["exists"]:
        return info
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return info
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            info["held"] = True
        raw = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if raw:
        try:
            data = json.loads(raw)
            info["pid"] = int(data.get("pid", 0))
            info["since"] = int(data.get("since", 0))
        except (ValueError, AttributeError, TypeError):
            info["pid"] = -1  # garbage: treat as a stale record
    return info


def lock_timeout(text: str | None, holds: float = 0.0) -> float:
    """MODELCTL_LOCK_TIMEOUT in seconds (default 60 plus `holds`); UsageError for anything but 0..86400."""
    import math

    if text is None or not text.strip():
        return 60.0 + max(holds, 0.0)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value <= 86400):  # also refuses nan
        raise UsageError(f"MODELCTL_LOCK_TIMEOUT={text[:20]!r} is not a number of seconds",
                         hint="set it to a number between 0 and 86400, or unset it")
    return value


class _Lock:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    info = read_lock(self.path)
                    os.close(self.fd)
                    self.fd = None
                    who = f"pid {info['pid']}" if info["pid"] > 0 else "another process"
                    age = f", writing for {int(time.time()) - info['since']}s" if info["since"] else ""
                    raise LockTimeout(f"another modelctl process ({who}{age}) is writing to this clone; "
                                      f"waited {self.timeout:g}s for its lock (MODELCTL_LOCK_TIMEOUT)",
                                      hint="let it finish and run the command again") from None
                time.sleep(0.02)  # waiting for another process, not for a test
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "since": int(time.time())}).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty lock file is not a stale lock
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
