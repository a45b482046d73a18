# Part of _speedups.pyx (included): X lines read and counted in one pass (count_x_lines, the
# twin of formats.x.py_count_x_lines), with the scanner (_speedups_scan.pxi) and a _Tally.


cdef extern from *:
    """
    /* Two threads share a count_x_lines call where GCC or Clang atomics and POSIX threads
       are there (see _XLines); elsewhere the calling thread does all of it. */
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
    #include <pthread.h>
    #include <sched.h>
    #include <signal.h>
    #define HH_THREADS 1
    typedef pthread_t hh_thread;
    static int hh_thread_start(hh_thread* t, void* (*run)(void*), void* arg) {
        return pthread_create(t, NULL, run, arg);
    }
    static void hh_thread_join(hh_thread t) { pthread_join(t, NULL); }
    #if defined(__linux__)
    #include <sys/prctl.h>
    #endif
    static void hh_block_signals(void) {  /* signals are for the Python thread */
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
    #if defined(__linux__)
        prctl(PR_SET_NAME, "happyhashtags-scan");  /* its name in top -H, ps -L, perf */
    #endif
    }
    static void hh_yield(void) { sched_yield(); }
    #define hh_claim(p) __atomic_fetch_add((p), 1, __ATOMIC_ACQ_REL)
    #define hh_peek(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
    #define hh_publish(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
    #else
    #define HH_THREADS 0
    typedef int hh_thread;
    static int hh_thread_start(hh_thread* t, void* (*run)(void*), void* arg) { return -1; }
    static void hh_thread_join(hh_thread t) {}
    static void hh_block_signals(void) {}
    static void hh_yield(void) {}
    #define hh_claim(p) ((*(p))++)
    #define hh_peek(p) (*(p))
    #define hh_publish(p, v) (*(p) = (v))
    #endif
    """
    const int HH_THREADS
    ctypedef int hh_thread
    int hh_thread_start(hh_thread* t, void* (*run)(void*) noexcept nogil, void* arg) nogil
    void hh_thread_join(hh_thread t) nogil
    void hh_block_signals() nogil
    void hh_yield() nogil
    Py_ssize_t hh_claim(Py_ssize_t* p) nogil
    int hh_peek(int* p) nogil
    Py_ssize_t hh_peek_next "hh_peek"(Py_ssize_t* p) nogil
    int hh_stopped "hh_peek"(int* p) nogil
    void hh_publish(int* p, int v) nogil


# A second thread helps a call of count_x_lines that has at least this many lines to read (and
# the process may use two CPUs or more: `_cpus.usable_cpus`): see `set_scan_helper`.
cdef Py_ssize_t _helper_min_lines = 256


def set_scan_helper(min_lines):
    """Let count_x_lines scan lines on a second thread when a call has `min_lines` lines or
    more (None: never). Returns the previous setting. Set at import to 256 where the process
    may use two CPUs or more (`_cpus.usable_cpus`), else None; tests set 1 to run both
    threads on small inputs."""
    global _helper_min_lines
    previous = None if _helper_min_lines < 0 else _helper_min_lines
    if min_lines is None:
        _helper_min_lines = -1
    elif min_lines < 1:
        raise ValueError("min_lines must be at least 1, or None")
    else:
        _helper_min_lines = min_lines
    return previous


from happyhashtags._cpus import usable_cpus

if usable_cpus() < 2:
    _helper_min_lines = -1  # one CPU (or a quota of one): a second thread would only take turns


ctypedef struct _Lines:
    # The lines of one count_x_lines call, shared by its two threads: each claims the next
    # unread line (`next`) and prepares it; the counting thread counts them in order.
    _Ready* ready
    Py_ssize_t count
    Py_ssize_t next      # the next line nobody has claimed (atomic)
    int stop             # set when the call ends early: the helper claims no more (atomic)
    double received_at
    double latest        # event times after it are taken as received_at


cdef void _prepare(_Lines* lines, _Ready* r, _Scan* scan) noexcept nogil:
    # Scan r's line and read what counting needs of it; publish r.state last.
    cdef const unsigned char* p = r.p
    cdef _ScanTweet* data = &scan.data
    cdef _ScanTweet* source
    cdef double event_time
    cdef Py_ssize_t i
    cdef int k
    if r.state != _PENDING:
        return  # declined before it was claimed: not a bytes line (no `p` to read)
    if (
        r.n > 0x7FFFFFFF  # tags are kept as 32-bit offsets
        or not _scan_x(p, r.n, scan)
        or not _scanned_time(p, data, &event_time, lines.received_at)
    ):
        hh_publish(&r.state, _DECLINED)
        return
    r.event_time = lines.received_at if event_time > lines.latest else event_time
    r.id = data.id
    r.id_digits = data.id.start >= 0 and _digit_key(
        p + data.id.start, data.id.end - data.id.start, &r.id_key
    )
    r.author_id = data.author
    r.author_hashed = False
    if data.author.start >= 0:  # (an absent span's end is not set)
        r.author_hashed = True
        for i in range(data.author.start, data.author.end):
            if p[i] >= 0x80:
                r.author_hashed = False  # hh_str_hash needs the str: the counting thread makes it
                break
        if r.author_hashed:
            r.author = hh_hash(p + data.author.start, data.author.end - data.author.start, 1)
    r.retweet = data.retweet
    source = _scanned_source(p, scan)
    r.text = source.text
    r.text_escaped = source.text_escaped
    r.entities = source.entities
    r.ntags = source.ntags
    r.tags_escaped = source.tags_escaped
    for k in range(source.ntags):
        r.tags[2 * k] = <int32_t> source.tags[k].start
        r.tags[2 * k + 1] = <int32_t> source.tags[k].end
    hh_publish(&r.state, _SCANNED)


cdef void* _helper(void* arg) noexcept nogil:
    # The second thread: prepares unclaimed lines until there are none (or the call stops).
    cdef _Lines* lines = <_Lines*> arg
    cdef _Scan* scan = <_Scan*> malloc(sizeof(_Scan))
    cdef Py_ssize_t i
    hh_block_signals()
    if scan != NULL:
        while not hh_stopped(&lines.stop):
            i = hh_claim(&lines.next)
            if i >= lines.count:
                break
            _prepare(lines, &lines.ready[i], scan)
    free(scan)
    return NULL


cdef class _XLines:
    """One call of `count_x_lines`: its tally, its lines, and what it returns.

    Each line is first prepared (`_prepare`: scanned, its time parsed, its id and author keyed),
    which needs no Python object, then counted in order, which does. With `set_scan_helper`,
    a second thread prepares lines ahead of the counting while this one counts, and this one
    prepares whatever line it reaches unclaimed; so on one CPU nothing waits for long.
    Counting prefetches what the lines `_AHEAD` ahead will read (their id's slot among a
    million, their author's session): tables larger than the caches."""

    cdef _Tally tally
    cdef _Lines lines
    cdef _Scan* scan         # this thread's
    cdef unsigned char* copy # a LineBlock's lines, each followed by a NUL
    cdef bint helped
    cdef hh_thread helper
    cdef double received_at, latest
    cdef Py_ssize_t posts
    cdef dict skipped
    cdef list rejects
    cdef list tagbuf
    cdef object decode, item_of, DecodeError

    def __cinit__(self, counter, double received_at):
        self.tally = _Tally(counter)
        self.received_at = received_at
        self.latest = received_at + _x.FUTURE_TOLERANCE
        self.lines.ready = NULL
        self.lines.count = self.lines.next = 0
        self.lines.stop = 0
        self.lines.received_at = self.received_at
        self.lines.latest = self.latest
        self.scan = <_Scan*> malloc(sizeof(_Scan))
        self.copy = NULL
        self.helped = False
        if self.scan == NULL:
            raise MemoryError()
        self.posts = 0
        self.skipped = {}
        self.rejects = []
        self.tagbuf = []
        self.decode = _x._decoder.decode
        self.item_of = _x._item_of
        self.DecodeError = _x.DecodeError

    def __dealloc__(self):
        self.end()
        free(self.scan)
        free(self.lines.ready)
        free(self.copy)

    cdef int take_block(self, bytes block, Py_ssize_t count) except -1:
        # The `count` lines of a LineBlock's block, copied once, a NUL after each.
        cdef Py_ssize_t n = len(block), pos = 0, end, i
        cdef unsigned char* copy = <unsigned char*> malloc(n + 1)
        if copy == NULL:
            raise MemoryError()
        self.copy = copy
        memcpy(copy, <const unsigned char*> block, n)
        copy[n] = 0
        self.allocate(count)
        for i in range(count):
            end = _line_end(copy, pos, n)
            copy[end] = 0
            self.lines.ready[i].p = copy + pos
            self.lines.ready[i].n = end - pos
            pos = end + 1
        return 0

    cdef int take_list(self, list items) except -1:
        # A list's bytes lines are read where they are (bytes end with a NUL); msgspec reads
        # anything else.
        cdef Py_ssize_t i
        self.allocate(len(items))
        for i in range(len(items)):
            line = items[i]
            if type(line) is bytes:
                self.lines.ready[i].p = <const unsigned char*> (<bytes> line)
                self.lines.ready[i].n = len(<bytes> line)
            else:  # set before the helper starts, which sees it
                self.lines.ready[i].p, self.lines.ready[i].n = NULL, 0
                self.lines.ready[i].state = _DECLINED
        return 0

    cdef int allocate(self, Py_ssize_t count) except -1:
        cdef Py_ssize_t i
        self.lines.ready = <_Ready*> malloc(max(count, 1) * sizeof(_Ready))
        if self.lines.ready == NULL:
            raise MemoryError()
        for i in range(count):  # the rest is written before the state says it is ready
            self.lines.ready[i].state = _PENDING
        self.lines.count = count

    cdef int start(self) except -1:
        # The helper thread, where it is worth one.
        if HH_THREADS and 0 < _helper_min_lines <= self.lines.count:
            self.helped = hh_thread_start(&self.helper, _helper, &self.lines) == 0
        return 0

    cdef void end(self) noexcept:
        # Stop the helper (it finishes the line in hand) and wait for it.
        if self.helped:
            hh_publish(&self.lines.stop, 1)
            with nogil:
                hh_thread_join(self.helper)
            self.helped = False

    cdef _Ready* ready(self, Py_ssize_t i) noexcept nogil:
        # Line i, prepared, and the lines up to _AHEAD after it claimed (prepared here where
        # the helper has not claimed them yet, so that counting can prefetch for them).
        cdef _Ready* r = &self.lines.ready[i]
        cdef Py_ssize_t j, last = min(i + _AHEAD, self.lines.count - 1)
        cdef int spins = 0
        while hh_peek_next(&self.lines.next) <= last:
            j = hh_claim(&self.lines.next)
            if j < self.lines.count:
                _prepare(&self.lines, &self.lines.ready[j], self.scan)
        while hh_peek(&r.state) == _PENDING:
            # The helper is on it: a fraction of a microsecond, unless it is descheduled.
            spins += 1
            if spins > 64:
                hh_yield()
        return r

    cdef void prefetch(self, Py_ssize_t i) noexcept:
        # Start the memory reads of the lines ahead of line i that are prepared: one
        # dependent step per line (see SessionTable._prefetch).
        cdef Py_ssize_t age, k
        cdef _Ready* r
        cdef SessionTable sessions = self.tally.sessions
        for age in range(_AHEAD):
            k = i + _AHEAD - age
            if k >= self.lines.count:
                continue
            r = &self.lines.ready[k]
            if hh_peek(&r.state) != _SCANNED:
                continue
            if age == 0 and r.id_digits:
                self.tally.ids._prefetch(r.id_key)
            if sessions is not None and r.author_hashed:
                sessions._prefetch(r.author, age)

    cdef int count(self, object lines, bint block) except -1:
        # Every line, in order: the scanned ones counted here, the others decoded.
        cdef Py_ssize_t i
        cdef _Ready* r
        for i in range(self.lines.count):
            r = self.ready(i)  # with the GIL: the helper never takes it, and waits are short
            if r.state == _SCANNED:
                self.prefetch(i)
                self.posts += 1
                self.tally.add_scanned(r)
            elif block:
                self.decoded(PyBytes_FromStringAndSize(
                    <const char*> (<bytes> lines) + (r.p - self.copy), r.n
                ), i)
            else:
                self.decoded((<list> lines)[i], i)
        return 0

    cdef int decoded(self, object line, Py_ssize_t index) except -1:
        # A line the scanner declined: msgspec's schema, then the Python rules.
        cdef double event_time
        cdef bint is_retweet
        cdef list tags
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
    `sources.base.LineBlock` is read in place, without a bytes object per line; a second
    thread may scan lines ahead (`set_scan_helper`).
    Returns ``(posts, skipped reasons, [(line index, DecodeError), ...])``."""
    cdef _XLines run = _XLines(counter, received_at)
    cdef bint block = type(lines) is _LineBlock
    try:
        if block:  # its length is its block's newlines + 1, by construction
            items = lines.block
            run.take_block(items, len(lines))
        else:
            # Our own list: its lines stay alive while the helper reads them, whatever the
            # caller's list goes through meanwhile.
            items = list(lines)
            run.take_list(items)
        run.start()
        run.count(items, block)
    finally:
        run.end()
        run.tally.finish()
    return run.posts, run.skipped, run.rejects


def x_undecodable(lines, double received_at):
    """``formats.x.py_x_undecodable`` compiled: the indices of the X lines that
    ``formats.x.decode_x`` refuses. A line that `count_x_lines`'s scan accepts (and whose time
    it reads) decodes, so only the lines the scan declines are decoded, as counting does."""
    cdef _Scan* scan = <_Scan*> malloc(sizeof(_Scan))
    cdef const unsigned char* p
    cdef double event_time
    cdef Py_ssize_t i = 0
    cdef list refused = []
    if scan == NULL:
        raise MemoryError()
    _bind()
    decode, DecodeError = _x.decode_x, _x.DecodeError
    try:
        for line in lines:
            if type(line) is bytes and len(<bytes> line) <= 0x7FFFFFFF:
                p = <const unsigned char*> (<bytes> line)
                if _scan_x(p, len(<bytes> line), scan) and _scanned_time(
                    p, &scan.data, &event_time, received_at
                ):
                    i += 1
                    continue
            try:
                decode(line, received_at)
            except DecodeError:
                refused.append(i)
            i += 1
    finally:
        free(scan)
    return refused


cdef _ScanTweet* _scanned_source(const unsigned char* p, _Scan* scan) noexcept nogil:
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
) noexcept nogil:
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
    out = {}
    for name, span in (
        ("id", t.id), ("text", t.text), ("created_at", t.created), ("author_id", t.author)
    ):
        if span.start >= 0:
            out[name] = line[span.start:span.end].decode()
    if t.text.start >= 0 and t.text_escaped:
        out["text"] = _unescaped_str(p + t.text.start, t.text.end - t.text.start)
    if t.retweet:
        out["retweeted"] = line[t.ref_id.start:t.ref_id.end].decode()
    if t.entities:
        out["hashtags"] = [
            _unescaped_str(p + t.tags[k].start, t.tags[k].end - t.tags[k].start)
            if t.tags_escaped & (1u << k) else line[t.tags[k].start:t.tags[k].end].decode()
            for k in range(t.ntags)
        ]
    return out


cdef str _unescaped_str(const unsigned char* s, Py_ssize_t n):
    # The scanned string body s[:n], its escapes decoded.
    cdef bytearray out = bytearray(n)
    return out[:_unescape(s, n, out)].decode()

