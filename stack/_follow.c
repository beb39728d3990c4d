/* The HTTP transaction follower's framing, read in C (plugins/http_transactions.py is the
 * reference and keeps the transactions): while a connection is attached, C reads each header
 * block that arrives whole in one segment, with framing it can tell alone (no body, or a
 * Content-Length), says from where it next wants bytes (ut_dir.want), and writes one ut_out
 * record per block (UT_OUT_HEAD) with the fields' places in a ut_head beside it. Python
 * builds the transaction from those fields and moves its follower on exactly as reading the
 * block would have. Anything else (a block split over segments, chunked or close-delimited
 * bodies, CONNECT, interim responses, empty lines before a block, no request to answer) and
 * C stops following the connection: the segment goes to Python whole, as before, and Python
 * reads it and says where it wants bytes next.
 *
 * Bounded: no recursion, every length checked against the segment; a header block is
 * searched only inside the segment it starts in. */

/* One past the end of the header block starting at p (http_transactions._find_end, HEAD):
 * the first "\n\r\n" or, before it, the first "\n\n"; -1 when the segment does not hold it. */
static int32_t uf_block_end(const uint8_t *p, int32_t n) {
    int32_t crlf = -1, lf = -1;
    for (int32_t i = ud_find(p, 0, n, '\n'); i >= 0; i = ud_find(p, i + 1, n, '\n')) {
        if (i + 1 < n && p[i + 1] == '\n') {
            if (lf < 0)
                lf = i;
        } else if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
            crlf = i;
            break;
        }
    }
    /* the "\n\n" counts only where it ends at or before the "\n\r\n" starts */
    if (lf >= 0 && (crlf < 0 || lf + 2 <= crlf))
        return lf + 2;
    return crlf >= 0 ? crlf + 3 : -1;
}

/* The header fields the follower reads (http_transactions._headers): the first of each,
 * lines up to the first that is not a field; (offset, length) into p, length -1 absent.
 * te: whether a Transfer-Encoding field is there. */
static void uf_fields(const uint8_t *p, int32_t n, int32_t line, int32_t host[2],
                      int32_t ua[2], int32_t cl[2], int *te) {
    host[1] = ua[1] = cl[1] = -1;
    *te = 0;
    int32_t pos = line;
    while (pos < n) {
        int32_t e = ud_find(p, pos, n, '\n');
        int32_t a = pos, b = e < 0 ? n : e;
        pos = b + 1;
        while (b > a && p[b - 1] == '\r')
            b--;
        int32_t na, nb, va, vb;
        if (!ud_field(p, a, b, &na, &nb, &va, &vb))
            return; /* the blank line, or not a header any more */
        int32_t *slot = NULL;
        if (ud_iequal(p + na, nb - na, "host"))
            slot = host;
        else if (ud_iequal(p + na, nb - na, "user-agent"))
            slot = ua;
        else if (ud_iequal(p + na, nb - na, "content-length"))
            slot = cl;
        else if (ud_iequal(p + na, nb - na, "transfer-encoding"))
            *te = 1;
        if (slot && slot[1] < 0) {
            slot[0] = va;
            slot[1] = vb - va;
        }
    }
}

/* A Content-Length the follower takes: 1 to 18 ASCII digits; -1 for anything else. */
static int64_t uf_length(const uint8_t *p, int32_t n) {
    if (n < 1 || n > 18)
        return -1;
    int64_t v = 0;
    for (int32_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Reads the header block at p (n bytes to the segment's end) for direction dir; fills h
 * (offsets relative to p) and *size. Returns the body length to skip (0: none), or -1 when
 * C does not follow this block. Changes nothing in the flow. */
static int64_t uf_read(const char *methods, int32_t max_method, const ut_flow *fl, int dir,
                       const uint8_t *p, int32_t n, ut_head *h, int32_t *size, int *head) {
    if (p[0] == '\r' || p[0] == '\n')
        return -1; /* empty lines before the block: Python skips them */
    int32_t end = uf_block_end(p, n);
    if (end < 0)
        return -1;
    *size = end;
    int32_t line = ud_find(p, 0, end, '\n') + 1; /* the header lines start here */
    int32_t host[2], ua[2], cl[2];
    int te;
    uf_fields(p, end, line, host, ua, cl, &te);
    memcpy(h->host, host, sizeof host);
    memcpy(h->ua, ua, sizeof ua);
    h->length = cl[1] < 0 ? -1 : uf_length(p + cl[0], cl[1]);
    if (dir == 0) {
        /* parse_request_line (the same rules as the detector's) */
        int32_t space = ud_find(p, 0, end < max_method + 1 ? end : max_method + 1, ' ');
        if (space < 0 || !ud_is_method(methods, p, space))
            return -1;
        if (space == 7 && memcmp(p, "CONNECT", 7) == 0)
            return -1; /* a tunnel follows */
        int32_t le = line - 1;
        if (le > space + 1 && p[le - 1] == '\r')
            le--;
        int32_t tsep = ud_find(p, space + 1, le, ' ');
        if (tsep < 0 || tsep == space + 1)
            return -1;
        for (int32_t i = space + 1; i < tsep; i++)
            if (p[i] < 0x21 || p[i] > 0x7E)
                return -1;
        if (le - (tsep + 1) != 8 ||
            (memcmp(p + tsep + 1, "HTTP/1.1", 8) && memcmp(p + tsep + 1, "HTTP/1.0", 8)))
            return -1;
        h->method[0] = 0;
        h->method[1] = space;
        h->path[0] = space + 1;
        h->path[1] = tsep - space - 1;
        h->proto[0] = tsep + 1;
        h->proto[1] = 8;
        h->status = -1;
        *head = space == 4 && memcmp(p, "HEAD", 4) == 0;
        /* RFC 9112 6.3: chunked or another coding, Python's; neither: no body */
        if (te || (cl[1] >= 0 && h->length < 0))
            return -1;
        return h->length > 0 ? h->length : 0;
    }
    /* a status line: "HTTP/1.x" SP three digits (SP or the line's end) */
    int32_t le = line - 1;
    while (le > 0 && p[le - 1] == '\r')
        le--;
    if (le < 12 || (memcmp(p, "HTTP/1.1 ", 9) && memcmp(p, "HTTP/1.0 ", 9)))
        return -1;
    if (le > 12 && p[12] != ' ')
        return -1;
    int32_t status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 200 || fl->hpend < 1)
        return -1; /* interim or switching protocols; or no request to answer */
    h->method[1] = h->path[1] = h->proto[1] = -1;
    h->status = status;
    *head = (int)(fl->hheads & 1);
    if (*head || status == 204 || status == 304)
        return 0; /* RFC 9112 6.3: no body */
    if (te || h->length < 0)
        return -1; /* chunked, another coding, to the close, or an invalid length */
    return h->length;
}

/* Follows the segment [off, off + n) at p of direction dir (data: the batch buffer). Writes
 * a UT_OUT_HEAD record for each header block it reads (or logs it, for a light flow:
 * hlog_append); returns 0, or -1 when it stopped
 * following the connection (nothing of this segment read from there on: the caller hands
 * the segment to Python whole). */
static int hlog_append(ut_table *t, ut_flow *fl, int dir, int64_t at, const uint8_t *block,
                       int32_t size, const ut_head *h);

static int uf_follow(ut_table *t, const char *methods, int32_t max_method, ut_flow *fl, int dir,
                     int32_t sink, const uint8_t *data, const uint8_t *p, int32_t n, int64_t off,
                     ut_out *out, ut_head *heads, uint32_t *no, uint32_t out_cap) {
    ut_dir *ep = &fl->d[dir];
    int64_t end = off + n;
    while (ep->hstate != UT_H_OFF) {
        int64_t pos = off > ep->want ? off : ep->want;
        if (pos >= end)
            return 0;
        if (ep->hstate == UT_H_BODY) { /* the body (want: its end) is over */
            ep->hstate = UT_H_HEAD;
            continue;
        }
        if (off > ep->want || *no + 1 >= out_cap || (dir == 0 && fl->hpend >= 63))
            break; /* bytes it never read (cannot happen in order); no room; or more
                    * requests waiting than the queue holds */
        int32_t at = (int32_t)(pos - off), size = 0;
        int head = 0;
        ut_head *h = &heads[*no];
        int64_t body = uf_read(methods, max_method, fl, dir, p + at, n - at, h, &size, &head);
        if (body < 0)
            break;
        if (!hlog_append(t, fl, dir, pos, p + at, size, h)) {
            int32_t base = (int32_t)(p + at - data);
            int32_t *spans[] = {h->method, h->path, h->proto, h->host, h->ua};
            for (size_t k = 0; k < sizeof spans / sizeof spans[0]; k++)
                if (spans[k][1] >= 0)
                    spans[k][0] += base;
            out[*no].sink = sink;
            out[*no].data_off = (uint32_t)base;
            out[*no].data_len = (uint32_t)size;
            out[*no].hashed = UT_OUT_HEAD;
            out[*no].offset = pos;
            (*no)++;
        }
        if (dir == 0) {
            fl->hheads |= (uint64_t)head << fl->hpend;
            fl->hpend++;
        } else {
            fl->hpend--;
            fl->hheads >>= 1;
        }
        ep->want = pos + size + body;
        ep->hstate = body ? UT_H_BODY : UT_H_HEAD;
    }
    fl->d[0].hstate = fl->d[1].hstate = UT_H_OFF;
    return -1;
}
