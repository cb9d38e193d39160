"""The bulk verification's kernels for site records: an intensity record's canonical
lines, one per window (agent/ledger/bulk.py, docs/ledger.md).

An intensity record is ``{"ts", "rev", "windows": {name: {fields}}}``; the database
gets a point per window (agent.contract.points), so its canonical lines are one per
window: the topic's tags, ``window``, ``ts`` and the window's stored fields, keys in
canonical order. The rules are :mod:`agent.ledger.bulk_kernel`'s: the strict subset
the agent writes, numbers' digits placed by ECMAScript's rules without rounding,
anything else left to the exact path (the row becomes ODD).
"""

from __future__ import annotations

import numpy as np

from agent.ledger.bulk_kernel import (
    DONE,
    INT,
    ODD,
    OK,
    OUT_OF_SPACE,
    SITE,
    _exponent_end,
    _part,
    _same,
    _string_end,
    digits_of,
    jit,
    lookup,
    number_text,
)

# Where a site line's key part comes from (k2_src): a topic tag (0..3), the window's
# name, the record's time, or a window field (W_FIELD + its index).
W_WINDOW = 10
W_TS = 11
W_FIELD = 20
#: A window field that is not stored (missing_devices): skipped, whatever it holds.
SKIP = 5
#: What a value is (_value_end).
V_NULL, V_STRING, V_NUMBER, V_ARRAY = 0, 1, 2, 4


@jit
def _number_end(buf: np.ndarray, p: int, b: int) -> tuple[int, bool, bool, bool]:
    """The end of a JSON number at ``p`` (-1 if none), and whether ECMAScript writes it
    as it stands but for a fraction's trailing zeros (plain), whether it is zero, and
    whether it is written as an integer."""
    neg = p < b and buf[p] == 45
    if neg:
        p += 1
    if p >= b:
        return -1, False, False, False
    zero = True
    n_int = 0
    lzf = 0
    int_zero = buf[p] == 48
    if int_zero:
        p += 1
        n_int = 1
    elif 49 <= buf[p] <= 57:
        zero = False
        while p < b and 48 <= buf[p] <= 57:
            n_int += 1
            p += 1
    else:
        return -1, False, False, False
    frac = False
    if p < b and buf[p] == 46:
        frac = True
        p += 1
        q0 = p
        while p < b and 48 <= buf[p] <= 57:
            if buf[p] != 48:
                zero = False
            elif zero:
                lzf += 1
            p += 1
        if p == q0:
            return -1, False, False, False
    has_e = False
    if p < b and (buf[p] == 101 or buf[p] == 69):
        has_e = True
        p = _exponent_end(buf, p, b)
        if p < 0:
            return -1, False, False, False
    plain = not has_e and n_int <= 21 and (not int_zero or lzf <= 5)
    return p, plain, zero, not frac and not has_e


@jit
def _value_end(buf: np.ndarray, p: int, b: int) -> tuple[int, int]:
    """The end of a value the site kernel skips or reads, and what it is (V_*);
    (-1, -1) for anything else (an object, a boolean, an array of other than strings)."""
    if p >= b:
        return -1, -1
    c = buf[p]
    if c == 34:
        return _string_end(buf, p, b), V_STRING
    if c == 45 or 48 <= c <= 57:
        e, _, _, _ = _number_end(buf, p, b)
        return e, V_NUMBER
    if c == 110:
        if p + 4 <= b and buf[p + 1] == 117 and buf[p + 2] == 108 and buf[p + 3] == 108:
            return p + 4, V_NULL
        return -1, -1
    if c == 91:  # an array: strings only
        p += 1
        if p < b and buf[p] == 93:
            return p + 1, V_ARRAY
        while True:
            p = _string_end(buf, p, b)
            if p < 0 or p >= b:
                return -1, -1
            if buf[p] == 93:
                return p + 1, V_ARRAY
            if buf[p] != 44:
                return -1, -1
            p += 1
    return -1, -1


@jit
def _put_number(out: np.ndarray, o: int, buf: np.ndarray, a: int, b: int, digs: np.ndarray) -> int:
    """ECMAScript's text of the JSON number ``buf[a:b]`` (module doc); -1 if too long."""
    _, plain, zero, intish = _number_end(buf, a, b)
    if zero:
        out[o] = 48
        return o + 1
    if plain:
        for j in range(a, b):
            out[o] = buf[j]
            o += 1
        if not intish:
            while out[o - 1] == 48:
                o -= 1
            if out[o - 1] == 46:
                o -= 1
        return o
    nk, npoint, neg, _intish, ok = digits_of(buf, a, b, digs)
    if not ok:
        return -1
    return number_text(out, o, neg, digs, nk, npoint)


@jit
def _window_fields(
    blob: np.ndarray,
    p: int,
    b: int,
    w_tab: np.ndarray,
    w_store: np.ndarray,
    w_off: np.ndarray,
    f_a: np.ndarray,
    f_b: np.ndarray,
    f_what: np.ndarray,
) -> int:
    """A window's object at ``p`` (its ``{``): each known field's value span and kind
    into ``f_*`` (unknown keys skipped, as the points skip them); the end, or -1."""
    for f in range(f_what.shape[0]):
        f_what[f] = -1  # not given
    p += 1
    if p < b and blob[p] == 125:
        return p + 1
    while True:
        fe = _string_end(blob, p, b)
        if fe < 0 or fe >= b or blob[fe] != 58:
            return -1
        f = lookup(w_tab, w_store, w_off, blob, p + 1, fe - 1)
        p = fe + 1
        ve, what = _value_end(blob, p, b)
        if ve < 0:
            return -1
        if f >= 0:
            if f_what[f] != -1:
                return -1  # a key given twice
            f_a[f] = p
            f_b[f] = ve
            f_what[f] = what
        p = ve
        if p < b and blob[p] == 44:
            p += 1
            continue
        if p < b and blob[p] == 125:
            return p + 1
        return -1


@jit
def _window_line(
    out: np.ndarray,
    o: int,
    t: int,
    t_part: np.ndarray,
    t_pstart: np.ndarray,
    t_pend: np.ndarray,
    k2_src: np.ndarray,
    k2_store: np.ndarray,
    k2_off: np.ndarray,
    w_kind: np.ndarray,
    blob: np.ndarray,
    f_a: np.ndarray,
    f_b: np.ndarray,
    f_what: np.ndarray,
    name_a: int,
    name_b: int,
    ts_a: int,
    ts_b: int,
    digs: np.ndarray,
) -> int:
    """One window's canonical line into ``out`` from ``o``; its end, or -1 when a field
    is not a number (a line the exact path writes, or refuses)."""
    out[o] = 123
    o += 1
    first = True
    for pos in range(k2_src.shape[0]):
        src = k2_src[pos]
        if src < W_WINDOW:
            ps, pe = t_pstart[t, src], t_pend[t, src]
            if pe > ps:
                o = _part(out, o, first, t_part, ps, pe)
                first = False
            continue
        f = src - W_FIELD
        if src >= W_FIELD:
            if w_kind[f] == SKIP or f_what[f] == -1 or f_what[f] == V_NULL:
                continue
            if f_what[f] != V_NUMBER:
                return -1
        o = _part(out, o, first, k2_store, k2_off[pos], k2_off[pos + 1])
        first = False
        if src == W_WINDOW:
            o = _part(out, o, True, blob, name_a, name_b)
        elif src == W_TS:
            o = _part(out, o, True, blob, ts_a, ts_b)
        elif w_kind[f] == INT:
            _, _, zero, intish = _number_end(blob, f_a[f], f_b[f])
            if not intish or f_b[f] - f_a[f] > 16:
                return -1
            if zero:  # -0 is 0
                out[o] = 48
                o += 1
            else:
                o = _part(out, o, True, blob, f_a[f], f_b[f])
        else:
            o = _put_number(out, o, blob, f_a[f], f_b[f], digs)
            if o < 0:
                return -1
    out[o] = 125
    return o + 1


@jit
def scan_site(
    blob: np.ndarray,
    n: int,
    status: np.ndarray,
    topic: np.ndarray,
    row_a: np.ndarray,
    row_b: np.ndarray,
    ts_row: np.ndarray,
    t_part: np.ndarray,
    t_pstart: np.ndarray,
    t_pend: np.ndarray,
    w_tab: np.ndarray,
    w_store: np.ndarray,
    w_off: np.ndarray,
    w_kind: np.ndarray,
    k2_src: np.ndarray,
    k2_store: np.ndarray,
    k2_off: np.ndarray,
    out: np.ndarray,
    o: int,
    margin: int,
    s_row: np.ndarray,
    s_start: np.ndarray,
    s_end: np.ndarray,
    info: np.ndarray,
) -> int:
    """The canonical lines of the SITE rows (module doc), each row then OK or ODD.
    ``info[1]`` returns the lines written, ``info[2]`` the end in ``out``; when ``out``
    or the line arrays are full, OUT_OF_SPACE (the caller grows them and calls again:
    the rows done keep OK, the others are still SITE)."""
    nw = w_kind.shape[0]
    digs = np.zeros(64, np.int64)
    f_a = np.zeros(nw, np.int64)
    f_b = np.zeros(nw, np.int64)
    f_what = np.zeros(nw, np.int64)
    names_a = np.zeros(64, np.int64)
    names_b = np.zeros(64, np.int64)
    windows_key = np.array([119, 105, 110, 100, 111, 119, 115], np.uint8)  # b"windows"
    nl = 0
    limit = out.shape[0]
    cap = s_row.shape[0]
    for i in range(n):
        if status[i] != SITE:
            continue
        a, b = row_a[i], row_b[i]
        first_line = nl
        o_row = o
        ts_a = -1
        ts_b = -1
        seen_windows = False
        odd = p_start_bad = a >= b or blob[a] != 123
        p = a + 1
        while not odd:
            ke = _string_end(blob, p, b)
            if ke < 0 or ke >= b or blob[ke] != 58:
                odd = True
                break
            ka, kb = p + 1, ke - 1
            p = ke + 1
            if kb - ka == 2 and blob[ka] == 116 and blob[ka + 1] == 115:  # "ts"
                e, _, _, intish = _number_end(blob, p, b)
                if ts_a >= 0 or e < 0 or not intish or blob[p] == 45 or e - p > 15:
                    odd = True
                    break
                v = 0
                for j in range(p, e):
                    v = v * 10 + (blob[j] - 48)
                if v != ts_row[i]:
                    odd = True
                    break
                ts_a, ts_b = p, e
                p = e
            elif _same(windows_key, 0, 7, blob, ka, kb):
                # the time first, as the agent writes it
                if ts_a < 0 or seen_windows or p >= b or blob[p] != 123:
                    odd = True
                    break
                seen_windows = True
                p += 1
                if p < b and blob[p] == 125:
                    p += 1
                while blob[p - 1] != 125:
                    we = _string_end(blob, p, b)
                    if we < 0 or we >= b or blob[we] != 58 or nl - first_line >= 64:
                        odd = True
                        break
                    # a window named twice: json keeps the last (the exact path's)
                    k = nl - first_line
                    for q in range(k):
                        if _same(blob, names_a[q], names_b[q], blob, p, we):
                            odd = True
                    names_a[k] = p
                    names_b[k] = we
                    if odd or we + 1 >= b or blob[we + 1] != 123:
                        odd = True
                        break
                    p = _window_fields(blob, we + 1, b, w_tab, w_store, w_off, f_a, f_b, f_what)
                    if p < 0:
                        odd = True
                        break
                    # the window's line: at most its tags, keys and numbers' texts
                    if nl >= cap or o + 2 * (b - a) + margin > limit:
                        info[0] = i
                        return OUT_OF_SPACE
                    end = _window_line(
                        out, o, topic[i], t_part, t_pstart, t_pend, k2_src, k2_store, k2_off,
                        w_kind, blob, f_a, f_b, f_what, names_a[k], we, ts_a, ts_b, digs,
                    )  # fmt: skip
                    if end < 0:
                        odd = True
                        break
                    s_row[nl] = i
                    s_start[nl] = o
                    s_end[nl] = end
                    o = end
                    nl += 1
                    if (p < b and blob[p] == 44) or (p < b and blob[p] == 125):
                        p += 1
                    else:
                        odd = True
                        break
            else:  # another key ("rev", or unknown): a plain value, skipped
                ve, what = _value_end(blob, p, b)
                if ve < 0 or what == V_ARRAY:
                    odd = True
                    break
                p = ve
            if odd:
                break
            if p < b and blob[p] == 44:
                p += 1
                continue
            if p + 1 == b and blob[p] == 125:
                break
            odd = True
        if odd or p_start_bad or ts_a < 0 or not seen_windows:
            nl = first_line
            o = o_row
            status[i] = ODD
            continue
        status[i] = OK
    info[1] = nl
    info[2] = o
    return DONE


@jit
def _less(buf: np.ndarray, a1: int, b1: int, a2: int, b2: int) -> bool:
    """``buf[a1:b1] < buf[a2:b2]`` as bytes (as their texts compare: ASCII here)."""
    n1 = b1 - a1
    n2 = b2 - a2
    for j in range(min(n1, n2)):
        c1 = buf[a1 + j]
        c2 = buf[a2 + j]
        if c1 != c2:
            return c1 < c2
    return n1 < n2


@jit
def assemble_site(
    s_start: np.ndarray,
    s_end: np.ndarray,
    s_row: np.ndarray,
    ts_row: np.ndarray,
    out: np.ndarray,
    la: int,
    lb: int,
    dst: np.ndarray,
    o: int,
) -> int:
    """Site lines ``la..lb`` (one period's intensity records, in ts order) in the hash's
    order: by ts, then by their text (one key for a record's windows and its revisions),
    each followed by a newline."""
    order = np.arange(la, lb)
    k = 0
    while k < lb - la:
        # the run of lines with one ts, sorted by text (a handful: insertion sort)
        e = k + 1
        while e < lb - la and ts_row[s_row[order[e]]] == ts_row[s_row[order[k]]]:
            e += 1
        for x in range(k + 1, e):
            v = order[x]
            y = x - 1
            while y >= k and _less(out, s_start[v], s_end[v], s_start[order[y]], s_end[order[y]]):
                order[y + 1] = order[y]
                y -= 1
            order[y + 1] = v
        k = e
    for x in range(lb - la):
        q = order[x]
        n = s_end[q] - s_start[q]
        dst[o : o + n] = out[s_start[q] : s_end[q]]
        o += n
        dst[o] = 10
        o += 1
    return o
