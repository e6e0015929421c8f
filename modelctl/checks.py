"""`check`: every file against its schema, prompt hashes, bundle immutability, deployment consistency.

Reads everything at one commit with a handful of git processes (ls-tree, cat-file --batch,
for-each-ref), so it stays fast on large registries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from . import bundle as bundlemod
from . import config as configmod
from . import schema, yamlio
from .errors import ModelctlError
from .names import NAME_RE, VERSION_RE

LIVE = ("active", "canary", "shadow")


@dataclass
class Finding:
    """One problem: where, how bad, what."""

    path: str
    line: int | None
    level: str  # error | warning
    message: str


def _files(store, commit: str) -> dict[str, str]:
    """path -> blob id of every file at a commit."""
    text = store.git("ls-tree", "-r", "-z", "--full-tree", commit).stdout.decode("utf-8", "replace")
    out = {}
    for entry in text.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, obj = meta.split()
        out[path] = ("symlink:" if mode == "120000" else "") + obj
    return out


def run(reg, ref: str = "HEAD", only: set[str] | None = None) -> dict:
    """Check the registry at `ref`; `only` limits the files checked (e.g. those a PR touched)."""
    snap = reg.snapshot(ref)
    store = reg.store
    findings: list[Finding] = []
    files = _files(store, snap.commit)

    def want(path: str) -> bool:
        return only is None or path in only

    def add(path, line, level, message):
        findings.append(Finding(path, line, level, message))

    yaml_paths = [p for p in files if p.endswith((".yaml", ".yml", ".json")) and not files[p].startswith("symlink:")
                  and (p == "modelctl.yaml" or p.startswith(("bundles/", "deployments/", "evals/"))
                       or p == "deprecations.yaml")]
    raw = snap.read_many(yaml_paths)
    docs: dict[str, yamlio.Document] = {}
    for path in yaml_paths:
        try:
            if path.endswith(".json"):
                import json

                docs[path] = yamlio.Document(json.loads(raw[path]), path, {})
            else:
                docs[path] = yamlio.loads(raw[path], path)
        except (ModelctlError, ValueError) as exc:
            if want(path):
                add(path, None, "error", str(exc).split(": ", 1)[-1] if isinstance(exc, ModelctlError) else str(exc))

    cfg = configmod.DEFAULTS
    if "modelctl.yaml" not in files:
        add("modelctl.yaml", None, "error", "missing: this is not a modelctl registry")
    elif "modelctl.yaml" in docs:
        found = schema.problems(docs["modelctl.yaml"], "Registry")
        for p in found:
            add("modelctl.yaml", _line(p), "error", _msg(p))
        if not found:
            cfg = configmod.parse(raw["modelctl.yaml"])

    reg_commits = _registration_commits(store)
    bundles: dict[tuple[str, str], dict] = {}
    for path, doc in docs.items():
        parts = path.split("/")
        if parts[0] == "bundles":
            if len(parts) != 3 or not parts[2].endswith(".yaml"):
                if want(path):
                    add(path, None, "error", "bundles live at bundles/<name>/<version>.yaml")
                continue
            name, version = parts[1], parts[2][:-5]
            problems = schema.problems(doc, "Bundle")
            if want(path):
                for p in problems:
                    add(path, _line(p), "error", _msg(p))
            if problems:
                continue
            data = doc.data
            bundles[(name, version)] = data
            if not want(path):
                continue
            if data["name"] != name or data["version"] != version:
                add(path, doc.line_of(("name",)), "error",
                    f"file says {data['name']} {data['version']} but lives at {path}")
            tpl = data["prompt"]["template"]
            if tpl not in files:
                add(path, doc.line_of(("prompt", "template")), "error", f"prompt {tpl} does not exist")
            elif files[tpl].startswith("symlink:"):
                add(path, doc.line_of(("prompt", "template")), "error", f"prompt {tpl} is a symlink")
            else:
                content = snap.read(tpl)
                if bundlemod.sha256(content) != data["prompt"].get("sha256"):
                    add(path, doc.line_of(("prompt", "sha256")), "error",
                        f"prompt {tpl} changed since registration (sha256 mismatch)")
            report = (data.get("eval") or {}).get("report")
            if report and report not in files:
                add(path, doc.line_of(("eval", "report")), "error", f"eval report {report} does not exist")
            tag_commit = reg_commits.get((name, version))
            if tag_commit is None:
                add(path, None, "warning", f"no registration tag {name}@v{version} (run 'modelctl doctor --fix')")
            else:
                then = store.git("rev-parse", "--verify", "--quiet", f"{tag_commit}:{path}", check=False)
                if then.stdout.decode().strip() != files[path]:
                    add(path, None, "error", f"bundle changed since its registration tag {name}@v{version}; "
                                             "registered bundles are immutable: register a new version instead")
        elif parts[0] == "evals" and want(path):
            for p in schema.problems(doc, "EvalReport"):
                add(path, _line(p), "error", _msg(p))

    for path, doc in docs.items():
        if not path.startswith("deployments/") or not want(path):
            continue
        name = path[len("deployments/"):-5]
        problems = schema.problems(doc, "Deployment")
        for p in problems:
            add(path, _line(p), "error", _msg(p))
        if problems:
            continue
        for msg, loc in deployment_problems(doc.data, name, {v for (n, v) in bundles if n == name}):
            add(path, doc.line_of(loc), "error", msg)

    for path, blob in files.items():
        if path.startswith("bundles/") and path not in docs and want(path) and not path.endswith(".gitkeep"):
            if path not in [f.path for f in findings]:
                add(path, None, "error", "unexpected file under bundles/")

    extra = _extensions(reg, snap, cfg, files, docs, bundles, want)
    findings.extend(extra)
    errors = sum(1 for f in findings if f.level == "error")
    return {"commit": snap.commit, "checked": len([p for p in yaml_paths if want(p)]),
            "ok": errors == 0, "errors": errors, "warnings": len(findings) - errors,
            "findings": [asdict(f) for f in findings]}


def deployment_problems(dep: dict, name: str, registered: set[str]) -> list[tuple[str, tuple]]:
    """Inconsistencies inside a deployment file and against the registered bundles."""
    out = []
    if dep["name"] != name:
        out.append((f"file says name {dep['name']} but lives at deployments/{name}.yaml", ("name",)))
    versions = dep.get("versions") or {}
    for v in versions:
        if v not in registered:
            out.append((f"version {v} is listed but has no bundle bundles/{name}/{v}.yaml", ("versions", v)))
    for v in sorted(registered - set(versions)):
        out.append((f"registered version {v} is missing from versions", ("versions",)))
    if dep.get("active") and versions.get(dep["active"]) != "active":
        out.append((f"active is {dep['active']} but its status is {versions.get(dep['active'])}", ("active",)))
    for key in ("canary", "shadow"):
        split = dep.get(key)
        if split and versions.get(split["version"]) != key:
            out.append((f"{key} is {split['version']} but its status is {versions.get(split['version'])}", (key,)))
    for v, st in versions.items():
        if st == "active" and dep.get("active") != v:
            out.append((f"{v} has status active but active is {dep.get('active')}", ("versions", v)))
        if st in ("canary", "shadow") and (dep.get(st) or {}).get("version") != v:
            out.append((f"{v} has status {st} but {st} is {fmt_split(dep.get(st))}", ("versions", v)))
    return out


def fmt_split(split) -> str:
    return "null" if not split else f"{split['version']}"


def _registration_commits(store) -> dict[tuple[str, str], str]:
    text = store.out("for-each-ref", "--format=%(refname:strip=2) %(*objectname) %(objectname)", "refs/tags/*@v*")
    out = {}
    for row in text.splitlines():
        name, peeled, obj = (row.split(" ") + ["", ""])[:3]
        model, _, version = name.partition("@v")
        if NAME_RE.fullmatch(model) and VERSION_RE.fullmatch(version):
            out[(model, version)] = peeled or obj
    return out


def _line(problem: str) -> int | None:
    try:
        return int(problem.split(":", 2)[1])
    except (IndexError, ValueError):
        return None


def _msg(problem: str) -> str:
    return problem.split(":", 2)[2].strip() if problem.count(":") >= 2 else problem


def _extensions(reg, snap, cfg, files, docs, bundles, want) -> list[Finding]:
    """Checks added by other parts (secrets, deprecations); each returns Findings."""
    return []
