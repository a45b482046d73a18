# Part of _speedups.pyx (included): X's created_at and partition keys, read from the text.

# -- X's created_at ----------------------------------------------------------------------------

cdef inline int _number(const unsigned char* value, Py_ssize_t start, Py_ssize_t count) noexcept nogil:
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


cdef inline long long _days_from_civil(long long y, long long m, long long d) noexcept nogil:
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
    # parse_x_time's work: False for any shape it leaves to parse_v2_time. Every shape it reads
    # is ASCII.
    if not PyUnicode_IS_ASCII(value):
        return False
    return _x_seconds_at(<const unsigned char*> PyUnicode_DATA(value), len(value), out)


cdef bint _x_seconds_at(const unsigned char* value, Py_ssize_t n, double* out) noexcept nogil:
    # _x_seconds of the ASCII text value[:n].
    cdef int year, month, day, hour, minute, second, micro = 0, limit
    cdef long long total
    if n not in (20, 24, 27) or value[n - 1] != 90:  # Z
        return False
    if value[4] != 45 or value[7] != 45 or value[10] != 84 or value[13] != 58:  # - - T :
        return False
    if value[16] != 58:
        return False
    year, month, day = _number(value, 0, 4), _number(value, 5, 2), _number(value, 8, 2)
    hour, minute, second = _number(value, 11, 2), _number(value, 14, 2), _number(value, 17, 2)
    if n > 20:
        if value[19] != 46:  # .
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
    cdef Py_ssize_t at, end
    if not _author_span(line, len(line), &at, &end):
        return None
    return line[at:end]


cdef class _CRC:
    # zlib's CRC-32 (the reflected polynomial 0xEDB88320), one table lookup per byte.
    cdef uint32_t table[256]

    def __cinit__(self):
        cdef uint32_t c
        cdef int i, k
        for i in range(256):
            c = i
            for k in range(8):
                c = (0xEDB88320 ^ (c >> 1)) if c & 1 else (c >> 1)
            self.table[i] = c

    cdef inline uint32_t of(self, const unsigned char* p, Py_ssize_t n) noexcept:
        cdef uint32_t c = 0xFFFFFFFF
        cdef Py_ssize_t i
        for i in range(n):
            c = self.table[(c ^ p[i]) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF


cdef _CRC _crc = _CRC()


def x_partition(lines, bytes table, fallback):
    """For each X line, ``table[zlib.crc32(partition_key_x(line)) % len(table)]``, as bytes:
    the part (a process, a share) its partition key sends it to. The key is read with
    `x_author_key`'s scan; `fallback` (``formats.x.partition_key_x``) reads the lines the scan
    declines. A `sources.base.LineBlock` is read in place."""
    cdef Py_ssize_t m = len(table), i = 0, pos = 0, end, n
    cdef const unsigned char* slots = table
    cdef const unsigned char* p
    cdef bytearray out = bytearray(len(lines))
    cdef unsigned char* parts = out
    if m == 0:
        raise ValueError("the table of parts is empty")
    _bind()
    if type(lines) is _LineBlock:  # its length is its block's newlines + 1, by construction
        block = lines.block
        p, n = <bytes> block, len(<bytes> block)
        for i in range(len(out)):
            end = _line_end(p, pos, n)
            parts[i] = slots[_part_crc(p + pos, end - pos, fallback) % m]
            pos = end + 1
    else:
        for line in lines:
            if type(line) is bytes:
                parts[i] = slots[_part_crc(<bytes> line, len(<bytes> line), fallback) % m]
            else:  # a bytearray line, say
                parts[i] = slots[_key_crc(fallback(line)) % m]
            i += 1
    return bytes(out)


cdef uint32_t _part_crc(const unsigned char* line, Py_ssize_t size, fallback) except? 0:
    # The CRC-32 of line's partition key: its author span where the scan reads it, else what
    # fallback returns for it.
    cdef Py_ssize_t at, end
    if _author_span(line, size, &at, &end):
        return _crc.of(line + at, end - at)
    return _key_crc(fallback(PyBytes_FromStringAndSize(<const char*> line, size)))


cdef uint32_t _key_crc(found) except? 0:
    cdef bytes key = found if type(found) is bytes else bytes(found)
    return _crc.of(key, len(key))


def split_lines(bytes block, bytes parts, Py_ssize_t count):
    """``block``'s lines (joined by ``\\n``) spread over `count` blocks: line i goes to block
    ``parts[i]``, in order, and each block's lines are joined by ``\\n`` again; None for a
    block that gets no line. One copy of each line, no bytes object per line."""
    cdef const unsigned char* p = block
    cdef const unsigned char* part = parts
    cdef Py_ssize_t n = len(block), lines = len(parts), i, k, pos = 0, end
    cdef Py_ssize_t* sizes
    cdef Py_ssize_t* filled
    cdef char** into
    if count <= 0:
        raise ValueError("count must be positive")
    if lines != _newlines(p, n) + 1:
        raise ValueError(f"{lines} parts for a block of {_newlines(p, n) + 1} lines")
    for i in range(lines):
        if part[i] >= count:
            raise ValueError(f"part {part[i]} of line {i} is not below {count}")
    sizes = <Py_ssize_t*> calloc(2 * count, sizeof(Py_ssize_t))
    into = <char**> calloc(count, sizeof(char*))
    if sizes == NULL or into == NULL:
        free(sizes)
        free(into)
        raise MemoryError()
    filled = sizes + count
    try:
        for i in range(lines):  # each block's size: its lines and a newline after each
            end = _line_end(p, pos, n)
            sizes[part[i]] += end - pos + 1
            pos = end + 1
        out = [None] * count
        for k in range(count):
            if sizes[k]:
                piece = PyBytes_FromStringAndSize(NULL, sizes[k] - 1)  # no newline after the last
                out[k] = piece
                into[k] = PyBytes_AS_STRING(piece)
        pos = 0
        for i in range(lines):
            end = _line_end(p, pos, n)
            k = part[i]
            memcpy(into[k] + filled[k], p + pos, end - pos)
            filled[k] += end - pos
            if filled[k] < sizes[k] - 1:  # a line of this block follows
                into[k][filled[k]] = 10
                filled[k] += 1
            pos = end + 1
        return out
    finally:
        free(sizes)
        free(into)


cdef bint _author_span(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t* author_at_out, Py_ssize_t* author_end_out
) noexcept:
    # x_author_key's scan: the key at p[at:end], or False where it declines.
    cdef Py_ssize_t i = 0, j, k, start
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
            return False  # something after the top-level object
        if c == 34:  # a string: a key or a value
            start = j = i + 1
            while True:  # to the closing quote: one not escaped by an odd run of backslashes
                found = <const unsigned char*> memchr(p + j, 34, n - j)
                if found == NULL:
                    return False
                j = found - p
                k = j
                while k > start and p[k - 1] == 92:
                    k -= 1
                if (j - k) % 2 == 0:
                    break
                j += 1
            if expect_key:
                if depth <= 2 and memchr(p + start, 92, j - start) != NULL:
                    return False  # "\u0064ata" is "data" to a decoder
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
                    return False  # data that is not an object
                if key == _K_AUTHOR or key == _K_ID:
                    if memchr(p + start, 92, j - start) != NULL:
                        return False
                    if key == _K_AUTHOR:
                        author_at, author_end = start, j
                    else:
                        id_at, id_end = start, j
                key = _K_OTHER
            i = j + 1
            continue
        if c == 123 or c == 91:  # { or [
            if depth >= _MAX_DEPTH:
                return False
            if depth == 0 and c != 123:
                return False
            if depth == 1 and key == _K_DATA:
                if c != 123:
                    return False
                # The last "data" key wins, as in the decoder.
                in_data = data_object = True
                author_at = author_end = id_at = id_end = -1
            elif depth == 2 and in_data and key != _K_OTHER:
                return False  # an author_id or id that is not a string
            is_object[depth] = c == 123
            depth += 1
            expect_key = c == 123
            key = _K_OTHER
        elif c == 125 or c == 93:  # } or ]
            if depth == 0 or is_object[depth - 1] != (c == 125):
                return False
            depth -= 1
            if depth == 1:
                in_data = False
            elif depth == 0:
                closed = True
            expect_key = False
        elif c == 44:  # ,
            if depth == 0:
                return False
            expect_key = is_object[depth - 1]
            key = _K_OTHER
        elif c == 58:  # :
            if depth == 0:
                return False
        else:  # a number or a literal
            if depth == 0:
                return False
            if depth == 1 and key == _K_DATA:
                return False  # data: null (or worse): the decoder decides
            if depth == 2 and in_data and key != _K_OTHER:
                return False
            key = _K_OTHER
        i += 1
    if not closed or not data_object:
        return False
    if author_end > author_at:
        author_at_out[0], author_end_out[0] = author_at, author_end
        return True
    if id_end > id_at:
        author_at_out[0], author_end_out[0] = id_at, id_end
        return True
    return False


# -- lines ---------------------------------------------------------------------------------------

cdef inline Py_ssize_t _line_end(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    # Where the line at p[pos:] ends: the index of the next newline, or n.
    cdef const unsigned char* found = <const unsigned char*> memchr(p + pos, 10, n - pos)
    return n if found == NULL else found - p


cdef Py_ssize_t _newlines(const unsigned char* p, Py_ssize_t n) noexcept:
    cdef const unsigned char* end = p + n
    cdef const unsigned char* found
    cdef Py_ssize_t count = 0
    while p < end:
        found = <const unsigned char*> memchr(p, 10, end - p)
        if found == NULL:
            break
        count += 1
        p = found + 1
    return count


def count_newlines(bytes data):
    """``data.count(b"\\n")``, with memchr: about four times faster on JSON Lines."""
    return _newlines(data, len(data))


# -- JSON string escapes ---------------------------------------------------------------------

cdef Py_ssize_t _unescape(const unsigned char* s, Py_ssize_t n, unsigned char* out) noexcept:
    # The JSON string body s[:n], checked by the scanner (valid escapes, surrogates in pairs),
    # with its escapes decoded into out as UTF-8; returns its length (never more than n).
    cdef Py_ssize_t i = 0, k = 0
    cdef unsigned int code, low
    cdef unsigned char c
    while i < n:
        c = s[i]
        if c != 92:
            out[k] = c
            i += 1
            k += 1
            continue
        c = s[i + 1]
        i += 2
        if c == 117:  # \uXXXX, or a surrogate pair \uD8XX\uDCXX (the scanner checked it)
            code = _hex4(s, n, i)
            i += 4
            if 0xD800 <= code <= 0xDBFF:
                low = _hex4(s, n, i + 2)  # after its "\u"
                i += 6
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                out[k] = 0xF0 | (code >> 18)
                out[k + 1] = 0x80 | ((code >> 12) & 0x3F)
                out[k + 2] = 0x80 | ((code >> 6) & 0x3F)
                out[k + 3] = 0x80 | (code & 0x3F)
                k += 4
            elif code < 0x80:
                out[k] = code
                k += 1
            elif code < 0x800:
                out[k] = 0xC0 | (code >> 6)
                out[k + 1] = 0x80 | (code & 0x3F)
                k += 2
            else:
                out[k] = 0xE0 | (code >> 12)
                out[k + 1] = 0x80 | ((code >> 6) & 0x3F)
                out[k + 2] = 0x80 | (code & 0x3F)
                k += 3
        else:
            out[k] = (
                8 if c == 98 else 12 if c == 102 else 10 if c == 110 else 13 if c == 114
                else 9 if c == 116 else c  # \" \\ \/ stand for themselves
            )
            k += 1
    return k
