/* uinet-tap C fast path, first-bytes detection: the HTTP/1.x and TLS detectors of
 * plugins/detectors/http.py and tls.py for the common shapes, on a connection the C table
 * carries (see _fast.c ut_run and uinet_tap/native.py).
 *
 * Every function here mirrors a Python function named in its comment, for the inputs it
 * accepts; an input it does not take the same way answers UD_NO ("not sure"), and the
 * connection is then handed to the Python inspector before that byte is applied, so the
 * result is always what the Python path gives. tests/test_fastpath.py compares the two.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_fast.h"

#define UD_EARLY 8192     /* the inspection budget's bytes (the default budget only) */

enum { UD_OK = 0, UD_PARTIAL = 1, UD_INVALID = 2 };
enum { UD_HTTP = 1, UD_TLS = 2 };



/* Scratch space of one table: a handshake message and the fingerprint strings. */
typedef struct {
    uint8_t msg[UD_EARLY + 16];
    char text[5 * UD_EARLY + 64];
    uint16_t ciphers[UD_EARLY / 2];
    uint16_t exts[UD_EARLY / 4];
    int32_t next;
} ud_scratch;

static inline uint32_t ud_be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t ud_be24(const uint8_t *p) {
    return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
}
static inline int ud_grease(uint32_t v) { return (v & 0x0F0F) == 0x0A0A && (v >> 8) == (v & 0xFF); }

/* ---- digests (OpenSSL EVP, initialised once and copied, as ut_sha_new does) ------------ */

static int ud_digest_hex(int md5, const char *text, size_t n, char *hex, int hexlen) {
    /* One context per algorithm, reused; on OpenSSL 3 the algorithm is fetched once, so
     * EVP_DigestInit_ex does no lookup (it costs microseconds per call otherwise). */
    static EVP_MD_CTX *ctx[2] = {NULL, NULL};
    static const EVP_MD *md[2] = {NULL, NULL};
    int k = md5 ? 1 : 0;
    if (!ctx[k]) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        md[k] = EVP_MD_fetch(NULL, md5 ? "MD5" : "SHA256", NULL);
#else
        md[k] = md5 ? EVP_md5() : EVP_sha256();
#endif
        if (!md[k] || !(ctx[k] = EVP_MD_CTX_new()))
            return -1;
    }
    uint8_t out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestInit_ex(ctx[k], md[k], NULL) != 1 || EVP_DigestUpdate(ctx[k], text, n) != 1 ||
        EVP_DigestFinal_ex(ctx[k], out, &len) != 1)
        return -1;
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < hexlen && i / 2 < (int)len; i++)
        hex[i] = digits[(out[i / 2] >> (i % 2 ? 0 : 4)) & 0xF];
    hex[hexlen] = 0;
    return 0;
}

/* Decimal and 4-digit hex without printf (a ClientHello has a hundred numbers to write). */
static char *ud_dec(char *out, uint32_t v) {
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *out++ = tmp[--n];
    return out;
}

static char *ud_hex4(char *out, uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    out[0] = digits[(v >> 12) & 0xF];
    out[1] = digits[(v >> 8) & 0xF];
    out[2] = digits[(v >> 4) & 0xF];
    out[3] = digits[v & 0xF];
    return out + 4;
}

/* ---- HTTP/1.x (plugins/detectors/http.py) ------------------------------------------------ */

static int ud_space(uint8_t c) {
    /* bytes.strip(): ASCII whitespace */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x0b || c == 0x0c;
}

static int ud_find(const uint8_t *p, int32_t from, int32_t to, uint8_t c) {
    const uint8_t *q = from < to ? memchr(p + from, c, (size_t)(to - from)) : NULL;
    return q ? (int32_t)(q - p) : -1;
}

static int ud_is_method(const char *methods, const uint8_t *m, int32_t n) {
    /* methods: NUL-terminated names, an empty one ends the list (http.METHODS) */
    while (*methods) {
        size_t k = strlen(methods);
        if ((int32_t)k == n && memcmp(methods, m, k) == 0)
            return 1;
        methods += k + 1;
    }
    return 0;
}

static int ud_iequal(const uint8_t *p, int32_t n, const char *lower) {
    if ((int32_t)strlen(lower) != n)
        return 0;
    for (int32_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (uint8_t)lower[i])
            return 0;
    }
    return 1;
}

/* A header line [a, b): its name [*na, *nb) and value [*va, *vb), each stripped of
 * whitespace as bytes.strip() strips it; 0 when the line has no colon (not a field). */
static int ud_field(const uint8_t *p, int32_t a, int32_t b, int32_t *na, int32_t *nb,
                    int32_t *va, int32_t *vb) {
    int32_t colon = ud_find(p, a, b, ':');
    if (colon < 0)
        return 0;
    int32_t n0 = a, n1 = colon, v0 = colon + 1, v1 = b;
    while (n0 < n1 && ud_space(p[n0]))
        n0++;
    while (n1 > n0 && ud_space(p[n1 - 1]))
        n1--;
    while (v0 < v1 && ud_space(p[v0]))
        v0++;
    while (v1 > v0 && ud_space(p[v1 - 1]))
        v1--;
    *na = n0;
    *nb = n1;
    *va = v0;
    *vb = v1;
    return 1;
}

/* Http.detect() on the first c2s bytes with s2c empty and the budget not spent: 1 when it
 * returns a match (request line and the whole header block there), 0 for anything else
 * (NEED_MORE, NO_MATCH, an odd request): then Python decides. */
static int ud_http_request(const char *methods, int max_method, const uint8_t *p, int32_t n,
                           ut_native *nat) {
    /* parse_request_line */
    int32_t space = ud_find(p, 0, n < max_method + 1 ? n : max_method + 1, ' ');
    if (space < 0 || !ud_is_method(methods, p, space))
        return 0;
    int32_t end = ud_find(p, space, n, '\n');
    if (end < 0)
        return 0;
    int32_t le = end;
    if (le > space + 1 && p[le - 1] == '\r')
        le--;
    int32_t tstart = space + 1;
    int32_t tsep = ud_find(p, tstart, le, ' ');
    if (tsep < 0 || tsep == tstart)
        return 0; /* no version, or an empty target */
    for (int32_t i = tstart; i < tsep; i++)
        if (p[i] < 0x21 || p[i] > 0x7E)
            return 0;
    int32_t vlen = le - (tsep + 1);
    if (vlen != 8 || (memcmp(p + tsep + 1, "HTTP/1.1", 8) && memcmp(p + tsep + 1, "HTTP/1.0", 8)))
        return 0;
    /* parse_headers: a complete block (blank line, or a line that is not a header) */
    int32_t host[2] = {0, -1}, ua[2] = {0, -1};
    int32_t pos = end + 1;
    int complete = 0;
    while (pos < n) {
        int32_t e = ud_find(p, pos, n, '\n');
        if (e < 0)
            break;
        int32_t a = pos, b = e;
        if (b > a && p[b - 1] == '\r')
            b--;
        pos = e + 1;
        if (a == b) {
            complete = 1;
            break;
        }
        int32_t na, nb, va, vb;
        if (!ud_field(p, a, b, &na, &nb, &va, &vb)) {
            complete = 1;
            break;
        }
        if (host[1] < 0 && ud_iequal(p + na, nb - na, "host")) {
            host[0] = va;
            host[1] = vb - va;
        } else if (ua[1] < 0 && ud_iequal(p + na, nb - na, "user-agent")) {
            ua[0] = va;
            ua[1] = vb - va;
        }
    }
    if (!complete)
        return 0;
    nat->method[0] = 0;
    nat->method[1] = space;
    nat->path[0] = tstart;
    nat->path[1] = tsep - tstart;
    memcpy(nat->host, host, sizeof host);
    memcpy(nat->ua, ua, sizeof ua);
    nat->status = -1;
    return 1;
}

/* response_status(): *final and the status (-1 if none) for the start of s2c. */
static void ud_http_status(const uint8_t *s, int32_t m, int *final, int32_t *status) {
    static const char prefix[] = "HTTP/1.";
    *status = -1;
    if (m < 13) {
        int32_t k = m < 7 ? m : 7;
        if (memcmp(s, prefix, (size_t)k) != 0) {
            *final = 1;
            return;
        }
        int fits = 1;
        for (int32_t i = 7; i < m; i++) {
            uint8_t c = s[i];
            if (i == 7)
                fits = c == '0' || c == '1';
            else if (i == 8)
                fits = c == ' ';
            else
                fits = c >= '0' && c <= '9';
            if (!fits)
                break;
        }
        *final = !fits;
        return;
    }
    *final = 1;
    if (memcmp(s, prefix, 7) != 0 || s[8] != ' ')
        return;
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9')
            return;
    if (s[12] != ' ' && s[12] != '\r' && s[12] != '\n')
        return;
    *status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
}

/* ---- TLS (plugins/detectors/tls.py) ------------------------------------------------------ */

/* handshake_bytes(): concatenate handshake-record fragments into out (room for n bytes). */
static int ud_handshake(const uint8_t *data, int32_t n, uint8_t *out, int32_t *out_len) {
    int32_t got = 0, pos = 0;
    for (;;) {
        if (got >= 4) {
            int64_t need = 4 + (int64_t)ud_be24(out + 1);
            if (need - 4 > 0x10000)
                return UD_INVALID;
            if (got >= need) {
                *out_len = (int32_t)need;
                return UD_OK;
            }
        }
        /* _record_header_ok */
        int32_t h = n - pos < 5 ? n - pos : 5;
        if (h >= 1 && data[pos] != 0x16)
            return UD_INVALID;
        if (h > 1 && data[pos + 1] != 0x03)
            return UD_INVALID;
        if (h > 2 && data[pos + 2] > 0x04)
            return UD_INVALID;
        if (h < 5) {
            *out_len = got;
            return UD_PARTIAL;
        }
        int32_t length = (int32_t)ud_be16(data + pos + 3);
        if (length <= 0 || length > 16384 + 2048)
            return UD_INVALID;
        int32_t avail = n - (pos + 5);
        int32_t take = length < avail ? length : avail;
        memcpy(out + got, data + pos + 5, (size_t)take);
        got += take;
        if (pos + 5 + length > n) {
            *out_len = got;
            return UD_PARTIAL;
        }
        pos += 5 + length;
    }
}

static int ud_cmp16(const void *a, const void *b) {
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static char *ud_join_dec(char *out, const uint16_t *v, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        if (i)
            *out++ = '-';
        out = ud_dec(out, v[i]);
    }
    return out;
}

static char *ud_join_hex(char *out, const uint16_t *v, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        if (i)
            *out++ = ',';
        out = ud_hex4(out, v[i]);
    }
    return out;
}

static int ud_alnum(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Tls.detect() on the first c2s bytes with s2c empty: 1 when the whole ClientHello is there
 * and parses (parse_client_hello() OK), with its findings, ja3 and ja4 in nat; 0 else. */
static int ud_tls_client(const uint8_t *p, int32_t n, ut_native *nat, ud_scratch *s) {
    int32_t mlen = 0;
    if (n > UD_EARLY || ud_handshake(p, n, s->msg, &mlen) != UD_OK || s->msg[0] != 0x01)
        return 0;
    uint32_t declared = ud_be24(s->msg + 1);
    if (declared < 41)
        return 0;
    const uint8_t *b = s->msg + 4;
    int32_t end = (int32_t)declared, pos = 0;
    /* parse_client_hello: the whole message is there, so a short read is INVALID */
    if (end < 2 + 32 + 1)
        return 0;
    uint32_t version = ud_be16(b);
    if (version >> 8 != 0x03)
        return 0;
    pos = 34;
    uint32_t sid = b[pos++];
    if (sid > 32 || pos + (int32_t)sid > end)
        return 0;
    pos += (int32_t)sid;
    if (pos + 2 > end)
        return 0;
    uint32_t cs_len = ud_be16(b + pos);
    pos += 2;
    if (cs_len < 2 || cs_len % 2 || pos + (int32_t)cs_len > end)
        return 0;
    int32_t nc = 0;
    for (uint32_t i = 0; i < cs_len; i += 2) {
        uint32_t c = ud_be16(b + pos + i);
        if (!ud_grease(c))
            s->ciphers[nc++] = (uint16_t)c;
    }
    pos += (int32_t)cs_len;
    if (pos + 1 > end)
        return 0;
    uint32_t comp = b[pos++];
    if (comp < 1 || pos + (int32_t)comp > end)
        return 0;
    pos += (int32_t)comp;
    /* extensions (_parse_extensions, _apply_extension: the last of a kind wins) */
    int32_t nx = 0, sni_off = -1, sni_len = -1, alpn_off = -1, alpn_len = -1;
    int32_t first_off = 0, first_len = 0;
    const uint8_t *groups = NULL, *formats = NULL, *sigs = NULL;
    int32_t ngroups = 0, nformats = 0, nsigs = 0;
    int has_versions = 0;
    nat->nversions = 0;
    if (pos != end) {
        if (pos + 2 > end)
            return 0;
        int32_t total = (int32_t)ud_be16(b + pos);
        pos += 2;
        if (pos + total != end)
            return 0;
        while (pos < end) {
            if (pos + 4 > end)
                return 0;
            uint32_t type = ud_be16(b + pos);
            int32_t len = (int32_t)ud_be16(b + pos + 2);
            pos += 4;
            if (pos + len > end)
                return 0;
            const uint8_t *body = b + pos;
            pos += len;
            if (nx >= (int32_t)(sizeof s->exts / sizeof s->exts[0]))
                return 0;
            s->exts[nx++] = (uint16_t)type;
            if (type == 0x0000) { /* _parse_sni */
                sni_off = -1;
                if (len >= 2 && (int32_t)ud_be16(body) == len - 2) {
                    int32_t q = 2;
                    while (q < len) {
                        if (q + 3 > len)
                            break;
                        uint32_t nt = body[q];
                        int32_t nl = (int32_t)ud_be16(body + q + 1);
                        q += 3;
                        if (q + nl > len)
                            break;
                        if (nt == 0) {
                            sni_off = (int32_t)(body + q - b);
                            sni_len = nl;
                            break;
                        }
                        q += nl;
                    }
                }
            } else if (type == 0x0010) { /* _first_alpn_raw, _parse_alpn */
                first_off = (int32_t)(body - b) + 3;
                first_len = len >= 3 ? (body[2] < len - 3 ? body[2] : len - 3) : 0;
                alpn_off = -1;
                if (len >= 2 && (int32_t)ud_be16(body) == len - 2) {
                    int32_t q = 2;
                    while (q < len && q + 1 + body[q] <= len)
                        q += 1 + body[q];
                    if (q == len) {
                        alpn_off = (int32_t)(body - b) + 2;
                        alpn_len = len - 2;
                    }
                }
            } else if (type == 0x000A) {
                int ok = len >= 2 && (int32_t)ud_be16(body) == len - 2;
                groups = body + 2;
                ngroups = ok ? (len - 2) / 2 : 0;
            } else if (type == 0x000B) {
                int ok = len >= 1 && body[0] == len - 1;
                formats = body + 1;
                nformats = ok ? len - 1 : 0;
            } else if (type == 0x000D) {
                int ok = len >= 2 && (int32_t)ud_be16(body) == len - 2;
                sigs = body + 2;
                nsigs = ok ? (len - 2) / 2 : 0;
            } else if (type == 0x002B) {
                int ok = len >= 1 && body[0] == len - 1;
                int32_t k = ok ? (len - 1) / 2 : 0;
                has_versions = 1;
                nat->nversions = 0;
                for (int32_t i = 0; i < k; i++) {
                    uint32_t v = ud_be16(body + 1 + 2 * i);
                    if (ud_grease(v))
                        continue;
                    if (nat->nversions == UD_NVERS)
                        return 0;
                    nat->versions[nat->nversions++] = (uint16_t)v;
                }
            }
        }
    }
    (void)has_versions;
    /* findings kept: sni and the ALPN list bytes, copied (the message is scratch) */
    int32_t need = (sni_off >= 0 ? sni_len : 0) + (alpn_off >= 0 ? alpn_len : 0);
    if (need > UD_FBUF)
        return 0;
    nat->flen = 0;
    nat->sni[0] = nat->alpn[0] = 0;
    nat->sni[1] = nat->alpn[1] = -1;
    if (sni_off >= 0) {
        memcpy(nat->fbuf, b + sni_off, (size_t)sni_len);
        nat->sni[1] = sni_len;
        nat->flen = sni_len;
    }
    if (alpn_off >= 0) {
        memcpy(nat->fbuf + nat->flen, b + alpn_off, (size_t)alpn_len);
        nat->alpn[0] = nat->flen;
        nat->alpn[1] = alpn_len;
        nat->flen += alpn_len;
    }
    nat->legacy = (int32_t)version;
    nat->tls_version = nat->cipher = -1;
    /* ja3_string: version, ciphers, extensions, groups, point formats (GREASE removed) */
    uint16_t *ex = s->exts;
    int32_t ne = 0;
    for (int32_t i = 0; i < nx; i++)
        if (!ud_grease(ex[i]))
            ex[ne++] = ex[i];
    char *t = s->text;
    t = ud_dec(t, version);
    *t++ = ',';
    t = ud_join_dec(t, s->ciphers, nc);
    *t++ = ',';
    t = ud_join_dec(t, ex, ne);
    *t++ = ',';
    int32_t k = 0;
    for (int32_t i = 0; i < ngroups; i++) {
        uint32_t g = ud_be16(groups + 2 * i);
        if (!ud_grease(g)) {
            if (k++)
                *t++ = '-';
            t = ud_dec(t, g);
        }
    }
    *t++ = ',';
    for (int32_t i = 0; i < nformats; i++) {
        if (i)
            *t++ = '-';
        t = ud_dec(t, formats[i]);
    }
    if (ud_digest_hex(1, s->text, (size_t)(t - s->text), nat->ja3, 32) != 0)
        return 0;
    /* ja4 */
    uint32_t top = version;
    if (nat->nversions) {
        top = 0;
        for (int32_t i = 0; i < nat->nversions; i++)
            if (nat->versions[i] > top)
                top = nat->versions[i];
    }
    const char *tv = top == 0x0304 ? "13" : top == 0x0303 ? "12" : top == 0x0302 ? "11"
                   : top == 0x0301 ? "10" : top == 0x0300 ? "s3" : "00";
    int sni_present = 0;
    for (int32_t i = 0; i < ne; i++)
        sni_present |= ex[i] == 0x0000;
    char alpn2[3] = "00";
    if (first_len > 0) {
        uint8_t a = b[first_off], z = b[first_off + first_len - 1];
        if (ud_alnum(a) && ud_alnum(z)) {
            alpn2[0] = (char)a;
            alpn2[1] = (char)z;
        } else {
            static const char digits[] = "0123456789abcdef";
            alpn2[0] = digits[a >> 4];
            alpn2[1] = digits[z & 0xF];
        }
    }
    char part_b[13], part_c[13];
    qsort(s->ciphers, (size_t)nc, sizeof(uint16_t), ud_cmp16);
    t = ud_join_hex(s->text, s->ciphers, nc);
    if (t == s->text)
        strcpy(part_b, "000000000000");
    else if (ud_digest_hex(0, s->text, (size_t)(t - s->text), part_b, 12) != 0)
        return 0;
    int32_t nr = 0;
    for (int32_t i = 0; i < ne; i++)
        if (ex[i] != 0x0000 && ex[i] != 0x0010)
            s->ciphers[nr++] = ex[i]; /* the cipher list is done with: reuse it */
    qsort(s->ciphers, (size_t)nr, sizeof(uint16_t), ud_cmp16);
    t = ud_join_hex(s->text, s->ciphers, nr);
    if (t != s->text && nsigs) {
        k = 0;
        for (int32_t i = 0; i < nsigs; i++) {
            uint32_t v = ud_be16(sigs + 2 * i);
            if (!ud_grease(v)) {
                *t++ = k++ ? ',' : '_';
                t = ud_hex4(t, v);
            }
        }
    }
    if (t == s->text)
        strcpy(part_c, "000000000000");
    else if (ud_digest_hex(0, s->text, (size_t)(t - s->text), part_c, 12) != 0)
        return 0;
    snprintf(nat->ja4, sizeof nat->ja4, "t%s%c%02d%02d%s_%s_%s", tv, sni_present ? 'd' : 'i',
             nc < 99 ? nc : 99, ne < 99 ? ne : 99, alpn2, part_b, part_c);
    return 1;
}

/* server_hello(): UD_OK with the version and cipher, UD_PARTIAL or UD_INVALID. */
static int ud_tls_server(const uint8_t *s2c, int32_t m, ud_scratch *s, int32_t *version,
                         int32_t *cipher) {
    int32_t mlen = 0;
    if (m == 0)
        return UD_PARTIAL;
    int st = ud_handshake(s2c, m, s->msg, &mlen);
    if (st == UD_INVALID || (mlen && s->msg[0] != 0x02))
        return UD_INVALID;
    if (st == UD_PARTIAL)
        return UD_PARTIAL;
    const uint8_t *b = s->msg;
    int32_t end = mlen, pos = 4;
    if (pos + 2 + 32 > end)
        return UD_INVALID;
    uint32_t legacy = ud_be16(b + pos);
    pos += 34;
    if (pos + 1 > end)
        return UD_INVALID;
    uint32_t sid = b[pos++];
    if (sid > 32 || pos + (int32_t)sid > end)
        return UD_INVALID;
    pos += (int32_t)sid;
    if (pos + 3 > end)
        return UD_INVALID;
    uint32_t suite = ud_be16(b + pos);
    pos += 3;
    uint32_t selected = 0;
    if (pos < end && pos + 2 <= end) { /* _server_selected_version */
        int32_t e = pos + 2 + (int32_t)ud_be16(b + pos);
        pos += 2;
        while (pos + 4 <= e) {
            if (pos + 4 > end)
                break;
            uint32_t type = ud_be16(b + pos);
            int32_t len = (int32_t)ud_be16(b + pos + 2);
            pos += 4;
            if (pos + len > end)
                break;
            if (type == 0x002B && len == 2) {
                selected = ud_be16(b + pos);
                break;
            }
            pos += len;
        }
    }
    *version = (int32_t)(selected ? selected : legacy);
    *cipher = (int32_t)suite;
    return UD_OK;
}

/* ---- one connection's inspection, event by event (plugins/inspector.py Inspector.data) -- */

typedef struct {
    char *methods;   /* http.METHODS, NUL-separated, an empty name ends the list */
    int32_t max_method;
    int32_t packets; /* the budget's data segments per direction */
    double seconds;  /* and its time from the first data */
    int32_t bypass;  /* the default verdict is PASS and --bypass is on */
} ud_config;

static int ud_early_append(ut_native *nat, int dir, const uint8_t *p, int32_t n) {
    int32_t room = UD_EARLY - nat->early_len[dir];
    int32_t k = n < room ? n : room;
    if (k <= 0)
        return 0;
    int32_t need = nat->early_len[dir] + k;
    if (need > nat->early_cap[dir]) {
        int32_t cap = nat->early_cap[dir] ? nat->early_cap[dir] : 512;
        while (cap < need)
            cap *= 2;
        uint8_t *q = realloc(nat->early[dir], (size_t)cap);
        if (!q)
            return -1;
        nat->early[dir] = q;
        nat->early_cap[dir] = cap;
    }
    memcpy(nat->early[dir] + nat->early_len[dir], p, (size_t)k);
    nat->early_len[dir] = need;
    return 0;
}

/* In-order payload of one direction, on a connection C inspects (nat->state 0 or 1).
 * Returns 0 (applied, still undecided), 1 (applied: the default verdict fell here) or -1
 * (not applied, nothing changed: Python takes the connection before this byte). */
static int ud_event(ut_native *nat, const ud_config *cfg, ud_scratch *s, int dir,
                    const uint8_t *p, int32_t n, double ts) {
    if (nat->state == 0) {
        /* The first data: the client's, all of it inside the budget, and a detector match
         * on it alone (the detectors asked before it in this port's order decline it). */
        if (dir != 0 || n >= UD_EARLY)
            return -1;
        if ((nat->allow & UD_TLS) && p[0] == 0x16) {
            if (!ud_tls_client(p, n, nat, s))
                return -1;
            nat->proto = UD_TLS;
        } else if ((nat->allow & UD_HTTP) && p[0] != 0x16 && !(p[0] & 0x80)) {
            if (!ud_http_request(cfg->methods, cfg->max_method, p, n, nat))
                return -1;
            nat->proto = UD_HTTP;
        } else {
            return -1;
        }
        if (ud_early_append(nat, 0, p, n) != 0)
            return -1;
        nat->state = 1;
        nat->complete = 0; /* s2c is empty: the response's findings are to come */
        nat->seg[0] = 1;
        nat->bytes[0] = n;
        nat->first_data = ts;
        nat->ev[0].dir = 0;
        nat->ev[0].len = n;
        nat->ev[0].ts = ts;
        nat->nev = 1;
        return 0;
    }
    if (nat->nev == UD_EVENTS)
        return -1;
    if (nat->early_len[dir] < UD_EARLY && ud_early_append(nat, dir, p, n) != 0)
        return -1;
    nat->seg[dir]++;
    nat->bytes[dir] += n;
    nat->ev[nat->nev].dir = dir;
    nat->ev[nat->nev].len = n;
    nat->ev[nat->nev].ts = ts;
    nat->nev++;
    int spent = nat->early_len[0] >= UD_EARLY || nat->early_len[1] >= UD_EARLY ||
                nat->seg[0] >= cfg->packets || nat->seg[1] >= cfg->packets ||
                ts - nat->first_data >= cfg->seconds;
    if (!nat->complete) { /* Inspector._refine: only s2c is read again */
        if (nat->proto == UD_HTTP) {
            int final;
            int32_t status;
            static const uint8_t none[1] = {0};
            ud_http_status(nat->early[1] ? nat->early[1] : none, nat->early_len[1], &final,
                           &status);
            nat->complete = final;
            if (status >= 0)
                nat->status = status;
        } else {
            int32_t version, cipher;
            int st = ud_tls_server(nat->early[1], nat->early_len[1], s, &version, &cipher);
            nat->complete = st != UD_PARTIAL;
            if (st == UD_OK) {
                nat->tls_version = version;
                nat->cipher = cipher;
            }
        }
    }
    int both = nat->early_len[0] > 0 && nat->early_len[1] > 0;
    if ((nat->complete && both) || spent) {
        nat->state = 2;
        nat->verdict_off[0] = nat->bytes[0];
        nat->verdict_off[1] = nat->bytes[1];
        return 1;
    }
    return 0;
}
