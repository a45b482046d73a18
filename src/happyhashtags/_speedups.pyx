# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled versions of hot, memory-hungry counter state (optional; see docs/benchmarks.md).

Each class here has a pure-Python twin that defines its behaviour (``aggregate.PyRecentIds``,
``sessions.PySessionTracker``);
the tests run both on the same inputs and require the same answers. The package uses the
compiled one when it is built (``pip install`` builds it where a C compiler is present) and the
twin otherwise.
"""

from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from array import array

cdef extern from *:
    """
    static inline uint64_t hh_mix(uint64_t x) {  /* splitmix64's finalizer */
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }

    /* A stable 64-bit hash of a str: of its characters as CPython stores them (one, two or four
       bytes each, always the narrowest that fits, so equal strings hash alike in every
       process). Not `hash()`, which is salted per process, and state is pickled. */
    static uint64_t hh_str_hash(PyObject* s) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s) * PyUnicode_KIND(s);
        const unsigned char* p = (const unsigned char*) PyUnicode_DATA(s);
        uint64_t h = hh_mix(((uint64_t) n << 3) ^ (uint64_t) PyUnicode_KIND(s) ^ 0x9e3779b97f4a7c15ULL);
        uint64_t k;
        while (n >= 8) {
            memcpy(&k, p, 8);
            h = (h ^ hh_mix(k)) * 0xff51afd7ed558ccdULL;
            h = (h << 31) | (h >> 33);
            p += 8; n -= 8;
        }
        if (n > 0) {
            k = 0;
            memcpy(&k, p, (size_t) n);
            h = (h ^ hh_mix(k)) * 0xff51afd7ed558ccdULL;
        }
        return hh_mix(h);
    }
    """
    uint64_t hh_mix(uint64_t x) nogil
    uint64_t hh_str_hash(object s)

# A post id that is 1 to 19 ASCII digits is its own key, as in `aggregate.id_key`; any other id
# goes through `id_key` itself (imported lazily: aggregate imports this module).
cdef object _id_key = None

cdef inline bint _digits(str post_id, uint64_t* out):
    cdef Py_ssize_t n = len(post_id)
    cdef uint64_t value = 0
    cdef Py_UCS4 ch
    cdef unsigned int digit
    if n == 0 or n > 19:
        return False
    for ch in post_id:
        digit = <unsigned int> ch - 48  # wraps around below '0'
        if digit > 9:
            return False
        value = value * 10 + digit
    out[0] = value
    return True


cdef uint64_t* _zeroed_keys(size_t count) except NULL:
    cdef uint64_t* keys = <uint64_t*> calloc(count, sizeof(uint64_t))
    if keys == NULL:
        raise MemoryError()
    return keys


cdef uint64_t* _resized_keys(uint64_t* keys, size_t count) except NULL:
    # On failure `keys` stays valid (and the caller's pointer to it untouched).
    cdef uint64_t* resized = <uint64_t*> realloc(keys, count * sizeof(uint64_t))
    if resized == NULL:
        raise MemoryError()
    return resized


cdef class IdRing:
    """The last `capacity` post ids, kept as 64-bit keys: the compiled `PyRecentIds`.

    A hash set with linear probing over a plain array of keys, plus a ring of the same keys in
    arrival order to know which to forget: 16 to 32 bytes per id, against about 80 for a Python
    set of ints and a deque. Both arrays grow with use, up to what `capacity` needs.
    """

    cdef uint64_t* _table   # 0 marks an empty slot; the key 0 itself is `_has_zero`
    cdef uint64_t _mask     # table size - 1 (a power of two)
    cdef uint64_t* _ring    # keys, oldest at `_next` once the ring is full
    cdef Py_ssize_t _ring_size
    cdef Py_ssize_t _count
    cdef Py_ssize_t _next
    cdef bint _has_zero
    cdef readonly Py_ssize_t capacity

    def __cinit__(self, Py_ssize_t capacity=1_000_000):
        self.capacity = capacity
        self._table = NULL
        self._ring = NULL
        self._count = 0
        self._next = 0
        self._has_zero = False
        self._ring_size = 0
        self._grow_table(1024)

    def __dealloc__(self):
        free(self._table)
        free(self._ring)

    def __len__(self):
        return self._count

    cdef void _grow_table(self, uint64_t size) except *:
        cdef uint64_t* old = self._table
        cdef uint64_t old_size = self._mask + 1 if old != NULL else 0
        cdef uint64_t i
        cdef uint64_t* table = _zeroed_keys(size)
        self._table = table
        self._mask = size - 1
        for i in range(old_size):
            if old[i] != 0:
                self._put(old[i])
        free(old)

    cdef inline void _put(self, uint64_t key) noexcept:
        cdef uint64_t i = hh_mix(key) & self._mask
        while self._table[i] != 0:
            i = (i + 1) & self._mask
        self._table[i] = key

    cdef inline bint _contains(self, uint64_t key) noexcept:
        if key == 0:
            return self._has_zero
        cdef uint64_t i = hh_mix(key) & self._mask
        cdef uint64_t found
        while True:
            found = self._table[i]
            if found == key:
                return True
            if found == 0:
                return False
            i = (i + 1) & self._mask

    cdef void _remove(self, uint64_t key) noexcept:
        # Backward-shift deletion: no tombstones, so lookups never slow down with churn.
        if key == 0:
            self._has_zero = False
            return
        cdef uint64_t mask = self._mask
        cdef uint64_t i = hh_mix(key) & mask
        cdef uint64_t j, home
        while self._table[i] != key:
            if self._table[i] == 0:
                return
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self._table[j] == 0:
                break
            home = hh_mix(self._table[j]) & mask
            # The entry at j may move to i unless its home lies cyclically in (i, j].
            if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            self._table[i] = self._table[j]
            i = j
        self._table[i] = 0

    cdef bint _add_key(self, uint64_t key) except -1:
        cdef Py_ssize_t size
        if self._contains(key):
            return False
        if self.capacity <= 0:
            return True
        if self._count == self.capacity:
            self._remove(self._ring[self._next])
            self._ring[self._next] = key
            self._next += 1
            if self._next == self.capacity:
                self._next = 0
        else:
            if self._count == self._ring_size:
                size = min(max(1024, self._ring_size * 2), self.capacity)
                self._ring = _resized_keys(self._ring, size)
                self._ring_size = size
            self._ring[self._count] = key
            self._count += 1
            if self._count == self.capacity:
                self._next = 0
            if <uint64_t> self._count * 2 > self._mask + 1:
                self._grow_table((self._mask + 1) * 2)
        if key == 0:
            self._has_zero = True
        else:
            self._put(key)
        return True

    cpdef bint add(self, str post_id) except -1:
        """Remember `post_id`; False if it was already among the recent ids."""
        global _id_key
        cdef uint64_t key
        if post_id is None:
            raise TypeError("a post id must be a str, not None")
        if not _digits(post_id, &key):
            if _id_key is None:
                from happyhashtags.aggregate import id_key as _id_key
            key = _id_key(post_id)
        return self._add_key(key)

    def add_key(self, uint64_t key):
        """Remember a key as `id_key` makes it; False if it was already remembered."""
        return self._add_key(key)

    def keys(self):
        """The remembered keys, oldest first (an ``array('Q')``)."""
        cdef Py_ssize_t i, start = self._next if self._count == self.capacity else 0
        out = array("Q", bytes(8 * self._count))
        cdef unsigned long long[:] view = out
        for i in range(self._count):
            view[i] = self._ring[(start + i) % self._count]
        return out

    def __reduce__(self):
        from happyhashtags.aggregate import restore_recent_ids

        return restore_recent_ids, (self.capacity, self.keys())


# -- anti-spam sessions ----------------------------------------------------------------------

from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject

import logging

_log = logging.getLogger("happyhashtags.sessions")

cdef long long _ONE_TWEET = 1LL << 32  # sessions.ONE_TWEET
cdef enum:
    _LINEAR = 16  # a session's hashtags are a plain array up to this many, a hash table above


ctypedef struct Session:
    uint64_t author   # hh_str_hash of the author id, never 0 (0 marks a dropped session)
    double latest
    uint64_t* tags    # hashtag entries (see _tag_entry); NULL until the first
    uint32_t ntags    # hashtags seen in the session
    uint32_t nhappy   # ... of which also in a happy post
    uint32_t cap      # size of `tags`


ctypedef struct _Order:
    double latest
    Py_ssize_t pos


cdef int _by_latest(const void* a, const void* b) noexcept nogil:
    # Least recently extended first; ties in insertion order, as a stable sort of a dict's items.
    cdef const _Order* x = <const _Order*> a
    cdef const _Order* y = <const _Order*> b
    if x.latest < y.latest:
        return -1
    if x.latest > y.latest:
        return 1
    return (x.pos > y.pos) - (x.pos < y.pos)


cdef inline uint64_t _tag_entry(object key) except? 0:
    if not isinstance(key, str):
        raise TypeError(f"a hashtag key must be a str, not {type(key).__name__}")
    # 62 bits of the hashtag's hash; bit 1 set so an entry is never 0 (an empty slot); bit 0
    # says whether the hashtag was also in a happy post of the session.
    return (hh_str_hash(key) | 2) & ~(<uint64_t> 1)


cdef inline uint64_t* _tag_find(Session* s, uint64_t entry) noexcept:
    cdef uint32_t i
    cdef uint64_t mask, found
    if s.cap <= _LINEAR:
        for i in range(s.ntags):
            if (s.tags[i] | 1) == (entry | 1):
                return &s.tags[i]
        return NULL
    mask = s.cap - 1
    i = <uint32_t> ((entry >> 2) & mask)
    while True:
        found = s.tags[i]
        if found == 0:
            return NULL
        if (found | 1) == (entry | 1):
            return &s.tags[i]
        i = (i + 1) & mask


cdef inline void _tag_put(uint64_t* table, uint32_t cap, uint64_t entry) noexcept:
    cdef uint64_t mask = cap - 1
    cdef uint32_t i = <uint32_t> ((entry >> 2) & mask)
    while table[i] != 0:
        i = (i + 1) & mask
    table[i] = entry


cdef int _tag_rehash(Session* s, uint32_t cap) except -1:
    cdef uint64_t* table = _zeroed_keys(cap)
    cdef uint32_t i
    if s.cap <= _LINEAR:
        for i in range(s.ntags):
            _tag_put(table, cap, s.tags[i])
    else:
        for i in range(s.cap):
            if s.tags[i] != 0:
                _tag_put(table, cap, s.tags[i])
    free(s.tags)
    s.tags, s.cap = table, cap
    return 0


cdef int _tag_add(Session* s, uint64_t entry) except -1:
    """Add an entry that `_tag_find` did not find."""
    cdef uint32_t cap
    if s.cap <= _LINEAR:
        if s.ntags == s.cap:
            if s.cap < _LINEAR:
                cap = 2 if s.cap == 0 else s.cap * 2
                s.tags = _resized_keys(s.tags, cap)
                s.cap = cap
            else:
                _tag_rehash(s, 2 * _LINEAR)
        if s.cap <= _LINEAR:
            s.tags[s.ntags] = entry
            s.ntags += 1
            return 0
    elif (s.ntags + 1) * 4 > s.cap * 3:  # at most 3/4 full
        _tag_rehash(s, s.cap * 2)
    _tag_put(s.tags, s.cap, entry)
    s.ntags += 1
    return 0


cdef class SessionTable:
    """Per-author sessions with bounded state: the compiled `sessions.PySessionTracker`.

    Same rules, same answers (the tests compare them), in about a third of the memory: an
    author is a 64-bit hash of its id, a session a 40-byte record, a hashtag an 8-byte entry (a
    62-bit hash of it) in an array, or past 16 in a hash table at most 3/4 full. Two hashtags of
    one session, or two authors, would have to share a hash to be confused: a chance of about 1
    in 3 * 10^7 for a million authors, and far less for the few hashtags of one session.
    """

    cdef Session* _items      # in insertion order, as a dict's items
    cdef Py_ssize_t _n
    cdef Py_ssize_t _items_cap
    cdef int32_t* _index      # open addressing over author hashes: positions in _items, or -1
    cdef uint64_t _index_mask
    cdef readonly double gap
    cdef readonly double allowed_lateness
    cdef readonly double watermark
    cdef public Py_ssize_t expire_every
    cdef readonly Py_ssize_t max_sessions
    cdef readonly Py_ssize_t max_session_keys
    cdef Py_ssize_t _key_count
    cdef Py_ssize_t _admitted
    cdef Py_ssize_t _next_expiry

    def __cinit__(self):
        self._items = NULL
        self._index = NULL
        self._n = 0
        self._items_cap = 0

    def __init__(
        self,
        *,
        double gap,
        double allowed_lateness=3600.0,
        Py_ssize_t expire_every=65536,
        Py_ssize_t max_sessions=500_000,
        Py_ssize_t max_session_keys=2_000_000,
    ):
        if not gap > 0:
            raise ValueError("a session gap must be positive (0 means: use no SessionTracker)")
        self.gap = gap
        self.allowed_lateness = allowed_lateness
        self.expire_every = expire_every
        self.max_sessions = max_sessions
        self.max_session_keys = max_session_keys
        self.watermark = float("-inf")
        self._key_count = 0
        self._admitted = 0
        self._next_expiry = expire_every
        self._reindex(1024)

    def __dealloc__(self):
        cdef Py_ssize_t p
        if self._items != NULL:
            for p in range(self._n):
                free(self._items[p].tags)
        free(self._items)
        free(self._index)

    def __len__(self):
        return self._n

    @property
    def key_count(self):
        """Hashtags held by all sessions (each session's seen ones plus its happy ones)."""
        return self._key_count

    # -- the author index --

    cdef int _reindex(self, uint64_t size) except -1:
        cdef int32_t* index = <int32_t*> malloc(size * sizeof(int32_t))
        cdef Py_ssize_t p
        if index == NULL:
            raise MemoryError()
        memset(index, 0xFF, size * sizeof(int32_t))  # all -1
        free(self._index)
        self._index, self._index_mask = index, size - 1
        for p in range(self._n):
            self._index_put(self._items[p].author, p)
        return 0

    cdef inline void _index_put(self, uint64_t author, Py_ssize_t pos) noexcept:
        cdef uint64_t i = hh_mix(author) & self._index_mask
        while self._index[i] >= 0:
            i = (i + 1) & self._index_mask
        self._index[i] = <int32_t> pos

    cdef inline Py_ssize_t _find(self, uint64_t author) noexcept:
        cdef uint64_t i = hh_mix(author) & self._index_mask
        cdef int32_t pos
        while True:
            pos = self._index[i]
            if pos < 0:
                return -1
            if self._items[pos].author == author:
                return pos
            i = (i + 1) & self._index_mask

    cdef Py_ssize_t _append(self, uint64_t author, double latest) except -1:
        cdef Py_ssize_t cap
        cdef Session* items
        if self._n == self._items_cap:
            cap = max(1024, self._items_cap * 2)
            if cap > 0x7FFFFFFF:
                raise MemoryError("more than 2**31 sessions")
            items = <Session*> realloc(self._items, cap * sizeof(Session))
            if items == NULL:
                raise MemoryError()
            self._items, self._items_cap = items, cap
        cdef Py_ssize_t pos = self._n
        self._items[pos].author = author
        self._items[pos].latest = latest
        self._items[pos].tags = NULL
        self._items[pos].ntags = self._items[pos].nhappy = self._items[pos].cap = 0
        self._n += 1
        if <uint64_t> self._n * 2 > self._index_mask + 1:
            self._reindex((self._index_mask + 1) * 2)
        else:
            self._index_put(author, pos)
        return pos

    # -- admitting posts --

    def admit(self, str author, double event_time, keys, *, bint happy):
        """Record a post; return ``(key, add_to_tweets, add_to_happy)`` for the keys that count."""
        cdef dict cells = {}
        self.admit_into(cells, author, event_time, keys, happy)
        return [(key, cell >> 32, cell & 0xFFFFFFFF) for key, cell in cells.items()]

    cpdef bint admit_into(
        self, dict cells, str author, double event_time, keys, bint happy
    ) except -1:
        """Record a post and add what counts of it to `cells` (None: record only)."""
        cdef uint64_t a
        cdef Py_ssize_t pos
        cdef Session* s
        cdef bint due = False
        cdef uint64_t entry
        cdef uint64_t* found
        cdef long long add
        cdef int new, new_happy
        cdef Py_ssize_t added = 0
        cdef PyObject* old
        if author is None:
            raise TypeError("an author must be a str, not None")
        a = hh_str_hash(author)
        if a == 0:
            a = 1
        pos = self._find(a)
        if pos < 0:
            pos = self._append(a, event_time)
            due = self._n > self.max_sessions
            s = &self._items[pos]
        else:
            s = &self._items[pos]
            if event_time > s.latest + self.gap:
                # A new session in the author's place (a dict keeps the key's position).
                self._key_count -= s.ntags + s.nhappy
                free(s.tags)
                s.tags = NULL
                s.ntags = s.nhappy = s.cap = 0
                s.latest = event_time
            elif event_time > s.latest:
                s.latest = event_time
        if event_time > self.watermark:
            self.watermark = event_time
        self._admitted += 1
        if self._admitted >= self._next_expiry:
            due = True
        for key in keys:
            entry = _tag_entry(key)
            found = _tag_find(s, entry)
            if found == NULL:
                new = 1
                new_happy = happy
                _tag_add(s, entry | <uint64_t> happy)
                s.nhappy += happy
            else:
                new = 0
                if happy and not (found[0] & 1):
                    found[0] |= 1
                    s.nhappy += 1
                    new_happy = 1
                else:
                    continue
            added += new + new_happy
            if cells is not None:
                add = new * _ONE_TWEET + new_happy
                old = PyDict_GetItem(cells, key)
                if old == NULL:
                    cells[key] = add
                else:
                    cells[key] = <object> old + add
        if added:
            self._key_count += added
            if self._key_count > self.max_session_keys:
                due = True
        if due:
            self.expire()
        return added > 0

    # -- expiry --

    cdef inline void _drop(self, Py_ssize_t pos) noexcept:
        cdef Session* s = &self._items[pos]
        self._key_count -= s.ntags + s.nhappy
        free(s.tags)
        s.tags = NULL
        s.author = 0

    def expire(self):
        """Drop sessions that no post within the allowed lateness can extend; return how many.

        As `PySessionTracker.expire`: past `max_sessions` or `max_session_keys`, the least
        recently extended sessions go too, down to 80 % of the limits, with a warning.
        """
        cdef double horizon = self.watermark - self.allowed_lateness - self.gap
        cdef Py_ssize_t p, k, live, stale = 0, dropped = 0
        cdef Py_ssize_t session_goal, key_goal
        cdef _Order* order
        self._admitted = 0
        for p in range(self._n):
            if self._items[p].latest < horizon:
                self._drop(p)
                stale += 1
        live = self._n - stale
        self._next_expiry = max(self.expire_every, live)
        if live > self.max_sessions or self._key_count > self.max_session_keys:
            session_goal = self.max_sessions - self.max_sessions // 5
            key_goal = self.max_session_keys - self.max_session_keys // 5
            order = <_Order*> malloc(max(live, 1) * sizeof(_Order))
            if order == NULL:
                raise MemoryError()
            k = 0
            for p in range(self._n):
                if self._items[p].author != 0:
                    order[k].latest = self._items[p].latest
                    order[k].pos = p
                    k += 1
            qsort(order, live, sizeof(_Order), _by_latest)
            for k in range(live):
                if live - dropped <= session_goal and self._key_count <= key_goal:
                    break
                self._drop(order[k].pos)
                dropped += 1
            free(order)
            _log.warning(
                "anti-spam sessions over their limits (%d sessions, %d hashtags): dropped the %d "
                "least recently active (raise max_sessions or max_session_keys to keep them)",
                self.max_sessions,
                self.max_session_keys,
                dropped,
            )
        if stale or dropped:
            self._compact()
        return stale + dropped

    cdef int _compact(self) except -1:
        cdef Py_ssize_t p, kept = 0
        cdef uint64_t size = 1024
        for p in range(self._n):
            if self._items[p].author != 0:
                if kept != p:
                    self._items[kept] = self._items[p]
                kept += 1
        self._n = kept
        while size < <uint64_t> kept * 2:
            size *= 2
        self._reindex(size)
        return 0

    # -- pickling (snapshots) --

    def __reduce__(self):
        params = (
            self.gap,
            self.allowed_lateness,
            self.expire_every,
            self.max_sessions,
            self.max_session_keys,
        )
        return _session_table, (params, self._dump())

    cdef bytes _dump(self):
        # Words: n, key count, admitted, next expiry, watermark; then per session: author,
        # latest, ntags, nhappy, cap, and its entries (ntags of them while linear, else cap).
        cdef Py_ssize_t p, k, words = 5
        cdef Session* s
        for p in range(self._n):
            s = &self._items[p]
            words += 5 + (s.ntags if s.cap <= _LINEAR else s.cap)
        cdef bytearray out = bytearray(words * 8)
        cdef unsigned char* buf = out
        cdef uint64_t* w = <uint64_t*> buf
        w[0], w[1], w[2], w[3] = self._n, self._key_count, self._admitted, self._next_expiry
        memcpy(&w[4], &self.watermark, 8)
        w += 5
        for p in range(self._n):
            s = &self._items[p]
            w[0] = s.author
            memcpy(&w[1], &s.latest, 8)
            w[2], w[3], w[4] = s.ntags, s.nhappy, s.cap
            w += 5
            k = s.ntags if s.cap <= _LINEAR else s.cap
            if k:
                memcpy(w, s.tags, k * 8)
            w += k
        return bytes(out)

    cdef int _load(self, bytes state) except -1:
        cdef const unsigned char* buf = state
        cdef Py_ssize_t size = len(state) // 8
        cdef const uint64_t* w = <const uint64_t*> buf
        cdef const uint64_t* end = w + size
        cdef Py_ssize_t p, n, k
        cdef Session* s
        if size < 5:
            raise ValueError("a session table's state is too short")
        n = <Py_ssize_t> w[0]
        self._key_count, self._admitted, self._next_expiry = w[1], w[2], w[3]
        memcpy(&self.watermark, &w[4], 8)
        w += 5
        for p in range(n):
            if w + 5 > end:
                raise ValueError("a session table's state is truncated")
            self._append(w[0], 0.0)
            s = &self._items[p]
            memcpy(&s.latest, &w[1], 8)
            k = w[2] if w[4] <= _LINEAR else w[4]
            if w + 5 + k > end or w[2] > w[4] or (w[4] & (w[4] - 1)):
                raise ValueError("a session table's state is inconsistent")
            if w[4]:
                s.tags = _zeroed_keys(w[4])
                memcpy(s.tags, &w[5], k * 8)
            s.ntags, s.nhappy, s.cap = <uint32_t> w[2], <uint32_t> w[3], <uint32_t> w[4]
            w += 5 + k
        return 0


def _session_table(params, bytes state):
    """Unpickle a `SessionTable`."""
    gap, allowed_lateness, expire_every, max_sessions, max_session_keys = params
    table = SessionTable(
        gap=gap,
        allowed_lateness=allowed_lateness,
        expire_every=expire_every,
        max_sessions=max_sessions,
        max_session_keys=max_session_keys,
    )
    table._load(state)
    return table


# -- X's created_at ----------------------------------------------------------------------------

cdef inline int _number(str value, Py_ssize_t start, Py_ssize_t count) noexcept:
    # The ASCII digits value[start:start + count] as a number, or -1 (the caller checked length).
    cdef Py_ssize_t i
    cdef int number = 0
    cdef unsigned int digit
    for i in range(start, start + count):
        digit = <unsigned int> value[i] - 48
        if digit > 9:
            return -1
        number = number * 10 + digit
    return number


cdef inline long long _days_from_civil(long long y, long long m, long long d) noexcept:
    # Days since 1970-01-01 of a proleptic Gregorian date (years 1 to 9999 here).
    y -= m <= 2
    cdef long long era = y // 400
    cdef long long yoe = y - era * 400
    cdef long long doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef int[13] _MONTH_DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def parse_x_time(str value):
    """Seconds since the epoch of a ``created_at`` as X writes it, ``2022-10-10T20:19:24.000Z``
    (also with no fraction or six digits of it), exactly as `formats.x.parse_v2_time` computes
    it; None for any other shape, which `parse_v2_time` then reads or refuses."""
    cdef double seconds
    if value is None:
        raise TypeError("a created_at must be a str, not None")
    return seconds if _x_seconds(value, &seconds) else None


cdef bint _x_seconds(str value, double* out) noexcept:
    # parse_x_time's work: False for any shape it leaves to parse_v2_time.
    cdef Py_ssize_t n
    cdef int year, month, day, hour, minute, second, micro = 0, limit
    cdef long long total
    n = len(value)
    if n not in (20, 24, 27) or value[n - 1] != "Z":
        return False
    if value[4] != "-" or value[7] != "-" or value[10] != "T" or value[13] != ":":
        return False
    if value[16] != ":":
        return False
    year, month, day = _number(value, 0, 4), _number(value, 5, 2), _number(value, 8, 2)
    hour, minute, second = _number(value, 11, 2), _number(value, 14, 2), _number(value, 17, 2)
    if n > 20:
        if value[19] != ".":
            return False
        micro = _number(value, 20, n - 21)
        if micro < 0:
            return False
        if n == 24:
            micro *= 1000
    if year < 1 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23:
        return False
    if minute < 0 or minute > 59 or second < 0 or second > 59:
        return False
    limit = _MONTH_DAYS[month]
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        limit = 29
    if day > limit:
        return False
    total = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)
    total = total * 1_000_000 + micro
    if total >= (1LL << 53) or total <= -(1LL << 53):
        return False  # beyond exact doubles: let datetime round it
    # Microseconds over 10**6, as datetime.timestamp() divides (exact operands, one rounding).
    out[0] = <double> total / 1e6
    return True


# -- counting: PostCounter.add_many and X lines, decoded and counted in one pass ---------------

from cpython.float cimport PyFloat_FromDouble
from libc.math cimport copysign, floor, fmod, isfinite

# Imported on first use (those modules import this one).
cdef object _extract_hashtags = None
cdef object _Post = None
cdef object _x = None  # happyhashtags.formats.x
cdef object _MsgspecError = None


cdef int _bind() except -1:
    global _extract_hashtags, _Post, _x, _MsgspecError
    if _x is None:
        import msgspec

        from happyhashtags import model, text
        from happyhashtags.formats import x

        _extract_hashtags = text.extract_hashtags
        _Post = model.Post
        _MsgspecError = msgspec.MsgspecError
        _x = x
    return 0


cdef double _floor_div(double vx, double wx) noexcept:
    # Python's float // float (CPython's float_floor_div), so buckets match the twin's exactly.
    cdef double mod = fmod(vx, wx)
    cdef double div = (vx - mod) / wx
    cdef double result
    if mod:
        if (wx < 0) != (mod < 0):
            div -= 1.0
    if div:
        result = floor(div)
        if div - result > 0.5:
            result += 1.0
        return result
    return copysign(0.0, vx / wx)


cdef class _Tally:
    """One batch of `PostCounter.add_many`, as ``aggregate._py_add_many`` (its twin) runs it:
    the counter's parts hoisted, and the batch's statistics added to it at `finish`."""

    cdef object counter
    cdef IdRing ids
    cdef SessionTable sessions  # None: sessions off
    cdef dict norm
    cdef object normalize
    cdef dict buckets
    cdef tuple plain            # the happy markers, when all are plain substrings
    cdef object matches         # else HappyMatcher.matches
    cdef double bucket_seconds
    cdef long long bucket_step
    cdef bint count_retweets
    cdef long long last_bucket
    cdef dict cells             # of bucket `last_bucket`, or None
    cdef list keybuf            # a post's keys (reused: nothing keeps it)
    cdef Py_ssize_t seen, duplicates, retweets, with_hashtags, happy_posts, counted

    def __cinit__(self, counter):
        _bind()
        self.counter = counter
        self.ids = counter._ids
        self.sessions = counter._sessions
        self.norm = counter._norm
        self.normalize = counter._normalize
        self.buckets = counter._buckets
        self.plain = counter.happy.plain_markers
        self.matches = counter.happy.matches
        self.bucket_step = counter.bucket_seconds
        self.bucket_seconds = <double> self.bucket_step
        self.count_retweets = counter.count_retweets
        self.cells = None
        self.keybuf = []

    cdef list _keys(self, object tags):
        cdef list keys = self.keybuf
        cdef PyObject* found
        del keys[:]
        for tag in tags:
            found = PyDict_GetItem(self.norm, tag)
            key = <object> found if found != NULL else self.normalize(tag)
            if len(keys) == 0 or key not in keys:
                keys.append(key)
        return keys

    cdef bint _happy(self, str text) except -1:
        if self.plain is None:
            return self.matches(text)
        for marker in self.plain:
            if marker in text:
                return True
        return False

    cdef dict _cells(self, double event_time):
        # The cells of the post's bucket: floor division, so times before the epoch fall in the
        # bucket below, too.
        cdef double start
        cdef long long bucket
        if isfinite(event_time):
            start = _floor_div(event_time, self.bucket_seconds)
            if -4e18 < start * self.bucket_seconds < 4e18:
                bucket = <long long> start * self.bucket_step
                if self.cells is not None and bucket == self.last_bucket:
                    return self.cells
                self.cells = self._bucket_cells(bucket)
                self.last_bucket = bucket
                return self.cells
        # Out of range (or not finite): Python's arithmetic on Python objects, and its errors.
        cdef object step = self.counter.bucket_seconds
        self.cells = None
        return self._bucket_cells(int(PyFloat_FromDouble(event_time) // step) * step)

    cdef dict _bucket_cells(self, object bucket):
        cdef PyObject* found = PyDict_GetItem(self.buckets, bucket)
        if found != NULL:
            return <dict> found
        cells = {}
        self.buckets[bucket] = cells
        return cells

    cdef int add(
        self, object post_id, object author, double event_time, object text, object tags,
        bint is_retweet,
    ) except -1:
        cdef bint happy
        cdef long long add
        cdef PyObject* old
        cdef list keys
        cdef dict cells
        self.seen += 1
        if post_id is not None and not self.ids.add(post_id):
            self.duplicates += 1
            return 0
        if is_retweet and not self.count_retweets:
            self.retweets += 1
            return 0
        if tags is None and ("#" in text or "＃" in text):  # else extract_hashtags finds none
            tags = _extract_hashtags(text)
        if not tags:
            if self.sessions is not None and author is not None:
                # A post without hashtags still extends (or starts) its author's session.
                self.sessions.admit_into(None, author, event_time, (), False)
            return 0
        self.with_hashtags += 1
        keys = self._keys(tags)
        happy = self._happy(text)
        if happy:
            self.happy_posts += 1
        cells = self._cells(event_time)
        if self.sessions is not None and author is not None:
            if self.sessions.admit_into(cells, author, event_time, keys, happy):
                self.counted += 1
            return 0
        add = _ONE_TWEET + happy
        for key in keys:
            old = PyDict_GetItem(cells, key)
            if old == NULL:
                cells[key] = add
            else:
                cells[key] = <object> old + add
        self.counted += 1
        return 0

    cdef int finish(self) except -1:
        stats = self.counter.stats
        stats.posts += self.seen
        stats.duplicates += self.duplicates
        stats.retweets_skipped += self.retweets
        stats.with_hashtags += self.with_hashtags
        stats.happy += self.happy_posts
        stats.counted += self.counted
        return 0


def add_posts(counter, posts):
    """`PostCounter.add_many` compiled (its twin: ``aggregate._py_add_many``). The counter's
    state must be the compiled classes."""
    cdef _Tally tally = _Tally(counter)
    try:
        for post in posts:
            tally.add(
                post.id, post.author, post.event_time, post.text, post.hashtags, post.is_retweet
            )
    finally:
        tally.finish()


def count_x_lines(counter, lines, double received_at):
    """``formats.x.py_count_x_lines`` compiled: decode X lines and count their posts in one
    pass, without building a `Post` for the common shapes (an original post, a reply, a quote
    or a retweet, with an X-shaped ``created_at`` and no note); any other line goes through the
    Python decoder's rules.
    Returns ``(posts, skipped reasons, [(line index, DecodeError), ...])``."""
    cdef _Tally tally = _Tally(counter)
    cdef Py_ssize_t index = -1, posts = 0
    cdef dict skipped = {}
    cdef list rejects = []
    cdef double event_time
    cdef double latest = received_at + _x.FUTURE_TOLERANCE
    cdef list tags
    cdef list tagbuf = []
    cdef bint is_retweet
    decode = _x._decoder.decode
    item_of = _x._item_of
    DecodeError = _x.DecodeError
    Post = _Post
    try:
        for line in lines:
            index += 1
            try:
                message = decode(line)
            except _MsgspecError:
                message = None
            if message is not None:
                data = message.data
                source = None if data is None else _v2_source(message, data, &is_retweet)
                if source is not None and _v2_time(data, &event_time, received_at):
                    if event_time > latest:
                        event_time = received_at
                    entities = source.entities
                    if entities is None:
                        tags = None
                    else:
                        tags = tagbuf  # reused: counting does not keep it
                        del tags[:]
                        for hashtag in entities.hashtags:
                            tag = hashtag.tag
                            if not tag:
                                tag = hashtag.text
                            if tag:
                                tags.append(tag)
                    posts += 1
                    tally.add(data.id, data.author_id, event_time, source.text, tags, is_retweet)
                    continue
            try:
                item = item_of(message, line, received_at)
            except DecodeError as exc:
                rejects.append((index, exc))
                continue
            if type(item) is Post:
                posts += 1
                tally.add(
                    item.id, item.author, item.event_time, item.text, item.hashtags,
                    item.is_retweet,
                )
            else:
                reason = item.reason
                skipped[reason] = skipped.get(reason, 0) + 1
    finally:
        tally.finish()
    return posts, skipped, rejects


cdef object _v2_source(object message, object tweet, bint* is_retweet):
    # The tweet whose text and hashtags count, as formats.x._v2_post picks it: a retweet's
    # original from the includes where it is there, else the tweet itself. None where that
    # tweet has a note (its long text): formats.x.message_item reads those.
    source = tweet
    is_retweet[0] = False
    refs = tweet.referenced_tweets
    if refs:
        for ref in refs:
            if ref.type == "retweeted":
                is_retweet[0] = True
                includes = message.includes
                if includes is not None:
                    wanted = ref.id
                    for included in includes.tweets:
                        if included.id == wanted:
                            source = included
                            break
                break
    if source.note_tweet is not None:
        return None
    return source


cdef bint _v2_time(object tweet, double* event_time, double received_at) except -1:
    # The tweet's created_at read here, or False where formats.x.parse_v2_time must read it.
    created = tweet.created_at
    if created is None:
        event_time[0] = received_at
        return True
    return _x_seconds(created, event_time)


# -- X partition keys ------------------------------------------------------------------------

cdef enum:
    _MAX_DEPTH = 48
    _K_OTHER = 0
    _K_DATA = 1     # "data" at the top level
    _K_AUTHOR = 2   # "author_id" in the data object
    _K_ID = 3       # "id" in the data object


cdef inline bint _is(const unsigned char* p, Py_ssize_t n, const char* word, Py_ssize_t size) noexcept:
    return n == size and memcmp(p, word, size) == 0


def x_author_key(bytes line):
    """``data.author_id`` (else ``data.id``) of an X API v2 message, read from the JSON text
    without decoding it: what ``formats.x.partition_key_x`` returns for the line, or None
    where this scan cannot be sure (not a v2 message, an escape in a key or in the value,
    deep nesting, broken JSON), and the decoder must read it."""
    cdef const unsigned char* p = line
    cdef Py_ssize_t n = len(line), i = 0, j, k, start
    cdef const unsigned char* found
    cdef int depth = 0, key = _K_OTHER
    cdef unsigned char[_MAX_DEPTH] is_object
    cdef bint expect_key = False, in_data = False, data_object = False, closed = False
    cdef Py_ssize_t author_at = -1, author_end = -1, id_at = -1, id_end = -1
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 32 or c == 9 or c == 10 or c == 13:
            i += 1
            continue
        if closed:
            return None  # something after the top-level object
        if c == 34:  # a string: a key or a value
            start = j = i + 1
            while True:  # to the closing quote: one not escaped by an odd run of backslashes
                found = <const unsigned char*> memchr(p + j, 34, n - j)
                if found == NULL:
                    return None
                j = found - p
                k = j
                while k > start and p[k - 1] == 92:
                    k -= 1
                if (j - k) % 2 == 0:
                    break
                j += 1
            if expect_key:
                if depth <= 2 and memchr(p + start, 92, j - start) != NULL:
                    return None  # "\u0064ata" is "data" to a decoder
                if depth == 1:
                    key = _K_DATA if _is(p + start, j - start, "data", 4) else _K_OTHER
                elif depth == 2 and in_data:
                    if _is(p + start, j - start, "author_id", 9):
                        key = _K_AUTHOR
                    elif _is(p + start, j - start, "id", 2):
                        key = _K_ID
                    else:
                        key = _K_OTHER
                else:
                    key = _K_OTHER
                expect_key = False
            else:
                if depth == 1 and key == _K_DATA:
                    return None  # data that is not an object
                if key == _K_AUTHOR or key == _K_ID:
                    if memchr(p + start, 92, j - start) != NULL:
                        return None
                    if key == _K_AUTHOR:
                        author_at, author_end = start, j
                    else:
                        id_at, id_end = start, j
                key = _K_OTHER
            i = j + 1
            continue
        if c == 123 or c == 91:  # { or [
            if depth >= _MAX_DEPTH:
                return None
            if depth == 0 and c != 123:
                return None
            if depth == 1 and key == _K_DATA:
                if c != 123:
                    return None
                # The last "data" key wins, as in the decoder.
                in_data = data_object = True
                author_at = author_end = id_at = id_end = -1
            elif depth == 2 and in_data and key != _K_OTHER:
                return None  # an author_id or id that is not a string
            is_object[depth] = c == 123
            depth += 1
            expect_key = c == 123
            key = _K_OTHER
        elif c == 125 or c == 93:  # } or ]
            if depth == 0 or is_object[depth - 1] != (c == 125):
                return None
            depth -= 1
            if depth == 1:
                in_data = False
            elif depth == 0:
                closed = True
            expect_key = False
        elif c == 44:  # ,
            if depth == 0:
                return None
            expect_key = is_object[depth - 1]
            key = _K_OTHER
        elif c == 58:  # :
            if depth == 0:
                return None
        else:  # a number or a literal
            if depth == 0:
                return None
            if depth == 1 and key == _K_DATA:
                return None  # data: null (or worse): the decoder decides
            if depth == 2 and in_data and key != _K_OTHER:
                return None
            key = _K_OTHER
        i += 1
    if not closed or not data_object:
        return None
    if author_end > author_at:
        return line[author_at:author_end]
    if id_end > id_at:
        return line[id_at:id_end]
    return None
