"""The default transport under ProviderClient: httpx requests and responses, sent by aiohttp.

httpx stays the client API (`httpx.Request` in, `httpx.Response` out, httpx exceptions, and
`httpx.MockTransport` in tests), but its own connection pool costs over a millisecond of CPU
per request and grows with concurrency (encode/httpx#3215). aiohttp's pool and C parser cost
a fraction of that, so this transport hands each request to one `aiohttp.ClientSession`:

* the pool holds at most `max_connections` connections (the client's concurrency), kept
  alive for `keepalive_expiry` seconds; no cookies, no redirects, no proxies from the
  environment, bodies returned as they came (httpx decodes `Content-Encoding`, once);
* timeouts come from `request.extensions["timeout"]`, as httpx's own transport reads them:
  `connect` bounds opening a connection, `read` each wait for the server (aiohttp arms it
  from the moment the request is sent, so a server that does not take the body is caught by
  it too: request bodies here are a batch's JSON), `pool` plus `connect` the wait for a
  connection from the pool;
* aiohttp's errors become the httpx exceptions `ProviderClient` classifies::

      connect timeout, pool wait ─► ConnectTimeout       ┐ TimeoutException: "timeout"
      read timeout ──────────────► ReadTimeout           ┘
      refused, DNS, TLS ─────────► ConnectError          ┐
      reset mid-request ─────────► ReadError             │ NetworkError / RemoteProtocolError:
      closed without an answer,  ► RemoteProtocolError   │ "connect_error"
      broken status line/headers,                        │
      body cut short                                     ┘
      scheme other than http(s) ─► UnsupportedProtocol   ┐ "invalid_request"
      malformed URL or header ───► InvalidURL /          │
                                   LocalProtocolError    ┘

  Messages name the failure class only: aiohttp's own messages carry the URL, and the
  original exception is not chained (`from None`).

Where httpx discards a kept-alive connection the server has closed before sending on it,
aiohttp sends, sees the connection close without an answer, and sends an idempotent request
(GET) once more on a new connection (RFC 9112 §9.3.1). Either way a stale connection is not a
failed attempt; a server that closes every connection unanswered sees each GET twice before
the client counts one `connect_error`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import httpx
import yarl

_SCHEMES: Final = frozenset({"http", "https"})
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_MAX_HEADER_BYTES: Final = 16 * 1024
"""Longest status line or header aiohttp accepts; h11 (httpx's parser) allows 16 KiB too."""


def _ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx verifies against (certifi's), so https trusts the same servers.

    Built once per session (tens of milliseconds: once per provider and run)."""
    import certifi  # noqa: PLC0415 - httpx's own dependency; only needed for https

    return ssl.create_default_context(cafile=certifi.where())


def _client_timeout(timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    connect = timeouts.get("connect")
    pool = timeouts.get("pool")
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None or pool is None else pool + connect,
        sock_connect=connect,
        sock_read=timeouts.get("read"),
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncBaseTransport` over one aiohttp session (see the module docstring).

    The session is opened on first use, on the running event loop; a transport used from a
    later event loop opens a new one there (connections never outlive their loop).
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 5.0) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.max_connections = max_connections
        """Connections open at once, at most (the pool's bound)."""
        self.keepalive_expiry = keepalive_expiry
        """Seconds an idle connection is kept for the next request."""
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One ClientTimeout per distinct timeout setting: a client sends them all alike.
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self.max_connections})"

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                keepalive_timeout=self.keepalive_expiry,
                ssl=_ssl_context(),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                # httpx set every header it wanted; aiohttp must add none of its own.
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                max_line_size=_MAX_HEADER_BYTES,
                max_field_size=_MAX_HEADER_BYTES,
            )
            self._session, self._loop = session, loop
        return session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        key = tuple(sorted(timeouts.items()))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = _client_timeout(timeouts)
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, read the whole body, return it as an unread `httpx.Response`."""
        url = request.url
        if url.scheme not in _SCHEMES:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        session = self._session_now()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        # httpx has already percent-encoded the URL: yarl must not encode it again.
        target = yarl.URL(str(url), encoded=True)
        try:
            async with session.request(
                request.method,
                target,
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=self._timeout(request),
            ) as answer:
                body = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=list(answer.raw_headers),
                    stream=httpx.ByteStream(body),
                    request=request,
                    extensions={
                        "http_version": b"HTTP/1.1",
                        "reason_phrase": (answer.reason or "").encode("latin-1", "replace"),
                    },
                )
        except aiohttp.ConnectionTimeoutError:
            raise httpx.ConnectTimeout("connect timeout", request=request) from None
        except TimeoutError:  # SocketTimeoutError and any other read wait
            raise httpx.ReadTimeout("read timeout", request=request) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(type(exc).__name__, request=request) from None
        except aiohttp.NonHttpUrlClientError:
            raise httpx.UnsupportedProtocol("unsupported scheme", request=request) from None
        except aiohttp.InvalidURL:
            raise httpx.InvalidURL("invalid URL") from None
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientResponseError,
            aiohttp.ClientPayloadError,
        ) as exc:
            raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(type(exc).__name__, request=request) from None
        except ValueError as exc:  # a header aiohttp refuses to write (CR/LF in a value)
            raise httpx.LocalProtocolError(type(exc).__name__, request=request) from None

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
