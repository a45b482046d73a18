# Part of _speedups.pyx (included): the counting loops, twins of aggregate._py_add_many and
# formats.x.py_count_x_lines.

# -- counting: PostCounter.add_many and X lines, decoded and counted in one pass ---------------


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
                tally.add_post(item)
            else:
                reason = item.reason
                skipped[reason] = skipped.get(reason, 0) + 1
    finally:
        tally.finish()
    return posts, skipped, rejects


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
