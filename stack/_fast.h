/* uinet-tap C data plane: the one definition of every structure and function Python sees.
 *
 * stack/_fast_build.py hands the part below the marker to cffi (cdef) as it is written here,
 * with array lengths and constants left for the compiler to give (cffi checks every offset),
 * and uinet_tap's Python reads these structures by field name (stack/fastpath.py derives
 * its packed views from cffi's offsets): no layout is written down twice. _detect.c and
 * _fast.c include it.
 */
#ifndef UINET_TAP_FAST_H
#define UINET_TAP_FAST_H
#include <stddef.h>
#include <stdint.h>

/* Internal to the C. A stream's SHA-256 (Python holds it as a void *): OpenSSL's context,
 * and the number of the last piece of it queued for the hashing thread (_hashq.c), so that
 * using it waits only for its own pieces. */
typedef struct {
    void *md; /* EVP_MD_CTX */
    uint64_t seq;
} ut_sha;
void uh_put(ut_sha *s, const uint8_t *data, size_t n);
void uh_put_copy(ut_sha *s, const uint8_t *data, size_t n);
void uh_wait_for(ut_sha *s);

/* ---- cffi interface: everything from here to the end ---------------------------------- */

#define UD_EVENTS 48      /* data events kept for a hand-over (the budget ends it at 39) */
#define UD_FBUF 1024      /* room for the TLS SNI and ALPN bytes */
#define UD_NVERS 16
/* A flow key as C holds it: its length, then stack/tracker.py Tracker._key's bytes (the VLAN
 * stack, if keyed, as a count and 12-bit IDs; the addresses; the ports), zeros to the end:
 * compared whole, so keys of different lengths never match. Up to two tags, IPv4 or IPv6. */
#define UT_KEY 44
#define UT_KEY_TAGS 2
#define UT_OPTS 40
/* What a held piece costs beyond its bytes (reassembly/stream.py PIECE_COST) */
#define UT_PIECE_COST 96
/* A charge's stamp (ByteStream.charged_at): frame * this + its rank within the frame */
#define UT_CHARGES_PER_FRAME 1024
/* ut_dir.want of a sink that wants nothing handed over (2**62: past any stream) */
#define UT_WANT_NEVER 4611686018427387904
/* No FIN: an offset no FIN can have (one before the stream's first byte is negative). */
#define UT_NO_FIN INT64_MIN
/* ut_run's `changed` list: (slot, state) pairs, the state each flow is in after the run as
 * Python names it (stack/fastpath.py _CHANGED_STATES), UT_CH_SYN_SENT set while the SYN-ACK
 * is still awaited. */
#define UT_CH_ESTABLISHED 0
#define UT_CH_SYN_RECEIVED 1
#define UT_CH_HALF_CLOSED 2
#define UT_CH_CLOSED 3
#define UT_CH_SYN_SENT 4
#define UT_CH_RESET 8 /* an accepted RST (Tracker._on_rst), whatever the FINs said */
#define UT_MAX_SEQ_JUMP 1073741824 /* 2**30: stack/tracker.py MAX_SEQ_JUMP */
/* ut_pcap_index(): why the index of a stretch of a pcap file ended */
#define UT_PCAP_FULL 0
#define UT_PCAP_MORE 1
#define UT_PCAP_BAD 2
/* ut_out.hashed: C hashed the bytes and hands them to the sink's reader (1), or C read them
 * as a header block of the HTTP transaction follower (UT_OUT_HEAD; its ut_head beside it) */
#define UT_OUT_HEAD 2
/* ut_dir.hstate: C follows the HTTP framing of the direction (_follow.c), reading a header
 * block where it next wants bytes, or skipping a body to there; or not (Python does) */
#define UT_H_OFF 0
#define UT_H_HEAD 1
#define UT_H_BODY 2

typedef struct {
    int32_t dir;
    int32_t len;
    double ts;
} ut_event;

typedef struct {
    int32_t state;     /* 0 no data yet, 1 matched (findings to come), 2 decided */
    int32_t allow;     /* UD_HTTP | UD_TLS: which the port's detector order lets C name */
    int32_t proto;     /* UD_HTTP or UD_TLS once matched */
    int32_t complete;  /* the match's findings are all in */
    int32_t seg[2];    /* data segments per direction (the budget's packets) */
    int32_t early_len[2];
    int32_t early_cap[2];
    uint8_t *early[2]; /* the early bytes, as the inspector keeps them */
    int64_t bytes[2];  /* payload bytes seen (FlowView.c2s_bytes / s2c_bytes) */
    double first_data;
    int64_t verdict_off[2];
    int32_t nev;
    ut_event ev[UD_EVENTS];
    /* HTTP findings: (offset, length) into early[0]; length -1 when absent */
    int32_t method[2], path[2], host[2], ua[2];
    int32_t status;    /* -1 none */
    /* TLS findings: sni and the ALPN vector body as (offset, length) into fbuf, -1 absent */
    int32_t sni[2], alpn[2];
    int32_t legacy;
    int32_t nversions;
    uint16_t versions[UD_NVERS];
    int32_t tls_version, cipher; /* from the ServerHello, -1 until then */
    char ja3[40];
    char ja4[48];
    int32_t flen;
    uint8_t fbuf[UD_FBUF];
} ut_native;

typedef struct {
    uint32_t base;       /* sequence number of stream offset 0 */
    int64_t nxt;         /* commit point; equals seen_end while attached */
    int64_t acked;       /* highest offset the peer acknowledged */
    int64_t seen_end;
    int64_t fin;         /* offset of the FIN, UT_NO_FIN if none */
    int32_t window;      /* last raw window field, -1 until seen */
    uint32_t last_ack;
    int32_t has_last_ack;
    int64_t packets;
    int64_t payload_bytes;
    int32_t ttl;
    int32_t opts_len;
    uint8_t opts[UT_OPTS];
    int64_t edge;        /* right edge the peer last advertised for this stream */
    int64_t edge_ack;    /* the ACK that edge came with */
    int64_t max_wnd;     /* the largest window the peer advertised (scaled) */
    int32_t has_edge;
    uint32_t ts_recent;  /* TS.Recent the peer holds for this side */
    int32_t has_ts_recent;
    int32_t shift;       /* window scale of the windows this side advertises */
    double ts_recent_at;
    int64_t retransmitted; /* bytes of committed data seen again (ByteStream.retransmitted) */
    /* Where the sink again wants the bytes it is handed (plugins/http_transactions.py
     * reads header blocks and skips bodies): C hashes in place only what ends before it. */
    int64_t want;
    int64_t want_run;    /* the run that last handed the sink bytes for its want */
    uint8_t *tail;       /* committed, unacknowledged bytes [nxt - tail_len, nxt) */
    int64_t tail_len;
    int64_t tail_cap;    /* the buffer's size, from tail_base */
    uint8_t *tail_base;  /* the buffer tail lies in: an ACK moves tail on, no copy */
    void *sha;           /* the sink's SHA-256 when hashing is all it does, else NULL */
    int32_t retain_drops; /* tails dropped at the retained cap since attach */
    /* One segment held out of order, the hole before it not filled yet (C's share of the
     * out-of-order store; only where the sink only hashes): ooo_len 0 when none. */
    uint8_t *ooo;
    int64_t ooo_off;
    int32_t ooo_len;
    int32_t ooo_cap;
    int64_t charged_at;  /* the frame that last charged the held piece (the Budget's order) */
    int32_t hstate;      /* UT_H_*: the HTTP framing C follows (want: where it next reads) */
} ut_dir;

typedef struct {
    uint8_t key[2][UT_KEY]; /* key[0]: client->server, key[1]: server->client */
    ut_dir d[2];
    double last_seen;
    int32_t used;
    uint32_t touched_run; /* the run that last listed it in `touched` */
    uint32_t changed_run; /* the run that last listed it in `changed` */
    int32_t syn_received; /* the handshake's last ACK not seen yet */
    int32_t bypass;       /* passed with --bypass: count, do not reassemble */
    int32_t reset;        /* an accepted RST ended it: Python takes whatever comes after */
    int32_t inspect;      /* undecided: hand back after each payload so Python decides now */
    int32_t native;       /* C inspects it (see _detect.c): nat holds the state */
    ut_native *nat;       /* from the table's pool while native */
    int32_t ts_ok;        /* timestamps in force: PAWS applies */
    /* Attached after the client's SYN: the server's SYN-ACK is the one frame C takes
     * (Tracker._take_syn), then the flow is as one attached in SYN-RECEIVED. */
    int32_t syn_sent;
    int32_t c_wscale;     /* the client's SYN: its window scale (-1 none), timestamps (0/1) */
    int32_t c_ts;
    /* What the SYN-ACK C took said, for Python's endpoint of the server (-1: no option) */
    int32_t s_mss, s_wscale, s_sack, s_ts;
    uint8_t s_mac[6];
    /* What the client's SYN said, for a flow C opened itself (ut_run, "born"): its MSS (-1
     * none), SACK-permitted (0/1) and source MAC; and whether its SHA-256 contexts are still
     * C's own (1 until ut_born_take hands them to the sinks Python made) */
    int32_t c_mss, c_sack;
    uint8_t c_mac[6];
    int32_t born_sha;
    /* Requests C read that no response answered yet (at most 63), oldest first; bit i of
     * hheads: the i-th is a HEAD request (its response has no body) */
    int32_t hpend;
    uint64_t hheads;
    /* A flow C opened that Python has made no connection for yet ("light", ut_light_config):
     * its id (Tracker.next_id as C opened it) and SYN time are kept here, C keeps it on its
     * own timeout list (lclass: the state's TimeoutClass; lprev and lnext: slots, -1 at the
     * ends; lmoved: the frame that last moved it, as Connection.moved counts), and lists it
     * in neither touched nor changed. */
    int32_t light;
    int32_t lclass;
    int32_t lprev, lnext;
    int64_t lmoved;
    int64_t id;
    double start;
    /* A light flow's header blocks C read, kept here (ut_hlog entries, hlog_len bytes of a
     * buffer of hlog_cap) rather than handed over at once, where ut_hlog_config says so */
    uint8_t *hlog;
    int32_t hlog_len, hlog_cap;
    int32_t hlog_off; /* a block did not fit: this flow's are handed over from then on */
    /* A light flow's decision, held here rather than handed over where ut_hold_config says
     * so (C wrote its findings): the protocol (UD_*, 0 none held), the verdict's offsets and
     * the findings' JSON text (dec_len bytes). pykept: a run handed Python something of the
     * flow (a decision, bytes, a header block): its end is Python's to make. */
    uint8_t *dec;
    int32_t dec_len, dec_proto;
    int64_t dec_off[2];
    int32_t pykept;
} ut_flow;

typedef struct {
    double last_seen;
    int32_t slot;
    int64_t order; /* the frame that touched it last (the tracker's count of TCP frames, as
                    * Connection.moved): Python moves it in this order */
} ut_touch;

typedef struct {
    int32_t sink;       /* flow * 2 + direction */
    uint32_t data_off;  /* payload position in the batch buffer */
    uint32_t data_len;
    uint32_t hashed;    /* C hashed it (a sink that only hashes, handing it to its reader) */
    int64_t offset;     /* stream offset */
} ut_out;

/* A header block C read (UT_OUT_HEAD): (offset, length) of each field in the batch buffer,
 * length -1 where absent; status -1 for a request; length: its Content-Length, -1 none */
typedef struct {
    int32_t method[2], path[2], proto[2], host[2], ua[2];
    int32_t status;
    int64_t length;
} ut_head;

/* A header block C read of a light flow, logged in the flow (ut_flow.hlog) instead of
 * handed over at once (ut_hlog_config: on where C writes the flow's record): Python replays
 * the log into the flow's transaction follower when it needs one (stack/fastpath.py), or C
 * writes the transactions from it when the flow ends plain (ut_transactions_record). An
 * entry is this header, then the block's `size` bytes, padded to 8; the head's offsets are
 * the block's own. */
typedef struct {
    int64_t at;   /* the block's stream offset */
    int32_t dir;
    int32_t size;
    ut_head head;
} ut_hlog;

typedef struct ut_table ut_table;

ut_table *ut_new(int64_t retain);
void ut_key_config(ut_table *t, int32_t vlans_keyed);
void ut_free(ut_table *t);
ut_flow *ut_flow_at(ut_table *t, int32_t i);
int32_t ut_attach(ut_table *t, const uint8_t *key_c, const uint8_t *key_s,
                  const uint8_t *dirs, void *sha_c, void *sha_s, double last_seen,
                  int32_t ts_ok, int32_t syn_sent, int32_t syn_received, int32_t c_wscale,
                  int32_t c_ts, int32_t bypass, int32_t inspect);
void ut_detach(ut_table *t, int32_t slot);
int ut_native_config(ut_table *t, const char *methods, int32_t methods_len,
                     int32_t max_method, int32_t packets, double seconds, int32_t bypass);
int ut_native_begin(ut_table *t, int32_t slot, int32_t allow);
void ut_native_release(ut_table *t, int32_t slot);
int ut_follow_config(ut_table *t, const char *methods, int32_t methods_len, int32_t max_method);
int ut_tail_set(ut_table *t, ut_dir *d, const uint8_t *data, int64_t n);
void ut_set_retain(ut_table *t, int64_t py_retained, int64_t cap);
int64_t ut_retained(ut_table *t);
void ut_set_buffer(ut_table *t, int64_t py_used, int64_t max_buffer, int64_t max_flow_buffer,
                   int32_t max_pieces, int64_t frame);
int64_t ut_held(ut_table *t);
void *ut_sha_new(void);
void ut_hash_wait(void);
/* The number of the last piece put so far (each one staged is queued first), and returning
 * once every piece up to such a number is hashed: the bytes of a batch may go once the
 * pieces put while it was loaded are hashed (stack/fastpath.py unload). */
uint64_t ut_hash_mark(void);
void ut_hash_wait_to(uint64_t mark);
void ut_sha_update(void *c, const uint8_t *data, size_t n);
void ut_sha_zeros(void *c, int64_t n);
int ut_sha_digest(void *c, uint8_t *out32);
void ut_sha_free(void *c);
uint32_t ut_pcap_index(const uint8_t *buf, uint64_t len, uint64_t *pos, int32_t swap,
                       int32_t nsec, uint32_t snaplen, uint32_t max, uint32_t *offsets,
                       uint32_t *lengths, double *times, int32_t *stop);
void ut_meta_times(const uint32_t *meta, uint32_t n, double *times);

/* Inline mode's ports (uinet_tap/_ports.c): frames in and out of AF_PACKET sockets. */
#define UT_RX_MAX 128        /* frames per batch */
#define UT_RX_SLOT 66048     /* a frame's room in the receive buffer: a GSO super-frame, a tag */
#define UT_RX_PARTIAL 1      /* ut_rx flags: the checksum is left to the sender's offload */
#define UT_RX_BIG 2          /* longer than the other port's MTU */
#define UT_RX_DROP 4         /* shed by ut_run (ut_set_shed): not sent on */
int32_t ut_rx(int32_t fd, uint8_t *buf, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
              double *times, uint8_t *flags, int32_t max_l3);
int32_t ut_tx(int32_t fd, const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
              const uint8_t *flags, uint32_t start, uint32_t count, int32_t mtu,
              int64_t *errors);
/* What a sender's offloads left to the wire (stack/_offload.c, twins of stack/emit.py's
 * complete_checksums and resegment; and build, the cut-in's frames). ut_complete_checksums:
 * in place; 0 where the frame was left as it came. ut_complete_partial: that for each frame
 * flagged UT_RX_PARTIAL, the flag cleared; returns how many. ut_resegment: pieces
 * [first, first + the return value) of a TCP super-frame longer than mtu at layer 3, one
 * after the other in out (lengths[i] each; as many as out and max_pieces hold), *total the
 * number of pieces in all; 0: it is not one to cut (sent as it is); -1: first is past the
 * last piece, or not one piece fits in out. */
#define UT_TX_PIECES 256     /* pieces of one super-frame ut_tx cuts (65,535 / 256 bytes) */
#define UT_TX_ROOM 131584    /* their room: UT_RX_SLOT, and 256 bytes of headers a piece */
int32_t ut_complete_checksums(uint8_t *f, uint32_t n);
uint32_t ut_complete_partial(uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                             uint8_t *flags, uint32_t count);
int32_t ut_resegment(const uint8_t *f, uint32_t n, int32_t mtu, uint32_t first, uint8_t *out,
                     uint32_t cap, uint32_t *lengths, uint32_t max_pieces, uint32_t *total);
uint32_t ut_plain_non_tcp(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                          uint32_t start, uint32_t count, int32_t max_layers, int64_t *counts);
uint32_t ut_follow_on(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                      const uint8_t *flags, uint32_t first, uint32_t count, uint32_t max_bytes,
                      uint32_t *hdr, uint32_t *last_flags);
uint32_t ut_ack_run(const uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths,
                    const uint8_t *flags, uint32_t first, uint32_t count, uint32_t *out);
uint32_t ut_build(const uint8_t *l2, uint32_t l2len, const uint8_t *src, const uint8_t *dst,
                  uint32_t alen, uint32_t sport, uint32_t dport, uint32_t ttl, uint32_t tos,
                  uint32_t flow_label, uint32_t ip_id, int32_t df, uint32_t seq, uint32_t ack,
                  uint32_t flags, uint32_t window, const uint8_t *opts, uint32_t olen,
                  const uint8_t *payload, uint32_t plen, uint8_t *out);
/* A TPACKET_V2 receive ring (ut_ring_*): frames land in memory shared with the kernel and
 * are read in place, no system call or copy per frame; a batch's frames go back to the
 * kernel at ut_ring_release(). V2, not V3: a V3 block reaches user space only when full or
 * timed out, a delay no bump in a wire may add. Frames are sized for the MTU: a longer one
 * (a GSO super-frame a veth peer hands across) arrives cut, is counted in `cut`, and the
 * port leaves the ring for recvmmsg (uinet_tap/ports.py). */
typedef struct {
    uint8_t *map;
    uint64_t size;
    uint32_t frame_size;
    uint32_t frame_nr;
    uint32_t head;     /* the next frame to look at */
    uint32_t held_at;  /* frames [held_at, held_at + held) are the last batch's, still ours */
    uint32_t held;
    uint32_t cut;      /* frames longer than a ring frame: not handed over */
} ut_ring;
int32_t ut_ring_open(int32_t fd, ut_ring *r, uint32_t frame_size, uint32_t frame_nr);
int32_t ut_ring_rx(ut_ring *r, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
                   double *times, uint8_t *flags, int32_t max_l3);
void ut_ring_release(ut_ring *r);
/* 1 when the frame `ahead` frames past the next one to read is already there: at least that
 * many frames wait in the ring. */
int32_t ut_ring_waiting(ut_ring *r, uint32_t ahead);
int32_t ut_ring_close(int32_t fd, ut_ring *r);
/* watch's capture: a TPACKET_V3 receive ring (ut_ring3_*), read in place as libpcap reads
 * it but with no copy, the frames going to the engine where they lie. The kernel packs
 * frames of any length into blocks and hands a block over when it is full or its time is
 * up (a delay a tap can take); Python gives the blocks back a batch late (the contract of
 * uinet_tap/pcapfile.py Batch: a batch's data is good until the batch after next). */
typedef struct {
    uint8_t *map;
    uint64_t size;
    uint32_t block_size;
    uint32_t block_nr;
    uint32_t cur;      /* the block being read, or to be read next */
    uint32_t opened;   /* cur is ours: `left` frames from `next` on are still to be read */
    uint32_t left;
    uint32_t next;
    uint32_t rel;      /* the first block still ours (blocks [rel, cur] are held) */
    uint32_t nheld;
    uint32_t start;    /* the block the last batch's first frame is in */
    uint32_t snaplen;  /* a frame is cut to this, its tag put back (as libpcap cuts) */
    uint32_t skip_outgoing; /* loopback: a frame is seen going out and coming in; keep one */
} ut_ring3;
int32_t ut_ring3_open(int32_t fd, ut_ring3 *r, uint32_t block_size, uint32_t block_nr,
                      uint32_t frame_size, uint32_t retire_ms, uint32_t snaplen);
/* Up to `slots` frames in place (offsets into r->map, captured lengths, the kernel's times),
 * outgoing ones too (a tap sees both ways) but on loopback (skip_outgoing), each stripped
 * VLAN tag put back. */
int32_t ut_ring3_rx(ut_ring3 *r, uint32_t slots, uint32_t *offsets, uint32_t *lengths,
                    double *times);
/* 1 when a whole block more waits past the one being read (frames pile up). */
int32_t ut_ring3_behind(const ut_ring3 *r);
/* The blocks held before block `before` go back to the kernel (never the one being read). */
void ut_ring3_release(ut_ring3 *r, uint32_t before);
void ut_ring3_close(ut_ring3 *r);
/* Flows C opens itself at the client's bare SYN ("born"), so a connection's first frame
 * costs Python nothing until after the run (stack/fastpath.py takes them then). Python says
 * how: ut_born_config (1: C makes each direction's SHA-256 context; the sinks' want and
 * hstate of a new connection), ut_born_port (per server port, -1 for all: 0 C leaves the
 * SYN to Python, else 1 + the protocols C may name there, as ut_native_begin's allow),
 * ut_set_born before each run (how many C may open in it: the tracker's caps and half-open
 * deferral say), and ut_claim (a key Python tracks itself: a SYN on it is Python's). */
int ut_born_config(ut_table *t, int32_t hash, int64_t want_c, int64_t want_s, int32_t hstate_c,
                   int32_t hstate_s);
void ut_born_port(ut_table *t, int32_t port, int32_t value);
void ut_set_born(ut_table *t, int64_t left, int64_t next_id);
/* Light flows (see ut_flow.light): on, every flow C opens is one, counted in ut_run's
 * *n_born but not listed in `born`, until ut_materialize (Python makes its connection: it
 * leaves C's lists, and C lists it in touched and changed from then on). ut_light_holders:
 * the light flows holding a piece out of order (at most cap), in the order of their lists
 * (half open, established, closing; each by lmoved): Python makes their connections when it
 * takes every held piece back (CFastPath.release_held). ut_light_head: the
 * slot of the flow at the head of timeout list `cls` (-1: none), its lmoved and last_seen.
 * ut_light_slot: the slot of a light flow with this key, else -1. ut_state_code: the
 * UT_CH_* code of the state a flow is in (as ut_run lists it in `changed`). */
int ut_light_config(ut_table *t, int32_t on);
int32_t ut_light_head(ut_table *t, int32_t cls, int64_t *moved, double *last_seen);
int64_t ut_light_count(ut_table *t, int32_t cls);
int32_t ut_light_holders(ut_table *t, int32_t *out, int32_t cap);
int32_t ut_light_slot(ut_table *t, const uint8_t *key);
void ut_materialize(ut_table *t, int32_t slot);
int32_t ut_state_code(ut_table *t, int32_t slot);
int ut_claim(ut_table *t, const uint8_t *key, int32_t on);
int64_t ut_claims_live(ut_table *t); /* keys claimed now */
int ut_born_take(ut_table *t, int32_t slot, void **sha_out);
void ut_end(ut_table *t, int32_t slot, int32_t unclaim);
/* The end of a flow whose connection needs nothing of Python's at its end but its record
 * (stack/fastpath.py detach): no piece held out of order, no retained tail dropped at the
 * cap, nothing between a direction's last byte and its end hint to take as a trailing gap
 * (unless bypassed), and no inspection C began to hand back (when `hand_back`). Then the
 * flow as it ended and each stream's SHA-256 digest so far (where C hashed it: the sink's
 * context) are copied to *out, the flow ends as ut_end(unclaim) ends it, and 1 is
 * returned; else 0, and nothing changed. unclaim 2: as 1, but the keys of a flow that ended
 * closed (reset, or both FINs) stay claimed: Python remembers them (Tracker.closed). */
typedef struct {
    ut_flow flow;
    int32_t state;       /* its UT_CH_* code (ut_state_code) */
    int32_t digested[2]; /* direction i's digest is at digest + 32 * i (0: no context, or
                          * out of memory) */
    uint8_t digest[64];
} ut_ended;
int32_t ut_end_plain(ut_table *t, int32_t slot, int32_t bypassed, int32_t hand_back,
                     int32_t unclaim, ut_ended *out);
/* Header block logs (ut_hlog): flow_cap bytes at most per flow, total_cap in all (past
 * either, a block is handed over at once, as with flow_cap 0: off). ut_hlog_clear: Python
 * replayed a flow's log (its follower is Python's now). ut_end_plain hands the flow's log
 * on in out->flow.hlog, and its held decision in out->flow.dec (ut_hold_config), good until
 * the next ut_end_plain. */
void ut_hlog_config(ut_table *t, int32_t flow_cap, int64_t total_cap);
void ut_hlog_clear(ut_table *t, int32_t slot);
int64_t ut_hlog_total(ut_table *t);
/* Decisions of light flows held in C (ut_flow.dec): on, ut_run keeps a light flow's decision
 * in the flow, its findings written as JSON text (max_string, max_items: as ut_tls_findings';
 * text past max_size bytes, or past the logs' total cap, goes to Python as before), rather
 * than list it in decided_slots; ut_held_taken: how many it kept since the last call.
 * ut_held_clear: Python took the flow's decision (its dec_* fields, read first). */
void ut_hold_config(ut_table *t, int32_t on, int64_t max_string, int64_t max_items,
                    int32_t max_size);
int64_t ut_held_taken(ut_table *t);
void ut_held_clear(ut_table *t, int32_t slot);
/* _record.c: the flow record of a flow ut_end_plain ended, as the JSON text orjson makes of
 * uinet_tap/records.py ended_record's object, less its closing brace, into out (at most cap
 * bytes; `close`: the close reason's value, plain ASCII), and each direction's stream length
 * into lengths[2]. Returns the text's length, or -1 when Python must build the record
 * (nothing to rely on in out). */
int32_t ut_ended_record(const ut_ended *e, int32_t seed, const char *close, char *out,
                        int32_t cap, int64_t *lengths);
/* _record.c: end the light flows at the head of timeout list `cls` that are idle since before
 * `limit` (their last_seen) and moved before `bound` (Connection.moved of the head of the
 * tracker's own list), each with its whole record line written into out (at most cap bytes):
 * ut_ended_record's text, what was decided (`verdict`'s name; none when `decisions` is 0,
 * no inspection), the transactions from its log, "}\n". Only a flow that needs nothing of
 * Python's: none pykept, one decision held when `decisions`, ending plain (ut_end_plain's
 * `hand_back` and `unclaim`), every part written. `close`: the close reason where the state
 * gives none (reset: "rst", both FINs: "fin"). Each line's (end offset in out, streams'
 * bytes, close: 0 the reason given, 1 rst, 2 fin; its last_seen and keys) in lines (at most
 * max_lines); counts[8]:
 * the lines; those decided HTTP, TLS; those closed by each close code; the most bytes of
 * one; the protocol (UD_*) of the first decided. Returns 0: no more to end here; 1: the head
 * (*slot) is Python's to end as before, nothing changed; 2: out or lines is full; 3: the
 * head ended plain (*slot, in *ended as ut_end_plain leaves it) but its record is Python's
 * to write. */
typedef struct {
    int64_t end;
    int64_t bytes;
    int32_t close;
    int32_t pad;
    double last_seen;        /* the flow's, and its keys: what Tracker.closed remembers */
    uint8_t keys[2][UT_KEY]; /* of one that ended closed (close 1 or 2) */
} ut_line;
int32_t ut_end_lights(ut_table *t, int32_t cls, double limit, int64_t bound, int32_t seed,
                      const char *close, int32_t decisions, const char *verdict,
                      int32_t hand_back, int32_t unclaim, char *out, int64_t cap,
                      ut_line *lines, int32_t max_lines, int64_t *counts, int32_t *slot,
                      ut_ended *ended);
/* _record.c: a flow's HTTP transactions, from its whole header block log (ut_hlog, `len`
 * bytes) and its streams' lengths, as the JSON the record's "transactions" (and
 * "transactions_dropped") fields are (plugins/http_transactions.py is the reference): the
 * text's length (0: no transaction), or -1 where Python must replay the log instead. */
int32_t ut_transactions_record(const uint8_t *log, int32_t len, int64_t c2s, int64_t s2c,
                               char *out, int32_t cap);
/* _record.c: the findings of an HTTP request C named and decided (uinet_tap/native.py
 * _findings is the reference), as the JSON text orjson makes of that dict; -1 where Python
 * makes them (not HTTP, a string longer than max_string, which Python cuts; no room). */
int32_t ut_http_findings(const ut_native *nat, int64_t max_string, char *out, int32_t cap);
/* _record.c: the findings of a TLS hello C named and decided, likewise (`_findings`), with
 * the names Python gives (ut_tls_names: kind 0 versions, 1 cipher suites; `names` holds n
 * NUL-terminated names in the codes' order; 0, or -1 past UR_NAMES names or out of memory)
 * and "0x%04x" for a code without one; -1 where Python makes them (a string or list past
 * the limits, which Python cuts; anything out of place; no room). */
int ut_tls_names(ut_table *t, int32_t kind, const uint16_t *codes, int32_t n, const char *names,
                 int32_t names_len);
int32_t ut_tls_findings(ut_table *t, const ut_native *nat, int64_t max_string, int64_t max_items,
                        char *out, int32_t cap);
/* Inline mode shedding new connections (behind its traffic, or over its rate of new ones):
 * ut_run drops a TCP frame on a key no one tracks (no flow in C, none claimed by Python),
 * flagging it UT_RX_DROP in `flags` (the batch's, which ut_tx skips) and counting it
 * (ut_shed_taken: the count since the last call). NULL: shed nothing. Nothing is shed once
 * a claim failed (out of memory: C cannot tell Python's keys any more). */
void ut_set_shed(ut_table *t, uint8_t *flags);
int64_t ut_shed_taken(ut_table *t);
/* Inline mode's tuples whose frames are dropped (a blocked flow past its RST answers, a
 * finished cut-in's tuple swallowing stragglers): ut_run flags each frame on such a key
 * UT_RX_DROP in the batch's flags (ut_set_rx_flags; NULL: none) and counts it by reason
 * (ut_dropped_taken: the counts since the last call), but a bare SYN, which is Python's,
 * and a frame at or past the key's `until`. */
#define UT_DROP_REASONS 2
int ut_drop_key(ut_table *t, const uint8_t *key, double until, int32_t reason);
void ut_set_rx_flags(ut_table *t, uint8_t *flags);
void ut_dropped_taken(ut_table *t, int64_t *out);
uint32_t ut_run(ut_table *t, const uint8_t *data, const uint32_t *offsets,
                const uint32_t *lengths, const double *times, uint32_t start,
                uint32_t count, double expiry_at, ut_out *out, ut_head *heads, uint32_t out_cap,
                uint32_t *n_out, ut_touch *touched, uint32_t *n_touched,
                int32_t *changed, uint32_t *n_changed,
                int64_t *handled, int32_t *stop_slot, int32_t *yielded,
                int32_t *decided_slots, uint32_t *n_decided, int32_t *born,
                uint32_t *n_born);

#endif /* UINET_TAP_FAST_H */
