# Part of _speedups.pyx (included): scanned hashtags to counting keys, without a str each.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF

cdef enum:
    _RAW_TAGS_MAX = 65_536  # as PostCounter._norm: cleared when it grows past this


ctypedef struct _TagSlot:
    uint64_t hash       # of the hashtag's UTF-8 (odd: 0 marks an empty slot)
    PyObject* raw       # bytes: the hashtag as written (a strong reference)
    PyObject* key       # str: its counting key (a strong reference)
    uint64_t entry      # the key's session entry (_tag_entry)


cdef class RawTagKeys:
    """A hashtag's UTF-8, as the scanner finds it in a line, to its counting key (and that
    key's session entry): what ``PostCounter._norm`` gives for the hashtag as a str, without
    building the str, hashing it twice and looking it up in a dict for every hashtag of every
    post. Keys come from the counter's own normalization, once per distinct hashtag; a
    hashtag is told apart by its bytes, not by its hash. Bounded as ``_norm`` is. A cache: it
    pickles (and copies) empty."""

    cdef _TagSlot* slots
    cdef uint64_t mask
    cdef Py_ssize_t count

    def __cinit__(self):
        self.slots = NULL
        self.count = 0
        self._resize(4096)

    def __dealloc__(self):
        self.clear()
        free(self.slots)

    def __reduce__(self):
        return (RawTagKeys, ())

    def __len__(self):
        return self.count

    cdef int _resize(self, uint64_t size) except -1:
        cdef _TagSlot* old = self.slots
        cdef uint64_t old_size = self.mask + 1 if old != NULL else 0
        cdef uint64_t i, j
        cdef _TagSlot* slots = <_TagSlot*> calloc(size, sizeof(_TagSlot))
        if slots == NULL:
            raise MemoryError()
        for i in range(old_size):
            if old[i].hash != 0:
                j = old[i].hash & (size - 1)
                while slots[j].hash != 0:
                    j = (j + 1) & (size - 1)
                slots[j] = old[i]
        free(old)
        self.slots, self.mask = slots, size - 1
        return 0

    cdef void clear(self) noexcept:
        cdef uint64_t i
        if self.slots == NULL:
            return
        for i in range(self.mask + 1):
            if self.slots[i].hash != 0:
                Py_DECREF(<object> self.slots[i].raw)
                Py_DECREF(<object> self.slots[i].key)
        memset(self.slots, 0, (self.mask + 1) * sizeof(_TagSlot))
        self.count = 0

    cdef _TagSlot* find(self, const unsigned char* p, Py_ssize_t n, uint64_t h) noexcept:
        # The slot of the hashtag p[:n] (h: its hash, odd), or the empty slot where it goes.
        cdef uint64_t i = h & self.mask
        cdef _TagSlot* slot
        while True:
            slot = &self.slots[i]
            if slot.hash == 0:
                return slot
            if (
                slot.hash == h
                and PyBytes_GET_SIZE(<object> slot.raw) == n
                and memcmp(PyBytes_AS_STRING(<object> slot.raw), p, n) == 0
            ):
                return slot
            i = (i + 1) & self.mask

    cdef int add(
        self, const unsigned char* p, Py_ssize_t n, uint64_t h, object key, uint64_t entry
    ) except -1:
        # Remember a hashtag that `find` did not find (its slot may move: find it again).
        cdef _TagSlot* slot
        if self.count >= _RAW_TAGS_MAX:
            self.clear()
        elif <uint64_t> (self.count + 1) * 2 > self.mask + 1:
            self._resize((self.mask + 1) * 2)
        slot = self.find(p, n, h)
        raw = PyBytes_FromStringAndSize(<const char*> p, n)
        Py_INCREF(raw)
        Py_INCREF(key)
        slot.raw, slot.key = <PyObject*> raw, <PyObject*> key
        slot.hash, slot.entry = h, entry
        self.count += 1
        return 0


cdef inline uint64_t _raw_tag_hash(const unsigned char* p, Py_ssize_t n) noexcept:
    return hh_hash(p, n, 1) | 1
