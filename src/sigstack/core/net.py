"""Network names, one way: which hosts are loopback, and what an email address looks like.

Pure and I/O-free: nothing here resolves a name. Every service and the stack use these
two checks, so "loopback" and "a valid email" mean the same thing everywhere.

* :func:`is_loopback_host` is true exactly for an IPv4 address in ``127.0.0.0/8``, the
  IPv6 address ``::1`` and the name ``localhost`` (any case). Other names (even ones
  that resolve to loopback, such as ``127.0.0.1.nip.io`` or ``foo.localhost``),
  IPv4-mapped IPv6 addresses and abbreviated forms like ``127.1`` are NOT loopback:
  a name is only as local as its resolver, and this check must not depend on one.
* :func:`check_email` accepts a deliberately plain address syntax (an RFC 5322
  dot-atom local part of at most 64 characters, an LDH domain of at most 253, 254 in
  all). Quoted local parts, IP-literal domains and comments are refused: no CI identity
  needs them, and Fulcio puts the address verbatim into a certificate SAN. It raises
  ``InvalidRequest`` (a request field); callers verifying a credential re-raise their own
  error type.
"""

from __future__ import annotations

import argparse
import ipaddress
import re

from sigstack.core.errors import InvalidRequest

_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")

MAX_EMAIL_LENGTH = 254
_MAX_LOCAL_PART = 64
_MAX_DOMAIN = 253
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a URL's hostname, without brackets or port) is loopback."""
    if not isinstance(host, str) or not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _LOOPBACK_V4
    return ip.scope_id is None and ip == _LOOPBACK_V6


def check_email(address: str) -> str:
    """``address`` if it is a plain ``local@domain`` address; else ``InvalidRequest``."""
    if not isinstance(address, str) or not address:
        raise InvalidRequest("email must be a non-empty string")
    if len(address) > MAX_EMAIL_LENGTH:
        raise InvalidRequest(f"email is longer than {MAX_EMAIL_LENGTH} characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidRequest(f"email {address!r} is not of the form local@domain")
    if len(local) > _MAX_LOCAL_PART or _LOCAL_PART.fullmatch(local) is None:
        raise InvalidRequest(f"email {address!r} has an invalid local part")
    labels = domain.split(".")
    if len(domain) > _MAX_DOMAIN or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InvalidRequest(f"email {address!r} has an invalid domain")
    return address


def port_number(value: str) -> int:
    """An ``argparse`` type: a TCP port, 1 to 65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a valid port (1-65535)")
    return port
