"""The built-in demo stream: seeded, deterministic, synthetic X API v2 stream messages.

Hashtag popularity follows a Zipf-like law over a vocabulary with Unicode and mixed-case spellings;
posts carry happy and unhappy markers, some are retweets (with the original in ``includes``, as the
X API sends them), and a few spam accounts repeat one hashtag over and over. Used by ``make run``,
the tests and the benchmarks.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from happyhashtags.model import Checkpoint
from happyhashtags.sources.base import Batch, Clock, system_clock

if TYPE_CHECKING:
    from happyhashtags.config import Settings

__all__ = ["DEFAULT_START", "DemoSource", "ResumableDemoSource", "generate_messages"]

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

_BASE_TAGS = [
    "Python",
    "Caturday",
    "MondayMotivation",
    "café",
    "München",
    "straße",
    "ñandú",
    "東京",
    "Ελλάδα",
    "москва",
    "SummerVibes",
    "100DaysOfCode",
    "OpenData",
    "Sunshine",
    "WorldCup",
    "Coffee",
    "GoodMorning",
    "Música",
    "Pokémon",
    "İstanbul",
    "São_Paulo",
    "おはよう",
    "BTS",
    "DataScience",
    "Rust",
    "Gardening",
    "Weekend",
    "FridayFeeling",
    "NoFilter",
    "Travel",
]
_WORDS = [
    "today",
    "the",
    "a",
    "new",
    "my",
    "our",
    "just",
    "what",
    "great",
    "long",
    "day",
    "with",
    "friends",
    "work",
    "coffee",
    "rain",
    "sun",
    "morning",
    "city",
    "music",
    "game",
    "team",
    "love",
    "this",
    "that",
    "finally",
    "again",
    "never",
    "always",
    "cannot",
    "wait",
    "tired",
    "happy",
]
_HAPPY = [":)", ":)", ":)", "😊", "👍🏽", "❤️", "🎉"]
_UNHAPPY = [":(", "😢", "😡", ":/"]


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    tags = list(_BASE_TAGS)
    syllables = [
        "ka",
        "lo",
        "mi",
        "su",
        "te",
        "ra",
        "vo",
        "ni",
        "pe",
        "zu",
        "an",
        "el",
        "or",
        "ix",
        "um",
    ]
    while len(tags) < size:
        tags.append("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return tags


def _spelling(rng: random.Random, tag: str) -> str:
    roll = rng.random()
    if roll < 0.1:
        return tag.upper()
    if roll < 0.2:
        return tag.lower()
    return tag


def generate_messages(
    count: int,
    *,
    seed: int = 42,
    start: datetime = DEFAULT_START,
    rate: float = 2.0,
    vocabulary: int = 5000,
    authors: int = 2000,
    spammers: int = 10,
) -> Iterator[bytes]:
    """Yield `count` X API v2 stream messages (JSON, no newline), the same ones for the same seed.

    `rate` is posts per second of event time, so `count / rate` seconds of stream are simulated.
    """
    rng = random.Random(seed)
    tags = _vocabulary(rng, vocabulary)
    cumulative = list(itertools.accumulate(1.0 / (k**1.1) for k in range(1, len(tags) + 1)))
    total_weight = cumulative[-1]
    spam_tags = [rng.choice(tags[:50]) for _ in range(spammers)]
    t0 = start.timestamp()
    encode = msgspec.json.encode
    tweet_id = 1_700_000_000_000_000_000 + seed * 10_000_000_000

    def pick_tag() -> str:
        return tags[bisect.bisect_left(cumulative, rng.random() * total_weight)]

    for i in range(count):
        tweet_id += rng.randint(1, 5000)
        jitter = rng.uniform(-2.0, 2.0)
        event = max(t0, t0 + i / rate + jitter)
        created = datetime.fromtimestamp(event, tz=UTC)
        spam = spammers and rng.random() < 0.05
        if spam:
            author_index = rng.randrange(spammers)
            author = f"9{author_index:05d}"
            hashtags = [spam_tags[author_index]]
        else:
            author = str(10_000 + int(authors * rng.random() ** 2))
            hashtags = [pick_tag() for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 3)))]
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        mood = rng.random()
        if mood < 0.3:
            words.append(rng.choice(_HAPPY))
        elif mood < 0.45:
            words.append(rng.choice(_UNHAPPY))
        text_parts = [*words]
        entities = []
        for tag in hashtags:
            spelled = _spelling(rng, tag)
            position = sum(len(p) + 1 for p in text_parts)
            text_parts.append("#" + spelled)
            entities.append({"start": position, "end": position + len(spelled) + 1, "tag": spelled})
        text = " ".join(text_parts)
        data: dict[str, object] = {
            "id": str(tweet_id),
            "text": text,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "author_id": author,
            "edit_history_tweet_ids": [str(tweet_id)],
            "lang": "en",
        }
        if entities:
            data["entities"] = {"hashtags": entities}
        # expansions=author_id puts the author's user object in includes, as X sends it.
        users = [{"id": author, "name": f"User {author}", "username": f"user{author}"}]
        message: dict[str, object] = {"data": data, "includes": {"users": users}}
        if not spam and rng.random() < 0.1:
            # A retweet: X truncates the retweet's text and puts the original in includes.
            original_id = str(tweet_id - rng.randint(10_000, 10_000_000))
            original_author = str(10_000 + rng.randrange(authors))
            original_created = created - timedelta(minutes=rng.randint(1, 600))
            retweet_text = f"RT @user{original_author}: {text}"[:140]
            data["text"] = retweet_text
            data.pop("entities", None)
            data["referenced_tweets"] = [{"type": "retweeted", "id": original_id}]
            original: dict[str, object] = {
                "id": original_id,
                "text": text,
                "author_id": original_author,
                "created_at": original_created.isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z"
                ),
                "edit_history_tweet_ids": [original_id],
            }
            if entities:
                original["entities"] = {"hashtags": entities}
            users.append(
                {
                    "id": original_author,
                    "name": f"User {original_author}",
                    "username": f"user{original_author}",
                }
            )
            message["includes"] = {"users": users, "tweets": [original]}
        if rng.random() < 0.05:
            message["matching_rules"] = [{"id": "1", "tag": "demo"}]
        yield encode(message)


class DemoSource:
    """The demo stream as a source (``--source demo``).

    Each line's cursor is its number in the stream, so `ResumableDemoSource` can pick up where
    the counts in a database end.
    """

    name = "demo"
    format = "x"

    def __init__(
        self,
        *,
        count: int = 20_000,
        seed: int = 42,
        start: datetime = DEFAULT_START,
        rate: float = 2.0,
        clock: Clock = system_clock,
        batch_size: int = 2048,
    ) -> None:
        self.total: int | None = count
        self._count = count
        self._seed = seed
        self._start = start
        self._rate = rate
        self._clock = clock
        self._batch_size = batch_size
        self._closed = False
        self._counted = 0  # lines before this were counted by an earlier run

    def batches(self) -> Iterator[Batch]:
        messages = generate_messages(
            self._count, seed=self._seed, start=self._start, rate=self._rate
        )
        line_no = 1
        if self._counted >= self._count:
            return  # all counted before: nothing to rebuild sessions for
        while not self._closed:
            lines = list(itertools.islice(messages, self._batch_size))
            if not lines:
                return
            now = self._clock()
            end = line_no + len(lines)
            # Lines counted before are replayed (to rebuild sessions), not counted again.
            split = min(max(self._counted + 1 - line_no, 0), len(lines))
            if split:
                cursors = range(line_no, line_no + split)
                yield Batch(lines[:split], now, "demo", line_no, cursors, replay=True)
            if split < len(lines):
                cursors = range(line_no + split, end)
                yield Batch(lines[split:], now, "demo", line_no + split, cursors)
            line_no = end

    def close(self) -> None:
        self._closed = True


class ResumableDemoSource(DemoSource):
    """The demo stream, resumable: run it twice into one database and nothing counts twice.

    This makes ``make run`` idempotent: a second run finds the demo already counted.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.consumer = f"demo:{self._seed}:{self._count}"

    def resume(self, checkpoint: Checkpoint | None) -> None:
        self._counted = checkpoint.position if checkpoint is not None else 0
        if self._counted:
            log.info(
                "the demo's first %d posts are already counted in this database: skipping them",
                self._counted,
            )

    def checkpoint_state(self, position: int) -> str | None:
        return None

    def committed(self, position: int) -> None:
        """Nothing to acknowledge: the demo is generated again on every run."""


def from_settings(settings: Settings, _spec: str) -> DemoSource:
    """``--source demo``: resumable in one process; with ``--workers`` each run counts it anew."""
    if settings.workers > 1:
        return DemoSource(count=settings.demo_count, seed=settings.demo_seed)
    return ResumableDemoSource(count=settings.demo_count, seed=settings.demo_seed)
