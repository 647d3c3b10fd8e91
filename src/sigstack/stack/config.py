"""Network settings of a stack: where each service listens and the URL clients use.

Every service has its own base URL (``http://HOST:PORT``). Ports default to a block
starting at 7700 and can be moved as a block (``--base-port``) or one by one
(``--rekor-port``...). The settings are saved in ``DIR/stack.json`` so that a plain
re-run reuses them; a flag given explicitly on a later run overrides the saved
value and the stack then publishes new targets with the new URLs (keys never change).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigstack.core.encoding import json_document
from sigstack.core.errors import ConfigError, StateError
from sigstack.fsutil import atomic_write, read_file

# Start order: each service only depends on services before it.
SERVICES = ("oidc", "ctlog", "fulcio", "rekor", "tsa", "tuf")
PORT_OFFSETS = {"tuf": 0, "oidc": 1, "fulcio": 2, "ctlog": 3, "rekor": 4, "tsa": 5}
DEFAULT_BASE_PORT = 7700
DEFAULT_HOST = "127.0.0.1"
TSA_PATH = "/api/v1/timestamp"


def _check_host(host: str) -> str:
    if not host or any(c in host for c in "/?#@ ") or host.startswith("["):
        raise ConfigError(f"invalid host {host!r}: give a hostname or an IP address")
    return host


def _check_port(service: str, port: Any) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"invalid port {port!r} for {service}: use 1-65535")
    return port


@dataclass(frozen=True)
class Endpoints:
    """Host and per-service ports, and the URLs derived from them."""

    host: str
    ports: Mapping[str, int]

    def __post_init__(self) -> None:
        _check_host(self.host)
        missing = [s for s in SERVICES if s not in self.ports]
        if missing:
            raise ConfigError(f"no port configured for {', '.join(missing)}")
        for service in SERVICES:
            _check_port(service, self.ports[service])
        seen: dict[int, str] = {}
        for service in SERVICES:
            port = self.ports[service]
            if port in seen:
                raise ConfigError(f"{service} and {seen[port]} are both configured on port {port}")
            seen[port] = service

    @classmethod
    def default(cls, host: str = DEFAULT_HOST, base_port: int = DEFAULT_BASE_PORT) -> Endpoints:
        if not 1 <= base_port <= 65535 - max(PORT_OFFSETS.values()):
            raise ConfigError(f"invalid base port {base_port}")
        return cls(host, {s: base_port + PORT_OFFSETS[s] for s in SERVICES})

    @property
    def url_host(self) -> str:
        """The host as written in a URL (IPv6 literals bracketed)."""
        try:
            if ipaddress.ip_address(self.host).version == 6:
                return f"[{self.host}]"
        except ValueError:
            pass
        return self.host

    def url(self, service: str) -> str:
        """The base URL clients use for ``service`` (no trailing slash)."""
        return f"http://{self.url_host}:{self.ports[service]}"

    @property
    def tsa_url(self) -> str:
        """The timestamping URL as clients call it (the signing config lists this)."""
        return self.url("tsa") + TSA_PATH

    def with_overrides(
        self, host: str | None, base_port: int | None, ports: Mapping[str, int | None]
    ) -> Endpoints:
        """These settings with explicitly given flags applied."""
        new_host = host if host is not None else self.host
        new_ports = dict(self.ports)
        if base_port is not None:
            new_ports = dict(Endpoints.default(new_host, base_port).ports)
        for service, port in ports.items():
            if port is not None:
                new_ports[service] = port
        return Endpoints(new_host, new_ports)

    def to_json(self) -> bytes:
        return json_document({"host": self.host, "ports": dict(self.ports)})

    @classmethod
    def load(cls, path: Path) -> Endpoints:
        data = read_file(path, what="network settings")
        try:
            doc = json.loads(data)
            return cls(doc["host"], {s: doc["ports"][s] for s in SERVICES})
        except ConfigError as exc:
            raise StateError(path, exc.message) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(path, f"network settings are corrupt: {exc}") from exc

    def save(self, path: Path) -> None:
        atomic_write(path, self.to_json(), 0o644)
