"""A model's history from git: `log` (every event) and `which` (what served at a time).

Both read only the history of the model's own files (`deployments/<name>.yaml` and
`bundles/<name>/`), through path-limited `git log`, never every commit of the repository: the
commit trailers (DESIGN §3) say what happened, the deployment file as of a commit says what served.
A commit without trailers (a squash merge, a hand edit) is read from its deployment diff
(`state.infer_event`) and marked ``"inferred": true``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from . import schema, state, trailers, yamlio
from .errors import ModelctlError, NotFound, UsageError
from .names import check_name

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import LogDocument, LogEvent, Number, Split, WhichDocument
    from .store import Store

# The `git log` fields of one commit (Store.log_records).
_FIELDS = ["%H", "%P", "%ct", "%an", "%ae", "%s", "%(trailers:only,unfold)"]



def iso(ts: int) -> str:
    """A unix time as UTC ISO 8601 with a Z (always a 4-digit year: strftime drops zeros on year 1).

    The date part is computed once per day: `show` formats ten thousand registration times.
    """
    day, sec = divmod(int(ts), 86400)
    date = _DAYS.get(day)
    if date is None:
        d = dt.datetime.fromtimestamp(day * 86400, dt.UTC)
        date = _DAYS[day] = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    return f"{date}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}Z"


_DAYS: dict[int, str] = {}


# what a UTC datetime can hold: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_MIN_TS, _MAX_TS = -62135596800, 253402300799
_TIME_HINT = ("use ISO 8601 such as 2026-02-14, 2026-02-14T10:30:00Z or 2026-02-14T11:30:00+01:00 "
              "(no zone means UTC), between years 0001 and 9999")


def parse_time(text: str) -> int:
    """`--at` as a unix time: ISO 8601 date or date-time (no zone means UTC), `@UNIX`, or `now`."""
    raw = (text or "").strip()
    if raw == "now":
        return int(dt.datetime.now(dt.UTC).timestamp())
    if raw.startswith("@") and raw[1:].isdigit():
        ts = int(raw[1:]) if len(raw) < 20 else _MAX_TS + 1
    else:
        try:
            when = dt.datetime.fromisoformat(raw.replace(" ", "T", 1) if len(raw) > 10 else raw)
        except ValueError:
            raise UsageError(f"invalid time {text!r}", hint=_TIME_HINT) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        try:
            ts = int(when.timestamp())
        except (OverflowError, ValueError):
            ts = _MAX_TS + 1
    if not _MIN_TS <= ts <= _MAX_TS:
        raise UsageError(f"time {text!r} is outside years 0001-9999 in UTC", hint=_TIME_HINT)
    return ts


def _paths(name: str) -> list[str]:
    return [f"deployments/{name}.yaml", f"bundles/{name}/"]


def _parse_record(parts: list[str]) -> tuple[LogEvent, str | None] | None:
    """One `git log` record as an event, and the commit's first parent (None for a root commit)."""
    if len(parts) != len(_FIELDS):
        return None
    sha, parents, at, author, email, subject, trailer_text = parts
    said = trailers.parse(trailer_text)
    # the trailer keys in trailers.EVENT_FIELDS order, which is the order `log --json` prints
    event: LogEvent = {
        "commit": sha,
        "time": iso(int(at)),
        "author": author,
        "email": email,
        "subject": subject,
        "action": said.get(trailers.ACTION) or "edit",  # a hand edit of the model's files
        "inferred": False,
        "version": said.get(trailers.VERSION),
        "from": said.get(trailers.FROM),
        "to": said.get(trailers.TO),
        "percent": _number(said.get(trailers.PERCENT)),
        "from_percent": _number(said.get(trailers.FROM_PERCENT)),
        "replaces": said.get(trailers.REPLACES),
        "restored": said.get(trailers.RESTORED),
        "reason": said.get(trailers.REASON),
        "evidence": said.get(trailers.EVIDENCE),
        "force": said.get(trailers.FORCE),
        "skipped": said.get(trailers.SKIPPED),
        "waived": said.get(trailers.WAIVED),
        "override": said.get(trailers.OVERRIDE),
        "shadow_cost": said.get(trailers.SHADOW_COST),
        "gate": said.get(trailers.GATE),
        "trailers": said,
        "signer": None,  # filled in by log() when the registry lists allowed signers
    }
    first_parent = parents.split()
    return event, first_parent[0] if first_parent else None


def _number(text: str | None) -> Number | str | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def events(store: Store, name: str, ref: str | None = "HEAD", *, limit: int | None = None, before: int | None = None,
           action: str | None = None, grep: str | None = None, first_parent: bool = False) -> list[LogEvent]:
    """The model's events, newest first, from the history of its own files only (commit times)."""
    check_name(name)
    if ref is None:
        return []
    records = store.log_records(_FIELDS, ref, _paths(name), limit=limit, grep=grep, first_parent=first_parent,
                                before=iso(before) if before is not None else None) or []
    out: list[LogEvent] = []
    for record in records:
        parsed = _parse_record(record)
        if parsed is None:
            continue
        event, parent = parsed
        if event["action"] == "edit":
            _infer(store, name, event, parent)
        if action is None or event["action"] == action:
            out.append(event)
    return out


def deployment_at(store: Store, commit: str | None, path: str) -> dict[str, Any] | Literal[False] | None:
    """A deployment file at a commit: the data, None when absent, False when unreadable or invalid."""
    if commit is None:
        return None
    raw = store.read_many(commit, [path])[path]
    if raw is None:
        return None
    try:
        doc = yamlio.loads(raw, path)
    except ModelctlError:
        return False
    if schema.problems(doc, "Deployment"):
        return False
    data: dict[str, Any] = doc.data  # problems() refuses anything but a mapping
    return data


def _deployment(store: Store, commit: str | None, path: str) -> dict[str, Any] | None:
    return deployment_at(store, commit, path) or None


# What a deployment diff can tell of an event (state.infer_event's keys).
_Inferred = Literal["action", "version", "from", "to", "percent", "from_percent", "replaces", "restored"]
_INFERRED: tuple[_Inferred, ...] = ("action", "version", "from", "to", "percent", "from_percent", "replaces",
                                    "restored")


def _infer(store: Store, name: str, event: LogEvent, parent: str | None) -> None:
    """A commit without modelctl trailers (a squash merge, a hand edit): the event its deployment
    diff shows, marked inferred. `parent`: the commit's first parent."""
    path = f"deployments/{name}.yaml"
    after = _deployment(store, event["commit"], path)
    if after is None:
        return
    try:
        found = state.infer_event(_deployment(store, parent, path), after)
    except (AttributeError, TypeError, ValueError):  # a hand edit off the schema: leave it an "edit"
        return
    if not found:
        return
    for key in _INFERRED:
        if key in found:
            event[key] = found[key]
    event["inferred"] = True


def last_event(store: Store, ref: str | None, name: str, *, action: str, version: str) -> LogEvent | None:
    """The newest commit with this action on this version (e.g. who rolled a canary back)."""
    # --grep narrows the walk to commits naming the version; the trailers decide.
    for event in events(store, name, ref, grep=f"{trailers.VERSION}: {version}"):
        if event["action"] == action and event["version"] == version:
            return event
    return None


def last_exit(store: Store, ref: str | None, name: str, version: str) -> LogEvent | None:
    """The newest commit that took a version out of service: its rollback, the promotion that
    replaced it, or its retirement."""
    for event in events(store, name, ref, grep=f": {version}"):
        if event["version"] == version and event["to"] in ("rolled-back", "deprecated", "archived"):
            return event
        if event["action"] == "promote" and event["replaces"] == version:
            return event
    return None


def serving_since(store: Store, ref: str | None, name: str, version: str) -> LogEvent | None:
    """The newest commit that made `version` the active one: its promotion, or the rollback that
    restored it (None when history does not say, e.g. a hand edit)."""
    for event in events(store, name, ref, grep=f": {version}"):
        if (event["action"] == "promote" and event["to"] == "active" and event["version"] == version) or \
                event["restored"] == version:
            return event
    return None


def last_lifecycle_event(store: Store, ref: str | None, name: str, scan: int = 50) -> LogEvent | None:
    """The model's newest event that moved traffic or status (registrations skipped), or None."""
    for event in events(store, name, ref, limit=scan):
        if event["action"] != "register":
            return event
    return None


def log(store: Store, name: str, ref: str = "HEAD", limit: int | None = None) -> LogDocument:
    """Every lifecycle event of a model: time, author, action, versions, percent, reason, evidence."""
    commit = store.rev(ref)
    found = events(store, name, commit, limit=limit)
    if not found or commit is None:  # (no commit, no events)
        raise NotFound(f"no model named {name!r} in this registry",
                       hint="see 'modelctl status' for the models it has")
    _add_signers(store, commit, found)
    return {"name": name, "commit": commit, "events": found}


def _add_signers(store: Store, tip: str, found: list[LogEvent]) -> None:
    """Each event's verified signer, when the registry has .modelctl/allowed_signers at `tip`
    (otherwise no signature is checked: no extra process)."""
    from .signing import ALLOWED_SIGNERS

    if store.read_many(tip, [ALLOWED_SIGNERS])[ALLOWED_SIGNERS] is None:
        return
    from . import signing

    judged = {record.commit: check for record, check in
              signing.verify(store, ["--no-walk", *(e["commit"] for e in found)], [])}
    for event in found:
        check = judged.get(event["commit"])
        if check is not None:
            event["signer"] = {"status": check.status, "principal": check.principal, "key": check.key}


def which(store: Store, read_deployment: Callable[[str], dict[str, Any] | None], name: str, at: str | int,
          key: str | None = None, ref: str = "HEAD", *, route: str | None = None,
          attributes: Mapping[str, str] | None = None,
          read_segments: Callable[[str], Mapping[str, Mapping[str, Any]]] | None = None) -> WhichDocument:
    """What served `name` at a time: active, canary and percent, shadow; with a key, who served it.

    `read_deployment(commit)` loads deployments/<name>.yaml at a commit (validated). `route`: the
    route's active and canary as the file declared them then (a route not declared then: exit 2).
    `read_segments(commit)` modelctl.yaml's segments.rules there (for a canary limited to a segment,
    which the request's `attributes` decide).
    """
    from . import routes, routing

    check_name(name)
    if route is not None:
        routes.check_route(route)
    when = parse_time(at) if isinstance(at, str) else int(at)
    tip = store.rev(ref)
    # First parent: a change merged through a pull request counts from the merge, not from when
    # its branch commit was written.
    found = events(store, name, tip, limit=1, before=when, first_parent=True)
    doc: WhichDocument
    if not found:
        first = events(store, name, tip)
        if not first:
            raise NotFound(f"no model named {name!r} in this registry",
                           hint="see 'modelctl status' for the models it has")
        doc = {"name": name, "at": iso(when), "key": key, "commit": None, "since": None, "event": None,
               "active": None, "canary": None, "shadow": None, "first_event": first[-1]["time"]}
        if key is not None:
            doc.update({"bucket": routing.bucket(name, key), "served_by": None, "role": None})
        if route is not None:
            doc["route"] = route
        return doc
    event = found[0]
    dep = read_deployment(event["commit"])
    doc = {
        "name": name,
        "at": iso(when),
        "key": key,
        "commit": event["commit"],
        "since": event["time"],
        "event": {"action": event["action"], "version": event["version"], "author": event["author"],
                  "email": event["email"], "subject": event["subject"], "reason": event["reason"],
                  "evidence": event["evidence"], "inferred": event["inferred"]},
        "active": dep.get("active") if dep else None,
        "canary": (dep.get("canary") or None) if dep else None,
        "shadow": (dep.get("shadow") or None) if dep else None,
    }
    declared = bool(dep and routes.routes_of(dep))
    if route is not None:
        if dep and declared:
            # a model with routes answered an undeclared route with an error (modelctl.serving): say so
            routes.route_of(dep, route)
            active, own = routes.effective(dep, route)
            doc.update({"active": active, "canary": cast("Split | None", own)})
        doc["route"] = route  # before the model declared routes, every route followed the model
    if key is not None:
        seg = ((dep or {}).get("canary") or {}).get("segment")
        rules = read_segments(event["commit"]) if seg and read_segments else None
        served = routing.assign(dep, key, route=route if declared else None, attributes=attributes,
                                segments=rules) if dep else None
        live = doc["canary"]
        role: Literal["active", "canary"] | None = None
        if served is not None:
            role = "canary" if live and live.get("version") == served else "active"
        doc.update({"bucket": routing.bucket(name, key), "served_by": served, "role": role})
    return doc
