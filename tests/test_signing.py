"""Signed writes (SSH keys made by ssh-keygen), .modelctl/allowed_signers and `check --require-signatures`.

Every key here is real: git signs and verifies with ssh-keygen, and the assertions are what
`git verify-commit`, `git verify-tag`, `check`, `doctor` and `log` say about the registry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import git, repo_state, run_cli
from evalkit import NAME, configure, promote, register

from modelctl import signing
from modelctl.errors import UsageError
from modelctl.store import SignatureRecord

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")

DEPLOYMENT = f"deployments/{NAME}.yaml"


def make_key(where, who: str):
    """A new ed25519 key pair without a passphrase: (private key path, 'type base64' public part)."""
    path = where / who
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(path)], check=True)
    return path, " ".join((where / f"{who}.pub").read_text().split()[:2])


@pytest.fixture
def keys(tmp_path):
    where = tmp_path / "keys"
    where.mkdir()
    return {who: make_key(where, who) for who in ("ada", "bob", "mallory")}


def allowed(keys, *who) -> str:
    return "# who may change deployments/ and rendered/\n" + "".join(
        f"{w}@example.com {keys[w][1]}\n" for w in who)


def commit_file(repo, rel, text, *args, env=None, message="hand edit"):
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    subprocess.run(["git", "add", rel], cwd=repo, check=True)
    subprocess.run(["git", *args, "commit", "-q", "-m", message], cwd=repo, check=True, env=env, capture_output=True)


@pytest.fixture
def signed(registry, tmp_path, keys):
    """Signing on with ada's key (the test identity is ada@example.com), ada and bob allowed; 1.0.0 registered."""
    configure(registry, pipeline=[], extra="")
    text = (registry / "modelctl.yaml").read_text().replace("signing:\n  enabled: false", "signing:\n  enabled: true")
    git(registry, "config", "gpg.format", "ssh")
    git(registry, "config", "user.signingkey", str(keys["ada"][0]))
    commit_file(registry, "modelctl.yaml", text, message="sign every write")
    commit_file(registry, signing.ALLOWED_SIGNERS, allowed(keys, "ada", "bob"), message="allowed signers")
    register(registry, tmp_path, "1.0.0")
    return registry


def verify(repo, what, rev):
    return subprocess.run(["git", "-c", f"gpg.ssh.allowedSignersFile={repo / signing.ALLOWED_SIGNERS}", what, rev],
                          cwd=repo, capture_output=True, text=True)


def require(repo, *args):
    proc = run_cli("check", "--require-signatures", "--format", "json", *args, cwd=repo)
    doc = json.loads(proc.stdout) if proc.stdout else None
    return proc, [f for f in (doc or {}).get("findings", []) if "commit " in f["message"]]


def edit_deployment(repo, *args, env=None, note="hand edit"):
    """A change to the deployment file that serves the same (a comment), committed by hand."""
    text = (repo / DEPLOYMENT).read_text() + f"# {note}\n"
    commit_file(repo, DEPLOYMENT, text, *args, env=env, message=note)


# -- signed writes --------------------------------------------------------------------------------

def test_every_commit_and_tag_a_write_makes_is_signed_and_git_verifies_it(signed):
    assert run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=signed).returncode == 0
    for rev in ("HEAD", "HEAD^"):  # the promotion and the registration
        proc = verify(signed, "verify-commit", rev)
        assert proc.returncode == 0, proc.stderr
        assert 'Good "git" signature for ada@example.com with ED25519 key' in proc.stderr
    tags = git(signed, "tag", "-l").split()
    assert f"{NAME}@v1.0.0" in tags and f"{NAME}#active#1" in tags
    for tag in tags:
        proc = verify(signed, "verify-tag", tag)
        assert proc.returncode == 0, (tag, proc.stderr)
        assert 'Good "git" signature for ada@example.com' in proc.stderr
    assert "-----BEGIN SSH SIGNATURE-----" in git(signed, "cat-file", "-p", f"{NAME}#active#1")
    proc, found = require(signed)
    assert proc.returncode == 0 and found == [], proc.stdout
    doc = json.loads(run_cli("log", NAME, "--json", cwd=signed).stdout)
    from test_output_schemas import assert_valid

    assert_valid("log", doc)
    events = doc["events"]
    assert [e["signer"]["principal"] for e in events] == ["ada@example.com", "ada@example.com"]
    assert {e["signer"]["status"] for e in events} == {"verified"}
    assert events[0]["signer"]["key"].startswith("SHA256:")
    table = run_cli("log", NAME, cwd=signed).stdout
    assert "SIGNED BY" in table and "ada@example.com" in table


def test_without_signing_nothing_is_signed_and_git_signing_settings_are_not_read(registry, tmp_path, monkeypatch):
    from modelctl.store import Store

    def refuse(self):
        raise AssertionError("signing settings read with signing off")

    monkeypatch.setattr(Store, "signing_settings", refuse)
    register(registry, tmp_path, "1.0.0")
    assert "gpgsig" not in git(registry, "cat-file", "-p", "HEAD")
    assert "SIGNATURE" not in git(registry, "cat-file", "-p", f"{NAME}@v1.0.0")
    assert json.loads(run_cli("log", NAME, "--json", cwd=registry).stdout)["events"][0]["signer"] is None


@pytest.mark.parametrize("setting", ["missing", "not-a-key", "unset"])
def test_a_signing_key_git_cannot_use_exits_2_and_writes_nothing(signed, tmp_path, setting):
    if setting == "missing":
        git(signed, "config", "user.signingkey", str(tmp_path / "keys" / "nobody"))
    elif setting == "not-a-key":
        junk = tmp_path / "junk"
        junk.write_text("not a key\n")
        git(signed, "config", "user.signingkey", str(junk))
    else:
        git(signed, "config", "--unset", "user.signingkey")
    before = repo_state(signed)
    proc = run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=signed)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and ("key" in lines[0]), proc.stderr
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1
    assert repo_state(signed) == before


# -- check --require-signatures ---------------------------------------------------------------------

@pytest.mark.parametrize("case, reason", [
    ("unsigned", "unsigned"),
    ("unknown key", "signed by key SHA256:"),
    ("forged author", "which is not in .modelctl/allowed_signers; it claims to be by ada@example.com, who is "
                      "allowed, but with another key"),
    ("identity mismatch", "signed by the key of bob@example.com but committed as ada@example.com"),
])
def test_a_change_to_deployments_not_signed_by_an_allowed_key_fails_check_with_the_reason(signed, keys, case, reason):
    promote(signed, "1.0.0")
    assert require(signed)[0].returncode == 0
    if case == "unsigned":
        edit_deployment(signed, "-c", "commit.gpgSign=false")
    elif case == "unknown key":  # mallory signs as herself, but her key is not listed
        env = {**os.environ, "GIT_AUTHOR_EMAIL": "mallory@example.com",
               "GIT_COMMITTER_EMAIL": "mallory@example.com"}
        edit_deployment(signed, "-c", f"user.signingkey={keys['mallory'][0]}", "-c", "commit.gpgSign=true", env=env)
    elif case == "forged author":  # mallory's valid key, ada's name on the commit
        edit_deployment(signed, "-c", f"user.signingkey={keys['mallory'][0]}", "-c", "commit.gpgSign=true")
    else:  # bob may sign, but only as bob
        edit_deployment(signed, "-c", f"user.signingkey={keys['bob'][0]}", "-c", "commit.gpgSign=true")
    proc, found = require(signed)
    assert proc.returncode == 1, proc.stdout
    [f] = found
    sha = git(signed, "rev-parse", "HEAD").strip()
    assert f["path"] == DEPLOYMENT and f["level"] == "error"
    assert f["message"].startswith(f"commit {sha[:12]} 'hand edit' by ")
    assert reason in f["message"]
    # doctor reports it too (a warning: history is not something --fix rewrites)
    doc = json.loads(run_cli("doctor", "--json", cwd=signed).stdout)
    assert [(d["kind"], d["subject"]) for d in doc["findings"] if d["kind"] == "unsigned-change"] == \
        [("unsigned-change", DEPLOYMENT)]
    # and log says who signed it
    [event] = json.loads(run_cli("log", NAME, "--json", "-n", "1", cwd=signed).stdout)["events"]
    assert event["signer"]["status"] == {"unsigned": "unsigned", "unknown key": "unknown-key",
                                         "forged author": "unknown-key",
                                         "identity mismatch": "identity-mismatch"}[case]


def test_a_signer_added_in_the_same_commit_does_not_authorise_it_and_counts_from_the_next(signed, keys):
    env = {**os.environ, "GIT_AUTHOR_EMAIL": "mallory@example.com", "GIT_COMMITTER_EMAIL": "mallory@example.com"}
    sign_as_mallory = ("-c", f"user.signingkey={keys['mallory'][0]}", "-c", "commit.gpgSign=true")
    (signed / signing.ALLOWED_SIGNERS).write_text(allowed(keys, "ada", "bob", "mallory"))
    git(signed, "add", signing.ALLOWED_SIGNERS)
    edit_deployment(signed, *sign_as_mallory, env=env, note="adds herself and edits")
    proc, found = require(signed)
    assert proc.returncode == 1
    assert [f["message"].split(": ", 1)[1].split(",")[0] for f in found] == \
        ["signed by key " + signing.parse_allowed_signers(allowed(keys, "mallory"))[0].fingerprint]
    edit_deployment(signed, *sign_as_mallory, env=env, note="next edit")
    assert len(require(signed)[1]) == 1  # only the first one


def test_changed_since_judges_only_the_commits_of_the_range(signed):
    edit_deployment(signed, "-c", "commit.gpgSign=false", note="old unsigned edit")
    git(signed, "branch", "base")
    edit_deployment(signed, "-c", "commit.gpgSign=true", note="signed edit")
    proc, found = require(signed, "--changed-since", "base")
    assert proc.returncode == 0 and found == [], proc.stdout
    proc, found = require(signed)
    assert proc.returncode == 1 and [f["message"].split("'")[1] for f in found] == ["old unsigned edit"]


def test_commits_before_the_allowed_signers_file_existed_are_not_judged(registry, tmp_path, keys):
    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")  # unsigned, before the policy
    commit_file(registry, signing.ALLOWED_SIGNERS, allowed(keys, "ada"))
    proc, found = require(registry)
    assert proc.returncode == 0 and found == [], proc.stdout


def test_require_signatures_without_or_with_a_malformed_allowed_signers_file_exits_2(registry, keys):
    proc = run_cli("check", "--require-signatures", cwd=registry)
    assert proc.returncode == 2 and "needs .modelctl/allowed_signers" in proc.stderr
    commit_file(registry, signing.ALLOWED_SIGNERS, allowed(keys, "ada") + "bob@example.com ssh-ed25519 not*base64\n")
    before = repo_state(registry)
    proc = run_cli("check", "--require-signatures", cwd=registry)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: .modelctl/allowed_signers:3: the key is not valid base64")
    assert len(proc.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert repo_state(registry) == before


# -- the allowed-signers format (pure) ---------------------------------------------------------------

def test_parse_allowed_signers_reads_git_s_format_and_openpgp_fingerprints(keys):
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    text = (f"# comment\n\nada@example.com,*@ops.example.com {keys['ada'][1]} ada's laptop\n"
            f'bob@example.com namespaces="git,file" {keys["bob"][1]}\n'
            f"ci@example.com openpgp {fpr.lower()}\n")
    ada, bob, ci = signing.parse_allowed_signers(text)
    assert (ada.line, bob.line, ci.line) == (3, 4, 5)
    assert ada.principals == ("ada@example.com", "*@ops.example.com") and ada.allows("x@ops.example.com")
    assert not ada.allows("ada@example.org")
    pub = (keys["ada"][0].parent / "ada.pub")
    printed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True).stdout.split()[1]
    assert ada.fingerprint == printed
    assert ci.kind == "openpgp" and ci.fingerprint == fpr


@pytest.mark.parametrize("line, message", [
    ("ada@example.com", ":2: expected principals, a key type and a key"),
    ("ada@example.com ssh-dss AAAA", ":2: unknown key type or option 'ssh-dss'"),
    ("ada@example.com cert-authority ssh-ed25519 AAAA", ":2: the option cert-authority is not supported"),
    ('ada@example.com namespaces="file" KEY', ':2: namespaces="file" does not include git'),
    ("ada@example.com openpgp 1234", ":2: '1234' is not an OpenPGP fingerprint"),
    ("ada@example.com ssh-rsa KEY", ":2: the key is not a ssh-rsa public key"),
])
def test_a_malformed_line_is_refused_with_its_number(keys, line, message):
    text = f"bob@example.com {keys['bob'][1]}\n" + line.replace("KEY", keys["ada"][1].split()[1]) + "\n"
    if "KEY" in line and "namespaces" in line:
        text = text.replace(f'"file" {keys["ada"][1].split()[1]}', f'"file" {keys["ada"][1]}')
    with pytest.raises(UsageError) as exc:
        signing.parse_allowed_signers(text)
    assert exc.value.message.startswith(".modelctl/allowed_signers" + message), exc.value.message


def record(code="G", key="SHA256:x", committer="ada@example.com", fpr="", primary=""):
    return SignatureRecord("c" * 40, "p" * 40, code, key, fpr, primary, committer, committer, "s", ())


def test_judge_names_each_reason():
    ada = signing.AllowedSigner(("ada@example.com",), "ssh", "ssh-ed25519", "k", "SHA256:x", 1)
    pgp = signing.AllowedSigner(("ci@example.com",), "openpgp", "openpgp", "AB" * 20, "AB" * 20, 2)
    assert signing.judge(record(), (ada,)).status == "verified"
    assert signing.judge(record(code="U"), (ada,)).principal == "ada@example.com"
    assert signing.judge(record(code="N", key=""), (ada,)).status == "unsigned"
    assert signing.judge(record(code="B"), (ada,)).status == "bad-signature"
    assert signing.judge(record(code="E"), (ada,)).status == "unverifiable"
    assert signing.judge(record(key="SHA256:y"), (ada,)).status == "unknown-key"
    assert signing.judge(record(committer="eve@example.com"), (ada,)).status == "identity-mismatch"
    assert signing.judge(record(), None).status == "no-signers"
    assert signing.judge(record(key="0123", committer="ci@example.com", primary="ab" * 20), (ada, pgp)).ok


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_openpgp_signing_and_a_fingerprint_in_allowed_signers(registry, tmp_path, monkeypatch):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Ada Tester <ada@example.com>",
                    "ed25519", "sign", "never"], check=True, capture_output=True)
    colons = subprocess.run(["gpg", "--with-colons", "--list-keys", "ada@example.com"], capture_output=True,
                            text=True, check=True).stdout
    fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    configure(registry, pipeline=[])
    text = (registry / "modelctl.yaml").read_text().replace("signing:\n  enabled: false", "signing:\n  enabled: true")
    git(registry, "config", "gpg.format", "openpgp")  # no user.signingkey: gpg signs as the committer, as git does
    commit_file(registry, "modelctl.yaml", text, message="sign every write")
    commit_file(registry, signing.ALLOWED_SIGNERS, f"ada@example.com openpgp {fpr}\n", message="allowed signers")
    register(registry, tmp_path, "1.0.0")
    assert run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=registry).returncode == 0
    for what, rev in (("verify-commit", "HEAD"), ("verify-tag", f"{NAME}@v1.0.0"), ("verify-tag", f"{NAME}#active#1")):
        proc = subprocess.run(["git", what, rev], cwd=registry, capture_output=True, text=True)
        assert proc.returncode == 0 and "Good signature from \"Ada Tester <ada@example.com>\"" in proc.stderr, \
            (what, rev, proc.stderr)
    assert "-----BEGIN PGP SIGNATURE-----" in git(registry, "cat-file", "-p", f"{NAME}#active#1")
    proc, found = require(registry)
    assert proc.returncode == 0 and found == [], proc.stdout
    edit_deployment(registry, "-c", "commit.gpgSign=false")
    assert [f["message"].rsplit(": ", 1)[1] for f in require(registry)[1]] == ["unsigned"]
    [event] = json.loads(run_cli("log", NAME, "--json", "-n", "1", cwd=registry).stdout)["events"]
    assert event["signer"]["status"] == "unsigned"
    events = json.loads(run_cli("log", NAME, "--json", cwd=registry).stdout)["events"]
    assert events[1]["signer"]["principal"] == "ada@example.com"
