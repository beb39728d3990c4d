/* What C writes of the records (stack/fastpath.py is its only caller), each as the JSON
 * text orjson makes of the Python object it stands for, byte for byte:
 *
 * - ut_ended_record: the flow record of a light flow that ended plain (ut_end_plain), for
 *   uinet_tap/records.py ended_record's object;
 * - ut_transactions_record: its HTTP transactions, from the header blocks C logged for it
 *   (ut_hlog), for plugins/http_transactions.py's;
 * - ut_http_findings, ut_tls_findings: the findings of a request or hello C decided, for
 *   uinet_tap/native.py _findings' dict.
 *
 * The Python is the reference; tests/test_record_line.py holds the two to the same bytes.
 * Where the text would need what is not written here (a time outside [1e-4, 1e11) but 0,
 * which orjson writes otherwise or past the year 5138; a whole stream whose digest C could
 * not take, where Python raises; findings Python would cut at its limits; a log the
 * follower would not have read so) nothing is written and Python makes it as before.
 *
 * Bounded: every write is checked against the buffer's size; no length is trusted (a log's
 * and a hello's offsets are checked against what holds them). */

#include <arpa/inet.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_fast.h"

typedef struct {
    char *p;
    int32_t n, cap;
    int32_t bad; /* a write did not fit */
} ur_buf;

static void ur_put(ur_buf *b, const char *s, int32_t n) {
    if (b->bad || n > b->cap - b->n) {
        b->bad = 1;
        return;
    }
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
}

static void ur_str(ur_buf *b, const char *s) { ur_put(b, s, (int32_t)strlen(s)); }

static const char ur_hx[] = "0123456789abcdef";

/* The decimal digits of v at the end of out (at least 20 bytes); returns where they begin. */
static char *ur_digits(char *end, uint64_t v) {
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

/* The decimal digits of v at p; returns the end. */
static char *ur_dec(char *p, uint64_t v) {
    char tmp[24], *d = ur_digits(tmp + sizeof tmp, v);
    size_t n = (size_t)(tmp + sizeof tmp - d);
    memcpy(p, d, n);
    return p + n;
}

static void ur_int(ur_buf *b, int64_t v) {
    char tmp[24], *end = tmp + sizeof tmp;
    char *p = ur_digits(end, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    if (v < 0)
        *--p = '-';
    ur_put(b, p, (int32_t)(end - p));
}

/* n digits of v, zero-padded (v < 10**n) */
static char *ur_pad(char *p, int64_t v, int n) {
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/* The times C writes: 0, or in [1e-4, 1e11) (see ur_float; ur_iso's year stays 4 digits). */
static int ur_time_ok(double x) { return x == 0.0 || (x >= 1e-4 && x < 1e11); }

/* records.iso_time's split of a time (>= 0): whole seconds, and the microseconds rounded
 * half to even as Python's round() of the same double, carried into the second at 10**6. */
static void ur_micros(double x, int64_t *whole, int64_t *micro) {
    double whole_d = floor(x);
    *whole = (int64_t)whole_d;
    *micro = (int64_t)nearbyint((x - whole_d) * 1e6);
    if (*micro == 1000000)
        *whole += 1, *micro = 0;
}

/* A time (ur_time_ok) as repr() and orjson write a double in [1e-4, 1e16): the shortest
 * digits that read back as the same double (the closest such), in positional notation with
 * at least one digit after the point. Below 1e11 the integer part is at most 11 digits, so
 * the fewest decimals that read back are the fewest digits, and %.*f gives the closest with
 * that many. A time has its capture's resolution: 6 decimals are tried first, then fewer or
 * more (if d read back, d + 1 do too). */
static void ur_float(ur_buf *b, double x) {
    if (x == 0.0) {
        ur_str(b, "0.0");
        return;
    }
    char cur[48], next[48];
    if (x < 4294967296.0) {
        /* Below 2**32 a double's spacing is under a microsecond: at most one string of 6
         * decimals or fewer reads back as x, so if the microseconds rounded do, that is it,
         * its trailing zeros dropped (the common case, without printf). */
        int64_t whole, micro;
        ur_micros(x, &whole, &micro);
        char *end = cur + 24, *p = ur_digits(end, (uint64_t)whole);
        *end = '.';
        char *q = ur_pad(end + 1, micro, 6);
        while (q > end + 2 && q[-1] == '0')
            q--;
        *q = 0;
        if (strtod(p, NULL) == x) {
            ur_put(b, p, (int32_t)(q - p));
            return;
        }
    }
    int d = 6, n = snprintf(cur, sizeof cur, "%.*f", d, x);
    if (strtod(cur, NULL) == x) {
        while (d > 0) {
            int m = snprintf(next, sizeof next, "%.*f", d - 1, x);
            if (strtod(next, NULL) != x)
                break;
            memcpy(cur, next, (size_t)m + 1);
            n = m;
            d--;
        }
    } else {
        while (d < 25) {
            n = snprintf(cur, sizeof cur, "%.*f", ++d, x);
            if (strtod(cur, NULL) == x)
                break;
        }
    }
    ur_put(b, cur, n);
    if (d == 0)
        ur_put(b, ".0", 2);
}

/* records.iso_time: the UTC second (isotime.utc_second, H. Hinnant's civil_from_days) and
 * the microseconds (ur_micros). */
static void ur_iso(ur_buf *b, double ts) {
    int64_t whole, micro;
    ur_micros(ts, &whole, &micro);
    int64_t days = whole / 86400, rest = whole % 86400; /* whole >= 0 here */
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    char tmp[40], *p = tmp; /* year <= 5138 here: 4 digits */
    *p++ = '"';
    p = ur_pad(p, year, 4), *p++ = '-';
    p = ur_pad(p, month, 2), *p++ = '-';
    p = ur_pad(p, day, 2), *p++ = 'T';
    p = ur_pad(p, rest / 3600, 2), *p++ = ':';
    p = ur_pad(p, rest % 3600 / 60, 2), *p++ = ':';
    p = ur_pad(p, rest % 60, 2), *p++ = '.';
    p = ur_pad(p, micro, 6);
    memcpy(p, "+0000\"", 6);
    ur_put(b, tmp, (int32_t)(p + 6 - tmp));
}

/* A key's endpoints (tracker.split_key): its VLAN IDs, then source and destination. */
typedef struct {
    int32_t ntags;
    int32_t tags[UT_KEY_TAGS];
    int32_t alen;
    const uint8_t *src, *dst;
    int32_t sport, dport;
} ur_ends;

static int ur_split(const uint8_t *raw, ur_ends *e) {
    int32_t len = raw[0];
    const uint8_t *key = raw + 1;
    int32_t prefix = 0;
    e->ntags = 0;
    if (len != 12 && len != 36) {
        e->ntags = key[0];
        if (e->ntags > UT_KEY_TAGS)
            return 0;
        for (int32_t i = 0; i < e->ntags; i++)
            e->tags[i] = key[1 + 2 * i] << 8 | key[2 + 2 * i];
        prefix = 1 + 2 * e->ntags;
    }
    e->alen = (len - prefix - 4) / 2;
    if ((e->alen != 4 && e->alen != 16) || len > UT_KEY - 1)
        return 0;
    e->src = key + prefix;
    e->dst = key + prefix + e->alen;
    e->sport = key[len - 4] << 8 | key[len - 3];
    e->dport = key[len - 2] << 8 | key[len - 1];
    return 1;
}

/* records.format_endpoint: IPv6 by inet_ntop, as Python's socket.inet_ntop calls it; IPv4's
 * dotted quad written here. */
static void ur_endpoint(ur_buf *b, const uint8_t *addr, int32_t alen, int32_t port) {
    char tmp[INET6_ADDRSTRLEN + 16], *p = tmp + 1;
    tmp[0] = '"';
    if (alen == 16) {
        *p++ = '[';
        if (!inet_ntop(AF_INET6, addr, p, INET6_ADDRSTRLEN)) {
            b->bad = 1;
            return;
        }
        p += strlen(p);
        *p++ = ']';
        *p++ = ':';
    } else {
        for (int i = 0; i < 4; i++) {
            p = ur_dec(p, addr[i]);
            *p++ = i < 3 ? '.' : ':';
        }
    }
    p = ur_dec(p, (uint64_t)port);
    *p++ = '"';
    ur_put(b, tmp, (int32_t)(p - tmp));
}

/* community_id.community_id (version 1, TCP). */
static void ur_community(ur_buf *b, const ur_ends *e, int32_t seed) {
    const uint8_t *sa = e->src, *da = e->dst;
    int32_t sp = e->sport, dp = e->dport;
    int c = memcmp(da, sa, (size_t)e->alen);
    if (c < 0 || (c == 0 && dp < sp)) {
        sa = e->dst, da = e->src;
        sp = e->dport, dp = e->sport;
    }
    uint8_t in[2 + 32 + 2 + 4], *q = in;
    *q++ = (uint8_t)(seed >> 8), *q++ = (uint8_t)seed;
    memcpy(q, sa, (size_t)e->alen), q += e->alen;
    memcpy(q, da, (size_t)e->alen), q += e->alen;
    *q++ = 6, *q++ = 0;
    *q++ = (uint8_t)(sp >> 8), *q++ = (uint8_t)sp;
    *q++ = (uint8_t)(dp >> 8), *q++ = (uint8_t)dp;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(in, (size_t)(q - in), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
        b->bad = 1;
        return;
    }
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[40];
    int n = 0;
    out[n++] = '"', out[n++] = '1', out[n++] = ':';
    for (int i = 0; i < 20; i += 3) {
        uint32_t v = (uint32_t)md[i] << 16 | (i + 1 < 20 ? (uint32_t)md[i + 1] << 8 : 0) |
                     (i + 2 < 20 ? md[i + 2] : 0);
        out[n++] = abc[v >> 18 & 63];
        out[n++] = abc[v >> 12 & 63];
        out[n++] = i + 1 < 20 ? abc[v >> 6 & 63] : '=';
        out[n++] = i + 2 < 20 ? abc[v & 63] : '=';
    }
    out[n++] = '"';
    ur_put(b, out, n);
}

/* connection.stream_length of a bypassed direction: what the peer acknowledged of what
 * was seen, never less than what was delivered. */
static int64_t ur_length(const ut_dir *d, const ut_dir *peer, int32_t bypassed) {
    if (!bypassed)
        return d->nxt;
    int64_t end = d->seen_end;
    if (peer != NULL && peer->has_last_ack) {
        int32_t diff = (int32_t)(peer->last_ack - (uint32_t)((d->base + (uint64_t)end) & 0xffffffffu));
        int64_t acked = end + diff;
        if (acked < end)
            end = acked;
    }
    return d->nxt > end ? d->nxt : end;
}

static void ur_hex(ur_buf *b, const uint8_t *p) {
    char out[66];
    out[0] = '"';
    for (int i = 0; i < 32; i++) {
        out[1 + 2 * i] = ur_hx[p[i] >> 4];
        out[2 + 2 * i] = ur_hx[p[i] & 15];
    }
    out[65] = '"';
    ur_put(b, out, 66);
}

/* records._direction of a direction that ended plain: 0 when its stream is whole and C took
 * no digest (records.py raises there). */
static int ur_direction(ur_buf *b, const ut_dir *d, const ut_dir *peer, int32_t bypassed,
                        int32_t digested, const uint8_t *digest, int64_t *length) {
    int64_t delivered = 0, packets = 0, payload = 0, retransmitted = 0;
    *length = 0;
    if (d != NULL) {
        *length = ur_length(d, peer, bypassed);
        delivered = d->nxt;
        packets = d->packets;
        payload = d->payload_bytes;
        retransmitted = d->retransmitted;
    }
    ur_str(b, "{\"bytes\":");
    ur_int(b, *length);
    ur_str(b, ",\"sha256\":");
    if (*length != delivered)
        ur_str(b, "null");
    else if (!digested)
        return 0;
    else
        ur_hex(b, digest);
    ur_str(b, ",\"gaps\":[],\"gap_count\":0,\"gap_bytes\":0,\"packets\":");
    ur_int(b, packets);
    ur_str(b, ",\"payload_bytes\":");
    ur_int(b, payload);
    ur_str(b, ",\"retransmitted_bytes\":");
    ur_int(b, retransmitted);
    ur_str(b, ",\"overlap_conflicts\":0");
    if (bypassed) {
        ur_str(b, ",\"hashed_bytes\":");
        ur_int(b, delivered);
    }
    ur_put(b, "}", 1);
    return 1;
}

static void ur_mss(ur_buf *b, int32_t mss) {
    if (mss < 0)
        ur_str(b, "null");
    else
        ur_int(b, mss);
}

int32_t ut_ended_record(const ut_ended *e, int32_t seed, const char *close, char *out,
                        int32_t cap, int64_t *lengths) {
    const ut_flow *f = &e->flow;
    ur_buf b = {out, 0, cap, 0};
    ur_ends ends;
    if (!ur_split(f->key[0], &ends))
        return -1;
    if (!ur_time_ok(f->start) || !ur_time_ok(f->last_seen))
        return -1;
    ur_str(&b, "{\"id\":");
    ur_int(&b, f->id);
    ur_str(&b, ",\"timestamp\":");
    ur_iso(&b, f->start);
    ur_str(&b, ",\"client\":");
    ur_endpoint(&b, ends.src, ends.alen, ends.sport);
    ur_str(&b, ",\"server\":");
    ur_endpoint(&b, ends.dst, ends.alen, ends.dport);
    ur_str(&b, ",\"community_id\":");
    ur_community(&b, &ends, seed);
    ur_str(&b, ",\"midstream\":false,\"vlan\":[");
    for (int32_t i = 0; i < ends.ntags; i++) {
        if (i)
            ur_put(&b, ",", 1);
        ur_int(&b, ends.tags[i]);
    }
    ur_str(&b, "],\"start\":");
    ur_float(&b, f->start);
    ur_str(&b, ",\"end\":");
    ur_float(&b, f->last_seen);
    ur_str(&b, ",\"close\":\"");
    ur_str(&b, close);
    ur_str(&b, "\",\"handshake\":");
    int synack = !f->syn_sent; /* the SYN-ACK came: C took it */
    ur_str(&b, synack ? "true" : "false");
    int32_t bypassed = f->bypass != 0;
    ur_str(&b, ",\"c2s\":");
    if (!ur_direction(&b, &f->d[0], synack ? &f->d[1] : NULL, bypassed, e->digested[0],
                      e->digest, &lengths[0]))
        return -1;
    ur_str(&b, ",\"s2c\":");
    if (!ur_direction(&b, synack ? &f->d[1] : NULL, &f->d[0], bypassed, e->digested[1],
                      e->digest + 32, &lengths[1]))
        return -1;
    ur_str(&b, ",\"anomalies\":{},\"limits\":{},\"tcp\":{\"client_mss\":");
    ur_mss(&b, f->c_mss);
    ur_str(&b, ",\"server_mss\":");
    ur_mss(&b, synack ? f->s_mss : -1);
    ur_str(&b, ",\"window_scaling\":");
    ur_str(&b, synack && f->c_wscale >= 0 && f->s_wscale >= 0 ? "true" : "false");
    ur_str(&b, ",\"timestamps\":");
    ur_str(&b, synack && f->c_ts && f->s_ts ? "true" : "false");
    ur_str(&b, ",\"sack_permitted\":");
    ur_str(&b, synack && f->c_sack && f->s_sack ? "true" : "false");
    ur_put(&b, "}", 1);
    return b.bad ? -1 : b.n;
}

/* ---- HTTP transactions from a header block log ----------------------------------------- */

/* An ASCII byte as orjson writes it inside a string: quotes and backslashes escaped, the C0
 * controls too (\b \t \n \f \r short, the rest \u00xx). */
static void ur_jascii(ur_buf *b, uint8_t c) {
    char e[6];
    if (c == '"' || c == '\\') {
        e[0] = '\\', e[1] = (char)c;
        ur_put(b, e, 2);
    } else if (c < 0x20) {
        const char *sh = c == 8 ? "\\b" : c == 9 ? "\\t" : c == 10 ? "\\n" : c == 12 ? "\\f"
                       : c == 13 ? "\\r" : NULL;
        if (sh) {
            ur_put(b, sh, 2);
        } else {
            memcpy(e, "\\u00", 4);
            e[4] = ur_hx[c >> 4], e[5] = ur_hx[c & 15];
            ur_put(b, e, 6);
        }
    } else {
        ur_put(b, (const char *)&c, 1);
    }
}

/* A latin-1 string as orjson writes its text: bytes from 0x80 as two-byte UTF-8. */
static void ur_jstr(ur_buf *b, const uint8_t *s, int32_t n) {
    ur_put(b, "\"", 1);
    for (int32_t i = 0; i < n && !b->bad; i++) {
        if (s[i] >= 0x80) {
            char e[2] = {(char)(0xC0 | s[i] >> 6), (char)(0x80 | (s[i] & 0x3F))};
            ur_put(b, e, 2);
        } else {
            ur_jascii(b, s[i]);
        }
    }
    ur_put(b, "\"", 1);
}

#define UR_MAX_TX 64      /* http_transactions.MAX_TRANSACTIONS */
#define UR_MAX_FIELD 1024 /* http_transactions.MAX_FIELD: characters, a byte each in latin-1 */

typedef struct {
    const ut_hlog *req;
    int32_t status;       /* -1: none yet */
    int64_t length;       /* -1: none yet */
} ur_tx;

typedef struct {
    ur_tx tx[UR_MAX_TX];
    int32_t ntx;
    int64_t dropped;
    int32_t pend[64];     /* requests not answered, oldest first: tx index, -1 not listed */
    int32_t phead_bit[64];
    int32_t npend;
    int state[2];         /* 0 reading a header block, 1 skipping a body */
    int64_t next[2], skip_to[2], body[2];
    int32_t resp;         /* the transaction whose response body is read: -2 none */
} ur_follow;

static void uf_done(ur_follow *s, int d) { /* _message_done */
    if (d == 1 && s->resp != -2) {
        if (s->resp >= 0)
            s->tx[s->resp].length = s->body[1];
        s->resp = -2;
    }
    s->state[d] = 0;
}

static void uf_reach(ur_follow *s, int d, int64_t off) { /* _reach */
    if (s->state[d] == 1 && off >= s->skip_to[d]) {
        s->next[d] = s->skip_to[d];
        uf_done(s, d);
    }
}

/* _framed; 0 where the body runs to the close (C never logs such a block) */
static int uf_framed(ur_follow *s, int d, int64_t length, int has_body) {
    s->body[d] = 0;
    if (!has_body) {
        uf_done(s, d);
    } else if (length >= 0) {
        s->skip_to[d] = s->next[d] + length;
        s->body[d] = length;
        s->state[d] = 1;
        if (!length)
            uf_done(s, d);
    } else if (d == 1) {
        return 0;
    } else {
        uf_done(s, d);
    }
    return 1;
}

static void ur_field(ur_buf *b, const char *key, const ut_hlog *e, const int32_t span[2],
                     int32_t max) {
    ur_str(b, key);
    ur_jstr(b, (const uint8_t *)(e + 1) + span[0], span[1] < max ? span[1] : max);
}

int32_t ut_transactions_record(const uint8_t *log, int32_t len, int64_t c2s, int64_t s2c,
                               char *out, int32_t cap) {
    ur_follow s;
    memset(&s, 0, sizeof s);
    s.resp = -2;
    for (int32_t pos = 0; pos < len;) {
        if (len - pos < (int32_t)sizeof(ut_hlog))
            return -1;
        const ut_hlog *e = (const ut_hlog *)(log + pos);
        int32_t need = (int32_t)(((int64_t)sizeof(ut_hlog) + e->size + 7) & ~(int64_t)7);
        if (e->size < 0 || need > len - pos || (e->dir != 0 && e->dir != 1))
            return -1;
        pos += need;
        int d = e->dir;
        const ut_head *h = &e->head;
        const uint8_t *blk = (const uint8_t *)(e + 1);
        uf_reach(&s, d, e->at); /* read_head */
        if (s.state[d] != 0 || s.next[d] != e->at)
            return -1; /* where the follower was not: Python's to read */
        s.next[d] = e->at + e->size;
        if (d == 0) { /* _request */
            if (s.npend >= 64 || h->method[1] < 0 || h->path[1] < 0 || h->proto[1] < 0)
                return -1;
            int32_t idx = -1;
            if (s.ntx < UR_MAX_TX) {
                idx = s.ntx++;
                s.tx[idx].req = e;
                s.tx[idx].status = -1;
                s.tx[idx].length = -1;
            } else {
                s.dropped++;
            }
            const uint8_t *m = blk + h->method[0];
            if (h->method[1] == 7 && memcmp(m, "CONNECT", 7) == 0)
                return -1; /* a tunnel: C does not log it */
            s.pend[s.npend] = idx;
            s.phead_bit[s.npend++] = h->method[1] == 4 && memcmp(m, "HEAD", 4) == 0;
            uf_framed(&s, 0, h->length, 1);
        } else { /* _answered */
            if (h->status < 200 || s.npend < 1)
                return -1; /* interim, switching protocols, or no request: not logged */
            int32_t idx = s.pend[0];
            int head = s.phead_bit[0];
            memmove(s.pend, s.pend + 1, sizeof(int32_t) * (size_t)(s.npend - 1));
            memmove(s.phead_bit, s.phead_bit + 1, sizeof(int32_t) * (size_t)(s.npend - 1));
            s.npend--;
            if (idx >= 0)
                s.tx[idx].status = h->status;
            s.resp = idx;
            int has_body = !head && h->status != 204 && h->status != 304;
            if (!uf_framed(&s, 1, h->length, has_body))
                return -1;
        }
    }
    uf_reach(&s, 0, c2s); /* finish */
    uf_reach(&s, 1, s2c);
    if (!s.ntx)
        return 0;
    ur_buf b = {out, 0, cap, 0};
    ur_str(&b, "\"transactions\":[");
    for (int32_t i = 0; i < s.ntx; i++) {
        const ur_tx *x = &s.tx[i];
        const ut_hlog *e = x->req;
        const ut_head *h = &e->head;
        ur_str(&b, i ? ",{" : "{");
        ur_field(&b, "\"method\":", e, h->method, INT32_MAX);
        ur_field(&b, ",\"path\":", e, h->path, UR_MAX_FIELD);
        ur_field(&b, ",\"protocol\":", e, h->proto, INT32_MAX);
        if (h->host[1] >= 0)
            ur_field(&b, ",\"host\":", e, h->host, UR_MAX_FIELD);
        if (h->ua[1] >= 0)
            ur_field(&b, ",\"user_agent\":", e, h->ua, UR_MAX_FIELD);
        if (x->status >= 0) {
            ur_str(&b, ",\"status\":");
            ur_int(&b, x->status);
        }
        if (x->length >= 0) {
            ur_str(&b, ",\"length\":");
            ur_int(&b, x->length);
        }
        ur_put(&b, "}", 1);
    }
    ur_put(&b, "]", 1);
    if (s.dropped) {
        ur_str(&b, ",\"transactions_dropped\":");
        ur_int(&b, s.dropped);
    }
    return b.bad ? -1 : b.n;
}

/* ---- findings of an HTTP request C named ------------------------------------------------ */

/* One finding string of the request (span: offset and length in the early bytes, length
 * -1 absent): 0 when it lies outside them (Python's slice would cut it: its way). */
static int ur_finding(ur_buf *b, const char *key, const ut_native *nat, const int32_t span[2]) {
    if (span[0] < 0 || span[1] > nat->early_len[0] - span[0])
        return 0;
    ur_str(b, key);
    ur_jstr(b, nat->early[0] + span[0], span[1]);
    return 1;
}

int32_t ut_http_findings(const ut_native *nat, int64_t max_string, char *out, int32_t cap) {
    if (nat->proto != UD_HTTP || nat->method[1] < 0 || nat->path[1] < 0 || !nat->early[0])
        return -1;
    const int32_t *spans[] = {nat->method, nat->path, nat->host, nat->ua};
    for (int i = 0; i < 4; i++)
        if (spans[i][1] > max_string)
            return -1; /* Python cuts it (plugins/findings.py) */
    ur_buf b = {out, 0, cap, 0};
    if (!ur_finding(&b, "{\"method\":", nat, nat->method) ||
        !ur_finding(&b, ",\"path\":", nat, nat->path) ||
        (nat->host[1] >= 0 && !ur_finding(&b, ",\"host\":", nat, nat->host)) ||
        (nat->ua[1] >= 0 && !ur_finding(&b, ",\"user_agent\":", nat, nat->ua)))
        return -1;
    if (nat->status >= 0) {
        ur_str(&b, ",\"status\":");
        ur_int(&b, nat->status);
    }
    ur_put(&b, "}", 1);
    return b.bad ? -1 : b.n;
}

/* ---- findings of a TLS hello C named ----------------------------------------------------- */

#define UR_NAMES 256 /* names of a kind C keeps (plugins/detectors/tls.py has some 40) */
#define UR_NAME 64

struct ur_names {
    int32_t n;
    uint16_t code[UR_NAMES];
    char name[UR_NAMES][UR_NAME];
};

int ut_tls_names(ut_table *t, int32_t kind, const uint16_t *codes, int32_t n, const char *names,
                 int32_t names_len) {
    if (kind < 0 || kind > 1 || n < 0 || n > UR_NAMES)
        return -1;
    struct ur_names *m = t->tls_names[kind];
    if (!m && !(m = t->tls_names[kind] = malloc(sizeof *m)))
        return -1;
    m->n = 0;
    int32_t at = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *s = names + at;
        const char *end = memchr(s, 0, (size_t)(names_len - at));
        if (!end || end - s >= UR_NAME)
            return -1;
        m->code[i] = codes[i];
        memcpy(m->name[i], s, (size_t)(end - s) + 1);
        at += (int32_t)(end - s) + 1;
    }
    m->n = n;
    return 0;
}

/* tls.py version_name / cipher_name: the name Python gave, else the code as 0x%04x */
static void ur_name(ur_buf *b, const struct ur_names *m, int32_t code) {
    for (int32_t i = 0; i < m->n; i++)
        if (m->code[i] == code) {
            ur_jstr(b, (const uint8_t *)m->name[i], (int32_t)strlen(m->name[i]));
            return;
        }
    char s[8] = {'"', '0', 'x', ur_hx[code >> 12 & 15], ur_hx[code >> 8 & 15],
                 ur_hx[code >> 4 & 15], ur_hx[code & 15], '"'};
    ur_put(b, s, 8);
}

/* native.py _text (ASCII, any other byte as the four characters \xNN) as orjson writes
 * it (that backslash escaped). Returns the text's length in characters. */
static int64_t ur_jtext(ur_buf *b, const uint8_t *s, int32_t n) {
    int64_t chars = 0;
    ur_put(b, "\"", 1);
    for (int32_t i = 0; i < n && !b->bad; i++) {
        if (s[i] >= 0x80) {
            char e[5] = {'\\', '\\', 'x', ur_hx[s[i] >> 4], ur_hx[s[i] & 15]};
            ur_put(b, e, 5);
            chars += 4;
        } else {
            ur_jascii(b, s[i]);
            chars += 1;
        }
    }
    ur_put(b, "\"", 1);
    return chars;
}

int32_t ut_tls_findings(ut_table *t, const ut_native *nat, int64_t max_string, int64_t max_items,
                        char *out, int32_t cap) {
    const struct ur_names *vn = t->tls_names[0], *cn = t->tls_names[1];
    if (nat->proto != UD_TLS || !vn || !cn || nat->flen < 0 || nat->flen > UD_FBUF ||
        nat->nversions < 0 || nat->nversions > UD_NVERS || nat->legacy < 0 ||
        nat->legacy > 0xffff || nat->tls_version > 0xffff || nat->cipher < -1 ||
        nat->cipher > 0xffff)
        return -1; /* nothing C makes: Python writes any other number as it is */
    const uint8_t *f = nat->fbuf;
    int32_t flen = nat->flen;
    ur_buf b = {out, 0, cap, 0};
    const char *sep = "{";
    if (nat->sni[1] >= 0) {
        if (nat->sni[0] < 0 || nat->sni[1] > flen - nat->sni[0])
            return -1;
        ur_str(&b, "{\"sni\":");
        if (ur_jtext(&b, f + nat->sni[0], nat->sni[1]) > max_string)
            return -1;
        sep = ",";
    }
    if (nat->alpn[1] >= 0) {
        int32_t off = nat->alpn[0], len = nat->alpn[1];
        if (off < 0 || len > flen - off)
            return -1;
        ur_str(&b, sep);
        ur_str(&b, "\"alpn\":[");
        int64_t items = 0;
        for (int32_t i = 0; i < len; items++) {
            int32_t k = f[off + i];
            if (k > len - i - 1)
                return -1; /* a name past the vector: Python slices it short */
            if (items)
                ur_put(&b, ",", 1);
            ur_jtext(&b, f + off + i + 1, k);
            i += 1 + k;
        }
        if (items > max_items)
            return -1;
        ur_put(&b, "]", 1);
        sep = ",";
    }
    ur_str(&b, sep);
    ur_str(&b, "\"client_versions\":[");
    int32_t nv = nat->nversions;
    if (nv > max_items)
        return -1;
    if (!nv) {
        ur_name(&b, vn, nat->legacy);
    } else {
        for (int32_t i = 0; i < nv; i++) {
            if (i)
                ur_put(&b, ",", 1);
            ur_name(&b, vn, nat->versions[i]);
        }
    }
    const char *fp[2] = {nat->ja3, nat->ja4};
    const size_t fcap[2] = {sizeof nat->ja3, sizeof nat->ja4};
    const char *fkey[2] = {"],\"ja3\":", ",\"ja4\":"};
    for (int i = 0; i < 2; i++) {
        const char *z = memchr(fp[i], 0, fcap[i]);
        int32_t n = z ? (int32_t)(z - fp[i]) : (int32_t)fcap[i];
        for (int32_t j = 0; j < n; j++)
            if ((uint8_t)fp[i][j] >= 0x80)
                return -1; /* decoded as UTF-8 in Python */
        if (n > max_string)
            return -1;
        ur_str(&b, fkey[i]);
        ur_jstr(&b, (const uint8_t *)fp[i], n);
    }
    if (nat->tls_version >= 0) {
        ur_str(&b, ",\"tls_version\":");
        ur_name(&b, vn, nat->tls_version);
        ur_str(&b, ",\"cipher\":");
        if (nat->cipher < 0)
            return -1;
        ur_name(&b, cn, nat->cipher);
    }
    ur_put(&b, "}", 1);
    return b.bad ? -1 : b.n;
}

/* ---- light flows ended together (ut_end_lights) ----------------------------------------- */

#define UR_HEAD_ROOM 2048  /* a record's head (stack/fastpath.py _LINE_CAP) */
#define UR_TX_ROOM 65536   /* its transactions (_TX_CAP) */

/* What was decided, as uinet_tap/native.py finish_decided's fields follow the head (with the
 * findings as C held them: plain, within the size limit). */
static void ur_decided(ur_buf *b, const ut_flow *f, const char *verdict) {
    ur_str(b, f->dec_proto == UD_HTTP ? ",\"protocol\":\"http\"" : ",\"protocol\":\"tls\"");
    ur_str(b, ",\"confidence\":\"detected\",\"findings\":");
    ur_put(b, (const char *)f->dec, f->dec_len);
    ur_str(b, ",\"verdict\":\"");
    ur_str(b, verdict);
    ur_str(b, "\",\"decided_by\":\"default\",\"verdict_offset\":{\"c2s\":");
    ur_int(b, f->dec_off[0]);
    ur_str(b, ",\"s2c\":");
    ur_int(b, f->dec_off[1]);
    ur_str(b, f->bypass ? "},\"bypassed\":true" : "},\"bypassed\":false");
}

int32_t ut_end_lights(ut_table *t, int32_t cls, double limit, int64_t bound, int32_t seed,
                      const char *close, int32_t decisions, const char *verdict,
                      int32_t hand_back, int32_t unclaim, char *out, int64_t cap,
                      ut_line *lines, int32_t max_lines, int64_t *counts, int32_t *slot,
                      ut_ended *ended) {
    static const char *const reasons[3] = {NULL, "rst", "fin"};
    int64_t used = 0;
    for (int i = 0; i < 8; i++)
        counts[i] = 0;
    for (;;) {
        int32_t s = t->lhead[cls];
        if (s < 0)
            return 0;
        const ut_flow *f = &t->flows[s];
        if (!(f->last_seen < limit || limit == INFINITY) || f->lmoved >= bound)
            return 0;
        *slot = s;
        if (f->pykept || (decisions && !f->dec_proto))
            return 1;
        /* room for the whole line, whatever its parts come to (each writer checks its own) */
        int64_t need = UR_HEAD_ROOM + (decisions ? f->dec_len + 256 : 0) +
                       (f->hlog_len ? UR_TX_ROOM : 0) + 2;
        if (counts[0] == max_lines || need > cap - used)
            return counts[0] ? 2 : 1;
        if (!ut_end_plain(t, s, f->bypass, hand_back, unclaim, ended))
            return 1;
        const ut_flow *g = &ended->flow; /* f's slot is free now */
        int32_t st = ended->state;
        int32_t why = st & UT_CH_SYN_SENT              ? 0
                      : st & UT_CH_RESET               ? 1
                      : (st & 3) == UT_CH_CLOSED       ? 2
                                                       : 0;
        int64_t lengths[2];
        char *at = out + used;
        int32_t n = ut_ended_record(ended, seed, why ? reasons[why] : close, at,
                                    UR_HEAD_ROOM, lengths);
        if (n < 0)
            return 3;
        ur_buf b = {at, n, (int32_t)need, 0};
        if (decisions)
            ur_decided(&b, g, verdict);
        if (g->hlog_len) {
            /* a direction C saw is not HTTP stops the follower there: Python's to replay
             * (stack/fastpath.py _unread) */
            for (int i = 0; i < (g->syn_sent ? 1 : 2); i++)
                if (g->d[i].want == UT_WANT_NEVER)
                    return 3;
            ur_put(&b, ",", 1);
            int32_t k = b.bad ? -1
                              : ut_transactions_record(g->hlog, g->hlog_len, lengths[0],
                                                       lengths[1], b.p + b.n, b.cap - b.n);
            if (k < 0)
                return 3;
            if (k)
                b.n += k;
            else
                b.n--; /* no transaction: no field, no comma */
        }
        ur_put(&b, "}\n", 2);
        if (b.bad)
            return 3;
        used += b.n;
        ut_line *l = &lines[counts[0]++];
        l->end = used;
        l->bytes = lengths[0] + lengths[1];
        l->close = why;
        l->pad = 0;
        l->last_seen = g->last_seen;
        memcpy(l->keys, g->key, sizeof l->keys);
        counts[3 + why]++;
        if (lengths[0] + lengths[1] > counts[6])
            counts[6] = lengths[0] + lengths[1];
        if (decisions) {
            counts[g->dec_proto == UD_HTTP ? 1 : 2]++;
            if (!counts[7])
                counts[7] = g->dec_proto;
        }
    }
}
