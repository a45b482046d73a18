# Part of _speedups.pyx (included): anti-spam sessions, the twin of sessions.PySessionTracker.

# -- anti-spam sessions ----------------------------------------------------------------------


_log = logging.getLogger("happyhashtags.sessions")

cdef extern from *:
    """
    /* Hand the pages that freed hashtag arrays leave whole back to the system. Sessions end
       in no order, so their arrays (malloc's small chunks, or pages where a session has many
       hashtags) free holes all through the heap, which glibc keeps unless asked. */
    #if defined(__GLIBC__)
    #include <malloc.h>
    static void hh_trim(void) { malloc_trim(0); }
    #else
    static void hh_trim(void) {}
    #endif
    """
    void hh_trim() nogil

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

    cdef void _prefetch(self, uint64_t author, int stage) noexcept:
        # What admitting `author` reads, one dependent step per call: stage 0 its index slot,
        # 1 its session, 2 its hashtags. Each step follows what the one before made cached.
        cdef uint64_t i
        cdef int32_t pos
        cdef Session* s
        if self._index == NULL:
            return
        if author == 0:
            author = 1
        i = hh_mix(author) & self._index_mask
        if stage == 0:
            hh_prefetch(&self._index[i])
            return
        pos = self._index[i]  # the first probe: where nearly every author is found
        if pos < 0:
            return
        s = &self._items[pos]
        if stage == 1:
            hh_prefetch(s)
        elif s.author == author and s.tags != NULL:
            hh_prefetch(s.tags)

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
        if author is None:
            raise TypeError("an author must be a str, not None")
        return self._admit(cells, hh_str_hash(author), event_time, keys, happy)

    cdef bint _admit(
        self, dict cells, uint64_t a, double event_time, keys, bint happy,
        const uint64_t* entries=NULL,
    ) except -1:
        # admit_into for the author whose hh_str_hash is `a`; `entries`, where given, holds
        # each key's _tag_entry.
        cdef Py_ssize_t pos
        cdef Session* s
        cdef bint due = False
        cdef uint64_t entry
        cdef uint64_t* found
        cdef long long add
        cdef int new, new_happy
        cdef Py_ssize_t added = 0, k
        cdef PyObject* old
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
        for k, key in enumerate(keys):
            entry = _tag_entry(key) if entries == NULL else entries[k]
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
            hh_trim()
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
