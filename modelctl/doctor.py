"""`doctor`: explain what interrupted writes, crashes and pull-request merges left behind, and repair it.

What it looks at (DESIGN §3, §4):

- the clone: a stale modelctl lock (with its age), git's own `*.lock` files, temporary index
  files and the journal of a work-tree update that a killed write did not finish;
- the remote (when pushing): local commits and tags that never reached it, a local branch that
  diverged from it or is behind it, an unreachable remote;
- tags against deployment files: registration tags missing for registered bundles, stage tags
  that disagree with `deployments/<name>.yaml` (e.g. after a promotion merged through a pull
  request, where no tags could be made) in any GTO view (every version a stage lists, active
  included), deregistration tags missing for archived versions, tags that point outside the
  branch's history. A bundle that would fail a `register` rule is reported and never tagged.

`fix=True` repairs what is safe to repair, under the clone's lock: it removes stale lock and
temporary files, finishes the interrupted work-tree update, pushes unpushed commits and tags
(fast-forward only, atomically), fast-forwards a clone that is behind, deletes local tags that
name commits which never landed, and recreates missing tags through the store's tag builder
(GTO grammar, counters and tagger times increasing). What needs a human (a diverged branch, a
wrong tag already on the remote, whose removal would need a forced update) stays a problem.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import trailers
from .errors import ModelctlError, RemoteError
from .names import NAME_RE, VERSION_RE, semver_key
from .store import JOURNAL_NAME, Snapshot, Store, TagSpec, pid_alive
from .tags import TagEvent, TagRef, registration_tag
from .tags import parse as parse_tag

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import DoctorDocument, DoctorFinding, DoctorRemote
    from .reader import Reader

STALE_AFTER = 120.0  # seconds after which a git *.lock file is taken to be left by a dead process
SLOTS = ("staging", "shadow", "canary")
STAGES = SLOTS + ("active",)  # every stage a version is assigned and unassigned, as GTO reads them


@dataclass
class Finding:
    """One thing doctor noticed: what, how bad, and what --fix does about it."""

    kind: str
    level: str  # error | warning | info
    message: str
    fix: str | None = None  # what --fix does; None: needs a human
    subject: str = ""  # the file, ref or model concerned


@dataclass
class _Context:
    store: Store
    push: bool
    remote: str
    branch: str
    now: float
    stale_after: float
    me: int  # our pid when we hold the lock (fix mode), else 0


def run(reg: Reader, *, fix: bool = False, push: bool | None = None, now: float | None = None,
        stale_after: float = STALE_AFTER) -> DoctorDocument:
    """Inspect the clone, its remote and its tags; with fix=True repair what is safe; return the report."""
    remote = reg.config().remote
    push = remote.push if push is None else push
    store = reg.store
    branch = remote.branch if push else (store.current_branch() or remote.branch)
    ctx = _Context(store, push, remote.name, branch, time.time() if now is None else now, stale_after, 0)
    if not fix:
        findings, info = _inspect(reg, ctx)
        return _report(findings, info, [], False)
    store.require_full_history("tags rebuilt from it")  # never a tag on a shallow boundary commit
    before = _local_files(ctx)  # the lock's record is overwritten once we take it
    fixed: list[str] = []
    with store.lock():
        ctx.me = os.getpid()
        fixed += [f"released the stale modelctl lock ({f.message.split(': ', 1)[-1]})"
                  for f in before if f.kind == "stale-lock"]
        fixed += _fix_local(reg, ctx)
        findings, info = _inspect(reg, ctx)
        repaired = False
        if push and info.get("reachable"):
            done = _fix_remote(reg, ctx, findings, info)
            fixed += done
            repaired = bool(done)
        if repaired or any(f.kind in ("missing-tag", "tag-drift") for f in findings):
            fixed += _fix_tags(reg, ctx, float(remote.deadline))
            findings, info = _inspect(reg, ctx)
    return _report(findings, info, fixed, True)


def _report(findings: list[Finding], info: DoctorRemote, fixed: list[str], fix: bool) -> DoctorDocument:
    problems = [f for f in findings if f.level == "error"]
    # a Finding's fields are DoctorFinding's keys; `level` is one of its three literals by construction
    rows = [cast("DoctorFinding", asdict(f)) for f in findings]
    return {"ok": not problems, "fix": fix, "remote": info, "problems": len(problems), "fixed": fixed,
            "findings": rows}


# -- inspection ------------------------------------------------------------------------------

def _inspect(reg: Reader, ctx: _Context) -> tuple[list[Finding], DoctorRemote]:
    findings = _local_files(ctx)
    findings += [Finding("staged-revert", "error", f["message"], None, f["worktree"])
                 for f in ctx.store.staged_reverts()]
    info: DoctorRemote = {"push": ctx.push, "name": ctx.remote if ctx.push else None, "branch": ctx.branch,
                  "url": None, "reachable": None, "local": ctx.store.rev(f"refs/heads/{ctx.branch}"),
                  "remote": None, "ahead": 0, "behind": 0, "checked": None}
    tip = info["local"]
    unpushed: set[str] = set()
    if ctx.push:
        tip, unpushed = _remote(ctx, findings, info)  # fetches: tags are read afterwards
    all_tags = [t for t in ctx.store.tag_refs() if parse_tag(t.name)]
    local_only = {t.name: t for t in all_tags if t.name in unpushed}
    info["checked"] = tip
    if tip:
        findings += _tag_findings(reg, ctx, tip, all_tags, local_only)
        findings += _signature_findings(reg, tip)
    return findings, info


SIGNATURES_SCANNED = 200  # the newest commits changing what serves: doctor is a quick look, check the full one


def _signature_findings(reg: Reader, tip: str) -> list[Finding]:
    """Recent changes to deployments/ or rendered/ not signed by an allowed key (only when the registry
    has .modelctl/allowed_signers; `check --require-signatures` judges the whole range)."""
    from . import signing

    raw = reg.store.read_many(tip, [signing.ALLOWED_SIGNERS])[signing.ALLOWED_SIGNERS]
    if raw is None:
        return []
    try:
        signing.parse_allowed_signers(raw)
    except ModelctlError as exc:
        return [Finding("allowed-signers", "error", exc.message, None, signing.ALLOWED_SIGNERS)]
    start = signing.adoption(reg.store, tip)
    paths = ["deployments/", reg.config().render.dir.rstrip("/") + "/"]
    revs = [f"--max-count={SIGNATURES_SCANNED}", tip] + ([f"^{start}"] if start else [])
    return [Finding("unsigned-change", "warning",
                    f"commit {record.commit[:12]} {record.subject!r} by {record.committer_email}: {verdict.reason}",
                    None, next((p for p in record.paths if p.startswith(tuple(paths))), record.commit))
            for record, verdict in signing.verify(reg.store, revs, paths) if not verdict.ok]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _rel(ctx: _Context, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.store.root))
    except ValueError:
        return str(path)


def _local_files(ctx: _Context) -> list[Finding]:
    """Lock files, temporary indexes and an unfinished work-tree update in the git directory."""
    out: list[Finding] = []
    lock = ctx.store.lock_status()
    writer = lock["pid"] if lock["held"] else 0  # a live modelctl write owns its files
    lock_path = _rel(ctx, ctx.store.lock_path)
    if lock["held"] and lock["pid"] != ctx.me:
        out.append(Finding("lock-held", "info", f"a modelctl write is in progress: pid {lock['pid']} has held "
                           f"{lock_path} for {_age(ctx.now - lock['since'])}", subject=lock_path))
    elif not lock["held"] and lock["pid"]:
        since = f"taken {_age(ctx.now - lock['since'])} ago" if lock["since"] else "of unknown age"
        who = f"pid {lock['pid']}" if lock["pid"] > 0 else "an unreadable record"
        out.append(Finding("stale-lock", "error", f"stale modelctl lock {lock_path}: {who}, {since}, "
                           "died without releasing it", fix="clear it", subject=lock_path))
    for path, pid in ctx.store.temp_indexes():
        if pid and pid == writer and pid_alive(pid):
            continue
        out.append(Finding("temp-index", "error", f"leftover temporary index {_rel(ctx, path)} of a killed write "
                           f"(pid {pid or '?'}, {_age(ctx.now - _mtime(path))} old)", fix="remove it",
                           subject=_rel(ctx, path)))
    journal = ctx.store.journal()
    if journal is not None and not (journal.get("pid") == writer and pid_alive(writer)):
        new = str(journal["new"])[:12]
        out.append(Finding("interrupted-sync", "error",
                           f"a write killed {_age(ctx.now - journal.get('since', ctx.now))} ago moved {journal['branch']} "
                           f"to {new} but did not update the work tree ({len(journal['paths'])} file(s)); "
                           "'git status' shows those changes reversed", fix="finish the work-tree update",
                           subject=_rel(ctx, ctx.store.journal_path)))
    for path in ctx.store.git_lock_files():
        age = ctx.now - _mtime(path)
        rel = _rel(ctx, path)
        if age >= ctx.stale_after:
            out.append(Finding("git-lock", "error", f"stale git lock file {rel} ({_age(age)} old): git commands "
                               "that need it fail until it is removed", fix="remove it", subject=rel))
        else:
            out.append(Finding("git-lock-fresh", "info", f"git lock file {rel} is {_age(age)} old: a git command "
                               "is probably running", subject=rel))
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _remote(ctx: _Context, findings: list[Finding], info: DoctorRemote) -> tuple[str | None, set[str]]:
    """Compare the local branch and tags with the remote; return the tip to check tags against."""
    store = ctx.store
    info["url"] = store.remote_url(ctx.remote)
    local = info["local"]
    if info["url"] is None:
        findings.append(Finding("no-remote", "error", f"pushing is on but there is no git remote named {ctx.remote!r}",
                                subject=ctx.remote))
        return local, set()
    # what this clone last saw on the remote: if the remote has gone back since, someone dropped
    # those commits on purpose, and pushing them again would undo that
    seen = store.rev(f"refs/remotes/{ctx.remote}/{ctx.branch}")
    try:
        remote_tip = store.fetch(ctx.remote, ctx.branch)
        remote_tags = store.remote_tags(ctx.remote)
    except RemoteError as exc:
        info["reachable"] = False
        findings.append(Finding("remote-unreachable", "error", f"{exc.message}; the comparison with the remote "
                                "was skipped", subject=ctx.remote))
        return local, set()
    except ModelctlError as exc:  # a lock file in the way of the fetch: already reported above
        info["reachable"] = False
        findings.append(Finding("fetch-blocked", "error", str(exc), subject=ctx.remote))
        return local, set()
    info["reachable"] = True
    info["remote"] = remote_tip
    where = f"{ctx.remote}/{ctx.branch}"
    if (seen and local and seen != remote_tip and store.is_ancestor(seen, local)
            and (remote_tip is None or not store.is_ancestor(seen, remote_tip))):
        dropped = store.count_commits(seen if remote_tip is None else f"{remote_tip}..{seen}")
        gone = f"no longer has branch {ctx.branch!r}" if remote_tip is None else f"no longer has {dropped} commit(s)"
        findings.append(Finding("remote-dropped", "error", f"{where} {gone} that it had when this clone last fetched; "
                                "someone removed them from the remote, so doctor will not push them back: if they "
                                f"belong there, 'git push {ctx.remote} {ctx.branch}' yourself, else 'git reset --keep "
                                f"{where}'", subject=ctx.branch))
    elif remote_tip is None:
        if local:
            count = store.count_commits(local)
            findings.append(Finding("unpushed-commits", "error", f"the remote has no branch {ctx.branch!r}: "
                                    f"{count} local commit(s) never reached it", fix=f"push {ctx.branch}",
                                    subject=ctx.branch))
    elif local and local != remote_tip:
        ahead, behind = store.ahead_behind(local, remote_tip)
        info["ahead"], info["behind"] = ahead, behind
        subjects = store.subjects(f"{remote_tip}..{local}", 3)
        listed = "; ".join(subjects) + (" ..." if ahead > 3 else "")
        if ahead and behind:
            findings.append(Finding("diverged", "error", f"local {ctx.branch} and {where} diverged: {ahead} local "
                                    f"commit(s) never reached the remote ({listed}) and {behind} remote commit(s) "
                                    "are missing locally; re-run those commands (they re-plan on the remote tip), "
                                    f"then 'git reset --keep {where}'", subject=ctx.branch))
        elif ahead:
            findings.append(Finding("unpushed-commits", "error", f"{ahead} local commit(s) on {ctx.branch} never reached "
                                    f"{where}: {listed}", fix=f"push {ctx.branch} (fast-forward)", subject=ctx.branch))
        elif behind:
            findings.append(Finding("behind", "info", f"local {ctx.branch} is {behind} commit(s) behind {where}",
                                    fix="fast-forward it", subject=ctx.branch))
    local_only = {t.name for t in store.tag_refs() if parse_tag(t.name) and remote_tags.get(t.name) != t.object}
    return remote_tip or local, local_only


def _tag_findings(reg: Reader, ctx: _Context, tip: str, all_tags: list[TagRef], local_only: dict[str, TagRef]) -> list[Finding]:
    store = ctx.store
    out: list[Finding] = []
    history = store.reachable(tip)
    local_history = history
    if ctx.push and local_only:
        local = store.rev(f"refs/heads/{ctx.branch}")
        local_history = history | (store.reachable(local) if local else set())
    for t in all_tags:
        if t.name in local_only:
            if t.commit in history:
                out.append(Finding("unpushed-tag", "error", f"tag {t.name} never reached the remote",
                                   fix="push it", subject=t.name))
            elif t.commit in local_history:
                out.append(Finding("unpushed-tag", "error", f"tag {t.name} never reached the remote (it names an "
                                   "unpushed commit)", fix="push it with the branch", subject=t.name))
            else:
                out.append(Finding("tag-outside-history", "error", f"local tag {t.name} points at {t.commit[:12]}, "
                                   f"which is not in the history of {ctx.branch} (a write that never landed)",
                                   fix="delete the local tag", subject=t.name))
        elif t.commit not in history:
            where = f"{ctx.remote}/{ctx.branch}" if ctx.push else ctx.branch
            out.append(Finding("tag-outside-history", "error", f"tag {t.name} points at {t.commit[:12]}, which is not "
                               f"in the history of {where}; after review delete it"
                               + (f" with 'git push {ctx.remote} :refs/tags/{t.name}'" if ctx.push else
                                  f" with 'git tag -d {t.name}'"), subject=t.name))
    visible = [t for t in all_tags if t.commit in history and t.name not in local_only]
    _specs, drift = repairs(reg, Snapshot(store, tip), visible)
    return out + drift


def repairs(reg: Reader, snap: Snapshot, tags: list[TagRef]) -> tuple[list[TagSpec], list[Finding]]:
    """Tags missing at a snapshot (registration tags of its bundles, stage tags its deployment files
    imply) as specs for the store's tag builder, with one finding each."""
    store = reg.store
    specs: list[TagSpec] = []
    findings: list[Finding] = []
    tip = snap.commit
    if tip is None:  # an empty snapshot has nothing to tag
        return specs, findings
    registered: dict[tuple[str, str], str] = {}  # (model, version) -> registration commit
    deregistered: set[tuple[str, str]] = set()
    stage_events: dict[str, list[tuple[int, str, bool, str]]] = {}  # model -> (n, stage, assign, commit)
    for t in tags:
        info = parse_tag(t.name)
        if info is None:  # callers pass modelctl tags only
            continue
        if info["kind"] == "registration":
            registered[(info["model"], info["version"])] = t.commit
        elif info["kind"] == "deregistration":
            deregistered.add((info["model"], info["version"]))
        else:
            stage_events.setdefault(info["model"], []).append((info["n"], info["stage"], info["assign"], t.commit))
    # -- registration tags for every bundle at the tip
    bundles = [p for p in store.list_files(tip, "bundles") if p.count("/") == 2 and p.endswith(".yaml")]
    missing = []
    for path in bundles:
        _, model, file = path.split("/")
        version = file[:-5]
        if NAME_RE.match(model) and VERSION_RE.match(version) and (model, version) not in registered:
            missing.append((model, version, path))
    if missing:
        from .ops import registration_problem

        added = store.adding_commits(tip, [p for _, _, p in missing])
        for model, version, path in missing:
            commit = added.get(path)
            if commit is None:
                continue
            # a bundle merged by hand gets its tag only if `register` would have accepted it
            multi = trailers.parse(store.commit_message(commit)[1]).get(trailers.MULTI_CHANGE) == "allowed"
            problem = registration_problem(reg, snap, path, allow_multi_change=multi)
            if problem:
                findings.append(Finding("invalid-bundle", "error", f"{path} (added in {commit[:12]}) fails a register "
                                        f"rule, so it gets no registration tag: {problem}; fix the bundle "
                                        "(or register a new version) and run 'modelctl doctor --fix' again",
                                        subject=model))
                continue
            registered[(model, version)] = commit
            findings.append(Finding("missing-tag", "error", f"registration tag {registration_tag(model, version)} is "
                                    f"missing for {path} (added in {commit[:12]})", fix="create it", subject=model))
            specs.append(TagSpec(TagEvent(model, version, None, True,
                                          trailers.message(f"modelctl: register {model} {version}",
                                                           pairs=[(trailers.ACTION, "register"),
                                                                  (trailers.REPAIR, "doctor")])), commit, commit))
    # -- stage tags against each deployment file
    by_commit: dict[tuple[str, str], list[str]] = {}
    for (model, version), commit in registered.items():
        by_commit.setdefault((model, commit), []).append(version)
    deployments = [n[:-5] for n in snap.list("deployments") if n.endswith(".yaml") and NAME_RE.match(n[:-5])]
    for model in deployments:
        try:
            dep = reg.deployment(model, snap)
        except ModelctlError:
            continue  # an invalid file: 'modelctl check' explains it
        if not dep:
            continue
        events = sorted(stage_events.get(model, []))
        view = _tag_view(events, model, by_commit)
        wanted = _deployment_view(dep)
        fixes: list[tuple[str | None, str, bool]] = []  # (stage, version, assign); stage None: deregistration
        # unassignments first, so the assignment that follows is the latest in its stage (GTO's view)
        for stage in STAGES:
            for v in sorted(view[stage] - wanted[stage], key=semver_key):
                fixes.append((stage, v, False))
        for stage in STAGES:
            for v in sorted(wanted[stage] - view[stage], key=semver_key):
                fixes.append((stage, v, True))
        archived = {v for v, st in (dep.get("versions") or {}).items() if st == "archived"}
        dereg = {v for (m, v) in deregistered if m == model}
        for v in sorted(dereg - archived, key=semver_key):
            findings.append(Finding("tag-drift", "error", f"tag {model}@v{v}! deregisters {v} but "
                                    f"deployments/{model}.yaml says {(dep.get('versions') or {}).get(v) or 'nothing'}"
                                    f"; after review delete the tag", subject=model))
        for v in sorted(archived - dereg, key=semver_key):
            fixes.append((None, v, False))
        if not fixes:
            continue
        state_commit = store.last_change(tip, f"deployments/{model}.yaml")
        if state_commit is None:  # cannot happen: the file is at the tip, so some commit changed it
            continue
        for slot, version, assign in fixes:
            if (model, version) not in registered:
                findings.append(Finding("tag-drift", "error", f"deployments/{model}.yaml puts {version} in "
                                        f"{slot or 'archived'} but {model} {version} has no registration tag to "
                                        "go with it", subject=model))
                continue
            if slot is None:
                findings.append(Finding("tag-drift", "error", f"deployments/{model}.yaml says {version} is archived "
                                        f"but no tag {model}@v{version}! deregisters it",
                                        fix=f"create the deregistration tag of {version}", subject=model))
                specs.append(TagSpec(TagEvent(model, version, None, False,
                                              trailers.message(f"modelctl: deregister {model} {version} (repair)",
                                                               pairs=[(trailers.ACTION, "repair"),
                                                                      (trailers.EVENT, "deregister")])),
                                     state_commit, registered[(model, version)]))
                continue
            said = _said(view, slot)
            findings.append(Finding("tag-drift", "error", f"deployments/{model}.yaml says {slot} "
                                    f"{_said(wanted, slot)} but the tags say {said} (a change merged without tags?)",
                                    fix=f"create {'an assignment' if assign else 'an unassignment'} tag of {version} "
                                        f"in {slot}", subject=model))
            percent = (dep.get(slot) or {}).get("percent") if slot in ("canary", "shadow") and assign else None
            pairs = [(trailers.ACTION, "repair"), (trailers.STAGE, slot)]
            if percent is not None:
                pairs.append((trailers.PERCENT, str(percent)))
            message = trailers.message(f"modelctl: {'assign' if assign else 'unassign'} {model} {version} {slot} "
                                       "(repair)", pairs=pairs)
            specs.append(TagSpec(TagEvent(model, version, slot, assign, message), state_commit,
                                 registered[(model, version)]))
    return specs, findings


def _said(view: dict[str, set[str]], stage: str) -> str:
    value = view[stage]
    if isinstance(value, set):
        return ", ".join(sorted(value, key=semver_key)) or "none"
    return value or "none"


def _tag_view(events: list[tuple[int, str, bool, str]], model: str,
              by_commit: dict[tuple[str, str], list[str]]) -> dict[str, set[str]]:
    """What the stage tags say, the way GTO reads them: per stage, the versions whose last event is an assignment."""
    last: dict[tuple[str, str], tuple[int, bool]] = {}
    for n, stage, assign, commit in events:
        versions = by_commit.get((model, commit), [])
        if len(versions) != 1:
            continue  # no (or an ambiguous) registration on that commit
        last[(stage, versions[0])] = (n, assign)
    return {s: {v for (st, v), (_, a) in last.items() if st == s and a} for s in STAGES}


def _deployment_view(dep: dict[str, Any]) -> dict[str, set[str]]:
    versions = dep.get("versions") or {}
    view: dict[str, set[str]] = {s: {v for v, st in versions.items() if st == s} for s in SLOTS}
    for s in ("canary", "shadow"):
        if dep.get(s):
            view[s].add(dep[s]["version"])
    view["active"] = {dep["active"]} if dep.get("active") else set()
    return view


def _fix_local(reg: Reader, ctx: _Context) -> list[str]:
    """Remove leftovers of dead processes and finish an interrupted work-tree update (under the lock)."""
    store = ctx.store
    done = []
    for f in _local_files(ctx):
        path = store.root / f.subject if not os.path.isabs(f.subject) else Path(f.subject)
        if f.kind in ("temp-index", "git-lock"):
            try:
                path.unlink()
                done.append(f"removed {f.subject}")
            except FileNotFoundError:
                pass
        elif f.kind == "interrupted-sync":
            result = store.recover()
            if result == "done":
                done.append("finished the interrupted work-tree update")
            elif result == "stale":
                done.append(f"removed {JOURNAL_NAME}: the interrupted update no longer applies")
    return done


def _fix_remote(reg: Reader, ctx: _Context, findings: list[Finding], info: DoctorRemote) -> list[str]:
    store = ctx.store
    done = []
    kinds = {f.kind for f in findings}
    unpushed_tags = [f.subject for f in findings if f.kind == "unpushed-tag"]
    if "unpushed-commits" in kinds:
        if store.publish(ctx.remote, ctx.branch, unpushed_tags):
            done.append(f"pushed {ctx.branch} to {ctx.remote}" + (f" with {len(unpushed_tags)} tag(s)"
                                                                   if unpushed_tags else ""))
            unpushed_tags = []
    elif unpushed_tags and "diverged" not in kinds and "remote-dropped" not in kinds:
        pushable = [f.subject for f in findings if f.kind == "unpushed-tag" and "unpushed commit" not in f.message]
        if pushable and store.publish_tags(ctx.remote, pushable):
            done.append(f"pushed {len(pushable)} tag(s) to {ctx.remote}")
    if "behind" in kinds:
        if store.catch_up(ctx.remote, ctx.branch):
            done.append(f"fast-forwarded {ctx.branch} to {ctx.remote}/{ctx.branch}")
    stray = [f.subject for f in findings if f.kind == "tag-outside-history" and f.fix]
    if stray:
        store.delete_local_tags(stray)
        done.append(f"deleted {len(stray)} local tag(s) that named commits which never landed: {', '.join(stray)}")
    return done


def _fix_tags(reg: Reader, ctx: _Context, deadline: float) -> list[str]:
    store = ctx.store

    def plan(snap: Snapshot) -> list[TagSpec]:
        if snap.commit is None:
            return []
        history = store.reachable(snap.commit)
        tags = [t for t in store.tag_refs() if parse_tag(t.name) and t.commit in history]
        if ctx.push:  # only what the remote holds counts; re-read on every attempt
            on_remote = store.remote_tags(ctx.remote)
            tags = [t for t in tags if on_remote.get(t.name) == t.object]
        specs, _ = repairs(reg, snap, tags)
        return specs

    from .ops import signer_for

    try:
        out = store.add_tags(plan, push=ctx.push, remote=ctx.remote, branch=ctx.branch, deadline=deadline,
                             locked=True, signer=signer_for(reg.config(), store))
    except RemoteError:
        return []
    if out.noop or not out.tags:
        return []
    return [f"created tag {t}" + (" (pushed)" if out.pushed else "") for t in out.tags]
