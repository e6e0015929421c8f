"""What a reviewer needs: the eval gate against the serving version, and the body of a promotion pull request.

`run_gate` finds the two eval reports (the candidate's from its bundle or a file, the baseline's
from the serving version's bundle or `--baseline`) and hands them to the pure `gate.evaluate`.
`pull_request` reads back a commit that a `--branch` write left on a review branch and describes
it: the state change, the bundle diff against the serving version, the gate; `render.pull_request_markdown`
renders that (pure).

A first version has no serving version and so no baseline report: the gate then compares
nothing, but still requires every configured metric in the candidate's report (it becomes the
baseline of the next version) and passes with a note saying so. This matches the pipeline,
which waives shadow and canary for a first version for the same reason.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import config as configmod
from . import gate as gatemod
from . import schema, trailers, yamlio
from .errors import ModelctlError, UsageError, ValidationError
from .names import check_name, check_version

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .reader import Reader
    from .store import Snapshot

API_SCHEMA = "modelctl/v1"
NOT_GATED = ("deprecated", "archived", "rolled-back")  # moves out of service: no gate applies


# -- eval reports ---------------------------------------------------------------------------

def _report_doc(doc: yamlio.Document, name: str, version: str | None) -> dict[str, Any]:
    data = schema.validate(doc, "EvalReport")
    if data["name"] != name or (version is not None and data["version"] != version):
        raise ValidationError(
            f"{doc.path}: the report is for {data['name']} {data['version']}, not {name} {version}",
            hint="point at the report of that version",
        )
    return data


def read_report_file(path: str | os.PathLike[str], name: str, version: str) -> dict[str, Any]:
    """An eval report from a file on disk (YAML or JSON), schema-checked and for name/version."""
    return _report_doc(yamlio.load_file(path), name, version)


def _bundle_report(reg: Reader, snap: Snapshot, name: str, version: str, role: str) -> dict[str, Any]:
    bundle = reg.bundle(name, version, snap)
    rel = (bundle.get("eval") or {}).get("report")
    if not rel:
        # the registry layout's place for a version's report, when the bundle names none
        for conventional in (f"evals/{name}/{version}.yaml", f"evals/{name}/{version}.json"):
            if snap.read(conventional) is not None:
                rel = conventional
                break
    if not rel:
        if role == "candidate":
            raise UsageError(f"{name} {version} has no eval report (eval.report in its bundle, or "
                             f"evals/{name}/{version}.yaml)",
                             hint="pass --report FILE, or register a version that names its report")
        raise UsageError(f"the baseline {name} {version} has no eval report, so there is nothing to compare with",
                         hint="pass --baseline VERSION (a version with a report), or promote with --force --reason")
    raw = snap.read(rel)
    if raw is None:
        if configmod.uncommitted(snap, rel):
            raise ValidationError(f"bundles/{name}/{version}.yaml: eval.report: {rel} is only in your work tree, "
                                  "not committed", hint="commit it first")
        raise ValidationError(f"bundles/{name}/{version}.yaml: eval.report: {rel} does not exist",
                              hint="commit the report (modelctl check reports this too)")
    return configmod.read_committed(snap, rel, lambda data: _report_doc(yamlio.loads(data or b"", rel), name, version))


def serving_baseline(dep: dict[str, Any] | None, version: str) -> str | None:
    """The version a candidate is judged against: the active one (or, when the candidate is
    itself active, as on a promotion branch, the version it replaced); None before any."""
    if not dep:
        return None
    active = dep.get("active")
    return dep.get("previous") if active == version else active


def run_gate(reg: Reader, snap: Snapshot, cfg: configmod.Config, name: str, version: str,
             report: str | os.PathLike[str] | None = None,
             baseline: str | None = None) -> gatemod.GateResult:
    """The gate for name/version at a snapshot: its report (or `report`) against the serving
    version's (or `baseline`'s). Raises UsageError (exit 2) when it cannot judge."""
    check_name(name)
    check_version(version)
    if baseline is not None:
        check_version(baseline)
        if baseline == version:
            raise UsageError(f"--baseline {baseline} is the candidate itself", hint="pick another version")
    if report is not None:
        candidate = read_report_file(report, name, version)
    else:
        candidate = _bundle_report(reg, snap, name, version, "candidate")
    if baseline is None:
        baseline = serving_baseline(reg.deployment(name, snap), version)
        if baseline is None:
            return gatemod.evaluate_alone(
                candidate, cfg.gate.as_dict(),
                f"nothing serves {name} yet, so {version} is a first version; its report becomes the baseline "
                "of later versions")
    base = _bundle_report(reg, snap, name, baseline, "baseline")
    return gatemod.evaluate(candidate, base, cfg.gate.as_dict())


# -- promotion pull requests ------------------------------------------------------------------

def _routing(dep: dict[str, Any] | None) -> dict[str, Any]:
    dep = dep or {}
    return {"active": dep.get("active"), "previous": dep.get("previous"), "canary": dep.get("canary"),
            "shadow": dep.get("shadow"), "hold": dep.get("hold")}


def pull_request(reg: Reader, commit: str, *, branch: str, base: str | None = None) -> dict[str, Any]:
    """What a review branch's commit does, as data: action, state before/after, diffs, gate."""
    from .bundle import bundle_diff
    from .reader import deployment_path

    store = reg.store
    message, block = store.commit_message(commit)
    pairs = trailers.parse_pairs(block)
    said = trailers.parse(block)
    parent = store.rev(f"{commit}^")
    name, version = said.get(trailers.MODEL), said.get(trailers.VERSION)
    action = said.get(trailers.ACTION, "")
    after_snap = reg.store.snapshot(commit)
    before_snap = reg.store.snapshot(parent) if parent else None
    files = store.name_status(parent, commit)
    doc: dict[str, Any] = {
        "schema": API_SCHEMA, "branch": branch, "base": base, "commit": commit, "parent": parent,
        "subject": message.splitlines()[0] if message else "", "action": action, "name": name,
        "version": version, "trailers": [list(t) for t in pairs],
        "files": [{"status": status, "path": path} for status, path in files],
        "state": None, "deployment_diff": None, "serving": None, "bundle_diff": None, "gate": None,
    }
    if not name or not version:
        return doc
    check_name(name)
    check_version(version)
    dep_path = deployment_path(name)
    before = reg.deployment(name, before_snap) if before_snap and before_snap.commit else None
    after = reg.deployment(name, after_snap)
    doc["state"] = {
        "before": {**_routing(before), "status": (before or {}).get("versions", {}).get(version)},
        "after": {**_routing(after), "status": (after or {}).get("versions", {}).get(version)},
    }
    doc["deployment_diff"] = store.diff_text(parent, commit, dep_path)
    serving = (before or {}).get("active")
    doc["serving"] = serving
    candidate = reg.bundle(name, version, after_snap)
    if serving and serving != version:
        doc["bundle_diff"] = {"from": serving, "to": version,
                              **bundle_diff(reg.bundle(name, serving, after_snap), candidate)}
    to_status = doc["state"]["after"]["status"]
    if action == "rollback" or to_status in NOT_GATED:
        doc["gate"] = {"applies": False, "reason": f"{version} leaves service ({to_status or action}): no gate applies"}
    else:
        recorded = trailers.only(pairs, (trailers.GATE, trailers.GATE_OVERRIDE))
        try:
            result = run_gate(reg, after_snap, reg.config(after_snap), name, version,
                              baseline=serving if serving and serving != version else None)
            doc["gate"] = {"applies": True, "result": result.to_dict(), "error": None, "recorded": recorded}
        except ModelctlError as exc:
            doc["gate"] = {"applies": True, "result": None, "error": str(exc), "recorded": recorded}
    return doc
