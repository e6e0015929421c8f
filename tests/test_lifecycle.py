"""promote, shadow, canary, rollback: one commit on deployments/<name>.yaml with DESIGN §3 trailers,
GTO tags on the registration commits, refusals that exit 2 and write nothing, idempotent repeats."""
import json
import subprocess

import pytest
import yaml as pyyaml
from conftest import git, new_registry, register_chain, repo_state, run_cli
from lifecyclekit import isolated_env

from modelctl.registry import Registry

NAME = "support-agent"
DEP = f"deployments/{NAME}.yaml"
RENDERED = f"rendered/modelctl-{NAME}.yaml"  # render: on in the template


def trailers(repo, rev="HEAD") -> dict:
    text = git(repo, "log", "-1", "--format=%B", rev)
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=text, capture_output=True, text=True,
                            check=True).stdout
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def deployment(repo, rev="HEAD") -> dict:
    return pyyaml.safe_load(git(repo, "show", f"{rev}:{DEP}"))


def changed_files(repo, rev="HEAD") -> list[str]:
    return git(repo, "show", "--name-only", "--format=", rev).split()


def stage_tags(repo) -> list[dict]:
    """Stage tags in creation order: name, type, target commit, tagger time, message."""
    fmt = "%(refname:strip=2)%00%(objecttype)%00%(*objectname)%00%(taggerdate:unix)%00%(contents)%01"
    out = []
    for rec in git(repo, "for-each-ref", f"--format={fmt}", "refs/tags/").split("\x01"):
        if "#" not in rec:
            continue
        name, kind, target, when, message = rec.strip("\n").split("\0")
        out.append({"name": name, "type": kind, "target": target, "time": int(when), "message": message,
                    "n": int(name.rsplit("#", 1)[1])})
    return sorted(out, key=lambda t: t["n"])


def reg_commit(repo, version) -> str:
    return git(repo, "rev-parse", f"{NAME}@v{version}^{{commit}}").strip()


@pytest.fixture
def reg(registry, write_bundle):
    """Two registered versions: 1.0.0 and 1.0.1 (a prompt change)."""
    r = Registry(registry)
    r.register(write_bundle("a.yaml", version="1.0.0"))
    r.register(write_bundle("b.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"))
    return r


@pytest.fixture
def serving(reg):
    """1.0.0 active (staging first, shadow and canary waived), 1.0.1 registered."""
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active")
    return reg


@pytest.fixture
def in_canary(serving):
    """1.0.0 active, 1.0.1 in canary at 5 % after staging and a 25 % shadow."""
    serving.promote(NAME, "1.0.1", "staging")
    serving.shadow(NAME, "1.0.1", 25)
    serving.canary(NAME, "1.0.1", 5)
    return serving


# -- the happy path ---------------------------------------------------------------------------

def test_promote_to_staging_is_one_commit_with_trailers_and_a_gto_tag(reg):
    repo = reg.root
    registered_at = reg_commit(repo, "1.0.0")
    proc = run_cli("promote", NAME, "1.0.0", "--to", "staging", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"promote {NAME} 1.0.0 to staging: commit ")
    assert changed_files(repo) == [DEP]
    assert git(repo, "log", "-1", "--format=%s").strip() == f"modelctl: promote {NAME} 1.0.0 to staging"
    assert trailers(repo) == {"Modelctl-Action": "promote", "Modelctl-Model": NAME, "Modelctl-Version": "1.0.0",
                              "Modelctl-From": "registered", "Modelctl-To": "staging"}
    assert deployment(repo)["versions"] == {"1.0.0": "staging"}  # 1.0.1 is registered: not listed
    [tag] = stage_tags(repo)
    assert tag["name"] == f"{NAME}#staging#1" and tag["type"] == "tag"
    assert tag["target"] == registered_at  # GTO finds the version through its registration commit
    head = git(repo, "rev-parse", "HEAD").strip()
    assert f"Modelctl-Commit: {head}" in tag["message"] and "Modelctl-Action: promote" in tag["message"]
    assert git(repo, "status", "--porcelain") == ""


def test_first_version_reaches_active_through_staging_with_shadow_and_canary_waived(reg):
    repo = reg.root
    early = run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=repo)
    assert early.returncode == 2 and "promote it to staging first" in early.stderr
    reg.promote(NAME, "1.0.0", "staging")
    proc = run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    t = trailers(repo)
    assert t["Modelctl-From"] == "staging" and t["Modelctl-To"] == "active"
    assert t["Modelctl-Waived"] == "shadow,canary" and "Modelctl-Replaces" not in t
    dep = deployment(repo)
    assert dep["active"] == "1.0.0" and dep["previous"] is None
    assert [(t["name"], t["target"]) for t in stage_tags(repo)][-2:] == [
        (f"{NAME}#staging!#2", reg_commit(repo, "1.0.0")), (f"{NAME}#active#3", reg_commit(repo, "1.0.0"))]


def test_the_whole_pipeline_then_active_deprecates_the_old_version(serving):
    repo = serving.root
    steps = [
        (["promote", NAME, "1.0.1", "--to", "staging"], {"Modelctl-To": "staging"}),
        (["shadow", NAME, "1.0.1", "--pct", "25"], {"Modelctl-To": "shadow", "Modelctl-Percent": "25",
                                                    "Modelctl-Shadow-Cost": "60.00 USD/day"}),
        (["canary", NAME, "1.0.1", "--pct", "5"], {"Modelctl-From": "shadow", "Modelctl-To": "canary",
                                                   "Modelctl-Percent": "5"}),
        (["canary", NAME, "1.0.1", "--pct", "25"], {"Modelctl-From-Percent": "5", "Modelctl-Percent": "25"}),
        (["promote", NAME, "1.0.1", "--to", "active"], {"Modelctl-From": "canary", "Modelctl-To": "active",
                                                        "Modelctl-Replaces": "1.0.0"}),
    ]
    for args, expected in steps:
        proc = run_cli(*args, cwd=repo)
        assert proc.returncode == 0, (args, proc.stderr)
        # what serves changed (all but staging): the rendered ConfigMap is in the same commit
        assert changed_files(repo) == ([DEP] if "staging" in args else [DEP, RENDERED]), args
        t = trailers(repo)
        assert t["Modelctl-Action"] == args[0]
        assert {k: t.get(k) for k in expected} == expected, args
        if args[0] == "shadow":
            assert proc.stdout.startswith("shadow cost: $60.00/day = 100000 requests/day x 25% x $0.0012 per call x 2")
    dep = deployment(repo)
    assert dep["active"] == "1.0.1" and dep["previous"] == "1.0.0"
    assert dep["canary"] is None and dep["shadow"] is None
    assert dep["versions"] == {"1.0.0": "deprecated", "1.0.1": "active"}
    tags = stage_tags(repo)
    assert [t["name"] for t in tags][3:] == [
        f"{NAME}#staging#4", f"{NAME}#staging!#5", f"{NAME}#shadow#6", f"{NAME}#shadow!#7", f"{NAME}#canary#8",
        f"{NAME}#canary#9", f"{NAME}#canary!#10", f"{NAME}#active!#11", f"{NAME}#active#12"]
    times = [t["time"] for t in tags]
    assert times == sorted(set(times)), "tagger seconds strictly increase per model"
    # the replaced active leaves the stage on its own registration commit
    assert tags[10]["target"] == reg_commit(repo, "1.0.0") and "Modelctl-Event: unassign" in tags[10]["message"]
    assert all(t["target"] == reg_commit(repo, "1.0.1") for i, t in enumerate(tags[3:], 3) if i != 10)
    canary_25 = next(t for t in tags if t["name"] == f"{NAME}#canary#9")
    assert "Modelctl-Percent: 25" in canary_25["message"]
    shadow_off = next(t for t in tags if t["name"] == f"{NAME}#shadow!#7")
    assert "Modelctl-Percent" not in shadow_off["message"]  # the 5 % belongs to the canary it entered


# -- rollback ---------------------------------------------------------------------------------

def test_rollback_of_a_live_canary_keeps_active_and_puts_the_canary_on_hold(in_canary):
    repo = in_canary.root
    proc = run_cli("rollback", NAME, "--reason", "error rate doubled", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"rollback {NAME} 1.0.1 (canary at 5%), 1.0.0 keeps serving: commit ")
    assert "1.0.1 is on hold" in proc.stderr
    assert changed_files(repo) == [DEP, RENDERED]
    t = trailers(repo)
    assert (t["Modelctl-Action"], t["Modelctl-From"], t["Modelctl-To"]) == ("rollback", "canary", "rolled-back")
    assert t["Modelctl-Reason"] == "error rate doubled" and t["Modelctl-Restored"] == "1.0.0"
    dep = deployment(repo)
    assert dep["active"] == "1.0.0" and dep["canary"] is None
    assert dep["versions"]["1.0.1"] == "rolled-back"
    assert dep["hold"]["version"] == "1.0.1" and dep["hold"]["reason"] == "error rate doubled"
    last = stage_tags(repo)[-1]
    assert last["name"].startswith(f"{NAME}#canary!#") and last["target"] == reg_commit(repo, "1.0.1")
    assert "Modelctl-Reason: error rate doubled" in last["message"] and "Modelctl-Percent: 5" in last["message"]


def test_rollback_without_a_canary_returns_active_to_previous(in_canary):
    repo = in_canary.root
    in_canary.promote(NAME, "1.0.1", "active")
    proc = run_cli("rollback", NAME, "--from", "1.0.1", "--reason", "complaints", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"rollback {NAME} 1.0.1 (active), 1.0.0 serves again: commit ")
    dep = deployment(repo)
    assert dep["active"] == "1.0.0" and dep["previous"] is None
    assert dep["versions"] == {"1.0.0": "active", "1.0.1": "rolled-back"}
    off, on = stage_tags(repo)[-2:]
    assert off["name"].startswith(f"{NAME}#active!#") and off["target"] == reg_commit(repo, "1.0.1")
    assert on["name"].startswith(f"{NAME}#active#") and on["target"] == reg_commit(repo, "1.0.0")
    # previous is cleared: a rollback of 1.0.0 must name where to go, and says what it could be
    before = repo_state(repo)
    again = run_cli("rollback", NAME, "--from", "1.0.0", cwd=repo)
    assert again.returncode == 2 and "--to VERSION" in again.stderr
    assert repo_state(repo) == before


def test_rollback_to_a_named_deprecated_version(in_canary, write_bundle):
    repo = in_canary.root
    in_canary.register(write_bundle("c.yaml", version="1.0.2", parent="1.0.1", prompt="prompts/p2.txt",
                                    temperature=0.5))
    in_canary.promote(NAME, "1.0.1", "active")
    in_canary.promote(NAME, "1.0.2", "active", force=True, reason="hotfix")
    assert deployment(repo)["versions"] == {"1.0.0": "deprecated", "1.0.1": "deprecated", "1.0.2": "active"}
    proc = run_cli("rollback", NAME, "--to", "1.0.0", "--reason", "back to the known good one", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    dep = deployment(repo)
    assert dep["active"] == "1.0.0" and dep["versions"]["1.0.2"] == "rolled-back"
    refused = run_cli("rollback", NAME, "--to", "1.0.2", cwd=repo)
    assert refused.returncode == 2 and "deprecated: 1.0.1" in refused.stderr


def test_a_version_on_hold_is_refused_until_forced_with_a_reason(in_canary):
    repo = in_canary.root
    in_canary.rollback(NAME, reason="latency")
    before = repo_state(repo)
    for args in (["canary", NAME, "1.0.1", "--pct", "5"], ["promote", NAME, "1.0.1", "--to", "active"],
                 ["shadow", NAME, "1.0.1", "--pct", "10"]):
        proc = run_cli(*args, cwd=repo)
        assert proc.returncode == 2, args
        assert "on hold after a rollback" in proc.stderr and "latency" in proc.stderr
        assert "--force --reason" in proc.stderr
        assert repo_state(repo) == before
    no_reason = run_cli("canary", NAME, "1.0.1", "--pct", "5", "--force", cwd=repo)
    assert no_reason.returncode == 2 and "--force needs --reason" in no_reason.stderr
    assert repo_state(repo) == before
    forced = run_cli("canary", NAME, "1.0.1", "--pct", "5", "--force", "--reason", "fixed upstream", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    t = trailers(repo)
    assert t["Modelctl-Force"] == "true" and t["Modelctl-Override"] == "hold"
    assert t["Modelctl-Reason"] == "fixed upstream"
    dep = deployment(repo)
    assert dep["hold"] is None and dep["canary"]["version"] == "1.0.1"


def test_expect_canary_conflict_exits_3_and_already_rolled_back_exits_0_saying_who(in_canary):
    repo = in_canary.root
    before = repo_state(repo)
    other = run_cli("rollback", NAME, "--expect-canary", "1.0.0", cwd=repo)
    assert other.returncode == 3, other.stderr
    assert "no longer the canary version" in other.stderr
    assert repo_state(repo) == before
    first = run_cli("rollback", NAME, "--expect-canary", "1.0.1", "--reason", "watch: errors",
                    env={"GIT_AUTHOR_NAME": "Watcher One", "GIT_COMMITTER_NAME": "Watcher One"}, cwd=repo)
    assert first.returncode == 0, first.stderr
    after = repo_state(repo)
    second = run_cli("rollback", NAME, "--expect-canary", "1.0.1", cwd=repo)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already done: 1.0.1 of support-agent was already rolled back by Watcher One at ")
    assert git(repo, "rev-parse", "HEAD")[:12] in second.stdout
    assert repo_state(repo) == after


def test_a_retried_rollback_never_rolls_back_a_second_step(in_canary, monkeypatch):
    """The first evaluation decides what to pull; a retry after someone else pulled it does nothing."""
    from modelctl import ops

    repo = in_canary.root
    in_canary.promote(NAME, "1.0.1", "active")  # 1.0.1 serves, 1.0.0 is previous
    racer = Registry(repo)
    real = in_canary.store.transact

    def transact_after_a_race(plan_fn, **kw):
        plan_fn(in_canary.store.snapshot("HEAD"))  # first evaluation: decides to pull active 1.0.1
        ops.rollback(racer, NAME, reason="the other watcher", from_="1.0.1")  # lands first
        return real(plan_fn, **kw)  # the retry re-evaluates on the new tip

    monkeypatch.setattr(in_canary.store, "transact", transact_after_a_race)
    out = ops.rollback(in_canary, NAME, reason="me too", from_="1.0.1")
    assert out.noop and "already out of service (rolled-back) by Ada Tester" in out.result
    dep = deployment(repo)
    assert dep["active"] == "1.0.0" and dep["versions"]["1.0.1"] == "rolled-back"
    assert git(repo, "log", "--format=%s", "-2").splitlines()[0].startswith(f"modelctl: rollback {NAME} 1.0.1")


def test_a_double_rollback_is_already_done_and_the_active_untouched(in_canary):
    """Two people react to the same page: the second plain rollback never reaches the active version."""
    repo = in_canary.root
    first = run_cli("rollback", NAME, "--reason", "error rate doubled", cwd=repo,
                    env={"GIT_AUTHOR_NAME": "Bob Oncall", "GIT_COMMITTER_NAME": "Bob Oncall",
                         "GIT_COMMITTER_DATE": "2026-02-14T12:00:00Z", "GIT_AUTHOR_DATE": "2026-02-14T12:00:00Z"})
    assert first.returncode == 0, first.stderr
    after = repo_state(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    for args in (["rollback", NAME], ["rollback", NAME, "--reason", "me too"], ["rollback", NAME, "--from", "1.0.1"],
                 ["rollback", NAME, "--expect-canary", "1.0.1"]):
        again = run_cli(*args, cwd=repo)
        assert again.returncode == 0, (args, again.stderr)
        assert again.stdout.startswith("already done: 1.0.1 of support-agent "), again.stdout
        assert "by Bob Oncall at 2026-02-14T12:00:00Z" in again.stdout and head[:12] in again.stdout, again.stdout
        assert repo_state(repo) == after  # HEAD, tags, work tree: the active 1.0.0 untouched
    plain = run_cli("rollback", NAME, cwd=repo).stdout
    assert f"to take it out of service too, run `modelctl rollback {NAME} --from 1.0.0`" in plain
    assert deployment(repo)["active"] == "1.0.0" and deployment(repo)["versions"]["1.0.0"] == "active"


def test_a_plain_rollback_without_a_canary_refuses_with_the_exact_command(in_canary):
    repo = in_canary.root
    in_canary.promote(NAME, "1.0.1", "active")
    before = repo_state(repo)
    proc = run_cli("rollback", NAME, "--reason", "complaints", cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert f"`modelctl rollback {NAME} --from 1.0.1`" in proc.stderr
    assert f"`modelctl rollback {NAME} --to 1.0.0`" in proc.stderr
    assert repo_state(repo) == before
    # the command it names works, and running it again is already done, naming who and when
    done = run_cli("rollback", NAME, "--from", "1.0.1", "--reason", "complaints", cwd=repo,
                   env={"GIT_AUTHOR_NAME": "Cy Pager", "GIT_COMMITTER_DATE": "2026-03-01T08:00:00Z"})
    assert done.returncode == 0, done.stderr
    after = repo_state(repo)
    again = run_cli("rollback", NAME, "--from", "1.0.1", cwd=repo)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already done: 1.0.1 of support-agent is already out of service (rolled-back) "
                                   "by Cy Pager at 2026-03-01T08:00:00Z")
    assert repo_state(repo) == after
    assert deployment(repo)["active"] == "1.0.0"


def test_rollback_from_a_version_a_promotion_replaced_is_already_done(in_canary):
    repo = in_canary.root
    in_canary.promote(NAME, "1.0.1", "active")  # 1.0.0 deprecated by this promotion
    before = repo_state(repo)
    proc = run_cli("rollback", NAME, "--from", "1.0.0", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "already out of service (deprecated) by Ada Tester" in proc.stdout
    assert git(repo, "rev-parse", "HEAD").strip()[:12] in proc.stdout
    assert repo_state(repo) == before


def test_canary_without_pct_says_which_step_it_chose(serving):
    repo = serving.root
    serving.promote(NAME, "1.0.1", "staging")
    serving.shadow(NAME, "1.0.1", 10)
    proc = run_cli("canary", NAME, "1.0.1", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "starting at 1% (first of canary.steps; pass --pct to choose)" in proc.stderr
    assert deployment(repo)["canary"]["percent"] == 1
    before = repo_state(repo)
    again = run_cli("canary", NAME, "1.0.1", cwd=repo)
    assert again.returncode == 2 and "pass --pct" in again.stderr
    assert repo_state(repo) == before


# -- refusals ---------------------------------------------------------------------------------

REFUSALS = [
    ("unknown version", ["promote", NAME, "9.9.9", "--to", "staging"], "not registered (registered: 1.0.1, 1.0.0)"),
    ("unknown model", ["canary", "nope", "1.0.1", "--pct", "5"], "no model named 'nope'"),
    ("bad version", ["promote", NAME, "1.0", "--to", "staging"], "invalid version"),
    ("bad stage", ["promote", NAME, "1.0.1", "--to", "production"], "use one of staging, shadow, canary, active"),
    ("skip a required stage", ["promote", NAME, "1.0.3", "--to", "shadow"], "promote it to staging first"),
    ("percent not a step", ["canary", NAME, "1.0.2", "--pct", "7"], "use one of 1, 5, 10, 25, 50"),
    ("percent 100", ["canary", NAME, "1.0.2", "--pct", "100"], "promote to active for 100%"),
    ("shadow percent", ["shadow", NAME, "1.0.2", "--pct", "150"], "use a number in (0, 100]"),
    ("second canary", ["canary", NAME, "1.0.2", "--pct", "5", "--force", "--reason", "x"], "one canary per model"),
    ("backwards", ["promote", NAME, "1.0.1", "--to", "staging"], "only moves forward"),
    ("retire active", ["promote", NAME, "1.0.0", "--to", "deprecated"], "promote another version to active"),
    ("rollback --to with a canary", ["rollback", NAME, "--to", "1.0.2"], "--to does not apply"),
    ("rollback --from active under a canary", ["rollback", NAME, "--from", "1.0.0"],
     f"roll it back first (`modelctl rollback {NAME} --from 1.0.1`)"),
    ("rollback --from a version not serving", ["rollback", NAME, "--from", "1.0.2"], "is staging, not serving"),
    ("canary without --pct on the live canary", ["canary", NAME, "1.0.1"],
     "1.0.1 of support-agent is already in canary at 5%; pass --pct to move it (one of 1, 5, 10, 25, 50)"),
    ("over the shadow budget", ["shadow", NAME, "1.0.2"], "would cost $240.00/day"),
]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """1.0.0 active, 1.0.1 in canary at 5 %, 1.0.2 in staging, 1.0.3 registered; shared by the
    refusal tests of this module, each of which asserts that it wrote nothing."""
    with isolated_env(tmp_path_factory):
        base = tmp_path_factory.mktemp("frozen")
        r = Registry(new_registry(base / "reg"))
        register_chain(r, base)
        r.promote(NAME, "1.0.0", "staging")
        r.promote(NAME, "1.0.0", "active")
        r.promote(NAME, "1.0.1", "staging")
        r.shadow(NAME, "1.0.1", 25)
        r.canary(NAME, "1.0.1", 5)
        r.promote(NAME, "1.0.2", "staging")
    return r.root


@pytest.mark.parametrize("desc, args, fragment", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_exit_2_say_what_is_allowed_and_write_nothing(frozen, desc, args, fragment):
    repo = frozen
    if desc == "unknown version":
        fragment = "not registered (registered: 1.0.3, 1.0.2, 1.0.1, 1.0.0)"
    before = repo_state(repo)
    proc = run_cli(*args, cwd=repo)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert fragment in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert repo_state(repo) == before


def test_canary_needs_an_active_version(reg):
    reg.promote(NAME, "1.0.1", "staging")
    before = repo_state(reg.root)
    proc = run_cli("canary", NAME, "1.0.1", "--pct", "5", cwd=reg.root)
    assert proc.returncode == 2 and "no active version" in proc.stderr
    assert repo_state(reg.root) == before


# -- idempotency, cost, force, gate, branch ---------------------------------------------------

def test_repeating_a_done_move_exits_0_and_writes_nothing(in_canary):
    repo = in_canary.root
    before = repo_state(repo)
    for args, note in ((["canary", NAME, "1.0.1", "--pct", "5"], "already in canary at 5%"),
                       (["promote", NAME, "1.0.0", "--to", "active"], "already active"),
                       (["promote", NAME, "1.0.1", "--to", "canary"], "already in canary")):
        proc = run_cli(*args, cwd=repo)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("already done: ") and note in proc.stdout
    doc = json.loads(run_cli("canary", NAME, "1.0.1", "--pct", "5", "--json", cwd=repo).stdout)
    assert doc["noop"] is True and doc["commit"] is None
    assert repo_state(repo) == before


def test_shadow_cost_from_flags_and_budget_override_on_record(serving):
    repo = serving.root
    serving.promote(NAME, "1.0.1", "staging")
    cheap = run_cli("shadow", NAME, "1.0.1", "--requests-per-day", "20000", "--cost-per-request", "0.001", "--json",
                    cwd=repo)
    assert cheap.returncode == 0, cheap.stderr
    doc = json.loads(cheap.stdout)
    assert doc["result"]["cost"] == {"per_day": 40.0, "requests_per_day": 20000.0, "percent": 100,
                                     "cost_per_request": 0.001, "budget_per_day": 100.0, "over_budget": False}
    before = repo_state(repo)
    dear = run_cli("shadow", NAME, "1.0.1", "--pct", "50", cwd=repo)  # 100000 x 50% x 0.0012 x 2 = 120
    assert dear.returncode == 2 and "$120.00/day" in dear.stderr and "budget_per_day $100.00" in dear.stderr
    assert repo_state(repo) == before
    forced = run_cli("shadow", NAME, "1.0.1", "--pct", "50", "--force", "--reason", "one day only", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    assert "OVER BUDGET (forced)" in forced.stdout
    t = trailers(repo)
    assert t["Modelctl-Shadow-Cost"] == "120.00 USD/day" and t["Modelctl-Budget"] == "100.00 USD/day exceeded (forced)"
    assert t["Modelctl-From-Percent"] == "100" and t["Modelctl-Percent"] == "50"


def test_force_skips_required_stages_on_record(serving):
    repo = serving.root
    proc = run_cli("promote", NAME, "1.0.1", "--to", "active", "--force", "--reason", "security fix", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    t = trailers(repo)
    assert t["Modelctl-Skipped"] == "staging,shadow,canary" and t["Modelctl-Force"] == "true"
    assert t["Modelctl-Reason"] == "security fix"
    assert deployment(repo)["active"] == "1.0.1"


def _require_gate(repo):
    cfg = repo / "modelctl.yaml"
    cfg.write_text(cfg.read_text().replace("gate:\n  required: false", "gate:\n  required: true"))
    git(repo, "commit", "-q", "-am", "require the gate")


def test_required_gate_refuses_a_canary_without_a_passing_gate(serving):
    repo = serving.root
    _require_gate(repo)
    serving.promote(NAME, "1.0.1", "staging")
    serving.shadow(NAME, "1.0.1", 10)
    before = repo_state(repo)
    proc = run_cli("canary", NAME, "1.0.1", "--pct", "5", cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert "gate" in proc.stderr
    assert repo_state(repo) == before


def test_required_gate_refuses_active_without_a_passing_gate(reg):
    repo = reg.root
    _require_gate(repo)
    reg.promote(NAME, "1.0.0", "staging")
    before = repo_state(repo)
    proc = run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert "gate" in proc.stderr
    assert repo_state(repo) == before


def test_branch_puts_the_change_up_for_review_without_tags(serving):
    repo = serving.root
    before_tags = git(repo, "tag", "-l")
    main = git(repo, "rev-parse", "main")
    proc = run_cli("promote", NAME, "1.0.1", "--to", "staging", "--branch", "review/staging", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "rev-parse", "main") == main
    assert git(repo, "tag", "-l") == before_tags
    assert changed_files(repo, "review/staging") == [DEP]
    assert deployment(repo, "review/staging")["versions"]["1.0.1"] == "staging"
    assert f"promote {NAME} 1.0.1 to staging" in proc.stdout  # the pull-request body


def test_json_result_of_a_canary(serving):
    repo = serving.root
    serving.promote(NAME, "1.0.1", "staging")
    serving.shadow(NAME, "1.0.1", 10)
    doc = json.loads(run_cli("canary", NAME, "1.0.1", "--pct", "10", "--json", cwd=repo).stdout)
    assert doc["schema"] == "modelctl/v1" and doc["noop"] is False
    assert doc["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert doc["tags"] == [f"{NAME}#shadow!#7", f"{NAME}#canary#8"]
    r = doc["result"]
    assert (r["action"], r["version"], r["from"], r["to"], r["percent"]) == ("canary", "1.0.1", "shadow", "canary", 10)
    assert r["canary"]["version"] == "1.0.1" and r["canary"]["percent"] == 10 and r["active"] == "1.0.0"


def test_reason_is_one_line_without_trailer_lookalikes(in_canary):
    repo = in_canary.root
    proc = run_cli("rollback", NAME, "--reason", "bad\nModelctl-Action: promote\x1b[31m", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    t = trailers(repo)
    assert t["Modelctl-Action"] == "rollback"
    assert "\n" not in t["Modelctl-Reason"] and "\x1b" not in t["Modelctl-Reason"]


def test_the_demo_walks_the_lifecycle(tmp_path):
    proc = run_cli("demo", "--dir", tmp_path / "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    for fragment in ("shadow cost: $60.00/day", "canary support-agent 1.0.1 at 10%",
                     "rollback support-agent 1.0.1 (canary at 10%), 1.0.0 keeps serving",
                     "is on hold after a rollback", "was served by 1.0.1 (canary)", "support-agent#canary!#9"):
        assert fragment in out, fragment
    # watch: the embedded endpoint's regression is rolled back, with evidence, and pushed to the remote
    for fragment in ("rolled back canary 1.0.2 of support-agent (error_rate crossed the rollback boundary)",
                     "Modelctl-Evidence: error_rate fail; canary=", "detection to rollback commit (and push):"):
        assert fragment in out, fragment
    remote = tmp_path / "demo" / "remote.git"
    assert git(remote, "log", "-1", "--format=%s").startswith("modelctl: rollback support-agent 1.0.2")


def test_a_stage_move_of_a_version_without_its_registration_tag_is_refused_and_writes_nothing(two_versions):
    """Stage tags point at the registration tag's commit (all of a write's looked up in one
    for-each-ref); a version whose registration tag is gone gets the doctor hint, exit 3."""
    git(two_versions, "tag", "-d", "support-agent@v1.0.0")
    before = repo_state(two_versions)
    proc = run_cli("promote", "support-agent", "1.0.0", "--to", "staging", cwd=two_versions)
    assert proc.returncode == 3
    assert proc.stderr == "error: support-agent 1.0.0 has no registration tag; run 'modelctl doctor --fix'\n"
    assert repo_state(two_versions) == before
    # the other version's tag is found in the same lookup and its move lands, on the tag's commit,
    # even when that tag was re-made as a tag of the old tag object (peeled the whole way)
    inner = git(two_versions, "rev-parse", "support-agent@v1.0.1").strip()
    git(two_versions, "tag", "-f", "-a", "-m", "re-made", "support-agent@v1.0.1", inner)
    assert git(two_versions, "cat-file", "-p", "support-agent@v1.0.1").startswith(f"object {inner}\ntype tag\n")
    assert run_cli("promote", "support-agent", "1.0.1", "--to", "staging", cwd=two_versions).returncode == 0
    stage = git(two_versions, "tag", "--list", "support-agent#staging#*").split()
    assert len(stage) == 1
    assert git(two_versions, "rev-parse", f"{stage[0]}^{{commit}}") == \
        git(two_versions, "rev-parse", "support-agent@v1.0.1^{commit}")
