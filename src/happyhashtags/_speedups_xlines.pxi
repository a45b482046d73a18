# Part of _speedups.pyx (included): X lines read and counted in one pass (count_x_lines, the
# twin of formats.x.py_count_x_lines), with the scanner (_speedups_scan.pxi) and a _Tally.


cdef class _Ahead:
    """Scanned lines on their way to `_Tally.add_scanned`, counted in order, `_AHEAD` lines
    after they were scanned. Counting a line mostly waits on memory: its id's slot among a
    million, its author's index slot, session and hashtags (tables larger than the caches).
    Each line scanned after it prefetches one more of those, so by its turn they are cached."""

    cdef _Held* held        # a ring of _AHEAD + 1
    cdef list lines         # the bytes object each held scan points into (None: its copy)
    cdef Py_ssize_t head, size
    cdef _Tally tally

    def __cinit__(self, _Tally tally):
        self.held = <_Held*> calloc(_AHEAD + 1, sizeof(_Held))
        if self.held == NULL:
            raise MemoryError()
        self.lines = [None] * (_AHEAD + 1)
        self.head = self.size = 0
        self.tally = tally

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.held != NULL:
            for k in range(_AHEAD + 1):
                free(self.held[k].buf)
        free(self.held)

    cdef inline _Held* next_slot(self) noexcept:
        # Where to scan the next line (held only once `push` says so).
        return &self.held[(self.head + self.size) % (_AHEAD + 1)]

    cdef const unsigned char* copy_in(self, const unsigned char* line, Py_ssize_t n) except NULL:
        # next_slot()'s own copy of line[:n], with the NUL after it that the scanner expects.
        cdef _Held* held = self.next_slot()
        cdef unsigned char* buf
        if held.cap < n + 1:
            buf = <unsigned char*> realloc(held.buf, n + 1)
            if buf == NULL:
                raise MemoryError()
            held.buf, held.cap = buf, n + 1
        memcpy(held.buf, line, n)
        held.buf[n] = 0
        return held.buf

    cdef int push(self, object line, const unsigned char* p, double event_time) except -1:
        # Hold the line `p` scanned into next_slot() (`line`: the bytes object that holds it,
        # or None for its copy_in); count the oldest once _AHEAD are waiting.
        cdef Py_ssize_t at = (self.head + self.size) % (_AHEAD + 1), age
        cdef _Held* held = &self.held[at]
        cdef _Span span = held.scan.data.id
        cdef SessionTable sessions = self.tally.sessions
        held.data = p
        held.event_time = event_time
        held.id_digits = span.start >= 0 and _digit_key(p + span.start, span.end - span.start, &held.id_key)
        if held.id_digits:
            self.tally.ids._prefetch(held.id_key)
        if held.scan.data.author.start >= 0:
            held.author = _span_hash(p, held.scan.data.author)
            if sessions is not None:
                sessions._prefetch(held.author, 0)
        self.lines[at] = line
        self.size += 1
        if sessions is not None:
            for age in range(1, min(self.size, 3)):  # the next step for the older ones
                held = &self.held[(at + _AHEAD + 1 - age) % (_AHEAD + 1)]
                if held.scan.data.author.start >= 0:
                    sessions._prefetch(held.author, age)
        if self.size > _AHEAD:
            self.count_oldest()
        return 0

    cdef int count_oldest(self) except -1:
        cdef Py_ssize_t at = self.head
        self.head = (at + 1) % (_AHEAD + 1)
        self.size -= 1
        try:
            return self.tally.add_scanned(&self.held[at])
        finally:
            self.lines[at] = None

    cdef int drain(self) except -1:
        while self.size:
            self.count_oldest()
        return 0


cdef class _XLines:
    """One call of `count_x_lines`: its tally, the scanned lines ahead, and what it returns."""

    cdef _Tally tally
    cdef _Ahead ahead
    cdef double received_at, latest
    cdef Py_ssize_t posts
    cdef dict skipped
    cdef list rejects
    cdef list tagbuf
    cdef object decode, item_of, DecodeError

    def __cinit__(self, counter, double received_at):
        self.tally = _Tally(counter)
        self.ahead = _Ahead(self.tally)
        self.received_at = received_at
        self.latest = received_at + _x.FUTURE_TOLERANCE
        self.posts = 0
        self.skipped = {}
        self.rejects = []
        self.tagbuf = []
        self.decode = _x._decoder.decode
        self.item_of = _x._item_of
        self.DecodeError = _x.DecodeError

    cdef bint scanned(self, object line, const unsigned char* p, Py_ssize_t n) except -1:
        # Count the line p[:n] (p[n] readable: a NUL) if the scanner reads it; False where it
        # declines, and msgspec must read it (`decoded`).
        cdef double event_time
        cdef _Held* held = self.ahead.next_slot()
        if not (
            _scan_x(p, n, &held.scan)
            and _scanned_time(p, &held.scan.data, &event_time, self.received_at)
        ):
            return False
        if event_time > self.latest:
            event_time = self.received_at
        self.posts += 1
        self.ahead.push(line, p, event_time)
        return True

    cdef int decoded(self, object line, Py_ssize_t index) except -1:
        # A line the scanner declined: msgspec's schema, then the Python rules.
        cdef double event_time
        cdef bint is_retweet
        cdef list tags
        self.ahead.drain()  # the lines before this one first
        try:
            message = self.decode(line)
        except _MsgspecError:
            message = None
        if message is not None:
            data = message.data
            source = None if data is None else _v2_source(message, data, &is_retweet)
            if source is not None and _v2_time(data, &event_time, self.received_at):
                if event_time > self.latest:
                    event_time = self.received_at
                entities = source.entities
                if entities is None:
                    tags = None
                else:
                    tags = self.tagbuf  # reused: counting does not keep it
                    del tags[:]
                    for hashtag in entities.hashtags:
                        tag = hashtag.tag
                        if not tag:
                            tag = hashtag.text
                        if tag:
                            tags.append(tag)
                self.posts += 1
                self.tally.add(data.id, data.author_id, event_time, source.text, tags, is_retweet)
                return 0
        try:
            item = self.item_of(message, line, self.received_at)
        except self.DecodeError as exc:
            self.rejects.append((index, exc))
            return 0
        if type(item) is _Post:
            self.posts += 1
            self.tally.add_post(item)
        else:
            reason = item.reason
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return 0


def count_x_lines(counter, lines, double received_at):
    """``formats.x.py_count_x_lines`` compiled: read X lines and count their posts in one pass,
    without building a `Post` or any Python object per field for the usual message (an
    original post, a reply, a quote or a retweet, with an X-shaped ``created_at`` and no
    note), which the scanner reads; msgspec and the Python rules read any other line. A
    `sources.base.LineBlock` is read in place, without a bytes object per line.
    Returns ``(posts, skipped reasons, [(line index, DecodeError), ...])``."""
    cdef _XLines run = _XLines(counter, received_at)
    cdef Py_ssize_t index = -1, count, pos = 0, end, n
    cdef const unsigned char* p
    cdef const unsigned char* found
    try:
        if type(lines) is _LineBlock:  # its length is its block's newlines + 1, by construction
            block = lines.block
            p, n, count = <bytes> block, len(<bytes> block), len(lines)
            for index in range(count):
                found = <const unsigned char*> memchr(p + pos, 10, n - pos)
                end = n if found == NULL else found - p
                if not run.scanned(None, run.ahead.copy_in(p + pos, end - pos), end - pos):
                    run.decoded(PyBytes_FromStringAndSize(<const char*> p + pos, end - pos), index)
                pos = end + 1
        else:
            for line in lines:
                index += 1
                if type(line) is bytes and run.scanned(line, <bytes> line, len(<bytes> line)):
                    continue
                run.decoded(line, index)
        run.ahead.drain()
    finally:
        run.tally.finish()
    return run.posts, run.skipped, run.rejects


cdef _ScanTweet* _scanned_source(const unsigned char* p, _Scan* scan) noexcept:
    # `_v2_source` of a scanned line: the first included tweet whose id is the retweet's
    # reference, else the data tweet.
    cdef _ScanTweet* data = &scan.data
    cdef _ScanTweet* included
    cdef Py_ssize_t size = data.ref_id.end - data.ref_id.start
    cdef int k
    if data.retweet:
        for k in range(scan.nincluded):
            included = &scan.included[k]
            if (
                included.id.start >= 0
                and included.id.end - included.id.start == size
                and memcmp(p + included.id.start, p + data.ref_id.start, size) == 0
            ):
                return included
    return data


cdef bint _scanned_time(
    const unsigned char* p, _ScanTweet* data, double* event_time, double received_at
) noexcept:
    # `_v2_time` of a scanned line.
    if data.created.start < 0:
        event_time[0] = received_at
        return True
    return _x_seconds_at(p + data.created.start, data.created.end - data.created.start, event_time)


cdef object _v2_source(object message, object tweet, bint* is_retweet):
    # The tweet whose text and hashtags count, as formats.x._v2_post picks it: a retweet's
    # original from the includes where it is there, else the tweet itself. None where that
    # tweet has a note (its long text): formats.x._item_of reads those.
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


def scan_x(bytes line):
    """What the scanner reads from an X line, for tests: ``None`` where it declines, else
    ``(data, included)``: dicts of the fields it read (absent ones left out) and the hashtags."""
    cdef _Scan scan
    cdef const unsigned char* p = line
    if not _scan_x(p, len(line), &scan):
        return None
    return _scanned_dict(line, &scan.data), [
        _scanned_dict(line, &scan.included[k]) for k in range(scan.nincluded)
    ]


cdef dict _scanned_dict(bytes line, _ScanTweet* t):
    cdef const unsigned char* p = line
    cdef bytearray text
    out = {}
    for name, span in (
        ("id", t.id), ("text", t.text), ("created_at", t.created), ("author_id", t.author)
    ):
        if span.start >= 0:
            out[name] = line[span.start:span.end].decode()
    if t.text.start >= 0 and t.text_escaped:
        text = bytearray(t.text.end - t.text.start)
        size = _unescape(p + t.text.start, t.text.end - t.text.start, text)
        out["text"] = text[:size].decode()
    if t.retweet:
        out["retweeted"] = line[t.ref_id.start:t.ref_id.end].decode()
    if t.entities:
        out["hashtags"] = [line[s.start:s.end].decode() for s in t.tags[:t.ntags]]
    return out

