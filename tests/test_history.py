"""log and which: the model's story from its own files' git history, at pinned times."""
import json
import shutil

import pytest
from conftest import bundle_text, git, new_registry, run_cli
from lifecyclekit import isolated_env

from modelctl import history, routing
from modelctl.registry import Registry

NAME = "support-agent"

# the timeline every test here reads (commit and author dates pinned through git's environment)
FEB = {
    "registered": "2026-02-01T09:00:00Z",
    "staging": "2026-02-01T10:00:00Z",
    "active": "2026-02-02T10:00:00Z",
    "staging2": "2026-02-09T10:00:00Z",
    "shadow": "2026-02-09T11:00:00Z",
    "canary": "2026-02-10T10:00:00Z",
    "canary10": "2026-02-12T10:00:00Z",
    "rollback": "2026-02-14T12:00:00Z",
}


def _at(monkeypatch, when, who="Ada Tester"):
    for key in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.setenv(key, when)
    monkeypatch.setenv("GIT_AUTHOR_NAME", who)
    monkeypatch.setenv("GIT_COMMITTER_NAME", who)


def key_in(lo, hi, name=NAME):
    """A routing key whose bucket lies in [lo, hi)."""
    for i in range(100_000):
        if lo <= routing.bucket(name, f"user-{i}") < hi:
            return f"user-{i}"
    raise AssertionError("no key found")


@pytest.fixture(scope="module")
def story_base(tmp_path_factory):
    """February: 1.0.0 active on the 2nd; 1.0.1 in canary at 5 % on the 10th, 10 % on the 12th,
    rolled back by Bob on the 14th with a reason and evidence. Plus another model and an unrelated
    commit. Built once; tests that write use `story_copy`."""
    base = tmp_path_factory.mktemp("story")

    def bundle(filename, **fields):
        path = base / filename
        path.write_text(bundle_text(**fields))
        return path

    with isolated_env(tmp_path_factory) as mp:
        registry = new_registry(base / "reg")
        reg = Registry(registry)
        _at(mp, FEB["registered"])
        reg.register(bundle("a.yaml", version="1.0.0"))
        reg.register(bundle("b.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"))
        reg.register(bundle("o.yaml", name="other-model", version="3.0.0"))
        _at(mp, FEB["staging"])
        reg.promote(NAME, "1.0.0", "staging")
        _at(mp, FEB["active"], "Carol Lead")
        reg.promote(NAME, "1.0.0", "active")
        reg.promote("other-model", "3.0.0", "staging")
        (registry / "NOTES.md").write_text("unrelated\n")
        git(registry, "add", "NOTES.md")
        git(registry, "commit", "-q", "-m", "notes")
        _at(mp, FEB["staging2"])
        reg.promote(NAME, "1.0.1", "staging")
        _at(mp, FEB["shadow"])
        reg.shadow(NAME, "1.0.1", 25)
        _at(mp, FEB["canary"])
        reg.canary(NAME, "1.0.1", 5)
        _at(mp, FEB["canary10"])
        reg.canary(NAME, "1.0.1", 10)
        _at(mp, FEB["rollback"], "Bob Oncall")
        reg.rollback(NAME, reason="error rate doubled",
                     evidence="error_rate 0.031 vs 0.010 (n=2400), SPRT llr 3.2 > 2.9")
    return registry


@pytest.fixture
def story(story_base):
    """The shared story, read only."""
    return story_base


@pytest.fixture
def story_copy(story_base, tmp_path):
    """A private copy of the story for tests that write."""
    dest = tmp_path / "reg"
    shutil.copytree(story_base, dest, symlinks=True)
    return dest


def test_log_lists_every_event_of_the_model_only(story):
    proc = run_cli("log", NAME, "--json", cwd=story)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "modelctl/v1" and doc["name"] == NAME
    events = doc["events"]
    assert [(e["time"], e["action"], e["version"]) for e in events] == [
        (FEB["rollback"], "rollback", "1.0.1"),
        (FEB["canary10"], "canary", "1.0.1"),
        (FEB["canary"], "canary", "1.0.1"),
        (FEB["shadow"], "shadow", "1.0.1"),
        (FEB["staging2"], "promote", "1.0.1"),
        (FEB["active"], "promote", "1.0.0"),
        (FEB["staging"], "promote", "1.0.0"),
        (FEB["registered"], "register", "1.0.1"),
        (FEB["registered"], "register", "1.0.0"),
    ]  # neither other-model's commits nor the unrelated one
    rb = events[0]
    assert rb["author"] == "Bob Oncall" and rb["email"] == "ada@example.com"
    assert (rb["from"], rb["to"], rb["percent"], rb["restored"]) == ("canary", "rolled-back", 10, "1.0.0")
    assert rb["reason"] == "error rate doubled"
    assert rb["evidence"] == "error_rate 0.031 vs 0.010 (n=2400), SPRT llr 3.2 > 2.9"
    assert rb["commit"] == git(story, "rev-parse", "HEAD").strip()
    assert events[1]["from_percent"] == 5 and events[1]["percent"] == 10
    assert events[5]["author"] == "Carol Lead" and events[5]["waived"] == "shadow,canary"


def test_log_text_and_limit(story):
    proc = run_cli("log", NAME, "--limit", "2", cwd=story)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{NAME}: 2 event(s), newest first"
    assert lines[1].split()[:4] == ["TIME", "BY", "ACTION", "VERSION"]
    assert lines[2].startswith(f"{FEB['rollback']}  Bob Oncall  rollback  1.0.1    canary -> rolled-back  10")
    assert "error rate doubled" in lines[2] and "SPRT llr 3.2" in lines[2]
    assert lines[3].startswith(f"{FEB['canary10']}  Ada Tester  canary    1.0.1    canary -> canary       5 -> 10")
    assert len(lines) == 4


def test_log_of_an_unknown_model_is_exit_2(story):
    proc = run_cli("log", "nope", cwd=story)
    assert proc.returncode == 2 and "no model named 'nope'" in proc.stderr


def test_a_hand_edit_shows_up_as_an_edit(story_copy):
    dep = story_copy / f"deployments/{NAME}.yaml"
    dep.write_text(dep.read_text() + "# reviewed\n")
    git(story_copy, "commit", "-q", "-am", "annotate the deployment")
    [event] = Registry(story_copy).log(NAME, limit=1)["events"]
    assert event["action"] == "edit" and event["subject"] == "annotate the deployment"


@pytest.mark.parametrize("at, active, canary", [
    ("2026-02-05", "1.0.0", None),
    ("2026-02-11T00:00:00Z", "1.0.0", {"version": "1.0.1", "percent": 5}),
    ("2026-02-13T11:00:00+01:00", "1.0.0", {"version": "1.0.1", "percent": 10}),
    ("2026-02-14T11:59:59Z", "1.0.0", {"version": "1.0.1", "percent": 10}),
    ("2026-02-14T12:00:00Z", "1.0.0", None),  # the rollback commit itself counts from its second
])
def test_which_says_what_served_at_a_time(story, at, active, canary):
    doc = Registry(story).which(NAME, at)
    assert doc["active"] == active
    assert (doc["canary"] and {k: doc["canary"][k] for k in ("version", "percent")}) == canary


def test_which_with_a_key_says_which_version_served_it(story):
    in_canary = key_in(0, 500)  # inside 5 %: served by the canary from the 10th
    at_ten = key_in(500, 1000)  # between 5 % and 10 %: only from the 12th
    outside = key_in(1000, 10_000)
    cases = [
        (in_canary, "2026-02-11T00:00:00Z", "1.0.1", "canary"),
        (at_ten, "2026-02-11T00:00:00Z", "1.0.0", "active"),
        (at_ten, "2026-02-13T00:00:00Z", "1.0.1", "canary"),
        (outside, "2026-02-13T00:00:00Z", "1.0.0", "active"),
        (in_canary, "2026-02-15T00:00:00Z", "1.0.0", "active"),
    ]
    for key, at, version, role in cases:
        proc = run_cli("which", NAME, "--at", at, "--key", key, "--json", cwd=story)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert (doc["served_by"], doc["role"]) == (version, role), (key, at)
        assert doc["bucket"] == routing.bucket(NAME, key)


def test_which_names_who_changed_it_and_why(story):
    proc = run_cli("which", NAME, "--at", "2026-02-20", "--key", "user-1", cwd=story)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:4] == [
        f"{NAME} at 2026-02-20T00:00:00Z:", "  active  1.0.0 (100%)", "  canary  -", "  shadow  -"]
    assert "state since 2026-02-14T12:00:00Z" in proc.stderr and "Bob Oncall" in proc.stderr
    assert "reason: error rate doubled" in proc.stderr
    doc = Registry(story).which(NAME, "2026-02-20")
    assert doc["event"]["action"] == "rollback" and doc["event"]["evidence"].startswith("error_rate 0.031")
    shadowing = Registry(story).which(NAME, "2026-02-09T12:00:00Z")
    assert shadowing["shadow"]["version"] == "1.0.1" and shadowing["shadow"]["percent"] == 25


def test_which_before_the_first_event_says_nothing_served(story):
    proc = run_cli("which", NAME, "--at", "2026-01-01", "--key", "user-1", "--json", cwd=story)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["active"] is None and doc["served_by"] is None and doc["first_event"] == FEB["registered"]
    text = run_cli("which", NAME, "--at", "2026-01-01", cwd=story).stdout
    assert "nothing served yet" in text


@pytest.mark.parametrize("args, fragment", [
    (["which", "nope", "--at", "2026-02-20"], "no model named 'nope'"),
    (["which", NAME, "--at", "last tuesday"], "invalid time 'last tuesday'"),
    (["which", NAME, "--at", "2026-13-40"], "use ISO 8601"),
])
def test_which_refusals(story, args, fragment):
    proc = run_cli(*args, cwd=story)
    assert proc.returncode == 2 and fragment in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_which_counts_a_merged_review_branch_from_its_merge(story_copy, monkeypatch):
    """A change written on a branch on the 15th and merged on the 20th counts from the 20th."""
    story = story_copy
    reg = Registry(story)
    _at(monkeypatch, "2026-02-15T10:00:00Z")
    reg.register(_bundle(story, "1.0.2"), branch="review/next")
    _at(monkeypatch, "2026-02-20T10:00:00Z")
    git(story, "merge", "-q", "--no-ff", "-m", "Merge review/next", "review/next")
    before = reg.which(NAME, "2026-02-17")
    after = reg.which(NAME, "2026-02-21")
    assert before["commit"] == reg.which(NAME, "2026-02-15")["commit"] != after["commit"]
    assert after["since"] == "2026-02-20T10:00:00Z"


def _bundle(story, version):
    path = story.parent / f"{version}.yaml"
    path.write_text(bundle_text(version=version, parent="1.0.1", prompt="prompts/p2.txt", temperature=0.7))
    return path


@pytest.mark.parametrize("text, expected", [
    ("2026-02-14", "2026-02-14T00:00:00Z"),
    ("2026-02-14T10:30:00Z", "2026-02-14T10:30:00Z"),
    ("2026-02-14 10:30", "2026-02-14T10:30:00Z"),
    ("2026-02-14T11:30:00+01:00", "2026-02-14T10:30:00Z"),
    ("@1771065000", "2026-02-14T10:30:00Z"),
])
def test_parse_time(text, expected):
    assert history.iso(history.parse_time(text)) == expected


def test_a_squash_merged_promotion_is_inferred_from_the_deployment_diff(story_copy, monkeypatch):
    """GitHub's squash merge keeps none of the branch's trailers: log and which read the event from
    the deployment diff and say so."""
    story = story_copy
    reg = Registry(story)
    _at(monkeypatch, "2026-02-15T10:00:00Z")
    reg.register(_bundle(story, "1.0.2"))
    git(story, "checkout", "-q", "-b", "ship")
    reg.promote(NAME, "1.0.2", "staging")
    reg.promote(NAME, "1.0.2", "active", force=True, reason="hotfix")
    git(story, "checkout", "-q", "main")
    _at(monkeypatch, "2026-02-20T10:00:00Z", "Dee Merger")
    git(story, "merge", "-q", "--squash", "ship")
    git(story, "commit", "-q", "-m", "Ship 1.0.2 (#12)")
    doc = json.loads(run_cli("log", NAME, "--json", cwd=story).stdout)
    squash, *older = doc["events"]
    assert {k: squash[k] for k in ("subject", "action", "version", "from", "to", "replaces", "inferred")} == {
        "subject": "Ship 1.0.2 (#12)", "action": "promote", "version": "1.0.2", "from": "registered",
        "to": "active", "replaces": "1.0.0", "inferred": True}
    assert squash["author"] == "Dee Merger" and squash["trailers"] == {}
    assert not any(e["inferred"] for e in older)
    text = run_cli("log", NAME, "--limit", "1", cwd=story).stdout.splitlines()
    assert text[2].startswith("2026-02-20T10:00:00Z  Dee Merger  promote (inferred)  1.0.2    registered -> active")
    which = run_cli("which", NAME, "--at", "2026-02-21", "--json", cwd=story)
    event = json.loads(which.stdout)["event"]
    assert (event["action"], event["version"], event["inferred"]) == ("promote", "1.0.2", True)
    said = run_cli("which", NAME, "--at", "2026-02-21", cwd=story)
    assert "state since 2026-02-20T10:00:00Z: Ship 1.0.2 (#12) by Dee Merger" in said.stderr
    assert "inferred from the deployment diff: promote 1.0.2 (the commit has no modelctl trailers)" in said.stderr
    # a commit with trailers is never inferred
    assert json.loads(run_cli("which", NAME, "--at", "2026-02-14T13:00:00Z", "--json", cwd=story).stdout)[
        "event"]["inferred"] is False


def test_a_squash_merged_promotion_to_staging_is_inferred_too(story_copy, monkeypatch):
    """Staging, retirements and new versions are read after the canary and shadow slots; a rebound
    name there once made them a plain edit in `log` instead of the inferred promotion."""
    story = story_copy
    reg = Registry(story)
    _at(monkeypatch, "2026-02-15T10:00:00Z")
    reg.register(_bundle(story, "1.0.2"))
    git(story, "checkout", "-q", "-b", "stage")
    reg.promote(NAME, "1.0.2", "staging")
    git(story, "checkout", "-q", "main")
    _at(monkeypatch, "2026-02-20T10:00:00Z", "Dee Merger")
    git(story, "merge", "-q", "--squash", "stage")
    git(story, "commit", "-q", "-m", "Stage 1.0.2 (#13)")
    squash = json.loads(run_cli("log", NAME, "--json", "--limit", "1", cwd=story).stdout)["events"][0]
    assert {k: squash[k] for k in ("subject", "action", "version", "from", "to", "inferred")} == {
        "subject": "Stage 1.0.2 (#13)", "action": "promote", "version": "1.0.2", "from": "registered",
        "to": "staging", "inferred": True}


def test_a_log_event_carries_every_trailer_field_in_the_trailer_table_order():
    """history spells the trailer fields out one by one (the LogEvent type): one added to
    trailers.EVENT_FIELDS and not there would silently vanish from `log --json`."""
    from modelctl import trailers

    said = "\n".join(f"{key}: x" for key in trailers.EVENT_FIELDS)
    event, parent = history._parse_record(["a" * 40, "", "0", "Ada", "ada@example.com", "s", said])
    assert parent is None
    assert list(event)[5:] == ["action", "inferred", *list(trailers.EVENT_FIELDS.values())[1:], "trailers",
                                  "signer"]
    assert all(event[field] == "x" for field in trailers.EVENT_FIELDS.values())  # (not a number: kept as text)
