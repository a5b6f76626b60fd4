"""A real HTTP provider server on 127.0.0.1 for tests, benchmarks and the demo.

`ProviderServer` runs the ASGI app of `enrichers.testing.app` on uvicorn in a background
thread with its own event loop, on a port the OS picks (port 0) unless one is given::

    with ProviderServer(knobs=Knobs(latency_ms=20), world=World.load(path)) as server:
        entries = provider_entries(server.base_url)     # enrich.yaml provider entries
        ...
        server.set_knobs(error_rate=0.2)                 # or POST /_admin/knobs
        assert denied_hash not in set(server.received()["value"])

Start-up binds the socket first and returns once uvicorn serves (well under a second).
Stopping releases every hanging or stalled request, closes the listening socket and the open
connections, and joins the thread, so hanging connections never block it.

As a program it serves in the foreground until SIGTERM or SIGINT and prints one line with
its URL once ready::

    python -m enrichers.testing.server --port 8765 --world demo/data/world.jsonl \\
        --received demo/received.jsonl --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import uvicorn

from enrichers.testing.app import RECEIVED_COLUMNS, ProviderApp
from enrichers.testing.entries import provider_entries
from enrichers.testing.knobs import Knobs
from enrichers.testing.world import World

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class ProviderServer:
    """The local provider server; a context manager, or `start()` and `stop()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | Mapping[str, Any] | None = None,
        world: World | Path | None = None,
        received_path: Path | None = None,
    ) -> None:
        """`knobs`: a Knobs or a mapping of its fields; `world`: a World or a world file;
        `received_path`: a JSONL file every received identifier is appended to."""
        if isinstance(knobs, Mapping):
            knobs = Knobs.model_validate(knobs)
        if isinstance(world, Path):
            world = World.load(world)
        self._host = host
        self._requested_port = port
        self.app = ProviderApp(knobs=knobs, world=world, received_path=received_path)
        """The ASGI app: its state (knobs, log, counters) is what the methods here expose."""
        self._socket: socket.socket | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = f"url={self.base_url!r}" if self.running else "stopped"
        return f"ProviderServer({state})"

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._thread is not None and self._thread.is_alive() and self._socket is not None

    @property
    def port(self) -> int:
        """The port it listens on (RuntimeError before start)."""
        if self._socket is None:
            raise RuntimeError("the provider server is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """`http://host:port`, without a trailing slash."""
        return f"http://{self._host}:{self.port}"

    @property
    def knobs(self) -> Knobs:
        """The knobs in force."""
        return self.app.knobs

    def start(self) -> Self:
        """Bind, start serving in a background thread and wait until it accepts requests."""
        if self._thread is not None:
            raise RuntimeError("the provider server is already started")
        # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on connections
        # accepted from a socket that says so, and without it every answer of a keep-alive
        # connection waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._requested_port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            # httptools and uvloop (uvicorn's "standard" choice): a benchmark's server shares
            # the CPU with the client it serves, and h11 on asyncio cost twice as much.
            http="httptools",
            loop="uvloop",
            proxy_headers=False,  # nothing sits in front of it: one middleware less per request
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
            backlog=1024,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"provider-server-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                error = self._error
                self.stop()
                raise RuntimeError(f"the provider server did not start: {error!r}")
            time.sleep(0.002)
        return self

    def _run(self) -> None:
        assert self._uvicorn is not None
        assert self._socket is not None
        server, sock = self._uvicorn, self._socket

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self.app.bind()
            await server.serve(sockets=[sock])

        try:
            with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
                runner.run(serve())
        except BaseException as exc:  # reported by start(); a thread must not die silently
            self._error = exc
        finally:
            self.app.close()

    def stop(self) -> None:
        """Release stalled requests, stop serving, close every socket and join the thread."""
        thread, server, loop = self._thread, self._uvicorn, self._loop
        if thread is not None and server is not None:
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self.app.release)
            server.should_exit = True
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                server.force_exit = True
                thread.join(_STOP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self.app.close()
        self._thread = self._uvicorn = self._loop = self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_knobs(self, **changes: Any) -> Knobs:
        """Change knobs (partial, as `POST /_admin/knobs`); returns the knobs now in force."""
        return self._on_loop(lambda: self.app.update_knobs(changes))

    def reset(self) -> None:
        """Forget the in-memory received log, the counters and the attempt history."""
        self._on_loop(self.app.reset)

    def stats(self) -> dict[str, Any]:
        """Counters (see `ProviderApp.stats`)."""
        return self.app.stats()

    def received(self) -> pd.DataFrame:
        """Every identifier received: ts (UTC), endpoint, form, value, in arrival order."""
        import pandas as pd  # noqa: PLC0415 - the CLI never needs pandas

        rows = self.app.received()
        frame = pd.DataFrame(rows, columns=list(RECEIVED_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        return frame

    def _on_loop(self, action: Callable[[], T]) -> T:
        """Run `action()` on the server's loop (state belongs to it) and return its result."""
        loop = self._loop
        if loop is None or not self.running:
            return action()
        future: Future[T] = Future()

        def call() -> None:
            try:
                future.set_result(action())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=_STOP_TIMEOUT)


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m enrichers.testing.server",
        description=(
            "Serve simulated enrichment providers on 127.0.0.1 until SIGTERM or SIGINT. "
            "Endpoints: GET /v1/person, POST /v1/segments/batch, GET /v3/profiles/{sha256}; "
            "admin: /_admin/health, /_admin/knobs (GET, POST), /_admin/stats, "
            "/_admin/received, /_admin/reset. Prints one line with the URL when ready."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port; 0 (default) lets the OS pick a free one")
    add("--world", type=Path, help="world file from `enrich synth` (data/world.jsonl)")
    add("--received", type=Path, help="append every identifier received to this JSONL file")
    add("--url-file", type=Path, help="also write the URL to this file once ready (atomically)")
    add("--entries", type=Path, help="write enrich.yaml provider entries for this server here")
    add("--seed", type=int, default=0, help="seed of faults and observations (default 0)")
    add("--latency-ms", type=float, default=0.0, help="latency added to every answer")
    add("--jitter-ms", type=float, default=0.0, help="latency varies by up to this either way")
    add("--error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    add("--error-status", type=int, default=503, help="status of injected errors (503)")
    add("--rate-limit", type=float, help="requests per second allowed (429 beyond)")
    add("--rate-limit-window", type=float, default=1.0, help="rate-limit window in seconds")
    add("--storm-requests", type=int, default=0, help="answer the first N requests with 429")
    add("--storm-seconds", type=float, default=0.0, help="answer 429 for the first S seconds")
    add("--storm-retry-after", type=float, default=1.0, help="Retry-After of storm 429s")
    add("--malformed-rate", type=float, default=0.0, help="share of answers with broken JSON")
    add("--timeout-rate", type=float, default=0.0, help="share of requests answered late")
    add("--timeout-seconds", type=float, default=30.0, help="how late such answers come")
    add("--hang-rate", type=float, default=0.0, help="share of requests never answered")
    add(
        "--knobs",
        type=json.loads,
        default={},
        help='more knobs as JSON, e.g. \'{"profiles": {"person": {"hit_rate": 0.9}}}\'',
    )
    return parser


def _knobs(args: argparse.Namespace) -> Knobs:
    fields: dict[str, Any] = {
        "seed": args.seed,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "error_rate": args.error_rate,
        "error_status": args.error_status,
        "rate_limit": args.rate_limit,
        "rate_limit_window_seconds": args.rate_limit_window,
        "storm_requests": args.storm_requests,
        "storm_seconds": args.storm_seconds,
        "storm_retry_after": args.storm_retry_after,
        "malformed_rate": args.malformed_rate,
        "timeout_rate": args.timeout_rate,
        "timeout_seconds": args.timeout_seconds,
        "hang_rate": args.hang_rate,
    }
    return Knobs.model_validate(fields).updated(args.knobs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server in the foreground until SIGTERM or SIGINT; 0 on a clean stop."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        knobs = _knobs(args)
        server = ProviderServer(
            host=args.host,
            port=args.port,
            knobs=knobs,
            world=args.world,
            received_path=args.received,
        )
    except (ValueError, OSError) as exc:  # bad knobs (pydantic errors are ValueErrors), files
        parser.exit(2, f"error: {exc}\n")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        parser.exit(1, f"error: cannot serve on {args.host}:{args.port}: {exc}\n")
    try:
        if args.entries is not None:
            import yaml  # noqa: PLC0415 - only needed for this option

            args.entries.write_text(
                yaml.safe_dump(provider_entries(server.base_url), sort_keys=False),
                encoding="utf-8",
            )
        if args.url_file is not None:
            # Renamed into place, so that a script polling for it never reads half a URL.
            partial = args.url_file.with_name(args.url_file.name + ".partial")
            partial.write_text(server.base_url + "\n", encoding="utf-8")
            partial.replace(args.url_file)
        world = f", world of {len(server.app.world)} people" if server.app.world else ""
        print(f"provider server ready at {server.base_url}{world}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
