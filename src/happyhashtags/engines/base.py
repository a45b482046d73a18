"""What every engine shares: stopping cleanly on a signal while reading a source."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from happyhashtags.sources.base import Batch, Source

__all__ = ["StoppableEngine", "fewer_collections"]

log = logging.getLogger(__name__)


class StoppableEngine:
    """Reads batches from `source` and can be stopped from a signal handler.

    `handle_signal` (for SIGINT and SIGTERM) asks the engine to stop after the current post and,
    only while the engine is blocked waiting for the source (a quiet pipe or stream), raises
    `KeyboardInterrupt` to unblock it: never in the middle of counting a post or writing.
    """

    source: Source

    def __init__(self, *, source: Source) -> None:
        self.source = source
        self._stopping = threading.Event()
        self._waiting_for_source = False
        self.stop_requested = False  # by request_stop (a signal): the run was interrupted

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Stop after the current post; safe from a signal handler."""
        self.stop_requested = True
        self._stopping.set()
        self.source.close()

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        """A signal handler (SIGINT, SIGTERM) that stops the run cleanly, with a flush."""
        log.warning("signal %d: stopping; what was counted so far will be written", signum)
        self.request_stop()
        if self._waiting_for_source:
            raise KeyboardInterrupt

    def _next_batch(self, batches: Iterator[Batch]) -> Batch | None:
        """The next batch, or None at the end of the source or when stopping."""
        if self.stopping:
            return None
        self._waiting_for_source = True
        try:
            return next(batches, None)
        finally:
            self._waiting_for_source = False


@contextmanager
def fewer_collections(threshold: int = 100_000) -> Iterator[None]:
    """Run the cycle collector's youngest generation every `threshold` net allocations of
    tracked objects instead of every 700 (CPython's default), then restore the settings.

    Counting keeps hundreds of thousands of objects alive; at the default every young collection
    also promotes them and older collections walk them again, for no garbage: the counting
    state holds no reference cycles. Measured on the 1M-post benchmark: about 4 % of a run.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
