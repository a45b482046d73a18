# Part of _speedups.pyx (included): a validating JSON scanner for the common X API v2 message.
#
# It reads the fields counting needs (data's id, author_id, created_at, text, hashtags and
# retweet reference, and the included tweets a retweet points at) as spans of the line, without
# building a Python object, and checks that the whole line is JSON that the package's msgspec
# schema (formats.x._Envelope) accepts. It declines (returns False) wherever it cannot be sure
# that msgspec would decode the line to the same values: an escape in a key, an id, an
# author or a time (texts and hashtags may hold escapes, surrogate pairs too: the counting
# decodes them with _unescape), a lone surrogate anywhere, a null, a duplicate key, a note,
# v1.1 or notice fields, nesting past _SCAN_DEPTH, more than _SCAN_TAGS hashtags, anything not
# JSON. A declined line goes to msgspec, which decides.
#
# Lines are `bytes`, which CPython always ends with a NUL after the last byte: the scanner
# reads at most that NUL past the end, which matches no byte it looks for.

cdef enum:
    _SCAN_DEPTH = 64
    _SCAN_TAGS = 32      # hashtags kept per tweet
    _SCAN_INCLUDED = 8   # included tweets kept


ctypedef struct _Span:
    Py_ssize_t start     # -1: absent
    Py_ssize_t end


ctypedef struct _ScanTweet:
    _Span id
    _Span text
    _Span created
    _Span author
    _Span ref_id         # of the first reference of type "retweeted" (absent: "")
    bint retweet
    bint text_escaped    # the text holds JSON escapes (see _unescape)
    bint entities        # an entities object was there (its hashtags may be none)
    int ntags
    _Span tags[_SCAN_TAGS]   # each hashtag's tag, or its text where the tag is empty
    unsigned int tags_escaped  # bit k: tags[k] holds JSON escapes (see _unescape)


ctypedef struct _Scan:
    _ScanTweet data
    int nincluded
    _ScanTweet included[_SCAN_INCLUDED]


cdef enum:
    _ENVELOPE_COUNT = 17

cdef const char* _ENVELOPE[_ENVELOPE_COUNT]
_ENVELOPE[:] = [
    "id_str", "id", "text", "full_text", "created_at", "entities", "extended_tweet", "user",
    "retweeted_status", "errors", "delete", "limit", "scrub_geo", "status_withheld",
    "user_withheld", "warning", "disconnect",
]


cdef enum:
    _AHEAD = 3  # how many lines ahead the counting loop prefetches (see _XLines.count)
    _PENDING = 0  # a _Ready's state: not scanned yet
    _SCANNED = 1  # ... read by the scanner
    _DECLINED = 2  # ... for msgspec to read


ctypedef struct _Ready:
    # A line, and what counting needs of it once the scanner has read it (_prepare): made on
    # either thread of count_x_lines, counted in order on the one that holds the GIL.
    const unsigned char* p  # the line (a NUL after its end)
    Py_ssize_t n
    int state               # _PENDING, _SCANNED, _DECLINED: written last (release), read first
    bint id_digits          # data's id is digits: its IdRing key is `id_key`
    bint author_hashed      # data's author is ASCII: its hh_str_hash is `author`
    bint retweet
    bint text_escaped       # the source's text holds JSON escapes (see _unescape)
    bint entities           # the source had an entities object
    int ntags
    unsigned int tags_escaped  # bit k: the k-th hashtag holds JSON escapes
    double event_time
    uint64_t id_key
    uint64_t author
    _Span id                # data's
    _Span author_id         # data's
    _Span text              # the source's: data, or the original of a retweet
    int32_t tags[2 * _SCAN_TAGS]  # the source's hashtags: start and end of each


cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* The index of the first byte at or after i that a string cannot hold as it is (a quote, a
       backslash or a control character), or n. Sixteen bytes at a time where SSE2 is there
       (every x86-64), never reading past p[n - 1]. */
    static Py_ssize_t hh_plain_run(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) {
    #if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8(34), backslash = _mm_set1_epi8(92);
        const __m128i control = _mm_set1_epi8(0x1F);
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i*) (p + i));
            __m128i stop = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));  /* v <= 0x1F */
            int mask = _mm_movemask_epi8(stop);
            if (mask)
                return i + __builtin_ctz((unsigned int) mask);
            i += 16;
        }
    #endif
        while (i < n && p[i] >= 0x20 && p[i] != 34 && p[i] != 92)  /* " and \\ */
            i++;
        return i;
    }
    """
    Py_ssize_t hh_plain_run(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) nogil


cdef inline Py_ssize_t _ws(const unsigned char* p, Py_ssize_t i) noexcept nogil:
    cdef unsigned char c = p[i]
    while c == 32 or c == 10 or c == 13 or c == 9:
        i += 1
        c = p[i]
    return i


cdef inline int _hex(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    c |= 0x20
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef inline int _hex4(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # The four hex digits at p[i:i + 4] as a number, or -1. Reads stop at the first non-digit,
    # so never past a NUL (the line's end).
    cdef int k, d, code = 0
    if n - i < 4:
        return -1
    for k in range(4):
        d = _hex(p[i + k])
        if d < 0:
            return -1
        code = code * 16 + d
    return code


cdef Py_ssize_t _string_end(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, bint* escaped
) noexcept nogil:
    # p[i] opens a string: the index of its closing quote, or -1 (a control character, a bad
    # escape, a lone surrogate, no end). `escaped`: set where the string holds an escape.
    cdef unsigned char c
    cdef int code, low
    i += 1
    while True:
        i = hh_plain_run(p, i, n)
        c = p[i]
        if c == 34:
            return i if i < n else -1
        if c != 92 or i >= n:
            return -1
        escaped[0] = True
        c = p[i + 1]
        if c == 117:  # \uXXXX
            code = _hex4(p, n, i + 2)
            if code < 0 or 0xDC00 <= code <= 0xDFFF:
                return -1  # a bad escape, or a low surrogate with no high one before it
            if 0xD800 <= code <= 0xDBFF:
                # A high surrogate must be followed by a low one (msgspec refuses the rest):
                # an escaped character beyond the basic plane, as ensure_ascii writes emoji.
                if p[i + 6] != 92 or p[i + 7] != 117:
                    return -1
                low = _hex4(p, n, i + 8)
                if not 0xDC00 <= low <= 0xDFFF:
                    return -1
                i += 6
            i += 6
        elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
            i += 2
        else:
            return -1


cdef bint _utf8(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    # Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
    cdef Py_ssize_t i = 0
    cdef unsigned char c, lo, hi
    cdef int more
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            more = 1
        elif 0xE0 <= c <= 0xEF:
            more = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            more = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if n - i <= more or not (lo <= s[i + 1] <= hi):
            return False
        i += 2
        more -= 1
        while more:
            if not (0x80 <= s[i] <= 0xBF):
                return False
            i += 1
            more -= 1
    return True


cdef Py_ssize_t _skip_number(const unsigned char* p, Py_ssize_t i) noexcept nogil:
    # A JSON number from p[i]: the index after it, or -1.
    if p[i] == 45:
        i += 1
    if p[i] == 48:
        i += 1
    elif 49 <= p[i] <= 57:
        while 48 <= p[i] <= 57:
            i += 1
    else:
        return -1
    if p[i] == 46:
        i += 1
        if not (48 <= p[i] <= 57):
            return -1
        while 48 <= p[i] <= 57:
            i += 1
    if p[i] == 101 or p[i] == 69:
        i += 1
        if p[i] == 43 or p[i] == 45:
            i += 1
        if not (48 <= p[i] <= 57):
            return -1
        while 48 <= p[i] <= 57:
            i += 1
    return i


cdef inline Py_ssize_t _next_member(
    const unsigned char* p, Py_ssize_t i, unsigned char close, bint* more
) noexcept nogil:
    # After a value in an object or array: past the comma (more) or the closing bracket.
    i = _ws(p, i)
    if p[i] == 44:
        more[0] = True
        return _ws(p, i + 1)
    more[0] = False
    return i + 1 if p[i] == close else -1


cdef Py_ssize_t _key(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, _Span* key, bint* escaped
) noexcept nogil:
    # p[i] opens an object's key: the index of its value, with the key's text at `key`.
    if p[i] != 34:
        return -1
    escaped[0] = False
    cdef Py_ssize_t end = _string_end(p, n, i, escaped)
    if end < 0:
        return -1
    key.start, key.end = i + 1, end
    i = _ws(p, end + 1)
    if p[i] != 58:
        return -1
    return _ws(p, i + 1)


cdef Py_ssize_t _skip_value(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth
) noexcept nogil:
    # Any JSON value from p[i] (no whitespace before it): the index after it, or -1.
    cdef unsigned char c = p[i]
    cdef bint escaped = False, more
    cdef _Span key
    if c == 34:
        i = _string_end(p, n, i, &escaped)
        return -1 if i < 0 else i + 1
    if c == 123 or c == 91:
        if depth >= _SCAN_DEPTH:
            return -1
        i = _ws(p, i + 1)
        if p[i] == c + 2:  # } or ]
            return i + 1
        while True:
            if c == 123:
                i = _key(p, n, i, &key, &escaped)
                if i < 0:
                    return -1
            i = _skip_value(p, n, i, depth + 1)
            if i < 0:
                return -1
            i = _next_member(p, i, c + 2, &more)
            if i < 0 or not more:
                return i
    if c == 116:
        return i + 4 if n - i >= 4 and memcmp(p + i, b"true", 4) == 0 else -1
    if c == 102:
        return i + 5 if n - i >= 5 and memcmp(p + i, b"false", 5) == 0 else -1
    if c == 110:
        return i + 4 if n - i >= 4 and memcmp(p + i, b"null", 4) == 0 else -1
    return _skip_number(p, i)


cdef Py_ssize_t _text(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, _Span* out, bint* escapes=NULL
) noexcept nogil:
    # A string the schema reads, valid UTF-8: the index after it, or -1. Escapes are declined,
    # or, with `escapes`, allowed and reported there (surrogates only in pairs: _string_end).
    cdef bint escaped = False
    cdef Py_ssize_t end
    if p[i] != 34:
        return -1
    end = _string_end(p, n, i, &escaped)
    if end < 0 or (escaped and escapes == NULL) or not _utf8(p + i + 1, end - i - 1):
        return -1
    if escapes != NULL:
        escapes[0] = escaped
    out.start, out.end = i + 1, end
    return end + 1


cdef inline bint _named(
    const unsigned char* p, _Span text, const char* name, Py_ssize_t size
) noexcept nogil:
    # Whether the text at `text` is `name` (its first `size` bytes).
    return text.end - text.start == size and memcmp(p + text.start, name, size) == 0


cdef inline bint _first(unsigned int* seen, int field) noexcept nogil:
    # False for a field's second appearance in one object (msgspec keeps the last: declined).
    if seen[0] & (1u << field):
        return False
    seen[0] |= 1u << field
    return True


cdef Py_ssize_t _hashtag(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth, _ScanTweet* t
) noexcept nogil:
    cdef _Span key
    cdef bint escaped, more, tag_escaped = False, text_escaped = False
    cdef unsigned int seen = 0
    cdef _Span tag, text
    if p[i] != 123 or depth >= _SCAN_DEPTH:
        return -1
    tag.start = text.start = -1
    i = _ws(p, i + 1)
    if p[i] != 125:
        while True:
            i = _key(p, n, i, &key, &escaped)
            if i < 0 or escaped:
                return -1
            if _named(p, key, "tag", 3):
                i = _text(p, n, i, &tag, &tag_escaped) if _first(&seen, 0) else -1
            elif _named(p, key, "text", 4):
                i = _text(p, n, i, &text, &text_escaped) if _first(&seen, 1) else -1
            else:
                i = _skip_value(p, n, i, depth + 1)
            if i < 0:
                return -1
            i = _next_member(p, i, 125, &more)
            if i < 0 or not more:
                break
        if i < 0:
            return -1
    else:
        i += 1
    # `tag or text`, and only a non-empty one counts (an escape is never empty).
    if tag.start >= 0 and tag.end > tag.start:
        text, text_escaped = tag, tag_escaped
    if text.start >= 0 and text.end > text.start:
        if t.ntags == _SCAN_TAGS:
            return -1
        if text_escaped:
            t.tags_escaped |= 1u << t.ntags
        t.tags[t.ntags] = text
        t.ntags += 1
    return i


cdef Py_ssize_t _entities(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth, _ScanTweet* t
) noexcept nogil:
    cdef _Span key
    cdef bint escaped, more
    cdef unsigned int seen = 0
    if p[i] != 123 or depth >= _SCAN_DEPTH:
        return -1
    t.entities = True
    i = _ws(p, i + 1)
    if p[i] == 125:
        return i + 1
    while True:
        i = _key(p, n, i, &key, &escaped)
        if i < 0 or escaped:
            return -1
        if _named(p, key, "hashtags", 8):
            if not _first(&seen, 0) or p[i] != 91 or depth + 1 >= _SCAN_DEPTH:
                return -1
            i = _ws(p, i + 1)
            if p[i] == 93:
                i += 1
            else:
                while True:
                    i = _hashtag(p, n, i, depth + 2, t)
                    if i < 0:
                        return -1
                    i = _next_member(p, i, 93, &more)
                    if i < 0 or not more:
                        break
        else:
            i = _skip_value(p, n, i, depth + 1)
        if i < 0:
            return -1
        i = _next_member(p, i, 125, &more)
        if i < 0 or not more:
            return i


cdef Py_ssize_t _reference(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth, _ScanTweet* t
) noexcept nogil:
    cdef _Span key
    cdef bint escaped, more
    cdef unsigned int seen = 0
    cdef _Span kind, ref
    if p[i] != 123 or depth >= _SCAN_DEPTH:
        return -1
    kind.start = ref.start = -1
    i = _ws(p, i + 1)
    if p[i] == 125:
        i += 1
    else:
        while True:
            i = _key(p, n, i, &key, &escaped)
            if i < 0 or escaped:
                return -1
            if _named(p, key, "type", 4):
                i = _text(p, n, i, &kind) if _first(&seen, 0) else -1
            elif _named(p, key, "id", 2):
                i = _text(p, n, i, &ref) if _first(&seen, 1) else -1
            else:
                i = _skip_value(p, n, i, depth + 1)
            if i < 0:
                return -1
            i = _next_member(p, i, 125, &more)
            if i < 0 or not more:
                break
        if i < 0:
            return -1
    if not t.retweet and kind.start >= 0 and _named(p, kind, "retweeted", 9):
        t.retweet = True
        if ref.start < 0:
            ref.start = ref.end = 0  # the default id, ""
        t.ref_id = ref
    return i


cdef Py_ssize_t _tweet(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth, _ScanTweet* t
) noexcept nogil:
    # A tweet object (data, or one of includes.tweets).
    cdef _Span key
    cdef bint escaped, more
    cdef unsigned int seen = 0
    if p[i] != 123 or depth >= _SCAN_DEPTH:
        return -1
    t.id.start = t.text.start = t.created.start = t.author.start = t.ref_id.start = -1
    t.retweet = t.entities = t.text_escaped = False
    t.ntags = 0
    t.tags_escaped = 0
    i = _ws(p, i + 1)
    if p[i] == 125:
        return i + 1
    while True:
        i = _key(p, n, i, &key, &escaped)
        if i < 0 or escaped:
            return -1
        if _named(p, key, "id", 2):
            i = _text(p, n, i, &t.id) if _first(&seen, 0) else -1
        elif _named(p, key, "text", 4):
            i = _text(p, n, i, &t.text, &t.text_escaped) if _first(&seen, 1) else -1
        elif _named(p, key, "created_at", 10):
            i = _text(p, n, i, &t.created) if _first(&seen, 2) else -1
        elif _named(p, key, "author_id", 9):
            i = _text(p, n, i, &t.author) if _first(&seen, 3) else -1
        elif _named(p, key, "entities", 8):
            i = _entities(p, n, i, depth + 1, t) if _first(&seen, 4) else -1
        elif _named(p, key, "referenced_tweets", 17):
            if not _first(&seen, 5) or p[i] != 91 or depth + 1 >= _SCAN_DEPTH:
                return -1
            i = _ws(p, i + 1)
            if p[i] == 93:
                i += 1
            else:
                while True:
                    i = _reference(p, n, i, depth + 2, t)
                    if i < 0:
                        return -1
                    i = _next_member(p, i, 93, &more)
                    if i < 0 or not more:
                        break
        elif _named(p, key, "note_tweet", 10):
            return -1  # a long post: formats.x reads its note
        else:
            i = _skip_value(p, n, i, depth + 1)
        if i < 0:
            return -1
        i = _next_member(p, i, 125, &more)
        if i < 0 or not more:
            return i


cdef Py_ssize_t _includes(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, _Scan* scan
) noexcept nogil:
    cdef _Span key
    cdef bint escaped, more
    cdef unsigned int seen = 0
    if p[i] != 123:
        return -1
    i = _ws(p, i + 1)
    if p[i] == 125:
        return i + 1
    while True:
        i = _key(p, n, i, &key, &escaped)
        if i < 0 or escaped:
            return -1
        if _named(p, key, "tweets", 6):
            if not _first(&seen, 0) or p[i] != 91:
                return -1
            i = _ws(p, i + 1)
            if p[i] == 93:
                i += 1
            else:
                while True:
                    if scan.nincluded == _SCAN_INCLUDED:
                        return -1
                    i = _tweet(p, n, i, 3, &scan.included[scan.nincluded])
                    if i < 0:
                        return -1
                    scan.nincluded += 1
                    i = _next_member(p, i, 93, &more)
                    if i < 0 or not more:
                        break
        else:
            i = _skip_value(p, n, i, 2)
        if i < 0:
            return -1
        i = _next_member(p, i, 125, &more)
        if i < 0 or not more:
            return i


cdef bint _envelope_field(const unsigned char* p, _Span key) noexcept nogil:
    # A top-level field of formats.x._Envelope other than data and includes (v1.1, notices).
    cdef int k
    for k in range(_ENVELOPE_COUNT):
        if _named(p, key, _ENVELOPE[k], strlen(_ENVELOPE[k])):
            return True
    return False


cdef bint _scan_x(const unsigned char* p, Py_ssize_t n, _Scan* scan) noexcept nogil:
    """Scan one line (p[n] must be readable: bytes end with a NUL). False: declined."""
    cdef _Span key
    cdef Py_ssize_t i
    cdef bint escaped, more, has_data = False
    cdef unsigned int seen = 0
    scan.nincluded = 0
    i = _ws(p, 0)
    if p[i] != 123:
        return False
    i = _ws(p, i + 1)
    if p[i] == 125:
        return False  # no data
    while True:
        i = _key(p, n, i, &key, &escaped)
        if i < 0 or escaped:
            return False
        if _named(p, key, "data", 4):
            if not _first(&seen, 0):
                return False
            has_data = True
            i = _tweet(p, n, i, 1, &scan.data)
        elif _named(p, key, "includes", 8):
            i = _includes(p, n, i, scan) if _first(&seen, 1) else -1
        elif _envelope_field(p, key):
            return False
        else:
            i = _skip_value(p, n, i, 1)
        if i < 0:
            return False
        i = _next_member(p, i, 125, &more)
        if i < 0:
            return False
        if not more:
            break
    return has_data and _ws(p, i) == n
