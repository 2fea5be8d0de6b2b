/* The node arena: storage, handles, reference counts, reclamation, and the
 * bookkeeping the Python layer's lifetime model (pygrad/_lifetime.py) needs. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "arena.h"

arena_t pg_the_arena = {.free_head = NO_SLOT, .free_tail = NO_SLOT};
static pthread_mutex_t arena_mutex = PTHREAD_MUTEX_INITIALIZER;

/* --- the lock, and fork ------------------------------------------------------
 * A forked child inherits the mutex in whatever state the parent's threads
 * left it.  So fork waits until no thread is inside the arena (prepare), and
 * both processes then go on with it free: the child's copy of the arena is
 * consistent because no call was half done. */

#ifdef PG_DEBUG
static _Thread_local int lock_depth;
int pg_lock_held(void) { return lock_depth > 0; }
#endif

static void lock_raw(void) { pthread_mutex_lock(&arena_mutex); }
static void unlock_raw(void) { pthread_mutex_unlock(&arena_mutex); }

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static void forget_other_threads(void);
static void unlock_in_child(void)
{
    forget_other_threads();
    unlock_raw();
}
static void install_fork_handlers(void) { pthread_atfork(lock_raw, unlock_raw, unlock_in_child); }

void pg_lock(void)
{
    pthread_once(&fork_handlers_once, install_fork_handlers);
    lock_raw();
#ifdef PG_DEBUG
    lock_depth++;
#endif
}

void pg_unlock(void)
{
#ifdef PG_DEBUG
    lock_depth--;
#endif
    unlock_raw();
}

/* --- grad mode ---------------------------------------------------------------
 * Recording is off in a thread while it has active no_grad tokens.  A token
 * keeps a reference to its thread's counter, so that releasing it from any
 * thread (a gc destructor runs wherever the last reference dies), even after
 * the thread ended, is safe. */

typedef struct {
    int64_t disabled; /* active tokens of this thread (atomic) */
    int64_t refs;     /* the thread itself, and each token (atomic) */
} grad_thread_t;

struct pg_grad_off {
    grad_thread_t *thread;
    int active;
};

static _Thread_local grad_thread_t *this_thread;
static pthread_key_t thread_exit_key;
static pthread_once_t thread_exit_once = PTHREAD_ONCE_INIT;

static void grad_thread_unref(grad_thread_t *t)
{
    if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(t);
}

static void on_thread_exit(void *t) { grad_thread_unref(t); }
static void make_thread_exit_key(void) { pthread_key_create(&thread_exit_key, on_thread_exit); }

static grad_thread_t *current_grad_thread(void)
{
    if (!this_thread) {
        pthread_once(&thread_exit_once, make_thread_exit_key);
        grad_thread_t *t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->refs = 1;
        if (pthread_setspecific(thread_exit_key, t) != 0) {
            free(t);
            return NULL;
        }
        this_thread = t;
    }
    return this_thread;
}

int64_t pg_grad_recording(void) { return pg_grad_enabled(); }

int pg_grad_enabled(void)
{
    return !this_thread || __atomic_load_n(&this_thread->disabled, __ATOMIC_RELAXED) == 0;
}

pg_grad_off *pg_grad_off_new(void)
{
    grad_thread_t *t = current_grad_thread();
    pg_grad_off *token = t ? malloc(sizeof *token) : NULL;
    if (!token)
        return NULL;
    __atomic_add_fetch(&t->refs, 1, __ATOMIC_ACQ_REL);
    token->thread = t;
    token->active = 0;
    return token;
}

int64_t pg_grad_off_start(pg_grad_off *token)
{
    if (!token || token->active || token->thread != this_thread)
        return PG_ERR_ARG;
    token->active = 1;
    __atomic_add_fetch(&token->thread->disabled, 1, __ATOMIC_RELAXED);
    return PG_OK;
}

void pg_grad_off_release(pg_grad_off *token)
{
    if (!token)
        return;
    if (token->active)
        __atomic_sub_fetch(&token->thread->disabled, 1, __ATOMIC_RELAXED);
    grad_thread_unref(token->thread);
    free(token);
}

/* --- growth ------------------------------------------------------------------ */

/* realloc the array `p` to `count` elements; leaves p alone on failure. */
#define GROW(p, count) grow_array(&(p), (p), (count), sizeof *(p))

/* `slot` is the address of the array's pointer (a double **, a uint8_t ** ...).
 * The new pointer is copied into it, not stored through a void **, which
 * would break C's aliasing rules (and need -fno-strict-aliasing). */
static int grow_array(void *slot, void *old, size_t count, size_t size)
{
    void *q = realloc(old, count * size);
    if (!q)
        return 0;
    memcpy(slot, &q, sizeof q);
    return 1;
}

/* Resize the slot arrays to `cap` (>= used).  Handles stay valid: they are
 * indices, not pointers.  Every array is resized before capacity moves, so a
 * failure part-way leaves some arrays larger than needed and nothing
 * inconsistent. */
static int64_t resize_slots(arena_t *A, size_t cap)
{
    if (cap > A->gen_slots) {
        if (!GROW(A->gen, cap))
            return PG_ERR_NOMEM;
        memset(A->gen + A->gen_slots, 0, (cap - A->gen_slots) * sizeof *A->gen);
        A->gen_slots = (uint32_t)cap;
    }
    if (!GROW(A->data, cap) || !GROW(A->grad, cap) || !GROW(A->exponent, cap) ||
        !GROW(A->children, cap) || !GROW(A->children_ext, cap) || !GROW(A->arity, cap) ||
        !GROW(A->refs, cap) || !GROW(A->ext, cap) || !GROW(A->mark, cap) ||
        !GROW(A->link, cap) || !GROW(A->op, cap) || !GROW(A->flags, cap))
        return PG_ERR_NOMEM;
    A->capacity = (uint32_t)cap;
    return PG_OK;
}

static int64_t grow_slots(arena_t *A)
{
    if (A->capacity >= MAX_SLOTS)
        return PG_ERR_NOMEM;
    size_t cap = A->capacity ? (size_t)A->capacity * 2 : 1024;
    return resize_slots(A, cap > MAX_SLOTS ? MAX_SLOTS : cap);
}

/* Size the graph-walk scratch for a walk over every live node. */
int64_t pg_walk_reserve(arena_t *A)
{
    ASSERT_LOCKED();
    size_t need = (size_t)A->live + 1;
    if (need <= A->walk_cap)
        return PG_OK;
    size_t cap = A->walk_cap ? A->walk_cap : 1024;
    while (cap < need)
        cap *= 2;
    if (!GROW(A->walk_order, cap) || !GROW(A->walk_stack, cap) || !GROW(A->walk_next, cap))
        return PG_ERR_NOMEM;
    A->walk_cap = cap;
    return PG_OK;
}

void *pg_scratch(arena_t *A, size_t size)
{
    if (size > A->scratch_size) {
        void *grown = realloc(A->scratch, size);
        if (!grown)
            return NULL;
        A->scratch = grown;
        A->scratch_size = size;
    }
    return A->scratch;
}

void pg_scratch_free(arena_t *A)
{
    free(A->scratch);
    A->scratch = NULL;
    A->scratch_size = 0;
}

/* --- children arrays ---------------------------------------------------------------
 * A node with more than two children (a DOT: a neuron) keeps them in an array
 * of its own.  Freed arrays wait on a free list per size class (capacities
 * 4, 8, 16, ... up to 2^CHILDREN_POOLED_LOG2), linked through their first bytes,
 * so that a training loop that builds and frees the same neurons every step
 * takes them from there instead of from malloc.  The lists hold at most
 * CHILDREN_POOL_BYTES (more goes back to malloc at once), and a shrink of the
 * arena hands them all back. */

#define CHILDREN_POOL_BYTES ((size_t)16 << 20)

static unsigned children_class(uint32_t arity) /* arity > 2 */
{
    return 32u - (unsigned)__builtin_clz(arity - 1); /* ceil(log2(arity)) */
}

static uint32_t *children_alloc(arena_t *A, uint32_t arity)
{
    unsigned c = children_class(arity);
    if (c > CHILDREN_POOLED_LOG2)
        return malloc((size_t)arity * sizeof(uint32_t));
    void *block = A->children_pool[c];
    if (block) {
        memcpy(&A->children_pool[c], block, sizeof block); /* the next free block */
        A->children_pool_bytes -= ((size_t)1 << c) * sizeof(uint32_t);
        return block;
    }
    return malloc(((size_t)1 << c) * sizeof(uint32_t));
}

static void children_release(arena_t *A, uint32_t *children, uint32_t arity)
{
    if (!children)
        return;
    unsigned c = children_class(arity);
    size_t bytes = ((size_t)1 << c) * sizeof(uint32_t);
    if (c > CHILDREN_POOLED_LOG2 || A->children_pool_bytes + bytes > CHILDREN_POOL_BYTES) {
        free(children);
        return;
    }
#ifdef PG_DEBUG
    memset(children, 0xff, bytes); /* poison: every slot in it is NO_SLOT */
#endif
    memcpy(children, &A->children_pool[c], sizeof A->children_pool[c]);
    A->children_pool[c] = children;
    A->children_pool_bytes += bytes;
}

static void children_pool_drain(arena_t *A)
{
    for (unsigned c = 0; c <= CHILDREN_POOLED_LOG2; c++)
        while (A->children_pool[c]) {
            void *block = A->children_pool[c];
            memcpy(&A->children_pool[c], block, sizeof block);
            free(block);
        }
    A->children_pool_bytes = 0;
}

/* Put free slot s at the head of the free list. */
static void push_free(arena_t *A, uint32_t s)
{
    A->link[s] = A->free_head;
    if (A->free_head == NO_SLOT)
        A->free_tail = s;
    A->free_head = s;
}

/* --- shrinking ----------------------------------------------------------------
 * Slots cannot move (handles name them), so the arena shrinks from the top:
 * every half a capacity of frees, everything above the highest live slot is
 * cut off and the free list is rebuilt in ascending order, so that new nodes
 * fill the low slots first (the next graph is laid out in the order it is
 * built, which its walks follow) and the next shrink can cut more.  That is
 * done however many nodes are live: a training loop that frees a graph while
 * the next is alive would otherwise lay each graph out in the order the last
 * was freed, scattered, and its node making, backward and freeing ran ~40%
 * slower (micrograd's demo step).
 *
 * Memory goes back only once live nodes fall below an eighth of capacity,
 * and only from an arena of more than RELEASE_MIN slots (64
 * bytes each: 4 MB): then the slot arrays are cut to twice the highest live
 * slot, and the walk scratch, pooled children arrays and call scratch are
 * dropped.  Below that the memory is kept for the next graph: a training loop
 * frees its whole graph every step and builds it again, and handing the same
 * pages back to the kernel to fault them in again cost a tenth of micrograd's
 * demo step. */

#define SHRINK_MIN 4096u
#define RELEASE_MIN 65536u

static void release_memory(arena_t *A)
{
    size_t cap = RELEASE_MIN;
    while (cap < (size_t)A->used * 2)
        cap *= 2;
    if (cap < A->capacity)
        resize_slots(A, cap); /* a failed shrink leaves the arena as it was */
    free(A->walk_order);
    free(A->walk_stack);
    free(A->walk_next);
    A->walk_order = A->walk_stack = A->walk_next = NULL;
    A->walk_cap = 0;
    children_pool_drain(A);
    pg_scratch_free(A);
#ifdef __GLIBC__
    malloc_trim(0); /* arrays below the mmap threshold leave holes in the heap: give them back */
#endif
}

void pg_arena_maybe_shrink(arena_t *A)
{
    ASSERT_LOCKED();
    /* An attempt scans every slot, so it waits for half a capacity of frees
     * since the last one: O(1) per free, even when a few long-lived nodes
     * high up keep blocking the cut. */
    if (A->capacity <= SHRINK_MIN || A->frees_since_shrink < A->capacity / 2)
        return;
    A->frees_since_shrink = 0;
    uint32_t top = A->used;
    while (top > 0 && A->op[top - 1] == PG_OP_FREE)
        top--;
    A->free_head = A->free_tail = NO_SLOT;
    for (uint32_t s = top; s-- > 0;)
        if (A->op[s] == PG_OP_FREE)
            push_free(A, s);
    A->used = top;
    if (A->live < A->capacity / 8 && A->capacity > RELEASE_MIN)
        release_memory(A);
}

/* --- allocation and release ---------------------------------------------------- */

static void free_slot(arena_t *A, uint32_t s);

static int64_t take_slot(arena_t *A, uint32_t *slot)
{
    if (A->limit && A->live >= A->limit)
        return PG_ERR_NOMEM;
    if (A->free_head != NO_SLOT) {
        *slot = A->free_head;
        A->free_head = A->link[*slot];
        if (A->free_head == NO_SLOT)
            A->free_tail = NO_SLOT;
    } else {
        if (A->used == A->capacity) {
            int64_t rc = grow_slots(A);
            if (rc < 0)
                return rc;
        }
        *slot = A->used++; /* its generation: 0, or what it had before a shrink */
    }
    A->live++;
    return PG_OK;
}

int64_t pg_node_new(arena_t *A, uint8_t op, double value, const uint32_t *children,
                    uint32_t arity, uint32_t *slot_out)
{
    ASSERT_LOCKED();
    uint32_t *ext = NULL;
    if (arity > 2) {
        ext = children_alloc(A, arity);
        if (!ext)
            return PG_ERR_NOMEM;
        memcpy(ext, children, arity * sizeof *ext);
    }
    uint32_t s;
    int64_t rc = take_slot(A, &s);
    if (rc < 0) {
        children_release(A, ext, arity);
        return rc;
    }
    A->data[s] = value;
    A->grad[s] = 0.0;
    A->exponent[s] = 0.0;
    A->arity[s] = arity;
    A->children[s][0] = arity > 0 && !ext ? children[0] : NO_SLOT;
    A->children[s][1] = arity > 1 && !ext ? children[1] : NO_SLOT;
    A->children_ext[s] = ext;
    A->refs[s] = 0;
    A->ext[s] = 1;
    A->mark[s] = 0;
    A->op[s] = op;
    A->flags[s] = 0;
    for (uint32_t i = 0; i < arity; i++)
        if (A->refs[children[i]]++ == UINT32_MAX) { /* the count wrapped: undo, and refuse */
            for (uint32_t j = 0; j <= i; j++)
                A->refs[children[j]]--;
            children_release(A, ext, arity);
            A->children_ext[s] = NULL;
            A->arity[s] = 0;
            free_slot(A, s);
            return PG_ERR_ARG;
        }
    if (slot_out)
        *slot_out = s;
    return handle_of(A, s);
}

static void free_slot(arena_t *A, uint32_t s)
{
    children_release(A, A->children_ext[s], A->arity[s]);
    A->children_ext[s] = NULL;
#ifdef PG_DEBUG
    A->data[s] = A->grad[s] = NAN; /* poison */
    A->children[s][0] = A->children[s][1] = NO_SLOT;
#endif
    A->arity[s] = 0;
    A->op[s] = PG_OP_FREE;
    A->flags[s] = 0;
    A->gen[s]++;
    /* A sparse arena reuses its low slots first, so that nodes made now do
     * not stand in the way of the next shrink: a high slot waits at the end. */
    if (A->live < A->capacity / 8 && s >= A->used / 2 && A->free_tail != NO_SLOT) {
        A->link[s] = NO_SLOT;
        A->link[A->free_tail] = s;
        A->free_tail = s;
    } else {
        push_free(A, s);
    }
    A->live--;
    A->frees_since_shrink++;
    A->mutations++;
}

/* Free `s` and, iteratively, every descendant that loses its last reference.
 * The worklist is threaded through `link`, so releasing a chain of any length
 * allocates nothing and cannot fail. */
static void free_unreferenced(arena_t *A, uint32_t s)
{
    uint32_t pending = s;
    A->link[s] = NO_SLOT;
    while (pending != NO_SLOT) {
        uint32_t n = pending;
        pending = A->link[n];
        const uint32_t *children = children_of(A, n);
        for (uint32_t i = 0; i < A->arity[n]; i++) {
            uint32_t c = children[i];
            DEBUG_ASSERT(A->refs[c] > 0);
            if (--A->refs[c] == 0 && A->ext[c] == 0) {
                A->link[c] = pending;
                pending = c;
            }
        }
        free_slot(A, n);
    }
}

void pg_node_detach(arena_t *A, uint32_t s)
{
    ASSERT_LOCKED();
    const uint32_t *children = children_of(A, s);
    for (uint32_t i = 0; i < A->arity[s]; i++)
        pg_node_decref(A, children[i]);
    children_release(A, A->children_ext[s], A->arity[s]);
    A->children_ext[s] = NULL;
    A->arity[s] = 0;
    A->op[s] = PG_OP_LEAF;
}

void pg_node_decref(arena_t *A, uint32_t s)
{
    DEBUG_ASSERT(A->refs[s] > 0);
    if (--A->refs[s] == 0 && A->ext[s] == 0)
        free_unreferenced(A, s);
}

void pg_node_release(arena_t *A, uint32_t s)
{
    ASSERT_LOCKED();
    DEBUG_ASSERT(A->ext[s] > 0);
    if (--A->ext[s] == 0 && A->refs[s] == 0)
        free_unreferenced(A, s);
}

/* --- the nursery: handles handed to the Python layer -----------------------------------
 * See "the Python layer" in pygrad.h.  Each entry owns the external reference
 * that came with a handle, until a sweep promotes it (the Value kept it) or
 * releases it.  A thread's latest handing-out call is "in flight" (its Values
 * may not exist yet): the entries of in-flight calls, and of calls after the
 * sweep began, are carried over to the next sweep. */

#define NO_THREAD UINT64_MAX

typedef struct nursery_entry {
    int64_t handle;
    uint64_t call;
} nursery_entry_t;

/* The process's threads, not the arena's: */
static _Thread_local int64_t my_thread_slot = -1;
static pthread_key_t my_thread_key;
static pthread_once_t my_thread_key_once = PTHREAD_ONCE_INIT;

static void forget_thread(void *slot)
{
    nursery_t *N = &pg_the_arena.nursery;
    pg_lock();
    N->thread_call[(size_t)(intptr_t)slot - 1] = NO_THREAD;
    pg_unlock();
}

static void make_thread_key(void) { pthread_key_create(&my_thread_key, forget_thread); }

/* This thread's slot in thread_call, made on first use; -1 if out of memory. */
static int64_t thread_slot(nursery_t *N)
{
    if (my_thread_slot >= 0)
        return my_thread_slot;
    pthread_once(&my_thread_key_once, make_thread_key);
    size_t i = 0;
    while (i < N->thread_slots && N->thread_call[i] != NO_THREAD)
        i++;
    if (i == N->thread_slots) {
        size_t cap = N->thread_slots ? 2 * N->thread_slots : 8;
        if (!GROW(N->thread_call, cap))
            return -1;
        for (size_t j = N->thread_slots; j < cap; j++)
            N->thread_call[j] = NO_THREAD;
        N->thread_slots = cap;
    }
    if (pthread_setspecific(my_thread_key, (void *)(intptr_t)(i + 1)) != 0)
        return -1;
    N->thread_call[i] = 0;
    my_thread_slot = (int64_t)i;
    return my_thread_slot;
}

/* In a forked child only the forking thread exists. */
static void forget_other_threads(void)
{
    nursery_t *N = &pg_the_arena.nursery;
    for (size_t i = 0; i < N->thread_slots; i++)
        if ((int64_t)i != my_thread_slot)
            N->thread_call[i] = NO_THREAD;
    N->sweep_mark = 0; /* a sweep another thread had begun will not end */
}

int64_t pg_nursery_reserve(arena_t *A, size_t count)
{
    ASSERT_LOCKED();
    nursery_t *N = &A->nursery;
    if (!A->python_layer || N->len + count <= N->cap)
        return PG_OK;
    size_t cap = N->cap ? N->cap : 1024;
    while (cap < N->len + count)
        cap *= 2;
    if (!GROW(N->entries, cap))
        return PG_ERR_NOMEM;
    N->cap = cap;
    return PG_OK;
}

int64_t pg_hand_out(arena_t *A, int64_t result, const int64_t *handles, size_t count,
                    int referenced_stateful)
{
    ASSERT_LOCKED();
    nursery_t *N = &A->nursery;
    if (result < 0 || !A->python_layer)
        return result;
    int64_t slot = thread_slot(N);
    uint64_t call = ++N->calls;
    if (slot >= 0)
        N->thread_call[slot] = call;
    DEBUG_ASSERT(N->len + count <= N->cap); /* pg_nursery_reserve'd */
    for (size_t i = 0; i < count; i++)
        N->entries[N->len++] = (nursery_entry_t){handles[i], call};
    if (referenced_stateful || N->len >= PG_SWEEP_EVERY)
        return PG_PENDING + result;
    return result;
}

int pg_any_stateful(const arena_t *A, const uint32_t *slots, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (A->flags[slots[i]] & FLAG_STATEFUL)
            return 1;
    return 0;
}

static int in_flight(const nursery_t *N, uint64_t call)
{
    for (size_t i = 0; i < N->sweep_in_flight_len; i++)
        if (N->sweep_in_flight[i] == call)
            return 1;
    return 0;
}

static int64_t sweep_begin(arena_t *A)
{
    nursery_t *N = &A->nursery;
    if (!GROW(N->sweep_in_flight, N->thread_slots ? N->thread_slots : 1))
        return PG_ERR_NOMEM;
    N->sweep_in_flight_len = 0;
    for (size_t i = 0; i < N->thread_slots; i++)
        if (N->thread_call[i] != NO_THREAD)
            N->sweep_in_flight[N->sweep_in_flight_len++] = N->thread_call[i];
    N->sweep_mark = N->len;
    int64_t settled = 0;
    for (size_t i = 0; i < N->sweep_mark; i++)
        settled += !in_flight(N, N->entries[i].call);
    return settled;
}

static int by_value(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* In sorted[0..n), take one occurrence of h not taken yet (taken[i] set). */
static int take_one(const int64_t *sorted, uint8_t *taken, size_t n, int64_t h)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < n && sorted[i] == h; i++)
        if (!taken[i]) {
            taken[i] = 1;
            return 1;
        }
    return 0;
}

/* Release one external reference of handle h (a Value's, not the nursery's);
 * 1 if it did, 0 if h is no live node with one to release. */
static int release_owned(arena_t *A, int64_t h)
{
    uint32_t s;
    if (!lookup(A, h, &s) || A->ext[s] == 0)
        return 0;
    pg_node_release(A, s);
    return 1;
}

/* Take the nursery entry of h made at or after position `from`, if any. */
static void take_young_entry(nursery_t *N, size_t from, int64_t h)
{
    for (size_t i = from; i < N->len; i++)
        if (N->entries[i].handle == h) {
            memmove(N->entries + i, N->entries + i + 1, (N->len - i - 1) * sizeof *N->entries);
            N->len--;
            return;
        }
}

/* Each of kept takes one nursery entry of its handle (the reference is its
 * Value's now); each of dropped releases one (or, with none left, a Value's
 * own reference); the other entries made before the sweep began are
 * released, unless in flight.  kept and dropped are sorted here: they are
 * the Values Python looked at, usually far fewer than the entries. */
static int64_t sweep_end(arena_t *A, int64_t *kept, int64_t n_kept, int64_t *dropped,
                         int64_t n_dropped)
{
    if (n_kept < 0 || n_dropped < 0 || (n_kept && !kept) || (n_dropped && !dropped))
        return PG_ERR_ARG;
    nursery_t *N = &A->nursery;
    uint8_t *taken = calloc((size_t)(n_kept + n_dropped) + 1, 1);
    if (!taken)
        return PG_ERR_NOMEM;
    uint8_t *kept_taken = taken, *dropped_taken = taken + n_kept;
    if (n_kept > 1) /* an empty array may be NULL, which qsort must not be given */
        qsort(kept, (size_t)n_kept, sizeof *kept, by_value);
    if (n_dropped > 1)
        qsort(dropped, (size_t)n_dropped, sizeof *dropped, by_value);
    size_t mark = N->sweep_mark < N->len ? N->sweep_mark : N->len, keep = 0;
    int64_t released = 0;
    for (size_t i = 0; i < mark; i++) {
        int64_t h = N->entries[i].handle;
        if (take_one(kept, kept_taken, (size_t)n_kept, h))
            continue; /* promoted: the reference stays, now the Value's */
        if (!take_one(dropped, dropped_taken, (size_t)n_dropped, h) &&
            in_flight(N, N->entries[i].call)) {
            N->entries[keep++] = N->entries[i];
            continue;
        }
        released += release_owned(A, h); /* dropped, or lost on its way to a Value */
    }
    /* entries made after the sweep began stay young (no nursery yet: NULL, and
     * nothing to move, which memmove must not be given either)... */
    if (N->len > mark)
        memmove(N->entries + keep, N->entries + mark, (N->len - mark) * sizeof *N->entries);
    N->len = keep + (N->len - mark);
    N->sweep_mark = 0;
    /* ...but another thread's Value may have got into the batch after its
     * call, during the sweep: its entry is one of those */
    for (int64_t i = 0; i < n_kept; i++)
        if (!kept_taken[i])
            take_young_entry(N, keep, kept[i]);
    for (int64_t i = 0; i < n_dropped; i++)
        if (!dropped_taken[i]) {
            take_young_entry(N, keep, dropped[i]); /* else it was a Value's own reference */
            released += release_owned(A, dropped[i]);
        }
    free(taken);
    pg_arena_maybe_shrink(A);
    return released;
}

/* The nursery entry of h that the calling thread's latest call made, taken
 * out (its reference goes to the caller); 0 if none.  Only that one: another
 * entry of h may be another thread's, in flight, and is that thread's to take. */
static int take_my_entry(nursery_t *N, int64_t h)
{
    if (my_thread_slot < 0)
        return 0;
    uint64_t call = N->thread_call[my_thread_slot];
    for (size_t i = N->len; i-- > 0;)
        if (N->entries[i].handle == h && N->entries[i].call == call) {
            if (i < N->sweep_mark)
                N->sweep_mark--;
            memmove(N->entries + i, N->entries + i + 1, (N->len - i - 1) * sizeof *N->entries);
            N->len--;
            return 1;
        }
    return 0;
}

int64_t pg_sweep_begin(void) { PG_LOCKED(sweep_begin(&pg_the_arena)); }

int64_t pg_sweep_end(int64_t *kept, int64_t n_kept, int64_t *dropped, int64_t n_dropped)
{
    PG_LOCKED(sweep_end(&pg_the_arena, kept, n_kept, dropped, n_dropped));
}

static int64_t set_python_layer(arena_t *A, int64_t on)
{
    int64_t old = A->python_layer;
    A->python_layer = on != 0;
    return old;
}

int64_t pg_python_layer(int64_t on) { PG_LOCKED(set_python_layer(&pg_the_arena, on)); }

/* --- stateful nodes ------------------------------------------------------------- */

static int64_t set_stateful(arena_t *A, int64_t h)
{
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    A->flags[s] |= FLAG_STATEFUL;
    A->mutations++;
    return A->refs[s];
}

int64_t pg_set_stateful(int64_t h) { PG_LOCKED(set_stateful(&pg_the_arena, h)); }

/* --- validated parameters ----------------------------------------------------
 * A training loop calls pg_mlp once per sample, and an optimizer's step once
 * per step, with the same parameter handles, and validating them all (range, generation, liveness, and whether
 * any is stateful) every time costs about what the neurons' arithmetic does.
 * So the last few sets validated are kept with the arena's `mutations` count
 * of the time: while no node has been freed or made stateful since, the same
 * handles (compared with memcmp) are still valid, name the same slots, and
 * are still all stateless or not. */




static int same_set(const arena_t *A, const param_set_t *set, const int64_t *handles, size_t count)
{
    /* an empty set's handles may be NULL, which memcmp must not be given */
    return set->valid && set->count == count && set->mutations == A->mutations &&
           (count == 0 || memcmp(set->handles, handles, count * sizeof *handles) == 0);
}

/* The slots of handles[0..count) and whether any is stateful: from a set
 * validated before, or validated now (and kept).  PG_OK, PG_ERR_HANDLE if
 * one is bad, PG_ERR_NOMEM.  *slots stays valid until the arena unlocks. */
int64_t pg_lookup_params(arena_t *A, const int64_t *handles, size_t count,
                         const uint32_t **slots, int *stateful)
{
    for (unsigned i = 0; i < PARAM_SETS; i++)
        if (same_set(A, &A->param_sets[i], handles, count)) {
            *slots = A->param_sets[i].slots;
            *stateful = A->param_sets[i].stateful;
            return PG_OK;
        }
    param_set_t *set = &A->param_sets[A->param_sets_next++ % PARAM_SETS];
    set->valid = 0;
    if (count > set->capacity) {
        int64_t *h = realloc(set->handles, count * sizeof *h);
        if (h)
            set->handles = h;
        uint32_t *s = realloc(set->slots, count * sizeof *s);
        if (s)
            set->slots = s;
        if (!h || !s)
            return PG_ERR_NOMEM;
        set->capacity = count;
    }
    if (!pg_lookup_all(A, handles, (int64_t)count, set->slots))
        return PG_ERR_HANDLE;
    if (count) /* (handles may be NULL then) */
        memcpy(set->handles, handles, count * sizeof *handles);
    set->count = count;
    set->mutations = A->mutations;
    set->stateful = pg_any_stateful(A, set->slots, count);
    set->valid = 1;
    *slots = set->slots;
    *stateful = set->stateful;
    return PG_OK;
}

/* --- the C API: references and node fields ----------------------------------------- */

static int64_t retain(arena_t *A, int64_t h)
{
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    if (A->ext[s] == UINT32_MAX)
        return PG_ERR_ARG;
    A->ext[s]++;
    return PG_OK;
}

/* An unmatched release (ext already 0) is refused, not obeyed: the node is
 * then alive only through its parents, which hold exact counts. */
static int64_t release(arena_t *A, int64_t h)
{
    uint32_t s;
    if (!lookup(A, h, &s) || A->ext[s] == 0)
        return PG_ERR_HANDLE;
    take_my_entry(&A->nursery, h); /* if the nursery held this reference, it no longer does */
    pg_node_release(A, s);
    pg_arena_maybe_shrink(A);
    return PG_OK;
}

static int64_t release_many(arena_t *A, const int64_t *handles, int64_t count)
{
    if (count < 0 || (count > 0 && !handles))
        return PG_ERR_ARG;
    int64_t refused = 0;
    for (int64_t i = 0; i < count; i++) {
        uint32_t s;
        if (lookup(A, handles[i], &s) && A->ext[s] > 0)
            pg_node_release(A, s);
        else
            refused++;
    }
    pg_arena_maybe_shrink(A);
    return refused;
}

int64_t pg_retain(int64_t h) { PG_LOCKED(retain(&pg_the_arena, h)); }
int64_t pg_release(int64_t h) { PG_LOCKED(release(&pg_the_arena, h)); }

int64_t pg_release_many(const int64_t *handles, int64_t count)
{
    PG_LOCKED(release_many(&pg_the_arena, handles, count));
}

/* Read one double field; NaN for a bad handle (pg_valid tells them apart). */
static double read_field(double *const *field, int64_t h)
{
    pg_lock();
    uint32_t s;
    double v = lookup(&pg_the_arena, h, &s) ? (*field)[s] : NAN;
    pg_unlock();
    return v;
}

static int64_t write_field(double *const *field, int64_t h, double value)
{
    pg_lock();
    uint32_t s;
    int ok = lookup(&pg_the_arena, h, &s);
    if (ok)
        (*field)[s] = value;
    pg_the_arena.data_writes += ok && field == &pg_the_arena.data;
    pg_unlock();
    return ok ? PG_OK : PG_ERR_HANDLE;
}

double pg_data(int64_t h) { return read_field(&pg_the_arena.data, h); }
double pg_grad(int64_t h) { return read_field(&pg_the_arena.grad, h); }
double pg_exponent(int64_t h) { return read_field(&pg_the_arena.exponent, h); }
int64_t pg_set_data(int64_t h, double value) { return write_field(&pg_the_arena.data, h, value); }
int64_t pg_set_grad(int64_t h, double value) { return write_field(&pg_the_arena.grad, h, value); }

static int64_t set_data_many(arena_t *A, const int64_t *handles, const double *values,
                             int64_t count)
{
    if (count < 0 || (count > 0 && (!handles || !values)))
        return PG_ERR_ARG;
    uint32_t s;
    for (int64_t i = 0; i < count; i++)
        if (!lookup(A, handles[i], &s))
            return PG_ERR_HANDLE;
    for (int64_t i = 0; i < count; i++) /* all valid: each one's slot, as lookup() reads it */
        A->data[(uint32_t)(handles[i] >> PG_GEN_BITS)] = values[i];
    A->data_writes++;
    return PG_OK;
}

int64_t pg_set_data_many(const int64_t *handles, const double *values, int64_t count)
{
    PG_LOCKED(set_data_many(&pg_the_arena, handles, values, count));
}

enum node_field { FIELD_OP, FIELD_FLAGS, FIELD_ARITY, FIELD_REFS, FIELD_EXT };

static int64_t read_int_field(arena_t *A, int64_t h, enum node_field field)
{
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    switch (field) {
    case FIELD_OP: return A->op[s];
    case FIELD_FLAGS: return A->flags[s] & (PG_FLAG_INT_EXPONENT | PG_FLAG_BOOL_EXPONENT);
    case FIELD_ARITY: return A->arity[s];
    case FIELD_REFS: return A->refs[s];
    case FIELD_EXT: return A->ext[s];
    }
    return PG_ERR_ARG;
}

int64_t pg_valid(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_OP) > 0); }
int64_t pg_op(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_OP)); }
int64_t pg_flags(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_FLAGS)); }
int64_t pg_child_count(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_ARITY)); }
int64_t pg_internal_refs(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_REFS)); }
int64_t pg_external_refs(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_EXT)); }

static int64_t child_retain(arena_t *A, int64_t h, int64_t i)
{
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    if (i < 0 || i >= A->arity[s])
        return PG_ERR_ARG;
    uint32_t c = children_of(A, s)[i];
    if (A->ext[c] == UINT32_MAX)
        return PG_ERR_ARG;
    if (pg_nursery_reserve(A, 1) < 0)
        return PG_ERR_NOMEM;
    A->ext[c]++;
    int64_t child = handle_of(A, c);
    return pg_hand_out(A, child, &child, 1, 0);
}

int64_t pg_child_retain(int64_t h, int64_t i) { PG_LOCKED(child_retain(&pg_the_arena, h, i)); }

/* --- bookkeeping ------------------------------------------------------------------ */

int64_t pg_live_nodes(void) { PG_LOCKED((int64_t)pg_the_arena.live); }
int64_t pg_slots_in_use(void) { PG_LOCKED((int64_t)pg_the_arena.used); }

static int64_t set_node_limit(arena_t *A, int64_t limit)
{
    if (limit < 0)
        return PG_ERR_ARG;
    int64_t old = (int64_t)A->limit;
    A->limit = (uint64_t)limit;
    return old;
}

int64_t pg_set_node_limit(int64_t limit) { PG_LOCKED(set_node_limit(&pg_the_arena, limit)); }
