"""Ingest's on-disk journal: every line read from the source is appended here first (and fsynced),
then published to JetStream from here, in order; a line leaves the journal only once JetStream has
acknowledged it.

So ingest keeps reading its source while NATS is unreachable (the journal grows, up to
`max_bytes`), drains in order when NATS is back, and loses nothing it read if it is killed: the
next ingest with the same journal publishes what was not acknowledged (JetStream drops the
repeats by their ``Nats-Msg-Id``).

Layout of the directory: segment files ``<first offset, 20 digits>.journal`` holding records, and
``acked`` holding the offset of the first record not yet acknowledged. Offsets are byte positions
in the concatenation of all segments ever written, so they only grow. A record is::

    u32 crc32(body) | u32 len(body) | body = f64 received_at | u16 len(id) | u8 len(format)
                                             | id | format | payload

A record torn by a crash fails its length or CRC check and is cut off when the journal is opened.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from happyhashtags.errors import ConfigError, SourceError

__all__ = ["Spool", "SpoolRecord"]

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_BODY = struct.Struct("<dHB")
_SUFFIX = ".journal"
_MAX_RECORD = 64 << 20


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One journaled message: where it is, and what to publish."""

    offset: int
    end: int
    received_at: float
    msg_id: str
    format: str
    payload: bytes


def _encode(received_at: float, msg_id: str, fmt: str, payload: bytes) -> bytes:
    mid, fm = msg_id.encode(), fmt.encode()
    body = b"".join((_BODY.pack(received_at, len(mid), len(fm)), mid, fm, payload))
    return _FRAME.pack(zlib.crc32(body), len(body)) + body


def _decode(offset: int, body: bytes) -> SpoolRecord:
    received_at, id_len, fmt_len = _BODY.unpack_from(body)
    start = _BODY.size
    msg_id = body[start : start + id_len].decode()
    fmt = body[start + id_len : start + id_len + fmt_len].decode()
    payload = body[start + id_len + fmt_len :]
    return SpoolRecord(offset, offset + _FRAME.size + len(body), received_at, msg_id, fmt, payload)


def _read_record(handle: BinaryIO, offset: int, limit: int) -> SpoolRecord | None:
    """The record at the handle's position, or None if what is there is not a whole record."""
    if limit - offset < _FRAME.size:
        return None
    frame = handle.read(_FRAME.size)
    if len(frame) < _FRAME.size:
        return None
    crc, length = _FRAME.unpack(frame)
    if length < _BODY.size or length > _MAX_RECORD or offset + _FRAME.size + length > limit:
        return None
    body = handle.read(length)
    if len(body) < length or zlib.crc32(body) != crc:
        return None
    return _decode(offset, body)


class Spool:
    """An append-only journal of messages waiting for JetStream's acknowledgement.

    One writer thread calls `append`; one reader (the publisher) calls `read`, `acknowledge` and
    `save`. `append` blocks while the unacknowledged bytes would pass `max_bytes` (saying so
    loudly): the caller then stops reading its source instead of dropping anything.

    >>> spool = Spool(directory=tmp / "spool", max_bytes=1 << 20)  # doctest: +SKIP
    >>> spool.append([(1.7e9, "1", "x", b'{"data": ...}')])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        directory: Path,
        max_bytes: int,
        segment_bytes: int | None = None,
        durable: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(64 << 20, max(max_bytes // 4, 64 << 10))
        self.durable = durable
        self.on_append: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._full_since_logged = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = (self.directory / "lock").open("a+b")
        except OSError as exc:
            raise ConfigError(f"cannot use the spool directory {self.directory}: {exc}") from None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise ConfigError(
                f"the spool directory {self.directory} is in use by another ingest: give each "
                "ingest its own --spool-dir"
            ) from None
        self._starts: list[int] = []
        self._recover()
        self._reader: tuple[int, BinaryIO] | None = None
        self._saved = self._acked

    # -- opening ------------------------------------------------------------------------------

    def _segment_path(self, start: int) -> Path:
        return self.directory / f"{start:020d}{_SUFFIX}"

    def _recover(self) -> None:
        for path in self.directory.glob(f"*{_SUFFIX}"):
            stem = path.name.removesuffix(_SUFFIX)
            if stem.isdigit():
                self._starts.append(int(stem))
        self._starts.sort()
        acked_path = self.directory / "acked"
        acked: int | None = None
        if acked_path.exists():
            text = acked_path.read_text().strip()
            acked = int(text) if text.isdigit() else None
        if not self._starts:
            start = acked or 0
            self._starts.append(start)
            self._segment_path(start).touch()
        last = self._starts[-1]
        path = self._segment_path(last)
        size = path.stat().st_size
        valid = last
        with path.open("rb") as handle:
            while _read_record(handle, valid, last + size) is not None:
                valid = handle.tell() + last
        if valid < last + size:
            log.warning(
                "spool %s: cut a torn record at the end (%d bytes) left by a crash",
                self.directory,
                last + size - valid,
            )
            with path.open("r+b") as handle:
                handle.truncate(valid - last)
        self._end = valid
        self._acked = min(
            max(acked if acked is not None else self._starts[0], self._starts[0]), valid
        )
        self._writer = path.open("ab")
        self._segment_size = valid - last
        if self.pending_bytes:
            log.warning(
                "spool %s holds %.1f MB not yet acknowledged by JetStream (from an earlier "
                "run): publishing it first",
                self.directory,
                self.pending_bytes / 1e6,
            )

    # -- state --------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        """The offset after the last durable record."""
        with self._cond:
            return self._end

    @property
    def acked(self) -> int:
        """The offset of the first record JetStream has not acknowledged."""
        with self._cond:
            return self._acked

    @property
    def pending_bytes(self) -> int:
        """Bytes journaled but not yet acknowledged."""
        return self._end - self._acked

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        items: Sequence[tuple[float, str, str, bytes]],
        *,
        stopping: threading.Event | None = None,
    ) -> int:
        """Journal ``(received_at, msg_id, format, payload)`` items durably, in order.

        Blocks while the journal is full; returns how many items were journaled (fewer than
        given only if `stopping` was set while it waited).
        """
        done = 0
        while done < len(items):
            chunk: list[bytes] = []
            size = 0
            with self._cond:
                room = self.max_bytes - (self._end - self._acked)
            for received_at, msg_id, fmt, payload in items[done:]:
                record = _encode(received_at, msg_id, fmt, payload)
                if size + len(record) > room and (chunk or self._end > self._acked):
                    break
                chunk.append(record)
                size += len(record)
            if chunk:
                self._write(chunk, size)
                done += len(chunk)
                continue
            if not self._wait_for_room(len(_encode(*items[done])), stopping):
                break
        return done

    def _write(self, records: list[bytes], size: int) -> None:
        try:
            if self._segment_size >= self.segment_bytes:
                self._rotate()
            self._writer.write(b"".join(records))
            self._writer.flush()
            if self.durable:
                os.fsync(self._writer.fileno())
        except OSError as exc:
            raise SourceError(f"cannot write the spool {self.directory}: {exc}") from None
        self._segment_size += size
        with self._cond:
            self._end += size
        if self.on_append is not None:
            self.on_append()

    def _rotate(self) -> None:
        self._writer.close()
        start = self._end
        path = self._segment_path(start)
        self._writer = path.open("ab")
        self._segment_size = 0
        self._fsync_directory()
        with self._cond:
            self._starts.append(start)

    def _wait_for_room(self, size: int, stopping: threading.Event | None) -> bool:
        with self._cond:
            # An empty journal takes any record, however large: never wait for ever.
            while self._end > self._acked and self.max_bytes - (self._end - self._acked) < size:
                if stopping is not None and stopping.is_set():
                    return False
                if not self._full_since_logged:
                    self._full_since_logged = True
                    log.error(
                        "spool %s is full (%.1f MB of %.1f MB not acknowledged by JetStream): "
                        "STOPPED READING THE SOURCE until NATS takes messages again; fix NATS or "
                        "raise spool_max_bytes",
                        self.directory,
                        (self._end - self._acked) / 1e6,
                        self.max_bytes / 1e6,
                    )
                self._cond.wait(0.2)
            if self._full_since_logged:
                self._full_since_logged = False
                log.warning("spool %s has room again: reading the source again", self.directory)
        return True

    # -- reading ------------------------------------------------------------------------------

    def read(self, offset: int, max_records: int) -> list[SpoolRecord]:
        """Up to `max_records` durable records from `offset` (a record boundary) on."""
        with self._cond:
            end = self._end
            if offset >= end:
                return []
            index = bisect.bisect_right(self._starts, offset) - 1
            if index < 0:
                raise SourceError(f"spool {self.directory}: offset {offset} is no longer held")
            start = self._starts[index]
            next_start = self._starts[index + 1] if index + 1 < len(self._starts) else None
        handle = self._open_reader(start)
        handle.seek(offset - start)
        limit = end if next_start is None else min(end, next_start)
        records: list[SpoolRecord] = []
        position = offset
        while len(records) < max_records:
            if position >= limit:
                if next_start is not None and position < end:
                    return records + self.read(position, max_records - len(records))
                break
            record = _read_record(handle, position, limit)
            if record is None:
                raise SourceError(f"spool {self.directory}: unreadable record at offset {position}")
            records.append(record)
            position = record.end
        return records

    def _open_reader(self, start: int) -> BinaryIO:
        if self._reader is not None and self._reader[0] == start:
            return self._reader[1]
        if self._reader is not None:
            self._reader[1].close()
        handle = self._segment_path(start).open("rb")
        self._reader = (start, handle)
        return handle

    def acknowledge(self, offset: int) -> None:
        """Everything before `offset` is stored in JetStream."""
        with self._cond:
            if offset > self._acked:
                self._acked = min(offset, self._end)
                self._cond.notify_all()

    def save(self) -> None:
        """Persist the acknowledged offset and delete segments that are wholly acknowledged."""
        with self._cond:
            acked = self._acked
            removable = [s for i, s in enumerate(self._starts[:-1]) if self._starts[i + 1] <= acked]
        if acked == self._saved and not removable:
            return
        temp = self.directory / "acked.tmp"
        try:
            with temp.open("w") as handle:
                handle.write(f"{acked}\n")
                handle.flush()
                if self.durable:
                    os.fsync(handle.fileno())
            temp.replace(self.directory / "acked")
            self._fsync_directory()
            self._saved = acked
            for start in removable:
                if self._reader is not None and self._reader[0] == start:
                    self._reader[1].close()
                    self._reader = None
                self._segment_path(start).unlink(missing_ok=True)
                with self._cond:
                    self._starts.remove(start)
        except OSError as exc:
            log.warning("spool %s: could not save the acknowledged offset: %s", self.directory, exc)

    def _fsync_directory(self) -> None:
        if not self.durable:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Save the acknowledged offset and release the journal (and its lock)."""
        if self._lock_file.closed:
            return
        self.save()
        self._writer.close()
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None
        self._lock_file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
