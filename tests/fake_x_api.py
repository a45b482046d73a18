"""A fake X API v2 server for the tests: real HTTP/1.1 on 127.0.0.1, speaking X's protocol.

- Every request must carry ``Authorization: Bearer <token>``; otherwise a 401 with X's body.
- ``GET /2/tweets/search/stream`` and ``GET /2/tweets/sample/stream`` answer with a chunked
  stream of ``\\r\\n``-terminated JSON lines and blank keep-alive lines. Each connection follows
  the next script given to `FakeXApi.script` (send posts, keep-alives, split a post mid-UTF-8,
  stall, drop, answer 503/429/401, send an operational-disconnect error); once the scripts are
  used up, a connection idles on keep-alives. The filtered stream answers 409
  (RuleConfigurationIssue) while there are no rules, as X does.
- ``GET/POST /2/tweets/search/stream/rules`` list, add and delete rules with X's response shapes
  (``data``/``meta``/``errors``, ``summary``), including ``dry_run=true``, duplicate and invalid
  rules, unknown ids and pagination.
- Every response has ``x-rate-limit-limit/-remaining/-reset`` headers; error bodies are X's
  ``application/problem+json`` documents.

The server records every request (`requests`, with the time on its `clock`) and the id of every
post whose last byte it sent (`sent_ids`), so tests can check what the client did against it.

Usage::

    with FakeXApi(token="t0ken") as api:
        api.script("x-filtered", [Posts(3), Drop()], [Respond(503)], [Posts(2)])
        ... # X_API_BASE_URL=api.url
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_x_script import (
    DEFAULT_BODIES,
    EXPANSIONS,
    FILTERED,
    NOT_FOUND,
    OPERATIONAL_DISCONNECT,
    PROBLEMS,
    RULE_CONFIGURATION,
    RULES,
    SAMPLE,
    STREAM_PATHS,
    TWEET_FIELDS,
    UNAUTHORIZED,
    Action,
    Drop,
    End,
    Hangup,
    KeepAlive,
    Posts,
    Raw,
    Respond,
    SplitPost,
    Stall,
    StreamError,
    make_post,
)

__all__ = [
    "OPERATIONAL_DISCONNECT",
    "Drop",
    "End",
    "FakeXApi",
    "Hangup",
    "KeepAlive",
    "Posts",
    "Raw",
    "RequestRecord",
    "Respond",
    "SplitPost",
    "Stall",
    "StreamError",
    "make_post",
]
# The script steps and make_post are re-exported: tests import the fake server's vocabulary
# from here.


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    at: float
    authorized: bool
    user_agent: str
    body: Any = None


@dataclass
class _Rule:
    id: str
    value: str
    tag: str | None

    def as_json(self) -> dict[str, str]:
        out = {"id": self.id, "value": self.value}
        if self.tag is not None:
            out["tag"] = self.tag
        return out


class FakeXApi:
    """The fake server. Start it with ``with`` (or `start`/`stop`); its `url` is the base URL.

    Args:
        token: the only bearer token accepted.
        clock: the server's clock (epoch seconds) for ``x-rate-limit-reset`` and request times;
            share a test's fake clock to check waits against it.
        rules: the filtered stream's initial rules as (value, tag) pairs.
        rule_max_length: the longest rule the server accepts.
        idle_keepalive: seconds between keep-alives once a connection's script is used up.
    """

    def __init__(
        self,
        *,
        token: str = "fake-x-token-5f1b2c",
        clock: Callable[[], float] = time.time,
        rules: Iterable[tuple[str, str | None]] = (("#happy lang:en", "happy"),),
        rule_max_length: int = 1024,
        idle_keepalive: float = 0.05,
    ) -> None:
        self.token = token
        self.clock = clock
        self.rule_max_length = rule_max_length
        self.idle_keepalive = idle_keepalive
        self.requests: list[RequestRecord] = []
        self.sent_ids: list[str] = []
        self._ids = itertools.count(1_700_000_000_000_000_001)
        self.rules: list[_Rule] = [_Rule(str(next(self._ids)), v, t) for v, t in rules]
        self._scripts: dict[str, deque[list[Action]]] = {p: deque() for p in STREAM_PATHS.values()}
        self._post_numbers = itertools.count(1)
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.remaining = 50

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeXApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeXApi:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def script(self, stream: str, *connections: Sequence[Action]) -> None:
        """Queue what the next connections to `stream` (``x-filtered``/``x-sample``) do."""
        with self._lock:
            self._scripts[STREAM_PATHS[stream]].extend(list(c) for c in connections)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until `predicate` (called with the server's lock held) is true after a
        request or a post was sent; AssertionError after `timeout` seconds."""
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise AssertionError("the fake X API did not reach the expected state in time")

    def stream_requests(self, stream: str = "x-filtered") -> list[RequestRecord]:
        """The requests to `stream` so far."""
        return [r for r in self.requests if r.path == STREAM_PATHS[stream]]

    def _next_script(self, path: str) -> list[Action] | None:
        with self._lock:
            queue = self._scripts[path]
            return queue.popleft() if queue else None

    def _next_post(self) -> tuple[str, bytes]:
        with self._lock:
            return make_post(next(self._post_numbers))

    def _sent(self, post_id: str) -> None:
        with self._lock:
            self.sent_ids.append(post_id)
            self._lock.notify_all()

    def _rate_headers(
        self, reset_in: float | None = None, no_reset: bool = False
    ) -> dict[str, str]:
        now = self.clock()
        remaining = str(max(self.remaining, 0))
        headers = {"x-rate-limit-limit": "50", "x-rate-limit-remaining": remaining}
        if not no_reset:
            headers["x-rate-limit-reset"] = str(int(now + (reset_in if reset_in else 900)))
        return headers

    # -- rules -------------------------------------------------------------------------------

    def _meta(self, **extra: Any) -> dict[str, Any]:
        sent = datetime.fromtimestamp(self.clock(), tz=UTC).isoformat(timespec="milliseconds")
        return {"sent": sent.replace("+00:00", "Z"), **extra}

    def list_rules(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            rules = list(self.rules)
        size = int(query.get("max_results", ["1000"])[0])
        start = int(query.get("pagination_token", ["0"])[0])
        page = rules[start : start + size]
        meta = self._meta(result_count=len(page))
        if start + size < len(rules):
            meta["next_token"] = str(start + size)
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = [r.as_json() for r in page]
        return 200, body

    def change_rules(self, query: dict[str, list[str]], payload: Any) -> tuple[int, dict[str, Any]]:
        dry_run = query.get("dry_run", ["false"])[0] == "true"
        if not isinstance(payload, dict) or not (("add" in payload) ^ ("delete" in payload)):
            return 400, _invalid_request("Body must contain either 'add' or 'delete'")
        with self._lock:
            if "add" in payload:
                return self._add_rules(payload["add"], dry_run)
            return self._delete_rules(payload["delete"], dry_run)

    def _add_rules(self, items: Any, dry_run: bool) -> tuple[int, dict[str, Any]]:
        if not isinstance(items, list) or not items:
            return 400, _invalid_request("'add' must be a non-empty array of rules")
        errors: list[dict[str, Any]] = []
        new: list[_Rule] = []
        existing = {r.value: r for r in self.rules}
        for item in items:
            value, tag = item.get("value", ""), item.get("tag")
            problem = _rule_problem(value, self.rule_max_length)
            if value in existing:
                errors.append({"value": value, "id": existing[value].id, "title": "DuplicateRule",
                               "type": f"{PROBLEMS}/duplicate-rules"})  # fmt: skip
            elif problem:
                errors.append({"value": value, "details": [problem],
                               "title": "UnprocessableEntity",
                               "type": f"{PROBLEMS}/invalid-rules"})  # fmt: skip
            else:
                new.append(_Rule(str(next(self._ids)), value, tag))
        invalid = len(errors)
        summary = {"valid": len(items) - invalid, "invalid": invalid}
        if errors:
            # X adds nothing when any rule of the request is invalid.
            summary |= {"created": 0, "not_created": len(items)}
            return 400, {"meta": self._meta(summary=summary), "errors": errors}
        summary |= {"created": len(new), "not_created": 0}
        if not dry_run:
            self.rules.extend(new)
        body = {"data": [r.as_json() for r in new], "meta": self._meta(summary=summary)}
        return (200 if dry_run else 201), body

    def _delete_rules(self, spec: Any, dry_run: bool) -> tuple[int, dict[str, Any]]:
        ids = spec.get("ids", []) if isinstance(spec, dict) else []
        if not isinstance(ids, list) or not ids:
            return 400, _invalid_request("'delete' must hold a non-empty 'ids' array")
        known = {r.id for r in self.rules}
        found = [i for i in ids if i in known]
        missing = [i for i in ids if i not in known]
        if not dry_run:
            self.rules = [r for r in self.rules if r.id not in set(found)]
        body: dict[str, Any] = {
            "meta": self._meta(summary={"deleted": len(found), "not_deleted": len(missing)})
        }
        if missing:
            body["errors"] = [
                {
                    "errors": [{"parameters": {}, "message": "Rule does not exist"}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                    "value": i,
                }
                for i in missing
            ]
        return 200, body


def _invalid_request(message: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "errors": [{"parameters": parameters or {}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _rule_problem(value: Any, max_length: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "Rules must contain a non-empty value"
    if len(value) > max_length:
        return f"Rules must be at most {max_length} characters long (this one has {len(value)})"
    if value.count("(") != value.count(")"):
        return "There are unbalanced parentheses in this rule"
    for word in value.split():
        operator = word.lstrip("-(").split(":", 1)[0]
        if ":" in word and operator not in {"from", "to", "lang", "has", "is", "url", "place"}:
            return f"Reference to invalid operator '{operator}'. Operator is not available."
    return None


def _check_fields(query: dict[str, list[str]]) -> dict[str, Any] | None:
    for name, allowed in (("tweet.fields", TWEET_FIELDS), ("expansions", EXPANSIONS)):
        for value in ",".join(query.get(name, [])).split(","):
            if value and value not in allowed:
                return _invalid_request(
                    f"The `{name}` query parameter value [{value}] is not one of "
                    f"[{','.join(sorted(allowed))}]",
                    {name: [value]},
                )
    return None


class _Disconnect(Exception):
    """The script ended the connection."""


def _handler_class(api: FakeXApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tsa_b"  # what X's edge calls itself
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests look at `api.requests`, not at a log

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        # -- plumbing ------------------------------------------------------------------------

        def _record(self, body: Any = None) -> RequestRecord:
            parts = urlsplit(self.path)
            record = RequestRecord(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                at=api.clock(),
                authorized=self.headers.get("Authorization") == f"Bearer {api.token}",
                user_agent=self.headers.get("User-Agent", ""),
                body=body,
            )
            with api._lock:
                api.requests.append(record)
                api._lock.notify_all()
            return record

        def _json(
            self,
            status: int,
            body: dict[str, Any],
            headers: dict[str, str] | None = None,
            problem: bool | None = None,
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            is_problem = status >= 400 and "title" in body if problem is None else problem
            kind = "application/problem+json" if is_problem else "application/json; charset=utf-8"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or api._rate_headers()).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            except OSError as exc:
                raise _Disconnect from exc

        # -- routes --------------------------------------------------------------------------

        def do_GET(self) -> None:
            record = self._record()
            if not record.authorized:
                self._json(401, UNAUTHORIZED)
                return
            if record.path == RULES:
                self._json(*api.list_rules(record.query))
            elif record.path in (FILTERED, SAMPLE):
                self._stream(record)
            else:
                self._json(404, NOT_FOUND)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            record = self._record(payload)
            if not record.authorized:
                self._json(401, UNAUTHORIZED)
            elif record.path == RULES:
                status, body = api.change_rules(record.query, payload)
                self._json(status, body, problem=False)
            else:
                self._json(404, NOT_FOUND)

        # -- streams -------------------------------------------------------------------------

        def _stream(self, record: RequestRecord) -> None:
            api.remaining -= 1
            bad = _check_fields(record.query)
            if bad is not None:
                self._json(400, bad)
                return
            script = api._next_script(record.path)
            first = script[0] if script else None
            if isinstance(first, Hangup):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(first, Respond):
                body = first.body
                if body is None:
                    body = DEFAULT_BODIES.get(first.status, {})
                self._json(first.status, body, api._rate_headers(first.reset_in, first.no_reset))
                return
            if record.path == FILTERED and not api.rules:
                self._json(409, RULE_CONFIGURATION)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in api._rate_headers().items():
                self.send_header(name, value)
            self.end_headers()
            self.close_connection = True
            try:
                for action in script if script is not None else []:
                    self._act(action)
                while not api._stopping.is_set():
                    self._chunk(b"\r\n")
                    api._stopping.wait(api.idle_keepalive)
            except _Disconnect:
                pass

        def _act(self, action: Action) -> None:
            if isinstance(action, Posts):
                posts = [api._next_post() for _ in range(action.count)]
                if action.packed:
                    self._chunk(b"".join(data + b"\r\n" for _, data in posts))
                    for post_id, _ in posts:
                        api._sent(post_id)
                    return
                for post_id, data in posts:
                    self._chunk(data + b"\r\n")
                    api._sent(post_id)
            elif isinstance(action, KeepAlive):
                for i in range(action.count):
                    if i and action.every:
                        api._stopping.wait(action.every)
                    self._chunk(b"\r\n")
            elif isinstance(action, SplitPost):
                post_id, data = api._next_post()
                cut = data.index("東".encode()) + 1  # inside the 3-byte character
                for piece in (data[:cut], data[cut:] + b"\r", b"\n"):
                    self._chunk(piece)
                    time.sleep(0.005)  # separate TCP segments too, not only HTTP chunks
                api._sent(post_id)
            elif isinstance(action, Raw):
                self._chunk(action.data)
            elif isinstance(action, StreamError):
                self._chunk(json.dumps(action.body).encode() + b"\r\n")
                self._chunk(b"")
                raise _Disconnect
            elif isinstance(action, Stall):
                api._stopping.wait(action.seconds)
                self._abort()
            elif isinstance(action, Drop):
                self._abort()
            elif isinstance(action, End):
                self._chunk(b"")
                raise _Disconnect

        def _abort(self) -> None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            raise _Disconnect

    return Handler
