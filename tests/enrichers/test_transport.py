"""AiohttpTransport, the default transport under ProviderClient, against real servers.

Every failure a server or the network can produce must end in the same reason code as it did
over httpx's own transport: each protocol-level case runs through the ProviderClient twice,
once over `AiohttpTransport` and once over `httpx.AsyncHTTPTransport`, and the outcomes must
agree. The servers here are raw sockets on 127.0.0.1, so that they can misbehave in ways no
HTTP framework would (garbage status lines, bodies cut short, connections that never open);
the fault knobs of the local provider server are covered by test_server.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest

from enrichers.base import Billing, ProviderError, ProviderSettings, RateLimitSettings
from enrichers.http.client import ProviderClient
from enrichers.http.transport import AiohttpTransport
from enrichers.testing.server import ProviderServer

T = TypeVar("T")
EMAIL = "jane.doe@example.com"
SECRET = "SECRET-TOKEN"

Transport = Callable[[int], httpx.AsyncBaseTransport]
TRANSPORTS = [
    pytest.param(lambda n: AiohttpTransport(max_connections=n), id="aiohttp"),
    pytest.param(
        lambda n: httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
        ),
        id="httpx",
    ),
]


class _Handler(socketserver.BaseRequestHandler):
    """Serves requests on one connection until it closes; the path picks the behaviour."""

    server: _Server

    def handle(self) -> None:
        self.server.connections += 1
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            headers = {
                k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                buffer += self.request.recv(65536)
            buffer = buffer[length:]
            self.server.seen.append((path, headers))
            if not self._answer("/" + path.split("/")[1]):  # the first segment decides
                return

    def _send(self, status: str, body: bytes, *extra: str) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
        self.request.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _answer(self, path: str) -> bool:
        """Answer one request; False closes the connection."""
        ok = json.dumps({"ok": True}).encode()
        if path == "/garbage":
            self.request.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            return False
        if path == "/close":
            return False
        if path == "/short":
            self.request.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok": tr')
            return False
        if path == "/slow":
            time.sleep(1.0)
        if path == "/gzip":
            self._send("200 OK", gzip.compress(ok), "Content-Encoding: gzip")
        elif path == "/redirect":
            self._send("302 Found", b"", "Location: /ok")
        elif path == "/cookie":
            self._send("200 OK", ok, "Set-Cookie: session=abc; Path=/")
        else:
            self._send("200 OK", ok, "Content-Type: application/json")
        return True


class HangupTolerant(socketserver.BaseServer):
    """A test server that does not print a traceback when a client hangs up mid-answer.

    Clients under test give up on purpose (timeouts, open breakers); the server thread then
    meets a broken pipe, often after the test that caused it has ended, where its output
    would land in the middle of another test's report.
    """

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server(HangupTolerant, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.seen: list[tuple[str, dict[str, str]]] = []


@contextmanager
def raw_server() -> Iterator[tuple[str, _Server]]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(**overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {
        "name": "acme",
        "type": "http_json",
        "timeout_seconds": 0.5,
        "connect_timeout_seconds": 0.3,
        "retries": 0,
        "backoff_seconds": 0.0,
        "rate_limit": RateLimitSettings(per_second=1000, burst=1000),
    }
    values.update(overrides)
    return ProviderSettings(**values)


def with_client(
    transport: Transport,
    go: Callable[[ProviderClient], Coroutine[Any, Any, T]],
    **overrides: Any,
) -> T:
    s = settings(**overrides)

    async def run() -> T:
        async with ProviderClient(
            s, billing=Billing.PER_CALL, transport=transport(s.concurrency)
        ) as client:
            return await go(client)

    return asyncio.run(run())


def outcome(transport: Transport, url: str, **overrides: Any) -> int | str:
    """Status of the answer, or the reason code of the ProviderError."""

    async def go(client: ProviderClient) -> int | str:
        try:
            return (await client.request("GET", url)).status_code
        except ProviderError as exc:
            return exc.reason

    return with_client(transport, go, **overrides)


@contextmanager
def unopenable() -> Iterator[str]:
    """A port whose accept queue is full: the kernel drops new SYNs, connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- every failure keeps its reason code -----------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/ok", 200, id="ok"),
        pytest.param("/garbage", "connect_error", id="not-http"),
        pytest.param("/close", "connect_error", id="closed-without-answer"),
        pytest.param("/short", "connect_error", id="body-cut-short"),
        pytest.param("/slow", "timeout", id="read-timeout"),
        pytest.param("/redirect", "unexpected_status_302", id="redirect-not-followed"),
    ],
)
def test_protocol_failures_map_to_the_same_reasons(
    transport: Transport, path: str, expected: int | str
) -> None:
    with raw_server() as (base, _):
        assert outcome(transport, base + path) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_and_unopenable_connections(transport: Transport) -> None:
    assert outcome(transport, refused_url() + "/x") == "connect_error"
    with unopenable() as base:
        start = time.monotonic()
        assert outcome(transport, base + "/x", connect_timeout_seconds=0.2) == "timeout"
        assert time.monotonic() - start < 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unsupported_scheme_is_an_invalid_request(transport: Transport) -> None:
    assert outcome(transport, "ftp://127.0.0.1/file") == "invalid_request"


def test_transport_raises_the_httpx_exception_the_client_classifies() -> None:
    async def raised(url: str, **timeouts: float) -> type[Exception]:
        transport = AiohttpTransport(max_connections=1)
        extensions = {"timeout": {"connect": 0.2, "read": 0.3, "write": 0.3, "pool": 0.3}}
        request = httpx.Request("GET", url, extensions=extensions)
        try:
            with pytest.raises(httpx.HTTPError) as error:
                await transport.handle_async_request(request)
        finally:
            await transport.aclose()
        assert error.value.request is request
        assert error.value.__cause__ is None
        return type(error.value)

    with raw_server() as (base, _):
        assert asyncio.run(raised(base + "/slow")) is httpx.ReadTimeout
        assert asyncio.run(raised(base + "/garbage")) is httpx.RemoteProtocolError
        assert asyncio.run(raised(base + "/short")) is httpx.RemoteProtocolError
    assert asyncio.run(raised(refused_url())) is httpx.ConnectError
    with unopenable() as base:
        assert asyncio.run(raised(base)) is httpx.ConnectTimeout


@pytest.mark.parametrize("path", ["/garbage", "/slow", "/short"])
def test_transport_errors_name_no_url_identifier_or_secret(path: str) -> None:
    async def message(url: str) -> str:
        transport = AiohttpTransport(max_connections=1)
        extensions = {"timeout": {"connect": 0.2, "read": 0.3, "write": 0.3, "pool": 0.3}}
        try:
            await transport.handle_async_request(httpx.Request("GET", url, extensions=extensions))
        except httpx.HTTPError as exc:
            return str(exc) + repr(exc)
        finally:
            await transport.aclose()
        return "no error"

    with raw_server() as (base, _):
        text = asyncio.run(message(f"{base}{path}/{EMAIL}?api_key={SECRET}"))
    assert text != "no error"
    for secret in (EMAIL, SECRET, "127.0.0.1", path):
        assert secret not in text


# --- what the transport does and does not do -----------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gzip_is_decoded_once_and_counted_decoded(transport: Transport) -> None:
    async def go(client: ProviderClient) -> tuple[Any, int]:
        response = await client.request("GET", base + "/gzip")
        return client.json_or_error(response), client.stats.bytes_received

    with raw_server() as (base, _):
        document, received = with_client(transport, go)
    assert document == {"ok": True}
    assert received == len(json.dumps({"ok": True}))


def test_no_cookies_no_redirects_and_the_headers_httpx_would_send() -> None:
    async def go(client: ProviderClient) -> list[int]:
        first = await client.request("GET", base + "/cookie", headers={"X-Api-Key": SECRET})
        again = await client.request("GET", base + "/ok", params={"q": "1"})
        moved = await client.request("GET", base + "/redirect", ok_statuses=(302,))
        return [first.status_code, again.status_code, moved.status_code]

    with raw_server() as (base, server):
        transport: Transport = lambda n: AiohttpTransport(max_connections=n)  # noqa: E731
        assert with_client(transport, go) == [200, 200, 302]
    paths = [path for path, _ in server.seen]
    assert paths == ["/cookie", "/ok", "/redirect"]  # the redirect was not followed
    first, again = server.seen[0][1], server.seen[1][1]
    assert "cookie" not in again
    assert first["x-api-key"] == SECRET
    assert "x-api-key" not in again  # per-call headers stay with their call
    assert first["user-agent"] == f"python-httpx/{httpx.__version__}"
    assert first["accept-encoding"] == "gzip, deflate"
    assert first["host"] == base.removeprefix("http://")


def test_the_pool_holds_at_most_concurrency_connections_and_reuses_them() -> None:
    async def go(client: ProviderClient) -> None:
        await asyncio.gather(*(client.request("GET", base + "/ok") for _ in range(60)))

    with raw_server() as (base, server):
        transport: Transport = lambda n: AiohttpTransport(max_connections=n)  # noqa: E731
        with_client(transport, go, concurrency=3)
        assert len(server.seen) == 60
        assert 1 <= server.connections <= 3


def test_a_transport_opens_its_session_on_the_loop_that_uses_it() -> None:
    transport = AiohttpTransport(max_connections=2)

    async def status(url: str) -> int:
        response = await transport.handle_async_request(httpx.Request("GET", url))
        return response.status_code

    async def both(url: str) -> list[int]:
        try:
            return [await status(url), await status(url)]
        finally:
            await transport.aclose()

    with raw_server() as (base, server):
        assert asyncio.run(both(base + "/ok")) == [200, 200]
        assert asyncio.run(both(base + "/ok")) == [200, 200]  # closed, then opened again
        assert server.connections == 2
    with pytest.raises(ValueError, match="max_connections"):
        AiohttpTransport(max_connections=0)


# --- against the local provider server ----------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        pytest.param({}, "answered", id="ok"),
        pytest.param({"error_rate": 1.0}, "server_error", id="5xx"),
        pytest.param({"malformed_rate": 1.0}, "malformed_json", id="malformed"),
        pytest.param({"timeout_rate": 1.0, "timeout_seconds": 5}, "timeout", id="late"),
        pytest.param({"hang_rate": 1.0}, "timeout", id="hang"),
        pytest.param({"storm_requests": 5, "storm_retry_after": 0.05}, "rate_limited", id="429"),
    ],
)
def test_provider_server_faults_keep_their_reasons(
    transport: Transport, knobs: dict[str, Any], expected: str
) -> None:
    async def go(client: ProviderClient) -> str:
        try:
            response = await client.request(
                "GET", base + "/v1/person", params={"email_sha256": "ab" * 32}
            )
            client.json_or_error(response)
        except ProviderError as exc:
            return exc.reason
        return "answered"

    with ProviderServer(knobs={"seed": 1, **knobs}) as server:
        base = server.base_url
        got = with_client(transport, go, timeout_seconds=0.2, throttle_retries=0)
    assert got == expected


def test_a_get_closed_unanswered_is_sent_once_more_then_counted_as_one_attempt() -> None:
    async def go(client: ProviderClient) -> tuple[str, int]:
        try:
            await client.request("GET", base + "/close")
        except ProviderError as exc:
            return exc.reason, client.stats.attempts
        return "answered", client.stats.attempts

    with raw_server() as (base, server):
        transport: Transport = lambda n: AiohttpTransport(max_connections=n)  # noqa: E731
        assert with_client(transport, go) == ("connect_error", 1)
    assert len(server.seen) == 2  # as the module docstring says (RFC 9112 section 9.3.1)
