"""The compiled counter state (``happyhashtags._speedups``) against its pure-Python twins.

The twins define the behaviour; the compiled classes must give the same answers on the same
inputs. CI requires the compiled module: a build that silently fell back would test only one.
"""

from __future__ import annotations

import pickle
import platform
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags import aggregate
from happyhashtags.aggregate import COMPILED, PyRecentIds, id_key, restore_recent_ids
from happyhashtags.errors import DecodeError
from happyhashtags.formats.x import parse_v2_time
from happyhashtags.sessions import PySessionTracker
from happyhashtags.storage import Store
from services import IN_CI

if COMPILED:
    from happyhashtags._speedups import IdRing, SessionTable, parse_x_time
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


# -- sessions --------------------------------------------------------------------------------

# One step: ("admit", author, time, keys, happy, count?) or ("expire",) or ("pickle",).
_STEP = st.one_of(
    st.tuples(
        st.just("admit"),
        st.sampled_from(["a", "b", "c", "d", "é", "1234567890123", "did:plc:x" * 3]),
        st.integers(min_value=0, max_value=60).map(lambda t: t / 2),
        st.lists(st.sampled_from(["x", "y", "z", "xy", "long-hashtag-name", "ü"]), max_size=4),
        st.booleans(),
        st.booleans(),
    ),
    st.just(("expire",)),
    st.just(("pickle",)),
)


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(_STEP, max_size=60),
    gap=st.sampled_from([1.0, 3.0, 10.0, 1e9]),
    lateness=st.sampled_from([0.0, 2.0, 1e9]),
    expire_every=st.integers(min_value=1, max_value=20),
    max_sessions=st.integers(min_value=1, max_value=6),
    max_session_keys=st.integers(min_value=1, max_value=25),
)
def test_session_table_answers_as_the_python_twin(
    steps: list[tuple[object, ...]],
    gap: float,
    lateness: float,
    expire_every: int,
    max_sessions: int,
    max_session_keys: int,
) -> None:
    # Small limits, so that expiry by time, by session count and by hashtag count (with ties in
    # the least recent times) all happen often; pickling midway must change nothing.
    settings_ = dict(
        gap=gap,
        allowed_lateness=lateness,
        expire_every=expire_every,
        max_sessions=max_sessions,
        max_session_keys=max_session_keys,
    )
    compiled, python = SessionTable(**settings_), PySessionTracker(**settings_)
    for step in steps:
        if step[0] == "expire":
            assert compiled.expire() == python.expire()
        elif step[0] == "pickle":
            compiled = pickle.loads(pickle.dumps(compiled))
        else:
            _, author, t, keys, happy, count = step
            cells_c: dict[str, int] | None = {} if count else None
            cells_p: dict[str, int] | None = {} if count else None
            assert compiled.admit_into(cells_c, author, t, keys, happy) == python.admit_into(
                cells_p, author, t, keys, happy
            )
            assert cells_c == cells_p
        assert len(compiled) == len(python)
        assert compiled.key_count == python.key_count
        assert compiled.watermark == python.watermark


def test_session_table_survives_many_sessions_and_big_ones() -> None:
    # Past the first index sizes, with spam-like sessions of thousands of hashtags (the hash
    # table form of a session's hashtags), against the twin.
    rng = random.Random(3)
    compiled = SessionTable(gap=50.0, allowed_lateness=20.0, max_session_keys=30_000)
    python = PySessionTracker(gap=50.0, allowed_lateness=20.0, max_session_keys=30_000)
    for i in range(40_000):
        author = f"spam{i % 3}" if i % 4 == 0 else str(rng.randrange(5_000))
        keys = [f"t{rng.randrange(3_000 if author.startswith('spam') else 40)}"]
        happy = rng.random() < 0.3
        t = i / 200 + rng.random()
        cells_c: dict[str, int] = {}
        cells_p: dict[str, int] = {}
        compiled.admit_into(cells_c, author, t, keys, happy)
        python.admit_into(cells_p, author, t, keys, happy)
        assert cells_c == cells_p
    assert len(compiled) == len(python) > 1_000
    assert compiled.key_count == python.key_count
    restored = pickle.loads(pickle.dumps(compiled))
    assert (len(restored), restored.key_count) == (len(compiled), compiled.key_count)
    assert restored.admit("spam0", 400.0, ["t1"], happy=True) == python.admit(
        "spam0", 400.0, ["t1"], happy=True
    )


def test_session_table_refuses_a_gap_of_zero() -> None:
    with pytest.raises(ValueError, match="gap must be positive"):
        SessionTable(gap=0)


# -- X's created_at --------------------------------------------------------------------------


def _x_format(moment: datetime, digits: int) -> str:
    fraction = {0: "", 3: f".{moment.microsecond // 1000:03d}", 6: f".{moment.microsecond:06d}"}
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction[digits] + "Z"


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    digits=st.sampled_from([0, 3, 6]),
)
def test_x_times_parse_exactly_as_datetime_does(moment: datetime, digits: int) -> None:
    value = _x_format(moment, digits)
    fast = parse_x_time(value)
    assert fast is None or fast == parse_v2_time(value)  # the same float, to the last bit
    if 1970 <= moment.year < 2200:
        assert fast is not None  # X's own times take the compiled path


@settings(max_examples=500, deadline=None)
@given(
    base=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    position=st.integers(min_value=0, max_value=26),
    char=st.sampled_from(list("0123456789-:T.Z +x\u0663")),
    digits=st.sampled_from([0, 3, 6]),
)
def test_anything_else_is_left_to_parse_v2_time(
    base: datetime, position: int, char: str, digits: int
) -> None:
    # One character changed anywhere: the fast parser answers as datetime would, or not at all.
    value = _x_format(base, digits)
    value = value[:position] + char + value[position + 1 :]
    fast = parse_x_time(value)
    if fast is None:
        return
    try:
        expected = parse_v2_time(value)
    except DecodeError:
        pytest.fail(f"{value!r}: parsed as {fast}, which datetime refuses")
    assert fast == expected


def test_x_times_reject_impossible_dates() -> None:
    for value in ["2023-02-29T00:00:00.000Z", "2024-13-01T00:00:00.000Z", "2024-04-31T00:00:00Z"]:
        assert parse_x_time(value) is None
    assert parse_x_time("2024-02-29T23:59:59.999Z") == parse_v2_time("2024-02-29T23:59:59.999Z")


def test_without_the_compiled_module_the_package_counts_the_same(tmp_path: Path) -> None:
    # A build without a C compiler: importing _speedups fails, every twin falls back to Python.
    script = (
        "import sys; sys.modules['happyhashtags._speedups'] = None\n"
        "from happyhashtags.cli import main\n"
        "sys.argv = ['happyhashtags', *sys.argv[1:]]\n"
        "main()\n"
    )

    def run(database: Path, *pure: str) -> str:
        args = ["run", "--source", "demo", "--limit", "6000", "--top", "0", "--migrate"]
        done = subprocess.run(
            [sys.executable, "-c", script if pure else "from happyhashtags.cli import main; main()",
             *args, "--database", f"sqlite:///{database}"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return done.stdout

    version = subprocess.run(
        [sys.executable, "-c", script, "--version"], capture_output=True, text=True, check=True
    )
    assert "pure Python" in version.stdout
    run(tmp_path / "compiled.db")
    run(tmp_path / "pure.db", "pure")
    with Store(url=f"sqlite:///{tmp_path / 'compiled.db'}") as compiled:
        expected = compiled.counts()
    with Store(url=f"sqlite:///{tmp_path / 'pure.db'}") as pure:
        assert pure.counts() == expected
    assert len(expected) > 100


def test_wrong_types_are_type_errors_not_crashes() -> None:
    # The compiled classes read str internals directly: anything else must be refused first.
    table = SessionTable(gap=10.0)
    with pytest.raises(TypeError, match="author"):
        table.admit(None, 1.0, ["x"], happy=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hashtag key"):
        table.admit("a", 1.0, [b"x"], happy=False)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        table.admit("a", 1.0, [None], happy=False)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="post id"):
        IdRing(4).add(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        IdRing(4).add(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_x_time(None)  # type: ignore[arg-type]
    assert table.admit("a", 2.0, ["x"], happy=False) == [("x", 1, 0)]  # still usable


_RSS_AFTER_EXPIRY = """
import sys
from happyhashtags._speedups import SessionTable

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

table = SessionTable(gap=10.0, allowed_lateness=0.0, expire_every=10**9)
keys = [f"tag{k}" for k in range(1000)]  # a hash table of 2048 entries (16 KB) per session
for author in range(2000):  # old and new sessions side by side in the heap
    table.admit(f"a{author}", 0.0 if author % 2 else 100.0, keys, happy=False)
held = rss_kb()
table.admit("later", 100.0, [], happy=False)
assert table.expire() == 1000, "the old sessions expire"
print(held - rss_kb())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="reads VmRSS, and glibc alone keeps freed pages unless asked (malloc_trim)",
)
def test_expiry_hands_the_pages_of_dropped_sessions_back() -> None:
    # 1,000 dropped sessions free 16 MB in holes between live ones: glibc keeps such holes
    # (only the heap's top shrinks by itself) until the table trims after a sweep.
    freed_kb = int(
        subprocess.run(
            [sys.executable, "-c", _RSS_AFTER_EXPIRY], capture_output=True, text=True, check=True
        ).stdout
    )
    assert freed_kb > 8_000  # of 16,000: pages that a freed table only partly covers stay
