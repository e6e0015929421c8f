"""One user-facing error type per condition, each carrying its exit code (DESIGN §7)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_VERDICT = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_DEPENDENCY = 4
EXIT_INTERRUPTED = 130


class ModelctlError(Exception):
    """Base error: its message is one line that says what to do next."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        # one line, whatever the cause put into it
        return " ".join(text.split("\n"))


class OperatorWarning(UserWarning):
    """Something the person running a command should know that does not stop it (the CLI prints
    `warning: ...` on stderr, once per process)."""


class UsageError(ModelctlError):
    """Bad input or usage; nothing was written."""

    exit_code = EXIT_USAGE


class InvalidName(UsageError):
    """A model name, version or stage outside the allow-lists."""


class ValidationError(UsageError):
    """A file does not match its schema or a registry rule."""


class TransitionError(UsageError):
    """The lifecycle does not allow this move."""


class NotFound(UsageError):
    """A model, version or file that does not exist."""


class Conflict(ModelctlError):
    """The registry changed underneath; the precondition no longer holds."""

    exit_code = EXIT_CONFLICT


class LockTimeout(Conflict):
    """Another modelctl process holds the clone's lock for too long."""


class DependencyError(ModelctlError):
    """An outside dependency (remote, metrics endpoint) failed past its limits."""

    exit_code = EXIT_DEPENDENCY


class RemoteError(DependencyError):
    """The git remote is unreachable or refused the push."""


class MetricsError(DependencyError):
    """The metrics endpoint is unreachable or answers garbage."""


class VerdictFailed(ModelctlError):
    """A negative verdict: gate failed, check found problems, watch rolled back."""

    exit_code = EXIT_VERDICT
