from array import array
from collections.abc import Callable, Iterable, Sequence

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.model import Post

class IdRing:
    capacity: int
    def __init__(self, capacity: int = 1_000_000) -> None: ...
    def __len__(self) -> int: ...
    def add(self, post_id: str) -> bool: ...
    def add_key(self, key: int) -> bool: ...
    def keys(self) -> array[int]: ...

class SessionTable:
    gap: float
    allowed_lateness: float
    watermark: float
    expire_every: int
    max_sessions: int
    max_session_keys: int
    def __init__(
        self,
        *,
        gap: float,
        allowed_lateness: float = 3600.0,
        expire_every: int = 65536,
        max_sessions: int = 500_000,
        max_session_keys: int = 2_000_000,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def key_count(self) -> int: ...
    def admit(
        self, author: str, event_time: float, keys: Sequence[str], *, happy: bool
    ) -> list[tuple[str, int, int]]: ...
    def admit_into(
        self,
        cells: dict[str, int] | None,
        author: str,
        event_time: float,
        keys: Sequence[str],
        happy: bool,
    ) -> bool: ...
    def expire(self) -> int: ...

def parse_x_time(value: str) -> float | None: ...
def add_posts(counter: PostCounter, posts: Iterable[Post]) -> None: ...
def count_x_lines(
    counter: PostCounter, lines: Sequence[bytes], received_at: float
) -> tuple[int, dict[str, int], list[tuple[int, DecodeError]]]: ...
def x_author_key(line: bytes) -> bytes | None: ...
def x_partition(
    lines: Sequence[bytes], table: bytes, fallback: Callable[[bytes], bytes]
) -> bytes: ...
def scan_x(line: bytes) -> tuple[dict[str, object], list[dict[str, object]]] | None: ...
