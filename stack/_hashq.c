/* uinet-tap: the streams' SHA-256 on the second core.
 *
 * ut_run hashes every payload byte it delivers in place (a quarter of a replay's C time).
 * It hands each piece to a queue instead (uh_put: the context, where the bytes are, how
 * many) and goes on; a worker thread hashes the pieces in the order they came, so each
 * context sees its stream in order. Every other use of a context waits until its last
 * piece is hashed (uh_wait_for): a digest, an update made directly, a free; a context with
 * nothing queued does not wait, and a thread that must wait while the worker sleeps hashes
 * the queue itself rather than wake it and sleep. The bytes must stay where they are until
 * hashed: CFastPath.unload() drains the queue (ut_hash_wait) before a batch's buffer goes.
 *
 * One worker per process, started at the first piece (and again in a child after fork:
 * pthread_atfork drains the queue before a fork, so a child starts with nothing pending).
 * Where the thread cannot start, pieces are hashed at once, as before. Pieces are put by
 * one thread: the data plane is driven from one (uinet_tap runs no engine in a thread).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "_fast.h"

#define UH_CAP 16384 /* pieces queued at most (a power of two) */
/* A sleeping worker is woken once this much is queued (or the queue is drained): waking it
 * for every piece would cost more (a futex call and a context switch each) than hashing. */
#define UH_KICK_PIECES 256
#define UH_KICK_BYTES (1 << 20)
/* Pieces gathered by the putting thread before they go into the ring under the lock
 * together (a lock per piece collides with the worker's too often). */
#define UH_STAGE 64
/* Bytes of copies queued and not hashed yet, at most: past it uh_put_copy hashes at once
 * (after the context's queued pieces), so the queue's copies stay bounded in memory
 * whatever the traffic makes of the held pieces they come from. */
#define UH_COPY_CAP (8u << 20)

typedef struct {
    void *md; /* the context itself (its ut_sha's md) */
    const uint8_t *data;
    size_t n;
    int owned; /* data is the queue's copy: freed once hashed */
} uh_piece;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more;    /* the worker sleeps for pieces */
    pthread_cond_t drained; /* a waiter sleeps while the pieces it needs are being hashed */
    uh_piece ring[UH_CAP];
    uint64_t head, tail;    /* pieces hashed / pieces put (a piece's number: tail after it) */
    int busy;               /* a thread is hashing pieces from head on */
    int idle;               /* the worker sleeps on `more` */
    uint64_t queued_bytes;  /* put since the queue was last taken */
    size_t copied;          /* bytes of owned copies queued, not hashed yet (atomic) */
    pid_t pid;              /* the process whose worker runs (0: none yet) */
    int broken;             /* no thread could start: pieces are hashed at once */
    int registered;
    uh_piece stage[UH_STAGE]; /* the putting thread's alone: no lock */
    uint32_t staged;
    size_t staged_bytes;
} uh = {.mu = PTHREAD_MUTEX_INITIALIZER,
        .more = PTHREAD_COND_INITIALIZER,
        .drained = PTHREAD_COND_INITIALIZER};

/* Hash every piece queued (called with the lock held, no one else hashing; returns with
 * it held). The worker and a waiting thread both come here, one at a time. */
static void uh_process(void) {
    uint64_t from = uh.head, to = uh.tail;
    uh.busy = 1;
    uh.queued_bytes = 0;
    pthread_mutex_unlock(&uh.mu);
    for (uint64_t i = from; i != to; i++) {
        uh_piece *p = &uh.ring[i & (UH_CAP - 1)];
        EVP_DigestUpdate((EVP_MD_CTX *)p->md, p->data, p->n);
        if (p->owned) {
            free((void *)p->data);
            __atomic_sub_fetch(&uh.copied, p->n, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_lock(&uh.mu);
    /* Released after the updates it vouches for: uh_wait_for reads head without the lock. */
    __atomic_store_n(&uh.head, to, __ATOMIC_RELEASE);
    uh.busy = 0;
    pthread_cond_broadcast(&uh.drained);
}

/* Until head reaches upto: hash the queue here if no one is, else wait for who is (lock
 * held). */
static void uh_reach(uint64_t upto) {
    while (uh.head < upto) {
        if (!uh.busy)
            uh_process();
        else
            pthread_cond_wait(&uh.drained, &uh.mu);
    }
}

static void *uh_worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&uh.mu);
    for (;;) {
        while (uh.busy || uh.head == uh.tail) {
            uh.idle = 1;
            pthread_cond_wait(&uh.more, &uh.mu);
        }
        uh.idle = 0;
        uh_process();
    }
    return NULL;
}

/* The staged pieces into the ring, in order (their numbers were given when staged). */
static void uh_flush(void) {
    if (!uh.staged)
        return;
    pthread_mutex_lock(&uh.mu);
    if (UH_CAP - (uh.tail - uh.head) < uh.staged)
        uh_reach(uh.tail); /* full: empty it */
    for (uint32_t i = 0; i < uh.staged; i++)
        uh.ring[(uh.tail + i) & (UH_CAP - 1)] = uh.stage[i];
    uh.tail += uh.staged;
    uh.queued_bytes += uh.staged_bytes;
    uh.staged = 0;
    uh.staged_bytes = 0;
    if (uh.idle && (uh.tail - uh.head >= UH_KICK_PIECES || uh.queued_bytes >= UH_KICK_BYTES))
        pthread_cond_signal(&uh.more);
    pthread_mutex_unlock(&uh.mu);
}

static void uh_prepare(void) { /* before fork: nothing pending, the lock held */
    uh_flush();
    pthread_mutex_lock(&uh.mu);
    uh_reach(uh.tail);
}

static void uh_parent(void) { pthread_mutex_unlock(&uh.mu); }

static void uh_child(void) {
    /* No worker here: the next piece starts one. head == tail (uh_prepare saw to it) and
     * both stay, so every context's number says it has nothing pending. */
    pthread_mutex_init(&uh.mu, NULL);
    pthread_cond_init(&uh.more, NULL);
    pthread_cond_init(&uh.drained, NULL);
    uh.busy = uh.idle = 0;
    uh.queued_bytes = 0;
    uh.pid = 0;
}

/* A worker for this process, or uh.broken. */
static void uh_start(void) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_mutex_lock(&uh.mu);
    if (!uh.registered) {
        if (pthread_atfork(uh_prepare, uh_parent, uh_child) != 0)
            uh.broken = 1;
        uh.registered = 1;
    }
    if (!uh.broken) {
        if (pthread_attr_init(&attr) != 0) {
            uh.broken = 1;
        } else {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&th, &attr, uh_worker, NULL) != 0)
                uh.broken = 1;
            else
                uh.pid = getpid();
            pthread_attr_destroy(&attr);
        }
    }
    pthread_mutex_unlock(&uh.mu);
}

static void uh_stage(ut_sha *s, const uint8_t *data, size_t n, int owned) {
    uh_piece *p = &uh.stage[uh.staged++];
    p->md = s->md;
    p->data = data;
    p->n = n;
    p->owned = owned;
    s->seq = uh.tail + uh.staged; /* only this thread moves tail */
    uh.staged_bytes += n;
    if (uh.staged == UH_STAGE)
        uh_flush();
}

/* Hash n bytes at data into s, in order after every piece put before. */
void uh_put(ut_sha *s, const uint8_t *data, size_t n) {
    if (!n)
        return;
    if (!uh.pid && !uh.broken)
        uh_start();
    if (uh.broken) { /* nothing was ever queued: hash here */
        EVP_DigestUpdate((EVP_MD_CTX *)s->md, data, n);
        return;
    }
    uh_stage(s, data, n, 0);
}

/* The same for bytes the caller reuses at once (a held piece's buffer): a copy is queued,
 * so that the caller need not wait for the queue, within UH_COPY_CAP. */
void uh_put_copy(ut_sha *s, const uint8_t *data, size_t n) {
    int room = __atomic_load_n(&uh.copied, __ATOMIC_RELAXED) + n <= UH_COPY_CAP;
    uint8_t *copy = n && room && !uh.broken && uh.pid ? malloc(n) : NULL;
    if (!copy) { /* nothing queued, over the cap, or no memory: hash here, after the queue */
        uh_wait_for(s);
        EVP_DigestUpdate((EVP_MD_CTX *)s->md, data, n);
        return;
    }
    memcpy(copy, data, n);
    __atomic_add_fetch(&uh.copied, n, __ATOMIC_RELAXED);
    uh_stage(s, copy, n, 1);
}

/* Return once s's pieces are hashed (it is the caller's alone again). */
void uh_wait_for(ut_sha *s) {
    if (s->seq > uh.tail) /* still staged */
        uh_flush();
    else if (s->seq <= __atomic_load_n(&uh.head, __ATOMIC_ACQUIRE))
        return; /* done (head only grows: an older value only means the slow way) */
    pthread_mutex_lock(&uh.mu);
    uh_reach(s->seq);
    pthread_mutex_unlock(&uh.mu);
}

/* Return once every piece put so far is hashed (the bytes they point at are free). */
void ut_hash_wait(void) { ut_hash_wait_to(ut_hash_mark()); }

uint64_t ut_hash_mark(void) {
    uh_flush();
    return uh.tail; /* only this thread moves tail */
}

void ut_hash_wait_to(uint64_t mark) {
    if (mark <= __atomic_load_n(&uh.head, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&uh.mu);
    uh_reach(mark);
    pthread_mutex_unlock(&uh.mu);
}
