"""`check`: every file against its schema, prompt hashes, bundle immutability, deployment consistency.

Reads everything at one commit with a handful of git processes (ls-tree, cat-file --batch,
for-each-ref), so it stays fast on large registries.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from . import bundle as bundlemod
from . import config as configmod
from . import schema, state, trailers, yamlio
from .errors import ModelctlError
from .history import deployment_at
from .names import NAME_RE, VERSION_RE

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import CheckDocument, CheckFinding, DeprecationsDocument
    from .reader import Reader
    from .store import Snapshot, Store

Bundles = dict[tuple[str, str], dict[str, Any]]  # (model, version) -> bundle data
Statuses = dict[str, dict[str, str]]  # model -> {version: status}

LIVE = ("active", "canary", "shadow")


@dataclass
class Finding:
    """One problem: where, how bad, what."""

    path: str
    line: int | None
    level: str  # error | warning
    message: str


def staged_snapshot(reg: Reader) -> Snapshot:
    """What the index is about to commit, as a snapshot of its tree (for pre-commit hooks)."""
    from .errors import UsageError
    from .store import Snapshot

    tree = reg.store.index_tree()
    if tree is None:
        raise UsageError("the index has unmerged paths", hint="resolve the merge, then run check again")
    snap = Snapshot(reg.store, tree)
    if snap.read(configmod.CONFIG_FILE) is None:
        raise UsageError("the index holds no modelctl.yaml: this is not a modelctl registry")
    return snap


def run(reg: Reader, ref: str = "HEAD", only: set[str] | None = None, today: dt.date | None = None,
        base: str | None = None,
        staged: bool = False, require_signatures: bool = False) -> CheckDocument:
    """Check the registry at `ref`; `only` limits the files checked (e.g. those a PR touched).

    `today` (a date) is when retirement dates are judged; default: today in UTC. `base` (with
    `only`): the commit the change started from, so that a touched deployment file is judged on
    the versions it moves onto a route, not on what already served before. `require_signatures`:
    every commit changing deployments/ or the render dir (since `base`, or since the allowed-signers
    file was added) must be signed by a key listed in .modelctl/allowed_signers at its parent.
    """
    snap = staged_snapshot(reg) if staged else reg.snapshot(ref)
    scan = _Run(reg, snap, only, base)
    scan.parse()
    cfg = scan.config()
    bundles = scan.bundles_and_evals()
    scan.deployments(bundles)
    scan.stray_files()
    findings = scan.findings
    if require_signatures:
        findings.extend(_signature_findings(reg, snap if not staged else reg.snapshot("HEAD"), cfg, base))
    findings.extend(_extensions(reg, snap, cfg, scan.files, scan.docs, bundles, scan.want, only=only, today=today,
                                base=base, staged=staged))
    errors = sum(1 for f in findings if f.level == "error")
    from .secrets import redact_text

    for f in findings:  # messages echo values from the files (ids, fields): never a key whole
        f.message = redact_text(f.message)
    assert snap.commit is not None  # both snapshots above refuse a missing commit or tree
    # a Finding's fields are CheckFinding's keys; `level` is error or warning by construction
    rows = [cast("CheckFinding", asdict(f)) for f in findings]
    return {"commit": snap.commit, "checked": len([p for p in scan.yaml_paths if scan.want(p)]),
            "ok": errors == 0, "errors": errors, "warnings": len(findings) - errors, "findings": rows}


class _Run:
    """One `check` pass over a snapshot: the files it reads, what it found, one method per kind of file."""

    def __init__(self, reg: Reader, snap: Snapshot, only: set[str] | None, base: str | None):
        self.reg, self.snap, self.only, self.base = reg, snap, only, base
        self.store = reg.store
        self.findings: list[Finding] = []
        self.files = self.store.tree_files(snap.commit) if snap.commit else {}
        self.docs: dict[str, yamlio.Document] = {}
        self.raw: dict[str, bytes | None] = {}
        self.yaml_paths: list[str] = []

    def want(self, path: str) -> bool:
        return self.only is None or path in self.only

    def add(self, path: str, line: int | None, level: str, message: str) -> None:
        self.findings.append(Finding(path, line, level, message))

    def add_problems(self, path: str, problems: list[str]) -> None:
        """Problems in the 'file:line: message' form, as error findings."""
        for p in problems:
            self.add(path, _line(p), "error", _msg(p))

    def lookup(self, rel: str) -> tuple[str, bytes | None]:
        """A path of the snapshot as bundle.stored_problems asks for it."""
        if rel not in self.files:
            return "missing", None
        return ("symlink", None) if self.files[rel].startswith("symlink:") else ("file", self.snap.read(rel))

    def parse(self) -> None:
        """Read and parse every file check knows (YAML, or JSON eval reports)."""
        files = self.files
        self.yaml_paths = [p for p in files if p.endswith((".yaml", ".yml", ".json"))
                           and not files[p].startswith("symlink:")
                           and (p in ("modelctl.yaml", "deprecations.yaml")
                                or p.startswith(("bundles/", "deployments/", "evals/")))]
        self.raw = self.snap.read_ids({p: files[p] for p in self.yaml_paths})
        for path in self.yaml_paths:
            raw = self.raw[path] or b""  # every path was listed in the tree just read
            try:
                if path.endswith(".json"):
                    import json

                    self.docs[path] = yamlio.Document(json.loads(raw), path, {})
                else:
                    self.docs[path] = yamlio.loads(raw, path)
            except (ModelctlError, ValueError) as exc:
                if self.want(path):
                    text = str(exc)
                    line = _line(text) if isinstance(exc, ModelctlError) else None
                    self.add(path, line, "error", _msg(text) if line is not None else
                             text.split(": ", 1)[-1] if isinstance(exc, ModelctlError) else text)

    def config(self) -> configmod.Config:
        """modelctl.yaml's problems; the config the other checks use (the defaults when it is broken)."""
        if "modelctl.yaml" not in self.files:
            self.add("modelctl.yaml", None, "error", "missing: this is not a modelctl registry")
        elif "modelctl.yaml" in self.docs:
            found = configmod.all_problems(self.docs["modelctl.yaml"])
            self.add_problems("modelctl.yaml", found)
            if not found:  # all_problems ran the schema and the rules: the document parsed above is built as is
                return configmod.build(self.docs["modelctl.yaml"].data)
        return configmod.defaults()

    def bundles_and_evals(self) -> Bundles:
        """Every bundle (stored-bundle rules, registration tag) and eval report; the valid bundles."""
        reg_commits = _registration_commits(self.store)
        bundles: Bundles = {}
        valid = schema.ValidCache(self.store, "Bundle")  # a blob found valid before is not validated again
        registered: list[tuple[str, str, str, str | None]] = []
        for path, doc in self.docs.items():
            parts = path.split("/")
            if parts[0] == "evals" and self.want(path):
                self.add_problems(path, schema.problems(doc, "EvalReport"))
            if parts[0] != "bundles":
                continue
            if len(parts) != 3 or not parts[2].endswith(".yaml"):
                if self.want(path):
                    self.add(path, None, "error", "bundles live at bundles/<name>/<version>.yaml")
                continue
            problems = valid.problems(doc, self.files[path])
            if problems:
                if self.want(path):
                    self.add_problems(path, problems)
                continue
            name, version = parts[1], parts[2][:-5]
            bundles[(name, version)] = doc.data
            if self.want(path):
                self.add_problems(path, bundlemod.stored_problems(doc, path, self.lookup, validated=True))
                registered.append((path, name, version, reg_commits.get((name, version))))
        valid.save()
        self._registrations(registered)
        return bundles

    def _registrations(self, bundles: list[tuple[str, str, str, str | None]]) -> None:
        """Each bundle's registration tag exists and names this very bundle (registered bundles are
        immutable): (path, name, version, the tag's commit) each, asked of git in one batch."""
        at = self.store.blob_ids_at((commit, path) for path, _n, _v, commit in bundles if commit is not None)
        untagged = [path for path, _n, _v, commit in bundles if commit is None]
        # a bundle new in a pull request cannot have its tag before the merge
        before = self.store.read_many(self.base, untagged) if self.base is not None else {}
        for path, name, version, commit in bundles:
            if commit is None:
                if self.base is None or before.get(path) is not None:
                    self.add(path, None, "warning",
                             f"no registration tag {name}@v{version} (run 'modelctl doctor --fix')")
            elif at[(commit, path)] != self.files[path]:
                self.add(path, None, "error", f"bundle changed since its registration tag {name}@v{version}; "
                                              "registered bundles are immutable: register a new version instead")

    def deployments(self, bundles: Bundles) -> None:
        """Every deployment file: its schema, then the one invariant check (state.problems)."""
        for path, doc in self.docs.items():
            if not path.startswith("deployments/") or not self.want(path):
                continue
            name = path[len("deployments/"):-5]
            problems = schema.problems(doc, "Deployment")
            self.add_problems(path, problems)
            if not problems:
                registered = [v for (n, v) in bundles if n == name]
                found = state.problems(doc.data, name, registered)
                if doc.data.get("routes"):
                    from . import routes

                    versions = state.expand_versions(doc.data, sorted(registered, key=state.version_key))["versions"]
                    found += routes.problems(doc.data, versions)
                for msg, loc in found:
                    self.add(path, doc.line_of(loc), "error", msg)

    def stray_files(self) -> None:
        """Anything under bundles/ that is not a bundle."""
        reported = {f.path for f in self.findings}
        for path in self.files:
            if (path.startswith("bundles/") and path not in self.docs and self.want(path)
                    and not path.endswith(".gitkeep") and path not in reported):
                self.add(path, None, "error", "unexpected file under bundles/")


def _registration_commits(store: Store) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for name, commit in store.tags_and_commits("refs/tags/*@v*"):
        model, _, version = name.partition("@v")
        if NAME_RE.fullmatch(model) and VERSION_RE.fullmatch(version):
            out[(model, version)] = commit
    return out


def _line(problem: str) -> int | None:
    try:
        return int(problem.split(":", 2)[1])
    except (IndexError, ValueError):
        return None


def _msg(problem: str) -> str:
    return problem.split(":", 2)[2].strip() if problem.count(":") >= 2 else problem


def _extensions(reg: Reader, snap: Snapshot, cfg: configmod.Config, files: dict[str, str],
                docs: dict[str, yamlio.Document], bundles: Bundles, want: Callable[[str], bool], *,
                only: set[str] | None = None, today: dt.date | None = None, base: str | None = None,
                staged: bool = False) -> list[Finding]:
    """Checks added by other parts (secrets, deprecations); each returns Findings."""
    if today is None:
        today = dt.datetime.now(dt.UTC).date()
    findings = _secret_findings(snap, files, want)
    statuses: Statuses = {}
    for path, doc in docs.items():
        if path.startswith("deployments/") and isinstance(doc.data, dict) and isinstance(doc.data.get("versions"), dict):
            statuses[path[len("deployments/"):-5]] = doc.data["versions"]
    before = _statuses_at(reg, base, [p for p in (only or ()) if p.startswith("deployments/")]) \
        if only is not None else {}
    findings += _deprecation_findings(cfg, docs, bundles, statuses, before, want, only, today)
    findings += _fallback_findings(docs, bundles, statuses, before, only)
    findings += _route_findings(cfg, docs, bundles, only, today)
    findings += _rendered_findings(snap, cfg, files, docs, bundles, only)
    if only is not None and base is not None and not staged:
        findings += _move_findings(reg, snap, cfg, docs, only, base)
        if "modelctl.yaml" in only:
            findings += _metrics_target_findings(reg, snap, base)
    return findings


def _rendered_findings(snap: Any, cfg: configmod.Config, files: dict[str, str], docs: dict[str, yamlio.Document],
                       bundles: dict[tuple[str, str], dict[str, Any]], only: set[str] | None) -> list[Finding]:
    """rendered/ against what the registry renders (render.enabled): missing, stale or extra files."""
    from . import manifests

    settings = manifests.Settings.from_config(cfg)
    if not settings.enabled:
        return []
    if only is not None and not any(p == configmod.CONFIG_FILE or p.startswith(("deployments/", settings.dir + "/"))
                                    for p in only):
        return []  # a change that touches neither side cannot make them disagree
    deps = {p[len("deployments/"):-5]: d.data for p, d in docs.items()
            if p.startswith("deployments/") and p.count("/") == 1 and p.endswith(".yaml") and isinstance(d.data, dict)
            and NAME_RE.fullmatch(p[len("deployments/"):-5])}
    prompt_paths = manifests.prompt_paths({f"{n} {v}": b for (n, v), b in bundles.items()
                                           if manifests.serves(deps.get(n)) and v in manifests.served_versions(deps[n])})
    prompts = snap.read_many(prompt_paths)
    wanted: dict[str, bytes | None] = {}
    unknown: set[str] = set()  # models whose rendering cannot be judged (a bundle is missing: reported elsewhere)
    for name, dep in sorted(deps.items()):
        own = {v: bundles[(name, v)] for v in manifests.served_versions(dep) if (name, v) in bundles}
        try:
            wanted[settings.path(name)] = manifests.render_model(name, dep, own, prompts, settings,
                                                                 segments=cfg.segments.as_dict()["rules"])
        except (ModelctlError, AttributeError, KeyError, TypeError, ValueError):
            unknown.add(settings.path(name))  # an invalid deployment or bundle: its own finding says why
    served = [n for n in deps if wanted.get(settings.path(n)) is not None or settings.path(n) in unknown]
    wanted[settings.kustomization] = manifests.kustomization(served, settings)
    for path in files:
        if settings.model_of(path) and path not in wanted and path not in unknown:
            wanted[path] = None
    actual = snap.read_many(sorted(wanted))
    fix = "run 'modelctl render --write' (or re-run the write that changed it) instead of editing rendered files"
    out = []
    for path in sorted(wanted):
        want, have = wanted[path], actual[path]
        if want == have:
            continue
        if have is None:
            out.append(Finding(path, None, "error", f"missing: the registry renders this file; {fix}"))
        elif want is None:
            out.append(Finding(path, None, "error", f"no served model explains this rendered file (no active version "
                                                    f"in deployments/{settings.model_of(path)}.yaml); {fix}"))
        else:
            line, what = manifests.difference(have, want)
            out.append(Finding(path, line, "error", f"differs from what the registry renders ({what}); {fix}"))
    return out


def _signature_findings(reg: Reader, snap: Snapshot, cfg: configmod.Config, base: str | None) -> list[Finding]:
    """Each commit that changes what serves (deployments/, rendered/) and is not signed by an allowed key."""
    from . import signing
    from .errors import UsageError

    tip = snap.commit
    raw = snap.read(signing.ALLOWED_SIGNERS)
    if tip is None or raw is None:
        raise UsageError(f"--require-signatures needs {signing.ALLOWED_SIGNERS}, which this registry does not have",
                         hint="add it with one 'email key-type key' line per allowed signer (README \"Signed writes\")")
    signing.parse_allowed_signers(raw)  # malformed at the tip: exit 2 naming the line
    start = signing.adoption(reg.store, tip)
    revs = [tip] + [f"^{c}" for c in (start, base) if c]
    paths = ["deployments/", cfg.render.dir.rstrip("/") + "/"]
    out: list[Finding] = []
    for record, verdict in signing.verify(reg.store, revs, paths):
        if verdict.ok:
            continue
        where = next((p for p in record.paths if p.startswith(tuple(paths))), paths[0])
        out.append(Finding(where, None, "error", f"commit {record.commit[:12]} {record.subject!r} by "
                                                 f"{record.committer_email}: {verdict.reason}"))
    return out


def _metrics_target_findings(reg: Reader, snap: Snapshot, base: str) -> list[Finding]:
    """A change that points watch's bearer token at a new URL gets a reviewer's warning."""
    before = reg.store.read_many(base, [configmod.CONFIG_FILE]).get(configmod.CONFIG_FILE)
    warning = configmod.metrics_url_warning(before, snap.read(configmod.CONFIG_FILE))
    if warning is None:
        return []
    return [Finding(configmod.CONFIG_FILE, warning[0], "warning", warning[1])]


def _move_findings(reg: Reader, snap: Snapshot, cfg: configmod.Config, docs: dict[str, yamlio.Document],
                   only: set[str], base: str) -> list[Finding]:
    """Every commit base..HEAD that changes a deployment file must be a legal lifecycle move,
    judged with the rules the commands use (state.judge_move), or record an override with a
    reason: Modelctl-Force: true with Modelctl-Reason (hold, skipped stages), Modelctl-Gate-Override
    (gate.required), on that commit or on any commit of the range naming the model and version."""
    store = reg.store
    paths = sorted(p for p in only if p.startswith("deployments/") and p.endswith(".yaml") and p in docs)
    if not paths or snap.commit is None:
        return []
    gate_required = cfg.gate.required
    lifecycle = cfg.as_dict()  # state's rules take the document
    in_range = _range_overrides(reg, base, snap.commit)
    out: list[Finding] = []
    seen: set[tuple[str, str | None, str]] = set()
    for path in paths:
        name = path[len("deployments/"):-5]
        if not NAME_RE.fullmatch(name):
            continue
        head_versions = (docs[path].data or {}).get("versions") if isinstance(docs[path].data, dict) else None
        records = store.log_records(["%H", "%P", "%s", "%(trailers:only,unfold)"], f"{base}..{snap.commit}", [path],
                                    reverse=True, no_merges=True) or []
        gates: dict[tuple[str, str | None], str | None] = {}

        def gate(version: str, baseline: str | None, name: str = name,
                 gates: dict[tuple[str, str | None], str | None] = gates) -> str | None:
            if (version, baseline) not in gates:
                gates[(version, baseline)] = _gate_failure(reg, snap, cfg, name, version, baseline)
            return gates[(version, baseline)]

        for sha, parents, subject, trailer_text in records:
            parent = parents.split()[0] if parents.split() else None
            before = deployment_at(store, parent, path)
            after = deployment_at(store, sha, path)
            if after is None or after is False or (parent is not None and before is False):
                continue  # an unreadable file: the schema check of HEAD explains what is wrong now
            said = trailers.parse(trailer_text)
            own = said.get(trailers.MODEL) in (None, name)
            force = (said.get(trailers.REASON) or None) if own and said.get(trailers.FORCE) == "true" else None
            gate_why = (said.get(trailers.GATE_OVERRIDE) or None) if own else None
            judged = state.judge_move(before or None, after, lifecycle, gate=gate if gate_required else None)
            if after.get("routes") or (before or {}).get("routes"):
                from . import routes

                judged += routes.judge(before or None, after, lifecycle)
            for f in judged:
                key = (name, f.version, f.rule)
                if key in seen:
                    continue
                seen.add(key)
                recorded = in_range.get((name, f.version), {}) if f.version else {}
                reason = (force or recorded.get("force")) if f.override == "force" else \
                    (gate_why or recorded.get("gate")) if f.override == "gate" else None
                line = docs[path].line_of(("versions", f.version)) if f.version is not None and f.version in (head_versions or {}) else \
                    docs[path].line_of(("versions",))
                where = f"commit {sha[:12]} {subject!r}"
                if reason:
                    out.append(Finding(path, line, "warning",
                                       f"lifecycle rule '{f.rule}' overridden ({reason}): {f.message} ({where})"))
                else:
                    out.append(Finding(path, line, "error",
                                       f"lifecycle rule '{f.rule}': {f.message} ({where}); {_ADVICE[f.override]}"))
    return out


_ADVICE = {
    "force": "to let it stand, the commit must record Modelctl-Force: true and Modelctl-Reason: <why> "
             "(what --force --reason writes)",
    "gate": "promote a version that passes, or record Modelctl-Gate-Override: <why> (what --force --reason writes)",
    None: "no override exists for this rule: make the change with modelctl commands",
}


def _gate_failure(reg: Reader, snap: Snapshot, cfg: configmod.Config, name: str, version: str, baseline: str | None) -> str | None:
    """Why the eval gate fails a version against `baseline` (None when it passes)."""
    from . import review

    try:
        result = review.run_gate(reg, snap, cfg, name, version, baseline=baseline)
    except ModelctlError as exc:
        return f"the gate cannot judge it: {exc}"
    return None if result.passed else "; ".join(f"{r.metric}: {r.reason}" for r in result.rows if not r.passed)


def _range_overrides(reg: Reader, base: str, tip: str) -> dict[tuple[str, str], dict[str, str]]:
    """(model, version) -> {"force": reason, "gate": reason} recorded by any commit base..tip."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for (entry,) in reg.store.log_records(["%(trailers:only,unfold)"], f"{base}..{tip}") or []:
        fields = trailers.parse(entry)
        model, version = fields.get(trailers.MODEL), fields.get(trailers.VERSION)
        if not model or not version:
            continue
        found = out.setdefault((model, version), {})
        if fields.get(trailers.FORCE) == "true" and fields.get(trailers.REASON):
            found.setdefault("force", fields[trailers.REASON])
        if fields.get(trailers.GATE_OVERRIDE):
            found.setdefault("gate", fields[trailers.GATE_OVERRIDE])
    return out


# -- secrets, retired models, fallbacks ------------------------------------------------------

SECRET_SCAN_LIMIT = 1024 * 1024  # bytes; larger files are data, not configuration
ON_ROUTE = ("active", "canary", "shadow", "staging")  # a retired pin here breaks (or is about to break) traffic
SERVING = ("active", "canary")  # statuses that answer users' requests


def _secret_findings(snap: Snapshot, files: dict[str, str], want: Callable[[str], bool]) -> list[Finding]:
    """Provider keys and private keys in any text file of the registry, redacted."""
    from . import secrets

    paths = [p for p, blob in files.items() if not blob.startswith("symlink:") and want(p)]
    out: list[Finding] = []
    for path, raw in snap.read_many(paths).items():
        if raw is None or len(raw) > SECRET_SCAN_LIMIT or b"\0" in raw:
            continue
        for found in secrets.scan_text(raw.decode("utf-8", "replace"), path):
            out.append(Finding(path, found.line, "error",
                               f"{found.message}: a secret committed to the registry; remove it, rotate the key "
                               "(git history keeps it), and reference it instead (secretRef: or ${ENV_VAR})"))
    return out


def _statuses_at(reg: Reader, commit: str | None, paths: list[str]) -> Statuses:
    """model -> {version: status} of deployment files at `commit` (unreadable ones count as empty)."""
    out: Statuses = {}
    if commit is None or not paths:
        return out
    for path, raw in reg.store.read_many(commit, paths).items():
        try:
            data = yamlio.loads(raw, path).data if raw is not None else None
        except ModelctlError:
            data = None
        versions = data.get("versions") if isinstance(data, dict) else None
        out[path[len("deployments/"):-5]] = versions if isinstance(versions, dict) else {}
    return out


def _in_scope(name: str, version: str, status: str | None, statuses_wanted: tuple[str, ...], only: set[str] | None,
              before: Statuses, also: bool = False) -> bool:
    """Bundles are immutable, so only those on a route are judged; with `only` (a pull request),
    those it adds or changes, or moves onto a route (or all on a route when `also`)."""
    path = f"bundles/{name}/{version}.yaml"
    on_route = status in statuses_wanted
    if only is None:
        return on_route
    if path in only:
        return True
    if not on_route:
        return False
    if also:
        return True
    # a touched deployment file: what it moves (what served before is not this change's doing)
    return f"deployments/{name}.yaml" in only and (before.get(name) or {}).get(version) != status


def _deprecation_findings(cfg: configmod.Config, docs: dict[str, yamlio.Document], bundles: Bundles,
                          statuses: Statuses, before: Statuses, want: Callable[[str], bool], only: set[str] | None,
                          today: dt.date) -> list[Finding]:
    from . import deprecations

    doc = docs.get("deprecations.yaml")
    try:
        own = deprecations.parse_deprecations(doc.data) if doc is not None else []
    except ModelctlError as exc:
        return [Finding("deprecations.yaml", None, "error", exc.message.split(": ", 1)[-1])] \
            if want("deprecations.yaml") else []
    table = deprecations.combine(deprecations.shipped(), own)
    warn_days = cfg.deprecation.warn_days
    table_changed = only is not None and "deprecations.yaml" in only
    out: list[Finding] = []
    for (name, version), data in sorted(bundles.items()):
        status = statuses.get(name, {}).get(version)
        if not _in_scope(name, version, status, ON_ROUTE, only, before, also=table_changed):
            continue
        path = f"bundles/{name}/{version}.yaml"
        bdoc = docs[path]
        for f in deprecations.check_bundle(data, path, table, today=today, warn_days=warn_days):
            loc = tuple(int(p) if p.isdigit() else p for p in f.field.replace("[", ".").replace("]", "").split("."))
            where = f"{status}" if status else "registered"
            out.append(Finding(path, bdoc.line_of(loc), f.severity, f"{name} {version} ({where}): {f.message}"))
    return out


def _fallback_findings(docs: dict[str, yamlio.Document], bundles: Bundles, statuses: Statuses, before: Statuses,
                       only: set[str] | None) -> list[Finding]:
    out: list[Finding] = []
    for (name, version), data in sorted(bundles.items()):
        status = statuses.get(name, {}).get(version)
        if data.get("fallbacks") or status not in SERVING or not _in_scope(name, version, status, SERVING, only, before):
            continue
        path = f"bundles/{name}/{version}.yaml"
        model = data.get("model") or {}
        out.append(Finding(path, docs[path].line_of(("model",)), "warning",
                           f"{name} {version} serves traffic ({status}) with no fallbacks: when "
                           f"{model.get('provider', 'its provider')} fails there is nothing to fail over to; "
                           "add fallbacks: [{provider: ..., id: ...}] to the next version"))
    return out


def retirement_plan(reg: Reader, today: dt.date, ref: str = "HEAD") -> DeprecationsDocument:
    """`modelctl deprecations`: every retiring model a version on a route pins, with the date to start
    evaluating its replacement (the registry's deprecations.yaml over the shipped list)."""
    from . import deprecations

    snap = reg.snapshot(ref)
    assert snap.commit is not None  # reg.snapshot refuses a registry without a commit
    cfg = reg.config(snap)
    store = reg.store
    deps = [p for p in store.list_files(snap.commit, "deployments") if p.endswith(".yaml") and p.count("/") == 1]
    raw = snap.read_many(deps + ["deprecations.yaml"])
    statuses: Statuses = {}
    for path in deps:
        try:
            data = yamlio.loads(raw[path] or b"", path).data
        except ModelctlError:
            continue  # `check` reports an unreadable deployment file
        versions = data.get("versions") if isinstance(data, dict) else None
        if isinstance(versions, dict):
            statuses[path[len("deployments/"):-5]] = {str(v): str(s) for v, s in versions.items()}
    wanted = [f"bundles/{n}/{v}.yaml" for n, vs in statuses.items() for v, s in vs.items() if s in ON_ROUTE]
    bundles: Bundles = {}
    for path, text in snap.read_many(wanted).items():
        try:
            data = yamlio.loads(text, path).data if text is not None else None
        except ModelctlError:
            continue
        if isinstance(data, dict):
            _, name, file = path.split("/")
            bundles[(name, file[:-5])] = data
    own_raw = raw["deprecations.yaml"]
    own = deprecations.parse_deprecations(yamlio.loads(own_raw, "deprecations.yaml").data) if own_raw else []
    table = deprecations.combine(deprecations.shipped(), own)
    warn_days = cfg.deprecation.warn_days
    rows = deprecations.plan(bundles, statuses, table, today=today, warn_days=warn_days, on_route=ON_ROUTE)
    return {
        "commit": snap.commit, "today": today.isoformat(), "warn_days": warn_days,
        "models": [{"model": p.model, "retires": p.retires.isoformat(), "replacement": p.replacement,
                    "source": p.source, "listed_in": p.origin, "evaluate_from": p.evaluate_from.isoformat(),
                    "days_left": p.days_left, "state": p.state,
                    "versions": [{"name": u.name, "version": u.version, "status": u.status, "field": u.field}
                                 for u in p.uses]} for p in rows],
    }


def _route_findings(cfg: configmod.Config, docs: dict[str, yamlio.Document], bundles: Bundles,
                    only: set[str] | None, today: dt.date) -> list[Finding]:
    """Routes' fallback chains: a serving route with no fallback at all warns; a fallback that is
    not pinned or is retired is an error (a failover to it would fail too)."""
    from . import deprecations, routes
    from .bundle import check_pinned

    own: list[deprecations.Retirement] = []
    dep_doc = docs.get("deprecations.yaml")
    if dep_doc is not None:
        try:
            own = deprecations.parse_deprecations(dep_doc.data)
        except ModelctlError:
            own = []  # its own finding says why
    table = deprecations.combine(deprecations.shipped(), own)  # the shipped list, extended and overridden
    out: list[Finding] = []
    for path, doc in sorted(docs.items()):
        if not (path.startswith("deployments/") and isinstance(doc.data, dict) and doc.data.get("routes")):
            continue
        if only is not None and path not in only and "deprecations.yaml" not in only and configmod.CONFIG_FILE not in only:
            continue
        dep, name = doc.data, path[len("deployments/"):-5]
        for rname, r in sorted(routes.routes_of(dep).items()):
            r = r if isinstance(r, dict) else {}
            fallback = r.get("fallback") if isinstance(r.get("fallback"), dict) else None
            chain = [e for e in (fallback or {}).get("chain") or [] if isinstance(e, dict) and isinstance(e.get("id"), str)]
            active, live = routes.effective(dep, rname)
            served = [v for v in (active, (live or {}).get("version")) if isinstance(v, str)]
            if served and not chain and not all((bundles.get((name, v)) or {}).get("fallbacks") for v in served):
                out.append(Finding(path, doc.line_of(("routes", rname)), "warning",
                                   f"route {rname} of {name} serves traffic ({', '.join(served)}) with no fallback: "
                                   f"set one with `modelctl route {name} {rname} --fallback provider/id`"))
            for i, entry in enumerate(chain):
                line = doc.line_of(("routes", rname, "fallback", "chain", i))
                try:
                    check_pinned({"provider": entry.get("provider"), "id": entry["id"]}, cfg.pinning, path, line)
                except ModelctlError as exc:
                    out.append(Finding(path, line, "error", f"route {rname} of {name}: fallback "
                                       f"{exc.message.split(': model.id: ', 1)[-1]}"))
                pin = deprecations.Pin(f"routes.{rname}.fallback.chain[{i}].id",
                                       entry.get("provider") if isinstance(entry.get("provider"), str) else None,
                                       entry["id"])
                for f in deprecations.check_pins([pin], table, file=path, today=today,
                                                 warn_days=cfg.deprecation.warn_days):
                    out.append(Finding(path, line, f.severity, f"route {rname} of {name}: {f.message}"))
    return out


def merge_base(reg: Reader, ref: str) -> str:
    """The commit a pull request against `ref` started from: the merge base of `ref` and HEAD."""
    from .errors import UsageError

    if not ref or ref.startswith("-") or any(ch.isspace() or ch == "\0" for ch in ref):
        raise UsageError(f"invalid --changed-since {ref!r}", hint="pass a branch, tag or commit such as origin/main")
    store = reg.store
    commit = store.rev(ref)
    if not commit:
        raise UsageError(f"--changed-since {ref!r} does not name a commit here",
                         hint="fetch it first (CI: actions/checkout with fetch-depth: 0), e.g. 'git fetch origin main'")
    base = store.merge_base(commit, "HEAD")
    if base is None:
        raise UsageError(f"{ref} and HEAD share no history", hint="fetch the full history (fetch-depth: 0)")
    return base


def changed_paths(reg: Reader, base: str) -> set[str]:
    """Files that differ between commit `base` and HEAD (`git diff --name-only base...HEAD`)."""
    return reg.store.changed_since(base, "HEAD")
