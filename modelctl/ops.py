"""State-changing operations: each loads, validates, plans one commit with its tags, and stores it.

Every check happens inside the plan function, which the store evaluates on the tip the commit
will extend (the remote tip when pushing), so a race re-checks everything from scratch.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import bundle as bundlemod
from . import config as configmod
from . import manifests, schema, trailers, yamlio
from .errors import UsageError, ValidationError
from .names import check_name, check_version, clean_text
from .reader import Reader, deployment_path, dump_deployment, load_deployment, read_back
from .store import Outcome, Plan, Snapshot, Store, require_identity
from .tags import TagEvent, registration_tag

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from importlib.resources.abc import Traversable

    from .bundle import Change
    from .documents import InitDocument, ShadowCost, TransitionResult
    from .state import TagEvent as StateTagEvent
    from .state import Transition


@dataclass
class WriteOptions:
    """How a write lands: pushed or local, on the base branch or a new review branch."""

    push: bool | None = None  # None: modelctl.yaml remote.push
    branch: str | None = None  # --branch: commit on a new branch, no tags


def _land(reg: Reader, plan_fn: Callable[[Snapshot], Plan], opts: WriteOptions, model: str | None = None) -> Outcome:
    """Run a plan through the store with the remote settings of modelctl.yaml."""
    cfg = reg.config()
    remote = cfg.remote
    push = remote.push if opts.push is None else opts.push
    if opts.branch is not None:
        _check_branch_name(reg.store, opts.branch, remote.name)
    base = remote.branch if push else None

    def scanned(snap: Snapshot) -> Plan:
        # every write passes here: files, commit message and tag messages are scanned before
        # anything becomes a git object (a reason or message can carry a pasted key too)
        plan = plan_fn(snap)
        if not plan.noop:
            plan.files.update(_rendered_for(snap, plan.files))  # GitOps manifests ride in the same commit
            # a path becomes a tree entry name: a key in a file name is as public as one inside it
            _scan_secrets({"a file name": "\n".join(plan.files).encode("utf-8")}, text=True)
            _scan_secrets(plan.files)
            _scan_secrets({"the commit message": plan.message().encode("utf-8"),
                           "a tag message": "\n".join(ev.message for ev in plan.tags).encode("utf-8")}, text=True)
        return plan

    return reg.store.transact(scanned, push=push, remote=remote.name, branch=base,
                              new_branch=opts.branch, deadline=float(remote.deadline),
                              models=(model,) if model else None, signer=signer_for(cfg, reg.store))


def signer_for(cfg: configmod.Config, store: Store) -> Callable[[bytes], bytes] | None:
    """The tag signer when modelctl.yaml has signing.enabled (its key checked before anything is built)."""
    if not cfg.signing.enabled:
        return None  # the unsigned path runs no extra process
    from . import signing

    return signing.key_for(store).sign


# -- rendered manifests (render: in modelctl.yaml) ----------------------------------------------

def render_settings(snap: Snapshot) -> manifests.Settings:
    """The `render:` section of modelctl.yaml at a snapshot."""
    return manifests.Settings.from_config(configmod.load(snap))


def _read_over(snap: Snapshot, overrides: Mapping[str, bytes | None], paths: list[str]) -> dict[str, bytes | None]:
    """Files as a plan would leave them: the plan's own content first, else the snapshot's."""
    out = {p: overrides[p] for p in paths if p in overrides}
    out.update(snap.read_many([p for p in paths if p not in overrides]))
    return out


def _model_document(snap: Snapshot, name: str, overrides: Mapping[str, bytes | None]) -> dict[str, Any] | None:
    """A model's rendered routing document as the snapshot plus `overrides` would have it (None: not served)."""
    path = deployment_path(name)
    raw = _read_over(snap, overrides, [path])[path]
    dep: dict[str, Any] | None = yamlio.loads(raw, path).data if raw is not None else None
    if dep is None or not manifests.serves(dep):
        return None
    paths = {v: bundlemod.bundle_path(name, v) for v in manifests.served_versions(dep)}
    raws = _read_over(snap, overrides, sorted(paths.values()))
    bundles = {v: yamlio.loads(content, p).data for v, p in paths.items() if (content := raws[p]) is not None}
    prompts = _read_over(snap, overrides, manifests.prompt_paths(bundles))
    rules: Mapping[str, Mapping[str, Any]] = {}
    if (dep.get("canary") or {}).get("segment"):  # only then: rendering every model stays one config read
        from .segments import rules_of

        rules = rules_of(configmod.load(snap).as_dict())
    return manifests.document(dep, bundles, prompts, segments=rules)


def _deployed(snap: Snapshot) -> set[str]:
    """Model names with a deployment file at a snapshot."""
    from .names import NAME_RE

    return {e[:-5] for e in snap.list("deployments") if e.endswith(".yaml") and NAME_RE.fullmatch(e[:-5])}


def rendered_documents(snap: Snapshot, names: list[str] | None = None) -> list[dict[str, Any]]:
    """The routing documents of the served models (all, or `names`), in name order."""
    if names is None:
        names = sorted(_deployed(snap))
    docs = (_model_document(snap, name, {}) for name in names)
    return [d for d in docs if d is not None]


def rendered_changes(snap: Snapshot, settings: manifests.Settings, names: list[str] | None = None,
                     overrides: Mapping[str, bytes | None] | None = None) -> dict[str, bytes | None]:
    """The rendered files to set (bytes) or delete (None) so that `settings.dir` matches the registry.

    `names`: only these models (and the kustomization); None: every model, and rendered model
    files that no deployment explains are deleted. `overrides`: files a plan is about to write.
    """
    overrides = overrides or {}
    present = {m for m in (settings.model_of(f"{settings.dir}/{e}") for e in snap.list(settings.dir)) if m}
    if names is None:
        names = sorted(_deployed(snap) | present)
    wanted: dict[str, bytes | None] = {}
    served = set(present)
    for name in names:
        doc = _model_document(snap, name, overrides)
        wanted[settings.path(name)] = None if doc is None else manifests.configmap(name, doc, settings)
        (served.add if doc is not None else served.discard)(name)
    wanted[settings.kustomization] = manifests.kustomization(sorted(served), settings)
    return manifests.changes(snap.read_many(sorted(wanted)), wanted)


def _rendered_for(snap: Snapshot, files: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """What a write must add to its commit so rendered/ follows the deployments it changes."""
    touched = sorted(p[len("deployments/"):-len(".yaml")] for p in files
                     if p.startswith("deployments/") and p.endswith(".yaml") and p.count("/") == 1)
    if not touched:
        return {}
    settings = render_settings(snap)
    if not settings.enabled:
        return {}
    return rendered_changes(snap, settings, touched, files)


def render_write(reg: Reader, name: str | None = None, opts: WriteOptions | None = None) -> Outcome:
    """Bring the rendered directory up to date with the registry (all models, or one) in one commit."""
    if name is not None:
        check_name(name)
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        settings = render_settings(snap)
        if not settings.enabled:
            raise UsageError("rendering is off in modelctl.yaml, so render --write has nothing to keep up to date",
                             hint="set render.enabled: true in modelctl.yaml and commit it, or drop --write")
        if name is not None and snap.read(deployment_path(name)) is None:
            from .errors import NotFound

            raise NotFound(f"no model named {name!r} in this registry",
                           hint="see 'modelctl status' for the models it has")
        files = rendered_changes(snap, settings, [name] if name else None)
        if not files:
            return Plan(noop=True, result=f"{settings.dir}/ is up to date")
        subject = f"modelctl: render {name}" if name else "modelctl: render"
        pairs = [(trailers.ACTION, "render")] + ([(trailers.MODEL, name)] if name else [])
        return Plan(files=files, subject=subject, trailers=pairs,
                    result={"dir": settings.dir, "files": sorted(files)})

    return _land(reg, plan, opts)


def _check_branch_name(store: Store, name: str, remote: str = "origin") -> None:
    """--branch must be a plain new branch name: no secret, nothing git would read as another ref."""
    from . import secrets

    hint = "use a plain git branch name such as promote/support-agent-2.4.0"
    found = secrets.scan_text(name, "--branch")
    if found:
        # a branch name is pushed and shown everywhere; the value itself is never echoed
        raise ValidationError(f"--branch looks like a secret ({found[0].message}); refusing to make it a branch name",
                              hint=hint)
    shown = secrets.shown(name)
    # `refs/heads/NAME` without --branch: check-ref-format --branch would expand @{-1} to another branch
    if not name or name.startswith("-") or not store.branch_name_ok(name):
        raise UsageError(f"invalid branch name {shown}", hint=hint)
    first = name.split("/", 1)[0]
    remotes = set(store.remotes()) | {remote}
    if name in ("HEAD", "@") or name.startswith("refs/") or first in remotes or first == "HEAD":
        raise UsageError(f"branch name {shown} would shadow another ref ({'a remote' if first in remotes else 'HEAD or refs/'})",
                         hint=hint)
    if store.rev(f"refs/tags/{name}"):
        raise UsageError(f"branch name {shown} is also a tag name", hint=hint)


# -- init -----------------------------------------------------------------------------------

CI_PIN = ".github/modelctl-requirements.txt"


def init(directory: str | os.PathLike[str]) -> InitDocument:
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
        if (target / ".git").exists() and Store(target).object_format() not in ("sha1", ""):
            raise UsageError(f"{target} is a git repository with sha256 object names, which modelctl does not support",
                             hint="pick a new directory, or 'git init --object-format=sha1' it again")
    # no identity: refuse before the directory or its .git exists (store.require_identity)
    require_identity(next(p for p in (target.absolute(), *target.absolute().parents) if p.is_dir()))
    target.mkdir(parents=True, exist_ok=True)
    store = Store(target)
    if not (target / ".git").exists():
        store.init_repo("main")
    files: dict[str, bytes | None] = {}
    template = data_path("registry-template")

    def collect(node: Path | Traversable, prefix: str = "") -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = prefix + child.name
            if child.is_dir():
                collect(child, rel + "/")
            elif child.name not in ("__pycache__",):
                files[rel] = child.read_bytes()

    collect(template)
    if CI_PIN in files:  # the registry's CI installs exactly the modelctl that made it
        from . import __version__

        files[CI_PIN] = (files[CI_PIN] or b"").replace(b"{modelctl_version}", __version__.encode())
    settings = manifests.Settings.from_config(configmod.parse(files[configmod.CONFIG_FILE] or b""))
    if settings.enabled:  # no model serves yet: an empty kustomization, so rendered/ applies from day one
        files[settings.kustomization] = manifests.kustomization([], settings)
    branch = store.current_branch() or "main"
    plan = Plan(files=files, subject="modelctl: init registry", trailers=[(trailers.ACTION, "init")])
    outcome = store.transact(lambda snap: plan, branch=branch)
    store.checkout_head()
    assert outcome.commit is not None  # the template is never empty, so init always commits
    return {"path": str(target.resolve()), "commit": outcome.commit, "files": sorted(files)}


# -- register -------------------------------------------------------------------------------

def _read_input(path: str | os.PathLike[str]) -> tuple[bytes, str]:
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


def _refuse_draft_in_place(reg: Reader, file: str | os.PathLike[str]) -> None:
    """A draft written where register puts bundles (bundles/NAME/VERSION.yaml, uncommitted) would
    collide with the file register writes: say so plainly instead of a confusing conflict."""
    try:
        rel = Path(os.path.realpath(file)).relative_to(os.path.realpath(reg.root)).as_posix()
    except ValueError:
        return  # outside the registry: the usual place for a draft
    if rel.startswith("bundles/") and (reg.store.dirty([rel]) or not reg.store.tracked(rel)):
        raise UsageError(f"{rel}: register reads your draft from anywhere; it writes bundles/NAME/VERSION.yaml "
                         "itself: move the draft elsewhere",
                         hint=f"for example 'mv {rel} drafts/' (or outside the registry) and register that file")


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
    if st.st_size > bundlemod.MAX_PROMPT_BYTES:
        raise ValidationError(f"{source}: {field_name}: {rel} is larger than 10 MiB")
    return cur.read_bytes()


def _referenced(reg: Reader, snap: Snapshot, rel: str, source: str, field_name: str) -> tuple[bytes, bool]:
    """Content of a file a bundle references: committed at the tip, or new in the work tree."""
    bundlemod.check_repo_path(rel, field_name, source)
    entry = reg.store.tree_entry(snap.commit, rel) if snap.commit else None
    if entry:
        mode, size = entry
        if mode == "120000":
            raise ValidationError(f"{source}: {field_name}: {rel} is a symlink in the registry; use a real file")
        if size.isdigit() and int(size) > bundlemod.MAX_PROMPT_BYTES:
            # committed before the cap, or by hand: still not something a bundle may pin
            raise ValidationError(f"{source}: {field_name}: {rel} is larger than 10 MiB")
        content = snap.read(rel)
        head = reg.store.rev("HEAD")
        if content is not None and snap.commit != head and not reg.store.is_bare():
            # with --push the tip is the remote's: the user sees (and committed) their own copy
            local = Snapshot(reg.store, head).read(rel) if head else None
            if local is not None and local != content:
                raise ValidationError(f"{source}: {field_name}: {rel} differs between your branch and the remote; "
                                      "the bundle would pin the remote's copy",
                                      hint="push the prompt first ('git push'), or pull the remote's copy, "
                                           "then register again")
        if content is not None:
            try:  # the common case, the work tree's copy is the committed one, costs no `git status`
                same = (reg.root / rel).read_bytes() == content
            except OSError:
                same = False
            if not same and reg.store.dirty([rel]):
                # the bundle would pin the committed text while the user reviewed another one
                raise ValidationError(f"{source}: {field_name}: {rel} has uncommitted changes",
                                      hint="commit the prompt first (a bundle pins what is committed), "
                                           "or restore it with 'git restore'")
            return content, False
    content = _worktree_file(reg.root, rel, source, field_name)
    if content is None:
        raise ValidationError(f"{source}: {field_name}: {rel} does not exist in the registry",
                              hint="add the file (paths are relative to the registry root)")
    return content, True


def register(reg: Reader, file: str | os.PathLike[str], *, bump: str | None = None, allow_multi_change: bool = False,
             message: str | None = None, opts: WriteOptions | None = None) -> Outcome:
    """Validate a bundle file and commit it as a new immutable version with its registration tag."""
    opts = opts or WriteOptions()
    raw, source = _read_input(file)
    # first, on the user's own file: a key is reported at their path and line, never echoed by a
    # later message (schema, pinning), and never turned into the bundle register would write
    _scan_secrets({source: raw})
    _refuse_draft_in_place(reg, file)
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
    bundlemod.check_prompt_digest(doc, source)
    text = raw.decode("utf-8")
    body = clean_text(message, 2000)

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        work = dict(data)
        parent_data = _parent_bundle(reg, snap, name, work, doc, source)
        if bump is not None:
            work["version"] = bundlemod.bump(work["parent"], bump)
        version = work["version"]
        _schema_and_pins(cfg, work, doc, source)
        files: dict[str, bytes | None] = {}
        prompt_rel = work["prompt"]["template"]
        prompt, new_prompt = _referenced(reg, snap, prompt_rel, f"{source}:{doc.line_of(('prompt', 'template')) or 1}",
                                         "prompt.template")
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
            report, new_report = _referenced(reg, snap, report_rel, f"{source}:{doc.line_of(('eval', 'report')) or 1}",
                                             "eval.report")
            if new_report:
                files[report_rel] = report
        pairs = [(trailers.ACTION, "register"), (trailers.MODEL, name), (trailers.VERSION, version)]
        change = _change_rules(parent_data, work, source, allow_multi_change, bump)
        if change is not None:
            pairs.append((trailers.PARENT, work["parent"]))
            pairs.append((trailers.CHANGE, ",".join(change.kinds) or "none"))
            if change.level:
                pairs.append((trailers.SEMVER, change.level))
            if allow_multi_change and len(change.kinds) > 1:
                pairs.append((trailers.MULTI_CHANGE, "allowed"))
        if work.get("compatibility"):
            # recorded, not refused: the platform may change before this version serves (canary refuses then)
            from . import compat

            found = compat.mismatches(work["compatibility"], compat.place(cfg.platform.as_dict(), None))
            pairs.append((trailers.COMPAT, clean_text(compat.summary(found)) if found else "fits"))
        path = bundlemod.bundle_path(name, version)
        stored = snap.read(path)
        if stored is not None and stored == yamlio.dumps(work, text).encode("utf-8"):
            # the same bundle again (a re-run after a crash or a lost reply): already done
            commit = reg.store.rev(f"refs/tags/{registration_tag(name, version)}") or snap.commit or ""
            return Plan(noop=True, result={"name": name, "version": version, "path": path,
                                           "note": f"{name} {version} is already registered with this bundle "
                                                   f"(commit {commit[:12]})"})
        if stored is not None or reg.store.rev(f"refs/tags/{registration_tag(name, version)}"):
            if bump is not None:
                raise ValidationError(f"version {version} of {name} (--bump {bump} from parent {work['parent']}) exists; "
                                      "registered bundles are immutable",
                                      hint=f"set 'parent' to {name}'s newest version, or drop --bump and set 'version' "
                                           "in the file")
            raise ValidationError(f"{source}:{doc.line_of(('version',)) or 1}: version {version} of {name} exists; "
                                  "registered bundles are immutable", hint="pick a new version or use --bump")
        from . import state  # the lifecycle owns the deployment file

        dep_path = deployment_path(name)
        dep_raw = snap.read(dep_path)
        dep = (load_deployment(snap, name, dep_raw) if dep_raw else None) or state.new_deployment(name)
        transition = state.register(dep, version)
        files[path] = read_back(yamlio.dumps(work, text).encode("utf-8"), work, path, snap.store, "Bundle")
        files[dep_path] = dump_deployment(transition.deployment, dep_raw, dep_path, snap.store)
        subject = f"modelctl: register {name} {version}"
        return Plan(files=files, subject=subject, body=body, trailers=pairs,
                    tags=[TagEvent(name, version, None, True,
                                   trailers.message(subject, pairs=[(trailers.ACTION, "register")]))],
                    result={"name": name, "version": version, "path": path, "change": change.kinds if change else [],
                            "semver": change.level if change else None})

    return _land(reg, plan, opts, name)


def _parent_bundle(reg: Reader, snap: Snapshot, name: str, work: dict[str, Any], doc: yamlio.Document,
                   source: str) -> dict[str, Any] | None:
    """The parent's registered bundle (None without a parent); refuses a parent that does not exist."""
    if work.get("parent") is None:
        return None
    parent = check_version(work["parent"])
    parent_data = reg.load_yaml(snap, bundlemod.bundle_path(name, parent), "Bundle")
    if parent_data is None:
        raise ValidationError(f"{source}:{doc.line_of(('parent',))}: parent: {name} has no version {parent}",
                              hint="register the parent first, or fix 'parent'")
    return parent_data


def _schema_and_pins(cfg: configmod.Config, work: dict[str, Any], doc: yamlio.Document, source: str) -> None:
    """Register rules: the bundle schema, and pinned model ids (model and fallbacks)."""
    schema.validate(yamlio.Document(work, source, doc.lines, doc.raw), "Bundle")
    bundlemod.check_pinned(work["model"], cfg.pinning, source, doc.line_of(("model", "id")))
    for fb in work.get("fallbacks") or []:
        bundlemod.check_pinned(fb, cfg.pinning, source, doc.line_of(("fallbacks",)))


def _change_rules(parent_data: dict[str, Any] | None, work: dict[str, Any], source: str, allow_multi_change: bool,
                  bump: str | None = None) -> Change | None:
    """Register rules against the parent: one variable at a time, semver by change kind."""
    if parent_data is None:
        return None
    change = bundlemod.classify(parent_data, work)
    if len(change.kinds) > 1 and not allow_multi_change:
        raise ValidationError(
            f"{source}: {work['version']} changes {' and '.join(change.kinds)} against its parent {work['parent']} "
            f"({'; '.join(change.detail)})",
            hint="change one variable at a time, or pass --allow-multi-change")
    try:
        bundlemod.check_semver(work["parent"], work["version"], change.level, source, "; ".join(change.detail))
    except ValidationError as exc:
        if bump is None:
            raise
        # the user chose the level: say which one the change needs, not "set version or --bump"
        raise ValidationError(exc.message, hint=f"use --bump {change.level}") from None
    return change


def registration_problem(reg: Reader, snap: Snapshot, path: str, *, allow_multi_change: bool = False) -> str | None:
    """Why a bundle committed at `snap` (e.g. merged by hand) fails a `register` rule; None when it
    passes every one. What doctor --fix asks before it writes a registration tag."""
    from .errors import ModelctlError

    try:
        raw = snap.read(path)
        if raw is None:
            raise ValidationError(f"{path}: does not exist")
        doc = yamlio.loads(raw, path)
        data = doc.data

        def lookup(rel: str) -> tuple[str, bytes | None]:
            entry = reg.store.tree_entry(snap.commit, rel) if snap.commit else None
            if entry is None:
                return "missing", None
            return ("symlink", None) if entry[0] == "120000" else ("file", snap.read(rel))

        found = bundlemod.stored_problems(doc, path, lookup)  # the rules `check` applies, then register's own
        if found:
            raise ValidationError(found[0])
        model = path.split("/")[1]
        cfg = configmod.load(snap)
        parent_data = _parent_bundle(reg, snap, model, data, doc, path)
        _schema_and_pins(cfg, data, doc, path)
        _change_rules(parent_data, data, path, allow_multi_change)
        _scan_secrets({path: raw})
    except ModelctlError as exc:
        return str(exc)
    return None


def _scan_secrets(files: dict[str, bytes | None], text: bool = False) -> None:
    """Refuse to turn a secret into a git object (the value is never echoed); text=True: the keys
    name messages (commit, tags) rather than files."""
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
            where = path if text else f"{first.path}:{first.line}"
            if path == "a file name":
                hint = "rename the file"
            else:
                hint = "take it out of --reason/--message" if text else "reference it instead (secretRef: or ${ENV_VAR})"
            raise ValidationError(f"{where}: looks like a secret ({first.message}); refusing to commit it", hint=hint)



# -- lifecycle ------------------------------------------------------------------------------

def _now_iso(clock: Callable[[], float] | None = None) -> str:
    """The time a lifecycle change records (hold.at, canary started): the commit's own date."""
    import time

    from .history import iso, parse_time

    pinned = os.environ.get("GIT_COMMITTER_DATE")
    if pinned:  # the commit is dated this way too (store): keep file and commit in one timeline
        try:
            return iso(parse_time(pinned))
        except UsageError:
            pass  # a git-only date format: fall back to the clock
    return iso(int((clock or time.time)()))


def _load_deployment(snap: Snapshot, name: str) -> tuple[dict[str, Any], bytes]:
    """deployments/<name>.yaml at the snapshot (validated) and its raw bytes, or NotFound."""
    from .errors import NotFound

    path = deployment_path(name)
    raw = snap.read(path)
    if raw is None:
        raise NotFound(f"no model named {name!r} in this registry",
                       hint="see 'modelctl status' for the models it has, or register a bundle first")
    dep = load_deployment(snap, name, raw)
    assert dep is not None  # load_deployment returns None only for absent bytes
    return dep, raw


def _tag_message(transition: Transition, ev: StateTagEvent) -> str:
    """A stage tag's message: what happened, then the action, percent and reason as trailers."""
    from .state import fmt_pct

    verb = ev.kind  # assign, unassign or deregister
    pairs = [(trailers.ACTION, transition.action), (trailers.EVENT, verb)]
    # the percent belongs to the stage entered (or the canary a rollback ends), not to a stage left
    own = (ev.kind == "assign" and ev.stage == transition.to_status) or (
        transition.action == "rollback" and ev.stage == transition.from_status)
    if transition.percent is not None and ev.stage in ("canary", "shadow") and own:
        pairs.append((trailers.PERCENT, fmt_pct(transition.percent)))
    reason = trailers.first(transition.trailers, trailers.REASON)
    if reason:
        pairs.append((trailers.REASON, reason))
    return trailers.message(transition.subject, pairs=pairs)


def _store_tags(name: str, transition: Transition) -> list[TagEvent]:
    """State tag events (stage, version, kind) as store tag events, in the order state gave them."""
    return [TagEvent(name, ev.version, ev.stage, ev.kind == "assign", _tag_message(transition, ev))
            for ev in transition.events]


def _summary(name: str, transition: Transition, pairs: list[tuple[str, str]],
             cost: ShadowCost | None = None) -> TransitionResult:
    dep = transition.deployment
    out: dict[str, Any] = {
        "name": name, "action": transition.action, "version": transition.version,
        "from": transition.from_status, "to": transition.to_status, "percent": transition.percent,
        "subject": transition.subject, "active": dep.get("active"), "previous": dep.get("previous"),
        "canary": dep.get("canary"), "shadow": dep.get("shadow"), "hold": dep.get("hold")}
    if cost is not None:
        out["cost"] = cost
    route = trailers.first(pairs, trailers.ROUTE)
    if route:
        out["route"], out["routes"] = route, dep.get("routes") or {}
    out["reason"] = trailers.first(pairs, trailers.REASON)
    out["gate"] = trailers.first(pairs, trailers.GATE)
    if transition.action == "rollback" and dep.get("change"):
        out["change"] = dep["change"]
    # built key by key so that --json keeps its published key order (cost before reason and gate)
    return cast("TransitionResult", out)


def _transition_plan(snap: Snapshot, name: str, raw: bytes, transition: Transition,
                     extra_trailers: Iterable[tuple[str, str]] = (), cost: ShadowCost | None = None) -> Plan:
    """One commit that rewrites deployments/<name>.yaml only, plus the transition's tags."""
    if transition.noop:
        return Plan(noop=True, result=transition.note)
    if transition.action != "rollback" and "change" in transition.deployment:
        # `change` describes the rollback that wrote it; any later lifecycle write makes it stale
        transition = replace(transition, deployment={k: v for k, v in transition.deployment.items() if k != "change"})
    if transition.deployment.get("routes"):
        from . import routes

        transition = routes.after_model(transition)  # what a model-level move does to its routes
    path = deployment_path(name)
    content = dump_deployment(transition.deployment, raw, path, snap.store)
    pairs = list(transition.trailers) + list(extra_trailers)
    return Plan(files={path: content}, subject=transition.subject, trailers=pairs,
                tags=_store_tags(name, transition), result=_summary(name, transition, pairs, cost))


def _gate_check(reg: Reader, snap: Snapshot, cfg: configmod.Config, name: str, version: str, force: bool,
                reason: str | None) -> list[tuple[str, str]]:
    """The eval gate before a version enters canary or active: trailers to record, or a refusal.

    The single call point for gate.required: the candidate's eval report against the serving
    version's (review.run_gate). A failing gate refuses (exit 1), a gate that cannot judge (no
    report, different datasets) refuses (exit 2); --force --reason passes either, on record as
    Modelctl-Gate-Override. The result itself is always recorded as Modelctl-Gate.
    """
    if not cfg.gate.required:
        return []
    from . import review
    from .errors import VerdictFailed
    from .state import clean_text

    def trailer_text(text: str) -> str:
        return clean_text(text) or ""

    why = clean_text(reason) if force else None
    override = "re-run with --force --reason to override it (on record)"
    try:
        result = review.run_gate(reg, snap, cfg, name, version)
    except UsageError as exc:
        if not why:
            raise UsageError(f"gate.required is set and the eval gate cannot judge {name} {version}: {exc.message}",
                             hint=f"{exc.hint or 'fix the eval reports'}; or {override}") from None
        return [(trailers.GATE, trailer_text(f"not judged ({exc.message})")), (trailers.GATE_OVERRIDE, why)]
    if result.passed:
        return [(trailers.GATE, trailer_text(result.summary()))]
    if not why:
        failed = "; ".join(f"{row.metric}: {row.reason}" for row in result.rows if not row.passed)
        raise VerdictFailed(f"the eval gate failed for {name} {version}: {failed}",
                            hint=f"see 'modelctl gate {name} {version}'; {override}")
    return [(trailers.GATE, trailer_text(result.summary())), (trailers.GATE_OVERRIDE, why)]


def _compat_check(snap: Snapshot, cfg: configmod.Config, name: str, version: str, dep: Mapping[str, Any],
                  force: bool, reason: str | None) -> list[tuple[str, str]]:
    """The bundle's `compatibility:` needs against `platform:` before it enters canary or active:
    a refusal (exit 2, naming each mismatch), or with --force --reason the override on record
    (Modelctl-Compat-Override). Checked at the model's default traffic and at its routes."""
    from . import compat

    path = bundlemod.bundle_path(name, version)
    raw = snap.read(path)
    needs = yamlio.loads(raw, path).data.get("compatibility") if raw is not None else None
    if not needs:
        return []
    found = compat.check(needs, cfg.platform.as_dict(), (dep.get("routes") or {}).keys())
    if not found:
        return []
    why = clean_text(reason) if force else None
    if not why:
        raise ValidationError(f"{name} {version} is not compatible with the platform: {compat.summary(found)}",
                              hint="see 'modelctl compat'; fix platform: in modelctl.yaml or the bundle, or re-run "
                                   "with --force --reason to override it (on record)")
    return [(trailers.COMPAT_OVERRIDE, clean_text(f"{why} ({compat.summary(found)})"))]


def _enters(transition: Transition, *stages: str) -> bool:
    return not transition.noop and transition.to_status in stages and transition.from_status != transition.to_status


def shadow_cost(requests_per_day: float, percent: float, cost_per_request: float, budget_per_day: float) -> ShadowCost:
    """Daily cost of mirrored traffic: requests/day x shadow share x cost per call x 2, against the budget."""
    per_day = float(requests_per_day) * float(percent) / 100.0 * float(cost_per_request) * 2
    return {"per_day": round(per_day, 6), "requests_per_day": requests_per_day, "percent": percent,
            "cost_per_request": cost_per_request, "budget_per_day": budget_per_day,
            "over_budget": per_day > float(budget_per_day)}


def _shadow_cost(reg: Reader, snap: Snapshot, cfg: configmod.Config, name: str, transition: Transition, *,
                 force: bool, requests_per_day: float | None,
                 cost_per_request: float | None) -> tuple[ShadowCost, list[tuple[str, str]]]:
    """Cost of the shadow a transition starts (or re-sizes); refuses above budget unless --force."""
    from .state import fmt_pct

    version, percent = transition.version, transition.percent
    assert version is not None and percent is not None  # state gives every shadow it enters both
    for flag, value in (("--requests-per-day", requests_per_day), ("--cost-per-request", cost_per_request)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise UsageError(f"invalid {flag} {value!r}", hint="use a number >= 0")
    rpd = requests_per_day if requests_per_day is not None else cfg.shadow.requests_per_day
    if cost_per_request is None:
        cost_per_request = (reg.bundle(name, version, snap).get("baseline") or {}).get("cost_per_request")
        if cost_per_request is None:
            raise UsageError(f"{name} {version} has no baseline.cost_per_request, so the shadow cost is unknown",
                             hint="pass --cost-per-request USD")
    budget = cfg.shadow.budget_per_day
    cost = shadow_cost(rpd, percent, cost_per_request, budget)
    if cost["over_budget"] and not force:
        raise UsageError(
            f"shadow of {name} {version} at {fmt_pct(percent)}% would cost ${cost['per_day']:.2f}/day "
            f"({rpd:g} requests/day x {fmt_pct(percent)}% x ${cost_per_request:g} x 2), above "
            f"shadow.budget_per_day ${budget:.2f}",
            hint="lower --pct, raise the budget in modelctl.yaml, or pass --force --reason")
    pairs = [(trailers.SHADOW_COST, f"{cost['per_day']:.2f} USD/day")]
    if cost["over_budget"]:
        pairs.append((trailers.BUDGET, f"{budget:.2f} USD/day exceeded (forced)"))
    return cost, pairs


def promote(reg: Reader, name: str, version: str, to: str, *, force: bool = False, reason: str | None = None,
            opts: WriteOptions | None = None, expect_canary: tuple[str, float] | None = None,
            evidence: str | None = None, route: str | None = None) -> Outcome:
    """Move a version to a stage (staging, shadow, canary, active) or retire it (deprecated, archived).

    `expect_canary` (version, percent): the live canary the caller judged (watch --advance); when
    the tip shows anything else, Conflict (exit 3) and nothing is written. `evidence` becomes a
    Modelctl-Evidence trailer. `route`: pin that route to the version (`to` must be active).
    """
    from . import routes, state
    from .names import PROMOTE_TARGETS, check_stage

    check_name(name), check_version(version), check_stage(to, PROMOTE_TARGETS)
    if route is not None:
        routes.check_route(route)
        if to != "active":
            raise UsageError(f"--route {route} pins a route to a version: use --to active",
                             hint="a route's canary starts with `modelctl canary NAME VERSION --route R`")
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        dep, raw = _load_deployment(snap, name)
        if route is not None:
            t = routes.pin(dep, route, version, cfg.as_dict(), force=force, reason=reason)
            return _transition_plan(snap, name, raw, t, _evidence(evidence))
        _expect_canary(dep, name, expect_canary)
        t = state.promote(dep, version, to, cfg.as_dict(), force=force, reason=reason, now=_now_iso())
        extra, cost = _evidence(evidence), None
        if _enters(t, "canary", "active"):
            extra += _compat_check(snap, cfg, name, version, dep, force, reason)
            extra += _gate_check(reg, snap, cfg, name, version, force, reason)
        if t.to_status == "shadow" and not t.noop:
            cost, pairs = _shadow_cost(reg, snap, cfg, name, t, force=force, requests_per_day=None,
                                       cost_per_request=None)
            extra += pairs
        return _transition_plan(snap, name, raw, t, extra, cost)

    return _land(reg, plan, opts, name)


def shadow(reg: Reader, name: str, version: str, percent: float | None = None, *, force: bool = False,
           reason: str | None = None, requests_per_day: float | None = None, cost_per_request: float | None = None,
           opts: WriteOptions | None = None) -> Outcome:
    """Mirror a share of traffic (default 100 %) to a version, or change that share; costed against the budget."""
    from . import state

    check_name(name), check_version(version)
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        dep, raw = _load_deployment(snap, name)
        t = state.shadow(dep, version, percent, cfg.as_dict(), force=force, reason=reason, now=_now_iso())
        if t.noop:
            return Plan(noop=True, result=t.note)
        cost, pairs = _shadow_cost(reg, snap, cfg, name, t, force=force, requests_per_day=requests_per_day,
                                      cost_per_request=cost_per_request)
        return _transition_plan(snap, name, raw, t, pairs, cost=cost)

    return _land(reg, plan, opts, name)


def canary(reg: Reader, name: str, version: str, percent: float | None, *, force: bool = False,
           reason: str | None = None, opts: WriteOptions | None = None,
           expect_canary: tuple[str, float] | None = None, evidence: str | None = None,
           segment: str | None = None, route: str | None = None) -> Outcome:
    """Start a canary at one of canary.steps, or move a live canary's percent (`expect_canary`: see promote).

    `segment`: serve only callers in that segment of modelctl.yaml's segments.rules (percent within it).
    `route`: the canary of that route only (modelctl.routes); the model's own canary is untouched.
    """
    from . import routes, state
    from .segments import check_segment_name

    check_name(name), check_version(version)
    if segment is not None:
        check_segment_name(segment)
    if route is not None:
        routes.check_route(route)
        if segment is not None:
            raise UsageError("--segment limits the model's canary; a route's own canary serves its whole route",
                             hint="drop --route (routes that follow the model follow its segment canary too), "
                                  "or drop --segment")
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        dep, raw = _load_deployment(snap, name)
        if route is not None:
            t = routes.canary(dep, route, version, percent, cfg.as_dict(), force=force, reason=reason, now=_now_iso())
            new = not t.noop and trailers.first(t.trailers, trailers.FROM_PERCENT) is None
            extra = _compat_check(snap, cfg, name, version, dep, force, reason) + \
                _gate_check(reg, snap, cfg, name, version, force, reason) if new else []
            return _transition_plan(snap, name, raw, t, extra + _evidence(evidence))
        _expect_canary(dep, name, expect_canary)
        t = state.canary(dep, version, percent, cfg.as_dict(), force=force, reason=reason, now=_now_iso(),
                         segment=segment)
        extra = _compat_check(snap, cfg, name, version, dep, force, reason) + \
            _gate_check(reg, snap, cfg, name, version, force, reason) if _enters(t, "canary") else []
        return _transition_plan(snap, name, raw, t, extra + _evidence(evidence))

    return _land(reg, plan, opts, name)


def _expect_canary(dep: dict[str, Any], name: str, expect: tuple[str, float] | None) -> None:
    """Refuse (Conflict, exit 3) when the live canary is not the (version, percent) the caller judged."""
    from .errors import Conflict
    from .state import fmt_pct

    if expect is None:
        return
    version, percent = expect
    live = dep.get("canary") or None
    if live and live.get("version") == version and float(live.get("percent")) == float(percent):
        return
    now = (f"canary {live.get('version')} at {fmt_pct(live.get('percent'))}%" if live
           else f"no canary ({version} is {(dep.get('versions') or {}).get(version, 'unknown')})")
    raise Conflict(f"the canary of {name} changed underneath: it was {version} at {fmt_pct(percent)}%, "
                   f"now {now}; nothing was written", hint=f"check 'modelctl status {name}' and decide again")


def _evidence(evidence: str | None) -> list[tuple[str, str]]:
    from .names import clean_text

    text = clean_text(evidence, limit=2000)
    return [(trailers.EVIDENCE, text)] if text else []


def gc(reg: Reader, name: str | None = None, *, reason: str | None = None, dry_run: bool = False,
       opts: WriteOptions | None = None) -> Outcome:
    """Archive the deprecated versions `retention.keep_deprecated` lets go, for one model or every
    model, in one commit (with GTO's deregistration tag for each). Bundles are never deleted.

    Refused with nothing written (exit 2) when the policy would archive a model's rollback target.
    `dry_run`: the plan only (`Outcome.commit` is None, the plan in `result`).
    """
    from . import state

    if name is not None:
        check_name(name)
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        keep = configmod.load(snap).retention.keep_deprecated
        if name is not None:
            names = [name]
            if snap.read(deployment_path(name)) is None:
                from .errors import NotFound

                raise NotFound(f"no model named {name!r} in this registry",
                               hint="see 'modelctl status' for the models it has")
        else:
            names = sorted(_deployed(snap))
        files: dict[str, bytes | None] = {}
        tags: list[TagEvent] = []
        pairs: list[tuple[str, str]] = [(trailers.ACTION, "gc"), (trailers.FROM, "deprecated"),
                                        (trailers.TO, "archived")]
        archived: dict[str, list[str]] = {}
        for model in names:
            dep, raw = _load_deployment(snap, model)
            t = state.gc(dep, keep)
            if t.noop:
                continue
            files[deployment_path(model)] = dump_deployment(t.deployment, raw, deployment_path(model), snap.store)
            tags += _store_tags(model, t)
            pairs += t.trailers
            archived[model] = [ev.version for ev in t.events]
        result = {"keep_deprecated": keep, "archived": archived, "dry_run": dry_run}
        if not files:
            return Plan(noop=True, result=f"nothing to archive (retention keeps {keep} deprecated versions "
                                          f"per model)")
        if dry_run:
            return Plan(noop=True, result=result)
        text = clean_text(reason)
        if text:
            pairs.append((trailers.REASON, text))
        count = sum(len(v) for v in archived.values())
        who = ", ".join(archived) if len(archived) <= 3 else f"{len(archived)} models"
        subject = f"modelctl: gc: archive {count} deprecated version{'s' if count > 1 else ''} of {who}"
        return Plan(files=files, subject=subject, trailers=pairs, tags=tags, result=result)

    return _land(reg, plan, opts, name)


def rollback(reg: Reader, name: str, *, to: str | None = None, reason: str | None = None,
             expect_canary: str | None = None, evidence: str | None = None, force: bool = False,
             from_: str | None = None, opts: WriteOptions | None = None, route: str | None = None) -> Outcome:
    """Take one named version out of service: the live canary, `from_`, or active when `to` names
    the target; the pulled version goes on hold.

    A plain rollback (no `from_`, `to` or `expect_canary`) needs a live canary: without one it is
    refused with the exact command to run, or it is already done when the model's last lifecycle
    event was a rollback (a retry, a second person reacting to the same page). The target is
    decided once, on the first evaluation: a retry after a concurrent rollback finds it already
    rolled back and does nothing (exit 0, saying who did it) instead of rolling back a second
    step; if it was replaced instead, Conflict (exit 3). `force` is accepted for uniform callers;
    pulling traffic never needs it. `route`: take the version out of that route only (modelctl.routes).
    """
    from . import history, routes, state
    from .errors import NotFound

    check_name(name)
    for value in (to, expect_canary, from_):
        if value is not None:
            check_version(value)
    if route is not None:
        routes.check_route(route)
        if expect_canary is not None:
            raise UsageError("--expect-canary applies to the model's canary, not to --route",
                             hint="use --from VERSION with --route")
    decided: dict[str, tuple[str, str] | None] = {}
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        cfg = configmod.load(snap)
        dep, raw = _load_deployment(snap, name)
        plain = expect_canary is None and from_ is None and to is None
        if route is not None:
            return _route_rollback(reg, snap, name, dep, raw, route, plain, reason=reason, from_=from_, to=to,
                                   evidence=evidence)
        if expect_canary is not None:
            if expect_canary not in (dep.get("versions") or {}):
                raise NotFound(f"version {expect_canary} of {name} is not registered",
                               hint=f"see 'modelctl show {name}'")
            expect = ("canary", expect_canary)
        elif from_ is not None:
            expect = None
        else:
            if "expect" not in decided:
                decided["expect"] = state.rollback_target(dep)
            expect = decided["expect"] if plain and decided["expect"] and decided["expect"][0] == "canary" else None
        if plain and expect is None and dep.get("active"):
            last = history.last_lifecycle_event(reg.store, snap.commit, name)
            if last and last["action"] == "rollback" and not last["trailers"].get(trailers.ROUTE):
                return Plan(noop=True, result=(
                    f"{last['version']} of {name} was already rolled back ({last['from'] or '?'}) by "
                    f"{last['author']} at {last['time']} (commit {last['commit'][:12]}); {dep['active']} serves"
                    f"; to take it out of service too, run "
                    f"`modelctl rollback {name} --from {dep['active']}`"))
        t = state.rollback(dep, cfg.as_dict(), reason=reason, now=_now_iso(), to=to, expect=expect, evidence=evidence,
                           from_=from_)
        if t.noop:
            who = history.last_exit(reg.store, snap.commit, name, t.version) if t.version else None
            note = t.note
            if who:
                note += f" by {who['author']} at {who['time']} (commit {who['commit'][:12]})"
            return Plan(noop=True, result=note)
        if t.from_status == "active" and dep.get("active"):
            _warn_cold_target(reg, snap, name, dep["active"], t.deployment.get("active"),
                              cfg.retention.hot_standby_hours)
        change = _rollback_change(reg, snap, name, t)
        if change is not None:
            t = replace(t, deployment={**t.deployment, "change": change})
        return _transition_plan(snap, name, raw, t, [(trailers.CHANGE, change["kind"])] if change else [])

    return _land(reg, plan, opts, name)


def _warn_cold_target(reg: Reader, snap: Snapshot, name: str, undone: str, target: str | None, hours: float) -> None:
    """Warn (OperatorWarning) when the deployment a rollback undoes is older than the hot-standby
    window: the target has not served since, so its capacity may be cold (retention.hot_standby_hours)."""
    import warnings

    from . import history
    from .errors import OperatorWarning

    since = history.serving_since(reg.store, snap.commit, name, undone)
    if since is None or target is None:
        return
    age = history.parse_time(_now_iso()) - history.parse_time(since["time"])
    if age > hours * 3600:
        warnings.warn(f"{target} of {name} has not served since {since['time']} ({age / 3600:.0f} h ago, beyond "
                      f"the {hours:g} h hot-standby window of retention.hot_standby_hours): its serving capacity "
                      f"may be cold; warm it (or scale it up) as traffic returns to it", OperatorWarning, stacklevel=2)


def _rollback_change(reg: Reader, snap: Snapshot, name: str, t: Transition) -> dict[str, Any] | None:
    """Which of model, prompt, config differ between the version a rollback takes out of service and
    the one that serves its traffic now (README "Config-only rollback"); None when one is unknown.

    Bundles change one variable at a time against their parent, so a rollback to the parent names
    exactly one; between versions further apart every differing one is named, in that order.
    """
    served = t.deployment.get("active")
    if not t.version or not served or served == t.version:
        return None
    old, new = reg.bundle(name, t.version, snap), reg.bundle(name, served, snap)
    if not old or not new:
        return None
    kinds = bundlemod.classify(new, old).kinds
    return {"from": t.version, "to": served, "kind": ",".join(kinds) or "none", "redeploy": "model" in kinds}


def _route_rollback(reg: Reader, snap: Snapshot, name: str, dep: dict[str, Any], raw: bytes, route: str, plain: bool,
                    *, reason: str | None, from_: str | None, to: str | None, evidence: str | None) -> Plan:
    """rollback --route: one route loses a version; a plain re-run after it landed is already done."""
    from . import history, routes

    routes.route_of(dep, route)
    if plain and routes.effective(dep, route)[1] is None:
        last = history.last_lifecycle_event(reg.store, snap.commit, name)
        if last and last["action"] == "rollback" and last["trailers"].get(trailers.ROUTE) == route:
            return Plan(noop=True, result=(
                f"{last['version']} of {name} was already rolled back on route {route} by {last['author']} at "
                f"{last['time']} (commit {last['commit'][:12]})"))
    t = routes.rollback(dep, route, reason=reason, from_=from_, to=to, evidence=evidence)
    return _transition_plan(snap, name, raw, t)


def route(reg: Reader, name: str, route_name: str, *, fallback: list[str] | None = None, policy: str | None = None,
          follow: bool = False, opts: WriteOptions | None = None) -> Outcome:
    """Declare a route of a model, set its fallback chain, or make a pinned route follow the model again."""
    from . import routes

    check_name(name)
    routes.check_route(route_name)
    chain = routes.parse_fallback(list(fallback or []), policy) if fallback or policy else None
    opts = opts or WriteOptions()

    def plan(snap: Snapshot) -> Plan:
        dep, raw = _load_deployment(snap, name)
        if chain is not None:
            _check_fallbacks(snap, chain["chain"])
        t = routes.declare(dep, route_name, fallback=chain, follow=follow)
        return _transition_plan(snap, name, raw, t)

    return _land(reg, plan, opts, name)


def _check_fallbacks(snap: Snapshot, chain: list[dict[str, Any]]) -> None:
    """A route's fallback must be pinned (modelctl.yaml pinning) and not retired (deprecations.yaml)."""

    from . import deprecations

    cfg = configmod.load(snap)
    raw = snap.read("deprecations.yaml")
    own = deprecations.parse_deprecations(yamlio.loads(raw, "deprecations.yaml").data) if raw is not None else []
    table = deprecations.combine(deprecations.shipped(), own)  # the shipped list, extended and overridden
    today = deprecations.today_from(None, os.environ)
    for entry in chain:
        shown = f"{entry['provider']}/{entry['id']}"
        bundlemod.check_pinned(entry, cfg.pinning, f"--fallback {shown}")
        pin = deprecations.Pin("--fallback", entry["provider"], entry["id"])
        for f in deprecations.check_pins([pin], table, file="deprecations.yaml", today=today,
                                         warn_days=cfg.deprecation.warn_days):
            if f.severity == "error":
                raise ValidationError(f"{f.message}; a failover to it would fail too",
                                      hint="pick a supported model for --fallback")
