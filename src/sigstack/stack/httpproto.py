"""The HTTP/1.1 protocol every sigstack server speaks: uvicorn's httptools one, bounded.

httptools (llhttp, in C) parses requests several times faster than h11, which was a
quarter of Rekor's CPU per entry at full load. Unlike h11 it puts no limit on a
request head, and uvicorn puts no deadline on receiving one, so this subclass adds both:

* **Head size**: a request line plus headers larger than :data:`MAX_HEAD_BYTES` is
  answered ``431 Request Header Fields Too Large`` and the connection closed; the
  parser never buffers more than that plus two reads (one client cannot grow the
  process by sending an endless header).
* **Head deadline**: a request head must arrive within :data:`HEAD_TIMEOUT` seconds of
  the connection opening or of the previous request ending; a connection that
  dawdles (slowloris) is answered ``408 Request Timeout`` and closed. While a
  response is still being produced the deadline does not apply (a pipelined
  request waits for it legitimately).

A refused connection is closed gracefully: the answer is written, the sending side
shut down, and whatever the client still sends is discarded for at most
:data:`LINGER` seconds before the socket closes, so the client reads the answer
instead of a connection reset.

Bodies are not affected: each route bounds what it reads (``services.http.read_body``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) accepted, in bytes."""
HEAD_TIMEOUT = 20.0
"""Seconds a client has to send a complete request head."""
LINGER = 2.0
"""Seconds a refused connection's input is discarded before it closes."""

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head (see the module docstring)."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # None while no request head is being read
        self._head_began = False  # a new head began during the current feed
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None  # loop time by which the head must arrive
        self._refused = False  # answered 408/431: input is discarded until close

    # -- the head's state ------------------------------------------------------------

    def _begin_head(self) -> None:
        self._head_bytes = 0
        self._head_began = True
        self._restart_deadline()

    def _restart_deadline(self) -> None:
        """A whole ``head_timeout`` from now; arms the timer unless it already runs."""
        self._head_deadline = self.loop.time() + self.head_timeout
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timer_due)

    def _end_head(self) -> None:
        # The timer stays armed: when it fires with no head under way it does nothing.
        # (Arming and cancelling a timer for every request costs more than the request's
        # parsing, and leaves the loop's heap full of cancelled timers.)
        self._head_bytes = None
        self._head_deadline = None

    def _head_timer_due(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport.is_closing():
            return
        remaining = deadline - self.loop.time()
        if remaining > 0:  # a later head than the one the timer was armed for
            self._head_timer = self.loop.call_later(remaining, self._head_timer_due)
            return
        if self._busy():  # a pipelined request waits for the current response
            self._restart_deadline()
            return
        self._reject(408)

    def _busy(self) -> bool:
        """True while a response is being produced on this connection."""
        return self.cycle is not None and not self.cycle.response_complete

    def _reject(self, status: int) -> None:
        self._end_head()
        if self.transport.is_closing():
            return
        if self._busy() or not self.transport.can_write_eof():
            self.transport.close()
            return
        reason = _REASONS[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(reason), reason)
        )
        self.transport.write_eof()
        self._refused = True
        self.loop.call_later(LINGER, self.transport.close)

    # -- uvicorn's hooks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_began = False
        super().data_received(data)
        # Bytes of a head that began during this feed cannot be told apart from the
        # previous request's: they are counted from the next read on, so the parser
        # holds at most the limit plus two reads.
        if self._head_bytes is not None and not self._head_began:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._reject(431)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.transport.is_closing():
            self._begin_head()
