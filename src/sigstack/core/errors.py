"""Typed errors shared by every layer of sigstack.

Rules (see docs/architecture.md):

* A check raises one of these; it never returns a bool.
* The message is written for the person who has to act on it: it says what was
  wrong and, where it helps, what to do. It never contains secret material
  (tokens, private keys, passphrases).
* Boundaries (HTTP handlers, storage drivers, the CLI) turn foreign exceptions
  into these, so callers handle one family of errors.

The HTTP layer maps each class to a status code with ``http_status``; nothing in
``core`` or ``log`` knows about HTTP beyond that attribute.
"""

from __future__ import annotations

from pathlib import Path


class SigstackError(Exception):
    """Base class of every error sigstack raises on purpose.

    ``headers`` are HTTP headers the answer to this error must carry (``Retry-After``
    for ``Overloaded``, ``Cache-Control`` for a 404 that must not be cached...).
    """

    http_status: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return self.message


# --- request and verification failures (client's fault) -----------------------------------


class InvalidRequest(SigstackError):
    """The request is malformed or violates a documented limit (HTTP 400)."""

    http_status = 400


class VerificationError(SigstackError):
    """A signature, proof, token or certificate did not verify.

    Raised by core checks. Services usually surface it as 400 (bad entry) or 401
    (bad credential); the subclasses below carry the right status.
    """

    http_status = 400


class AuthenticationError(VerificationError):
    """The caller's credential (an OIDC token) was missing or invalid (HTTP 401)."""

    http_status = 401


class NotFound(SigstackError):
    """The named resource does not exist (HTTP 404)."""

    http_status = 404


class Conflict(SigstackError):
    """The request conflicts with existing state (HTTP 409)."""

    http_status = 409


class PayloadTooLarge(InvalidRequest):
    """The request body exceeds the documented size limit (HTTP 413)."""

    http_status = 413


# --- server-side conditions -------------------------------------------------------------


class Overloaded(SigstackError):
    """The server is shedding load; retry after ``retry_after`` seconds (HTTP 503)."""

    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class UpstreamError(SigstackError):
    """A service this one depends on failed or answered nonsense (HTTP 502)."""

    http_status = 502


class Unavailable(SigstackError):
    """The service is not ready or is shutting down (HTTP 503)."""

    http_status = 503


# --- configuration and persistent state -------------------------------------------------


class ConfigError(SigstackError):
    """Configuration is missing, malformed or unsafe. Configuration fails closed."""


class StateError(SigstackError):
    """Persistent state is missing, unreadable, corrupt or inconsistent.

    Always names the file (or directory) at fault. sigstack never regenerates
    trust material to paper over one of these.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class StorageError(SigstackError):
    """A storage backend failed to read or write (the log may still be consistent)."""


class LogIntegrityError(StateError):
    """Stored log data does not add up: a proof, root or checkpoint disagrees.

    The engine refuses to serve or sign over such state.
    """
