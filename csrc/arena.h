/* Private to csrc/: the arena's layout and the helpers the .c files share. */
#ifndef PG_ARENA_H
#define PG_ARENA_H
#include <stddef.h>
#include <stdint.h>

/* The extension is built with -fvisibility=hidden: the C API (everything
 * pygrad.h declares) is what it exports; the pg_ helpers below stay inside,
 * so that calls between the .c files bind directly, not through the PLT.
 * (pygrad.h itself stays plain C for cffi's parser.) */
#pragma GCC visibility push(default)
#include "pygrad.h"
#pragma GCC visibility pop

#define NO_SLOT UINT32_MAX
#define MAX_SLOTS (UINT32_MAX - 1u)

/* Flags the C core keeps for the Python layer (bits above the POW flags of
 * pygrad.h); pg_pow_const never accepts them from a caller. */
#define FLAG_STATEFUL 0x10        /* the node has Python state (pg_set_stateful) */
#define FLAG_CUSTOM_BACKWARD 0x20 /* a Python backward replaces the built-in one */
#define FLAG_TAPED 0x40           /* some tape holds (or held) the node: giving it a
                                   * custom backward must make tapes recount theirs */

/* Nodes live in parallel arrays indexed by slot.  Slots [0, used) have been
 * handed out at least once; freed ones are chained through `link`. */
/* The nursery: the handles handed to the Python layer and not yet adopted
 * by a Value (arena.c; "the Python layer" in pygrad.h). */
typedef struct {
    struct nursery_entry *entries; /* (handle, call) */
    size_t len, cap;
    uint64_t calls;            /* handing-out calls so far: the ids of calls */
    uint64_t *thread_call;     /* each thread's latest call; NO_THREAD: a free slot */
    size_t thread_slots;
    /* the sweep in progress: entries before sweep_mark, calls not in flight */
    uint64_t *sweep_in_flight;
    size_t sweep_in_flight_len, sweep_mark;
} nursery_t;

/* A set of parameter handles pg_mlp validated (arena.c, pg_lookup_params). */
#define PARAM_SETS 8
typedef struct param_set {
    int64_t *handles; /* a copy of the set */
    uint32_t *slots;  /* their slots */
    size_t count, capacity;
    uint64_t mutations; /* A->mutations when validated */
    int stateful;       /* any of them is */
    int valid;
} param_set_t;

/* Freed children arrays wait in free lists by size class, 4 to 2^CHILDREN_POOLED_LOG2. */
#define CHILDREN_POOLED_LOG2 16

typedef struct {
    double *data;          /* forward value */
    double *grad;          /* accumulated d(root)/d(node) */
    double *exponent;      /* POW_CONST's constant exponent */
    uint32_t (*children)[2]; /* the children of nodes with arity <= 2 */
    uint32_t **children_ext; /* ... with arity > 2 (malloc'd), else NULL */
    uint32_t *arity;       /* how many children: "arity" is always that count */
    uint16_t *gen;         /* generation: bumped on free, checked on every lookup
                            * (mod 2^PG_GEN_BITS, which divides 2^16); never shrunk
                            * (gen_slots of them), so that a slot cut off by a shrink
                            * and grown again keeps its generation and old handles
                            * to it stay stale */
    uint32_t *refs;        /* references from parents and tapes: exact, C-managed */
    uint32_t *ext;         /* references held by callers (Values, anchors); kept
                            * apart so that a misbehaving caller's extra release
                            * can never free a node a parent still uses */
    uint32_t *mark;        /* epoch of the last graph walk that visited the node */
    uint32_t *link;        /* free list / release worklist chain */
    uint8_t *op;           /* enum pg_op */
    uint8_t *flags;        /* PG_FLAG_* and FLAG_* */
    uint32_t capacity, used, gen_slots;
    uint32_t free_head, free_tail; /* the free list, through `link` */
    uint64_t live, limit;  /* limit 0 = none */
    uint64_t frees_since_shrink; /* paces pg_arena_maybe_shrink */
    uint32_t epoch;
    /* scratch for graph walks, sized to `live` on demand */
    uint32_t *walk_order, *walk_stack, *walk_next;
    size_t walk_cap;
    /* bumped whenever a node on a tape (FLAG_TAPED) gets a custom backward,
     * so that a tape knows when its count of custom ops may be stale */
    uint64_t custom_epoch;
    int python_layer; /* pg_python_layer: handles go through the nursery */
    nursery_t nursery;
    /* bumped whenever a node is freed or made stateful: a set of handles
     * validated (and found not stateful) at one count is still so at the
     * same count (nn.c caches pg_mlp's parameters by it) */
    uint64_t mutations;
    /* bumped by every write of existing nodes' values (set_data, optimizer
     * steps, replays): a replay's backward knows the values its forward
     * gathered are still the nodes' */
    uint64_t data_writes;
    /* tapes (graph.c): an entry per tape id, free when its order is NULL */
    struct tape *tapes;
    uint32_t tape_slots;
    void *children_pool[CHILDREN_POOLED_LOG2 + 1]; /* freed children arrays (arena.c) */
    size_t children_pool_bytes;
    param_set_t param_sets[PARAM_SETS];      /* pg_lookup_params' cache, round robin */
    unsigned param_sets_next;
    /* scratch for the C API calls that need some (nn.c), kept between calls */
    void *scratch;
    size_t scratch_size;
} arena_t;

static inline const uint32_t *children_of(const arena_t *A, uint32_t s)
{
    return A->arity[s] > 2 ? A->children_ext[s] : A->children[s];
}

/* A handle is (slot << PG_GEN_BITS) | (generation mod 2^PG_GEN_BITS).
 * Generation in the low bits keeps handles of the first million slots under
 * 2^30, where Python's ints are one digit and cross the cffi boundary
 * fastest; a stale handle goes unnoticed only if its slot was reused a
 * multiple of 1024 times. */
#define GEN_MASK ((1u << PG_GEN_BITS) - 1)
_Static_assert(PG_GEN_BITS <= 16, "generations are kept in 16 bits");

static inline int64_t handle_of(const arena_t *A, uint32_t s)
{
    return ((int64_t)s << PG_GEN_BITS) | (A->gen[s] & GEN_MASK);
}

/* Resolve a handle to a live slot, or return 0. */
static inline int lookup(const arena_t *A, int64_t h, uint32_t *slot)
{
    if (h < 0 || h >= ((int64_t)1 << (32 + PG_GEN_BITS)))
        return 0;
    uint32_t s = (uint32_t)(h >> PG_GEN_BITS);
    if (s >= A->used || (uint32_t)(A->gen[s] & GEN_MASK) != (uint32_t)(h & GEN_MASK) ||
        A->op[s] == PG_OP_FREE)
        return 0;
    *slot = s;
    return 1;
}

/* A custom op, or a built-in op whose backward Python replaced: backward()
 * hands these to Python, and a replay cannot run them. */
static inline int runs_custom_backward(const arena_t *A, uint32_t s)
{
    return A->op[s] == PG_OP_CUSTOM || (A->flags[s] & FLAG_CUSTOM_BACKWARD);
}

/* Shared between the .c files; not part of the C API (pygrad.h).  Callers of
 * everything below hold the arena lock. */

/* arena.c: the one arena, its lock, node storage */
extern arena_t pg_the_arena;
void pg_lock(void);
void pg_unlock(void);
#ifdef PG_DEBUG
int pg_lock_held(void);
#endif
/* A new node with one external reference, holding an internal reference to
 * each child (slots already validated). */
int64_t pg_node_new(arena_t *A, uint8_t op, double value, const uint32_t *children,
                    uint32_t arity, uint32_t *slot_out);
void pg_node_decref(arena_t *A, uint32_t s);        /* internal reference */
void pg_node_release(arena_t *A, uint32_t s);      /* external reference */
int64_t pg_walk_reserve(arena_t *A);
/* A->scratch with room for `size` bytes (NULL if out of memory); its
 * contents are the caller's until it unlocks the arena. */
void *pg_scratch(arena_t *A, size_t size);
void pg_scratch_free(arena_t *A);
/* Give memory back once live nodes are far below capacity. */
void pg_arena_maybe_shrink(arena_t *A);

/* What a call that hands handles[0..count) to the Python layer returns:
 * `result` (a handle or PG_OK; an error is returned as it is), made
 * PG_PENDING + result when the Python layer has work to do first: a sweep is
 * due, or `referenced_stateful` (a stateful node was given a parent or a
 * tape: Python must hold its state).  The handles' references go to the
 * nursery, which must have room (pg_nursery_reserve before making them). */
#define PG_PENDING (-((int64_t)1 << PG_PENDING_SHIFT))
int64_t pg_hand_out(arena_t *A, int64_t result, const int64_t *handles, size_t count,
                    int referenced_stateful);
int64_t pg_nursery_reserve(arena_t *A, size_t count);
/* 1 if any of slots[0..count) is stateful. */
int pg_any_stateful(const arena_t *A, const uint32_t *slots, size_t count);

/* Make `s` a leaf: drop its children (no_grad keeps values, not graphs). */
void pg_node_detach(arena_t *A, uint32_t s);
int pg_grad_enabled(void);

/* ops.c: making nodes (the ops' forward and backward are in ops.h) */
/* Make a node for `op` over `children` and compute its value.  If the value is an
 * error, the node goes again and the error is returned.  Under no_grad the
 * node keeps its value and forgets its children. */
int64_t pg_make_op(arena_t *A, uint8_t op, const uint32_t *children, uint32_t arity,
                   double exponent, uint8_t flags, uint32_t *slot);
/* Drop the caller's reference to an intermediate node once its parent holds
 * one (or, if making the parent failed, free it): returns `result`. */
int64_t pg_drop_temporary(arena_t *A, uint32_t temporary, int64_t result);
/* The slots of handles[0..count) and whether any of them is stateful,
 * validated, or found validated before with no node freed or made stateful
 * since (a few sets are kept: a model's parameters, an optimizer's).  PG_OK,
 * PG_ERR_HANDLE if one is bad, PG_ERR_NOMEM.  *slots is valid until the
 * arena unlocks. */
int64_t pg_lookup_params(arena_t *A, const int64_t *handles, size_t count,
                         const uint32_t **slots, int *stateful);
/* Validate handles[0..count) into slots[]; 0 if any is bad. */
int pg_lookup_all(const arena_t *A, const int64_t *handles, int64_t count, uint32_t *slots);

/* Run `expr` (an int64_t) under the arena lock and return it. */
#define PG_LOCKED(expr)                 \
    do {                                \
        pg_lock();                      \
        int64_t locked_result_ = (expr); \
        pg_unlock();                    \
        return locked_result_;          \
    } while (0)

#ifdef PG_DEBUG
#include <assert.h>
#define DEBUG_ASSERT(cond) assert(cond)
#else
#define DEBUG_ASSERT(cond) ((void)0)
#endif
/* In the internal functions that touch the arena: their callers hold the lock
 * (PG_LOCKED); debug builds check that they do. */
#define ASSERT_LOCKED() DEBUG_ASSERT(pg_lock_held())

/* replay.c: a tape's replay plan, built from its recorded order (children
 * before parents, the root last) on the first replay.  `skip` lists leaves of
 * the tape that get no gradient.  Building it may move nodes only the tape
 * can name to other slots (order[] is updated): handles to them go stale. */
typedef struct pg_plan pg_plan;
int64_t pg_plan_build(arena_t *A, uint32_t *order, uint32_t count, const uint32_t *skip,
                      uint32_t n_skip, pg_plan **out);
void pg_plan_free(pg_plan *plan);
/* Recompute every node from its children; zero every grad of the tape and
 * backpropagate from the root. */
int64_t pg_plan_forward(arena_t *A, pg_plan *plan);
int64_t pg_plan_backward(arena_t *A, const pg_plan *plan);
int64_t pg_plan_groups(const pg_plan *plan);  /* how many dense groups it runs */

/* A fresh epoch for A->mark: stamps from before it no longer match. */
uint32_t pg_new_epoch(arena_t *A);

#endif /* PG_ARENA_H */
