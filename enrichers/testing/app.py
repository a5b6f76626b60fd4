"""The local provider server's ASGI app: three simulated provider APIs, faults, admin, a log.

    GET  /v1/person?<form>=<value>      one identifier (email_sha256, phone_sha256, phone_e164
                                        or email): 200 {"status": 200, "likelihood", "data":
                                        {"interests": [{"name", "score"}], "updated_at"}} or 404
    POST /v1/segments/batch             {"lookups": [{"id", "type", "value"}]} (at most
                                        MAX_BATCH) -> 200 {"results": [{"id", "matched",
                                        "segments": [{"label", "score" 0-100}], "updated_at"}]}
    GET  /v3/profiles/{sha256}          Gravatar v3: 200 {"hash", "interests": [{"id", "name"}],
                                        "last_profile_edit", ...} or 404 {"error"}
    GET  /_admin/health                 {"status": "ok"}
    GET  /_admin/knobs                  the knobs; POST a partial object to change them
    GET  /_admin/stats                  counters (see `ProviderApp.stats`)
    GET  /_admin/received               every identifier received, in arrival order
    POST /_admin/reset                  forget the log (not the file), counters and attempts

Every identifier that reaches a provider endpoint is recorded before any fault applies (a
request answered 429 still delivered its identifiers), in memory and, if a path is given, as
one JSON line each in a file: that file is how a test proves that an identifier never
reached the server. The admin endpoints are never faulted or counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, NamedTuple
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from enrichers.testing.knobs import (
    STORM_KNOBS,
    Endpoint,
    FaultState,
    Knobs,
    draws,
    request_key,
    seconds_text,
)
from enrichers.testing.world import (
    LABELS,
    TOPICS,
    Observation,
    World,
    drawn_interests,
    identity_key,
    observe,
    report_share,
)
from profiles.files import private_folder

FORMS: Final = ("email_sha256", "phone_sha256", "phone_e164", "email")
"""Identifier forms the endpoints accept (`profiles.types.IdentifierForm` values)."""
MAX_BATCH: Final = 1000
RECEIVED_COLUMNS: Final = ("ts", "endpoint", "form", "value")

_TOPIC_IDS: Final = {topic: number for number, topic in enumerate(TOPICS, start=1)}
_NOT_FOUND: Final = 404
_BAD_REQUEST: Final = 400
_THROTTLED: Final = 429
_DAY: Final = 86_400
_STAMPS_KEPT: Final = 1024

_JSON: Final = b"application/json"
_TEXT: Final = b"text/plain; charset=utf-8"
_PROFILE_PATH: Final = re.compile(r"^/v3/profiles/(?P<digest>[^/]+)$")


class Request(NamedTuple):
    """What an endpoint reads of a request."""

    method: str
    query: Mapping[str, str]
    """Query parameters (the last of a repeated name wins)."""
    body: bytes
    path_params: Mapping[str, str]


class Reply(NamedTuple):
    """What an endpoint answers."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    content_type: bytes = _JSON


Handler = Callable[[Request], Awaitable[Reply]]
"""An endpoint: a request in, a reply out."""

Identifiers = Sequence[tuple[str, str]]
"""(form, value) pairs a request carried."""
Answer = Callable[[], tuple[int, Any]]
Found = tuple[Observation] | tuple[()] | None
"""(observation,) for a match, () for no match, None for a malformed identifier."""


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class ProviderApp:
    """The ASGI application (see the module docstring); one per server.

    Provider endpoints run on the server's event loop; `bind` must be called on that loop
    before serving, `release` wakes every stalled request (for shutdown) and `close` closes
    the received-log file.
    """

    def __init__(
        self,
        *,
        knobs: Knobs | None = None,
        world: World | None = None,
        received_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._knobs = knobs or Knobs()
        self._world = world
        self._mean_true = world.mean_topics() if world is not None else None
        self._received_path = received_path
        self._clock = clock
        self._wall_clock = wall_clock
        self._faults = FaultState()
        self._faults.arm_storm(self._knobs, clock())
        self._lock = threading.Lock()
        self._received: list[tuple[float, str, str, str]] = []
        self._sink: IO[str] | None = None
        self._counts: Counter[str] = Counter()
        self._attempts: dict[bytes, int] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._released: asyncio.Event | None = None
        # Path -> (methods, handler). A plain dict, not a framework's router, middleware and
        # request objects: every request of a benchmark passes through here, on a CPU the
        # server shares with the client it serves.
        self._routes: dict[str, tuple[frozenset[str], Handler]] = {
            "/v1/person": (frozenset({"GET", "HEAD"}), self._person),
            "/v1/segments/batch": (frozenset({"POST"}), self._segments),
            "/_admin/health": (frozenset({"GET", "HEAD"}), self._health),
            "/_admin/knobs": (frozenset({"GET", "HEAD", "POST"}), self._knobs_endpoint),
            "/_admin/stats": (frozenset({"GET", "HEAD"}), self._stats_endpoint),
            "/_admin/received": (frozenset({"GET", "HEAD"}), self._received_endpoint),
            "/_admin/reset": (frozenset({"POST"}), self._reset_endpoint),
        }
        self._profile_route = (frozenset({"GET", "HEAD"}), self._gravatar)
        # "updated_at" text per (UTC day, age in days): a strftime per answer adds up.
        self._stamps: dict[tuple[int, int], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request (other scope types are not served)."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        path_params: dict[str, str] = {}
        route = self._routes.get(path)
        if route is None and (match := _PROFILE_PATH.match(path)) is not None:
            route, path_params = self._profile_route, {"digest": match["digest"]}
        method: str = scope["method"]
        if route is None:
            reply = Reply(_NOT_FOUND, b"Not Found", {}, _TEXT)
        elif method not in route[0]:
            allow = ", ".join(sorted(route[0]))
            reply = Reply(405, b"Method Not Allowed", {"Allow": allow}, _TEXT)
        else:
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            body = await _body(receive) if method == "POST" else b""
            reply = await route[1](Request(method, query, body, path_params))
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        headers.append((b"content-length", str(len(reply.body)).encode()))
        headers.append((b"content-type", reply.content_type))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    # --- lifecycle (called by ProviderServer) -------------------------------------------------

    def bind(self) -> None:
        """Prepare to serve on the running event loop; open the received-log file."""
        self._released = asyncio.Event()
        if self._received_path is not None and self._sink is None:
            # unsalted SHA-256 of emails and phones: a dictionary reverses them
            private_folder(self._received_path.parent)
            fd = os.open(self._received_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._sink = os.fdopen(fd, "a", encoding="utf-8")

    def release(self) -> None:
        """Let every hanging or stalled request finish now (on the server's loop)."""
        if self._released is not None:
            self._released.set()

    def close(self) -> None:
        """Close the received-log file."""
        with self._lock:
            if self._sink is not None:
                self._sink.close()
                self._sink = None

    # --- state ------------------------------------------------------------------------------

    @property
    def knobs(self) -> Knobs:
        """The knobs in force."""
        return self._knobs

    @property
    def world(self) -> World | None:
        """The world observed, if one was loaded."""
        return self._world

    def update_knobs(self, changes: Mapping[str, Any]) -> Knobs:
        """Apply a partial change (see `Knobs.updated`); setting a storm knob arms the storm."""
        knobs = self._knobs.updated(changes)
        self._knobs = knobs
        if STORM_KNOBS.intersection(changes):
            self._faults.arm_storm(knobs, self._clock())
        return knobs

    def received(self) -> list[tuple[float, str, str, str]]:
        """(epoch seconds, endpoint, form, value) of every identifier received, in order."""
        with self._lock:
            return list(self._received)

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset, JSON-ready.

        requests, by_endpoint, statuses (per HTTP status sent), identifiers, matched,
        no_match, invalid (identifiers), throttled (429s: storm + rate_limited), errors
        (injected 5xx), malformed, timeouts (late answers), hangs, in_flight, max_in_flight.
        """
        with self._lock:
            c = Counter(self._counts)
            in_flight, peak = self._in_flight, self._max_in_flight
        return {
            "requests": c["requests"],
            "by_endpoint": {e.value: c[f"endpoint.{e.value}"] for e in Endpoint},
            "statuses": {
                key.split(".", 1)[1]: n for key, n in sorted(c.items()) if key.startswith("status.")
            },
            "identifiers": c["identifiers"],
            "matched": c["matched"],
            "no_match": c["no_match"],
            "invalid": c["invalid"],
            "throttled": c["storm"] + c["rate_limited"],
            "storm": c["storm"],
            "rate_limited": c["rate_limited"],
            "errors": c["errors"],
            "malformed": c["malformed"],
            "timeouts": c["timeouts"],
            "hangs": c["hangs"],
            "in_flight": in_flight,
            "max_in_flight": peak,
        }

    def reset(self) -> None:
        """Forget the in-memory log, the counters and the attempt history."""
        with self._lock:
            self._received.clear()
            self._counts.clear()
            self._attempts.clear()
            self._max_in_flight = self._in_flight

    # --- provider endpoints ------------------------------------------------------------------

    async def _person(self, request: Request) -> Reply:
        query = request.query
        given = [(form, query[form]) for form in FORMS if form in query]

        def answer() -> tuple[int, Any]:
            if len(given) != 1:
                return _BAD_REQUEST, {
                    "status": _BAD_REQUEST,
                    "error": {"type": "invalid_request_error", "message": "give one identifier"},
                }
            form, value = given[0]
            found = self._observe(Endpoint.PERSON, form, value)
            if found is None:
                return _BAD_REQUEST, {
                    "status": _BAD_REQUEST,
                    "error": {"type": "invalid_request_error", "message": f"malformed {form}"},
                }
            if not found:
                return _NOT_FOUND, {
                    "status": _NOT_FOUND,
                    "error": {"type": "not_found", "message": "No records were found"},
                }
            observation = found[0]
            labels = LABELS[Endpoint.PERSON]
            best = max((p for _, p in observation.scores), default=0.5)
            return 200, {
                "status": 200,
                "likelihood": max(1, min(10, round(best * 10))),
                "data": {
                    "interests": [
                        {"name": labels[t], "score": round(p, 3)} for t, p in observation.scores
                    ],
                    "updated_at": self._stamp(observation),
                },
            }

        return await self._serve(Endpoint.PERSON, given, answer)

    async def _segments(self, request: Request) -> Reply:
        lookups = _lookups(request.body)
        given = [(str(i.get("type")), str(i.get("value"))) for i in lookups or ()]

        def answer() -> tuple[int, Any]:
            if lookups is None:
                return _BAD_REQUEST, {"error": 'body must be {"lookups": [{id, type, value}]}'}
            if len(lookups) > MAX_BATCH:
                return _BAD_REQUEST, {"error": f"at most {MAX_BATCH} lookups per request"}
            labels = LABELS[Endpoint.SEGMENTS]
            results: list[dict[str, Any]] = []
            for item in lookups:
                result: dict[str, Any] = {"id": item.get("id")}
                found = self._observe(Endpoint.SEGMENTS, str(item.get("type")), item.get("value"))
                if found is None:
                    result.update(matched=None, error="invalid_identifier")
                elif not found:
                    result.update(matched=False, segments=[])
                else:
                    observation = found[0]
                    result.update(
                        matched=True,
                        segments=[
                            {"label": labels[t], "score": round(p * 100)}
                            for t, p in observation.scores
                        ],
                        updated_at=self._stamp(observation),
                    )
                results.append(result)
            return 200, {"results": results}

        return await self._serve(Endpoint.SEGMENTS, given, answer)

    async def _gravatar(self, request: Request) -> Reply:
        digest = request.path_params["digest"]
        given = [("email_sha256", digest)]

        def answer() -> tuple[int, Any]:
            found = self._observe(Endpoint.GRAVATAR, "email_sha256", digest)
            if not found:  # malformed hashes are simply not found, as at Gravatar
                return _NOT_FOUND, {"error": "Profile not found"}
            observation = found[0]
            labels = LABELS[Endpoint.GRAVATAR]
            return 200, {
                "hash": digest,
                "display_name": "Simulated Person",
                "profile_url": f"https://gravatar.example/sim-{digest[:8]}",
                "avatar_url": f"https://gravatar.example/avatar/{digest}",
                "interests": [
                    {"id": _TOPIC_IDS[t], "name": labels[t]} for t, _ in observation.scores
                ],
                "last_profile_edit": self._stamp(observation),
            }

        return await self._serve(Endpoint.GRAVATAR, given, answer)

    def _observe(
        self, endpoint: Endpoint, form: str, value: Any
    ) -> tuple[Observation] | tuple[()] | None:
        """(observation,) for a match, () for no match, None for a malformed identifier."""
        key = identity_key(form, value) if isinstance(value, str) else None
        if key is None:
            self._count("invalid")
            return None
        knobs = self._knobs
        profile = knobs.profiles[endpoint]
        if self._world is not None:
            position = self._world.index.get(key)
            if position is None:
                self._count("no_match")
                return ()
            person = self._world.person_ids[position]
            truth = self._world.interests[position]
            share = report_share(profile, self._mean_true or 0.0)
        else:
            person = f"{key[0]}:{key[1]}"
            truth = drawn_interests(knobs.seed, person, profile.prior)
            share = report_share(profile, profile.prior * len(TOPICS))
        observation = observe(
            seed=knobs.seed,
            endpoint=endpoint,
            person=person,
            truth=truth,
            profile=profile,
            share_true=share,
        )
        if observation is None:
            self._count("no_match")
            return ()
        self._count("matched")
        return (observation,)

    def _stamp(self, observation: Observation) -> str:
        day = int(self._wall_clock() // _DAY)
        key = (day, observation.age_days)
        stamp = self._stamps.get(key)
        if stamp is None:
            if len(self._stamps) > _STAMPS_KEPT:
                self._stamps.clear()
            midnight = datetime.fromtimestamp(day * _DAY, UTC)
            stamp = (midnight - timedelta(days=observation.age_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._stamps[key] = stamp
        return stamp

    # --- faults ---------------------------------------------------------------------------------

    async def _serve(self, endpoint: Endpoint, given: Identifiers, answer: Answer) -> Reply:
        """Record the identifiers, apply the knobs in order, then answer."""
        knobs = self._knobs
        self._arrived(endpoint, given)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._faulted(endpoint, given, answer, knobs)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _faulted(
        self, endpoint: Endpoint, given: Identifiers, answer: Answer, knobs: Knobs
    ) -> Reply:
        now = self._clock()
        if self._faults.in_storm(now):
            self._count("storm")
            retry = {"Retry-After": seconds_text(knobs.storm_retry_after)}
            return self._reply(_THROTTLED, {"error": "rate limited (storm)"}, retry)
        allowed, headers = self._faults.admit(knobs, now)
        if not allowed:
            self._count("rate_limited")
            return self._reply(_THROTTLED, {"error": "rate limit exceeded"}, headers)
        key = request_key(endpoint, [value for _, value in given])
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        u = draws(knobs.seed, key, attempt)
        if u.hang < knobs.hang_rate:
            self._count("hangs")
            await self._stall(None)
            return self._reply(503, {"error": "shutting down"}, headers)
        delay = knobs.latency_ms + knobs.jitter_ms * (2.0 * u.jitter - 1.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if u.timeout < knobs.timeout_rate:
            self._count("timeouts")
            await self._stall(knobs.timeout_seconds)
        if u.error < knobs.error_rate:
            self._count("errors")
            return self._reply(knobs.error_status, {"error": "injected server error"}, headers)
        status, document = answer()
        content = _json_bytes(document)
        if u.malformed < knobs.malformed_rate:
            self._count("malformed")
            content = content[: max(1, len(content) // 2)]
        return self._reply(status, content, headers)

    async def _stall(self, seconds: float | None) -> None:
        """Wait `seconds` (None: for ever), or until the server releases stalled requests."""
        released = self._released
        if released is None:  # not bound: only in direct unit use; never hang a test
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout=seconds)

    def _reply(self, status: int, body: Any, headers: Mapping[str, str]) -> Reply:
        self._count(f"status.{status}")
        content = body if isinstance(body, bytes) else _json_bytes(body)
        return Reply(status, content, headers)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _arrived(self, endpoint: Endpoint, given: Identifiers) -> None:
        stamp = self._wall_clock()
        rows = [(stamp, endpoint.value, form, value) for form, value in given]
        with self._lock:
            self._counts["requests"] += 1
            self._counts[f"endpoint.{endpoint.value}"] += 1
            self._counts["identifiers"] += len(rows)
            self._received.extend(rows)
            if self._sink is not None and rows:
                when = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
                self._sink.write(
                    "".join(
                        json.dumps({"ts": when, "endpoint": e, "form": f, "value": v}) + "\n"
                        for _, e, f, v in rows
                    )
                )
                self._sink.flush()

    # --- admin endpoints ---------------------------------------------------------------------

    async def _health(self, request: Request) -> Reply:
        return Reply(200, _json_bytes({"status": "ok"}), {})

    async def _knobs_endpoint(self, request: Request) -> Reply:
        if request.method == "POST":
            try:
                changes = json.loads(request.body)
            except ValueError:
                changes = None
            if not isinstance(changes, dict):
                body = {"error": "send a JSON object of knobs to change"}
                return Reply(_BAD_REQUEST, _json_bytes(body), {})
            try:
                self.update_knobs(changes)
            except ValidationError as exc:
                errors = [
                    {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ]
                return Reply(422, _json_bytes({"errors": errors}), {})
        return Reply(200, _json_bytes(self._knobs.model_dump(mode="json")), {})

    async def _stats_endpoint(self, request: Request) -> Reply:
        return Reply(200, _json_bytes(self.stats()), {})

    async def _received_endpoint(self, request: Request) -> Reply:
        rows = [dict(zip(RECEIVED_COLUMNS, row, strict=True)) for row in self.received()]
        return Reply(200, _json_bytes({"received": rows}), {})

    async def _reset_endpoint(self, request: Request) -> Reply:
        self.reset()
        return Reply(200, _json_bytes({"status": "reset"}), {})


async def _body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _lookups(body: bytes) -> list[dict[str, Any]] | None:
    """The `lookups` items of a batch body, or None if the body is not that shape."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    items = document.get("lookups") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return None
    return items
