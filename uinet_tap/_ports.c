/* Frames in and out of the inline bump's AF_PACKET sockets in batches (uinet_tap/ports.py
 * opens and configures the sockets; these only move frames; stack/_fast_build.py compiles
 * it into the data plane with _GNU_SOURCE, for recvmmsg and sendmmsg): recvmmsg() with the kernel's
 * per-frame auxiliary data, or a TPACKET_V2 ring read in place (ut_ring_*), the VLAN tag
 * the kernel stripped put back in place, and sendmmsg() straight from where the frame was
 * received, so a frame C forwards is never copied in user space. Also watch's capture
 * (uinet_tap/ringcapture.py): a TPACKET_V3 ring read in place (ut_ring3_*). */
#include <errno.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#ifndef TP_STATUS_VLAN_TPID_VALID
#define TP_STATUS_VLAN_TPID_VALID (1 << 6)
#endif

/* What the kernel said of a frame at f (len bytes, 4 bytes of room before it): the VLAN tag
 * it stripped put back in place (as libpcap does), and the frame's ut_rx flags. */
static uint8_t settle(uint8_t **fp, uint32_t *lenp, uint32_t status, uint32_t tci,
                      uint32_t tpid, int32_t max_l3) {
    uint8_t *f = *fp;
    uint32_t len = *lenp;
    uint8_t fl = 0;
    if (status & TP_STATUS_CSUMNOTREADY)
        fl |= UT_RX_PARTIAL;
    if (((status & TP_STATUS_VLAN_VALID) || tci) && len >= 12) {
        if (!(status & TP_STATUS_VLAN_TPID_VALID))
            tpid = 0x8100;
        memmove(f - 4, f, 12);
        f -= 4;
        f[12] = (uint8_t)(tpid >> 8);
        f[13] = (uint8_t)tpid;
        f[14] = (uint8_t)(tci >> 8);
        f[15] = (uint8_t)tci;
        len += 4;
    }
    /* the layer-2 header: 14 bytes and its tags (at most 8 looked at) */
    uint32_t l2 = 14;
    for (int tags = 0; tags < 8 && l2 + 4 <= len; tags++) {
        uint16_t type = (uint16_t)(f[l2 - 2] << 8 | f[l2 - 1]);
        if (type != 0x8100 && type != 0x88a8 && type != 0x9100)
            break;
        l2 += 4;
    }
    if (len > l2 && (int64_t)(len - l2) > max_l3)
        fl |= UT_RX_BIG;
    *fp = f;
    *lenp = len;
    return fl;
}

/* Reads up to `slots` frames waiting on fd (never blocks) into buf, frame k's slot at
 * k * UT_RX_SLOT; offsets/lengths/times/flags describe each frame kept, in order (frames this
 * host sent are skipped). flags: UT_RX_PARTIAL where the checksum is left to the sender's
 * offload, UT_RX_BIG where the frame's layer 3 is longer than max_l3 (the other port's MTU).
 * Returns the number kept, or -errno. */
int32_t ut_rx(int32_t fd, uint8_t *buf, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
              double *times, uint8_t *flags, int32_t max_l3) {
    struct mmsghdr msgs[UT_RX_MAX];
    struct iovec iov[UT_RX_MAX];
    struct sockaddr_ll addrs[UT_RX_MAX];
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
    } ctrl[UT_RX_MAX];
    if (slots > UT_RX_MAX)
        slots = UT_RX_MAX;
    memset(msgs, 0, sizeof(msgs[0]) * slots);
    for (uint32_t k = 0; k < slots; k++) {
        /* 4 bytes before each frame: room to put a stripped VLAN tag back */
        iov[k].iov_base = buf + (size_t)k * UT_RX_SLOT + 4;
        iov[k].iov_len = UT_RX_SLOT - 4;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
        msgs[k].msg_hdr.msg_name = &addrs[k];
        msgs[k].msg_hdr.msg_namelen = sizeof(addrs[k]);
        msgs[k].msg_hdr.msg_control = ctrl[k].space;
        msgs[k].msg_hdr.msg_controllen = sizeof(ctrl[k].space);
    }
    int n;
    do
        n = recvmmsg(fd, msgs, slots, MSG_DONTWAIT, NULL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    int32_t kept = 0;
    for (int k = 0; k < n; k++) {
        if (addrs[k].sll_pkttype == PACKET_OUTGOING)
            continue;
        uint8_t *f = buf + (size_t)k * UT_RX_SLOT + 4;
        uint32_t len = msgs[k].msg_len;
        if (len > UT_RX_SLOT - 4)
            len = UT_RX_SLOT - 4; /* cut to the slot, as recvmsg into a buffer cuts it */
        uint32_t status = 0, tci = 0, tpid = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[k].msg_hdr); c;
             c = CMSG_NXTHDR(&msgs[k].msg_hdr, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA ||
                c->cmsg_len < CMSG_LEN(sizeof(struct tpacket_auxdata)))
                continue;
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof aux);
            status = aux.tp_status;
            tci = aux.tp_vlan_tci;
            tpid = aux.tp_vlan_tpid;
        }
        uint8_t fl = settle(&f, &len, status, tci, tpid, max_l3);
        offsets[kept] = (uint32_t)(f - buf);
        lengths[kept] = len;
        times[kept] = now;
        flags[kept] = fl;
        kept++;
    }
    return kept;
}

/* Sends n frames on fd, in order, in as few calls as the kernel takes. A full socket buffer
 * is waited out (up to about half a second a frame, as Port.send); a frame the kernel
 * refuses is counted in errors[0] (ENOBUFS/EAGAIN given up on) or errors[1] (anything else,
 * e.g. EMSGSIZE; errors[2]: the last such errno) and skipped. Returns the frames sent. */
static int32_t tx_vec(int32_t fd, struct iovec *iov, uint32_t n, int64_t *errors) {
    struct mmsghdr msgs[UT_RX_MAX];
    int32_t sent = 0;
    uint32_t i = 0;
    int waits = 0;
    while (i < n) {
        uint32_t k = n - i < UT_RX_MAX ? n - i : UT_RX_MAX;
        memset(msgs, 0, sizeof(msgs[0]) * k);
        for (uint32_t j = 0; j < k; j++) {
            msgs[j].msg_hdr.msg_iov = &iov[i + j];
            msgs[j].msg_hdr.msg_iovlen = 1;
        }
        int got = sendmmsg(fd, msgs, k, MSG_DONTWAIT);
        if (got > 0) {
            sent += got;
            i += (uint32_t)got;
            waits = 0;
            continue;
        }
        int err = got < 0 ? errno : EAGAIN;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
            if (++waits <= 50) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                poll(&p, 1, err == ENOBUFS ? 1 : 10);
                continue;
            }
            errors[0]++;
        } else {
            errors[1]++;
            errors[2] = err;
        }
        i++; /* this frame cannot go: counted, and the next one tried */
        waits = 0;
    }
    return sent;
}

/* Sends frames [start, count) of buf on fd, in order, straight from where they are (tx_vec
 * counts what cannot go). A frame flagged UT_RX_BIG (flags may be NULL: none is) is cut to
 * mtu first, as the sender's GSO would have (ut_resegment), errors[4] counting the frames
 * cut; one that cannot be cut goes as it is and is counted in errors[5] (the kernel refuses
 * it or not). Returns the frames sent (pieces each); errors[3]: the bytes of the frames
 * given, sent or not. */
int32_t ut_tx(int32_t fd, const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
              const uint8_t *flags, uint32_t start, uint32_t count, int32_t mtu,
              int64_t *errors) {
    struct iovec iov[UT_RX_MAX];
    static uint8_t pieces[UT_TX_ROOM]; /* one super-frame's (one thread sends) */
    uint32_t lens[UT_TX_PIECES];
    errors[3] = 0;
    int32_t sent = 0;
    uint32_t k = 0;
    for (uint32_t j = start; j < count; j++) {
        if (flags && (flags[j] & UT_RX_DROP))
            continue; /* shed (ut_set_shed) */
        errors[3] += lengths[j];
        if (flags && (flags[j] & UT_RX_BIG)) {
            uint32_t total = 0, first = 0;
            int32_t np = ut_resegment(buf + offsets[j], lengths[j], mtu, 0, pieces,
                                      sizeof pieces, lens, UT_TX_PIECES, &total);
            if (np > 0) {
                if (k) /* what came before it goes first */
                    sent += tx_vec(fd, iov, k, errors);
                k = 0;
                struct iovec piov[UT_TX_PIECES];
                while (np > 0) { /* the pieces a room at a time (tiny MTUs: many) */
                    uint8_t *at = pieces;
                    for (int32_t i = 0; i < np; i++) {
                        piov[i].iov_base = at;
                        piov[i].iov_len = lens[i];
                        at += lens[i];
                    }
                    sent += tx_vec(fd, piov, (uint32_t)np, errors);
                    first += (uint32_t)np;
                    np = first < total ? ut_resegment(buf + offsets[j], lengths[j], mtu, first,
                                                      pieces, sizeof pieces, lens,
                                                      UT_TX_PIECES, &total)
                                       : 0;
                }
                errors[4]++;
                continue;
            }
            errors[5]++;
        }
        iov[k].iov_base = (void *)(buf + offsets[j]);
        iov[k].iov_len = lengths[j];
        if (++k == UT_RX_MAX) {
            sent += tx_vec(fd, iov, k, errors);
            k = 0;
        }
    }
    if (k)
        sent += tx_vec(fd, iov, k, errors);
    return sent;
}

int32_t ut_ring_waiting(ut_ring *r, uint32_t ahead) {
    if (!r->map || ahead >= r->frame_nr)
        return 0;
    uint32_t at = (r->head + ahead) % r->frame_nr;
    struct tpacket2_hdr *h = (struct tpacket2_hdr *)(r->map + (size_t)at * r->frame_size);
    return (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) != 0;
}

/* Puts a TPACKET_V2 receive ring of frame_nr frames on fd (bound or not) and maps it.
 * Returns 0, or -errno (the socket is then as it was: recvmmsg reads it). */
/* Puts a receive ring of `version` (the request `req`, `reqlen` bytes of it; `size` bytes in
 * all) on fd, with 4 bytes of room before each frame to put a stripped tag back, and maps
 * it. Returns the map, or NULL with errno set (the ring taken off again: the socket is as
 * it was). */
static uint8_t *ring_map(int32_t fd, int version, const void *req, socklen_t reqlen,
                         size_t size) {
    unsigned int reserve = 4;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof reserve) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_RX_RING, req, reqlen) < 0)
        return NULL;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int err = errno;
        struct tpacket_req3 none; /* the larger request, all zero: no ring */
        memset(&none, 0, sizeof none);
        setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &none, reqlen);
        errno = err;
        return NULL;
    }
    return map;
}

int32_t ut_ring_open(int32_t fd, ut_ring *r, uint32_t frame_size, uint32_t frame_nr) {
    /* one frame a block: frame_size a multiple of the page size */
    struct tpacket_req req = {frame_size, frame_nr, frame_size, frame_nr};
    memset(r, 0, sizeof *r);
    size_t size = (size_t)frame_size * frame_nr;
    uint8_t *map = ring_map(fd, TPACKET_V2, &req, sizeof req, size);
    if (map == NULL)
        return -errno;
    r->map = map;
    r->size = size;
    r->frame_size = frame_size;
    r->frame_nr = frame_nr;
    return 0;
}

/* As ut_rx, from the ring: up to `slots` frames the kernel handed over, in place (offsets
 * into r->map), the kernel's own receive times. They stay ours until ut_ring_release(). */
int32_t ut_ring_rx(ut_ring *r, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
                   double *times, uint8_t *flags, int32_t max_l3) {
    r->held_at = r->head;
    r->held = 0;
    int32_t kept = 0;
    while (r->held < slots && r->held < r->frame_nr) {
        uint8_t *fr = r->map + (size_t)r->head * r->frame_size;
        struct tpacket2_hdr *h = (struct tpacket2_hdr *)fr;
        if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            break;
        r->head = r->head + 1 == r->frame_nr ? 0 : r->head + 1;
        r->held++;
        const struct sockaddr_ll *sll =
            (const struct sockaddr_ll *)(fr + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
        if (sll->sll_pkttype == PACKET_OUTGOING || h->tp_mac < 4 ||
            (uint64_t)h->tp_mac + h->tp_snaplen > r->frame_size)
            continue;
        if (h->tp_len > h->tp_snaplen) { /* longer than a ring frame: it cannot go on whole */
            r->cut++;
            continue;
        }
        uint8_t *f = fr + h->tp_mac;
        uint32_t len = h->tp_snaplen;
        uint8_t fl = settle(&f, &len, h->tp_status, h->tp_vlan_tci, h->tp_vlan_tpid, max_l3);
        offsets[kept] = (uint32_t)(f - r->map);
        lengths[kept] = len;
        times[kept] = (double)h->tp_sec + h->tp_nsec / 1e9;
        flags[kept] = fl;
        kept++;
    }
    return kept;
}

/* The last batch's frames go back to the kernel (after C sent them and Python copied the
 * ones it took). */
void ut_ring_release(ut_ring *r) {
    uint32_t at = r->held_at;
    for (uint32_t k = 0; k < r->held; k++) {
        struct tpacket2_hdr *h = (struct tpacket2_hdr *)(r->map + (size_t)at * r->frame_size);
        __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        at = at + 1 == r->frame_nr ? 0 : at + 1;
    }
    r->held = 0;
}

/* Unmaps the ring and takes it off fd: frames arrive on the socket's queue again (recvmmsg).
 * Returns 0 or -errno. */
int32_t ut_ring_close(int32_t fd, ut_ring *r) {
    if (r->map == NULL)
        return 0;
    munmap(r->map, r->size);
    r->map = NULL;
    struct tpacket_req none = {0, 0, 0, 0};
    return setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &none, sizeof none) < 0 ? -errno : 0;
}

/* Puts a TPACKET_V3 receive ring of block_nr blocks on fd (before it is bound: no frame
 * lands anywhere else) and maps it. Returns 0, or -errno. */
int32_t ut_ring3_open(int32_t fd, ut_ring3 *r, uint32_t block_size, uint32_t block_nr,
                      uint32_t frame_size, uint32_t retire_ms, uint32_t snaplen) {
    struct tpacket_req3 req;
    memset(r, 0, sizeof *r);
    memset(&req, 0, sizeof req);
    req.tp_block_size = block_size;
    req.tp_block_nr = block_nr;
    req.tp_frame_size = frame_size;
    req.tp_frame_nr = (block_size / frame_size) * block_nr;
    req.tp_retire_blk_tov = retire_ms;
    size_t size = (size_t)block_size * block_nr;
    uint8_t *map = ring_map(fd, TPACKET_V3, &req, sizeof req, size);
    if (map == NULL)
        return -errno;
    r->map = map;
    r->size = size;
    r->block_size = block_size;
    r->block_nr = block_nr;
    r->snaplen = snaplen;
    return 0;
}

/* Whether block i was handed over by the kernel and is not one held already (every block
 * held: the next is one read). */
static int ring3_ready(const ut_ring3 *r, uint32_t i) {
    const struct tpacket_block_desc *bd =
        (const struct tpacket_block_desc *)(r->map + (size_t)i * r->block_size);
    return r->nheld < r->block_nr &&
           (__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER);
}

int32_t ut_ring3_behind(const ut_ring3 *r) {
    return ring3_ready(r, r->opened ? (r->cur + 1) % r->block_nr : r->cur);
}

int32_t ut_ring3_rx(ut_ring3 *r, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
                    double *times) {
    int32_t kept = 0;
    r->start = r->cur;
    while ((uint32_t)kept < slots) {
        uint8_t *block = r->map + (size_t)r->cur * r->block_size;
        struct tpacket_block_desc *bd = (struct tpacket_block_desc *)block;
        if (!r->opened) {
            if (!ring3_ready(r, r->cur))
                break;
            r->opened = 1;
            r->nheld++;
            r->left = bd->hdr.bh1.num_pkts;
            r->next = bd->hdr.bh1.offset_to_first_pkt;
        }
        if (r->left == 0 || r->next + sizeof(struct tpacket3_hdr) > r->block_size) {
            /* read whole (or the next offset leaves the block): on to the next block */
            r->opened = 0;
            r->cur = r->cur + 1 == r->block_nr ? 0 : r->cur + 1;
            continue;
        }
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)(block + r->next);
        r->left--;
        /* the kernel wrote these offsets; a bad one ends the block rather than read past it */
        r->next = h->tp_next_offset ? r->next + h->tp_next_offset : r->block_size;
        if (h->tp_mac < TPACKET3_HDRLEN + 4 ||
            (uint64_t)((uint8_t *)h - block) + h->tp_mac + h->tp_snaplen > r->block_size)
            continue;
        const struct sockaddr_ll *sll =
            (const struct sockaddr_ll *)((uint8_t *)h + TPACKET_ALIGN(sizeof(struct tpacket3_hdr)));
        if (r->skip_outgoing && sll->sll_pkttype == PACKET_OUTGOING)
            continue; /* libpcap's rule on loopback: the frame comes in again */
        uint8_t *f = (uint8_t *)h + h->tp_mac;
        uint32_t len = h->tp_snaplen;
        settle(&f, &len, h->tp_status, h->hv1.tp_vlan_tci, h->hv1.tp_vlan_tpid, INT32_MAX);
        if (len > r->snaplen)
            len = r->snaplen;
        offsets[kept] = (uint32_t)(f - r->map);
        lengths[kept] = len;
        /* microseconds, as libpcap gives them (and ut_meta_times turns them to seconds) */
        /* microseconds, as libpcap gives them (and ut_meta_times turns them to seconds) */
        times[kept] = h->tp_sec + (h->tp_nsec / 1000) / 1e6;
        kept++;
    }
    return kept;
}

void ut_ring3_release(ut_ring3 *r, uint32_t before) {
    while (r->rel != before && r->nheld > 0 && !(r->rel == r->cur && r->opened)) {
        struct tpacket_block_desc *bd =
            (struct tpacket_block_desc *)(r->map + (size_t)r->rel * r->block_size);
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        r->rel = r->rel + 1 == r->block_nr ? 0 : r->rel + 1;
        r->nheld--;
    }
}

void ut_ring3_close(ut_ring3 *r) {
    if (r->map != NULL)
        munmap(r->map, r->size);
    r->map = NULL;
}
