/* uinet-tap C fast path: the common TCP segment, decided and applied without Python.
 *
 * The Python tracker owns every connection. When one is in a plain state (established, or
 * just its client's bare SYN seen; nothing buffered out of order, no hole, a policy final on
 * arrival, frames parse_frame takes: up to two VLAN tags, IPv4 or IPv6) it lends the in-order
 * numbers of both directions to this table ("attach"). ut_run() then walks a batch of frames
 * and, for each frame it can take (an ACK with or without in-order data, a retransmitted
 * copy, one segment past a hole, the SYN-ACK answering the SYN), applies exactly what
 * stack/tracker.py Tracker.segment() would, and reports the payload to deliver. It stops at
 * the first frame it cannot take, and Python handles that frame after taking the numbers
 * back ("detach"). A client's bare SYN on a tuple no one tracks opens a flow here ("born"),
 * as the tracker would open it, within the room the tracker gives each run; the tracker
 * makes its connection after the run. The two implementations are kept equal by running the
 * whole test suite through both.
 */
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_fast.h"





typedef struct {
    int32_t flow;  /* -1 empty, -2 deleted */
    int32_t dir;
} ut_entry;

/* A key Python tracks itself (ut_claim), or whose frames C drops (ut_drop_key): open
 * addressing, state 0 empty, 1 claimed, 2 deleted, 3 dropped until `until` for `reason`. */
typedef struct {
    uint8_t key[UT_KEY];
    int32_t state;
    int32_t reason;
    double until;
} ut_claimed;


struct ut_table {
    ut_entry *entries;
    uint32_t mask;       /* capacity - 1 */
    uint32_t filled;     /* used + deleted entries */
    uint32_t live;       /* used entries */
    ut_flow *flows;
    int32_t nflows;
    int32_t *free_list;
    int32_t nfree;
    int64_t retain;
    /* Bytes retained for conflict checks, here and in Python, under one cap (the tracker's
     * Budget.retain_cap): Python sets its own count before each run, reads this one after. */
    int64_t retained;
    int64_t py_retained;
    int64_t retain_cap;
    /* Held out-of-order bytes (with their piece cost) under the tracker's caps: Python's
     * total (Budget.used) set before each run, C's own (ut_held) read after it. */
    int64_t held;
    int64_t py_used;
    int64_t max_buffer;
    int64_t max_flow_buffer;
    int32_t max_pieces;
    int64_t frame;       /* frames the tracker counted before this run (TCP frames) */
    uint32_t run_id;
    ud_config cfg;       /* first-bytes detection (ut_native_config) */
    char *fmethods;      /* the HTTP transaction follower's methods (ut_follow_config) */
    int32_t fmax_method;
    ud_scratch *scratch;
    ut_native **pool;    /* inspection records not in use (a decided flow gives its back) */
    int32_t npool, pool_cap;
    /* Flows C opens itself (ut_born_config and the rest) */
    int64_t born_left;
    int32_t born_hash;
    int64_t born_want[2];
    int32_t born_hstate[2];
    uint8_t *born_port;  /* 65,536 entries once configured */
    ut_claimed *claims;
    uint32_t claim_mask; /* capacity - 1, 0 before the first claim */
    uint32_t claim_filled, claim_live;
    int32_t claims_broken; /* a claim failed: C cannot tell Python's keys any more */
    uint8_t *shed_flags;   /* inline behind its traffic: the batch's flags (ut_set_shed) */
    int64_t shed;
    uint8_t *rx_flags;     /* inline: the batch's flags (ut_set_rx_flags), for drops */
    int64_t dropped[UT_DROP_REASONS];
    int32_t vlans_ignored; /* --ignore-vlan: keys hold no tags, C takes no tagged frame */
    /* Light flows (ut_light_config): C's own timeout lists, one per TimeoutClass, oldest
     * move first; and the id the next flow C opens takes. */
    int32_t lights;
    int32_t lhead[3], ltail[3];
    int64_t lcount[3];
    int64_t next_id;
    /* Header block logs of light flows (ut_hlog_config): the caps, the bytes their buffers
     * hold, and the log of the flow ut_end_plain ended last (Python copies it at once). */
    int32_t hlog_flow_cap;
    int64_t hlog_total_cap, hlog_total;
    uint8_t *ended_hlog;
    uint8_t *ended_dec; /* and its decision held in C, likewise */
    /* Names of TLS versions and cipher suites for the findings C writes (ut_tls_names) */
    struct ur_names *tls_names[2];
    /* Light flows' decisions held in C (ut_hold_config): on, the findings' limits, where
     * they are written, and how many were held since ut_held_taken */
    int32_t hold, hold_size;
    int64_t hold_string, hold_items;
    char *hold_buf;
    int64_t held_decisions;
};


static uint32_t hash_key(const uint8_t *k) {
    uint64_t h = 0, w;
    for (int i = 0; i + 8 <= UT_KEY; i += 8) {
        memcpy(&w, k + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    }
    uint32_t last;
    memcpy(&last, k + UT_KEY - 4, 4); /* UT_KEY is not a multiple of 8: its last word */
    h = (h ^ last) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

static ut_entry *find(ut_table *t, const uint8_t *key) {
    uint32_t i = hash_key(key) & t->mask;
    for (;;) {
        ut_entry *e = &t->entries[i];
        if (e->flow == -1)
            return NULL;
        if (e->flow >= 0 && memcmp(t->flows[e->flow].key[e->dir], key, UT_KEY) == 0)
            return e;
        i = (i + 1) & t->mask;
    }
}

static void insert(ut_table *t, const uint8_t *key, int32_t flow, int32_t dir) {
    uint32_t i = hash_key(key) & t->mask;
    for (;;) {
        ut_entry *e = &t->entries[i];
        if (e->flow < 0) {
            if (e->flow == -1)
                t->filled++;
            e->flow = flow;
            e->dir = dir;
            return;
        }
        i = (i + 1) & t->mask;
    }
}

static int rehash(ut_table *t, uint32_t capacity) {
    ut_entry *old = t->entries;
    uint32_t old_cap = t->mask + 1;
    ut_entry *fresh = malloc(sizeof(ut_entry) * capacity);
    if (!fresh)
        return -1;
    for (uint32_t i = 0; i < capacity; i++)
        fresh[i].flow = -1;
    t->entries = fresh;
    t->mask = capacity - 1;
    t->filled = 0;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].flow >= 0)
            insert(t, t->flows[old[i].flow].key[old[i].dir], old[i].flow, old[i].dir);
    free(old);
    return 0;
}

ut_table *ut_new(int64_t retain) {
    ut_table *t = calloc(1, sizeof(ut_table));
    if (!t)
        return NULL;
    t->mask = 1023;
    t->entries = malloc(sizeof(ut_entry) * 1024);
    if (!t->entries) {
        free(t);
        return NULL;
    }
    for (int i = 0; i < 1024; i++)
        t->entries[i].flow = -1;
    t->retain = retain;
    t->retain_cap = INT64_MAX;
    t->max_buffer = t->max_flow_buffer = 0; /* nothing held until the tracker says its caps */
    for (int i = 0; i < 3; i++)
        t->lhead[i] = t->ltail[i] = -1;
    return t;
}

void ut_key_config(ut_table *t, int32_t vlans_keyed) { t->vlans_ignored = !vlans_keyed; }

void ut_free(ut_table *t) {
    if (!t)
        return;
    for (int32_t i = 0; i < t->nflows; i++) {
        for (int k = 0; k < 2; k++) {
            free(t->flows[i].d[k].tail_base);
            free(t->flows[i].d[k].ooo);
        }
        free(t->flows[i].hlog);
        free(t->flows[i].dec);
    }
    free(t->ended_hlog);
    free(t->ended_dec);
    free(t->hold_buf);
    free(t->tls_names[0]);
    free(t->tls_names[1]);
    for (int32_t i = 0; i < t->nflows; i++)
        if (t->flows[i].nat)
            ut_native_release(t, i);
    for (int32_t i = 0; i < t->npool; i++) {
        free(t->pool[i]->early[0]);
        free(t->pool[i]->early[1]);
        free(t->pool[i]);
    }
    for (int32_t i = 0; i < t->nflows; i++)
        if (t->flows[i].born_sha) {
            ut_sha_free(t->flows[i].d[0].sha);
            ut_sha_free(t->flows[i].d[1].sha);
        }
    free(t->pool);
    free(t->born_port);
    free(t->claims);
    free(t->cfg.methods);
    free(t->fmethods);
    free(t->scratch);
    free(t->flows);
    free(t->free_list);
    free(t->entries);
    free(t);
}

ut_flow *ut_flow_at(ut_table *t, int32_t i) { return &t->flows[i]; }

/* Take a flow in one call: its two keys, both directions' numbers (`dirs`: two images of
 * ut_dir up to its tail buffer, client's first, as stack/fastpath.py packs them), the
 * SHA-256 contexts C may hash into (NULL: hand the bytes back) and the flow's flags.
 * Returns its slot, or -1 (out of memory: the flow stays with Python). */
/* A cleared slot for a flow with these keys, in the table under both; -1: out of memory. */
static int32_t new_flow(ut_table *t, const uint8_t *key_c, const uint8_t *key_s) {
    int32_t slot;
    if ((uint64_t)(t->filled + 2) * 2 > (uint64_t)t->mask + 1) {
        /* Deleted entries count as filled: rebuild, doubling only if live entries need it. */
        uint64_t cap = (uint64_t)t->mask + 1;
        while ((uint64_t)(t->live + 2) * 2 > cap)
            cap *= 2;
        if (rehash(t, (uint32_t)cap) != 0)
            return -1;
    }
    if (t->nfree) {
        slot = t->free_list[--t->nfree];
    } else {
        if ((t->nflows & (t->nflows - 1)) == 0) { /* grow at powers of two */
            int32_t cap = t->nflows ? t->nflows * 2 : 64;
            ut_flow *f = realloc(t->flows, sizeof(ut_flow) * cap);
            int32_t *fl = realloc(t->free_list, sizeof(int32_t) * cap);
            if (!f || !fl)
                return -1;
            t->flows = f;
            t->free_list = fl;
        }
        slot = t->nflows++;
        memset(&t->flows[slot], 0, sizeof(ut_flow));
    }
    ut_flow *f = &t->flows[slot];
    uint8_t *tails[2] = {f->d[0].tail_base, f->d[1].tail_base};
    int64_t caps[2] = {f->d[0].tail_cap, f->d[1].tail_cap};
    uint8_t *ooos[2] = {f->d[0].ooo, f->d[1].ooo};
    int32_t ooo_caps[2] = {f->d[0].ooo_cap, f->d[1].ooo_cap};
    memset(f, 0, sizeof(ut_flow));
    for (int i = 0; i < 2; i++) { /* keep the buffers of a reused slot */
        f->d[i].tail = f->d[i].tail_base = tails[i];
        f->d[i].tail_cap = caps[i];
        f->d[i].ooo = ooos[i];
        f->d[i].ooo_cap = ooo_caps[i];
    }
    memcpy(f->key[0], key_c, UT_KEY);
    memcpy(f->key[1], key_s, UT_KEY);
    f->used = 1;
    insert(t, key_c, slot, 0);
    insert(t, key_s, slot, 1);
    t->live += 2;
    return slot;
}

int32_t ut_attach(ut_table *t, const uint8_t *key_c, const uint8_t *key_s,
                  const uint8_t *dirs, void *sha_c, void *sha_s, double last_seen,
                  int32_t ts_ok, int32_t syn_sent, int32_t syn_received, int32_t c_wscale,
                  int32_t c_ts, int32_t bypass, int32_t inspect) {
    int32_t slot = new_flow(t, key_c, key_s);
    if (slot < 0)
        return -1;
    ut_flow *f = &t->flows[slot];
    for (int i = 0; i < 2; i++) /* the fields before the buffers (new_flow kept those) */
        memcpy(&f->d[i], dirs + i * offsetof(ut_dir, tail), offsetof(ut_dir, tail));
    f->d[0].sha = sha_c;
    f->d[1].sha = sha_s;
    f->last_seen = last_seen;
    f->ts_ok = ts_ok;
    f->syn_sent = syn_sent;
    f->syn_received = syn_received;
    f->c_wscale = c_wscale;
    f->c_ts = c_ts;
    f->bypass = bypass;
    f->inspect = inspect;
    return slot;
}

/* ---- light flows' timeout lists -------------------------------------------------------- */

static void light_unlink(ut_table *t, ut_flow *f) {
    int32_t cls = f->lclass;
    if (f->lprev >= 0)
        t->flows[f->lprev].lnext = f->lnext;
    else
        t->lhead[cls] = f->lnext;
    if (f->lnext >= 0)
        t->flows[f->lnext].lprev = f->lprev;
    else
        t->ltail[cls] = f->lprev;
    t->lcount[cls]--;
}

/* stack/connection.py TIMEOUT_CLASS of the state the flow is in (ut_state_code's): half
 * open while the handshake is not done, closing once reset or both FINs came. */
static int32_t light_class(const ut_flow *f) {
    int fins = (f->d[0].fin != UT_NO_FIN) + (f->d[1].fin != UT_NO_FIN);
    if (f->reset || fins == 2)
        return 2;
    if (fins)
        return 1;
    return f->syn_sent || f->syn_received ? 0 : 1;
}

/* The light flow moves to the end of its state's list, as moved at frame `moved` (what
 * Tracker._place and the move in Tracker._handle do to a connection). */
static void light_link(ut_table *t, ut_flow *f, int32_t slot, int32_t cls) {
    f->lclass = cls;
    f->lprev = t->ltail[cls];
    f->lnext = -1;
    if (f->lprev >= 0)
        t->flows[f->lprev].lnext = slot;
    else
        t->lhead[cls] = slot;
    t->ltail[cls] = slot;
    t->lcount[cls]++;
}

static void light_move(ut_table *t, ut_flow *f, int32_t slot, int64_t moved) {
    int32_t cls = light_class(f);
    if (f->lclass != cls || t->ltail[cls] != slot) {
        light_unlink(t, f);
        light_link(t, f, slot, cls);
    }
    f->lmoved = moved;
}

int ut_light_config(ut_table *t, int32_t on) {
    t->lights = on;
    return 0;
}

int32_t ut_light_head(ut_table *t, int32_t cls, int64_t *moved, double *last_seen) {
    int32_t slot = t->lhead[cls];
    if (slot >= 0) {
        *moved = t->flows[slot].lmoved;
        *last_seen = t->flows[slot].last_seen;
    }
    return slot;
}

int64_t ut_light_count(ut_table *t, int32_t cls) { return t->lcount[cls]; }

int32_t ut_light_holders(ut_table *t, int32_t *out, int32_t cap) {
    int32_t n = 0;
    for (int cls = 0; cls < 3; cls++)
        for (int32_t s = t->lhead[cls]; s >= 0 && n < cap; s = t->flows[s].lnext)
            if (t->flows[s].d[0].ooo_len || t->flows[s].d[1].ooo_len)
                out[n++] = s;
    return n;
}

int32_t ut_light_slot(ut_table *t, const uint8_t *key) {
    ut_entry *e = find(t, key);
    return e && t->flows[e->flow].light ? e->flow : -1;
}

void ut_materialize(ut_table *t, int32_t slot) {
    ut_flow *f = &t->flows[slot];
    if (f->light) {
        light_unlink(t, f);
        f->light = 0;
    }
}

static int32_t state_code(const ut_flow *f) {
    /* The state Python gives it (one read there, not five of the flow's fields): reset,
     * both FINs closed, one half closed, else the handshake's last ACK awaited or not. */
    int fins = (f->d[0].fin != UT_NO_FIN) + (f->d[1].fin != UT_NO_FIN);
    int32_t st = f->reset          ? UT_CH_RESET
                 : fins == 2       ? UT_CH_CLOSED
                 : fins            ? UT_CH_HALF_CLOSED
                 : f->syn_received ? UT_CH_SYN_RECEIVED
                                   : UT_CH_ESTABLISHED;
    return st | (f->syn_sent ? UT_CH_SYN_SENT : 0);
}

int32_t ut_state_code(ut_table *t, int32_t slot) { return state_code(&t->flows[slot]); }

/* Ended by a reset or both FINs, past the handshake: Python's ConnState RESET or CLOSED. */
static int closed_end(int32_t st) {
    return !(st & UT_CH_SYN_SENT) && ((st & UT_CH_RESET) || (st & 3) == UT_CH_CLOSED);
}

void ut_detach(ut_table *t, int32_t slot) {
    ut_flow *f = &t->flows[slot];
    ut_materialize(t, slot); /* off C's timeout lists */
    for (int i = 0; i < 2; i++) {
        ut_entry *e = find(t, f->key[i]);
        if (e) {
            e->flow = -2;
            t->live--;
        }
    }
    f->used = 0;
    if (f->nat)
        ut_native_release(t, slot);
    t->retained -= f->d[0].tail_len + f->d[1].tail_len;
    f->d[0].tail_len = f->d[1].tail_len = 0;
    f->d[0].tail = f->d[0].tail_base;
    f->d[1].tail = f->d[1].tail_base;
    for (int i = 0; i < 2; i++) { /* Python took a held piece back (detach) */
        if (f->d[i].ooo_len)
            t->held -= f->d[i].ooo_len + UT_PIECE_COST;
        f->d[i].ooo_len = 0;
    }
    if (f->born_sha) { /* never bound to Python's sinks */
        ut_sha_free(f->d[0].sha);
        ut_sha_free(f->d[1].sha);
        f->born_sha = 0;
    }
    f->d[0].sha = f->d[1].sha = NULL;
    ut_hlog_clear(t, slot);
    ut_held_clear(t, slot);
    t->free_list[t->nfree++] = slot;
}

/* ---- header block logs of light flows (ut_hlog) --------------------------------------- */

void ut_hlog_config(ut_table *t, int32_t flow_cap, int64_t total_cap) {
    t->hlog_flow_cap = flow_cap;
    t->hlog_total_cap = total_cap;
}

void ut_hlog_clear(ut_table *t, int32_t slot) {
    ut_flow *f = &t->flows[slot];
    t->hlog_total -= f->hlog_cap;
    free(f->hlog);
    f->hlog = NULL;
    f->hlog_len = f->hlog_cap = 0;
}

int64_t ut_hlog_total(ut_table *t) { return t->hlog_total; }

/* ---- decisions of light flows held in C (ut_flow.dec) ----------------------------------- */

#define UT_HOLD_BUF 65536 /* where a decision's findings are written first */

void ut_hold_config(ut_table *t, int32_t on, int64_t max_string, int64_t max_items,
                    int32_t max_size) {
    if (on && !t->hold_buf && !(t->hold_buf = malloc(UT_HOLD_BUF)))
        on = 0; /* out of memory: Python takes every decision, as before */
    t->hold = on;
    t->hold_string = max_string;
    t->hold_items = max_items;
    t->hold_size = max_size;
}

int64_t ut_held_taken(ut_table *t) {
    int64_t n = t->held_decisions;
    t->held_decisions = 0;
    return n;
}

void ut_held_clear(ut_table *t, int32_t slot) {
    ut_flow *f = &t->flows[slot];
    if (!f->dec_proto)
        return;
    t->hlog_total -= f->dec_len; /* counted with the logs: text C holds for a record */
    free(f->dec);
    f->dec = NULL;
    f->dec_len = f->dec_proto = 0;
}

int32_t ut_http_findings(const ut_native *nat, int64_t max_string, char *out, int32_t cap);
int32_t ut_tls_findings(ut_table *t, const ut_native *nat, int64_t max_string, int64_t max_items,
                        char *out, int32_t cap);

/* A light flow C just decided keeps its decision (ut_hold_config): its findings written as
 * Python would take them (stack/fastpath.py _native_report), the inspection record given
 * back. 0: not held (off, not light, the text not written or past its caps): Python takes
 * it after the run, as any decision. */
static int hold_decision(ut_table *t, int32_t slot, ut_flow *fl) {
    ut_native *nat = fl->nat;
    if (!t->hold || !fl->light || !nat)
        return 0;
    int32_t n = nat->proto == UD_HTTP
                    ? ut_http_findings(nat, t->hold_string, t->hold_buf, UT_HOLD_BUF)
                    : ut_tls_findings(t, nat, t->hold_string, t->hold_items, t->hold_buf,
                                      UT_HOLD_BUF);
    if (n < 0 || n > t->hold_size || t->hlog_total + n > t->hlog_total_cap)
        return 0;
    uint8_t *dec = malloc(n ? (size_t)n : 1);
    if (!dec)
        return 0;
    memcpy(dec, t->hold_buf, (size_t)n);
    fl->dec = dec;
    fl->dec_len = n;
    fl->dec_proto = nat->proto;
    fl->dec_off[0] = nat->verdict_off[0];
    fl->dec_off[1] = nat->verdict_off[1];
    t->hlog_total += n;
    t->held_decisions++;
    ut_native_release(t, slot);
    return 1;
}

/* Log the header block C read at stream offset `at` of direction `dir` of a light flow (h:
 * its fields, offsets from the block's start). 0: not logged (not light, logs off, or no
 * room within the caps): the caller hands it over at once, and every later block of the
 * flow too (hlog_off), since Python reads the log before a block it is handed: one logged
 * after would be read before it. */
static int hlog_append(ut_table *t, ut_flow *fl, int dir, int64_t at, const uint8_t *block,
                       int32_t size, const ut_head *h) {
    if (!fl->light || t->hlog_flow_cap <= 0 || fl->hlog_off)
        return 0;
    int64_t need = ((int64_t)sizeof(ut_hlog) + size + 7) & ~(int64_t)7;
    if (fl->hlog_len + need > t->hlog_flow_cap) {
        fl->hlog_off = 1;
        return 0;
    }
    if (fl->hlog_len + need > fl->hlog_cap) {
        int64_t cap = fl->hlog_cap ? fl->hlog_cap : 1024;
        while (cap < fl->hlog_len + need)
            cap *= 2;
        uint8_t *p = t->hlog_total + cap - fl->hlog_cap > t->hlog_total_cap
                         ? NULL
                         : realloc(fl->hlog, (size_t)cap);
        if (!p) {
            fl->hlog_off = 1;
            return 0;
        }
        t->hlog_total += cap - fl->hlog_cap;
        fl->hlog = p;
        fl->hlog_cap = (int32_t)cap;
    }
    ut_hlog *e = (ut_hlog *)(fl->hlog + fl->hlog_len);
    memset(e, 0, (size_t)need); /* the padding too: the log is copied whole */
    e->at = at;
    e->dir = dir;
    e->size = size;
    e->head = *h;
    memcpy(e + 1, block, (size_t)size);
    fl->hlog_len += (int32_t)need;
    return 1;
}

/* ---- flows C opens itself ------------------------------------------------------------- */

int ut_born_config(ut_table *t, int32_t hash, int64_t want_c, int64_t want_s, int32_t hstate_c,
                   int32_t hstate_s) {
    if (!t->born_port && !(t->born_port = calloc(65536, 1)))
        return -1;
    t->born_hash = hash;
    t->born_want[0] = want_c;
    t->born_want[1] = want_s;
    t->born_hstate[0] = hstate_c;
    t->born_hstate[1] = hstate_s;
    return 0;
}

void ut_born_port(ut_table *t, int32_t port, int32_t value) {
    if (t->born_port && port < 0)
        memset(t->born_port, value, 65536); /* every port */
    else if (t->born_port && port < 65536)
        t->born_port[port] = (uint8_t)value;
}

void ut_set_born(ut_table *t, int64_t left, int64_t next_id) {
    t->born_left = left;
    t->next_id = next_id;
}

static ut_claimed *claim_find(ut_table *t, const uint8_t *key, int for_insert) {
    uint32_t i = hash_key(key) & t->claim_mask;
    ut_claimed *tomb = NULL;
    for (;;) {
        ut_claimed *c = &t->claims[i];
        if (c->state == 0)
            return for_insert ? (tomb ? tomb : c) : NULL;
        if (c->state == 2) {
            if (!tomb)
                tomb = c;
        } else if (memcmp(c->key, key, UT_KEY) == 0) {
            return c;
        }
        i = (i + 1) & t->claim_mask;
    }
}

static int claim_grow(ut_table *t) {
    uint32_t cap = t->claim_mask ? t->claim_mask + 1 : 1024;
    while ((uint64_t)(t->claim_live + 1) * 2 > cap)
        cap *= 2;
    ut_claimed *old = t->claims;
    uint32_t old_cap = t->claim_mask ? t->claim_mask + 1 : 0;
    ut_claimed *fresh = calloc(cap, sizeof(ut_claimed));
    if (!fresh)
        return -1;
    t->claims = fresh;
    t->claim_mask = cap - 1;
    t->claim_filled = t->claim_live;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].state == 1 || old[i].state == 3)
            *claim_find(t, old[i].key, 1) = old[i];
    free(old);
    return 0;
}

/* Python tracks `key` itself (on) or no longer (off). -1: out of memory (then C opens no
 * flow any more: a SYN on a key it does not know might be one of Python's). */
int ut_claim(ut_table *t, const uint8_t *key, int32_t on) {
    if (on) {
        if ((uint64_t)(t->claim_filled + 1) * 2 > (uint64_t)t->claim_mask + 1 &&
            claim_grow(t) != 0) {
            t->born_port = (free(t->born_port), NULL);
            t->claims_broken = 1;
            return -1;
        }
        ut_claimed *c = claim_find(t, key, 1);
        if (c->state == 1)
            return 0;
        if (c->state == 0)
            t->claim_filled++;
        if (c->state != 3) /* a dropped key Python tracks again: one entry still */
            t->claim_live++;
        memcpy(c->key, key, UT_KEY);
        c->state = 1;
    } else if (t->claim_mask) {
        ut_claimed *c = claim_find(t, key, 0);
        if (c && c->state == 1) { /* a dropped key stays dropped (ut_drop_key) */
            c->state = 2;
            t->claim_live--;
        }
    }
    return 0;
}

/* C drops the frames on `key` until `until` (a frame's capture time), counting them under
 * `reason`, but for a bare SYN (a new connection may take the tuple: Python's to judge);
 * until < 0: no longer. -1: out of memory (nothing is dropped then that was not before). */
int ut_drop_key(ut_table *t, const uint8_t *key, double until, int32_t reason) {
    if (reason < 0 || reason >= UT_DROP_REASONS)
        return -1;
    if (until < 0) {
        ut_claimed *c = t->claim_mask ? claim_find(t, key, 0) : NULL;
        if (c && c->state == 3) {
            c->state = 2;
            t->claim_live--;
        }
        return 0;
    }
    if ((uint64_t)(t->claim_filled + 1) * 2 > (uint64_t)t->claim_mask + 1 && claim_grow(t) != 0)
        return -1;
    ut_claimed *c = claim_find(t, key, 1);
    if (c->state == 0)
        t->claim_filled++;
    if (c->state != 1 && c->state != 3)
        t->claim_live++;
    memcpy(c->key, key, UT_KEY);
    c->state = 3;
    c->reason = reason;
    c->until = until;
    return 0;
}

void ut_set_rx_flags(ut_table *t, uint8_t *flags) { t->rx_flags = flags; }

void ut_dropped_taken(ut_table *t, int64_t *out) {
    for (int k = 0; k < UT_DROP_REASONS; k++) {
        out[k] = t->dropped[k];
        t->dropped[k] = 0;
    }
}

void ut_set_shed(ut_table *t, uint8_t *flags) { t->shed_flags = flags; }

int64_t ut_shed_taken(ut_table *t) {
    int64_t n = t->shed;
    t->shed = 0;
    return n;
}

int64_t ut_claims_live(ut_table *t) { return t->claim_live; }

static int claimed(ut_table *t, const uint8_t *key) {
    return t->claim_mask && claim_find(t, key, 0) != NULL;
}

/* The frame at `i` is on a key whose frames C drops (ut_drop_key) and is not a bare SYN, and
 * its time is not up: flagged, counted. */
static int dropped_here(ut_table *t, const uint8_t *key, uint32_t i, double time, int syn) {
    if (!t->rx_flags || !t->claim_mask || syn)
        return 0;
    ut_claimed *c = claim_find(t, key, 0);
    if (!c || c->state != 3 || time >= c->until)
        return 0;
    t->rx_flags[i] |= UT_RX_DROP;
    t->dropped[c->reason]++;
    return 1;
}

/* Python makes the born flow's connection: its sinks take C's own SHA-256 contexts, with
 * what C hashed (or queued) into them so far, and free them from here on (C keeps updating
 * them until detach). -1: they are not C's to give (nothing is handed over). */
int ut_born_take(ut_table *t, int32_t slot, void **sha_out) {
    ut_flow *f = &t->flows[slot];
    if (!f->born_sha)
        return -1;
    sha_out[0] = f->d[0].sha;
    sha_out[1] = f->d[1].sha;
    f->born_sha = 0;
    return 0;
}

/* The connection ended (Tracker._finish): its keys are no longer Python's (ut_claim), when
 * `unclaim`, and its flow leaves the table. */
void ut_end(ut_table *t, int32_t slot, int32_t unclaim) {
    ut_flow *f = &t->flows[slot];
    if (unclaim) {
        ut_claim(t, f->key[0], 0);
        ut_claim(t, f->key[1], 0);
    }
    ut_detach(t, slot);
}

/* stack/connection.py end_hint: where a direction's stream ends (past its last byte, what
 * the peer acknowledged; an ACK one past it acknowledges a FIN the capture missed). */
static int64_t end_hint(const ut_dir *d) {
    if (d->fin != UT_NO_FIN) {
        int64_t acked = d->acked < d->fin ? d->acked : d->fin;
        return d->seen_end > acked ? d->seen_end : acked;
    }
    if (d->acked == d->seen_end + 1)
        return d->seen_end;
    return d->seen_end > d->acked ? d->seen_end : d->acked;
}

static int sha_last_digest(ut_sha *s, uint8_t *out32);

int32_t ut_end_plain(ut_table *t, int32_t slot, int32_t bypassed, int32_t hand_back,
                     int32_t unclaim, ut_ended *out) {
    ut_flow *f = &t->flows[slot];
    int32_t ndirs = f->syn_sent ? 1 : 2;
    if (hand_back && f->native && f->nat && f->nat->state == 1) /* begun, undecided */
        return 0;
    for (int i = 0; i < ndirs; i++) {
        const ut_dir *d = &f->d[i];
        if (d->retain_drops || d->ooo_len || (!bypassed && end_hint(d) > d->nxt))
            return 0;
    }
    out->flow = *f;
    out->state = state_code(f);
    /* its header block log, kept for Python to copy (ut_detach frees the flow's) */
    free(t->ended_hlog);
    t->ended_hlog = f->hlog;
    t->hlog_total -= f->hlog_cap;
    f->hlog = NULL;
    f->hlog_len = f->hlog_cap = 0;
    /* and its decision held in C (ut_hold_config), likewise */
    free(t->ended_dec);
    t->ended_dec = f->dec;
    t->hlog_total -= f->dec_len;
    f->dec = NULL;
    f->dec_len = f->dec_proto = 0;
    for (int i = 0; i < 2; i++) { /* C's own contexts are freed at ut_end: no copy */
        ut_sha *sha = f->d[i].sha;
        uint8_t *digest = out->digest + 32 * i;
        out->digested[i] = sha && (f->born_sha ? sha_last_digest(sha, digest)
                                               : ut_sha_digest(sha, digest)) == 0;
    }
    /* 2: the keys stay Python's if it ended closed (Tracker.closed remembers them) */
    ut_end(t, slot, unclaim == 2 ? !closed_end(out->state) : unclaim);
    return 1;
}


/* First-bytes detection settings: http.METHODS (NUL-separated), the budget, and whether a
 * default verdict passes the connection to counting only (--bypass with default = pass). */
int ut_native_config(ut_table *t, const char *methods, int32_t methods_len, int32_t max_method,
                     int32_t packets, double seconds, int32_t bypass) {
    char *m = malloc((size_t)methods_len + 2);
    if (!m)
        return -1;
    memcpy(m, methods, (size_t)methods_len);
    m[methods_len] = m[methods_len + 1] = 0;
    free(t->cfg.methods);
    t->cfg.methods = m;
    t->cfg.max_method = max_method;
    t->cfg.packets = packets;
    t->cfg.seconds = seconds;
    t->cfg.bypass = bypass;
    if (!t->scratch && !(t->scratch = malloc(sizeof(ud_scratch))))
        return -1;
    return 0;
}

/* Let C inspect an attached connection that has had no data yet. `allow`: UD_HTTP | UD_TLS,
 * the protocols the port's detector order lets C name. */
int ut_native_begin(ut_table *t, int32_t slot, int32_t allow) {
    ut_flow *f = &t->flows[slot];
    if (!t->scratch || !t->cfg.methods)
        return -1;
    ut_native *nat = t->npool ? t->pool[--t->npool] : calloc(1, sizeof(ut_native));
    if (!nat)
        return -1;
    uint8_t *early[2] = {nat->early[0], nat->early[1]};
    int32_t caps[2] = {nat->early_cap[0], nat->early_cap[1]};
    memset(nat, 0, offsetof(ut_native, fbuf));
    for (int i = 0; i < 2; i++) {
        nat->early[i] = early[i];
        nat->early_cap[i] = caps[i];
    }
    nat->allow = allow;
    f->nat = nat;
    f->native = 1;
    return 0;
}

/* The connection's inspection ended (decided, and Python took the findings; or it left the
 * table): its record goes back to the pool, keeping small early-byte buffers for reuse. */
/* The methods a request line of the HTTP transaction follower may start with (http.METHODS,
 * NUL-separated): C reads header blocks for it (_follow.c) from now on. */
int ut_follow_config(ut_table *t, const char *methods, int32_t methods_len, int32_t max_method) {
    char *m = malloc((size_t)methods_len + 2);
    if (!m)
        return -1;
    memcpy(m, methods, (size_t)methods_len);
    m[methods_len] = m[methods_len + 1] = 0;
    free(t->fmethods);
    t->fmethods = m;
    t->fmax_method = max_method;
    return 0;
}

void ut_native_release(ut_table *t, int32_t slot) {
    ut_flow *f = &t->flows[slot];
    ut_native *nat = f->nat;
    f->nat = NULL;
    f->native = 0;
    if (!nat)
        return;
    for (int i = 0; i < 2; i++) {
        if (nat->early_cap[i] > 2048) { /* a budget's worth: give it back */
            free(nat->early[i]);
            nat->early[i] = NULL;
            nat->early_cap[i] = 0;
        }
    }
    if (t->npool == t->pool_cap) {
        int32_t cap = t->pool_cap ? t->pool_cap * 2 : 64;
        ut_native **p = realloc(t->pool, sizeof(ut_native *) * (size_t)cap);
        if (!p) {
            free(nat->early[0]);
            free(nat->early[1]);
            free(nat);
            return;
        }
        t->pool = p;
        t->pool_cap = cap;
    }
    t->pool[t->npool++] = nat;
}

/* Room for `need` tail bytes from where the tail starts. The bytes ACKs dropped before it
 * are reclaimed (the tail moved to the buffer's start) once they are at least half as many
 * as it holds, so each byte is moved at most twice over its life, not at every ACK; else
 * the buffer grows by doubling. */
static int tail_reserve(ut_dir *d, int64_t need) {
    int64_t head = d->tail - d->tail_base;
    if (head + need <= d->tail_cap)
        return 0;
    if (head && 2 * head >= d->tail_len) {
        memmove(d->tail_base, d->tail, (size_t)d->tail_len);
        d->tail = d->tail_base;
        head = 0;
        if (need <= d->tail_cap)
            return 0;
    }
    int64_t cap = d->tail_cap ? d->tail_cap : 4096;
    while (cap < head + need)
        cap *= 2;
    uint8_t *p = realloc(d->tail_base, cap);
    if (!p)
        return -1;
    d->tail_base = p;
    d->tail = p + head;
    d->tail_cap = cap;
    return 0;
}

/* Set a direction's tail (attach hands over Python's). */
int ut_tail_set(ut_table *t, ut_dir *d, const uint8_t *data, int64_t n) {
    if (!d->tail_len)
        d->tail = d->tail_base;
    if (tail_reserve(d, n) != 0)
        return -1;
    memcpy(d->tail, data, n);
    t->retained += n - d->tail_len;
    d->tail_len = n;
    return 0;
}

void ut_set_retain(ut_table *t, int64_t py_retained, int64_t cap) {
    t->py_retained = py_retained;
    t->retain_cap = cap;
}

int64_t ut_retained(ut_table *t) { return t->retained; }

void ut_set_buffer(ut_table *t, int64_t py_used, int64_t max_buffer, int64_t max_flow_buffer,
                   int32_t max_pieces, int64_t frame) {
    t->py_used = py_used;
    t->max_buffer = max_buffer;
    t->max_flow_buffer = max_flow_buffer;
    t->max_pieces = max_pieces;
    t->frame = frame;
}

int64_t ut_held(ut_table *t) { return t->held; }

/* Room to hold `n` bytes out of order, if the caps allow what ByteStream._charge and the
 * tracker's global cap would (where a cap would bite, Python takes the segment): the buffer
 * is reserved here, before the frame is committed to. */
static int ooo_room(ut_table *t, ut_dir *d, uint32_t n) {
    int64_t cost = (int64_t)n + UT_PIECE_COST;
    if (cost > t->max_flow_buffer || t->max_pieces < 1 ||
        t->py_used + t->held + cost > t->max_buffer)
        return -1;
    if ((int64_t)n > d->ooo_cap) {
        int32_t cap = d->ooo_cap ? d->ooo_cap : 2048;
        while (cap < (int32_t)n)
            cap *= 2;
        uint8_t *p = realloc(d->ooo, (size_t)cap);
        if (!p)
            return -1;
        d->ooo = p;
        d->ooo_cap = cap;
    }
    return 0;
}

static int tail_append(ut_table *t, ut_dir *d, const uint8_t *data, int64_t n) {
    /* Python: _commit(): keep only what is not acknowledged, at most `retain` bytes. */
    int64_t start = d->nxt - n; /* offset of data[0]; nxt already advanced */
    if (!t->retain || d->acked >= d->nxt)
        return 0;
    if (d->tail_len == 0 && d->acked > start) {
        data += d->acked - start;
        n -= d->acked - start;
    }
    if (t->py_retained + t->retained + n > t->retain_cap) {
        /* ByteStream._commit: over the global cap this stream stops checking its
         * unacknowledged bytes for conflicts (counted as the "retain" limit). */
        t->retained -= d->tail_len;
        d->tail_len = 0;
        d->tail = d->tail_base;
        d->retain_drops++;
        return 0;
    }
    int64_t before = d->tail_len;
    int64_t need = d->tail_len + n;
    if (need > t->retain) {
        int64_t drop = need - t->retain;
        if (drop >= d->tail_len) {
            data += drop - d->tail_len;
            n -= drop - d->tail_len;
            d->tail_len = 0;
        } else {
            d->tail += drop;
            d->tail_len -= drop;
        }
        need = d->tail_len + n;
    }
    if (tail_reserve(d, need) != 0)
        return -1;
    memcpy(d->tail + d->tail_len, data, n);
    d->tail_len = need;
    t->retained += need - before;
    return 0;
}

static void on_ack(ut_table *t, ut_dir *d, int64_t off) {
    /* Python: ByteStream.ack() for an ACK at or below the commit point. */
    d->acked = off;
    if (d->tail_len) {
        int64_t drop = off - (d->nxt - d->tail_len);
        if (drop > 0) {
            t->retained -= drop < d->tail_len ? drop : d->tail_len;
            if (drop >= d->tail_len) {
                d->tail_len = 0;
                d->tail = d->tail_base;
                if (d->tail_cap > 16384) { /* a bulk window's worth: give it back */
                    free(d->tail_base);
                    d->tail = d->tail_base = NULL;
                    d->tail_cap = 0;
                }
            } else {
                d->tail += drop;
                d->tail_len -= drop;
            }
        }
    }
}

static int by_order(const void *a, const void *b) {
    int64_t x = ((const ut_touch *)a)->order, y = ((const ut_touch *)b)->order;
    return (x > y) - (x < y);
}

static inline int64_t unwrap(uint32_t seq, uint32_t base, int64_t nxt) {
    uint32_t ref = (uint32_t)(base + (uint32_t)nxt);
    return nxt + (int64_t)(int32_t)(seq - ref);
}

static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* A segment's options as stack/options.py parse_options() reads them: the last of each
 * kind wins (as Linux's tcp_parse_options), and a malformed list stops the walk, keeping
 * what came before it; returns -1 then. Bounded by the options' length. */
typedef struct {
    int32_t mss, wscale, sack, ts;
    uint32_t tsval;
} ut_synopts;

static int read_options(const uint8_t *o, uint32_t len, ut_synopts *r) {
    uint32_t i = 0;
    r->mss = r->wscale = -1;
    r->sack = r->ts = 0;
    r->tsval = 0;
    while (i < len) {
        uint8_t kind = o[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= len || o[i + 1] < 2 || i + o[i + 1] > len)
            return -1;
        uint8_t n = o[i + 1];
        if (kind == 2 && n == 4)
            r->mss = ((int32_t)o[i + 2] << 8) | o[i + 3];
        else if (kind == 3 && n == 3)
            r->wscale = o[i + 2] > 14 ? 14 : o[i + 2]; /* RFC 7323 2.3 */
        else if (kind == 4 && n == 2)
            r->sack = 1;
        else if (kind == 8 && n == 10) {
            r->ts = 1;
            r->tsval = be32(o + i + 2);
        }
        i += n;
    }
    return 0;
}

/* TSval of a segment's options (stack/options.py timestamp()): 1 and *tsval set when a
 * timestamp option is there. */
static int tsval_of(const uint8_t *o, uint32_t len, uint32_t *tsval) {
    ut_synopts r;
    read_options(o, len, &r);
    *tsval = r.tsval;
    return r.ts;
}

/* Frame i (the tracker's TCP frame `moved`) is taken on flow `slot`: its time, and its place
 * in the run's `touched` list, or for a light flow, on C's timeout list. */
static inline void touch(ut_table *t, ut_flow *fl, int32_t slot, int64_t moved, double ts,
                         uint32_t run, ut_touch *touched, uint32_t *nt) {
    fl->last_seen = ts;
    if (fl->light) {
        light_move(t, fl, slot, moved);
        return;
    }
    fl->lmoved = moved;
    if (fl->touched_run != run) {
        fl->touched_run = run;
        touched[(*nt)++].slot = slot;
    }
}

/* Frame i moved flow `slot` on (its handshake or a FIN): listed in `changed` once a run,
 * since Python gives it the state it is in after the run. */
/* Whether the run's lists are too full to take a frame of this flow: a touched entry (unless
 * the run lists it already) and a changed one. */
static inline int no_room(const ut_flow *fl, uint32_t run, uint32_t nt, uint32_t nc,
                          uint32_t cap) {
    return (fl->touched_run != run && nt == cap) || nc + 2 > cap;
}

static inline void mark_changed(ut_table *t, ut_flow *fl, int32_t slot, uint32_t run,
                                int32_t *changed, uint32_t *nc) {
    if (fl->light) { /* to its new state's list, if it changed (touch moved it this frame) */
        if (light_class(fl) != fl->lclass)
            light_move(t, fl, slot, fl->lmoved);
        return;
    }
    if (fl->changed_run != run) {
        fl->changed_run = run;
        changed[2 * (*nc)++] = slot;
    }
}

/* A frame as ut_run takes it: the flow key of its direction, where its TCP header starts
 * and how long the TCP segment is by the IP header, its TTL or hop limit. */
typedef struct {
    uint8_t key[UT_KEY];
    const uint8_t *tcp;
    uint32_t tcp_len;
    uint32_t alen; /* address length: 4 or 16 */
    uint8_t ttl;
} ut_frame;

static inline int vlan_tpid(uint32_t type) { /* stack/encap.py VLAN_TPIDS */
    return type == 0x8100 || type == 0x88A8 || type == 0x9100 || type == 0x9200;
}

/* What stack/decode.py makes of an Ethernet frame carrying TCP, where the frame is plain: at
 * most UT_KEY_TAGS VLAN tags (none when --ignore-vlan: then the tags are not in the key),
 * IPv4 without options or fragments, or IPv6 with TCP as the next header and a length;
 * the whole IP datagram captured; a TCP header whose length fits. 0: Python decodes it
 * (every other shape, and anything malformed, is counted there). The key is built as
 * Tracker._key builds it: tag count and IDs, source, destination, ports. */
static int parse_frame(const ut_table *t, const uint8_t *f, uint32_t len, ut_frame *p) {
    uint32_t off = 12, ntags = 0;
    uint16_t tags[UT_KEY_TAGS];
    if (len < 54)
        return 0;
    uint32_t type = ((uint32_t)f[12] << 8) | f[13];
    while (vlan_tpid(type)) {
        if (ntags == UT_KEY_TAGS || t->vlans_ignored || len < off + 6)
            return 0;
        tags[ntags++] = (uint16_t)((((uint32_t)f[off + 2] << 8) | f[off + 3]) & 0x0FFF);
        type = ((uint32_t)f[off + 4] << 8) | f[off + 5];
        off += 4;
    }
    off += 2;
    const uint8_t *ip = f + off;
    const uint8_t *src;
    if (type == 0x0800) {
        if (len < off + 40 || ip[0] != 0x45 || ip[9] != 6 ||
            ((((uint32_t)ip[6] << 8) | ip[7]) & 0x3FFF))
            return 0;
        uint32_t total = ((uint32_t)ip[2] << 8) | ip[3];
        if (total < 40 || off + total > len)
            return 0;
        p->tcp_len = total - 20;
        p->ttl = ip[8];
        p->alen = 4;
        src = ip + 12;
    } else if (type == 0x86DD) {
        if (len < off + 60 || (ip[0] >> 4) != 6 || ip[6] != 6)
            return 0;
        uint32_t plen = ((uint32_t)ip[4] << 8) | ip[5];
        if (plen < 20 || off + 40 + plen > len)
            return 0; /* a jumbogram or TSO frame's zero, a short or cut datagram */
        p->tcp_len = plen;
        p->ttl = ip[7];
        p->alen = 16;
        src = ip + 8;
    } else {
        return 0;
    }
    p->tcp = src + 2 * p->alen;
    uint8_t *k = p->key;
    uint32_t at = 1;
    memset(k, 0, UT_KEY);
    if (ntags) {
        k[at++] = (uint8_t)ntags;
        for (uint32_t i = 0; i < ntags; i++) {
            k[at++] = (uint8_t)(tags[i] >> 8);
            k[at++] = (uint8_t)tags[i];
        }
    }
    memcpy(k + at, src, 2 * p->alen + 4); /* source, destination, then the TCP ports */
    k[0] = (uint8_t)(at - 1 + 2 * p->alen + 4);
    return 1;
}

/* The key of the other direction: the same tags, addresses and ports swapped. */
static void reverse_key(const uint8_t *k, uint32_t alen, uint8_t *r) {
    uint32_t at = 1 + k[0] - (2 * alen + 4); /* past the length and the tags */
    memcpy(r, k, UT_KEY);
    memcpy(r + at, k + at + alen, alen);
    memcpy(r + at + alen, k + at, alen);
    memcpy(r + at + 2 * alen, k + at + 2 * alen + 2, 2);
    memcpy(r + at + 2 * alen + 2, k + at + 2 * alen, 2);
}

/* The client's bare SYN on a key no one tracks: the flow Tracker._new_connection and
 * _take_syn would make of it, attached in SYN-SENT as ut_attach would take it (the
 * server's side untouched, windows of unknown scale). -1: left to Python. */
static int32_t born(ut_table *t, const uint8_t *f, const ut_frame *p, uint32_t hl,
                    double ts) {
    ut_synopts o;
    uint8_t key_s[UT_KEY];
    const uint8_t *tcp = p->tcp;
    uint32_t dport = ((uint32_t)tcp[2] << 8) | tcp[3];
    if (t->born_left <= 0 || !t->born_port || !t->born_port[dport] || claimed(t, p->key) ||
        read_options(tcp + 20, hl - 20, &o) != 0)
        return -1;
    reverse_key(p->key, p->alen, key_s);
    int32_t slot = new_flow(t, p->key, key_s);
    if (slot < 0)
        return -1;
    if (ut_claim(t, p->key, 1) || ut_claim(t, key_s, 1)) { /* Python's from the next run */
        ut_detach(t, slot);
        return -1;
    }
    ut_flow *fl = &t->flows[slot];
    for (int i = 0; i < 2; i++) {
        ut_dir *d = &fl->d[i];
        d->fin = UT_NO_FIN;
        d->window = -1;
        d->shift = 14; /* fastpath.UNKNOWN_SHIFT: no handshake seen yet */
        d->want = t->born_want[i];
        d->hstate = t->born_hstate[i];
        if (t->born_hash && !(d->sha = ut_sha_new())) {
            fl->born_sha = 1;
            ut_detach(t, slot);
            return -1;
        }
    }
    fl->born_sha = t->born_hash;
    ut_dir *c = &fl->d[0];
    c->base = be32(tcp + 4) + 1;
    c->window = ((int32_t)tcp[14] << 8) | tcp[15];
    c->packets = 1;
    c->ttl = p->ttl;
    c->opts_len = (int32_t)(hl - 20);
    memcpy(c->opts, tcp + 20, hl - 20);
    c->ts_recent = o.tsval;
    c->has_ts_recent = o.ts;
    c->ts_recent_at = ts;
    fl->last_seen = ts;
    fl->syn_sent = 1;
    fl->c_wscale = o.wscale;
    fl->c_ts = o.ts;
    fl->c_mss = o.mss;
    fl->c_sack = o.sack;
    memcpy(fl->c_mac, f + 6, 6);
    int32_t allow = t->born_port[dport] - 1;
    if (allow && ut_native_begin(t, slot, allow) != 0) {
        ut_detach(t, slot);
        return -1;
    }
    fl->id = t->next_id++;
    fl->start = ts;
    if (t->lights) { /* no connection in Python: on C's half-open list (touch moves it) */
        fl->light = 1;
        light_link(t, fl, slot, 0);
    }
    t->born_left--;
    return slot;
}

#define UT_MIN_WINDOW 65535
#define UT_PAWS_IDLE (24 * 86400.0)

/* Walk frames [start, count) of a batch. Returns the index of the first frame not handled
 * (count when all were). *n_out payload deliveries are written to out (at most out_cap);
 * the run also stops before a frame at or after `expiry_at` (Python runs timeouts then).
 * *stop_slot is the attached flow of the frame it stopped at, or -1. The flows it handled
 * frames of are listed in `touched` (at most out_cap), in the order of each one's last frame,
 * so Python can keep its timeout lists in the order its own paths move them in. Flows whose
 * state the handshake, a FIN or a RST changed are listed in `changed`, each once, with the
 * state it is in after the run (UT_CH_*; at most out_cap pairs). */
uint32_t ut_run(ut_table *t, const uint8_t *data, const uint32_t *offsets,
                const uint32_t *lengths, const double *times, uint32_t start, uint32_t count,
                double expiry_at, ut_out *out, ut_head *heads, uint32_t out_cap, uint32_t *n_out,
                ut_touch *touched, uint32_t *n_touched, int32_t *changed,
                uint32_t *n_changed, int64_t *handled, int32_t *stop_slot, int32_t *yielded,
                int32_t *decided_slots, uint32_t *n_decided, int32_t *born_slots,
                uint32_t *n_born) {
    uint32_t i;
    uint32_t no = 0, nt = 0, nc = 0, nd = 0, nb = 0;
    int64_t done = 0;
    uint32_t run = ++t->run_id;
    if (run == 0)
        run = t->run_id = 1;
    *stop_slot = -1;
    *yielded = 0;
    for (i = start; i < count; i++) {
        const uint8_t *f = data + offsets[i];
        ut_frame p;
        if (!parse_frame(t, f, lengths[i], &p))
            break;
        const uint8_t *tcp = p.tcp;
        const uint8_t *key = p.key;
        uint32_t hl = (uint32_t)(tcp[12] >> 4) * 4;
        uint8_t flags = tcp[13];
        int synack = flags == 0x12;
        int syn = (flags & 0x3F) == 0x02; /* a bare SYN, ECN's ECE and CWR allowed */
        int rst = flags == 0x14;
        if (hl < 20 || hl > p.tcp_len ||
            (!synack && !syn && !rst && ((flags & ~0x19) || !(flags & 0x10))))
            break; /* only ACK, with PSH or FIN or neither, a bare SYN-ACK, a bare SYN, RST-ACK */
        if (times[i] >= expiry_at)
            break;
        ut_entry *e = find(t, key);
        if (!e && dropped_here(t, key, i, times[i], syn && p.tcp_len == hl))
            continue; /* a blocked or finished flow's: nothing goes on */
        if (syn) {
            /* A SYN without data on a key no one tracks opens a flow here; any other SYN
             * (retransmitted, reusing a tuple, carrying data) is Python's. */
            int32_t slot;
            if (!e && t->shed_flags && !t->claims_broken && !claimed(t, key)) {
                t->shed_flags[i] |= UT_RX_DROP; /* shed: a new connection waits */
                t->shed++;
                continue;
            }
            if (e || p.tcp_len != hl || nb == out_cap || nt == out_cap ||
                (slot = born(t, f, &p, hl, times[i])) < 0)
                break;
            if (!t->flows[slot].light) {
                born_slots[2 * nb] = slot;
                born_slots[2 * nb + 1] = (int32_t)i;
            }
            nb++;
            done++;
            touch(t, &t->flows[slot], slot, t->frame + done, times[i], run, touched, &nt);
            continue;
        }
        if (!e) {
            if (t->shed_flags && !t->claims_broken && !claimed(t, key)) {
                t->shed_flags[i] |= UT_RX_DROP; /* shed: a tuple no one tracks */
                t->shed++;
                continue;
            }
            break;
        }
        ut_flow *fl = &t->flows[e->flow];
        ut_dir *ep = &fl->d[e->dir];
        ut_dir *peer = &fl->d[1 - e->dir];
        uint32_t seq = be32(tcp + 4);
        uint32_t ack = be32(tcp + 8);
        uint32_t n = p.tcp_len - hl;
        int closed = ep->fin != UT_NO_FIN && peer->fin != UT_NO_FIN; /* both FINs seen */
        if (fl->syn_sent || synack) {
            /* Tracker._on_syn/_take_syn/_on_ack for the server's first SYN-ACK, when it
             * acknowledges the client's SYN exactly and carries no data: anything else on a
             * flow waiting for it (or a SYN-ACK on any other) is Python's. */
            ut_synopts o;
            ut_dir *c = &fl->d[0];
            if (!fl->syn_sent || !synack || e->dir != 1 || n || ack != c->base ||
                read_options(tcp + 20, hl - 20, &o) != 0) {
                *stop_slot = e->flow;
                break;
            }
            if (no_room(fl, run, nt, nc, out_cap))
                break;
            done++;
            touch(t, fl, e->flow, t->frame + done, times[i], run, touched, &nt);
            int wscale_ok = fl->c_wscale >= 0 && o.wscale >= 0;
            fl->ts_ok = fl->c_ts && o.ts;
            ep->base = seq + 1;
            ep->packets++;
            ep->ttl = p.ttl;
            ep->last_ack = ack;
            ep->has_last_ack = 1;
            ep->opts_len = (int32_t)(hl - 20);
            memcpy(ep->opts, tcp + 20, hl - 20);
            ep->ts_recent = o.tsval;
            ep->has_ts_recent = o.ts;
            ep->ts_recent_at = times[i];
            ep->window = ((int32_t)tcp[14] << 8) | tcp[15];
            ep->shift = wscale_ok ? o.wscale : 0;
            c->shift = wscale_ok ? fl->c_wscale : 0;
            /* Tracker._advertise for a SYN: its window is never scaled (RFC 7323 2.2) */
            if (!c->has_edge || c->edge_ack <= 0) {
                c->edge = ep->window;
                c->edge_ack = 0;
                c->has_edge = 1;
            }
            if (ep->window > c->max_wnd)
                c->max_wnd = ep->window;
            fl->s_mss = o.mss;
            fl->s_wscale = o.wscale;
            fl->s_sack = o.sack;
            fl->s_ts = o.ts;
            memcpy(fl->s_mac, f + 6, 6);
            fl->syn_sent = 0;
            fl->syn_received = 1;
            /* Python sets what the SYN-ACK told, and its state */
            mark_changed(t, fl, e->flow, run, changed, &nc);
            continue;
        }
        if (fl->bypass) { /* bypassed: only counters move (Tracker._counted_only) */
            if (rst && n) {
                *stop_slot = e->flow; /* a RST with data: Python */
                break;
            }
            if (no_room(fl, run, nt, nc, out_cap))
                break;
            done++;
            touch(t, fl, e->flow, t->frame + done, times[i], run, touched, &nt);
            ep->packets++;
            ep->ttl = p.ttl;
            ep->payload_bytes += n;
            ep->last_ack = ack;
            ep->has_last_ack = 1;
            ep->window = ((int32_t)tcp[14] << 8) | tcp[15];
            if (n && !(flags & 0x02)) { /* the stream's end by sequence numbers (its length) */
                int64_t end = unwrap(seq, ep->base, ep->seen_end) + n;
                if (end > ep->seen_end && end - ep->seen_end <= UT_MAX_SEQ_JUMP)
                    ep->seen_end = end;
            }
            if ((flags & 0x01) && !closed) {
                if (ep->fin == UT_NO_FIN)
                    ep->fin = ep->seen_end; /* no stream: where reassembly stopped */
                mark_changed(t, fl, e->flow, run, changed, &nc);
            }
            if (rst && !fl->reset && !closed) {
                fl->reset = 1; /* without the stream no RST can be checked: any one ends it */
                mark_changed(t, fl, e->flow, run, changed, &nc);
            }
            continue;
        }
        if (fl->reset) {
            *stop_slot = e->flow; /* both applications are gone: Python counts what comes */
            break;
        }
        if (rst) {
            /* Tracker._on_rst: one at exactly RCV.NXT or SND.NXT resets the connection (RFC
             * 5961 3.2, RFC 9293 3.10.7.4); one elsewhere, after both FINs or with data is
             * an anomaly Python counts. Its ACK, window and timestamp count for nothing. */
            int64_t sent = ep->fin != UT_NO_FIN ? ep->fin + 1
                           : ep->seen_end > ep->acked ? ep->seen_end : ep->acked;
            uint32_t snd_nxt = ep->base + (uint32_t)sent;
            uint32_t rcv_nxt = peer->has_last_ack ? peer->last_ack : snd_nxt;
            if (n || closed || (seq != rcv_nxt && seq != snd_nxt)) {
                *stop_slot = e->flow;
                break;
            }
            if (no_room(fl, run, nt, nc, out_cap))
                break;
            done++;
            touch(t, fl, e->flow, t->frame + done, times[i], run, touched, &nt);
            ep->packets++;
            ep->ttl = p.ttl;
            fl->reset = 1;
            mark_changed(t, fl, e->flow, run, changed, &nc);
            continue;
        }
        int fin = flags & 0x01;
        int64_t off = unwrap(seq, ep->base, ep->nxt);
        /* A copy of bytes all committed already (ByteStream._past_committed): counted,
         * compared with what is retained, delivered again to no one. */
        int again = n && off != ep->nxt && off >= 0 && off + n <= ep->nxt && !fin;
        /* Data past a hole, inside the window: held in C, one segment per direction, where
         * the sink only hashes and no inspector waits for the bytes (ByteStream.add). */
        int ahead = n && off > ep->nxt && !fin && !ep->ooo_len && ep->sha && !fl->native &&
                    !fl->inspect && ep->has_edge && off + n <= ep->want;
        if (ep->ooo_len && (fin || (n && off == ep->nxt && off + n > ep->ooo_off))) {
            *stop_slot = e->flow; /* a FIN or data reaching into the held piece: Python */
            break;
        }
        if (n ? ((off != ep->nxt && !again && !ahead) || closed ||
                 (n == 1 && (off == ep->seen_end - 1 || peer->window == 0)))
              : (fin ? off != ep->seen_end : off == ep->seen_end - 1)) {
            /* out of order, data after both FINs, a keepalive or probe, a FIN elsewhere */
            *stop_slot = e->flow;
            break;
        }
        if (n && ((ep->has_edge && off >= ep->edge) || ep->fin != UT_NO_FIN)) {
            *stop_slot = e->flow; /* beyond the window, or past its own FIN: Python */
            break;
        }
        if (fin && !n && ep->has_edge && off > ep->edge) {
            *stop_slot = e->flow; /* a bare FIN beyond the window: Python holds it */
            break;
        }
        if ((n && no == out_cap) || no_room(fl, run, nt, nc, out_cap))
            break;
        int64_t aoff = unwrap(ack, peer->base, peer->nxt);
        if (peer->ooo_len && aoff > peer->nxt) {
            *stop_slot = e->flow; /* an ACK past the peer's hole (ByteStream.ack): Python */
            break;
        }
        if (aoff > peer->acked) {
            if (peer->fin != UT_NO_FIN) {
                if (aoff > peer->fin + 1) {
                    *stop_slot = e->flow; /* more than the peer sent: Python counts it */
                    break;
                }
                if (aoff > peer->fin)
                    aoff = peer->fin; /* the ACK of a FIN covers no byte */
            } else if (aoff > peer->seen_end) {
                *stop_slot = e->flow; /* bytes never seen, or an unseen FIN: Python */
                break;
            }
        } else if (aoff < peer->acked - (peer->max_wnd > UT_MIN_WINDOW ? peer->max_wnd
                                                                         : UT_MIN_WINDOW)) {
            *stop_slot = e->flow; /* too old (RFC 5961 5.2): Python */
            break;
        }
        uint32_t tsval = 0;
        int has_ts = fl->ts_ok && tsval_of(tcp + 20, hl - 20, &tsval);
        if (has_ts && (n || fin) && ep->has_ts_recent &&
            times[i] - ep->ts_recent_at < UT_PAWS_IDLE &&
            (int32_t)(tsval - ep->ts_recent) < -1) {
            *stop_slot = e->flow; /* PAWS (RFC 7323 5.3): Python drops it */
            break;
        }
        if (again && ep->tail_len) {
            int64_t tail_start = ep->nxt - ep->tail_len;
            int64_t lo = off > tail_start ? off : tail_start;
            if (lo < off + n && memcmp(ep->tail + (lo - tail_start), tcp + hl + (lo - off),
                                       (size_t)(off + n - lo)) != 0) {
                *stop_slot = e->flow; /* a conflicting copy: Python counts the anomaly */
                break;
            }
        }
        if (ahead && ooo_room(t, ep, n) != 0) {
            *stop_slot = e->flow;
            break;
        }
        if (n && !again && !ahead && ep->sha && off + n > ep->want && !ep->hstate) {
            /* bytes its reader wants (plugins/http_transactions.py): it reads them after
             * this run, and then says from where it next wants any. A second such segment in
             * one run waits for that: stop here and come back to this frame. (Where C
             * follows the framing itself, it knows.) */
            if (ep->want_run == (int64_t)run) {
                *yielded = 1;
                break;
            }
            ep->want_run = run;
        }
        int decided = 0;
        if (n && !again && fl->native) {
            if (nd == out_cap)
                break;
            decided = ud_event(fl->nat, &t->cfg, t->scratch, e->dir, tcp + hl, (int32_t)n,
                               times[i]);
            if (decided < 0) { /* not a shape C names: the Python inspector takes it */
                *stop_slot = e->flow;
                break;
            }
            if (fl->nat->proto == UD_TLS && ep->want == 0 && peer->want == 0)
                /* TLS records from the first byte: the HTTP transaction follower, which has
                 * read nothing yet, would stop at that byte. Nothing more to hand it. */
                ep->want = peer->want = UT_WANT_NEVER;
        }
        /* committed from here on: what Tracker.segment() does to this segment */
        if (fl->syn_received && e->dir == 0 && aoff >= 0) {
            fl->syn_received = 0; /* the client ACKed the SYN-ACK: ESTABLISHED */
            mark_changed(t, fl, e->flow, run, changed, &nc);
        }
        done++;
        touch(t, fl, e->flow, t->frame + done, times[i], run, touched, &nt);
        ep->packets++;
        ep->ttl = p.ttl;
        ep->last_ack = ack;
        ep->has_last_ack = 1;
        /* Budget.charge_stamp() of this frame's charges: the ACK's comes first */
        int64_t frame = (t->frame + done) * UT_CHARGES_PER_FRAME;
        int charges = 0; /* charges of held pieces so far in this frame */
        if (aoff > peer->acked) {
            if (peer->ooo_len) /* ByteStream.ack charges the held piece */
                peer->charged_at = frame + ++charges;
            on_ack(t, peer, aoff);
        }
        if (again) {
            ep->payload_bytes += n;
            ep->retransmitted += n;
        } else if (ahead) {
            int64_t end = off + n; /* a light flow stays light (ut_light_holders) */
            ep->payload_bytes += n;
            if (end > ep->seen_end) {
                ep->seen_end = end;
                ep->opts_len = (int32_t)(hl - 20);
                memcpy(ep->opts, tcp + 20, hl - 20);
            }
            memcpy(ep->ooo, tcp + hl, n);
            ep->ooo_off = off;
            ep->ooo_len = (int32_t)n;
            ep->charged_at = frame + ++charges;
            t->held += (int64_t)n + UT_PIECE_COST;
        } else if (n) {
            const uint8_t *payload = tcp + hl;
            ep->payload_bytes += n;
            int64_t end = off + n;
            if (end > ep->seen_end) {
                ep->seen_end = end;
                ep->opts_len = (int32_t)(hl - 20);
                memcpy(ep->opts, tcp + 20, hl - 20);
            }
            if (ep->sha && end <= ep->want) {
                /* a hash-only sink, or bytes it skips: hash here, nothing to hand to Python */
                uh_put(ep->sha, payload, n);
            } else if (ep->sha && ep->hstate) {
                /* hashed here, and its header blocks read here (_follow.c) */
                uh_put(ep->sha, payload, n);
                if (uf_follow(t, t->fmethods, t->fmax_method, fl, e->dir, e->flow * 2 + e->dir,
                              data, payload, (int32_t)n, off, out, heads, &no, out_cap)) {
                    /* C stopped following: the segment goes to Python whole (its reader
                     * skips what C read), and Python says where it next wants bytes */
                    ep->want_run = run;
                    fl->hlog_off = 1; /* nothing logged after what Python is handed */
                    out[no].sink = e->flow * 2 + e->dir;
                    out[no].data_off = (uint32_t)(payload - data);
                    out[no].data_len = n;
                    out[no].hashed = 1;
                    out[no].offset = off;
                    no++;
                }
            } else {
                if (ep->sha) /* its reader (want) only reads: hashed here, in order */
                    uh_put(ep->sha, payload, n);
                fl->hlog_off = 1; /* nothing logged after what Python is handed */
                out[no].sink = e->flow * 2 + e->dir;
                out[no].data_off = (uint32_t)(payload - data);
                out[no].data_len = n;
                out[no].hashed = ep->sha != NULL;
                out[no].offset = off;
                no++;
            }
            ep->nxt = end;
            tail_append(t, ep, payload, n);
            if (ep->ooo_len) {
                if (ep->nxt == ep->ooo_off) { /* the hole is filled: the piece follows */
                    /* ooo is reused by the next piece held: the queue takes a copy */
                    uh_put_copy(ep->sha, ep->ooo, (size_t)ep->ooo_len);
                    ep->nxt += ep->ooo_len;
                    tail_append(t, ep, ep->ooo, ep->ooo_len);
                    t->held -= ep->ooo_len + UT_PIECE_COST;
                    ep->ooo_len = 0;
                } else {
                    /* ByteStream.add charges what it still holds */
                    ep->charged_at = frame + ++charges;
                }
            }
        }
        if (fin) {
            if (ep->fin == UT_NO_FIN)
                ep->fin = off + n;
            if (!closed) { /* Python moves it to its new state and timeout list */
                fl->syn_received = 0;
                mark_changed(t, fl, e->flow, run, changed, &nc);
            }
        }
        ep->window = ((int32_t)tcp[14] << 8) | tcp[15];
        { /* Tracker._advertise: the window this segment offers for the peer's stream */
            int64_t wnd = (int64_t)ep->window << ep->shift;
            if (!peer->has_edge || aoff >= peer->edge_ack) {
                peer->edge = aoff + wnd;
                peer->edge_ack = aoff;
                peer->has_edge = 1;
            }
            if (wnd > peer->max_wnd)
                peer->max_wnd = wnd;
        }
        if (has_ts && off <= ep->acked) { /* TS.Recent (RFC 7323 4.3) */
            ep->ts_recent = tsval;
            ep->has_ts_recent = 1;
            ep->ts_recent_at = times[i];
        }
        if (decided) { /* Python takes the findings after this run, C's part is done */
            if (!hold_decision(t, e->flow, fl))
                decided_slots[nd++] = e->flow;
            fl->native = 0;
            if (t->cfg.bypass)
                fl->bypass = 1; /* Tracker.bypass() at the verdict: counted from the next frame */
        }
        if (n && !again && fl->inspect) { /* the inspector sees this before the next frame */
            i++;
            *yielded = 1;
            break;
        }
    }
    for (uint32_t k = 0; k < no; k++) /* what Python holds of a light flow, it ends */
        t->flows[out[k].sink >> 1].pykept = 1;
    for (uint32_t k = 0; k < nd; k++)
        t->flows[decided_slots[k]].pykept = 1;
    for (uint32_t k = 0; k < nc; k++)
        changed[2 * k + 1] = state_code(&t->flows[changed[2 * k]]);
    for (uint32_t k = 0; k < nt; k++) {
        touched[k].last_seen = t->flows[touched[k].slot].last_seen;
        touched[k].order = t->flows[touched[k].slot].lmoved;
    }
    /* In the order the frames came, not of their times: a clock may step back. */
    qsort(touched, nt, sizeof(ut_touch), by_order);
    *n_out = no;
    *n_touched = nt;
    *n_changed = nc;
    *n_decided = nd;
    *n_born = nb;
    *handled = done;
    return i;
}

/* Capture times from libpcap's packed (sec, usec, offset, caplen) batch records. */
void ut_meta_times(const uint32_t *meta, uint32_t n, double *times) {
    for (uint32_t i = 0; i < n; i++)
        times[i] = meta[4 * i] + meta[4 * i + 1] / 1e6;
}

/* SHA-256 contexts shared by the Python sinks and the run above (OpenSSL's EVP, the same
 * code hashlib uses). */
void *ut_sha_new(void) {
    /* OpenSSL 3 looks the algorithm up on every EVP_DigestInit_ex (tens of microseconds,
     * paid twice per connection): initialise one context once and copy it. */
    static EVP_MD_CTX *proto = NULL;
    if (!proto) {
        proto = EVP_MD_CTX_new();
        if (!proto || EVP_DigestInit_ex(proto, EVP_sha256(), NULL) != 1) {
            EVP_MD_CTX_free(proto);
            proto = NULL;
            return NULL;
        }
    }
    ut_sha *s = calloc(1, sizeof(ut_sha));
    EVP_MD_CTX *c = s ? EVP_MD_CTX_new() : NULL;
    if (!c || EVP_MD_CTX_copy_ex(c, proto) != 1) {
        EVP_MD_CTX_free(c);
        free(s);
        return NULL;
    }
    s->md = c;
    return s;
}

/* Every direct use of a context waits for its pieces queued to the hashing thread. */
void ut_sha_update(void *c, const uint8_t *data, size_t n) {
    ut_sha *s = c;
    uh_wait_for(s);
    EVP_DigestUpdate((EVP_MD_CTX *)s->md, data, n);
}

void ut_sha_zeros(void *c, int64_t n) {
    static const uint8_t zeros[65536];
    ut_sha *s = c;
    uh_wait_for(s);
    while (n > 0) {
        size_t k = n > (int64_t)sizeof(zeros) ? sizeof(zeros) : (size_t)n;
        EVP_DigestUpdate((EVP_MD_CTX *)s->md, zeros, k);
        n -= (int64_t)k;
    }
}

/* The digest of a context about to be freed: finalized in place, no copy made. */
static int sha_last_digest(ut_sha *s, uint8_t *out32) {
    unsigned int len = 0;
    uh_wait_for(s);
    return EVP_DigestFinal_ex((EVP_MD_CTX *)s->md, out32, &len) == 1 ? 0 : -1;
}

/* The digest so far, leaving the context usable (like hashlib's hexdigest()). */
int ut_sha_digest(void *c, uint8_t *out32) {
    ut_sha *s = c;
    unsigned int len = 0;
    uh_wait_for(s);
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    if (!copy)
        return -1;
    int ok = EVP_MD_CTX_copy_ex(copy, (EVP_MD_CTX *)s->md) == 1 &&
             EVP_DigestFinal_ex(copy, out32, &len) == 1;
    EVP_MD_CTX_free(copy);
    return ok ? 0 : -1;
}

void ut_sha_free(void *c) {
    ut_sha *s = c;
    if (!s)
        return;
    uh_wait_for(s);
    EVP_MD_CTX_free((EVP_MD_CTX *)s->md);
    free(s);
}
