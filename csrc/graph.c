/* Graph walks: topological order, backward, and tapes (recorded orders). */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* --- topological order ----------------------------------------------------- */

uint32_t pg_new_epoch(arena_t *A)
{
    ASSERT_LOCKED();
    if (++A->epoch == 0) { /* wrapped: old stamps could collide */
        memset(A->mark, 0, (size_t)A->used * sizeof *A->mark);
        A->epoch = 1;
    }
    return A->epoch;
}

/* Post-order DFS from `root` into A->walk_order, children before parents, the
 * root last.  Iterative, with an explicit stack, so depth costs no C stack.
 * Marks are stamped with a fresh epoch, so nothing is cleared between walks. */
static int64_t topo_sort(arena_t *A, uint32_t root, uint32_t *count, uint32_t *custom_ops)
{
    int64_t rc = pg_walk_reserve(A);
    if (rc < 0)
        return rc;
    const uint32_t epoch = pg_new_epoch(A);
    uint32_t *order = A->walk_order, *stack = A->walk_stack, *next = A->walk_next;
    uint32_t n_order = 0, depth = 0, customs = 0;

    A->mark[root] = epoch;
    stack[depth] = root;
    next[depth++] = 0;
    while (depth) {
        uint32_t node = stack[depth - 1], i = next[depth - 1], arity = A->arity[node];
        const uint32_t *children = children_of(A, node);
        while (i < arity && A->mark[children[i]] == epoch) /* seen: most of a neuron's */
            i++;
        if (i == arity) { /* every child is ordered: the node goes next */
            customs += runs_custom_backward(A, node);
            order[n_order++] = node;
            depth--;
            continue;
        }
        uint32_t child = children[i];
        next[depth - 1] = i + 1;
        A->mark[child] = epoch;
        if (A->arity[child] == 0) { /* a leaf is ordered at once: no push and pop */
            customs += runs_custom_backward(A, child);
            order[n_order++] = child;
        } else {
            stack[depth] = child;
            next[depth++] = 0;
        }
    }
    *count = n_order;
    *custom_ops = customs;
    return PG_OK;
}

/* --- backward -------------------------------------------------------------- */

static int64_t sweep(arena_t *A, const uint32_t *order, uint32_t count)
{
    for (uint32_t i = count; i-- > 0;) {
        int64_t rc = op_backward(A, order[i]);
        if (rc < 0)
            return rc;
    }
    return PG_OK;
}

static int64_t backward(arena_t *A, int64_t h)
{
    uint32_t root, count, custom_ops;
    if (!lookup(A, h, &root))
        return PG_ERR_HANDLE;
    int64_t rc = topo_sort(A, root, &count, &custom_ops);
    if (rc < 0)
        return rc;
    if (custom_ops)
        return PG_CUSTOM_OPS;
    A->grad[root] = 1.0;
    return sweep(A, A->walk_order, count);
}

static int64_t node_backward(arena_t *A, int64_t h)
{
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    return op_backward(A, s); /* a custom op has no built-in step: a no-op */
}

int64_t pg_backward(int64_t root) { PG_LOCKED(backward(&pg_the_arena, root)); }
int64_t pg_node_backward(int64_t h) { PG_LOCKED(node_backward(&pg_the_arena, h)); }

/* --- tapes -----------------------------------------------------------------
 * A tape is a topological order that holds a reference to each of its nodes,
 * so it stays valid however the caller's handles come and go.  Tape ids carry
 * a generation like node handles. */

typedef struct tape {
    uint32_t *order; /* NULL when the entry is free */
    uint32_t count;
    uint32_t gen;
    uint32_t custom_ops;   /* how many of its nodes run a Python backward ... */
    uint64_t custom_epoch; /* ... as counted at this arena custom_epoch */
    uint32_t *skip;        /* leaves of the tape that replay gives no gradient */
    uint32_t n_skip;
    pg_plan *plan;         /* how to replay it: built on first use, NULL until then */
} tape_t;

/* Tape ids are gen << 32 | index, under 2^52: far from PG_PENDING's range. */
#define TAPE_GEN_MASK 0xfffffu

static int64_t tape_id(const arena_t *A, uint32_t i)
{
    return ((int64_t)A->tapes[i].gen << 32) | i;
}

static tape_t *tape_lookup(arena_t *A, int64_t id)
{
    if (id < 0)
        return NULL;
    uint32_t i = (uint32_t)(id & 0xffffffffu);
    if (i >= A->tape_slots || !A->tapes[i].order || A->tapes[i].gen != (uint32_t)(id >> 32))
        return NULL;
    return &A->tapes[i];
}

static int64_t tape_slot(arena_t *A, uint32_t *slot)
{
    ASSERT_LOCKED();
    for (uint32_t i = 0; i < A->tape_slots; i++)
        if (!A->tapes[i].order) {
            *slot = i;
            return PG_OK;
        }
    uint32_t grown = A->tape_slots ? A->tape_slots * 2 : 8;
    if (grown > 0x7fffffffu)
        return PG_ERR_NOMEM;
    tape_t *t = realloc(A->tapes, grown * sizeof *t);
    if (!t)
        return PG_ERR_NOMEM;
    memset(t + A->tape_slots, 0, (grown - A->tape_slots) * sizeof *t);
    A->tapes = t;
    *slot = A->tape_slots;
    A->tape_slots = grown;
    return PG_OK;
}

static int64_t tape_record(arena_t *A, int64_t h)
{
    uint32_t root, count, slot, custom_ops;
    if (!lookup(A, h, &root))
        return PG_ERR_HANDLE;
    int64_t rc = topo_sort(A, root, &count, &custom_ops);
    if (rc < 0)
        return rc;
    if ((rc = tape_slot(A, &slot)) < 0)
        return rc;
    uint32_t *order = malloc((size_t)count * sizeof *order);
    if (!order)
        return PG_ERR_NOMEM;
    for (uint32_t i = 0; i < count; i++)
        if (A->refs[A->walk_order[i]] == UINT32_MAX) {
            free(order);
            return PG_ERR_ARG;
        }
    memcpy(order, A->walk_order, (size_t)count * sizeof *order);
    for (uint32_t i = 0; i < count; i++) {
        A->refs[order[i]]++;
        A->flags[order[i]] |= FLAG_TAPED;
    }
    A->tapes[slot].order = order;
    A->tapes[slot].count = count;
    A->tapes[slot].custom_ops = custom_ops;
    A->tapes[slot].custom_epoch = A->custom_epoch;
    /* A stateful root now has a reference: its Python state must be held. */
    return pg_hand_out(A, tape_id(A, slot), NULL, 0, (A->flags[root] & FLAG_STATEFUL) != 0);
}

static int64_t tape_free(arena_t *A, int64_t id)
{
    tape_t *t = tape_lookup(A, id);
    if (!t)
        return PG_ERR_TAPE;
    /* Root first: parents go before children, so each release frees at most
     * the node itself and the walk never revisits a freed slot. */
    for (uint32_t i = t->count; i-- > 0;)
        pg_node_decref(A, t->order[i]);
    free(t->order);
    free(t->skip);
    pg_plan_free(t->plan);
    t->order = NULL;
    t->skip = NULL;
    t->plan = NULL;
    t->count = t->n_skip = 0;
    t->gen = (t->gen + 1) & TAPE_GEN_MASK;
    pg_arena_maybe_shrink(A);
    return PG_OK;
}

static int64_t tape_length(arena_t *A, int64_t id)
{
    tape_t *t = tape_lookup(A, id);
    return t ? (int64_t)t->count : PG_ERR_TAPE;
}

static int64_t tape_node(arena_t *A, int64_t id, int64_t i)
{
    tape_t *t = tape_lookup(A, id);
    if (!t)
        return PG_ERR_TAPE;
    if (i < 0 || i >= t->count)
        return PG_ERR_ARG;
    return handle_of(A, t->order[i]);
}

static int64_t tape_backward(arena_t *A, int64_t id, int64_t end)
{
    tape_t *t = tape_lookup(A, id);
    if (!t)
        return PG_ERR_TAPE;
    if (end < 0 || end > t->count)
        return PG_ERR_ARG;
    if (end == t->count && end > 0)
        A->grad[t->order[end - 1]] = 1.0; /* a fresh sweep seeds the root */
    for (int64_t i = end; i-- > 0;) {
        uint32_t n = t->order[i];
        if (runs_custom_backward(A, n))
            return i + 1;
        int64_t rc = op_backward(A, n);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A node can get a custom backward after recording (v._backward = fn), so the
 * count kept from recording is recounted whenever a node on some tape got one
 * since (arena custom_epoch, bumped only for FLAG_TAPED nodes): O(1) per
 * replay while nobody gives recorded nodes a Python backward. */
static uint32_t count_custom_ops(const arena_t *A, tape_t *t)
{
    if (t->custom_epoch != A->custom_epoch) {
        uint32_t custom_ops = 0;
        for (uint32_t i = 0; i < t->count; i++)
            custom_ops += runs_custom_backward(A, t->order[i]);
        t->custom_ops = custom_ops;
        t->custom_epoch = A->custom_epoch;
    }
    return t->custom_ops;
}

static int64_t tape_custom_ops(arena_t *A, int64_t id)
{
    tape_t *t = tape_lookup(A, id);
    return t ? (int64_t)count_custom_ops(A, t) : PG_ERR_TAPE;
}

/* The replay plan of tape `id`, built on first use: PG_OK, or PG_ERR_TAPE for
 * no such tape, PG_CUSTOM_OPS for one holding custom ops (which cannot be
 * recomputed: nothing is changed), or the error building it gave. */
static int64_t tape_plan(arena_t *A, int64_t id, pg_plan **plan)
{
    tape_t *t = tape_lookup(A, id);
    if (!t)
        return PG_ERR_TAPE;
    if (count_custom_ops(A, t))
        return PG_CUSTOM_OPS;
    if (!t->plan) {
        int64_t rc = pg_plan_build(A, t->order, t->count, t->skip, t->n_skip, &t->plan);
        if (rc < 0)
            return rc;
    }
    *plan = t->plan;
    return PG_OK;
}

/* Recompute every node from its children, leaves first. */
static int64_t tape_forward(arena_t *A, int64_t id)
{
    pg_plan *plan;
    int64_t rc = tape_plan(A, id, &plan);
    return rc < 0 ? rc : pg_plan_forward(A, plan);
}

/* zero_grad over the whole graph, then backward from the root. */
static int64_t tape_replay_backward(arena_t *A, int64_t id)
{
    pg_plan *plan;
    int64_t rc = tape_plan(A, id, &plan);
    return rc < 0 ? rc : pg_plan_backward(A, plan);
}

static int64_t tape_groups(arena_t *A, int64_t id)
{
    pg_plan *plan;
    int64_t rc = tape_plan(A, id, &plan);
    return rc < 0 ? rc : pg_plan_groups(plan);
}

/* The leaves among handles[0..count) that are on the tape (not its root)
 * get no gradient from replays: returns how many. */
static int64_t tape_skip_grads(arena_t *A, int64_t id, const int64_t *handles, int64_t count)
{
    tape_t *t = tape_lookup(A, id);
    if (!t)
        return PG_ERR_TAPE;
    if (count < 0 || count > (int64_t)MAX_SLOTS || (count > 0 && !handles))
        return PG_ERR_ARG;
    uint32_t *skip = malloc((size_t)(count ? count : 1) * sizeof *skip);
    if (!skip)
        return PG_ERR_NOMEM;
    const uint32_t on_tape = pg_new_epoch(A);
    for (uint32_t i = 0; i + 1 < t->count; i++) /* the root is never skipped */
        A->mark[t->order[i]] = on_tape;
    uint32_t n_skip = 0;
    for (int64_t i = 0; i < count; i++) {
        uint32_t s;
        if (!lookup(A, handles[i], &s)) {
            free(skip);
            return PG_ERR_HANDLE;
        }
        if (A->mark[s] == on_tape && A->op[s] == PG_OP_LEAF) {
            A->mark[s] = 0; /* each once */
            skip[n_skip++] = s;
        }
    }
    free(t->skip);
    pg_plan_free(t->plan); /* the next replay plans anew, with these */
    t->skip = skip;
    t->n_skip = n_skip;
    t->plan = NULL;
    return n_skip;
}

/* The first position where two tapes differ in op, arity, exponent or value
 * (bit for bit), or the common length if they are the same. */
static int64_t tape_diff(arena_t *A, int64_t id_a, int64_t id_b)
{
    tape_t *a = tape_lookup(A, id_a), *b = tape_lookup(A, id_b);
    if (!a || !b)
        return PG_ERR_TAPE;
    uint32_t n = a->count < b->count ? a->count : b->count;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t x = a->order[i], y = b->order[i];
        if (A->op[x] != A->op[y] || A->arity[x] != A->arity[y] ||
            memcmp(&A->exponent[x], &A->exponent[y], sizeof(double)) != 0 ||
            memcmp(&A->data[x], &A->data[y], sizeof(double)) != 0)
            return i;
    }
    return n;
}

int64_t pg_tape_custom_ops(int64_t tape) { PG_LOCKED(tape_custom_ops(&pg_the_arena, tape)); }
int64_t pg_tape_forward(int64_t tape) { PG_LOCKED(tape_forward(&pg_the_arena, tape)); }
int64_t pg_tape_replay_backward(int64_t tape)
{
    PG_LOCKED(tape_replay_backward(&pg_the_arena, tape));
}
int64_t pg_tape_diff(int64_t a, int64_t b) { PG_LOCKED(tape_diff(&pg_the_arena, a, b)); }
int64_t pg_tape_groups(int64_t tape) { PG_LOCKED(tape_groups(&pg_the_arena, tape)); }
int64_t pg_tape_skip_grads(int64_t tape, const int64_t *handles, int64_t count)
{
    PG_LOCKED(tape_skip_grads(&pg_the_arena, tape, handles, count));
}

int64_t pg_tape_record(int64_t root) { PG_LOCKED(tape_record(&pg_the_arena, root)); }
int64_t pg_tape_free(int64_t tape) { PG_LOCKED(tape_free(&pg_the_arena, tape)); }

int64_t pg_tape_record_into(pg_tape_ref *ref, int64_t root)
{
    if (!ref || ref->recorded)
        return PG_ERR_ARG;
    int64_t id = pg_tape_record(root);
    if (id >= 0 || id <= PG_PENDING / 2) /* a tape id, maybe PG_PENDING-flagged */
        *ref = (pg_tape_ref){1, id >= 0 ? id : id - PG_PENDING};
    return id;
}

void pg_tape_ref_clear(pg_tape_ref *ref)
{
    if (ref && ref->recorded) {
        ref->recorded = 0;
        pg_tape_free(ref->tape);
    }
}
int64_t pg_tape_length(int64_t tape) { PG_LOCKED(tape_length(&pg_the_arena, tape)); }
int64_t pg_tape_node(int64_t tape, int64_t i) { PG_LOCKED(tape_node(&pg_the_arena, tape, i)); }
int64_t pg_tape_backward(int64_t tape, int64_t end)
{
    PG_LOCKED(tape_backward(&pg_the_arena, tape, end));
}
