"""The pure half of the X API v2 streaming client: reconnect schedules, line splitting and error
bodies. No I/O and no clock of its own, so every rule here is tested in microseconds.

`happyhashtags.sources.x_api` wires these to HTTP; `happyhashtags.x_rules` shares the error
descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = [
    "LineSplitter",
    "Problem",
    "ReconnectPolicy",
    "describe_problems",
    "error_body_problems",
    "http_error_message",
    "is_json_value",
    "scrub",
    "stream_errors",
]


@dataclass(slots=True)
class ReconnectPolicy:
    """How long to wait before reconnecting, following X's "Handling disconnections" guidance.

    ============================  ===============================================================
    what happened                 wait
    ============================  ===============================================================
    an established connection     nothing, once; if the reconnected stream fails again before it
    dropped (also: a stall, an    delivers data, the TCP/IP schedule
    in-stream disconnect error)
    TCP/IP error (refused, reset  linear: 0.25 s, 0.5 s, 0.75 s, ... up to 16 s
    before any response)
    retryable HTTP error (5xx)    exponential: 5 s, 10 s, 20 s, ... up to 320 s
    HTTP 429                      until ``x-rate-limit-reset`` (+ `rate_limit_margin`) when the
                                  header is in the future, else exponential: 60 s, 120 s, ...
                                  up to 960 s
    ============================  ===============================================================

    Call `reset` once a connection has delivered data (a post or a keep-alive): every schedule
    starts again from its first step.

    >>> policy = ReconnectPolicy()
    >>> [policy.after_http_error() for _ in range(3)]
    [5.0, 10.0, 20.0]
    """

    network_step: float = 0.25
    network_max: float = 16.0
    http_first: float = 5.0
    http_max: float = 320.0
    rate_limit_first: float = 60.0
    rate_limit_max: float = 960.0
    rate_limit_margin: float = 1.0
    _network_failures: int = 0
    _http_failures: int = 0
    _rate_limited: int = 0
    _may_reconnect_at_once: bool = True

    def reset(self) -> None:
        """A connection delivered data: the next drop reconnects at once, back-offs start over."""
        self._network_failures = self._http_failures = self._rate_limited = 0
        self._may_reconnect_at_once = True

    def after_drop(self) -> float:
        """An established (HTTP 200) connection ended."""
        if self._may_reconnect_at_once:
            self._may_reconnect_at_once = False
            return 0.0
        return self.after_network_error()

    def after_network_error(self) -> float:
        """Connecting failed below HTTP: refused, reset, timed out, closed without a response."""
        self._network_failures += 1
        return min(self.network_step * self._network_failures, self.network_max)

    def after_http_error(self) -> float:
        """The server answered with a status worth retrying (5xx and the like)."""
        self._http_failures += 1
        return min(self.http_first * 2.0 ** (self._http_failures - 1), self.http_max)

    def after_rate_limit(self, *, reset_at: float | None, now: float) -> float:
        """The server answered 429; `reset_at` is ``x-rate-limit-reset`` (epoch seconds) if sent.

        Never returns less than ``reset_at - now`` when `reset_at` is in the future.
        """
        self._rate_limited += 1
        if reset_at is not None and reset_at > now:
            return reset_at - now + self.rate_limit_margin
        return min(self.rate_limit_first * 2.0 ** (self._rate_limited - 1), self.rate_limit_max)


class LineSplitter:
    """Cuts a byte stream into lines at ``\\n`` (X sends ``\\r\\n``; the ``\\r`` is removed).

    Chunks may end anywhere, inside a line or a UTF-8 sequence: bytes are kept until their line
    is complete, and a newline byte never occurs inside a UTF-8 sequence, so every line returned
    is whole. Blank lines (X's keep-alives) are returned as ``b""``.

    >>> splitter = LineSplitter()
    >>> splitter.feed(b'{"a":1}\\r\\n\\r\\n{"b"'), splitter.feed(b':2}\\r\\n')
    ([b'{"a":1}', b''], [b'{"b":2}'])
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes, in order."""
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            self._pending.append(rest)
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    @property
    def pending(self) -> bytes:
        """The bytes of the unfinished last line."""
        return b"".join(self._pending)


class Problem(msgspec.Struct, frozen=True):
    """One error object as the X API sends them (in error bodies, in rule results, in streams).

    X uses several shapes; every field is optional and unknown fields are ignored.
    """

    title: str = ""
    detail: str = ""
    type: str = ""
    message: str = ""
    disconnect_type: str = ""
    connection_issue: str = ""
    reason: str = ""
    value: str | None = None
    id: str | None = None
    details: list[str] = []
    errors: list[Problem] = []

    def describe(self) -> str:
        """One line: title, detail and the other explanations X gave."""
        heading = self.title or self.connection_issue or self.reason
        texts = [t for t in (self.detail, self.message, *self.details) if t and t != heading]
        texts += [e.describe() for e in self.errors]
        body = "; ".join(dict.fromkeys(t.rstrip(".") for t in texts))
        text = f"{heading}: {body}" if heading and body else heading or body
        kind = self.disconnect_type or self.connection_issue
        if kind and kind != heading:
            text += f" ({kind})"
        if self.value is not None:
            rule = f"rule {self.value!r}" + (f" (id {self.id})" if self.id else "")
            text = f"{rule}: {text}" if text else rule
        return text or "no details"


class _Body(msgspec.Struct):
    """A whole error body: a problem at the top level, an ``errors`` list, or both."""

    title: str = ""
    detail: str = ""
    type: str = ""
    connection_issue: str = ""
    reason: str = ""
    data: msgspec.Raw | None = None
    errors: list[Problem] | None = None


_body_decoder = msgspec.json.Decoder(_Body)


def stream_errors(line: bytes) -> list[Problem] | None:
    """The errors of an in-stream errors-only message (``{"errors": [...]}``, such as an
    operational disconnect), or None for anything else, posts with partial errors included."""
    if b'"errors"' not in line:
        return None
    try:
        message = _body_decoder.decode(line)
    except msgspec.DecodeError:
        return None
    if message.data is not None or not message.errors:
        return None
    return message.errors


def error_body_problems(body: bytes) -> list[Problem]:
    """The problems an HTTP error body describes (empty if it is not X's JSON)."""
    try:
        parsed = _body_decoder.decode(body)
    except msgspec.DecodeError:
        return []
    problems: list[Problem] = []
    if parsed.title or parsed.detail:
        problems.append(
            Problem(
                title=parsed.title,
                detail=parsed.detail,
                type=parsed.type,
                connection_issue=parsed.connection_issue,
                reason=parsed.reason,
            )
        )
    problems.extend(parsed.errors or ())
    return problems


def describe_problems(problems: list[Problem], *, body: bytes = b"") -> str:
    """Problems as one line; falls back to the start of a body that was not X's JSON."""
    if problems:
        return "; ".join(p.describe() for p in problems)
    text = body.decode("utf-8", "replace").strip()
    return (text[:200] + "...") if len(text) > 200 else text


def is_json_value(line: bytes) -> bool:
    """Whether `line` is one complete JSON value (a truncated object never is)."""
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True


def scrub(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced, in case a server echoes it."""
    return text.replace(secret, "[redacted]") if secret else text


def http_error_message(
    status: int,
    reason: str,
    problems: list[Problem],
    *,
    body: bytes,
    base_url: str,
    stream: str | None = None,
) -> str:
    """What to tell a user about an HTTP error from the X API, saying what to fix.

    `stream` is ``"x-filtered"`` or ``"x-sample"`` for a stream request, None for the rules.
    """
    what = {"x-filtered": "the filtered stream", "x-sample": "the sample stream"}.get(
        stream or "", "the rules request"
    )
    details = describe_problems(problems, body=body)
    said = f" ({details})" if details else ""
    issues = {p.connection_issue for p in problems} | {p.reason for p in problems}
    kinds = {p.type.rsplit("/", 1)[-1] for p in problems if p.type}
    if status == 401:
        return (
            f"the X API rejected the bearer token (401 Unauthorized){said}: check X_BEARER_TOKEN "
            "(or API_BEARER_TOKEN, or the --x-token-file); it must be the app-only bearer token "
            "of an app in a Project"
        )
    if status == 403:
        enterprise = " (the sample stream needs Enterprise access)" if stream == "x-sample" else ""
        return (
            f"the X API refused access to {what} (403 Forbidden){said}: your app's access level "
            f"may not include this endpoint{enterprise}, or the app is not attached to a Project"
        )
    if status == 409 and "RuleConfigurationIssue" in issues:
        return (
            f"the filtered stream has no rules (409 Conflict){said}: add some with "
            "'happyhashtags x-rules add VALUE' or set x_rules and run 'happyhashtags x-rules sync'"
        )
    if status == 404:
        return (
            f"the X API answered {what} with 404 Not Found{said}: check X_API_BASE_URL ({base_url})"
        )
    if status == 429 and "usage-capped" in kinds:
        return (
            f"the X API usage cap of this app is reached (429){said}: wait for the cap to reset "
            "or raise it (add credits on pay-per-use) in the developer console"
        )
    if status == 400:
        hint = ": check x_tweet_fields and x_expansions" if stream else ""
        return f"the X API rejected {what} (400 Bad Request){said}{hint}"
    label = f"{status} {reason}".strip()
    return f"the X API answered {what} with {label}{said}"
