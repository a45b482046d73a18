# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled versions of the hot paths and memory-hungry state (optional; docs/benchmarks.md).

Everything here has a pure-Python twin that defines its behaviour: `IdRing` is
``aggregate.PyRecentIds``, `SessionTable` is ``sessions.PySessionTracker``, `add_posts` is
``aggregate._py_add_many``, `count_x_lines` is ``formats.x.py_count_x_lines``, `x_undecodable`
is ``formats.x.py_x_undecodable``, `x_partition` is ``formats.x._py_partition``,
`count_newlines` and `split_lines` are
``sources.base._py_count_newlines`` and ``_py_split_lines``, and `parse_x_time`,
`x_author_key` and the X line scanner (`scan_x`) may decline ("None: let the Python code, or
msgspec, read it"). The tests run both on the same inputs and require the same answers. The
package uses the compiled one when it is built (``pip install`` builds it where a C compiler
is present) and the twin otherwise. `count_x_lines` may scan lines on a second thread
(`set_scan_helper`), which never touches a Python object.
"""

from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_FromDouble
from cpython.ref cimport PyObject
from libc.math cimport copysign, floor, fmod, isfinite
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, memset, strlen

import logging
from array import array

cdef extern from *:
    """
    static inline uint64_t hh_mix(uint64_t x) {  /* splitmix64's finalizer */
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }

    /* A stable 64-bit hash of `n` bytes holding characters of `kind` bytes each. */
    static uint64_t hh_hash(const unsigned char* p, Py_ssize_t n, unsigned int kind) {
        uint64_t h = hh_mix(((uint64_t) n << 3) ^ (uint64_t) kind ^ 0x9e3779b97f4a7c15ULL);
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

    /* A stable 64-bit hash of a str: of its characters as CPython stores them (one, two or four
       bytes each, always the narrowest that fits, so equal strings hash alike in every
       process). Not `hash()`, which is salted per process, and state is pickled. An ASCII
       str hashes as hh_hash of its UTF-8 bytes with kind 1. */
    static uint64_t hh_str_hash(PyObject* s) {
        return hh_hash((const unsigned char*) PyUnicode_DATA(s),
                       PyUnicode_GET_LENGTH(s) * PyUnicode_KIND(s), PyUnicode_KIND(s));
    }

    /* A hint that `p` will be read soon (GCC and Clang; elsewhere nothing). */
    #if defined(__GNUC__)
    #define hh_prefetch(p) __builtin_prefetch(p)
    #else
    #define hh_prefetch(p) ((void) 0)
    #endif
    """
    uint64_t hh_mix(uint64_t x) nogil
    void hh_prefetch(const void* p) nogil
    uint64_t hh_hash(const unsigned char* p, Py_ssize_t n, unsigned int kind) nogil
    uint64_t hh_str_hash(object s)

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    void* PyUnicode_DATA(object s)
    str PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

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


# The module's parts, one file each (textual includes: one module, so cdef calls between the
# parts stay direct C calls).
include "_speedups_ids.pxi"
include "_speedups_sessions.pxi"
include "_speedups_x.pxi"
include "_speedups_scan.pxi"
include "_speedups_tags.pxi"
include "_speedups_counting.pxi"
include "_speedups_xlines.pxi"
