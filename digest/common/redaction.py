"""No secret in a log line, a message or an alert: URLs and credentials redacted.

- :func:`redact_url`: a URL without its user-info and without the values of query
  parameters whose names look secret (:func:`is_secret_name`), for every message,
  log line, incident and ``feed_state`` key.
- :func:`redact_text`: every ``http(s)://`` / ``ftp://`` URL inside free text passed
  through :func:`redact_url`, and ``Authorization: Bearer …`` / ``Bearer …`` values
  starred.
- :class:`RedactSecrets`: a :class:`logging.Filter` doing :func:`redact_text` on each
  record's final message (and on its traceback text); :func:`install` attaches it
  to the root logger's handlers and to the loggers of the libraries that log URLs
  (httpx logs every request's full URL at INFO).

Imports nothing from the rest of the package, so any module (the feed's HTTP client
included) may use it without an import cycle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"

# Query parameter names whose values are secrets. The explicit names and suffixes
# are the contract; the substring pattern (kept from the first version, so the
# feed_state keys it produced stay the same) also catches X-Amz-Signature,
# X-Goog-Credential, sessionid, passcode and the like.
SECRET_NAMES = frozenset(
    {
        "token",
        "key",
        "api_key",
        "apikey",
        "access_token",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "auth",
    }
)
SECRET_SUFFIXES = ("_token", "_key", "_secret")
_SECRET_PART = re.compile(r"token|key|secret|pass|pwd|sig|auth|session|credential|code", re.I)
# "a=1;token=x": a value that hides more pairs behind ';' (parse_qsl splits on '&' only).
_INNER_PAIR = re.compile(r"(^|;)([^;=]*)=([^;]*)")

_URL_IN_TEXT = re.compile(r"\b(?:https?|ftp)://[^\s'\"<>`\\]+", re.I)
_URL_TAIL = ".,;:!?)]}"  # punctuation after a URL in a sentence, not part of it
_AUTHORIZATION = re.compile(
    r"(\b(?:proxy-)?authorization\b(?:['\"]\s*[:,]|\s*[:=])\s*(?:(?-i:b)['\"]|['\"])?)"
    r"((?:bearer|basic|digest|token|apikey)\s+)?"
    r"([^\s'\",;)}\]]+)",
    re.I,
)
_BEARER = re.compile(r"(\bbearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)", re.I)
# uvicorn.access records carry the request target as an argument: "/path?query".
_ACCESS_LOGGER = "uvicorn.access"
INSTALL_ON = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "apscheduler")


def is_secret_name(name: str) -> bool:
    """True when a query parameter called ``name`` should not be shown."""
    lowered = name.strip().lower()
    return (
        lowered in SECRET_NAMES
        or lowered.endswith(SECRET_SUFFIXES)
        or _SECRET_PART.search(lowered) is not None
    )


def redact_url(url: str) -> str:
    """``url`` with user-info and secret-looking query values replaced by ``***``.

    The fragment is dropped. Never raises: a URL that cannot be parsed is cut to its
    scheme, or to "?".
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://?" if "://" in url else "?"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _redact_query(parts.query), ""))


def redact_target(target: str) -> str:
    """A request target (``/path?query``, as access logs show it) with secret-looking
    query values replaced; an absolute URL goes through :func:`redact_url`."""
    if "://" in target.partition("?")[0]:
        return redact_url(target)
    path, mark, query = target.partition("?")
    return path + mark + _redact_query(query.partition("#")[0]) if mark else target


def _redact_query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, _redact_value(k, v)) for k, v in pairs], safe="*")


def _redact_value(name: str, value: str) -> str:
    if value and is_secret_name(name):
        return REDACTED
    if ";" not in value:
        return value

    def inner(match: re.Match[str]) -> str:
        lead, key, val = match.groups()
        return f"{lead}{key}={REDACTED if val and is_secret_name(key) else val}"

    return _INNER_PAIR.sub(inner, value)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`) and the value of
    every ``Authorization: <scheme> <credential>`` or ``Bearer <token>`` starred."""
    text = _URL_IN_TEXT.sub(_redact_match, text)
    text = _AUTHORIZATION.sub(lambda m: f"{m[1]}{m[2] or ''}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m[1]}{REDACTED}", text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(_URL_TAIL)
    return redact_url(stripped) + url[len(stripped) :]


class RedactSecrets(logging.Filter):
    """Rewrite a record whose final message (or traceback) holds a secret.

    The message is formatted with its arguments, redacted with :func:`redact_text`
    and, when that changed anything, stored as ``msg`` with ``args = None``. Records
    of ``uvicorn.access`` keep their argument tuple (uvicorn's access formatter
    unpacks it): each argument is redacted in place instead. A traceback holding a
    secret is kept as redacted text (``exc_text``) and ``exc_info`` is cleared.
    Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
            if isinstance(record.msg, str):
                record.msg = redact_text(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a broken format: logging reports it, with no args shown
                message = str(record.msg)
                record.args = None
            clean = redact_text(message)
            if clean != message:
                record.msg, record.args = clean, None
        self._traceback(record)
        return True

    @staticmethod
    def _traceback(record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            clean = redact_text(text)
            if clean != text:
                record.exc_info, record.exc_text = None, clean
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)


def _redact_arg(value: object) -> object:
    if isinstance(value, str):
        return redact_text(redact_target(value) if value.startswith("/") else value)
    return value


_FILTER = RedactSecrets()


def install(logger: logging.Logger | None = None) -> RedactSecrets:
    """Attach the filter to ``logger``'s handlers (default: the root logger's) and to
    the loggers :data:`INSTALL_ON` and their handlers. Idempotent.

    Call it after the handlers are set up (``logging.basicConfig``). Handlers added
    later are not covered, but the named loggers' own filter still is: a library
    that replaces its handlers (uvicorn's ``dictConfig``) keeps it.
    """
    target = logger if logger is not None else logging.getLogger()
    if target is not logging.getLogger():
        _attach([target])
    _attach(target.handlers)
    for name in INSTALL_ON:
        named = logging.getLogger(name)
        _attach([named, *named.handlers])
    return _FILTER


def guard(name: str) -> None:
    """Attach the filter to the logger ``name`` itself (idempotent): what a module
    that hands secrets to a library calls for that library's logger."""
    _attach([logging.getLogger(name)])


def _attach(targets: Iterable[logging.Filterer]) -> None:
    for target in targets:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(_FILTER)
