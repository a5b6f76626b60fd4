"""URL redaction: what of a provider URL may appear in an exception message or a log line.

Provider URLs carry personal data (`/person/jane@example.com`, `/avatar/<sha256>`) and
secrets (`?api_key=...`, `https://user:token@host`). Only a redacted form ever reaches a
message: no userinfo, no query string, no fragment, and every path segment that looks like
an email address, a phone number or a hex digest replaced by a placeholder.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

EMAIL_MASK = "{email}"
PHONE_MASK = "{phone}"
DIGEST_MASK = "{digest}"

_EMAIL = re.compile(r"@")
# Seven or more digits, optionally with the separators people type: a phone number (or a
# date, or a long numeric id: masking those too is the safe side of the trade-off).
_PHONE = re.compile(r"^\+?[\d\s().\-]*$")
_MIN_PHONE_DIGITS = 7
# MD5 is 32 hex digits, SHA-1 40, SHA-256 64: anything hex and at least MD5-long is a digest.
_DIGEST = re.compile(r"^[0-9a-fA-F]{32,}$")


def redact_segment(segment: str) -> str:
    """One path segment, or its placeholder if it looks like an identifier."""
    # Percent-decode first: `jane%40example.com` must be caught as an email too.
    plain = unquote(segment)
    if _EMAIL.search(plain):
        return EMAIL_MASK
    if _DIGEST.match(plain):
        return DIGEST_MASK
    if _PHONE.match(plain) and sum(c.isdigit() for c in plain) >= _MIN_PHONE_DIGITS:
        return PHONE_MASK
    return segment


def redact_path(url: str) -> str:
    """The URL's path with identifier-like segments masked; host, query and userinfo dropped.

    This is what exception messages carry: `/v5/person/{email}`.
    """
    path = urlsplit(url).path or "/"
    return "/".join(redact_segment(s) for s in path.split("/"))


def redact_url(url: str) -> str:
    """The URL as `scheme://host[:port]/path` with the path redacted (see `redact_path`)."""
    parts = urlsplit(url)
    # `hostname`/`port` leave the userinfo (`user:token@`) out; `netloc` would keep it.
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    try:
        port = parts.port
    except ValueError:  # a malformed port is not worth failing a message over
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    origin = f"{parts.scheme}://{netloc}" if parts.scheme else netloc
    return origin + redact_path(url)


class RedactUrlsFilter(logging.Filter):
    """Rewrite URL arguments of log records to `redact_url` form.

    httpx logs every request at INFO as `HTTP Request: GET <full URL> ...`: query string,
    userinfo and path identifiers included. This filter on the `httpx` logger keeps the
    line and drops what must not be in it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drop the record."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(str(arg)) if "://" in str(arg) else arg for arg in record.args
            )
        if "://" in str(record.msg):
            record.msg = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(record.msg))
        return True


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_FILTER = RedactUrlsFilter()


def install_log_redaction(logger_name: str = "httpx") -> None:
    """Put `RedactUrlsFilter` on `logger_name` (once; safe to call again)."""
    target = logging.getLogger(logger_name)
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)
