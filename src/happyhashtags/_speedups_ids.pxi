# Part of _speedups.pyx (included): remembered post ids, the twin of aggregate.PyRecentIds.

# A post id that is 1 to 19 ASCII digits is its own key, as in `aggregate.id_key`; any other id
# goes through `id_key` itself (imported lazily: aggregate imports this module).
cdef object _id_key = None

cdef inline bint _digits(str post_id, uint64_t* out):
    # A str of 1 to 19 ASCII digits: any other character, ASCII or not, is not a digit.
    return PyUnicode_IS_ASCII(post_id) and _digit_key(
        <const unsigned char*> PyUnicode_DATA(post_id), len(post_id), out
    )


cdef inline bint _digit_key(const unsigned char* p, Py_ssize_t n, uint64_t* out) noexcept nogil:
    # The text p[:n], 1 to 19 ASCII digits, as its own key (as `aggregate.id_key` makes it).
    cdef uint64_t value = 0
    cdef unsigned int digit
    cdef Py_ssize_t i
    if n == 0 or n > 19:
        return False
    for i in range(n):
        digit = <unsigned int> p[i] - 48  # wraps around below '0'
        if digit > 9:
            return False
        value = value * 10 + digit
    out[0] = value
    return True


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

    cdef inline void _prefetch(self, uint64_t key) noexcept:
        # `key`'s slot, which `_add_key` reads first.
        hh_prefetch(&self._table[hh_mix(key) & self._mask])

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
