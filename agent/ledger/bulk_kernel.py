"""The bulk verification's kernels: energy records' canonical lines and rollup numbers
from a block of stored payloads (:mod:`agent.ledger.bulk`, docs/ledger.md).

Plain Python over numpy arrays, compiled by numba when :mod:`agent.ledger.bulk` can
import it (the module itself imports nothing that needs it). Every function here reads
bytes and writes into arrays the caller allocated; nothing is interpreted loosely:
a payload that is not in the strict subset described below is *odd*, and an odd
record sends the whole verification back to the exact per-record path, which then
reports it as it always has. The subset is what the agent writes: one flat JSON
object, no whitespace, keys and string values of printable ASCII without escapes,
numbers in JSON's grammar, ``null``; nothing nested, no booleans.

A line is written from the payload's own text, not from parsed doubles: a number's
digits are placed by ECMAScript's rules (:func:`agent.ledger.jcs.number`) without
being converted. That is exact for what the agent publishes (Python writes the
shortest round-trip digits, which are ECMAScript's), and for anything else the line
differs from the sealed one, the period's hash does not match, and the period is
verified again by the exact path. So a bulk line can only ever confirm a period the
exact path confirms too (docs/ledger.md, "Bulk verification").
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

#: The switch the core reads too (agent.core.jit): ``off`` keeps numba out.
_ENV = "ENERGY_AGENT_NUMBA"


def _probe() -> int:
    return 0


def _decorator() -> tuple[Callable[[Any], Any], bool]:
    """numba's ``njit`` (without the GIL, cached on disk where numba finds a place it
    may write: NUMBA_CACHE_DIR, which the report sets to the agent's numba-cache, this
    package's __pycache__ or the user's cache), and whether the kernels are compiled:
    not when numba cannot be imported or is switched off. numba is imported by name,
    so that modules which must not need it (the report's, by the import rules) can use
    this one when it is there."""
    plain = lambda f: f  # noqa: E731
    if os.environ.get(_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return plain, False
    try:
        numba = importlib.import_module("numba")
    except ImportError:
        return plain, False
    if getattr(numba.config, "DISABLE_JIT", False):
        return plain, False
    options: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
    try:
        numba.njit(**options)(_probe)  # numba finds its cache's place when one is made
    except RuntimeError:  # none writable (a service user without a home): compile each run
        options["cache"] = False
    return numba.njit(**options), True


jit, COMPILED = _decorator()

# Return codes of scan().
DONE = 0
UNKNOWN_TOPIC = 1
OUT_OF_SPACE = 2

# Record status.
OK = 0
ODD = 2
#: A site record the site kernel reads (intensity), and a record of another kind (the
#: exact path's: a device's events).
SITE = 3
OTHER = 4

# What kind of record a topic is for.
K_ENERGY, K_INTENSITY, K_OTHER = 0, 1, 2

# A payload field's kind (the shape's: agent.ledger.shape).
TAG, FLOAT, INT, TIME = 0, 1, 2, 3

# Fold slots of a field (agent.history.rollup.numbers): numbers first, then the rest.
FOLD_KWH, FOLD_CO2, FOLD_M3, FOLD_UNITS, FOLD_UNMETERED = range(5)
N_VALS = 5
FOLD_INTERVAL, FOLD_CARRIER, FOLD_QUALITY = 5, 6, 7

# What a value needs: absent (or null), a number parsed here, a number Python parses.
ABSENT, PARSED, PATCH = 0, 1, 2

# Quality classes of the fold.
Q_COVERED, Q_INTERPOLATED, Q_MISSING = 0, 1, 2

#: Exact powers of ten in a double (10^22 is the largest).
POW10 = np.array([10.0**k for k in range(23)])

_MASK = (1 << 40) - 1


@jit
def fnv(buf: np.ndarray, a: int, b: int) -> int:
    """A hash of ``buf[a:b]``: its length and last 12 bytes (names here differ at their
    ends: topics by device, keys by word), small enough never to overflow an int64."""
    h = b - a
    for i in range(max(a, b - 12), b):
        h = (h * 131 + int(buf[i])) & _MASK
    return h


@jit
def _same(store: np.ndarray, s: int, e: int, buf: np.ndarray, a: int, b: int) -> bool:
    if e - s != b - a:
        return False
    for j in range(b - a):  # noqa: SIM110 (a loop numba compiles; no generator)
        if store[s + j] != buf[a + j]:
            return False
    return True


@jit
def lookup(
    tab: np.ndarray, store: np.ndarray, off: np.ndarray, buf: np.ndarray, a: int, b: int
) -> int:
    """Index of the name ``buf[a:b]`` in an open-addressed table of names (``store``,
    ``off``), or -1."""
    mask = tab.shape[0] - 1
    slot = fnv(buf, a, b) & mask
    while True:
        k = tab[slot]
        if k < 0:
            return -1
        if _same(store, off[k], off[k + 1], buf, a, b):
            return k
        slot = (slot + 1) & mask


@jit
def among(store: np.ndarray, off: np.ndarray, buf: np.ndarray, a: int, b: int) -> int:
    """Index of ``buf[a:b]`` in a short list of names, or -1: a few compares, no hash."""
    for k in range(off.shape[0] - 1):
        if _same(store, off[k], off[k + 1], buf, a, b):
            return k
    return -1


@jit
def _int_at(txt: np.ndarray, p: int) -> tuple[int, int, bool]:
    """A non-negative decimal integer at ``p`` up to a comma or the end: (value, next, ok)."""
    n = txt.shape[0]
    v = 0
    q = p
    while q < n and txt[q] != 44:  # ','
        c = txt[q]
        if c < 48 or c > 57 or q - p >= 18:
            return 0, q, False
        v = v * 10 + (c - 48)
        q += 1
    return v, q + 1, q > p


@jit
def _line_at(txt: np.ndarray, p: int) -> tuple[int, int]:
    """The text at ``p`` up to a newline or the end: (end, next)."""
    n = txt.shape[0]
    q = p
    while q < n and txt[q] != 10:
        q += 1
    return q, q + 1


@jit
def _put(out: np.ndarray, o: int, src: np.ndarray, a: int, b: int) -> int:
    for j in range(a, b):
        out[o] = src[j]
        o += 1
    return o


@jit
def _part(out: np.ndarray, o: int, first: bool, src: np.ndarray, a: int, b: int) -> int:
    """A line's next part: a comma unless it is the first, then ``src[a:b]``."""
    if not first:
        out[o] = 44
        o += 1
    for j in range(a, b):
        out[o] = src[j]
        o += 1
    return o


@jit
def _put_digits(out: np.ndarray, o: int, digs: np.ndarray, a: int, b: int) -> int:
    for j in range(a, b):
        out[o] = digs[j] + 48
        o += 1
    return o


@jit
def _put_zeros(out: np.ndarray, o: int, k: int) -> int:
    for _ in range(k):
        out[o] = 48
        o += 1
    return o


@jit
def number_text(out: np.ndarray, o: int, neg: bool, digs: np.ndarray, k: int, n: int) -> int:
    """ECMAScript's text of 0.d1..dk x 10^n (digits without leading or trailing zeros;
    k == 0 is zero): :func:`agent.ledger.jcs.number` from the digits."""
    if k == 0:
        out[o] = 48
        return o + 1
    if neg:
        out[o] = 45
        o += 1
    if k <= n <= 21:
        o = _put_digits(out, o, digs, 0, k)
        return _put_zeros(out, o, n - k)
    if 0 < n <= 21:
        o = _put_digits(out, o, digs, 0, n)
        out[o] = 46
        o += 1
        return _put_digits(out, o, digs, n, k)
    if -6 < n <= 0:
        out[o] = 48
        out[o + 1] = 46
        o = _put_zeros(out, o + 2, -n)
        return _put_digits(out, o, digs, 0, k)
    e = n - 1
    out[o] = digs[0] + 48
    o += 1
    if k > 1:
        out[o] = 46
        o = _put_digits(out, o + 1, digs, 1, k)
    out[o] = 101  # 'e'
    out[o + 1] = 43 if e >= 0 else 45
    o += 2
    e = -e if e < 0 else e
    width = 1
    p = 10
    while p <= e:
        width += 1
        p *= 10
    for j in range(width - 1, -1, -1):
        out[o + j] = 48 + e % 10
        e //= 10
    return o + width


@jit
def digits_of(
    buf: np.ndarray, a: int, b: int, digs: np.ndarray
) -> tuple[int, int, bool, bool, bool]:
    """A JSON number's text ``buf[a:b]`` as 0.d1..dk x 10^n: (k, n, negative, written as
    an integer, fits ``digs``), the digits into ``digs`` without leading or trailing
    zeros (k == 0: zero), as :func:`agent.ledger.jcs.number` takes them apart."""
    neg = buf[a] == 45
    q = a + 1 if neg else a
    wlen = 0
    lz = 0
    nk = 0
    lead = True
    frac = False
    has_e = False
    exp = 0
    while q < b:
        c = buf[q]
        if c == 46:
            frac = True
        elif c == 101 or c == 69:
            has_e = True
            q += 1
            eneg = buf[q] == 45
            if buf[q] == 45 or buf[q] == 43:
                q += 1
            while q < b:
                exp = exp * 10 + (buf[q] - 48)
                q += 1
            if eneg:
                exp = -exp
            break
        else:
            if not frac:
                wlen += 1
            if lead and c == 48:
                lz += 1
            else:
                lead = False
                if nk >= digs.shape[0]:
                    return 0, 0, neg, False, False
                digs[nk] = c - 48
                nk += 1
        q += 1
    while nk > 0 and digs[nk - 1] == 0:
        nk -= 1
    return nk, wlen - lz + exp, neg, not frac and not has_e, True


@jit
def _exponent_end(buf: np.ndarray, p: int, b: int) -> int:
    """The end of a number's exponent at ``p`` (its ``e``): a sign, 1 to 5 digits; -1 if
    not one (longer ones are not a meter's)."""
    p += 1
    if p < b and (buf[p] == 43 or buf[p] == 45):
        p += 1
    q0 = p
    while p < b and 48 <= buf[p] <= 57:
        p += 1
    return -1 if p == q0 or p - q0 > 5 else p


@jit
def _string_end(buf: np.ndarray, p: int, b: int) -> int:
    """The end of a plain string literal at ``p`` (printable ASCII, no escapes), or -1."""
    if p >= b or buf[p] != 34:
        return -1
    p += 1
    while p < b and buf[p] != 34:
        c = buf[p]
        if c < 32 or c > 126 or c == 92:
            return -1
        p += 1
    return p + 1 if p < b else -1


@jit
def scan(
    ts_txt: np.ndarray,
    topic_txt: np.ndarray,
    blob: np.ndarray,
    n: int,
    # the topics known so far
    t_tab: np.ndarray,
    t_store: np.ndarray,
    t_off: np.ndarray,
    t_part: np.ndarray,
    t_pstart: np.ndarray,
    t_pend: np.ndarray,
    t_ok: np.ndarray,
    t_kind: np.ndarray,
    # the payload's fields and the canonical key order
    f_tab: np.ndarray,
    f_store: np.ndarray,
    f_off: np.ndarray,
    f_kind: np.ndarray,
    f_fold: np.ndarray,
    k_store: np.ndarray,
    k_off: np.ndarray,
    k_tag: np.ndarray,
    # carriers, qualities
    c_tab: np.ndarray,
    c_store: np.ndarray,
    c_off: np.ndarray,
    q_class: np.ndarray,
    q_tab: np.ndarray,
    q_store: np.ndarray,
    q_off: np.ndarray,
    # out, per record
    status: np.ndarray,
    topic: np.ndarray,
    ts_out: np.ndarray,
    row_a: np.ndarray,
    row_b: np.ndarray,
    l_start: np.ndarray,
    l_end: np.ndarray,
    ival: np.ndarray,
    carrier: np.ndarray,
    quality: np.ndarray,
    vals: np.ndarray,
    has: np.ndarray,
    p_start: np.ndarray,
    p_end: np.ndarray,
    out: np.ndarray,
    info: np.ndarray,
) -> int:
    """Parse ``n`` records: lines into ``out``, numbers and places per record.

    Inputs are SQLite's ``group_concat`` of the rows in (ts, id) order: row ts
    comma-separated, topics newline-separated (the kind and device columns are not read:
    the topic is what the ledger seals, and the figures take both from it), payloads
    NUL-separated (``info[3]`` is 1 when they do not line up with the rows). Energy
    records are read here; a site record is marked SITE (:func:`scan_site` reads it),
    another kind OTHER.
    ``info[0]`` returns the record an unknown topic was met at (the caller learns it
    and calls again), ``info[1]`` the bytes of ``out`` used.
    """
    nf = f_kind.shape[0]
    npos = k_tag.shape[0]
    digs = np.zeros(64, np.int64)
    # Per field of the record: where its value's text is and what it is.
    v_a = np.zeros(nf, np.int64)
    v_b = np.zeros(nf, np.int64)
    v_what = np.zeros(nf, np.int64)  # 0 absent/null, 1 string, 2 number
    seen = np.zeros(nf, np.int64)
    guess = np.full(nf, -1, np.int64)
    # Per number field: what the tokenizer found (see the number branch).
    n_plain = np.zeros(nf, np.bool_)
    n_zero = np.zeros(nf, np.bool_)
    n_intish = np.zeros(nf, np.bool_)
    n_exact = np.zeros(nf, np.bool_)
    n_neg = np.zeros(nf, np.bool_)
    n_val = np.zeros(nf, np.float64)
    n_mant = np.zeros(nf, np.int64)
    pts = 0
    pt = 0
    nblob = blob.shape[0]
    pb = 0
    o = 0
    limit = out.shape[0]
    for i in range(n):
        row_ts, pts, ok1 = _int_at(ts_txt, pts)
        ta = pt
        tb, pt = _line_at(topic_txt, pt)
        # Payloads are separated by NUL, which no JSON text holds (one that did would
        # shift every payload after it: found at the end, the whole block is then odd).
        # An energy record's end is where its object closes; another's, the next NUL.
        a = pb
        b = nblob
        status[i] = ODD
        topic[i] = -1
        l_start[i] = o
        l_end[i] = o
        row_a[i] = a
        row_b[i] = b
        ts_out[i] = row_ts
        if not ok1 or a > nblob:
            return DONE  # the columns do not line up: odd from here on
        t = lookup(t_tab, t_store, t_off, topic_txt, ta, tb)
        if t < 0:
            info[0] = i
            return UNKNOWN_TOPIC
        topic[i] = t
        if not t_ok[t]:
            continue
        if t_kind[t] != K_ENERGY:
            e = a
            while e < nblob and blob[e] != 0:
                e += 1
            row_b[i] = e
            pb = e + 1
            status[i] = SITE if t_kind[t] == K_INTENSITY else OTHER
            continue
        # --- the payload: one flat object --------------------------------------------
        for f in range(nf):
            v_what[f] = 0
            seen[f] = 0
        odd = False
        p = a
        nth = 0
        if p >= b or blob[p] != 123:  # '{'
            continue
        p += 1
        if p < b and blob[p] == 125:  # '}': empty
            continue
        while True:
            if p >= b or blob[p] != 34:
                odd = True
                break
            ka = p + 1
            # The agent writes its keys in one order: the key at this place in the record
            # before is the likely one. Its bytes, then the closing quote, are checked in
            # place (a known key is plain: no byte of it needs the scan below).
            f = guess[nth] if nth < nf else -1
            if f >= 0:
                gs, ge = f_off[f], f_off[f + 1]
                kb = ka + ge - gs
                if kb < b and blob[kb] == 34:
                    for j in range(ge - gs):
                        if f_store[gs + j] != blob[ka + j]:
                            f = -1
                            break
                else:
                    f = -1
            if f < 0:
                ke = _string_end(blob, ka - 1, b)
                if ke < 0:
                    odd = True
                    break
                kb = ke - 1
                f = lookup(f_tab, f_store, f_off, blob, ka, kb)
                if nth < nf:
                    guess[nth] = f
            p = kb + 1
            if p >= b or blob[p] != 58:  # ':'
                odd = True
                break
            p += 1
            if p >= b:
                odd = True
                break
            nth += 1
            c = blob[p]
            va = p
            what = 0
            if c == 34:  # a string
                p = _string_end(blob, p, b)
                if p < 0:
                    odd = True
                    break
                what = 1
            elif c == 45 or 48 <= c <= 57:  # a number: JSON's grammar, checked
                neg = c == 45
                if neg:
                    p += 1
                if p >= b:
                    odd = True
                    break
                # its value on the way: up to 15 significant digits, and where the point is
                mant = 0
                nd = 0
                n_int = 0
                scale = 0
                lzf = 0
                int_zero = blob[p] == 48
                if int_zero:
                    p += 1
                    n_int = 1
                elif 49 <= blob[p] <= 57:
                    while p < b and 48 <= blob[p] <= 57:
                        if nd < 16:
                            mant = mant * 10 + (blob[p] - 48)
                        nd += 1
                        n_int += 1
                        p += 1
                else:
                    odd = True
                    break
                if p < b and blob[p] == 46:  # '.'
                    p += 1
                    q0 = p
                    while p < b and 48 <= blob[p] <= 57:
                        d = blob[p] - 48
                        if nd == 0 and d == 0:
                            lzf += 1
                        else:
                            if nd < 16:
                                mant = mant * 10 + d
                            nd += 1
                        p += 1
                    scale = p - q0
                    if scale == 0:
                        odd = True
                        break
                has_e = False
                if p < b and (blob[p] == 101 or blob[p] == 69):  # e E
                    has_e = True
                    p = _exponent_end(blob, p, b)
                    if p < 0:
                        odd = True
                        break
                what = 2
                if f >= 0:
                    # plain: ECMAScript writes it as it stands, trailing zeros aside
                    n_plain[f] = not has_e and n_int <= 21 and (not int_zero or lzf <= 5)
                    n_zero[f] = nd == 0
                    n_intish[f] = scale == 0 and not has_e
                    exact = not has_e and nd <= 15 and scale <= 22
                    x = 0.0
                    if nd == 0:
                        x = -0.0 if (neg and not n_intish[f]) else 0.0
                    elif exact:
                        x = float(mant)
                        if scale > 0:
                            x = x / POW10[scale]
                        if neg:
                            x = -x
                    n_val[f] = x
                    n_exact[f] = exact or nd == 0
                    n_neg[f] = neg
                    n_mant[f] = mant
            elif c == 110:  # null
                if p + 4 > b or blob[p + 1] != 117 or blob[p + 2] != 108 or blob[p + 3] != 108:
                    odd = True
                    break
                p += 4
            else:  # true, false, objects, arrays: not an energy record's
                odd = True
                break
            if f >= 0:
                if seen[f]:
                    odd = True  # a key given twice
                    break
                seen[f] = 1
                v_a[f] = va
                v_b[f] = p
                v_what[f] = what
            if p >= b:
                odd = True
                break
            if blob[p] == 44:
                p += 1
                continue
            if blob[p] == 125 and (p + 1 == nblob or blob[p + 1] == 0):
                b = p + 1
                break
            odd = True
            break
        if odd:
            continue
        row_b[i] = b
        pb = b + 1
        if o + 2 * (b - a) + 1024 > limit:
            info[0] = i
            return OUT_OF_SPACE
        # --- the fields: kinds, the time, the fold's numbers -------------------------
        ts = -1
        for k in range(N_VALS):
            has[i, k] = ABSENT
            vals[i, k] = 0.0
        ival[i] = 0
        carrier[i] = -1
        quality[i] = -1
        seen_interval = False
        for f in range(nf):
            w = v_what[f]
            if w == 0:
                continue
            kind = f_kind[f]
            fold = f_fold[f]
            if kind == TAG:
                if w != 1:
                    odd = True
                elif fold == FOLD_CARRIER:
                    carrier[i] = among(c_store, c_off, blob, v_a[f] + 1, v_b[f] - 1)
                elif fold == FOLD_QUALITY:
                    qk = among(q_store, q_off, blob, v_a[f] + 1, v_b[f] - 1)
                    quality[i] = Q_COVERED if qk < 0 else q_class[qk]
                continue
            if w != 2:
                odd = True
                continue
            if kind == FLOAT:
                if 0 <= fold < N_VALS:
                    if n_exact[f]:
                        vals[i, fold] = n_val[f]
                        has[i, fold] = PARSED
                    else:
                        has[i, fold] = PATCH
                        p_start[i, fold] = v_a[f]
                        p_end[i, fold] = v_b[f]
                continue
            # the time and integer fields: an integer's text, at most 15 digits
            if not n_intish[f] or v_b[f] - v_a[f] > 16:
                odd = True
                continue
            iv = -n_mant[f] if n_neg[f] else n_mant[f]
            if kind == TIME:
                if n_neg[f] and not n_zero[f]:
                    odd = True
                ts = iv
            if fold == FOLD_INTERVAL:
                ival[i] = iv
                seen_interval = True
        if odd or ts < 0 or ts != row_ts or not seen_interval:
            continue
        if carrier[i] < 0 or quality[i] < 0:
            continue
        # energy_kwh and co2_kg are what every energy record has
        if has[i, FOLD_KWH] == ABSENT or has[i, FOLD_CO2] == ABSENT:
            continue
        # --- the canonical line -------------------------------------------------------
        out[o] = 123
        o += 1
        first = True
        for pos in range(npos):
            tag = k_tag[pos]
            if tag >= 0:
                ps, pe = t_pstart[t, tag], t_pend[t, tag]
                if pe > ps:
                    o = _part(out, o, first, t_part, ps, pe)
                    first = False
                continue
            f = -tag - 1
            if v_what[f] == 0:
                continue
            o = _part(out, o, first, k_store, k_off[pos], k_off[pos + 1])
            first = False
            fa, fb = v_a[f], v_b[f]
            kind = f_kind[f]
            if kind == TAG:
                for j in range(fa, fb):
                    out[o] = blob[j]
                    o += 1
            elif n_zero[f]:
                out[o] = 48  # 0, -0, 0.0, -0e5: "0"
                o += 1
            elif kind != FLOAT or n_plain[f]:
                # as it stands, without a fraction's trailing zeros (5.50 -> 5.5, 5.0 -> 5)
                for j in range(fa, fb):
                    out[o] = blob[j]
                    o += 1
                if not n_intish[f]:
                    while out[o - 1] == 48:
                        o -= 1
                    if out[o - 1] == 46:
                        o -= 1
            else:
                nk, npoint, neg, _intish, ok = digits_of(blob, fa, fb, digs)
                if not ok:
                    odd = True
                    break
                o = number_text(out, o, neg, digs, nk, npoint)
        if odd:
            o = l_start[i]
            continue
        out[o] = 125
        o += 1
        l_end[i] = o
        status[i] = OK
    info[1] = o
    info[3] = 0 if pb == nblob + 1 else 1
    return DONE


@jit
def assemble(
    l_start: np.ndarray,
    l_end: np.ndarray,
    rank: np.ndarray,
    nrank: int,
    ts: np.ndarray,
    energy: np.ndarray,
    out: np.ndarray,
    a: int,
    b: int,
    dst: np.ndarray,
    o: int,
) -> int:
    """The lines of the energy records among rows ``a..b`` (one period's, in ts order)
    in the hash's order, by device then ts, each followed by a newline, into ``dst``
    from ``o``; returns the end, or -1 when two lines share device and ts (their order
    is their text's: the exact path). A counting sort by device rank keeps each
    device's records in ts order."""
    count = np.zeros(nrank + 1, np.int64)
    m = 0
    for i in range(a, b):
        if energy[i]:
            count[rank[i] + 1] += 1
            m += 1
    for r in range(nrank):
        count[r + 1] += count[r]
    order = np.empty(m, np.int64)
    for i in range(a, b):
        if energy[i]:
            r = rank[i]
            order[count[r]] = i
            count[r] += 1
    prev_r = -1
    prev_t = -1
    for k in range(m):
        i = order[k]
        if rank[i] == prev_r and ts[i] == prev_t:
            return -1
        prev_r = rank[i]
        prev_t = ts[i]
        n = l_end[i] - l_start[i]
        dst[o : o + n] = out[l_start[i] : l_end[i]]
        o += n
        dst[o] = 10
        o += 1
    return o


@jit
def fold(
    order: np.ndarray,
    bq: np.ndarray,
    sq: np.ndarray,
    dev: np.ndarray,
    car: np.ndarray,
    ival: np.ndarray,
    quality: np.ndarray,
    vals: np.ndarray,
    has: np.ndarray,
    keys: np.ndarray,
    sums: np.ndarray,
) -> int:
    """:func:`agent.history.rollup.fold` of records taken in ``order`` (by key, then as
    stored): one row of ``sums`` per key, the same additions in the same order."""
    g = -1
    for k in range(order.shape[0]):
        i = order[k]
        if (
            g < 0
            or bq[i] != keys[g, 0]
            or sq[i] != keys[g, 1]
            or dev[i] != keys[g, 2]
            or (car[i] != keys[g, 3])
        ):
            g += 1
            keys[g, 0] = bq[i]
            keys[g, 1] = sq[i]
            keys[g, 2] = dev[i]
            keys[g, 3] = car[i]
            for c in range(sums.shape[1]):
                sums[g, c] = 0.0
        v = sums[g]
        kwh = vals[i, FOLD_KWH]
        interval = float(ival[i])
        v[0] += 1.0
        v[1] += kwh
        v[2] += vals[i, FOLD_CO2]
        m3 = vals[i, FOLD_M3]
        v[3] += m3 if (has[i, FOLD_M3] != ABSENT and m3 != 0.0) else 0.0
        u = vals[i, FOLD_UNITS]
        v[4] += u if (has[i, FOLD_UNITS] != ABSENT and u != 0.0) else 0.0
        if has[i, FOLD_UNMETERED] != ABSENT:
            v[5] += vals[i, FOLD_UNMETERED]
            v[6] += 1.0
        q = quality[i]
        if q == Q_INTERPOLATED:
            v[8] += interval
            v[9] += kwh
            v[14] += 1.0
        elif q == Q_MISSING:
            v[10] += interval
            v[15] += 1.0
        else:
            v[7] += interval
        if ival[i] <= 900:
            v[11] += kwh
            v[12] += 1.0
        else:
            v[13] += 1.0
    return g + 1


@jit
def _key_lt(ka: np.ndarray, i: int, kb: np.ndarray, j: int) -> bool:
    for c in range(4):
        if ka[i, c] != kb[j, c]:
            return ka[i, c] < kb[j, c]
    return False


@jit
def merge(
    ka: np.ndarray,
    sa: np.ndarray,
    na: int,
    kb: np.ndarray,
    sb: np.ndarray,
    nb: int,
    da: np.ndarray,
    db: np.ndarray,
) -> None:
    """Two key-sorted lists of rows, the records' sums (``a``) and the rollup's (``b``):
    ``da``/``db`` flag what differs, as :class:`agent.history.rollup.Check` counts it
    (a row on one side only, or a key on both whose sums are not all equal)."""
    i = 0
    j = 0
    while i < na or j < nb:
        if j >= nb or (i < na and _key_lt(ka, i, kb, j)):
            da[i] = 1
            i += 1
        elif i >= na or _key_lt(kb, j, ka, i):
            db[j] = 1
            j += 1
        else:
            for c in range(sa.shape[1]):
                if sa[i, c] != sb[j, c]:  # NaN too, as Python's list equality has it
                    da[i] = 1
                    break
            i += 1
            j += 1
