"""X API v2 streams: ``--source x-filtered`` (posts matching the app's rules) and ``--source
x-sample`` (a 1% sample of all posts; Enterprise access on X today).

One `XApiSource` holds one streaming connection open and reopens it when it drops, on the
schedule of `ReconnectPolicy` (X's "Handling disconnections" guidance). It yields every
complete line as soon as it arrives, before any reconnect logic runs, so a post fully received is
never lost when the connection dies right after it. Keep-alives (blank lines) reset the stall
timer and are not yielded. In-stream ``{"errors": [...]}`` messages (an operational disconnect,
say) are logged, not yielded, and end the connection, which is then reopened.

The bearer token is sent in the ``Authorization`` header and nowhere else: it is not in reprs,
logs or error messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from happyhashtags.errors import ConfigError, MissingExtraError, SourceError
from happyhashtags.sources.base import Batch, Clock, system_clock
from happyhashtags.sources.x_protocol import (
    LineSplitter,
    ReconnectPolicy,
    describe_problems,
    error_body_problems,
    http_error_message,
    is_json_value,
    scrub,
    stream_errors,
)

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("the X API sources", "x") from exc

if TYPE_CHECKING:
    from happyhashtags.config import Settings

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_EXPANSIONS",
    "DEFAULT_TWEET_FIELDS",
    "STREAM_PATHS",
    "XApiSource",
    "bearer_token",
    "check_base_url",
    "filtered_from_settings",
    "sample_from_settings",
    "user_agent",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.x.com"
DEFAULT_TWEET_FIELDS = "created_at,author_id,entities,referenced_tweets,lang,note_tweet"
DEFAULT_EXPANSIONS = "author_id,referenced_tweets.id"
STREAM_PATHS = {
    "x-filtered": "/2/tweets/search/stream",
    "x-sample": "/2/tweets/sample/stream",
}

Sleeper = Callable[[float], object]
"""Waits the given number of seconds (may return early when the source is closed)."""

_ERROR_BODY_LIMIT = 64 * 1024
# An HTTP header value may hold visible ASCII only; anything else is a broken token file, and
# httpx would put the whole header (the token) into its exception message.
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


def user_agent() -> str:
    """``happyhashtags/<version>``, sent with every request."""
    from happyhashtags import __version__

    return f"happyhashtags/{__version__}"


def check_base_url(url: str) -> str:
    """`url` without a trailing slash, or a ConfigError if it is not an http(s) URL."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(
            f"X_API_BASE_URL must be an http:// or https:// URL such as {DEFAULT_BASE_URL}, "
            f"got {url!r}"
        )
    return url


def bearer_token(settings: Settings) -> str:
    """The app-only bearer token: from ``x_token_file`` when set, else ``x_bearer_token``.

    Raises:
        ConfigError: there is none, or it cannot be read or is malformed (never showing it).
    """
    token: str | None = None
    if settings.x_token_file is not None:
        path = settings.x_token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigError(f"cannot read the X bearer token file {path}: {why}") from None
        if not token:
            raise ConfigError(f"the X bearer token file {path} is empty")
    elif settings.x_bearer_token is not None:
        token = settings.x_bearer_token.get_secret_value().strip() or None
    if token is None:
        raise ConfigError(
            "the X API needs an app-only bearer token: set X_BEARER_TOKEN (or API_BEARER_TOKEN), "
            "or pass --x-token-file FILE (env HAPPYHASHTAGS_X_TOKEN_FILE)"
        )
    if not _TOKEN_CHARACTERS.fullmatch(token):
        raise ConfigError(
            "the X bearer token holds spaces, line breaks or non-ASCII characters: a token file "
            "must hold the token alone"
        )
    return token


@dataclass(frozen=True, slots=True)
class _Ended:
    """Why a connection (attempt) ended."""

    kind: Literal["dropped", "network", "http", "rate_limited", "closed"]
    reason: str
    reset_at: float | None = None


class XApiSource:
    """An X API v2 stream (filtered or sample) as a `Source` of ``x`` format lines.

    Args:
        token: the app-only bearer token.
        stream: ``"x-filtered"`` or ``"x-sample"``.
        base_url: the API's base URL (tests point it at a fake server).
        tweet_fields, expansions: the ``tweet.fields`` and ``expansions`` request parameters.
        stall_timeout: seconds without data or keep-alive (X sends one every 20 s) after which
            the connection is taken for dead and reopened; also the read timeout.
        connect_timeout: seconds to open a TCP (and TLS) connection.
        policy: the reconnect schedule (a fresh `ReconnectPolicy` by default).
        clock: seconds since the epoch; stamps batches, times status lines, and is compared
            with ``x-rate-limit-reset``.
        sleep: waits between attempts. The default waits on an event that `close` sets, so
            closing ends a wait at once; an injected sleeper is not interrupted.
        status_interval: seconds of stream between "posts/s" status lines in the log.

    Example::

        source = XApiSource(token=token, stream="x-filtered")
        for batch in source.batches():
            ...
    """

    format = "x"

    def __init__(
        self,
        *,
        token: str,
        stream: str = "x-filtered",
        base_url: str = DEFAULT_BASE_URL,
        tweet_fields: str = DEFAULT_TWEET_FIELDS,
        expansions: str = DEFAULT_EXPANSIONS,
        stall_timeout: float = 25.0,
        connect_timeout: float = 10.0,
        policy: ReconnectPolicy | None = None,
        clock: Clock = system_clock,
        sleep: Sleeper | None = None,
        status_interval: float = 30.0,
    ) -> None:
        if stream not in STREAM_PATHS:
            raise ConfigError(f"unknown X stream {stream!r} (known: {', '.join(STREAM_PATHS)})")
        if stall_timeout <= 0:
            raise ConfigError(
                "x_stall_timeout must be more than 0 s (X sends keep-alives every 20 s)"
            )
        self.name = stream
        self.total: int | None = None
        self.base_url = check_base_url(base_url)
        self.url = self.base_url + STREAM_PATHS[stream]
        self.params = {
            name: value
            for name, value in (("tweet.fields", tweet_fields), ("expansions", expansions))
            if value
        }
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.status_interval = status_interval
        self._token = token
        self._clock = clock
        self._stop = threading.Event()
        self._sleep: Sleeper = sleep if sleep is not None else self._stop.wait
        self._response: httpx.Response | None = None
        self._window_start = 0.0
        self._window_posts = 0
        self.connections = 0
        """Connections established (HTTP 200) so far."""

    def __repr__(self) -> str:
        return f"XApiSource(stream={self.name!r}, url={self.url!r})"

    # -- the Source protocol ---------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        """Yield the stream's lines, reconnecting as needed, until `close` (or a fatal error).

        Raises:
            SourceError: the X API refused the request in a way retrying cannot fix (a bad
                token, no access, no rules, ...); the message says what to fix.
        """
        client = httpx.Client(
            headers={"Authorization": f"Bearer {self._token}", "User-Agent": user_agent()},
            timeout=httpx.Timeout(self.stall_timeout, connect=self.connect_timeout),
            follow_redirects=False,
            # A new connection for every reconnect: a pooled one the server already closed would
            # fail at once ("disconnected without sending a response") and cost a back-off step.
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        try:
            while not self._stop.is_set():
                ended = yield from self._connection(client)
                if ended.kind == "closed" or self._stop.is_set():
                    return
                delay = self._delay(ended)
                log.warning(
                    "%s: reconnecting in %s because %s", self.name, _seconds(delay), ended.reason
                )
                self._sleep(delay)
        finally:
            client.close()

    def close(self) -> None:
        """Stop: ends a wait between attempts and a blocked read at once. Safe from a signal
        handler and from another thread (only sets an event and shuts the socket down)."""
        self._stop.set()
        response = self._response
        if response is not None:
            _shutdown(response)

    # -- one connection ----------------------------------------------------------------------

    def _delay(self, ended: _Ended) -> float:
        policy = self.policy
        if ended.kind == "dropped":
            return policy.after_drop()
        if ended.kind == "http":
            return policy.after_http_error()
        if ended.kind == "rate_limited":
            return policy.after_rate_limit(reset_at=ended.reset_at, now=self._clock())
        return policy.after_network_error()

    def _connection(self, client: httpx.Client) -> Generator[Batch, None, _Ended]:
        request = client.build_request("GET", self.url, params=self.params)
        try:
            response = client.send(request, stream=True)
        except httpx.TransportError as exc:
            if self._stop.is_set():
                return _Ended("closed", "closed")
            return _Ended("network", f"connecting to {self.base_url} failed ({_describe(exc)})")
        try:
            if response.status_code != 200:
                return self._refused(response)
            self._response = response
            self.connections += 1
            log.info("%s: connected to %s", self.name, self.url)
            return (yield from self._read(response))
        finally:
            self._response = None
            response.close()

    def _read(self, response: httpx.Response) -> Generator[Batch, None, _Ended]:
        splitter = LineSplitter()
        chunks = response.iter_bytes()
        delivered = False
        ended: _Ended | None = None
        self._window_start, self._window_posts = self._clock(), 0
        while ended is None:
            if self._stop.is_set():
                return _Ended("closed", "closed")
            try:
                chunk = next(chunks, None)
            except httpx.ReadTimeout:
                ended = _Ended(
                    "dropped",
                    f"the stream stalled: no data or keep-alive for {_seconds(self.stall_timeout)}",
                )
                break
            except httpx.TransportError as exc:
                if self._stop.is_set():
                    return _Ended("closed", "closed")
                ended = _Ended("dropped", f"the connection was lost ({_describe(exc)})")
                break
            if chunk is None:
                if self._stop.is_set():
                    return _Ended("closed", "closed")
                ended = _Ended("dropped", "the server ended the stream")
                break
            lines = splitter.feed(chunk)
            if not lines:
                continue
            messages: list[bytes] = []
            for line in lines:
                if not line:
                    delivered = True  # a keep-alive: the connection is alive
                    continue
                errors = stream_errors(line)
                if errors is None:
                    messages.append(line)
                    continue
                text = scrub(describe_problems(errors), self._token)
                ended = _Ended("dropped", f"the X API sent an error in the stream: {text}")
            if messages:
                delivered = True
            if delivered:
                self.policy.reset()
            if messages:
                yield Batch(messages, self._clock(), self.name)
                self._count(len(messages))
            elif ended is None:
                # Only keep-alives (every 20 s on a quiet stream): an empty batch, so the engine
                # still flushes what it counted instead of waiting for the next post.
                yield Batch([], self._clock(), self.name)
        # A last line cut short by the drop is incomplete, unless it is whole JSON without its
        # "\r\n" (which X always sends, but a post that is all there is worth keeping).
        tail = splitter.pending.strip()
        if tail and is_json_value(tail) and stream_errors(tail) is None:
            yield Batch([tail], self._clock(), self.name)
            self._count(1)
        elif tail:
            log.debug("%s: dropped %d bytes of an incomplete line", self.name, len(tail))
        return ended

    def _count(self, posts: int) -> None:
        self._window_posts += posts
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= self.status_interval:
            log.info(
                "%s: %d posts in %s (%.1f posts/s)",
                self.name,
                self._window_posts,
                _seconds(elapsed),
                self._window_posts / elapsed,
            )
            self._window_start, self._window_posts = now, 0

    def _refused(self, response: httpx.Response) -> _Ended:
        """Classify a non-200 answer: a reason to wait and retry, or a fatal SourceError."""
        body = _read_body(response)
        status = response.status_code
        problems = error_body_problems(body)
        details = scrub(describe_problems(problems, body=body), self._token)
        said = f" ({details})" if details else ""
        if status == 429 and not any(p.type.endswith("/usage-capped") for p in problems):
            reset_at = _reset_header(response)
            why = f"the X API answered 429 Too Many Requests{said}"
            if any(p.connection_issue == "TooManyConnections" for p in problems):
                why += (
                    ": this app already has as many connections to the stream as allowed, "
                    "probably a stale one from before a restart, which X drops after a while"
                )
            if reset_at is not None:
                when = datetime.fromtimestamp(reset_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
                why += f"; the rate limit resets at {when} UTC (x-rate-limit-reset)"
            return _Ended("rate_limited", why, reset_at)
        if status >= 500 or status in (408, 420):
            return _Ended("http", f"the X API answered {status} {response.reason_phrase}{said}")
        message = http_error_message(
            status,
            response.reason_phrase,
            problems,
            body=body,
            base_url=self.base_url,
            stream=self.name,
        )
        raise SourceError(scrub(message, self._token))


def _read_body(response: httpx.Response) -> bytes:
    """Up to 64 KiB of an error body; what arrived if the connection fails meanwhile."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size >= _ERROR_BODY_LIMIT:
                break
    except httpx.TransportError:
        pass
    return b"".join(parts)[:_ERROR_BODY_LIMIT]


def _reset_header(response: httpx.Response) -> float | None:
    value = response.headers.get("x-rate-limit-reset")
    try:
        reset = float(value) if value is not None else None
    except ValueError:
        return None
    # Epoch seconds; anything else (negative, beyond year 5000) is a broken header.
    return reset if reset is not None and 0 < reset < 1e11 else None


def _shutdown(response: httpx.Response) -> None:
    # Shutting the socket down wakes a read blocked in another thread (closing it does not);
    # nothing else is touched, so this is safe from a signal handler.
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _describe(exc: httpx.TransportError) -> str:
    # httpx messages hold no headers; the class name says what failed when the message is empty.
    return str(exc) or type(exc).__name__


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value < 1000 else f"{value:.0f} s"


def _from_settings(settings: Settings, stream: str) -> XApiSource:
    return XApiSource(
        token=bearer_token(settings),
        stream=stream,
        base_url=settings.x_api_base_url,
        tweet_fields=settings.x_tweet_fields,
        expansions=settings.x_expansions,
        stall_timeout=settings.x_stall_timeout,
    )


def filtered_from_settings(settings: Settings, _spec: str) -> XApiSource:
    """``--source x-filtered``: ``GET /2/tweets/search/stream``."""
    return _from_settings(settings, "x-filtered")


def sample_from_settings(settings: Settings, _spec: str) -> XApiSource:
    """``--source x-sample``: ``GET /2/tweets/sample/stream`` (Enterprise access)."""
    return _from_settings(settings, "x-sample")
