"""The content-addressed caches in the git directory never change an answer: a re-made tag or a
deleted or torn cache file gives the same output as a clone that never had them."""
import json
import subprocess

import pytest
from conftest import git, run_cli

from modelctl.store import Store


def _show(repo) -> list[dict]:
    proc = run_cli("show", "support-agent", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["versions"]


def _caches(repo) -> list:
    gd = Store(repo).git_dir
    return sorted(p for p in gd.iterdir() if p.name.startswith(("modelctl-tag-stamps", "modelctl-summary-",
                                                                  "modelctl-valid-")))


def test_a_re_made_registration_tag_shows_its_new_tagger(two_versions):
    before = _show(two_versions)
    assert before[1]["registered_by"] == "Ada Tester <ada@example.com>"
    commit = git(two_versions, "rev-list", "-n", "1", "support-agent@v1.0.1").strip()
    git(two_versions, "tag", "-d", "support-agent@v1.0.1")
    env = {"GIT_COMMITTER_NAME": "Bob Other", "GIT_COMMITTER_EMAIL": "bob@example.com",
           "GIT_COMMITTER_DATE": "2030-01-02T03:04:05Z", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "tag", "-a", "-m", "re-made", "support-agent@v1.0.1", commit], cwd=two_versions,
                   env=env, check=True)
    after = _show(two_versions)
    assert after[1]["registered_by"] == "Bob Other <bob@example.com>"
    assert after[1]["registered_at"] == "2030-01-02T03:04:05Z"
    assert after[0] == before[0]


def test_deleted_or_torn_caches_change_no_answer(two_versions):
    first = _show(two_versions)
    status = run_cli("status", "--json", cwd=two_versions).stdout
    caches = _caches(two_versions)
    assert caches, "show and status keep their caches in the git directory"
    for path in caches:  # a process killed mid-append leaves half a line
        path.write_text(path.read_text() + '{"deadbeef": [1, "x')
    assert _show(two_versions) == first
    for path in _caches(two_versions):
        path.unlink()
    assert _show(two_versions) == first
    assert run_cli("status", "--json", cwd=two_versions).stdout == status
    assert _caches(two_versions), "the caches are written again"


def test_private_paths_are_modelctl_files_in_the_git_directory(registry):
    store = Store(registry)
    assert store.private_path("modelctl-tag-stamps") == store.git_dir / "modelctl-tag-stamps"
    for bad in ("config", "../modelctl-x", "modelctl-x/../../y", "hooks"):
        with pytest.raises(ValueError):
            store.private_path(bad)


def test_check_finds_a_bundle_edited_after_its_registration_with_or_without_its_caches(two_versions):
    """`check` compares each bundle with its blob at the registration tag's commit; the answers it
    keeps (.git/modelctl-blob-at, by commit and path) never hide a later hand edit."""
    assert run_cli("check", cwd=two_versions).returncode == 0
    kept = Store(two_versions).git_dir / "modelctl-blob-at"
    assert kept.exists() and "support-agent/1.0.0.yaml" in kept.read_text()
    path = two_versions / "bundles" / "support-agent" / "1.0.0.yaml"
    path.write_text(path.read_text().replace("temperature: 0.3", "temperature: 0.9"))
    git(two_versions, "commit", "-qam", "a hand edit of a registered bundle")
    said = "bundle changed since its registration tag support-agent@v1.0.0; registered bundles are immutable"
    for _ in range(2):  # the cache as the clean run left it, then with what this run added
        proc = run_cli("check", cwd=two_versions)
        assert proc.returncode == 1 and said in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "1.0.1.yaml" not in proc.stdout + proc.stderr
    kept.write_text(kept.read_text() + '{"torn')
    proc = run_cli("check", cwd=two_versions)
    assert proc.returncode == 1 and said in proc.stdout + proc.stderr
    kept.unlink()
    proc = run_cli("check", cwd=two_versions)
    assert proc.returncode == 1 and said in proc.stdout + proc.stderr
