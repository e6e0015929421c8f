"""Routes (issue 15 §1, §4): per-route canaries, pins and partial rollbacks in real git, answered the same way
by `resolve --route`, `which --route --at` and the serving client; fallback chains and their weighted order."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import bundle_text, git, new_registry, repo_state, run_cli

import modelctl
from modelctl import routes, routing, serving

NAME = "support-agent"
KEYS = [f"user-{i}" for i in range(400)]


def at(mp, when: str) -> None:
    """Date the next commits (and the times modelctl records) at `when`."""
    mp.setenv("GIT_AUTHOR_DATE", when)
    mp.setenv("GIT_COMMITTER_DATE", when)


def build(path, mp):
    """1.0.0 active with routes search, summarise and chat declared, then 1.0.1 through the pipeline to active;
    1.0.2 in staging. Times: one hour apart from 2026-03-01T08:00Z."""
    import datetime as dt

    reg = modelctl.Registry(new_registry(path))
    clock = iter(dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in range(100))

    def step(fn, *args, **kwargs):
        at(mp, next(clock).strftime("%Y-%m-%dT%H:%M:%SZ"))
        out = fn(*args, **kwargs)
        assert not out.noop, out.result
        return out

    drafts = path.parent / "drafts"
    drafts.mkdir(exist_ok=True)
    at(mp, "2026-03-01T07:00:00Z")
    for fields in (dict(version="1.0.0"), dict(version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"),
                   dict(version="1.0.2", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.5)):
        f = drafts / f"{fields['version']}.yaml"
        f.write_text(bundle_text(**fields))
        reg.register(f)
    step(reg.promote, NAME, "1.0.0", "staging")
    step(reg.promote, NAME, "1.0.0", "active")                      # 09:00
    step(reg.route, NAME, "search")                                  # 10:00
    step(reg.route, NAME, "summarise", fallback=["anthropic/claude-sonnet-4-5-20250929"])
    step(reg.route, NAME, "chat")                                    # 12:00
    step(reg.promote, NAME, "1.0.1", "staging")
    step(reg.shadow, NAME, "1.0.1", 10)
    step(reg.canary, NAME, "1.0.1", 10)                              # 15:00
    step(reg.promote, NAME, "1.0.1", "active")                       # 16:00
    step(reg.promote, NAME, "1.0.2", "staging")                      # 17:00
    return reg, step


@pytest.fixture
def routed(tmp_path, monkeypatch):
    reg, step = build(tmp_path / "reg", monkeypatch)
    return reg, step, tmp_path / "reg"


def deployment(repo) -> dict:
    from modelctl import yamlio

    return yamlio.loads(git(repo, "show", f"HEAD:deployments/{NAME}.yaml").encode(), "d").data


def trailers_of(repo, ref="HEAD") -> str:
    return git(repo, "log", "-1", "--format=%(trailers)", ref)


def served(reg, route) -> Counter:
    return Counter(reg.resolve(NAME, key=k, route=route)["key"]["version"] for k in KEYS)


def test_partial_rollback_leaves_the_other_routes_on_the_new_version(routed):
    reg, step, repo = routed
    tags_before = git(repo, "tag", "-l")
    out = step(reg.rollback, NAME, route="summarise", from_="1.0.1", reason="summaries too long")
    dep = deployment(repo)
    # the model and the other routes keep 1.0.1; summarise is pinned back to 1.0.0
    assert dep["active"] == "1.0.1" and dep["versions"] == {"1.0.0": "deprecated", "1.0.1": "active",
                                                            "1.0.2": "staging"}
    assert dep["routes"]["summarise"]["active"] == "1.0.0" and "active" not in dep["routes"]["search"]
    assert dep["hold"] is None  # nothing is on hold: 1.0.1 still serves the model
    assert served(reg, "summarise") == {"1.0.0": len(KEYS)}
    assert served(reg, "search") == served(reg, "chat") == {"1.0.1": len(KEYS)}
    assert Counter(reg.resolve(NAME, key=k)["key"]["version"] for k in KEYS) == {"1.0.1": len(KEYS)}
    said = trailers_of(repo)
    assert "Modelctl-Action: rollback\nModelctl-Model: support-agent\nModelctl-Version: 1.0.1\n" \
           "Modelctl-Route: summarise\nModelctl-Restored: 1.0.0\nModelctl-Reason: summaries too long" in said
    assert out.tags == [] and git(repo, "tag", "-l") == tags_before  # route events make no GTO tag
    # the serving client, from the registry and from the rendered document, agrees key by key
    router = serving.Router.from_registry(repo)
    for k in KEYS[:100]:
        for r in ("search", "summarise", "chat"):
            assert router.pick(NAME, k, route=r).version == reg.resolve(NAME, key=k, route=r)["key"]["version"]
    # a re-run is already done and writes nothing
    state = repo_state(repo)
    again = reg.rollback(NAME, route="summarise", from_="1.0.1")
    assert again.noop and "no longer serves route summarise" in again.result
    assert repo_state(repo) == state
    # the CLI says the same and exits 0
    proc = run_cli("rollback", NAME, "--route", "summarise", "--from", "1.0.1", cwd=repo)
    assert proc.returncode == 0 and "already done" in proc.stdout + proc.stderr
    assert repo_state(repo) == state


def test_route_canary_serves_its_route_only_and_a_plain_rerun_of_its_rollback_is_already_done(routed):
    reg, step, repo = routed
    for v, stage in (("1.0.2", "shadow"),):
        step(reg.shadow, NAME, v, 10)
        assert deployment(repo)["versions"][v] == stage
    step(reg.canary, NAME, "1.0.2", 25, route="chat")
    dep = deployment(repo)
    assert dep["routes"]["chat"]["canary"]["version"] == "1.0.2" and dep["canary"] is None
    assert dep["versions"]["1.0.2"] == "shadow"  # the model's lifecycle did not move
    assert "Modelctl-Route: chat\nModelctl-Percent: 25" in trailers_of(repo)
    chat = served(reg, "chat")
    in_canary = {k for k in KEYS if routing.bucket(NAME, k) < 2500}
    assert chat["1.0.2"] == len(in_canary) and chat["1.0.1"] == len(KEYS) - len(in_canary)
    assert served(reg, "search") == {"1.0.1": len(KEYS)}
    # while chat runs its own canary of 1.0.2, a model-level canary of 1.0.2 is refused (one canary per route)
    state = repo_state(repo)
    proc = run_cli("canary", NAME, "1.0.2", "--pct", "5", cwd=repo)
    assert proc.returncode == 2 and "route chat of support-agent runs its own canary of 1.0.2" in proc.stderr
    assert repo_state(repo) == state
    step(reg.rollback, NAME, route="chat")
    assert deployment(repo)["routes"]["chat"] == {}
    assert "Modelctl-Version: 1.0.2\nModelctl-Route: chat\nModelctl-Percent: 25" in trailers_of(repo)
    state = repo_state(repo)
    again = reg.rollback(NAME, route="chat")
    assert again.noop and "already rolled back on route chat" in again.result
    assert repo_state(repo) == state
    # the route's canary is refused while the model-level canary of the same version is live
    step(reg.canary, NAME, "1.0.2", 5)
    state = repo_state(repo)
    proc = run_cli("canary", NAME, "1.0.2", "--pct", "10", "--route", "search", cwd=repo)
    assert proc.returncode == 2 and proc.stderr.startswith("error: 1.0.2 of support-agent is the model-level canary")
    assert repo_state(repo) == state
    # chat follows the model again: the model's canary (1.0.2 at 5 %) reaches it
    assert served(reg, "chat") == served(reg, "search") and served(reg, "chat")["1.0.2"] > 0
    # and the model-level plain rollback still pulls the model's canary (a route rollback is not its rollback)
    out = reg.rollback(NAME)
    assert not out.noop and deployment(repo)["canary"] is None


def test_pin_and_follow_and_what_model_level_moves_do_to_routes(routed):
    reg, step, repo = routed
    step(reg.promote, NAME, "1.0.0", "active", route="summarise")
    dep = deployment(repo)
    assert dep["routes"]["summarise"] == {"active": "1.0.0", "fallback": {
        "policy": "ordered", "chain": [{"provider": "anthropic", "id": "claude-sonnet-4-5-20250929"}]}}
    assert "Modelctl-Version: 1.0.0\nModelctl-Route: summarise\nModelctl-To: active" in trailers_of(repo)
    # a pinned route ignores the model's canary; a following one gets it
    step(reg.shadow, NAME, "1.0.2", 10)
    step(reg.canary, NAME, "1.0.2", 50)
    assert served(reg, "summarise") == {"1.0.0": len(KEYS)}
    assert set(served(reg, "search")) == {"1.0.1", "1.0.2"}
    # the model promotes 1.0.2: followers move, the pin stays
    step(reg.promote, NAME, "1.0.2", "active")
    assert served(reg, "search") == {"1.0.2": len(KEYS)} and served(reg, "summarise") == {"1.0.0": len(KEYS)}
    # archiving a pinned version is refused (exit 2, nothing written)
    state = repo_state(repo)
    proc = run_cli("promote", NAME, "1.0.0", "--to", "archived", cwd=repo)
    assert proc.returncode == 2 and "route summarise of support-agent is pinned to 1.0.0" in proc.stderr
    assert repo_state(repo) == state
    # a model-level rollback of a version takes it out of every route: a pin to it is dropped
    step(reg.promote, NAME, "1.0.2", "active", route="chat")
    step(reg.rollback, NAME, from_="1.0.2", to="1.0.1")
    dep = deployment(repo)
    assert dep["versions"]["1.0.2"] == "rolled-back" and dep["routes"]["chat"] == {}
    assert served(reg, "chat") == {"1.0.1": len(KEYS)}
    # --follow makes the pinned route follow the model again
    step(reg.route, NAME, "summarise", follow=True)
    assert "active" not in deployment(repo)["routes"]["summarise"]
    assert served(reg, "summarise") == {"1.0.1": len(KEYS)}
    assert reg.route(NAME, "summarise", follow=True).noop


def test_which_route_at_key_answers_from_history_for_every_route(routed):
    reg, step, repo = routed
    step(reg.rollback, NAME, route="summarise", from_="1.0.1")           # 18:00
    step(reg.shadow, NAME, "1.0.2", 10)                                   # 19:00
    step(reg.canary, NAME, "1.0.2", 50, route="chat")                     # 20:00
    key = next(k for k in KEYS if routing.bucket(NAME, k) < 5000)         # in every 50 % canary
    expected = {
        # time: {route: version serving `key`}
        "2026-03-01T10:30:00Z": {"search": "1.0.0", "summarise": "1.0.0", "chat": "1.0.0"},  # before summarise existed
        "2026-03-01T15:30:00Z": {"search": "1.0.1" if routing.bucket(NAME, key) < 1000 else "1.0.0",
                                 "summarise": "1.0.1" if routing.bucket(NAME, key) < 1000 else "1.0.0",
                                 "chat": "1.0.1" if routing.bucket(NAME, key) < 1000 else "1.0.0"},
        "2026-03-01T17:30:00Z": {"search": "1.0.1", "summarise": "1.0.1", "chat": "1.0.1"},
        "2026-03-01T18:30:00Z": {"search": "1.0.1", "summarise": "1.0.0", "chat": "1.0.1"},
        "2026-03-01T20:30:00Z": {"search": "1.0.1", "summarise": "1.0.0", "chat": "1.0.2"},
    }
    for when, by_route in expected.items():
        for r, version in by_route.items():
            if when == "2026-03-01T10:30:00Z" and r != "search":
                continue  # not declared yet: below
            proc = run_cli("which", NAME, "--at", when, "--key", key, "--route", r, "--json", cwd=repo)
            assert proc.returncode == 0, proc.stderr
            doc = json.loads(proc.stdout)
            assert (doc["route"], doc["served_by"]) == (r, version), (when, r)
    # at 10:30 search was declared and summarise was not: the model had routes, so summarise is unknown (exit 2)
    proc = run_cli("which", NAME, "--at", "2026-03-01T10:30:00Z", "--key", key, "--route", "summarise", cwd=repo)
    assert proc.returncode == 2 and "has no route 'summarise'" in proc.stderr
    # before the model declared any route, every route answered as the model
    doc = json.loads(run_cli("which", NAME, "--at", "2026-03-01T09:30:00Z", "--key", key, "--route", "summarise",
                             "--json", cwd=repo).stdout)
    assert doc["served_by"] == "1.0.0" and doc["route"] == "summarise"
    # the route's own state at a time, not the model's
    doc = json.loads(run_cli("which", NAME, "--at", "2026-03-01T18:30:00Z", "--route", "summarise", "--json",
                             cwd=repo).stdout)
    assert doc["active"] == "1.0.0" and doc["canary"] is None


@pytest.mark.parametrize("args, message", [
    (["route", NAME, "Summarise"], "error: invalid route name 'Summarise'"),
    (["route", NAME, "a" * 64], "error: invalid route name"),
    (["canary", NAME, "1.0.2", "--route", "bad_name"], "error: invalid route name 'bad_name'"),
    (["rollback", NAME, "--route", "nosuch", "--from", "1.0.1"], "error: support-agent has no route 'nosuch'"),
    (["promote", NAME, "1.0.0", "--to", "active", "--route", "nosuch"], "error: support-agent has no route 'nosuch'"),
    (["promote", NAME, "1.0.2", "--to", "canary", "--route", "chat"], "error: --route chat pins a route"),
    (["resolve", NAME, "--route", "nosuch", "--key", "k"], "error: support-agent has no route 'nosuch'"),
    (["route", NAME, "chat", "--fallback", "openai/gpt-4.1-mini"], "is not a pinned openai snapshot"),
    (["route", NAME, "chat", "--fallback", "openai/latest"], "is an alias"),
    (["route", NAME, "chat", "--fallback", "nomodel"], "error: invalid --fallback 'nomodel'"),
    (["route", NAME, "chat", "--policy", "weighted", "--fallback", "openai/gpt-4.1-2025-04-14"], "needs a weight"),
    (["route", NAME, "chat", "--fallback", "openai/gpt-4.1-2025-04-14=2"], "has a weight but the policy is ordered"),
    (["route", NAME, "chat", "--policy", "random", "--fallback", "a/b"], "error: invalid --policy 'random'"),
])
def test_bad_route_input_exits_2_and_writes_nothing(routed, args, message):
    _, _, repo = routed
    state = repo_state(repo)
    proc = run_cli(*args, cwd=repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert repo_state(repo) == state


def test_route_on_a_model_without_routes_and_a_retired_fallback_exit_2(tmp_path, monkeypatch):
    reg = modelctl.Registry(new_registry(tmp_path / "reg"))
    repo = tmp_path / "reg"
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(version="1.0.0"))
    reg.register(f)
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active")
    state = repo_state(repo)
    for args in (["rollback", NAME, "--route", "chat", "--from", "1.0.0"], ["canary", NAME, "1.0.0", "--route", "chat"],
                 ["resolve", NAME, "--route", "chat"]):
        proc = run_cli(*args, cwd=repo)
        assert proc.returncode == 2 and proc.stderr.startswith("error: support-agent declares no routes"), proc.stderr
        assert repo_state(repo) == state
    (repo / "deprecations.yaml").write_text("apiVersion: modelctl/v1\nkind: Deprecations\nmodels:\n"
                                            "  anthropic/claude-3-opus-20240229: \"2025-06-06\"\n")
    git(repo, "add", "deprecations.yaml")
    git(repo, "commit", "-q", "-m", "deprecations")
    state = repo_state(repo)
    proc = run_cli("route", NAME, "chat", "--fallback", "anthropic/claude-3-opus-20240229", cwd=repo)
    assert proc.returncode == 2 and "was retired on 2025-06-06" in proc.stderr
    assert repo_state(repo) == state


def test_route_writes_are_idempotent_and_a_file_without_routes_is_untouched(routed):
    reg, step, repo = routed
    state = repo_state(repo)
    assert reg.route(NAME, "search").noop
    assert reg.route(NAME, "summarise", fallback=["anthropic/claude-sonnet-4-5-20250929"]).noop
    assert repo_state(repo) == state
    # declaring a fallback chain is one commit touching the deployment (and its rendering) only
    step(reg.route, NAME, "search", fallback=["openai/gpt-4.1-2025-04-14=3", "anthropic/claude-sonnet-4-5-20250929=1"],
         policy="weighted")
    changed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert f"deployments/{NAME}.yaml" in changed and all(p.startswith(("deployments/", "rendered/")) for p in changed)
    assert deployment(repo)["routes"]["search"]["fallback"] == {"policy": "weighted", "chain": [
        {"provider": "openai", "id": "gpt-4.1-2025-04-14", "weight": 3},
        {"provider": "anthropic", "id": "claude-sonnet-4-5-20250929", "weight": 1}]}


def test_fallback_order_test_vectors_and_weighted_share_over_100000_keys():
    for name, route, key, weights, order in routing.FALLBACK_VECTORS:
        chain = [{"provider": "p", "id": f"m{i}", "weight": w} for i, w in enumerate(weights)]
        assert routing.fallback_order(name, route, key, chain, "weighted") == order
        assert sorted(order) == list(range(len(weights)))
    # the spec, recomputed by hand for the first vector: a gateway in another language does exactly this
    import hashlib
    weights, left, order = [3, 1, 1], [0, 1, 2], []
    for step in range(3):
        draw = int.from_bytes(hashlib.sha256(f"support-agent\0summarise\0user-42\0{step}".encode()).digest()[:8],
                              "big") % sum(weights[i] for i in left)
        running = 0
        for i in list(left):
            running += weights[i]
            if draw < running:
                order.append(i)
                left.remove(i)
                break
    assert order == routing.FALLBACK_VECTORS[0][4]
    assert routing.fallback_order(NAME, "r", "k", [{}, {}, {}], "ordered") == [0, 1, 2]
    chain = [{"weight": 5}, {"weight": 3}, {"weight": 2}]
    first = Counter(routing.fallback_order(NAME, "search", f"key-{i}", chain, "weighted")[0] for i in range(100_000))
    for i, entry in enumerate(chain):
        assert abs(first[i] / 100_000 - entry["weight"] / 10) < 0.005, (i, first[i])


def test_parse_fallback_and_routes_pure_rules():
    assert routes.parse_fallback(["openai/gpt-4.1-2025-04-14"], None) == {
        "policy": "ordered", "chain": [{"provider": "openai", "id": "gpt-4.1-2025-04-14"}]}
    assert routes.parse_fallback(["ollama/llama3:8b=2", "openai/x-2025-01-01=1"], "weighted")["chain"][0] == {
        "provider": "ollama", "id": "llama3:8b", "weight": 2}
    dep = {"name": NAME, "active": "1.0.1", "canary": {"version": "1.0.2", "percent": 5},
           "versions": {"1.0.0": "deprecated", "1.0.1": "active", "1.0.2": "canary"},
           "routes": {"a": {}, "b": {"active": "1.0.0"}, "c": {"canary": {"version": "1.0.0", "percent": 10}}}}
    assert routes.effective(dep, "a") == ("1.0.1", {"version": "1.0.2", "percent": 5})
    assert routes.effective(dep, "b") == ("1.0.0", None)
    assert routes.effective(dep, "c") == ("1.0.1", {"version": "1.0.0", "percent": 10})
    assert routes.problems(dep, dep["versions"]) == []
    bad = dict(dep, routes={"x": {"active": "1.0.2"}, "y": {"active": "9.9.9"}, "z": {"canary": {"version": "1.0.2",
                                                                                                  "percent": 5}}})
    found = [m for m, _ in routes.problems(bad, dict(bad["versions"], **{"1.0.2": "rolled-back"}))]
    assert any("pinned to 1.0.2, whose status is rolled-back" in m for m in found)
    assert any("runs a canary of 1.0.2, whose status is rolled-back" in m for m in found)
    assert any("pinned to 9.9.9, which is not a registered version" in m for m in found)


def test_check_judges_routes_fallbacks_hand_edits_and_rendered_drift(routed):
    reg, step, repo = routed
    proc = run_cli("check", cwd=repo)
    # search and chat serve with no fallback at all; summarise has one
    assert "route search of support-agent serves traffic (1.0.1) with no fallback" in proc.stdout
    assert "route chat of support-agent serves traffic" in proc.stdout
    assert "route summarise of" not in proc.stdout
    # a hand edit: an unpinned fallback and a pin to a version that never served
    path = repo / "deployments" / f"{NAME}.yaml"
    text = path.read_text()
    edited = text.replace("          id: claude-sonnet-4-5-20250929", "          id: claude-latest")
    edited = edited.replace("  chat: {}", '  chat:\n    active: "1.0.2"')
    assert edited != text
    base = git(repo, "rev-parse", "HEAD").strip()
    path.write_text(edited)
    git(repo, "commit", "-q", "-am", "hand edit")
    proc = run_cli("check", cwd=repo)
    assert proc.returncode == 1
    assert "route summarise of support-agent: fallback" in proc.stdout and "claude-latest" in proc.stdout
    # the rendered ConfigMap did not follow the hand edit: drift
    assert "differs from what the registry renders" in proc.stdout
    # judged as a move (a pull request): no command pins a route to a version that never served
    proc = run_cli("check", "--changed-since", base, cwd=repo)
    assert proc.returncode == 1
    assert "route chat of support-agent is pinned to 1.0.2 (staging), which never served nor ran as its canary" \
        in proc.stdout


def test_check_changed_since_refuses_an_illegal_hand_edit_of_a_route(routed):
    reg, step, repo = routed
    base = git(repo, "rev-parse", "HEAD").strip()
    path = repo / "deployments" / f"{NAME}.yaml"
    path.write_text(path.read_text().replace("  chat: {}", "  chat:\n    canary: {version: \"1.0.2\", percent: 7}"))
    git(repo, "commit", "-q", "-am", "hand edit: a route canary at 7 %")
    proc = run_cli("check", "--changed-since", base, cwd=repo)
    assert proc.returncode == 1
    assert "canary percent 7 of route chat of support-agent is not one of canary.steps" in proc.stdout


def test_rendered_configmap_carries_the_routes(routed):
    reg, step, repo = routed
    step(reg.rollback, NAME, route="summarise", from_="1.0.1")
    proc = run_cli("render", NAME, "--format", "json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["documents"][0]
    assert doc["routes"]["summarise"]["active"]["version"] == "1.0.0"
    assert doc["routes"]["summarise"]["follows_model"] is False
    assert doc["routes"]["search"]["active"]["version"] == "1.0.1" and doc["routes"]["search"]["follows_model"]
    assert doc["routes"]["summarise"]["active"]["prompt"]["text"] == "You are helpful.\n"
    assert run_cli("check", cwd=repo).returncode == 0


def test_gto_agrees_with_status_for_the_model_through_route_events(routed, gto_bin, tmp_path):
    from test_gto import VIEWS, _agree, _clone, _modelctl_view, _run_gto

    reg, step, repo = routed
    script = [
        ("summarise rolled back to 1.0.0", lambda: step(reg.rollback, NAME, route="summarise", from_="1.0.1")),
        ("1.0.2 shadow", lambda: step(reg.shadow, NAME, "1.0.2", 10)),
        ("chat canary 1.0.2", lambda: step(reg.canary, NAME, "1.0.2", 25, route="chat")),
        ("chat canary rolled back", lambda: step(reg.rollback, NAME, route="chat")),
        ("model canary 1.0.2", lambda: step(reg.canary, NAME, "1.0.2", 5)),
        ("search pinned to 1.0.0", lambda: step(reg.promote, NAME, "1.0.0", "active", route="search")),
        ("1.0.2 active", lambda: step(reg.promote, NAME, "1.0.2", "active")),
    ]
    steps = [("start", _modelctl_view(repo), _clone(repo, tmp_path / "step-00"))]
    for i, (label, action) in enumerate(script, 1):
        action()
        steps.append((label, _modelctl_view(repo), _clone(repo, tmp_path / f"step-{i:02d}")))
    # route events leave the model's stages alone; model events move them
    assert steps[1][1] == steps[0][1] and steps[4][1] == steps[2][1]
    assert steps[5][1]["canary"] == {"1.0.2"} and steps[-1][1]["active"] == {"1.0.2"}
    shown = _run_gto(gto_bin, {str(clone): VIEWS for _, _, clone in steps})
    for label, ours, clone in steps:
        _agree(label, ours, shown[str(clone)])
    # while the model moved on, the pinned routes kept their versions
    assert served(reg, "search") == served(reg, "summarise") == {"1.0.0": len(KEYS)}
    assert served(reg, "chat") == {"1.0.2": len(KEYS)}


def test_check_changed_since_accepts_the_moves_the_route_commands_make(routed):
    reg, step, repo = routed
    base = git(repo, "rev-parse", "HEAD").strip()
    step(reg.shadow, NAME, "1.0.2", 10)
    step(reg.canary, NAME, "1.0.2", 25, route="chat")
    step(reg.canary, NAME, "1.0.2", 50, route="chat")
    step(reg.promote, NAME, "1.0.2", "active", route="chat")
    step(reg.rollback, NAME, route="summarise", from_="1.0.1")
    step(reg.route, NAME, "search", fallback=["openai/gpt-4.1-2025-04-14"])
    proc = run_cli("check", "--changed-since", base, cwd=repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stdout.replace("0 error(s)", "")


def test_model_level_moves_reach_the_routes_pure():
    from modelctl import state

    dep = {"name": NAME, "active": "1.0.1", "previous": "1.0.0", "canary": None, "shadow": None, "hold": None,
           "versions": {"1.0.0": "deprecated", "1.0.1": "active", "1.0.2": "shadow"},
           "routes": {"chat": {"canary": {"version": "1.0.2", "percent": 10}}, "search": {"active": "1.0.0"},
                      "plain": {}}}
    cfg = {"pipeline": {"required": []}}
    # the model promotes the version chat runs as its canary: chat serves it anyway, so its canary ends
    t = routes.after_model(state.promote(dep, "1.0.2", "active", cfg))
    assert t.deployment["routes"] == {"chat": {}, "search": {"active": "1.0.0"}, "plain": {}}
    # a model-level canary of it is refused while chat runs its own
    with pytest.raises(modelctl.errors.TransitionError, match="route chat of support-agent runs its own canary"):
        routes.after_model(state.canary(dep, "1.0.2", 5, cfg))
    # rolling 1.0.1 back to 1.0.0 for the model leaves search pinned to 1.0.0 (a version that serves again)
    t = routes.after_model(state.rollback(dep, cfg, now="2026-03-01T00:00:00Z", from_="1.0.1"))
    assert t.deployment["routes"]["search"] == {"active": "1.0.0"} and t.deployment["active"] == "1.0.0"
    # archiving a pinned version is refused; a version no route names is archived as before
    with pytest.raises(modelctl.errors.TransitionError, match="route search of support-agent is pinned to 1.0.0"):
        routes.after_model(state.promote(dep, "1.0.0", "archived", cfg))
    # without routes nothing changes
    plain = {k: v for k, v in dep.items() if k != "routes"}
    t = state.promote(plain, "1.0.2", "active", cfg)
    assert routes.after_model(t) is t
