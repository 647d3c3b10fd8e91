"""sigstack's certificate-transparency log: RFC 6962 submissions on the shared log engine.

Modules:

* :mod:`.config`     ``CTLogConfig`` (origin, ECDSA P-256 key, accepted roots, limits);
  fails closed.
* :mod:`.submission` chain validation and the RFC 6962 / static-ct-api entry encodings
  (pure).
* :mod:`.sthnote`    the RFC 6962 note signer/verifier (c2sp.org/static-ct-api) that
  signs the engine's checkpoints, the shared monotonic millisecond clock, and the
  checkpoint -> ``get-sth`` conversion.
* :mod:`.service`    ``CTLogService`` and the stack's entry points ``create_ctlog``
  (once, at init) and ``open_ctlog`` (every start).
* :mod:`.api`        ``create_app(service)``: ``/ct/v1/add-chain``, ``add-pre-chain``,
  ``get-roots``, ``get-sth``, ``get-sth-consistency``, and the static-ct-api read
  path (``/checkpoint``, ``/tile/...``, ``/tile/data/...``, ``/issuer/...``).

The names below are imported lazily so that ``config``, ``submission`` and
``sthnote`` stay importable without the log engine.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CTLogConfig",
    "CTLogService",
    "create_app",
    "create_ctlog",
    "open_ctlog",
    "origin_from_url",
]


def __getattr__(name: str) -> Any:
    if name in ("CTLogConfig", "origin_from_url"):
        from sigstack.services.ctlog import config

        return getattr(config, name)
    if name in ("CTLogService", "create_ctlog", "open_ctlog"):
        from sigstack.services.ctlog import service

        return getattr(service, name)
    if name == "create_app":
        from sigstack.services.ctlog.api import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
