"""The ingest spool: durable, ordered, bounded, one user at a time, and it survives a torn write."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from happyhashtags.errors import ConfigError
from happyhashtags.queue.spool import Spool


def _items(n: int, start: int = 0, size: int = 10) -> list[tuple[float, str, str, bytes]]:
    return [
        (1000.0 + i, f"id{i}", "x", b"p" * size + str(i).encode()) for i in range(start, start + n)
    ]


def _drain(spool: Spool) -> list[str]:
    ids = []
    offset = spool.acked
    while records := spool.read(offset, 3):
        ids += [r.msg_id for r in records]
        offset = records[-1].end
    return ids


def test_records_come_back_in_order_with_their_fields(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=1 << 20) as spool:
        assert spool.append(_items(5)) == 5
        records = spool.read(spool.acked, 10)
    assert [r.msg_id for r in records] == [f"id{i}" for i in range(5)]
    assert records[2].received_at == 1002.0
    assert records[2].format == "x"
    assert records[2].payload == b"pppppppppp2"
    assert records[0].end == records[1].offset


def test_acknowledged_records_are_not_read_again_after_reopening(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=1 << 20) as spool:
        spool.append(_items(6))
        third = spool.read(spool.acked, 3)[-1]
        spool.acknowledge(third.end)
    with Spool(directory=tmp_path, max_bytes=1 << 20) as spool:
        assert _drain(spool) == ["id3", "id4", "id5"]
        assert spool.pending_bytes > 0


def test_a_torn_record_at_the_end_is_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(directory=tmp_path, max_bytes=1 << 20) as spool:
        spool.append(_items(3))
    segment = next(tmp_path.glob("*.journal"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-4])  # a crash in the middle of the last write
    with caplog.at_level(logging.WARNING), Spool(directory=tmp_path, max_bytes=1 << 20) as spool:
        assert _drain(spool) == ["id0", "id1"]
        spool.append(_items(1, start=9))
        assert _drain(spool) == ["id0", "id1", "id9"]
    assert "torn record" in caplog.text


def test_segments_rotate_and_wholly_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        for i in range(10):
            spool.append(_items(2, start=2 * i))
        assert len(list(tmp_path.glob("*.journal"))) > 3
        assert _drain(spool) == [f"id{i}" for i in range(20)]
        spool.acknowledge(spool.end)
        spool.save()
        assert len(list(tmp_path.glob("*.journal"))) == 1
        assert spool.pending_bytes == 0
    with Spool(directory=tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert _drain(spool) == []
        spool.append(_items(1, start=50))
        assert _drain(spool) == ["id50"]


def test_a_full_spool_blocks_the_writer_until_records_are_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(directory=tmp_path, max_bytes=200)
    spool.append(_items(4, size=20))  # about 170 bytes with headers
    written = threading.Event()

    def writer() -> None:
        spool.append(_items(2, start=4, size=20))
        written.set()

    with caplog.at_level(logging.ERROR):
        thread = threading.Thread(target=writer)
        thread.start()
        assert not written.wait(0.5)
        assert "STOPPED READING THE SOURCE" in caplog.text
        first = spool.read(spool.acked, 4)
        spool.acknowledge(first[-1].end)
        assert written.wait(5)
        thread.join()
    assert _drain(spool) == ["id4", "id5"]
    spool.close()


def test_a_waiting_writer_gives_up_when_asked_to_stop(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=100) as spool:
        assert spool.append(_items(2, size=20)) == 2  # about 90 bytes
        stop = threading.Event()
        stop.set()
        assert spool.append(_items(3, start=3, size=20), stopping=stop) == 0


def test_an_empty_spool_takes_a_record_larger_than_its_cap(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=50) as spool:
        assert spool.append(_items(1, size=500)) == 1


def test_only_one_ingest_uses_a_spool_directory(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_bytes=1 << 20), pytest.raises(ConfigError, match="in use"):
        Spool(directory=tmp_path, max_bytes=1 << 20)
