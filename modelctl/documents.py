"""The shapes of every `--json` document, as types; schemas/output/ publishes them as JSON Schemas.

One TypedDict per document (and per part that several documents share). The builders return
these; `render.emit_json` adds the `"schema": "modelctl/v1"` key first. Keys that are only
present in some states (`key` with `--key`, `cost` of a shadow, `changed_since` of a check) are
NotRequired; every other key is always present, null when it does not apply.

OUTPUT_SCHEMAS names the published schema of each command that takes `--json`; the test in
tests/test_output_schemas.py fails when a command has `--json` and no entry here. Stability: a
field may be added within v1; removing, renaming or retyping one makes a new version.

Nothing here runs at import time beyond the class statements: the builders import this module
only for type checking, so no command starts slower.
"""
from typing import Any, Literal, NotRequired, TypedDict

# command -> file under schemas/output/ (the write commands print one document shape)
OUTPUT_SCHEMAS = {
    "init": "init.schema.json",
    "register": "write.schema.json",
    "promote": "write.schema.json",
    "shadow": "write.schema.json",
    "canary": "write.schema.json",
    "rollback": "write.schema.json",
    "gc": "write.schema.json",
    "route": "write.schema.json",
    "status": "status.schema.json",
    "show": "show.schema.json",
    "diff": "diff.schema.json",
    "log": "log.schema.json",
    "which": "which.schema.json",
    "resolve": "resolve.schema.json",
    "check": "check.schema.json",
    "deprecations": "deprecations.schema.json",
    "doctor": "doctor.schema.json",
    "gate": "gate.schema.json",
    "watch": "watch.schema.json",
    "replay": "replay.schema.json",
    "compat": "compat.schema.json",
}

Number = int | float
# watch and replay: JSON has no NaN or Infinity, so those floats are written as "nan", "inf", "-inf"
Real = int | float | str


# -- pieces of the deployment file ------------------------------------------------------------

class Split(TypedDict):
    """A canary or shadow as the deployment file holds it."""

    version: str
    percent: Number
    started: NotRequired[str]
    segment: NotRequired[str]  # canary only: the caller segment it serves


class Hold(TypedDict):
    """The version a rollback put on hold."""

    version: str
    reason: NotRequired[str]
    at: NotRequired[str]


# -- init and the writes ----------------------------------------------------------------------

class InitDocument(TypedDict):
    """`init --json`."""

    schema: NotRequired[str]
    path: str
    commit: str
    files: list[str]


class RegisterResult(TypedDict):
    """What `register` did (or, with `note`, found already done)."""

    name: str
    version: str
    path: str
    change: NotRequired[list[str]]
    semver: NotRequired[str | None]
    note: NotRequired[str]


class ShadowCost(TypedDict):
    """The daily cost of mirrored traffic against the budget."""

    per_day: Number
    requests_per_day: Number
    percent: Number
    cost_per_request: Number
    budget_per_day: Number
    over_budget: bool


RollbackChange = TypedDict("RollbackChange", {"from": str, "to": str, "kind": str, "redeploy": bool})
RollbackChange.__doc__ = "What a rollback changed for a gateway: model, prompt and/or config; redeploy when the model did."


TransitionResult = TypedDict("TransitionResult", {
    "name": str,
    "action": str,
    "version": str | None,
    "from": str | None,
    "to": str | None,
    "percent": Number | None,
    "subject": str,
    "active": str | None,
    "previous": str | None,
    "canary": Split | None,
    "shadow": Split | None,
    "hold": Hold | None,
    "reason": str | None,
    "gate": str | None,
    "cost": NotRequired[ShadowCost],
    "change": NotRequired[RollbackChange],
    "route": NotRequired[str],
    "routes": NotRequired[dict[str, Any]],
})
TransitionResult.__doc__ = "What a lifecycle write (promote, shadow, canary, rollback) did, and the state after it."


class PullRequest(TypedDict):
    """With --branch: the review branch and the pull-request body."""

    branch: str
    base: str
    body: str
    body_file: str | None


class GcResult(TypedDict):
    """What `gc` archived (or, with --dry-run, would archive), per model."""

    keep_deprecated: int
    dry_run: bool
    archived: dict[str, list[str]]


class WriteDocument(TypedDict):
    """`register`, `promote`, `shadow`, `canary`, `rollback`, `gc` with --json."""

    schema: NotRequired[str]
    commit: str | None
    tags: list[str]
    pushed: bool
    noop: bool
    branch: str
    attempts: int
    seconds: Number
    # a dict when something was written; the note (a string) when it was already done
    result: RegisterResult | TransitionResult | GcResult | str | None
    pull_request: NotRequired[PullRequest]


# -- reading ----------------------------------------------------------------------------------


class CompatRow(TypedDict):
    """One version at one place (the default traffic or a route) in `compat`."""

    model: str
    version: str
    role: str
    place: str
    serving: bool
    declares: bool
    compatible: bool
    mismatches: list[str]


class CompatDocument(TypedDict):
    """`compat --json`: what the platform provides and every serving and candidate version against it."""

    schema: NotRequired[str]
    platform: dict[str, Any]
    rows: list[CompatRow]
    ok: bool

class StatusRow(TypedDict):
    """One model in `status`."""

    name: str
    active: str | None
    previous: str | None
    canary: Split | None
    shadow: Split | None
    hold: Hold | None
    latest: str | None
    versions: int


class StatusDocument(TypedDict):
    """`status --json`."""

    schema: str
    commit: str
    models: list[StatusRow]


class ShowVersion(TypedDict):
    """One version in `show NAME`."""

    version: str
    status: str
    parent: str | None
    provider: str
    model: str
    adapter: str | None
    prompt: str
    prompt_sha256: str | None
    registered_at: str | None
    registered_by: str | None


class ShowModelDocument(TypedDict):
    """`show NAME --json`: every version of a model."""

    schema: str
    name: str
    active: str | None
    canary: Split | None
    shadow: Split | None
    versions: list[ShowVersion]


class ShowBundleDocument(TypedDict):
    """`show NAME@VERSION --json`: one bundle (schemas/bundle.schema.json) and its status."""

    schema: str
    name: str
    version: str
    status: str
    bundle: dict[str, Any]


ShowDocument = ShowModelDocument | ShowBundleDocument

FieldChange = TypedDict("FieldChange", {"field": str, "from": Any, "to": Any})
FieldChange.__doc__ = "One field that differs between two bundles (null: absent on that side)."


class BundleDiff(TypedDict):
    """Which parts of two bundles differ, field by field."""

    changed: list[str]
    fields: dict[str, list[FieldChange]]
    semver: Literal["patch", "minor", "major"] | None


DiffDocument = TypedDict("DiffDocument", {
    "schema": str,
    "name": str,
    "from": str,
    "to": str,
    "changed": list[str],
    "fields": dict[str, list[FieldChange]],
    "semver": Literal["patch", "minor", "major"] | None,
})
DiffDocument.__doc__ = "`diff NAME V1 V2 --json`."


class ResolvedBundle(TypedDict):
    """A version on a route with what a gateway needs of its bundle."""

    version: str
    percent: Number
    model: dict[str, str]
    prompt: dict[str, str]
    config: dict[str, Any]
    fallbacks: NotRequired[list[dict[str, Any]]]
    segment: NotRequired[dict[str, Any]]  # canary only: {name, attribute, equals | in}


class Assignment(TypedDict):
    """The bucket rule, spelled out for gateways in other languages."""

    hash: str
    input: str
    bucket: str
    buckets: int
    canary_when: str
    segment_when: NotRequired[str]


class KeyAssignment(TypedDict):
    """With --key: which version serves that key."""

    key: str
    bucket: int
    version: str | None
    role: Literal["active", "canary"] | None
    attributes: NotRequired[dict[str, str]]
    route: NotRequired[str]  # with --route: the route that answered


class RoutingDocument(TypedDict):
    """The routing document of a deployment (routing.routing_document)."""

    schema: str
    name: str
    active: ResolvedBundle | None
    canary: ResolvedBundle | None
    shadow: ResolvedBundle | None
    assignment: Assignment
    change: NotRequired[RollbackChange]
    routes: NotRequired[dict[str, Any]]  # declared routes (modelctl.routes.document)


class ResolveDocument(RoutingDocument):
    """`resolve NAME --json`: the routing document at a commit; with --key, who serves that key."""

    commit: str
    key: NotRequired[KeyAssignment]

class LogSigner(TypedDict):
    """Who signed an event's commit, judged against .modelctl/allowed_signers at its parent (modelctl.signing)."""

    status: str  # verified | unsigned | bad-signature | unknown-key | identity-mismatch | unverifiable | no-signers
    principal: str | None
    key: str | None


LogEvent = TypedDict("LogEvent", {
    "commit": str,
    "time": str,
    "author": str,
    "email": str,
    "subject": str,
    "action": str,
    "inferred": bool,
    "version": str | None,
    "from": str | None,
    "to": str | None,
    "percent": Number | str | None,
    "from_percent": Number | str | None,
    "replaces": str | None,
    "restored": str | None,
    "reason": str | None,
    "evidence": str | None,
    "force": str | None,
    "skipped": str | None,
    "waived": str | None,
    "override": str | None,
    "shadow_cost": str | None,
    "gate": str | None,
    "trailers": dict[str, str],
    "signer": LogSigner | None,
})
LogEvent.__doc__ = "One commit of a model's history: its trailers, or what its deployment diff shows (inferred)."


class LogDocument(TypedDict):
    """`log NAME --json`."""

    schema: NotRequired[str]
    name: str
    commit: str
    events: list[LogEvent]


class WhichEvent(TypedDict):
    """The event that set what served at that time."""

    action: str
    version: str | None
    author: str
    email: str
    subject: str
    reason: str | None
    evidence: str | None
    inferred: bool


class WhichDocument(TypedDict):
    """`which NAME --at TIME --json`."""

    schema: NotRequired[str]
    name: str
    at: str
    key: str | None
    commit: str | None
    since: str | None
    event: WhichEvent | None
    active: str | None
    canary: Split | None
    shadow: Split | None
    first_event: NotRequired[str]
    bucket: NotRequired[int]
    served_by: NotRequired[str | None]
    role: NotRequired[Literal["active", "canary"] | None]
    route: NotRequired[str]  # which --route: the route's own answer (active, canary are the route's)


# -- CI: check, doctor, gate ----------------------------------------------------------------------

class CheckFinding(TypedDict):
    """One problem `check` found."""

    path: str
    line: int | None
    level: Literal["error", "warning"]
    message: str


class RetiringUse(TypedDict):
    """A version on a route that pins a retiring model."""

    name: str
    version: str
    status: str
    field: str  # model.id or fallbacks[i].id


class RetiringModel(TypedDict):
    """One retiring model: when, what replaces it, when to start evaluating, who pins it."""

    model: str
    retires: str
    replacement: str | None
    source: str | None
    listed_in: str  # retirements.yaml (shipped) or deprecations.yaml (the registry's)
    evaluate_from: str
    days_left: int
    state: Literal["retired", "warning", "planned"]
    versions: list[RetiringUse]


class DeprecationsDocument(TypedDict):
    """`deprecations --json`."""

    schema: NotRequired[str]
    commit: str
    today: str
    warn_days: int
    models: list[RetiringModel]


class CheckDocument(TypedDict):
    """`check --json` (or --format json)."""

    schema: NotRequired[str]
    commit: str
    checked: int
    ok: bool
    errors: int
    warnings: int
    findings: list[CheckFinding]
    changed_since: NotRequired[str]


class DoctorFinding(TypedDict):
    """One thing `doctor` noticed."""

    kind: str
    level: Literal["error", "warning", "info"]
    message: str
    fix: str | None
    subject: str


class DoctorRemote(TypedDict):
    """The clone against its remote."""

    push: bool
    name: str | None
    branch: str
    url: str | None
    reachable: bool | None
    local: str | None
    remote: str | None
    ahead: int
    behind: int
    checked: str | None


class DoctorDocument(TypedDict):
    """`doctor --json`."""

    schema: NotRequired[str]
    ok: bool
    fix: bool
    remote: DoctorRemote
    problems: int
    fixed: list[str]
    findings: list[DoctorFinding]


class ReportRef(TypedDict):
    """The name and version an eval report says it is about."""

    name: str | None
    version: str | None


class GateMetric(TypedDict):
    """The verdict on one metric of the gate."""

    metric: str
    rule: str
    better: Literal["higher", "lower"]
    baseline: Number | None
    candidate: Number | None
    n_baseline: int | None
    n_candidate: int | None
    change: Number | None
    change_relative: Number | None
    limit: Number | None
    test: str | None
    p_value: Number | None
    alpha: Number | None
    verdict: Literal["pass", "fail"]
    reason: str


class GateDocument(TypedDict):
    """`gate NAME VERSION --json` (or --format json)."""

    schema: str
    passed: bool
    candidate: ReportRef
    baseline: ReportRef
    dataset: dict[str, str]
    alpha: Number
    failures: list[str]
    note: str | None
    metrics: list[GateMetric]


# -- watch and replay ---------------------------------------------------------------------------

class MetricEvidence(TypedDict):
    """The verdict on one metric (in one segment) at one poll, with the figures behind it."""

    metric: str
    segment: str
    verdict: str
    type: str
    action: str
    canary: Real | None
    control: Real | None
    control_source: str | None
    canary_n: Real | None
    control_n: Real | None
    canary_events: Real | None
    control_events: Real | None
    intervals: int
    error_intervals: int
    statistic: str | None
    value: Real | None
    cumulative: Real | None
    bound: Real | None
    pass_bound: Real | None
    alpha: Real | None
    ratio: Real | None
    indifference: Real | None
    dispersion: Real | None
    threshold_ms: Real | None
    reason: str


class MetricRow(MetricEvidence):
    """A metric row of a `watch --json` poll line: the evidence and the failing streak."""

    streak: int


class PollSplit(TypedDict):
    """The canary (or shadow) a poll judged."""

    version: str
    percent: Number


class ShadowReport(PollSplit):
    """The shadow's verdict at a poll (reported, never acted on)."""

    verdict: str | None
    metrics: list[MetricRow]


class WatchPollLine(TypedDict):
    """One `watch --json` line per poll."""

    schema: NotRequired[str]
    event: Literal["poll"]
    poll: int
    time: str
    model: str
    active: str | None
    canary: PollSplit | None
    since_seconds: Real
    action: str | None
    reason: str | None
    error_polls: int
    error: str | None
    metrics: list[MetricRow]
    shadow: ShadowReport | None
    dry_run: bool
    seconds: Real


class _WatchEventKeys(TypedDict):
    event: str
    message: str


class WatchEventLine(_WatchEventKeys, total=False):
    """A `watch --json` line for something done between polls (header, alert, step ...); the other keys
    depend on the event."""

    schema: str
    lines: list[str]
    rps_canary: Real | None
    model: str
    version: str
    percent: Number
    commit: str | None
    evidence: list[str]


class WatchResultLine(TypedDict):
    """The last `watch --json` line: how the watch ended."""

    schema: NotRequired[str]
    event: Literal["result"]
    outcome: str
    exit_code: int
    message: str
    model: str
    version: str | None
    polls: int
    commit: str | None
    pushed: bool
    tags: list[str]
    detect_to_commit_seconds: Real | None
    reason: str | None
    evidence: list[str]


WatchLine = WatchPollLine | WatchEventLine | WatchResultLine


class DecisionDocument(TypedDict):
    """What one poll decided, and why (analysis.Decision)."""

    action: str
    reason: str
    time: Real | None
    error_polls: int
    fail_safe: bool
    srm: dict[str, Any] | None
    deciding: list[str]
    results: list[MetricEvidence]


class CanaryReplayDocument(TypedDict):
    """One canary of a poll record, judged again."""

    canary_id: str
    model: str | None
    canary: str
    control: str | None
    polls: int
    judged: int
    action: str
    poll: int | None
    time: Real | None
    last_action: str | None
    evidence: list[str]
    decision: DecisionDocument | None


class ReplayDocument(TypedDict):
    """`replay FILE --json`."""

    schema: NotRequired[str]
    canaries: list[CanaryReplayDocument]
