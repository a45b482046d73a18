"""Queue URLs: nats://HOST:PORT/STREAM, clusters, credentials that never show, bad input."""

from __future__ import annotations

import pytest

from happyhashtags.errors import ConfigError
from happyhashtags.queue.url import parse_queue_url


def test_a_plain_url_names_one_server_and_the_stream() -> None:
    url = parse_queue_url("nats://127.0.0.1:4222/POSTS")
    assert url.servers == ("nats://127.0.0.1:4222",)
    assert url.stream == "POSTS"
    assert url.subject == "happyhashtags.POSTS"
    assert url.display == "nats://127.0.0.1:4222/POSTS"


def test_the_port_defaults_to_4222_and_tls_is_kept() -> None:
    assert parse_queue_url("tls://nats.example.org/S").servers == ("tls://nats.example.org:4222",)


def test_a_cluster_lists_every_host_with_the_credentials() -> None:
    url = parse_queue_url("nats://app:s3cret@n1:4222,n2:5222,[::1]/POSTS?subject=social.posts")
    assert url.servers == (
        "nats://app:s3cret@n1:4222",
        "nats://app:s3cret@n2:5222",
        "nats://app:s3cret@[::1]:4222",
    )
    assert url.subject == "social.posts"
    assert "s3cret" not in url.display
    assert "s3cret" not in repr(url)
    assert url.display == "nats://app:***@n1:4222,n2:5222,[::1]:4222/POSTS?subject=social.posts"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://h:4222/S", "use nats://HOST:PORT/STREAM"),
        ("nats://h:4222", "stream name is missing"),
        ("nats://h:4222/", "stream name is missing"),
        ("nats://h:4222/a.b", "invalid stream name"),
        ("nats://h:99999/S", "bad port"),
        ("nats://:4222/S", "host is missing"),
        ("nats://h/S?subject=a.*", "invalid subject"),
        ("nats://h/S?stream=x", "unknown parameter"),
    ],
)
def test_bad_urls_are_refused_with_a_hint(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_queue_url(text)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_queue_url("nats://user:hunter2@h:bad/S")
    assert "hunter2" not in str(caught.value)
