"""The compiled counter state (``happyhashtags._speedups``) against its pure-Python twins.

The twins define the behaviour; the compiled classes must give the same answers on the same
inputs. CI requires the compiled module: a build that silently fell back would test only one.
"""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags import aggregate
from happyhashtags.aggregate import COMPILED, PyRecentIds, id_key, restore_recent_ids
from services import IN_CI

if COMPILED:
    from happyhashtags._speedups import IdRing
elif IN_CI:
    pytest.fail(
        "happyhashtags._speedups is not built (needs a C compiler at install time)",
        pytrace=False,
    )
else:
    pytest.skip("happyhashtags._speedups is not built", allow_module_level=True)

# Ids of every kind `id_key` tells apart: X's digits (with 0, leading zeros, the 19-digit edge
# and one past it), other digits that `isdecimal` accepts, and arbitrary strings.
_IDS = st.one_of(
    st.integers(min_value=0, max_value=40).map(str),
    st.sampled_from(["0", "00", "007", "9" * 19, "9" * 20, "1" * 19, "", "١٢٣", "abc", "a1"]),
    st.text(max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=-1, max_value=12), ids=st.lists(_IDS, max_size=80))
def test_id_ring_answers_as_the_python_twin(capacity: int, ids: list[str]) -> None:
    compiled, python = IdRing(capacity), PyRecentIds(capacity)
    assert [compiled.add(x) for x in ids] == [python.add(x) for x in ids]
    assert len(compiled) == len(python)
    assert list(compiled.keys()) == list(python.keys())


def test_id_ring_churns_through_growth_and_deletions_like_the_twin() -> None:
    # Many more ids than the capacity, from a pool a few times larger: the hash table grows,
    # and every add past the capacity deletes the oldest key (with backward shifts).
    rng = random.Random(7)
    compiled, python = IdRing(5_000), PyRecentIds(5_000)
    for _ in range(60_000):
        post_id = str(rng.randrange(20_000) * 7919 + (1 << 62))
        assert compiled.add(post_id) == python.add(post_id)
    assert len(compiled) == len(python) == 5_000
    assert list(compiled.keys()) == list(python.keys())


def test_keys_are_the_ones_id_key_makes() -> None:
    ring = IdRing(10)
    for post_id in ["1780000000000000000", "at://did:plc:x/app.bsky.feed.post/3k", "0"]:
        ring.add(post_id)
    assert list(ring.keys()) == [
        id_key(x) for x in ["1780000000000000000", "at://did:plc:x/app.bsky.feed.post/3k", "0"]
    ]


@pytest.mark.parametrize("source", [IdRing, PyRecentIds])
@pytest.mark.parametrize("target", [IdRing, PyRecentIds], ids=["into-compiled", "into-python"])
def test_pickles_load_into_either_twin(
    source: type[IdRing] | type[PyRecentIds],
    target: type[IdRing] | type[PyRecentIds],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A snapshot taken where the module was built must load where it was not, and back.
    ids = source(3)
    for x in ["1", "2", "x", "3"]:
        ids.add(x)
    monkeypatch.setattr(aggregate, "RecentIds", target)
    restored = pickle.loads(pickle.dumps(ids))
    assert type(restored) is target
    assert restored.capacity == 3
    assert list(restored.keys()) == list(ids.keys())
    assert [restored.add(x) for x in ["2", "x", "3", "1"]] == [False, False, False, True]


def test_restore_keeps_the_newest_keys_when_capacity_shrank() -> None:
    ring = restore_recent_ids(2, PyRecentIds(5).keys())
    assert len(ring) == 0
    python = PyRecentIds(5)
    for x in "12345":
        python.add(x)
    ring = restore_recent_ids(2, python.keys())
    assert list(ring.keys()) == [4, 5]


def test_version_says_the_speedups_are_compiled() -> None:
    from click.testing import CliRunner

    from happyhashtags.cli import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "(compiled speedups)" in result.output
