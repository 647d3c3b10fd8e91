"""Keys and expiry policy of the TUF repository (validated on construction, fail closed).

``TufKeys`` holds the four top-level role keys: Ed25519, one DISTINCT key per role,
threshold 1 (docs/architecture.md, key table). ``repr`` never shows key material.

``ExpiryPolicy`` says how long each role's metadata is valid when signed, and when
the repository re-signs it. Defaults, and why:

====================  ==========  ==========================================================
role                  lifetime    reasoning
====================  ==========  ==========================================================
root                  365 days    renewed online by ``TufRepository.refresh`` (version N+1,
                                  same keys) long before it lapses; clients chain-update
targets               365 days    changes only when the trust material is republished
snapshot              30 days     re-signed with every publish; bounds freeze attacks
timestamp             7 days      the freshness signal clients check on every update
====================  ==========  ==========================================================

A role is re-signed when less than ``renew_fraction`` (default one third) of its
lifetime remains: the root with ~122 days to go, the timestamp with ~2.3 days to go.
So a stack that calls ``refresh()`` at least every ``refresh_interval`` (at most one
hour) never serves expired metadata, and a stack that was down for a while renews
everything on its first refresh. Upstream's pain (a TUF root that silently expires
after months, with no renewal path) is what the root renewal exists to prevent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import ConfigError

ROOT = "root"
TARGETS = "targets"
SNAPSHOT = "snapshot"
TIMESTAMP = "timestamp"
#: The top-level roles, in the order a client loads them after root.
ROLES = (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)

MIN_LIFETIME = timedelta(hours=1)
MAX_LIFETIME = timedelta(days=3660)
MAX_REFRESH_INTERVAL = timedelta(hours=1)


def _raw_public(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class TufKeys:
    """The private keys of the four top-level roles (Ed25519, one per role)."""

    root: ed25519.Ed25519PrivateKey = field(repr=False)
    targets: ed25519.Ed25519PrivateKey = field(repr=False)
    snapshot: ed25519.Ed25519PrivateKey = field(repr=False)
    timestamp: ed25519.Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        seen: dict[bytes, str] = {}
        for role in ROLES:
            key = getattr(self, role)
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ConfigError(
                    f"TUF {role} key must be an Ed25519 private key, not {type(key).__name__}"
                )
            raw = _raw_public(key)
            if raw in seen:
                raise ConfigError(
                    f"TUF {role} key is the same key as the {seen[raw]} key; "
                    "each role needs its own key"
                )
            seen[raw] = role

    @classmethod
    def generate(cls) -> TufKeys:
        """Four fresh Ed25519 keys (for ``sigstack.stack.init`` and tests)."""
        return cls(*(ed25519.Ed25519PrivateKey.generate() for _ in ROLES))

    def for_role(self, role: str) -> ed25519.Ed25519PrivateKey:
        """The private key of ``role`` (one of ``ROLES``)."""
        if role not in ROLES:
            raise ConfigError(f"unknown TUF role {role!r}")
        key: ed25519.Ed25519PrivateKey = getattr(self, role)
        return key


@dataclass(frozen=True)
class ExpiryPolicy:
    """Metadata lifetimes per role and when to re-sign (see the module docstring)."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    snapshot: timedelta = timedelta(days=30)
    timestamp: timedelta = timedelta(days=7)
    #: re-sign a role when less than this fraction of its lifetime remains
    renew_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        for role in ROLES:
            value = getattr(self, role)
            if not isinstance(value, timedelta):
                raise ConfigError(f"TUF {role} lifetime must be a timedelta")
            if not MIN_LIFETIME <= value <= MAX_LIFETIME:
                raise ConfigError(
                    f"TUF {role} lifetime {value} is outside {MIN_LIFETIME}..{MAX_LIFETIME}"
                )
        fraction = self.renew_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ConfigError("TUF renew_fraction must be a number")
        if not 0 < fraction < 1:
            raise ConfigError(
                f"TUF renew_fraction must be strictly between 0 and 1, not {fraction}"
            )

    def lifetime(self, role: str) -> timedelta:
        """How long ``role``'s metadata is valid when signed."""
        if role not in ROLES:
            raise ConfigError(f"unknown TUF role {role!r}")
        value: timedelta = getattr(self, role)
        return value

    def renew_margin(self, role: str) -> timedelta:
        """Re-sign ``role`` once less than this remains before it expires."""
        return self.lifetime(role) * self.renew_fraction

    @property
    def refresh_interval(self) -> timedelta:
        """How often the stack should call ``TufRepository.refresh`` (at most one hour).

        A quarter of the smallest renewal margin, so several refresh attempts fall in
        every renewal window even if some fail.
        """
        smallest = min(self.renew_margin(role) for role in ROLES)
        return min(MAX_REFRESH_INTERVAL, smallest / 4)
