/* Private to csrc/: the arena's layout and the helpers the .c files share. */
#include <stddef.h>
#include <stdint.h>
#include "pygrad.h"

#define NO_SLOT UINT32_MAX
#define MAX_SLOTS (UINT32_MAX - 1u)

/* Nodes live in parallel arrays indexed by slot.  Slots [0, used) have been
 * handed out at least once; freed ones are chained through `link`. */
typedef struct {
    double *data;          /* forward value */
    double *grad;          /* accumulated d(root)/d(node) */
    double *exponent;      /* POW's constant exponent */
    uint32_t (*kids)[2];   /* children of nodes with arity <= 2 */
    uint32_t **kids_ext;   /* children of nodes with arity > 2 (malloc'd), else NULL */
    uint32_t *arity;       /* number of children */
    uint32_t *gen;         /* generation: bumped on free, checked on every lookup */
    uint32_t *refs;        /* references from parents and tapes: exact, C-managed */
    uint32_t *ext;         /* references from handles held outside (Python Values);
                            * kept apart so that a misbehaving caller's extra
                            * release can never free a node a parent still uses */
    uint32_t *mark;        /* epoch of the last graph walk that visited the node */
    uint32_t *link;        /* free list / release worklist chain */
    uint8_t *op;           /* enum pg_op */
    uint8_t *flags;        /* PG_FLAG_* */
    uint32_t capacity, used, free_head;
    uint64_t live, limit;  /* limit 0 = none */
    uint32_t epoch;
    /* scratch for graph walks, sized to `live` on demand */
    uint32_t *walk_order, *walk_stack, *walk_next;
    size_t walk_cap;
    /* handles of freed custom-op nodes, for the Python registry to forget */
    int64_t *py_freed;
    size_t py_freed_len, py_freed_cap;
} arena_t;

static inline const uint32_t *children_of(const arena_t *A, uint32_t s)
{
    return A->arity[s] > 2 ? A->kids_ext[s] : A->kids[s];
}

/* A handle is (slot << GEN_BITS) | (generation mod 2^GEN_BITS).  Generation in
 * the low bits keeps handles of the first million slots under 2^30, where
 * Python's ints are one digit and cross the cffi boundary fastest; a stale
 * handle goes unnoticed only if its slot was reused a multiple of 1024 times. */
#define GEN_BITS 10
#define GEN_MASK ((1u << GEN_BITS) - 1)

static inline int64_t handle_of(const arena_t *A, uint32_t s)
{
    return ((int64_t)s << GEN_BITS) | (A->gen[s] & GEN_MASK);
}

/* Resolve a handle to a live slot, or return 0. */
static inline int lookup(const arena_t *A, int64_t h, uint32_t *slot)
{
    if (h < 0 || h >= ((int64_t)1 << (32 + GEN_BITS)))
        return 0;
    uint32_t s = (uint32_t)(h >> GEN_BITS);
    if (s >= A->used || (A->gen[s] & GEN_MASK) != (uint32_t)(h & GEN_MASK) ||
        A->op[s] == PG_OP_FREE)
        return 0;
    *slot = s;
    return 1;
}

/* Shared between the .c files; not part of the C API (pygrad.h).  Callers of
 * everything below hold the arena lock. */

/* arena.c: the one arena, its lock, node storage */
extern arena_t pg_the_arena;
void pg_lock(void);
void pg_unlock(void);
/* A new node with one external reference, holding an internal reference to
 * each child (slots already validated). */
int64_t pg_node_new(arena_t *A, uint8_t op, double value, const uint32_t *kids,
                    uint32_t arity, uint32_t *slot_out);
void pg_node_decref(arena_t *A, uint32_t s);        /* internal reference */
void pg_node_release(arena_t *A, uint32_t s);      /* external reference */
int64_t pg_walk_reserve(arena_t *A);

/* Make `s` a leaf: drop its children (no_grad keeps values, not graphs). */
void pg_node_detach(arena_t *A, uint32_t s);
int pg_grad_enabled(void);

/* ops.c: the per-op forward and backward, and making nodes */
int64_t pg_op_forward(arena_t *A, uint32_t s);
int64_t pg_op_backward(arena_t *A, uint32_t s);
/* Make a node for `op` over `kids` and compute its value.  If the value is an
 * error, the node goes again and the error is returned.  Under no_grad the
 * node keeps its value and forgets its children. */
int64_t pg_make_op(arena_t *A, uint8_t op, const uint32_t *kids, uint32_t arity,
                   double exponent, uint8_t flags, uint32_t *slot);
/* Drop the caller's reference to an intermediate node once its parent holds
 * one (or, if making the parent failed, free it): returns `result`. */
int64_t pg_drop_temporary(arena_t *A, uint32_t temporary, int64_t result);
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
