"""State-changing operations: each loads, validates, plans one commit with its tags, and stores it.

Every check happens inside the plan function, which the store evaluates on the tip the commit
will extend (the remote tip when pushing), so a race re-checks everything from scratch.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from . import bundle as bundlemod
from . import config as configmod
from . import schema, yamlio
from .errors import Conflict, UsageError, ValidationError
from .names import check_name, check_version, clean_text
from .registry import Registry, deployment_path
from .store import Outcome, Plan, Snapshot, Store
from .tags import TagEvent, registration_tag


@dataclass
class WriteOptions:
    """How a write lands: pushed or local, on the base branch or a new review branch."""

    push: bool | None = None  # None: modelctl.yaml remote.push
    branch: str | None = None  # --branch: commit on a new branch, no tags


def _land(reg: Registry, plan_fn, opts: WriteOptions) -> Outcome:
    """Run a plan through the store with the remote settings of modelctl.yaml."""
    cfg = reg.config()
    remote = cfg["remote"]
    push = remote["push"] if opts.push is None else opts.push
    if opts.branch is not None:
        _check_branch_name(reg.store, opts.branch)
    base = remote["branch"] if push else None
    return reg.store.transact(plan_fn, push=push, remote=remote["name"], branch=base,
                              new_branch=opts.branch, deadline=float(remote.get("deadline", 30)))


def _check_branch_name(store: Store, name: str) -> None:
    if not name or name.startswith("-") or store.git("check-ref-format", "--branch", name, check=False).returncode:
        raise UsageError(f"invalid branch name {name!r}", hint="use a plain git branch name such as promote/support-agent-2.4.0")


# -- init -----------------------------------------------------------------------------------

def init(directory: str | os.PathLike) -> dict:
    """Create a registry in an empty (or new) directory from the shipped template."""
    from .schema import data_path

    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    if target.exists():
        entries = [e for e in os.listdir(target) if e != ".git"]
        if (target / "modelctl.yaml").exists():
            raise UsageError(f"{target} already holds a modelctl registry", hint="use it, or pick an empty directory")
        if entries:
            raise UsageError(f"{target} is not empty ({len(entries)} entries)",
                             hint="run 'modelctl init' in a new or empty directory")
        if (target / ".git").exists() and Store(target).rev("HEAD"):
            raise UsageError(f"{target} is a git repository with commits", hint="pick a new or empty directory")
    target.mkdir(parents=True, exist_ok=True)
    store = Store(target)
    if not (target / ".git").exists():
        store.git("init", "--quiet", "--initial-branch=main")
    files: dict[str, bytes] = {}
    template = data_path("registry-template")

    def collect(node, prefix=""):
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = prefix + child.name
            if child.is_dir():
                collect(child, rel + "/")
            elif child.name not in ("__pycache__",):
                files[rel] = child.read_bytes()

    collect(template)
    branch = store.current_branch() or "main"
    plan = Plan(files=files, subject="modelctl: init registry", trailers=[("Modelctl-Action", "init")])
    outcome = store.transact(lambda snap: plan, branch=branch)
    store.git("read-tree", "-u", "--reset", "HEAD")
    return {"path": str(target.resolve()), "commit": outcome.commit, "files": sorted(files)}


# -- register -------------------------------------------------------------------------------

def _read_input(path: str | os.PathLike) -> tuple[bytes, str]:
    shown = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read bundle file ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{shown}: not a regular file")
    if st.st_size > yamlio.MAX_BYTES:
        raise ValidationError(f"{shown}: file is {st.st_size} bytes; the limit is {yamlio.MAX_BYTES}")
    with open(path, "rb") as fh:
        return fh.read(), shown


def _worktree_file(root: Path, rel: str, source: str, field_name: str) -> bytes | None:
    """A file in the work tree at `rel`, refusing symlinks anywhere on the way."""
    cur = root
    for part in rel.split("/"):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise ValidationError(f"{source}: {field_name}: {rel} is (or passes through) a symlink; "
                                  "commit the real file instead")
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"{source}: {field_name}: {rel} is not a regular file")
    if st.st_size > 10 * 1024 * 1024:
        raise ValidationError(f"{source}: {field_name}: {rel} is larger than 10 MiB")
    return cur.read_bytes()


def _referenced(reg: Registry, snap: Snapshot, rel: str, source: str, field_name: str) -> tuple[bytes, bool]:
    """Content of a file a bundle references: committed at the tip, or new in the work tree."""
    bundlemod.check_repo_path(rel, field_name, source)
    mode = reg.store.out("ls-tree", snap.commit, "--", rel) if snap.commit else ""
    if mode:
        if mode.startswith("120000"):
            raise ValidationError(f"{source}: {field_name}: {rel} is a symlink in the registry; use a real file")
        content = snap.read(rel)
        if content is not None:
            return content, False
    content = _worktree_file(reg.root, rel, source, field_name)
    if content is None:
        raise ValidationError(f"{source}: {field_name}: {rel} does not exist in the registry",
                              hint="add the file (paths are relative to the registry root)")
    return content, True


def register(reg: Registry, file: str | os.PathLike, *, bump: str | None = None, allow_multi_change: bool = False,
             message: str | None = None, opts: WriteOptions | None = None) -> Outcome:
    """Validate a bundle file and commit it as a new immutable version with its registration tag."""
    opts = opts or WriteOptions()
    raw, source = _read_input(file)
    doc = yamlio.loads(raw, source)
    data = doc.data
    if not isinstance(data, dict):
        raise ValidationError(f"{source}:1: a bundle must be a mapping of fields")
    name = data.get("name")
    if not isinstance(name, str):
        raise ValidationError(f"{source}:{doc.line_of(('name',)) or 1}: name: required, a model name string")
    try:
        check_name(name)
    except UsageError as exc:
        raise ValidationError(f"{source}:{doc.line_of(('name',))}: name: {exc}") from None
    if bump is not None and bump not in bundlemod.LEVELS:
        raise UsageError(f"invalid --bump {bump!r}", hint="use major, minor or patch")
    if bump is None:
        if "version" in data and not isinstance(data["version"], str):
            schema.validate(doc, "Bundle")  # explains 1.10-style numbers with file and line
        try:
            check_version(data.get("version"))
        except UsageError as exc:
            raise ValidationError(f"{source}:{doc.line_of(('version',)) or 1}: version: {exc}") from None
    elif not isinstance(data.get("parent"), str):
        raise ValidationError(f"{source}: --bump needs a 'parent' version to bump from")
    text = raw.decode("utf-8")
    body = clean_text(message, 2000)

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        work = dict(data)
        parent_data = None
        change = None
        if work.get("parent") is not None:
            parent = check_version(work["parent"])
            parent_data = reg.load_yaml(snap, bundlemod.bundle_path(name, parent), "Bundle")
            if parent_data is None:
                raise ValidationError(f"{source}:{doc.line_of(('parent',))}: parent: {name} has no version {parent}",
                                      hint="register the parent first, or fix 'parent'")
        if bump is not None:
            work["version"] = bundlemod.bump(work["parent"], bump)
        version = work["version"]
        schema.validate(yamlio.Document(work, source, doc.lines, doc.raw), "Bundle")
        bundlemod.check_pinned(work["model"], cfg["pinning"], source, doc.line_of(("model", "id")))
        for fb in work.get("fallbacks") or []:
            bundlemod.check_pinned(fb, cfg["pinning"], source, doc.line_of(("fallbacks",)))
        files: dict[str, bytes | None] = {}
        prompt_rel = work["prompt"]["template"]
        prompt, new_prompt = _referenced(reg, snap, prompt_rel, source, "prompt.template")
        digest = bundlemod.sha256(prompt)
        given = work["prompt"].get("sha256")
        if given and given != digest:
            raise ValidationError(f"{source}:{doc.line_of(('prompt', 'sha256'))}: prompt.sha256 does not match "
                                  f"{prompt_rel} (file is {digest[:12]}...)",
                                  hint="remove prompt.sha256 and let register fill it in")
        work["prompt"] = {**work["prompt"], "sha256": digest}
        if new_prompt:
            files[prompt_rel] = prompt
        if work.get("eval", {}).get("report"):
            report_rel = work["eval"]["report"]
            report, new_report = _referenced(reg, snap, report_rel, source, "eval.report")
            if new_report:
                files[report_rel] = report
        trailers = [("Modelctl-Action", "register"), ("Modelctl-Model", name), ("Modelctl-Version", version)]
        if parent_data is not None:
            change = bundlemod.classify(parent_data, work)
            if len(change.kinds) > 1 and not allow_multi_change:
                raise ValidationError(
                    f"{source}: {version} changes {' and '.join(change.kinds)} against its parent {work['parent']} "
                    f"({'; '.join(change.detail)})",
                    hint="change one variable at a time, or pass --allow-multi-change")
            bundlemod.check_semver(work["parent"], version, change.level, source)
            trailers.append(("Modelctl-Parent", work["parent"]))
            trailers.append(("Modelctl-Change", ",".join(change.kinds) or "none"))
            if change.level:
                trailers.append(("Modelctl-Semver", change.level))
            if allow_multi_change and len(change.kinds) > 1:
                trailers.append(("Modelctl-Multi-Change", "allowed"))
        path = bundlemod.bundle_path(name, version)
        stored = snap.read(path)
        if stored is not None and stored == yamlio.dumps(work, text).encode("utf-8"):
            # the same bundle again (a re-run after a crash or a lost reply): already done
            commit = reg.store.rev(f"refs/tags/{registration_tag(name, version)}") or snap.commit
            return Plan(noop=True, result={"name": name, "version": version, "path": path,
                                           "note": f"{name} {version} is already registered with this bundle "
                                                   f"(commit {commit[:12]})"})
        if stored is not None or reg.store.rev(f"refs/tags/{registration_tag(name, version)}"):
            raise ValidationError(f"version {version} of {name} exists; registered bundles are immutable",
                                  hint="pick a new version or use --bump")
        from . import state  # the lifecycle owns the deployment file

        dep_path = deployment_path(name)
        dep_raw = snap.read(dep_path)
        dep = schema.validate(yamlio.loads(dep_raw, dep_path), "Deployment") if dep_raw else state.new_deployment(name)
        transition = state.register(dep, version)
        files[path] = yamlio.dumps(work, text).encode("utf-8")
        files[dep_path] = yamlio.dumps(transition.deployment, dep_raw.decode() if dep_raw else None).encode("utf-8")
        _scan_secrets(files)
        subject = f"modelctl: register {name} {version}"
        return Plan(files=files, subject=subject, body=body, trailers=trailers,
                    tags=[TagEvent(name, version, None, True, f"{subject}\n\nModelctl-Action: register")],
                    result={"name": name, "version": version, "path": path, "change": change.kinds if change else [],
                            "semver": change.level if change else None})

    return _land(reg, plan, opts)


def _scan_secrets(files: dict[str, bytes | None]) -> None:
    """Refuse to turn a secret into a git object (the value is never echoed)."""
    try:
        from . import secrets
    except ImportError:  # pragma: no cover - shipped with the package
        return
    for path, content in files.items():
        if content is None:
            continue
        found = secrets.scan_text(content.decode("utf-8", "replace"), path)
        if found:
            first = found[0]
            raise ValidationError(f"{first.path}:{first.line}: looks like a {first.kind} ({first.redacted}); "
                                  "refusing to commit a secret",
                                  hint="reference it instead (secretRef: or ${ENV_VAR})")


def ensure_not_conflicting(expected: str | None, actual: str | None, what: str) -> None:
    """Raise Conflict when the state a command was judged on is gone."""
    if expected != actual:
        raise Conflict(f"{what} changed underneath (expected {expected}, found {actual})",
                       hint="nothing was written; look at 'modelctl status' and decide again")
