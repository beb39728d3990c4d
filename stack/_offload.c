/* What C does to the frames the inline bump forwards without Python: which are plainly not
 * TCP (ut_plain_non_tcp), and what a sender's offloads left for the wire to finish: a
 * checksum left partial (TP_STATUS_CSUMNOTREADY: the field holds only the pseudo-header's
 * sum) completed, a GSO super-frame cut to the MTU as Linux's
 * tcp_gso_segment cuts it. Each function is the twin of one in stack/emit.py
 * (complete_checksums, resegment), byte for byte; tests/test_offload.py holds them to it.
 * No length is trusted: every offset is checked against the frame before it is read. */
#include <string.h>

#define OFF_TCP 6
#define OFF_UDP 17
#define OFF_CWR 0x80
#define OFF_FIN 0x01
#define OFF_PSH 0x08

typedef struct {
    uint32_t ip, l4, end; /* offsets: IP header, transport header, end of the IP packet */
    int v6, proto, fragment, ext;
    const uint8_t *src, *dst; /* for the pseudo-header: the final destination (RFC 8200 §8.1) */
    uint32_t alen;            /* address length: 4 or 16 */
} off_packet;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* The last destination an IPv6 routing header still has to visit (emit._final_destination):
 * type 0's last address, type 2's home address, SRH's segment 0; NULL for other types. */
static const uint8_t *final_destination(const uint8_t *rh, uint32_t len) {
    if (len < 24)
        return NULL;
    if (rh[2] == 0)
        return rh + len - 16;
    if (rh[2] == 2 || rh[2] == 4)
        return rh + 8;
    return NULL;
}

/* Where things are in an Ethernet frame carrying IP (emit._parse); 0 for anything else. */
static int parse(const uint8_t *f, uint32_t n, off_packet *p) {
    if (n < 14)
        return 0;
    uint32_t off = 12;
    uint16_t etype = be16(f + 12);
    while (etype == 0x8100 || etype == 0x88a8 || etype == 0x9100 || etype == 0x9200) {
        off += 4;
        if (n < off + 2)
            return 0;
        etype = be16(f + off);
    }
    uint32_t ip = off + 2;
    memset(p, 0, sizeof *p);
    p->ip = ip;
    if (etype == 0x0800) {
        if (n < ip + 20 || f[ip] >> 4 != 4)
            return 0;
        uint32_t ihl = (uint32_t)(f[ip] & 0x0f) * 4;
        uint32_t total = be16(f + ip + 2);
        if (total == 0) /* TSO leaves it to the NIC: the capture is the packet */
            total = n - ip;
        if (ihl < 20 || total < ihl || ip + total > n)
            return 0;
        p->l4 = ip + ihl;
        p->end = ip + total;
        p->proto = f[ip + 9];
        p->src = f + ip + 12;
        p->dst = f + ip + 16;
        p->alen = 4;
        p->fragment = (be16(f + ip + 6) & 0x3fff) != 0; /* MF or an offset */
        return 1;
    }
    if (etype == 0x86dd) {
        if (n < ip + 40 || f[ip] >> 4 != 6)
            return 0;
        uint32_t plen = be16(f + ip + 4);
        uint32_t end = plen == 0 ? n : ip + 40 + plen;
        if (end > n)
            return 0;
        uint32_t nxt = f[ip + 6];
        p->src = f + ip + 8;
        p->dst = f + ip + 24;
        p->alen = 16;
        uint32_t pos = ip + 40;
        /* hop-by-hop, routing, destination options (RFC 8200 §4.3, §4.4, §4.6): each at
         * least 8 bytes, so the walk ends within the packet */
        while (nxt == 0 || nxt == 43 || nxt == 60) {
            if (end < pos + 8)
                return 0;
            uint32_t hlen = ((uint32_t)f[pos + 1] + 1) * 8;
            if (pos + hlen > end)
                return 0;
            if (nxt == 43 && f[pos + 3]) { /* segments left: dst is not the final one */
                const uint8_t *fin = final_destination(f + pos, hlen);
                if (!fin)
                    return 0;
                p->dst = fin;
            }
            nxt = f[pos];
            pos += hlen;
        }
        p->v6 = 1;
        p->l4 = pos;
        p->end = end;
        p->proto = (int)nxt;
        p->fragment = nxt == 44;
        p->ext = pos != ip + 40;
        return 1;
    }
    return 0;
}

/* One's-complement sum of len bytes (RFC 1071), an odd last byte padded with zero. */
static uint64_t ones_sum(const uint8_t *d, uint32_t len, uint64_t sum) {
    uint32_t i = 0;
    for (; i + 1 < len; i += 2)
        sum += (uint32_t)(d[i] << 8 | d[i + 1]);
    if (i < len)
        sum += (uint32_t)d[i] << 8;
    return sum;
}

static uint16_t fold(uint64_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* The pseudo-header's sum: RFC 9293 §3.1 (IPv4), RFC 8200 §8.1 (IPv6). */
static uint64_t pseudo_sum(const off_packet *p, uint32_t length) {
    uint64_t s = ones_sum(p->src, p->alen, 0);
    s = ones_sum(p->dst, p->alen, s);
    return s + (uint32_t)p->proto + (length & 0xffff) + (length >> 16);
}

static void ip4_checksum(uint8_t *f, const off_packet *p) {
    put16(f + p->ip + 10, 0);
    put16(f + p->ip + 10, fold(ones_sum(f + p->ip, p->l4 - p->ip, 0)));
}

int32_t ut_complete_checksums(uint8_t *f, uint32_t n) {
    off_packet p;
    if (!parse(f, n, &p) || p.fragment)
        return 0; /* left as it came, as complete_checksums leaves it */
    if (!p.v6)
        ip4_checksum(f, &p);
    uint32_t at;
    if (p.proto == OFF_TCP && p.end - p.l4 >= 20)
        at = p.l4 + 16;
    else if (p.proto == OFF_UDP && p.end - p.l4 >= 8) {
        at = p.l4 + 6;
        if (!p.v6 && f[at] == 0 && f[at + 1] == 0)
            return 1; /* IPv4 UDP without a checksum (RFC 768) */
    } else
        return 1;
    put16(f + at, 0);
    uint16_t c = fold(ones_sum(f + p.l4, p.end - p.l4, pseudo_sum(&p, p.end - p.l4)));
    if (c == 0 && p.proto == OFF_UDP)
        c = 0xffff; /* RFC 768: a computed 0 is sent as all ones */
    put16(f + at, c);
    return 1;
}

uint32_t ut_complete_partial(uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                             uint8_t *flags, uint32_t count) {
    uint32_t done = 0;
    for (uint32_t k = 0; k < count; k++) {
        if (!(flags[k] & UT_RX_PARTIAL))
            continue;
        ut_complete_checksums(buf + offsets[k], lengths[k]);
        flags[k] &= (uint8_t)~UT_RX_PARTIAL;
        done++;
    }
    return done;
}

int32_t ut_resegment(const uint8_t *f, uint32_t n, int32_t mtu, uint32_t first, uint8_t *out,
                     uint32_t cap, uint32_t *lengths, uint32_t max_pieces, uint32_t *total) {
    off_packet p;
    if (mtu <= 0 || !parse(f, n, &p) || p.end - p.ip <= (uint32_t)mtu)
        return 0;
    if (p.proto != OFF_TCP || p.fragment || p.ext || p.end - p.l4 < 20)
        return 0;
    uint32_t thl = (uint32_t)(f[p.l4 + 12] >> 4) * 4;
    if (thl < 20 || p.l4 + thl > p.end)
        return 0;
    int64_t mss = (int64_t)mtu - (p.l4 - p.ip) - thl;
    uint32_t plen = p.end - p.l4 - thl;
    if (mss <= 0 || plen == 0)
        return 0;
    uint32_t count = (uint32_t)((plen + mss - 1) / mss);
    uint32_t head = p.l4 + thl; /* L2, IP and TCP headers: on every piece */
    *total = count;
    if (first >= count || head + (uint32_t)mss > cap)
        return -1;
    /* pieces [first, last): as many as out and max_pieces hold (the caller goes on after) */
    uint32_t last = first + max_pieces < count ? first + max_pieces : count;
    if ((uint64_t)(last - first) * (head + (uint32_t)mss) > cap)
        last = first + cap / (head + (uint32_t)mss);
    const uint8_t *payload = f + head;
    uint32_t seq0 = (uint32_t)f[p.l4 + 4] << 24 | (uint32_t)f[p.l4 + 5] << 16 |
                    (uint32_t)f[p.l4 + 6] << 8 | f[p.l4 + 7];
    uint8_t flags = f[p.l4 + 13];
    uint16_t ip_id = p.v6 ? 0 : be16(f + p.ip + 4);
    uint8_t *o = out;
    for (uint32_t i = first; i < last; i++) {
        uint32_t chunk = i + 1 < count ? (uint32_t)mss : plen - i * (uint32_t)mss;
        memcpy(o, f, head);
        memcpy(o + head, payload + (uint64_t)i * (uint32_t)mss, chunk);
        uint8_t *tcp = o + p.l4;
        uint8_t fl = flags;
        if (i)
            fl &= (uint8_t)~OFF_CWR; /* tcp_gso_segment: CWR on the first segment only */
        if (i + 1 < count)
            fl &= (uint8_t)~(OFF_FIN | OFF_PSH);
        tcp[13] = fl;
        uint32_t seq = seq0 + i * (uint32_t)mss;
        tcp[4] = (uint8_t)(seq >> 24);
        tcp[5] = (uint8_t)(seq >> 16);
        tcp[6] = (uint8_t)(seq >> 8);
        tcp[7] = (uint8_t)seq;
        uint32_t tcp_len = thl + chunk;
        off_packet q = p; /* addresses in this piece, not the super-frame */
        q.src = o + (p.src - f);
        q.dst = o + (p.dst - f);
        q.end = p.l4 + tcp_len;
        put16(tcp + 16, 0);
        put16(tcp + 16, fold(ones_sum(tcp, tcp_len, pseudo_sum(&q, tcp_len))));
        if (p.v6)
            put16(o + p.ip + 4, tcp_len);
        else {
            put16(o + p.ip + 2, (p.l4 - p.ip) + tcp_len);
            put16(o + p.ip + 4, (uint16_t)(ip_id + i));
            ip4_checksum(o, &q);
        }
        lengths[i - first] = head + chunk;
        o += head + chunk;
    }
    return (int32_t)(last - first);
}

/* A complete frame from an impersonated endpoint (emit.build's twin, byte for byte): l2 as
 * given (ending in the ethertype), an IPv4 header (ip_id, DF as given) or an IPv6 one, TCP
 * with the options (a multiple of 4, at most 40: the caller checks) and the payload, all
 * checksums filled in. out must hold l2len + 60 + olen + plen bytes. Returns the length. */
uint32_t ut_build(const uint8_t *l2, uint32_t l2len, const uint8_t *src, const uint8_t *dst,
                  uint32_t alen, uint32_t sport, uint32_t dport, uint32_t ttl, uint32_t tos,
                  uint32_t flow_label, uint32_t ip_id, int32_t df, uint32_t seq, uint32_t ack,
                  uint32_t flags, uint32_t window, const uint8_t *opts, uint32_t olen,
                  const uint8_t *payload, uint32_t plen, uint8_t *out) {
    uint32_t iph = alen == 16 ? 40 : 20;
    uint32_t hlen = 20 + olen;
    uint32_t tcp_len = hlen + plen;
    memcpy(out, l2, l2len);
    uint8_t *ip = out + l2len;
    uint8_t *tcp = ip + iph;
    put16(tcp, sport);
    put16(tcp + 2, dport);
    tcp[4] = (uint8_t)(seq >> 24);
    tcp[5] = (uint8_t)(seq >> 16);
    tcp[6] = (uint8_t)(seq >> 8);
    tcp[7] = (uint8_t)seq;
    tcp[8] = (uint8_t)(ack >> 24);
    tcp[9] = (uint8_t)(ack >> 16);
    tcp[10] = (uint8_t)(ack >> 8);
    tcp[11] = (uint8_t)ack;
    tcp[12] = (uint8_t)((hlen / 4) << 4 | ((flags >> 8) & 1));
    tcp[13] = (uint8_t)flags;
    put16(tcp + 14, window & 0xffff);
    put16(tcp + 16, 0);
    put16(tcp + 18, 0);
    memcpy(tcp + 20, opts, olen);
    memcpy(tcp + hlen, payload, plen);
    off_packet p;
    memset(&p, 0, sizeof p);
    p.src = src;
    p.dst = dst;
    p.alen = alen;
    p.proto = OFF_TCP;
    put16(tcp + 16, fold(ones_sum(tcp, tcp_len, pseudo_sum(&p, tcp_len))));
    if (alen == 16) {
        uint32_t first = 6u << 28 | (tos & 0xff) << 20 | (flow_label & 0xfffff);
        ip[0] = (uint8_t)(first >> 24);
        ip[1] = (uint8_t)(first >> 16);
        ip[2] = (uint8_t)(first >> 8);
        ip[3] = (uint8_t)first;
        put16(ip + 4, tcp_len);
        ip[6] = OFF_TCP;
        ip[7] = (uint8_t)ttl;
        memcpy(ip + 8, src, 16);
        memcpy(ip + 24, dst, 16);
    } else {
        ip[0] = 0x45;
        ip[1] = (uint8_t)tos;
        put16(ip + 2, 20 + tcp_len);
        put16(ip + 4, ip_id & 0xffff);
        put16(ip + 6, df ? 0x4000 : 0);
        ip[8] = (uint8_t)ttl;
        ip[9] = OFF_TCP;
        put16(ip + 10, 0);
        memcpy(ip + 12, src, 4);
        memcpy(ip + 16, dst, 4);
        put16(ip + 10, fold(ones_sum(ip, 20, 0)));
    }
    return l2len + iph + tcp_len;
}

/* How many frames from `start` on are plainly not TCP, as the general path's decoder
 * (stack/decode.py) would find them, up to the first that may be TCP or needs it (a
 * fragment, a tunnel, anything malformed): Ethernet and its VLAN tags, then an ethertype it
 * does not follow (counts[0] += 1, "unsupported_ethertype"), or an IPv4 header that is well
 * formed, not a fragment, carrying neither TCP nor a tunnel, or an IPv6 header going straight
 * on to UDP or ICMPv6 (counts[1] += 1, "non_tcp"). Inline forwards these from C untouched:
 * ARP, neighbour discovery, UDP never cross into Python. max_layers: decode.MAX_LAYERS. */
uint32_t ut_plain_non_tcp(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                          uint32_t start, uint32_t count, int32_t max_layers, int64_t *counts) {
    uint32_t i;
    for (i = start; i < count; i++) {
        const uint8_t *f = buf + offsets[i];
        uint32_t n = lengths[i];
        if (n < 14)
            break;
        uint32_t off = 14;
        int32_t layers = 1;
        uint16_t etype = be16(f + 12);
        while (etype == 0x8100 || etype == 0x88a8 || etype == 0x9100 || etype == 0x9200) {
            if (++layers > max_layers || n < off + 4)
                goto done;
            etype = be16(f + off + 2);
            off += 4;
        }
        if (etype != 0x0800 && etype != 0x86dd && etype != 0x8847 && etype != 0x8848 &&
            etype != 0x8864 && etype != 0x6558) {
            counts[0]++;
            continue;
        }
        if (++layers > max_layers)
            break;
        if (etype == 0x0800) {
            if (n < off + 20 || f[off] >> 4 != 4)
                break;
            uint32_t ihl = (uint32_t)(f[off] & 0x0f) * 4;
            uint32_t total = be16(f + off + 2);
            uint8_t proto = f[off + 9];
            if (ihl < 20 || n < off + ihl || total < ihl || (be16(f + off + 6) & 0x3fff) ||
                proto == 6 || proto == 4 || proto == 41 || proto == 47)
                break;
            counts[1]++;
            continue;
        }
        if (etype == 0x86dd && n >= off + 40 && f[off] >> 4 == 6 &&
            (f[off + 6] == 17 || f[off + 6] == 58)) {
            counts[1]++;
            continue;
        }
        break;
    }
done:
    return i - start;
}

static uint32_t be32_at(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Where a frame a run may hold has its IP header, TCP header and payload: at most two tags,
 * IPv4 without options or IPv6 without extension headers, not a fragment, TCP, nothing past
 * the IP length; a payload (none where `empty`). -1: not such a frame. */
static int32_t follow_shape(const uint8_t *f, uint32_t n, uint32_t *l3, uint32_t *tcp,
                            uint32_t *hdr, int empty) {
    uint32_t off = 14;
    int32_t tags = 0;
    if (n < 14)
        return -1;
    uint16_t etype = be16(f + 12);
    while (etype == 0x8100 || etype == 0x88a8 || etype == 0x9100) {
        if (++tags > 2 || n < off + 4)
            return -1;
        etype = be16(f + off + 2);
        off += 4;
    }
    *l3 = off;
    if (etype == 0x0800) {
        if (n < off + 20 || f[off] != 0x45 || f[off + 9] != OFF_TCP ||
            (be16(f + off + 6) & 0x3fff) || off + be16(f + off + 2) != n)
            return -1;
        *tcp = off + 20;
    } else if (etype == 0x86dd) {
        if (n < off + 40 || f[off] >> 4 != 6 || f[off + 6] != OFF_TCP ||
            off + 40 + be16(f + off + 4) != n)
            return -1;
        *tcp = off + 40;
    } else {
        return -1;
    }
    if (n < *tcp + 20)
        return -1;
    uint32_t hl = (uint32_t)(f[*tcp + 12] >> 4) * 4;
    if (hl < 20 || (empty ? n != *tcp + hl : n <= *tcp + hl))
        return -1; /* a payload where none may be, or none to merge */
    *hdr = *tcp + hl;
    return 0;
}

/* Frame `j` of the batch if it is of follow_shape's shape with `f0`'s layout (l3, tcp, hdr),
 * not flagged, with its layer-2 header (tags included) and its IP header but for the length,
 * ID and checksum; NULL otherwise. */
static const uint8_t *same_path(const uint8_t *buf, const uint32_t *offsets,
                                const uint32_t *lengths, const uint8_t *flags, uint32_t j,
                                const uint8_t *f0, uint32_t l3, uint32_t tcp, uint32_t h,
                                int empty) {
    const uint8_t *f = buf + offsets[j];
    uint32_t jl3, jtcp, jh;
    if (flags[j] || follow_shape(f, lengths[j], &jl3, &jtcp, &jh, empty) < 0 || jl3 != l3 ||
        jtcp != tcp || jh != h || memcmp(f, f0, l3) != 0)
        return NULL;
    if (l3 + 40 == tcp ? memcmp(f + l3, f0 + l3, 4) || memcmp(f + l3 + 6, f0 + l3 + 6, 34)
                       : memcmp(f + l3, f0 + l3, 2) || memcmp(f + l3 + 6, f0 + l3 + 6, 4) ||
                             memcmp(f + l3 + 12, f0 + l3 + 12, 8))
        return NULL; /* another IP header: version, TOS, flags, TTL, protocol, addresses */
    return f;
}

/* How many frames after `first` (before `count`) continue its TCP segment as Linux's receive
 * offload would merge them (tcp_gro_receive): the same layer-2 header (tags included), the
 * same IP header but for its length, ID and checksum, no fragment, no IP options or IPv6
 * extension headers, the same ports, ACK, window and options (so the same timestamps), the
 * sequence number following on; `first` ACK alone, each next one ACK alone or, as the last,
 * ACK and PSH; every payload as long as the first's but a shorter last one; no frame flagged
 * (partial checksum, too big, shed) or carrying bytes past its IP length; `max_bytes` of
 * payload at most in all. *hdr is the payload's offset in each, *last_flags the TCP flags of
 * the last frame counted (the first's where none is). A cut-in's TCP then takes them as the
 * one segment a receive offload would have made: one pass for many frames. */
uint32_t ut_follow_on(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                      const uint8_t *flags, uint32_t first, uint32_t count, uint32_t max_bytes,
                      uint32_t *hdr, uint32_t *last_flags) {
    const uint8_t *f0 = buf + offsets[first];
    uint32_t n0 = lengths[first], l3, tcp, h;
    *hdr = 0;
    *last_flags = 0;
    if (flags[first] || follow_shape(f0, n0, &l3, &tcp, &h, 0) < 0 || f0[tcp + 13] != 0x10 ||
        (f0[tcp + 12] & 0x0f))
        return 0; /* ACK alone: no other flag, no AE or reserved bit */
    *hdr = h;
    *last_flags = f0[tcp + 13];
    uint32_t size = n0 - h, total = size;
    uint32_t seq = be32_at(f0 + tcp + 4) + size;
    uint32_t j;
    for (j = first + 1; j < count; j++) {
        const uint8_t *f = same_path(buf, offsets, lengths, flags, j, f0, l3, tcp, h, 0);
        if (!f)
            break;
        uint8_t fl = f[tcp + 13];
        uint32_t len = lengths[j] - h;
        if (be32_at(f + tcp + 4) != seq || memcmp(f + tcp, f0 + tcp, 4) ||
            memcmp(f + tcp + 8, f0 + tcp + 8, 5) || memcmp(f + tcp + 14, f0 + tcp + 14, 2) ||
            memcmp(f + tcp + 20, f0 + tcp + 20, h - tcp - 20) || (fl != 0x10 && fl != 0x18) ||
            len > size || total + len > max_bytes)
            break; /* not the next segment, or ports, ACK, offset, window or options differ */
        total += len;
        seq += len;
        *last_flags = fl;
        if (fl != 0x10 || len < size) {
            j++;
            break; /* PSH, or a shorter one: the last of the run */
        }
    }
    return j - first - 1;
}

/* Options a pure ACK of a run may carry: NOPs, the end, timestamps; not SACK blocks (each
 * ACK's would be news) nor anything else. */
static int plain_ack_options(const uint8_t *o, uint32_t len) {
    uint32_t i = 0;
    while (i < len) {
        if (o[i] == 0)
            return 1;
        if (o[i] == 1) {
            i++;
            continue;
        }
        if (o[i] != 8 || i + 10 > len || o[i + 1] != 10)
            return 0;
        i += 10;
    }
    return 1;
}

/* How many frames after `first` (before `count`) are, with it, a run of pure ACKs of one
 * connection that only move it on: each ACK alone (no data, no other flag), the same headers
 * as `first` but for the IP length, ID and checksum, the same sequence number, the ACK number
 * further each time, options no more than timestamps. Only the last of such a run tells a
 * sender anything the others did not (its ACK and window supersede theirs, as a stretch ACK's
 * would: RFC 5681 §4.2), so a cut-in's TCP takes just that one. out: the last's ACK number,
 * window, and where its options start and end in the frame. */
uint32_t ut_ack_run(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                    const uint8_t *flags, uint32_t first, uint32_t count, uint32_t *out) {
    const uint8_t *f0 = buf + offsets[first];
    uint32_t l3, tcp, h;
    if (flags[first] || follow_shape(f0, lengths[first], &l3, &tcp, &h, 1) < 0 ||
        f0[tcp + 13] != 0x10 || (f0[tcp + 12] & 0x0f) ||
        !plain_ack_options(f0 + tcp + 20, h - tcp - 20))
        return 0;
    uint32_t ack = be32_at(f0 + tcp + 8), j, last = first;
    for (j = first + 1; j < count; j++) {
        const uint8_t *f = same_path(buf, offsets, lengths, flags, j, f0, l3, tcp, h, 1);
        if (!f)
            break;
        uint32_t jack = be32_at(f + tcp + 8);
        if (memcmp(f + tcp, f0 + tcp, 8) || f[tcp + 12] != f0[tcp + 12] || f[tcp + 13] != 0x10 ||
            (int32_t)(jack - ack) <= 0 || !plain_ack_options(f + tcp + 20, h - tcp - 20))
            break; /* ports or sequence number differ, another flag, no news, SACK blocks */
        ack = jack;
        last = j;
    }
    if (last == first)
        return 0;
    const uint8_t *fl = buf + offsets[last];
    out[0] = ack;
    out[1] = be16(fl + tcp + 14);
    out[2] = tcp + 20;
    out[3] = h;
    return last - first;
}
