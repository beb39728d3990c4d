"""cffi build script for the C fast path (``uinet_tap.stack._fast``); see _fast.c."""

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct {
        uint32_t base; int64_t nxt; int64_t acked; int64_t seen_end; int64_t fin;
        int32_t window; uint32_t last_ack; int32_t has_last_ack;
        int64_t packets; int64_t payload_bytes; int32_t ttl;
        int32_t opts_len; uint8_t opts[40];
        int64_t edge; int64_t edge_ack; int64_t max_wnd; int32_t has_edge;
        uint32_t ts_recent; int32_t has_ts_recent; int32_t shift; double ts_recent_at;
        uint8_t *tail; int64_t tail_len; int64_t tail_cap;
        void *sha;
        int32_t retain_drops;
    } ut_dir;
    typedef struct { int32_t dir; int32_t len; double ts; } ut_event;
    typedef struct {
        int32_t state; int32_t allow; int32_t proto; int32_t complete; int32_t seg[2];
        int32_t early_len[2]; int32_t early_cap[2]; uint8_t *early[2]; int64_t bytes[2];
        double first_data; int64_t verdict_off[2]; int32_t nev; ut_event ev[48];
        int32_t method[2], path[2], host[2], ua[2]; int32_t status;
        int32_t sni[2], alpn[2]; int32_t legacy; int32_t nversions; uint16_t versions[16];
        int32_t tls_version, cipher; char ja3[40]; char ja4[48]; int32_t flen;
        uint8_t fbuf[1024];
    } ut_native;
    typedef struct {
        uint8_t key[2][12]; ut_dir d[2]; double last_seen; int32_t used; uint32_t touched_run;
        uint32_t last_touch;
        int32_t syn_received; int32_t bypass; int32_t inspect; int32_t native; ut_native *nat;
        int32_t ts_ok;
    } ut_flow;
    typedef struct { double last_seen; int32_t slot; int32_t order; } ut_touch;
    typedef struct {
        int32_t sink; uint32_t data_off; uint32_t data_len; uint32_t pad; int64_t offset;
    } ut_out;
    #define UT_NO_FIN ...
    typedef struct ut_table ut_table;
    ut_table *ut_new(int64_t retain);
    void ut_free(ut_table *t);
    ut_flow *ut_flow_at(ut_table *t, int32_t i);
    int32_t ut_attach(ut_table *t, const uint8_t *key_c, const uint8_t *key_s);
    void ut_detach(ut_table *t, int32_t slot);
    int ut_native_config(ut_table *t, const char *methods, int32_t methods_len,
                         int32_t max_method, int32_t packets, double seconds, int32_t bypass);
    int ut_native_begin(ut_table *t, int32_t slot, int32_t allow);
    void ut_native_release(ut_table *t, int32_t slot);
    int ut_tail_set(ut_table *t, ut_dir *d, const uint8_t *data, int64_t n);
    void ut_set_retain(ut_table *t, int64_t py_retained, int64_t cap);
    int64_t ut_retained(ut_table *t);
    void *ut_sha_new(void);
    void ut_sha_update(void *c, const uint8_t *data, size_t n);
    void ut_sha_zeros(void *c, int64_t n);
    int ut_sha_digest(void *c, uint8_t *out32);
    void ut_sha_free(void *c);
    void ut_meta_times(const uint32_t *meta, uint32_t n, double *times);
    uint32_t ut_run(ut_table *t, const uint8_t *data, const uint32_t *offsets,
                    const uint32_t *lengths, const double *times, uint32_t start,
                    uint32_t count, double expiry_at, ut_out *out, uint32_t out_cap,
                    uint32_t *n_out, ut_touch *touched, uint32_t *n_touched,
                    int32_t *changed, uint32_t *n_changed,
                    int64_t *handled, int32_t *stop_slot, int32_t *yielded,
                    int32_t *decided_slots, uint32_t *n_decided);
    """
)
# _detect.c (first-bytes detection) comes first: _fast.c's run loop calls it.
_here = Path(__file__).parent
_src = (_here / "_detect.c").read_text() + (_here / "_fast.c").read_text()
ffibuilder.set_source(
    "uinet_tap.stack._fast",
    _src,
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
