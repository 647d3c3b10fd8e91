"""Time, one way: an injectable clock returning aware UTC datetimes, and its formats.

Every component that needs "now" takes a ``clock: Clock`` (default ``utcnow``) so
expiry logic is tested by moving the clock, never by sleeping. A naive datetime is
a programming error here (its zone is unknown), so ``utc()`` refuses it rather than
guessing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]

RFC3339_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def utc(ts: dt.datetime) -> dt.datetime:
    """``ts`` converted to UTC; a naive datetime raises ``TypeError``."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise TypeError("naive datetime: sigstack times must be timezone-aware (use utcnow())")
    return ts.astimezone(dt.UTC)


def whole_seconds(ts: dt.datetime) -> dt.datetime:
    """``ts`` in UTC, truncated to whole seconds (certificate and metadata times)."""
    return utc(ts).replace(microsecond=0)


def rfc3339(ts: dt.datetime) -> str:
    """``2026-11-22T05:02:00Z``: the form trusted roots, signing configs and manifests use."""
    return utc(ts).strftime(RFC3339_SECONDS)


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse the ``rfc3339`` form back into an aware datetime (ValueError if malformed)."""
    return dt.datetime.strptime(text, RFC3339_SECONDS).replace(tzinfo=dt.UTC)
