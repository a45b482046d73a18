# Part of _speedups.pyx (included): the counting loop, the twin of aggregate._py_add_many, and
# the _Tally that _speedups_xlines.pxi counts X lines into.

# -- counting: PostCounter.add_many, and a post's fields or a scanned line into the counter -----


# Imported on first use (those modules import this one).
cdef object _extract_hashtags = None
cdef object _Post = None
cdef object _x = None  # happyhashtags.formats.x
cdef object _MsgspecError = None
cdef object _LineBlock = None  # happyhashtags.sources.base.LineBlock


cdef int _bind() except -1:
    global _extract_hashtags, _Post, _x, _MsgspecError, _LineBlock
    if _x is None:
        import msgspec

        from happyhashtags import model, text
        from happyhashtags.formats import x
        from happyhashtags.sources import base

        _extract_hashtags = text.extract_hashtags
        _Post = model.Post
        _MsgspecError = msgspec.MsgspecError
        _LineBlock = base.LineBlock
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


cdef inline bint _find(
    const unsigned char* hay, Py_ssize_t n, const unsigned char* needle, Py_ssize_t m
) noexcept:
    # Whether needle[:m] (m > 0) occurs in hay[:n].
    cdef const unsigned char* at
    cdef const unsigned char* last = hay + n - m
    while hay <= last:
        at = <const unsigned char*> memchr(hay, needle[0], last - hay + 1)
        if at == NULL:
            return False
        if memcmp(at + 1, needle + 1, m - 1) == 0:
            return True
        hay = at + 1
    return False


cdef inline str _span_str(const unsigned char* p, _Span span):
    # The scanned (valid, unescaped) UTF-8 string at `span` as a str.
    return PyUnicode_DecodeUTF8(<const char*> p + span.start, span.end - span.start, NULL)


cdef inline uint64_t _span_hash(const unsigned char* p, _Span span) except? 0:
    # hh_str_hash of the str at `span`, without building it where it is ASCII.
    cdef Py_ssize_t i
    for i in range(span.start, span.end):
        if p[i] >= 0x80:
            return hh_str_hash(_span_str(p, span))
    return hh_hash(p + span.start, span.end - span.start, 1)


cdef unsigned char* _room(unsigned char** buf, Py_ssize_t* cap, Py_ssize_t size) except NULL:
    # buf[0], grown to hold `size` bytes at least (never shrunk).
    cdef unsigned char* grown
    if cap[0] < size or buf[0] == NULL:
        grown = <unsigned char*> realloc(buf[0], max(size, 1))
        if grown == NULL:
            raise MemoryError()
        buf[0], cap[0] = grown, max(size, 1)
    return buf[0]


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
    cdef tuple plain_utf8       # ... in UTF-8
    cdef object matches         # else HappyMatcher.matches
    cdef double bucket_seconds
    cdef long long bucket_step
    cdef bint count_retweets
    cdef long long last_bucket
    cdef dict cells             # of bucket `last_bucket`, or None
    cdef list keybuf            # a post's keys (reused: nothing keeps it)
    cdef RawTagKeys raw_keys    # the counter's, for scanned lines
    cdef unsigned char* textbuf # a scanned text with its escapes decoded
    cdef Py_ssize_t textcap
    cdef unsigned char* tagbuf  # ... and a hashtag
    cdef Py_ssize_t tagcap
    cdef Py_ssize_t seen, duplicates, retweets, with_hashtags, happy_posts, counted

    def __dealloc__(self):
        free(self.textbuf)
        free(self.tagbuf)

    def __cinit__(self, counter):
        self.textbuf = self.tagbuf = NULL
        self.textcap = self.tagcap = 0
        _bind()
        self.counter = counter
        self.ids = counter._ids
        self.sessions = counter._sessions
        self.norm = counter._norm
        self.normalize = counter._normalize
        self.buckets = counter._buckets
        self.plain = counter.happy.plain_markers
        if self.plain is not None:
            self.plain_utf8 = tuple([marker.encode() for marker in self.plain])
        self.matches = counter.happy.matches
        self.bucket_step = counter.bucket_seconds
        self.bucket_seconds = <double> self.bucket_step
        self.count_retweets = counter.count_retweets
        self.cells = None
        self.keybuf = []
        if counter._raw_keys is None:
            counter._raw_keys = RawTagKeys()
        self.raw_keys = counter._raw_keys

    cdef inline object _key(self, object tag):
        # The hashtag's counting key (case-folded, normalized), from the counter's cache.
        cdef PyObject* found = PyDict_GetItem(self.norm, tag)
        return <object> found if found != NULL else self.normalize(tag)

    cdef list _keys(self, object tags):
        cdef list keys = self.keybuf
        del keys[:]
        for tag in tags:
            key = self._key(tag)
            if len(keys) == 0 or key not in keys:
                keys.append(key)
        return keys

    cdef object _raw_key(self, const unsigned char* tag, Py_ssize_t size, uint64_t* entry):
        # The counting key of a scanned hashtag (UTF-8, valid), and its session entry.
        cdef uint64_t h = _raw_tag_hash(tag, size)
        cdef _TagSlot* slot = self.raw_keys.find(tag, size, h)
        if slot.hash != 0:
            entry[0] = slot.entry
            return <object> slot.key
        key = self._key(PyUnicode_DecodeUTF8(<const char*> tag, size, NULL))
        entry[0] = _tag_entry(key)
        self.raw_keys.add(tag, size, h, key, entry[0])
        return key

    cdef (const unsigned char*, Py_ssize_t) _unescaped(
        self, const unsigned char* text, Py_ssize_t size
    ) except *:
        # The scanned text with its JSON escapes decoded (as msgspec decodes them).
        return self.textbuf, _unescape(text, size, _room(&self.textbuf, &self.textcap, size))

    cdef (const unsigned char*, Py_ssize_t) _unescaped_tag(
        self, const unsigned char* tag, Py_ssize_t size
    ) except *:
        # `_unescaped` for a hashtag, in a buffer of its own (the text may be in textbuf).
        return self.tagbuf, _unescape(tag, size, _room(&self.tagbuf, &self.tagcap, size))

    cdef bint _happy(self, str text) except -1:
        if self.plain is None:
            return self.matches(text)
        for marker in self.plain:
            if marker in text:
                return True
        return False

    cdef bint _happy_at(self, const unsigned char* text, Py_ssize_t size) except -1:
        # _happy of the UTF-8 text[:size] (valid: the scanner checked it).
        if self.plain_utf8 is None:
            return self.matches(PyUnicode_DecodeUTF8(<const char*> text, size, NULL))
        for marker in self.plain_utf8:
            if _find(text, size, marker, len(<bytes> marker)):
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
        cdef uint64_t a = 0
        cdef bint sessions = self.sessions is not None and author is not None
        self.seen += 1
        if post_id is not None and not self.ids.add(post_id):
            self.duplicates += 1
            return 0
        if is_retweet and not self.count_retweets:
            self.retweets += 1
            return 0
        if tags is None and ("#" in text or "＃" in text):  # else extract_hashtags finds none
            tags = _extract_hashtags(text)
        if sessions:
            if not isinstance(author, str):
                raise TypeError(f"an author must be a str, not {type(author).__name__}")
            a = hh_str_hash(author)
        if not tags:
            if sessions:
                # A post without hashtags still extends (or starts) its author's session.
                self.sessions._admit(None, a, event_time, (), False)
            return 0
        return self._count(self._keys(tags), self._happy(text), event_time, sessions, a)

    cdef int _count(
        self, list keys, bint happy, double event_time, bint sessions, uint64_t author,
        const uint64_t* entries=NULL,
    ) except -1:
        # A post with hashtags (`keys`): into its bucket's cells, through the author's session
        # where `sessions`.
        cdef long long add
        cdef PyObject* old
        cdef dict cells
        self.with_hashtags += 1
        if happy:
            self.happy_posts += 1
        cells = self._cells(event_time)
        if sessions:
            if self.sessions._admit(cells, author, event_time, keys, happy, entries):
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

    cdef int add_scanned(self, _Ready* r) except -1:
        # `add` for a line `_prepare` read: the post's id and author from its data tweet, its
        # text and hashtags from its source (data, or the original of a retweet).
        cdef const unsigned char* p = r.p
        cdef const unsigned char* text = p + r.text.start
        cdef Py_ssize_t size = r.text.end - r.text.start
        cdef double event_time = r.event_time
        cdef uint64_t a = r.author
        cdef bint sessions, fresh
        cdef list keys
        cdef int k
        cdef uint64_t entry
        cdef uint64_t entries[_SCAN_TAGS]
        cdef const unsigned char* tag_at
        cdef Py_ssize_t tag_size
        self.seen += 1
        if r.id.start >= 0:
            if r.id_digits:
                fresh = self.ids._add_key(r.id_key)
            else:
                fresh = self.ids.add(_span_str(p, r.id))
            if not fresh:
                self.duplicates += 1
                return 0
        if r.retweet and not self.count_retweets:
            self.retweets += 1
            return 0
        if r.text.start < 0:
            text, size = p, 0  # the default text, ""
        elif r.text_escaped:
            text, size = self._unescaped(text, size)
        sessions = self.sessions is not None and r.author_id.start >= 0
        if sessions and not r.author_hashed:
            a = _span_hash(p, r.author_id)
        if r.ntags:
            keys = self.keybuf
            del keys[:]
            for k in range(r.ntags):
                tag_at, tag_size = p + r.tags[2 * k], r.tags[2 * k + 1] - r.tags[2 * k]
                if r.tags_escaped & (1u << k):
                    tag_at, tag_size = self._unescaped_tag(tag_at, tag_size)
                tag = self._raw_key(tag_at, tag_size, &entry)
                if len(keys) == 0 or tag not in keys:
                    entries[len(keys)] = entry
                    keys.append(tag)
            return self._count(
                keys, self._happy_at(text, size), event_time, sessions, a, entries
            )
        # No entities: hashtags from the text, where it has a hash sign at all.
        if not r.entities and (
            memchr(text, 35, size) != NULL or _find(text, size, b"\xef\xbc\x83", 3)  # # or ＃
        ):
            tags = _extract_hashtags(PyUnicode_DecodeUTF8(<const char*> text, size, NULL))
            if tags:
                return self._count(
                    self._keys(tags), self._happy_at(text, size), event_time, sessions, a
                )
        if sessions:
            self.sessions._admit(None, a, event_time, (), False)
        return 0

    cdef int add_post(self, object post) except -1:
        return self.add(
            post.id, post.author, post.event_time, post.text, post.hashtags, post.is_retweet
        )

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
            tally.add_post(post)
    finally:
        tally.finish()
