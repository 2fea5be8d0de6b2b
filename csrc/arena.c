/* The node arena: storage, handles, reference counts, reclamation. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

arena_t pg_the_arena = {.free_head = NO_SLOT};
static pthread_mutex_t arena_mutex = PTHREAD_MUTEX_INITIALIZER;

void pg_lock(void) { pthread_mutex_lock(&arena_mutex); }
void pg_unlock(void) { pthread_mutex_unlock(&arena_mutex); }

/* no_grad is per thread, as in PyTorch. */
static _Thread_local int grad_disabled;

int pg_grad_enabled(void) { return !grad_disabled; }

int64_t pg_set_grad_enabled(int64_t enabled)
{
    int64_t previous = !grad_disabled;
    grad_disabled = !enabled;
    return previous;
}

#ifdef PG_DEBUG
#include <assert.h>
#define DEBUG_ASSERT(cond) assert(cond)
#else
#define DEBUG_ASSERT(cond) ((void)0)
#endif

/* --- growth --------------------------------------------------------------- */

/* realloc `*p` to `count` elements of `size` bytes; leaves *p alone on failure. */
static int grow_array(void *p, size_t count, size_t size)
{
    void **ptr = (void **)p;
    void *q = realloc(*ptr, count * size);
    if (!q)
        return 0;
    *ptr = q;
    return 1;
}

/* Double the slot arrays.  Handles stay valid: they are indices, not pointers. */
static int64_t grow_slots(arena_t *A)
{
    if (A->capacity >= MAX_SLOTS)
        return PG_ERR_NOMEM;
    size_t cap = A->capacity ? (size_t)A->capacity * 2 : 1024;
    if (cap > MAX_SLOTS)
        cap = MAX_SLOTS;
    /* Every array is grown before capacity moves, so a failure part-way
     * leaves some arrays larger than needed and nothing inconsistent. */
    if (!grow_array(&A->data, cap, sizeof *A->data) ||
        !grow_array(&A->grad, cap, sizeof *A->grad) ||
        !grow_array(&A->exponent, cap, sizeof *A->exponent) ||
        !grow_array(&A->kids, cap, sizeof *A->kids) ||
        !grow_array(&A->kids_ext, cap, sizeof *A->kids_ext) ||
        !grow_array(&A->arity, cap, sizeof *A->arity) ||
        !grow_array(&A->gen, cap, sizeof *A->gen) ||
        !grow_array(&A->refs, cap, sizeof *A->refs) ||
        !grow_array(&A->ext, cap, sizeof *A->ext) ||
        !grow_array(&A->mark, cap, sizeof *A->mark) ||
        !grow_array(&A->link, cap, sizeof *A->link) ||
        !grow_array(&A->op, cap, sizeof *A->op) ||
        !grow_array(&A->flags, cap, sizeof *A->flags))
        return PG_ERR_NOMEM;
    A->capacity = (uint32_t)cap;
    return PG_OK;
}

/* Size the graph-walk scratch for a walk over every live node. */
int64_t pg_walk_reserve(arena_t *A)
{
    size_t need = (size_t)A->live + 1;
    if (need <= A->walk_cap)
        return PG_OK;
    size_t cap = A->walk_cap ? A->walk_cap : 1024;
    while (cap < need)
        cap *= 2;
    if (!grow_array(&A->walk_order, cap, sizeof *A->walk_order) ||
        !grow_array(&A->walk_stack, cap, sizeof *A->walk_stack) ||
        !grow_array(&A->walk_next, cap, sizeof *A->walk_next))
        return PG_ERR_NOMEM;
    A->walk_cap = cap;
    return PG_OK;
}

/* --- allocation and release ------------------------------------------------ */

static int64_t take_slot(arena_t *A, uint32_t *slot)
{
    if (A->limit && A->live >= A->limit)
        return PG_ERR_NOMEM;
    if (A->free_head != NO_SLOT) {
        *slot = A->free_head;
        A->free_head = A->link[*slot];
    } else {
        if (A->used == A->capacity) {
            int64_t rc = grow_slots(A);
            if (rc < 0)
                return rc;
        }
        *slot = A->used++;
        A->gen[*slot] = 0;
    }
    A->live++;
    return PG_OK;
}

int64_t pg_node_new(arena_t *A, uint8_t op, double value, const uint32_t *kids,
                    uint32_t arity, uint32_t *slot_out)
{
    for (uint32_t i = 0; i < arity; i++)
        if (A->refs[kids[i]] > UINT32_MAX - arity)
            return PG_ERR_ARG; /* a reference count would overflow */
    uint32_t *ext = NULL;
    if (arity > 2) {
        ext = malloc(arity * sizeof *ext);
        if (!ext)
            return PG_ERR_NOMEM;
        memcpy(ext, kids, arity * sizeof *ext);
    }
    uint32_t s;
    int64_t rc = take_slot(A, &s);
    if (rc < 0) {
        free(ext);
        return rc;
    }
    A->data[s] = value;
    A->grad[s] = 0.0;
    A->exponent[s] = 0.0;
    A->arity[s] = arity;
    A->kids[s][0] = arity > 0 && !ext ? kids[0] : NO_SLOT;
    A->kids[s][1] = arity > 1 && !ext ? kids[1] : NO_SLOT;
    A->kids_ext[s] = ext;
    A->refs[s] = 0;
    A->ext[s] = 1;
    A->mark[s] = 0;
    A->op[s] = op;
    A->flags[s] = 0;
    for (uint32_t i = 0; i < arity; i++)
        A->refs[kids[i]]++;
    if (slot_out)
        *slot_out = s;
    return handle_of(A, s);
}

static void remember_python_freed(arena_t *A, int64_t handle)
{
    if (A->py_freed_len == A->py_freed_cap) {
        size_t cap = A->py_freed_cap ? A->py_freed_cap * 2 : 64;
        if (!grow_array(&A->py_freed, cap, sizeof *A->py_freed))
            return; /* the Python registry keeps one stale entry; harmless */
        A->py_freed_cap = cap;
    }
    A->py_freed[A->py_freed_len++] = handle;
}

static void free_slot(arena_t *A, uint32_t s)
{
    if (A->op[s] == PG_OP_PYTHON)
        remember_python_freed(A, handle_of(A, s));
    free(A->kids_ext[s]);
    A->kids_ext[s] = NULL;
#ifdef PG_DEBUG
    A->data[s] = A->grad[s] = NAN; /* poison */
    A->kids[s][0] = A->kids[s][1] = NO_SLOT;
#endif
    A->arity[s] = 0;
    A->op[s] = PG_OP_FREE;
    A->gen[s]++;
    A->link[s] = A->free_head;
    A->free_head = s;
    A->live--;
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
        const uint32_t *kids = children_of(A, n);
        for (uint32_t i = 0; i < A->arity[n]; i++) {
            uint32_t c = kids[i];
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
    const uint32_t *kids = children_of(A, s);
    for (uint32_t i = 0; i < A->arity[s]; i++)
        pg_node_decref(A, kids[i]);
    free(A->kids_ext[s]);
    A->kids_ext[s] = NULL;
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
    DEBUG_ASSERT(A->ext[s] > 0);
    if (--A->ext[s] == 0 && A->refs[s] == 0)
        free_unreferenced(A, s);
}

/* --- the C API: references and node fields --------------------------------- */

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
    pg_node_release(A, s);
    return PG_OK;
}

static int64_t release_many(arena_t *A, const int64_t *handles, int64_t count)
{
    if (count < 0 || (count > 0 && !handles))
        return PG_ERR_ARG;
    int64_t refused = 0;
    for (int64_t i = 0; i < count; i++)
        refused += release(A, handles[i]) < 0;
    return refused;
}

int64_t pg_retain(int64_t h) { PG_LOCKED(retain(&pg_the_arena, h)); }
int64_t pg_release(int64_t h) { PG_LOCKED(release(&pg_the_arena, h)); }
int64_t pg_release_many(const int64_t *handles, int64_t count)
{
    PG_LOCKED(release_many(&pg_the_arena, handles, count));
}

/* Read one double field; NaN for a bad handle (pg_valid tells them apart). */
static double read_field(const double *const *field, int64_t h)
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
    pg_unlock();
    return ok ? PG_OK : PG_ERR_HANDLE;
}

double pg_data(int64_t h) { return read_field((const double *const *)&pg_the_arena.data, h); }
double pg_grad(int64_t h) { return read_field((const double *const *)&pg_the_arena.grad, h); }
double pg_exponent(int64_t h) { return read_field((const double *const *)&pg_the_arena.exponent, h); }
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
    for (int64_t i = 0; i < count; i++) {
        lookup(A, handles[i], &s);
        A->data[s] = values[i];
    }
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
    case FIELD_FLAGS: return A->flags[s];
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
int64_t pg_parent_refs(int64_t h) { PG_LOCKED(read_int_field(&pg_the_arena, h, FIELD_REFS)); }
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
    A->ext[c]++;
    return handle_of(A, c);
}

int64_t pg_child_retain(int64_t h, int64_t i) { PG_LOCKED(child_retain(&pg_the_arena, h, i)); }

/* --- bookkeeping ----------------------------------------------------------- */

int64_t pg_live_nodes(void) { PG_LOCKED((int64_t)pg_the_arena.live); }

static int64_t set_node_limit(arena_t *A, int64_t limit)
{
    if (limit < 0)
        return PG_ERR_ARG;
    int64_t old = (int64_t)A->limit;
    A->limit = (uint64_t)limit;
    return old;
}

int64_t pg_set_node_limit(int64_t limit) { PG_LOCKED(set_node_limit(&pg_the_arena, limit)); }

static int64_t take_freed_python(arena_t *A, int64_t *out, int64_t cap)
{
    if (cap < 0 || (cap > 0 && !out))
        return PG_ERR_ARG;
    size_t n = A->py_freed_len < (size_t)cap ? A->py_freed_len : (size_t)cap;
    A->py_freed_len -= n;
    if (n)
        memcpy(out, A->py_freed + A->py_freed_len, n * sizeof *out);
    return (int64_t)n;
}

int64_t pg_take_freed_python(int64_t *out, int64_t cap)
{
    PG_LOCKED(take_freed_python(&pg_the_arena, out, cap));
}
