"""core.net: the one loopback test and the one email check the whole codebase uses."""

from __future__ import annotations

import pytest

from sigstack.core.errors import InvalidRequest
from sigstack.core.net import check_email, is_loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("", False),
        ("0.0.0.0", False),  # noqa: S104
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped: not what a URL host means by loopback
        ("fe80::1%lo", False),
        ("::1%lo", False),
        ("127.1", False),
        ("0177.0.0.1", False),
        ("[::1]", False),  # a URL's hostname comes without brackets
        ("127.0.0.1.nip.io", False),
        ("foo.localhost", False),
        ("localhost.", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_check_email_returns_the_address_or_names_the_problem() -> None:
    assert check_email("dev@example.com") == "dev@example.com"
    with pytest.raises(InvalidRequest, match="local part"):
        check_email("a..b@example.com")
    with pytest.raises(InvalidRequest, match="domain"):
        check_email("a@exa_mple.com")
    with pytest.raises(InvalidRequest, match="local@domain"):
        check_email("example.com")
    with pytest.raises(InvalidRequest, match="non-empty string"):
        check_email(5)  # type: ignore[arg-type]
