"""TUF repository distributing sigstack's root of trust.

``TufRepository`` (repository.py) creates, verifies, publishes and keeps fresh a
consistent-snapshot TUF repository on disk, signed with the four ``TufKeys`` under
an ``ExpiryPolicy`` (config.py); ``create_app`` (api.py) serves it read-only to
clients (sigstore-python, sigstore-js, cosign, python-tuf).
"""

from sigstack.services.tuf.api import create_app
from sigstack.services.tuf.config import ROLES, ExpiryPolicy, TufKeys
from sigstack.services.tuf.repository import RepositoryStatus, RoleStatus, TufRepository

__all__ = [
    "ROLES",
    "ExpiryPolicy",
    "RepositoryStatus",
    "RoleStatus",
    "TufKeys",
    "TufRepository",
    "create_app",
]
