"""What both online services do the same way at the HTTP edge: bodies read within a limit and
a time, headers within a time, one JSON policy, bearer tokens read from the environment or a
file."""

import asyncio
import hmac
import logging
import os

from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from transforms.credit.requests import RequestError, load_json

LOGGER = logging.getLogger(__name__)


class HttpError(Exception):
    """An answer other than 200 decided at the edge: its status and a message in words."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


HEADER_SECS = 10.0
BODY_SECS = 10.0


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a time limit on a request's headers, which uvicorn
    has none of (its keep-alive timer runs only between requests): a client that opens a
    connection and sends its headers slowly, or none, is disconnected after ``HEADER_SECS``
    instead of holding the connection. Use it as ``uvicorn.Config(..., http=...)``."""

    header_secs = HEADER_SECS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_secs, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting = self.cycle is None or self.cycle.response_complete
        if not waiting and self._header_timer is not None:
            self._header_timer.cancel()  # the headers are in: the app times the body
            self._header_timer = None
        elif waiting and self._header_timer is None:  # the next request on this connection
            self._header_timer = self.loop.call_later(self.header_secs, self._headers_too_slow)

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if (self.cycle is None or self.cycle.response_complete) and \
                not self.transport.is_closing():
            LOGGER.warning("closed a connection whose request headers took over %g s",
                           self.header_secs)
            self.transport.close()


async def read_json_body(request: Request, limit: int, seconds: float | None = None
                         ) -> tuple[bytes, object]:
    """The body and its JSON, refused before it is buffered past ``limit`` or read for longer
    than ``seconds`` (default ``BODY_SECS``).

    A declared Content-Length over the limit is refused unread; a chunked body is counted as
    it arrives and refused at the first byte past the limit. The pipelines' strict parser
    decides what JSON is (duplicate keys, NaN, nesting and 5,000-digit integers refused).

    Raises:
        HttpError: 415 (not ``application/json``), 413 (too long), 408 (too slow), 400 (not
            JSON).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HttpError(415, f"Content-Type must be application/json, got "
                             f"{kind[:40] or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(413, f"a body of {declared[:20]} bytes exceeds the limit of {limit}")
    chunks, size, seconds = [], 0, seconds or BODY_SECS

    async def read():
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        raise HttpError(408, f"the body took over {seconds:g} s to arrive ({size} bytes "
                             f"read)") from None
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the body is not UTF-8") from None
    try:
        return raw, load_json(text)
    except RequestError as error:
        raise HttpError(400, str(error)) from None


def bearer_ok(request: Request, token: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (always, without one)."""
    if not token:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def read_token(what: str, env: str, file: str | None, given: str | None) -> str | None:
    """A bearer token from a file (``--<x>_token_file``), else the environment variable, else
    the command line (visible to every user in ``ps``: a warning says so).

    Raises:
        ValueError: the file cannot be read or is empty.
    """
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as error:
            raise ValueError(f"the {what} token file {file} cannot be read: "
                             f"{error.strerror or error}") from None
        if not token:
            raise ValueError(f"the {what} token file {file} is empty")
        return token
    if os.environ.get(env):
        return os.environ[env]
    if given:
        LOGGER.warning("the %s token was given on the command line, where `ps` shows it to "
                       "every user of this machine: prefer $%s or a token file", what, env)
    return given or None
