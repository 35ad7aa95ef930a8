"""uvicorn's HTTP/1.1 protocol (h11) with a header read timeout.

uvicorn times out only idle keep-alive connections (timeout_keep_alive, armed after a response): a connection that
sends nothing, or stops in the middle of its headers, stays open for good, and so does one that keeps trickling a body
no route reads. Here the server closes a connection that has not completed a request's headers within the timeout of
its first byte (or of the connection opening); the body of a predict request has its own timeout in the app
(serving.app.read_body), which answers 408.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`http=`)."""
    return type("H11HeaderTimeoutProtocol", (_HeaderTimeout,), {"header_timeout_s": seconds})


class _HeaderTimeout(H11Protocol):
    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._reading_headers():
            self._arm()  # from the first byte of a request (a keep-alive connection's idle wait is uvicorn's own)
        super().data_received(data)
        if not self._reading_headers():
            self._disarm()  # the request is the app's now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reading_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
