"""What both online services do the same way at the HTTP edge: bodies read within a limit,
one JSON policy, bearer tokens read from the environment or a file."""

import hmac
import logging
import os

from starlette.requests import Request

from transforms.credit.requests import RequestError, load_json

LOGGER = logging.getLogger(__name__)


class HttpError(Exception):
    """An answer other than 200 decided at the edge: its status and a message in words."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_json_body(request: Request, limit: int) -> tuple[bytes, object]:
    """The body and its JSON, refused before it is buffered past ``limit``.

    A declared Content-Length over the limit is refused unread; a chunked body is counted as
    it arrives and refused at the first byte past the limit. The pipelines' strict parser
    decides what JSON is (duplicate keys, NaN, nesting and 5,000-digit integers refused).

    Raises:
        HttpError: 415 (not ``application/json``), 413 (too long), 400 (not JSON).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HttpError(415, f"Content-Type must be application/json, got "
                             f"{kind[:40] or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(413, f"a body of {declared[:20]} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
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
