"""Queue URLs: ``nats://HOST:PORT/STREAM`` names a NATS server (or cluster) and a JetStream stream.

Accepted forms::

    nats://127.0.0.1:4222/POSTS
    nats://user:secret@nats-1:4222,nats-2:4222,nats-3:4222/POSTS     # a cluster, credentials
    tls://nats.example.org/POSTS?subject=social.posts                # TLS, explicit subject

The port defaults to 4222. The subject defaults to ``happyhashtags.<STREAM>``; `subject` matters
only when `ingest` creates the stream (or publishes to a stream made by someone else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from happyhashtags.errors import ConfigError

__all__ = ["DEFAULT_PORT", "QueueURL", "parse_queue_url"]

DEFAULT_PORT = 4222
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SUBJECT = re.compile(r"^[^\s*>.]+(\.[^\s*>.]+)*$")
_SCHEMES = ("nats", "tls")
_EXAMPLE = "nats://HOST:PORT/STREAM, like nats://127.0.0.1:4222/POSTS"


@dataclass(frozen=True, slots=True)
class QueueURL:
    """A parsed queue URL.

    Attributes:
        servers: server URLs for the NATS client, with credentials if the URL had any.
        stream: the JetStream stream's name.
        subject: the subject `ingest` publishes to.
        display: the URL with any password masked, safe to log.
    """

    servers: tuple[str, ...]
    stream: str
    subject: str
    display: str

    def __repr__(self) -> str:
        # Never show credentials, not even in a traceback's locals.
        return f"QueueURL({self.display!r})"

    def __str__(self) -> str:
        return self.display


def _host_port(part: str, url_for_error: str) -> tuple[str, int]:
    if part.startswith("["):  # IPv6 literal: [::1]:4222
        host, _, rest = part[1:].partition("]")
        host = f"[{host}]"
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = part.partition(":")
    if not host or host == "[]":
        raise ConfigError(f"invalid queue URL {url_for_error!r}: a host is missing ({_EXAMPLE})")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"invalid queue URL {url_for_error!r}: bad port {port_text!r}")
    return host, int(port_text)


def parse_queue_url(url: str) -> QueueURL:
    """Parse ``nats://[user[:password]@]HOST[:PORT][,HOST[:PORT]...]/STREAM[?subject=SUBJECT]``.

    >>> parse_queue_url("nats://127.0.0.1:4222/POSTS").servers
    ('nats://127.0.0.1:4222',)

    Raises:
        ConfigError: the URL is not of that form; the message never shows a password.
    """
    scheme, sep, rest = url.strip().partition("://")
    masked = _mask(url.strip())
    if not sep or scheme.lower() not in _SCHEMES:
        raise ConfigError(f"invalid queue URL {masked!r}: use {_EXAMPLE}")
    scheme = scheme.lower()
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    stream = unquote(path.strip("/"))
    if not stream:
        raise ConfigError(f"invalid queue URL {masked!r}: the stream name is missing ({_EXAMPLE})")
    if not _STREAM_NAME.match(stream):
        raise ConfigError(
            f"invalid stream name {stream!r} in the queue URL: use letters, digits, '-' and '_'"
        )
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"subject"})
    if unknown:
        raise ConfigError(f"invalid queue URL {masked!r}: unknown parameter {unknown[0]!r}")
    subject = params.get("subject", [f"happyhashtags.{stream}"])[-1]
    if not _SUBJECT.match(subject):
        raise ConfigError(f"invalid subject {subject!r}: use dot-separated tokens, no wildcards")
    credentials = f"{userinfo}@" if userinfo else ""
    servers = []
    shown = []
    for part in hosts.split(","):
        host, port = _host_port(part.strip(), masked)
        servers.append(f"{scheme}://{credentials}{host}:{port}")
        shown.append(f"{host}:{port}")
    user = userinfo.partition(":")[0]
    shown_credentials = (f"{user}:***@" if ":" in userinfo else "***@") if userinfo else ""
    display = f"{scheme}://{shown_credentials}{','.join(shown)}/{stream}"
    if "subject" in params:
        display += f"?subject={subject}"
    return QueueURL(servers=tuple(servers), stream=stream, subject=subject, display=display)


def _mask(url: str) -> str:
    """`url` with whatever sits before an ``@`` replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"
