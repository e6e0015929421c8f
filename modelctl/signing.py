"""Signed writes and who may sign them: git's signing settings turned into a signer for tag
payloads (commits are signed by `git commit-tree -S` itself), the registry's
`.modelctl/allowed_signers` (parsed here, without I/O), and the judgement of commit signatures.

The allowed-signers file has the format of git's `gpg.ssh.allowedSignersFile` (ssh-keygen(1),
ALLOWED SIGNERS): `principals [options] key-type base64-key [comment]`, one key a line, `#`
comments. An OpenPGP key is a line `principals openpgp FINGERPRINT` (40 or 64 hex digits, the
primary key's or a signing subkey's). Of the options only `namespaces="..."` is honoured (it must
include `git`); `cert-authority`, `valid-after` and `valid-before` are refused, so that a list never
means more to ssh-keygen than to `check`.

A commit is judged by the list at its first parent, so a commit that adds a key cannot authorise
itself: the key counts from the next commit on (README "Signed writes").
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import UsageError

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .store import SignatureRecord, Store

ALLOWED_SIGNERS = ".modelctl/allowed_signers"
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
OPENPGP = "openpgp"
_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*")+')
_OPTION = re.compile(r'(?:[^,"]|"[^"]*")+')  # options are comma-separated; a quoted value may hold commas
_HEX_FPR = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
_SIGN_TIMEOUT = 120.0  # seconds: a hardware key or an agent may ask for a touch

Status = Literal["verified", "unsigned", "bad-signature", "unknown-key", "identity-mismatch", "unverifiable",
                 "no-signers"]


# -- the allowed-signers list (pure) -----------------------------------------------------------

@dataclass(frozen=True)
class AllowedSigner:
    """One line of .modelctl/allowed_signers: who (principal patterns) signs with which key."""

    principals: tuple[str, ...]
    kind: Literal["ssh", "openpgp"]
    key_type: str
    key: str  # the base64 public key (ssh) or the upper-case hex fingerprint (openpgp)
    fingerprint: str  # "SHA256:..." as `git log %GK` prints it (ssh), or the hex fingerprint
    line: int

    def allows(self, email: str) -> bool:
        """Whether this key's principals name `email` (ssh-keygen's patterns: * ? and !negation)."""
        email = email.lower()
        matched = False
        for pattern in self.principals:
            if pattern.startswith("!"):
                if fnmatch.fnmatchcase(email, pattern[1:].lower()):
                    return False
            elif fnmatch.fnmatchcase(email, pattern.lower()):
                matched = True
        return matched


def ssh_fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob, as ssh-keygen -l and git's %GK print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_allowed_signers(text: bytes | str, path: str = ALLOWED_SIGNERS) -> tuple[AllowedSigner, ...]:
    """Every key of an allowed-signers file; a malformed line is a UsageError naming path:line."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    out: list[AllowedSigner] = []
    hint = ("write 'principal key-type key' lines, e.g. 'alice@example.com ssh-ed25519 AAAA...' "
            "(the .pub file's first two fields), or 'alice@example.com openpgp FINGERPRINT'")
    for number, line in enumerate(raw.splitlines(), 1):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        where = f"{path}:{number}"
        tokens = _TOKEN.findall(body)
        if len(tokens) < 3:
            raise UsageError(f"{where}: expected principals, a key type and a key", hint=hint)
        principals = tuple(p for p in tokens[0].strip('"').split(","))
        if any(not p.strip() for p in principals):
            raise UsageError(f"{where}: empty principal in {tokens[0]!r}", hint=hint)
        rest = tokens[1:]
        if rest[0] not in SSH_KEY_TYPES and rest[0] != OPENPGP:
            _check_options(rest[0], where)
            rest = rest[1:]
        if len(rest) < 2:
            raise UsageError(f"{where}: expected a key type and a key after the principals", hint=hint)
        key_type, key = rest[0], rest[1]
        if key_type == OPENPGP:
            if not _HEX_FPR.match(key):
                raise UsageError(f"{where}: {key!r} is not an OpenPGP fingerprint (40 or 64 hex digits, no spaces)",
                                 hint="print it with 'gpg --fingerprint --with-colons KEYID' (the fpr: line)")
            fpr = key.upper()
            out.append(AllowedSigner(principals, "openpgp", key_type, fpr, fpr, number))
            continue
        if key_type not in SSH_KEY_TYPES:
            raise UsageError(f"{where}: unknown key type {key_type!r}",
                             hint="use one of " + ", ".join(sorted(SSH_KEY_TYPES)) + " or openpgp")
        try:
            blob = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{where}: the key is not valid base64", hint=hint) from None
        if _blob_type(blob) != key_type:
            raise UsageError(f"{where}: the key is not a {key_type} public key", hint=hint)
        out.append(AllowedSigner(principals, "ssh", key_type, key, ssh_fingerprint(blob), number))
    return tuple(out)


def _check_options(text: str, where: str) -> None:
    for option in _OPTION.findall(text):
        name, _, value = option.partition("=")
        if name.lower() == "namespaces":
            spaces = [s.strip() for s in value.strip('"').split(",")]
            if "git" not in spaces:
                raise UsageError(f"{where}: namespaces={value} does not include git, so the key cannot sign commits",
                                 hint='add git (namespaces="git") or drop the option')
        elif name.lower() in ("cert-authority", "valid-after", "valid-before"):
            raise UsageError(f"{where}: the option {name} is not supported",
                             hint="list each signing key on a line of its own, without validity options")
        else:
            raise UsageError(f"{where}: unknown key type or option {option!r}",
                             hint="use a key type such as ssh-ed25519, or openpgp")


def _blob_type(blob: bytes) -> str | None:
    """The key type a public key blob starts with (an SSH string: 4-byte length, then the name)."""
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    return blob[4:4 + size].decode("ascii", "replace") if size <= len(blob) - 4 else None


# -- judging a commit (pure) ---------------------------------------------------------------------

@dataclass(frozen=True)
class SignatureCheck:
    """What a commit's signature proves, judged against the allowed signers at its parent."""

    commit: str
    status: Status
    principal: str | None  # the listed principal whose key signed (None: no listed key did)
    key: str | None  # the signing key's fingerprint
    reason: str  # one sentence a reviewer reads

    @property
    def ok(self) -> bool:
        """True when a listed key signed it as the commit's own committer."""
        return self.status == "verified"


def judge(record: SignatureRecord, signers: tuple[AllowedSigner, ...] | None, problem: str | None = None) -> SignatureCheck:
    """One commit's signature against the list at its parent (None: there was none; `problem`:
    why that list could not be read).

    - unsigned: no signature at all;
    - bad-signature: a signature that does not match the commit (it was altered after signing);
    - unverifiable: git cannot check it (an OpenPGP key missing from the verifier's keyring,
      an expired or revoked key);
    - unknown-key: a good signature by a key the list does not name;
    - identity-mismatch: a good signature by a listed key whose principals do not name the
      commit's committer email: someone allowed signed a commit that claims another identity;
    - verified: a listed key whose principal is the committer.
    """
    code, who = record.code, record.committer_email
    if code == "N":
        return SignatureCheck(record.commit, "unsigned", None, None, "unsigned")
    key = record.key or None
    if code == "B":
        return SignatureCheck(record.commit, "bad-signature", None, key,
                              "bad signature: the commit was changed after it was signed")
    if code not in ("G", "U"):
        why = {"X": "the signature has expired", "Y": "the signing key has expired",
               "R": "the signing key is revoked"}.get(code, "git cannot check the signature (for OpenPGP, import the "
                                                         "signer's public key into the verifier's keyring)")
        return SignatureCheck(record.commit, "unverifiable", None, key, why)
    if signers is None:
        return SignatureCheck(record.commit, "no-signers", None, key,
                              problem or f"no {ALLOWED_SIGNERS} at its parent commit, so no key may sign it")
    listed = [s for s in signers if _same_key(s, record)]
    if not listed:
        claimed = [s for s in signers if s.allows(who)]
        forged = f"; it claims to be by {who}, who is allowed, but with another key" if claimed else ""
        return SignatureCheck(record.commit, "unknown-key", None, key,
                              f"signed by key {key or '?'}, which is not in {ALLOWED_SIGNERS}{forged}")
    for signer in listed:
        if signer.allows(who):
            return SignatureCheck(record.commit, "verified", who, key, f"signed by {who}")
    names = ",".join(listed[0].principals)
    return SignatureCheck(record.commit, "identity-mismatch", None, key,
                          f"signed by the key of {names} but committed as {who}: a signer may only sign "
                          "commits made under their own identity")


def _same_key(signer: AllowedSigner, record: SignatureRecord) -> bool:
    if signer.kind == "ssh":
        return bool(record.key) and record.key == signer.fingerprint
    return signer.fingerprint in (record.fingerprint.upper(), record.primary_fingerprint.upper())


# -- judging history (via the store) -------------------------------------------------------------

def verify(store: Store, revs: list[str], paths: list[str]) -> list[tuple[SignatureRecord, SignatureCheck]]:
    """Every non-merge commit of `revs` that changes `paths`, oldest first, judged against the
    allowed signers at its first parent."""
    records = store.signature_records(revs, paths)
    parents = sorted({r.parent for r in records if r.parent})
    lists: dict[str, tuple[tuple[AllowedSigner, ...] | None, str | None]] = {}
    parsed: dict[bytes, tuple[tuple[AllowedSigner, ...] | None, str | None]] = {}
    for parent in parents:
        raw = store.read_many(parent, [ALLOWED_SIGNERS])[ALLOWED_SIGNERS]
        if raw is None:
            lists[parent] = (None, None)
            continue
        if raw not in parsed:
            try:
                parsed[raw] = (parse_allowed_signers(raw), None)
            except UsageError as exc:
                parsed[raw] = (None, f"the {ALLOWED_SIGNERS} at its parent commit is malformed ({exc.message})")
        lists[parent] = parsed[raw]
    out = []
    for record in records:
        signers, problem = lists.get(record.parent or "", (None, None))
        out.append((record, judge(record, signers, problem)))
    return out


def adoption(store: Store, tip: str) -> str | None:
    """The oldest commit of `tip`'s history that added the allowed-signers file: the policy starts there."""
    return store.adding_commits(tip, [ALLOWED_SIGNERS]).get(ALLOWED_SIGNERS)


# -- signing (git's own settings) --------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    """How git signs here: the format (ssh, openpgp, x509), its program and the key."""

    format: str
    program: str
    key: str
    literal: bool = False  # ssh: the key itself (key::..., ssh-...), used through the agent

    def sign(self, payload: bytes) -> bytes:
        """A detached, armored signature of `payload` as git makes it for `git tag -s`."""
        if self.format == "ssh":
            return self._sign_ssh(payload)
        cmd = [self.program, "--status-fd=2", "-bsau", self.key]
        proc = _run(cmd, payload)
        if proc.returncode != 0 or b"[GNUPG:] SIG_CREATED " not in proc.stderr:
            raise UsageError(f"{self.program} cannot sign with user.signingkey={self.key!r}: {_last(proc.stderr)}",
                             hint=_SIGN_HINT)
        return proc.stdout

    def _sign_ssh(self, payload: bytes) -> bytes:
        with tempfile.TemporaryDirectory(prefix="modelctl-sign-") as tmp:
            keyfile = self.key
            extra: list[str] = []
            if self.literal:
                keyfile = str(Path(tmp) / "key.pub")
                Path(keyfile).write_text(self.key + "\n")
                extra = ["-U"]
            proc = _run([self.program, "-Y", "sign", "-n", "git", "-f", keyfile, *extra], payload)
        if proc.returncode != 0 or b"-----BEGIN SSH SIGNATURE-----" not in proc.stdout:
            raise UsageError(f"git cannot sign with the SSH key {self.key!r}: {_last(proc.stderr)}", hint=_SIGN_HINT)
        return proc.stdout

    def check(self) -> None:
        """Sign a probe so that a key git cannot use is refused before anything is built."""
        self.sign(b"modelctl signing probe\n")


_SIGN_HINT = ("fix git's signing settings (user.signingkey, gpg.format, gpg.ssh.program) so that "
              "'git commit -S' works, or set signing: {enabled: false} in modelctl.yaml")


def _run(cmd: list[str], payload: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=payload, capture_output=True, timeout=_SIGN_TIMEOUT,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise UsageError(f"cannot sign: {cmd[0]} is not installed", hint=_SIGN_HINT) from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"cannot sign: {cmd[0]} did not answer within {_SIGN_TIMEOUT:g}s", hint=_SIGN_HINT) from None


def _last(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip() and "[GNUPG:]" not in ln]
    return lines[-1].strip() if lines else "it failed"


def signing_key(settings: Mapping[str, str], ident: str) -> SigningKey:
    """The SigningKey git would use, from its config (lower-case keys) and the committer identity
    ("Name <email>", OpenPGP's default key). Mirrors git's gpg-interface: gpg.format, gpg.<format>.program
    (gpg.program for openpgp), user.signingkey, gpg.ssh.defaultKeyCommand."""
    fmt = settings.get("gpg.format", "openpgp").lower()
    if fmt not in ("openpgp", "x509", "ssh"):
        raise UsageError(f"git's gpg.format is {fmt!r}: git signs with openpgp, x509 or ssh", hint=_SIGN_HINT)
    default = {"openpgp": "gpg", "x509": "gpgsm", "ssh": "ssh-keygen"}[fmt]
    program = settings.get(f"gpg.{fmt}.program") or (settings.get("gpg.program") if fmt == "openpgp" else None) \
        or default
    key = settings.get("user.signingkey", "").strip()
    if fmt != "ssh":
        return SigningKey(fmt, program, key or ident)
    if not key:
        command = settings.get("gpg.ssh.defaultkeycommand")
        if not command:
            raise UsageError("signing is enabled but git has no SSH signing key (user.signingkey is not set)",
                             hint="run 'git config user.signingkey ~/.ssh/id_ed25519' (or the .pub of a key in "
                                  "your agent), or set signing: {enabled: false}")
        proc = subprocess.run(command, shell=True, capture_output=True, timeout=_SIGN_TIMEOUT)  # git runs it through the shell too
        first = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode != 0 or not first:
            raise UsageError(f"gpg.ssh.defaultKeyCommand {command!r} gave no key: {_last(proc.stderr)}", hint=_SIGN_HINT)
        key = first[0].strip()
    if key.startswith("key::"):
        return SigningKey(fmt, program, key[5:].strip(), literal=True)
    if key.startswith("ssh-") or key.startswith(("ecdsa-", "sk-")):
        return SigningKey(fmt, program, key, literal=True)
    path = os.path.expanduser(key)
    if not os.path.isfile(path):
        raise UsageError(f"user.signingkey names {key!r}, which is not a readable key file",
                         hint="point it at an existing key (git config user.signingkey PATH), or set "
                              "signing: {enabled: false} in modelctl.yaml")
    return SigningKey(fmt, program, path)


def key_for(store: Store) -> SigningKey:
    """The key git signs with in this clone, checked by signing a probe (a UsageError when it cannot)."""
    settings, ident = store.signing_settings()
    key = signing_key(settings, ident)
    key.check()
    return key
