/* Making nodes: the C API that builds the graph, op by op.  The ops'
 * arithmetic, forward and backward, is in ops.h. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* --- making nodes ----------------------------------------------------------
 * Internal helpers work on slots already validated; each returns a handle with
 * one reference for the caller, or an error having made nothing. */

static int64_t make_leaf(arena_t *A, double value, uint32_t *slot)
{
    return pg_node_new(A, PG_OP_LEAF, value, NULL, 0, slot);
}

int64_t pg_make_op(arena_t *A, uint8_t op, const uint32_t *children, uint32_t arity,
                   double exponent, uint8_t flags, uint32_t *slot)
{
    uint32_t s;
    int64_t h = pg_node_new(A, op, 0.0, children, arity, &s);
    if (h < 0)
        return h;
    A->exponent[s] = exponent;
    A->flags[s] = flags;
    int64_t rc = op_forward(A, s);
    if (rc < 0) {
        pg_node_release(A, s);
        return rc;
    }
    if (!pg_grad_enabled())
        pg_node_detach(A, s);
    if (slot)
        *slot = s;
    return h;
}

static int64_t make_binary(arena_t *A, uint8_t op, uint32_t a, uint32_t b, uint32_t *slot)
{
    uint32_t children[2] = {a, b};
    return pg_make_op(A, op, children, 2, 0.0, 0, slot);
}

int64_t pg_drop_temporary(arena_t *A, uint32_t temporary, int64_t result)
{
    pg_node_release(A, temporary);
    return result;
}

/* a <op> Value(k): micrograd wraps a plain number in a leaf, as the right operand. */
static int64_t make_with_const(arena_t *A, uint8_t op, uint32_t a, double k, uint32_t *slot)
{
    uint32_t leaf;
    int64_t h = make_leaf(A, k, &leaf);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, leaf, make_binary(A, op, a, leaf, slot));
}

static int64_t make_pow_const(arena_t *A, uint32_t a, double k, uint8_t flags, uint32_t *slot)
{
    uint32_t children[1] = {a};
    return pg_make_op(A, PG_OP_POW_CONST, children, 1, k, flags, slot);
}

/* --- the C API: making nodes ------------------------------------------------
 * Each call validates its operands, makes the node and hands it out
 * (pg_hand_out: PG_PENDING-flagged when the Python layer has work first). */

/* Resolve count operand handles into slots, and make room in the nursery
 * for the result: PG_OK, or the error. */
static int64_t operands(arena_t *A, const int64_t *handles, uint32_t *slots, int count)
{
    for (int i = 0; i < count; i++)
        if (!lookup(A, handles[i], &slots[i]))
            return PG_ERR_HANDLE;
    return pg_nursery_reserve(A, 1);
}

static int64_t hand_out(arena_t *A, int64_t h, const uint32_t *slots, size_t count)
{
    return pg_hand_out(A, h, &h, 1, pg_any_stateful(A, slots, count));
}

static int64_t api_binary(uint8_t op, int64_t ha, int64_t hb)
{
    arena_t *A = &pg_the_arena;
    int64_t handles[2] = {ha, hb};
    uint32_t k[2];
    int64_t rc = operands(A, handles, k, 2);
    if (rc < 0)
        return rc;
    return hand_out(A, make_binary(A, op, k[0], k[1], NULL), k, 2);
}

static int64_t api_unary(uint8_t op, int64_t ha)
{
    arena_t *A = &pg_the_arena;
    uint32_t a;
    int64_t rc = operands(A, &ha, &a, 1);
    if (rc < 0)
        return rc;
    return hand_out(A, pg_make_op(A, op, &a, 1, 0.0, 0, NULL), &a, 1);
}

static int64_t api_with_const(uint8_t op, int64_t ha, double k)
{
    arena_t *A = &pg_the_arena;
    uint32_t a;
    int64_t rc = operands(A, &ha, &a, 1);
    if (rc < 0)
        return rc;
    return hand_out(A, make_with_const(A, op, a, k, NULL), &a, 1);
}

/* a - b == a + (b * -1) */
static int64_t make_sub(arena_t *A, uint32_t a, uint32_t b)
{
    uint32_t negated;
    int64_t h = make_with_const(A, PG_OP_MUL, b, -1.0, &negated);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, negated, make_binary(A, PG_OP_ADD, a, negated, NULL));
}

/* k - a == (a * -1) + Value(k) */
static int64_t make_rsub_const(arena_t *A, uint32_t a, double k)
{
    uint32_t negated;
    int64_t h = make_with_const(A, PG_OP_MUL, a, -1.0, &negated);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, negated, make_with_const(A, PG_OP_ADD, negated, k, NULL));
}

/* a / b == a * b**-1 */
static int64_t make_div(arena_t *A, uint32_t a, uint32_t b)
{
    uint32_t inverse;
    int64_t h = make_pow_const(A, b, -1.0, PG_FLAG_INT_EXPONENT, &inverse);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, inverse, make_binary(A, PG_OP_MUL, a, inverse, NULL));
}

/* k / a == (a ** -1) * Value(k) */
static int64_t make_rdiv_const(arena_t *A, uint32_t a, double k)
{
    uint32_t inverse;
    int64_t h = make_pow_const(A, a, -1.0, PG_FLAG_INT_EXPONENT, &inverse);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, inverse, make_with_const(A, PG_OP_MUL, inverse, k, NULL));
}

/* Value(k) ** b */
static int64_t make_rpow_const(arena_t *A, uint32_t b, double k)
{
    uint32_t base;
    int64_t h = make_leaf(A, k, &base);
    if (h < 0)
        return h;
    return pg_drop_temporary(A, base, make_binary(A, PG_OP_POW, base, b, NULL));
}

static int64_t api_sub(int64_t ha, int64_t hb)
{
    arena_t *A = &pg_the_arena;
    int64_t handles[2] = {ha, hb};
    uint32_t k[2];
    int64_t rc = operands(A, handles, k, 2);
    return rc < 0 ? rc : hand_out(A, make_sub(A, k[0], k[1]), k, 2);
}

static int64_t api_div(int64_t ha, int64_t hb)
{
    arena_t *A = &pg_the_arena;
    int64_t handles[2] = {ha, hb};
    uint32_t k[2];
    int64_t rc = operands(A, handles, k, 2);
    return rc < 0 ? rc : hand_out(A, make_div(A, k[0], k[1]), k, 2);
}

static int64_t api_rsub_const(int64_t ha, double k)
{
    arena_t *A = &pg_the_arena;
    uint32_t a;
    int64_t rc = operands(A, &ha, &a, 1);
    return rc < 0 ? rc : hand_out(A, make_rsub_const(A, a, k), &a, 1);
}

static int64_t api_rdiv_const(int64_t ha, double k)
{
    arena_t *A = &pg_the_arena;
    uint32_t a;
    int64_t rc = operands(A, &ha, &a, 1);
    return rc < 0 ? rc : hand_out(A, make_rdiv_const(A, a, k), &a, 1);
}

static int64_t api_rpow_const(int64_t hb, double k)
{
    arena_t *A = &pg_the_arena;
    uint32_t b;
    int64_t rc = operands(A, &hb, &b, 1);
    return rc < 0 ? rc : hand_out(A, make_rpow_const(A, b, k), &b, 1);
}

static int64_t api_pow_const(int64_t ha, double k, int32_t flags)
{
    arena_t *A = &pg_the_arena;
    uint32_t a;
    if (flags & ~(PG_FLAG_INT_EXPONENT | PG_FLAG_BOOL_EXPONENT))
        return PG_ERR_ARG;
    int64_t rc = operands(A, &ha, &a, 1);
    return rc < 0 ? rc : hand_out(A, make_pow_const(A, a, k, (uint8_t)flags, NULL), &a, 1);
}

static int64_t api_leaf(double data)
{
    arena_t *A = &pg_the_arena;
    int64_t rc = pg_nursery_reserve(A, 1);
    return rc < 0 ? rc : hand_out(A, make_leaf(A, data, NULL), NULL, 0);
}

int pg_lookup_all(const arena_t *A, const int64_t *handles, int64_t count, uint32_t *slots)
{
    for (int64_t i = 0; i < count; i++)
        if (!lookup(A, handles[i], &slots[i]))
            return 0;
    return 1;
}

/* A custom op: no_grad makes it a leaf, as every other op. */
static int64_t api_custom_node(double data, const int64_t *children, int64_t count)
{
    arena_t *A = &pg_the_arena;
    if (count < 0 || count > (int64_t)MAX_SLOTS || (count > 0 && !children))
        return PG_ERR_ARG;
    int recording = pg_grad_enabled();
    if (!recording)
        count = 0;
    uint32_t *slots = malloc((size_t)(count ? count : 1) * sizeof *slots);
    if (!slots)
        return PG_ERR_NOMEM;
    int64_t h = PG_ERR_HANDLE;
    if (pg_lookup_all(A, children, count, slots)) {
        h = pg_nursery_reserve(A, 1);
        if (h == PG_OK)
            h = hand_out(A, pg_node_new(A, recording ? PG_OP_CUSTOM : PG_OP_LEAF, data, slots,
                                        (uint32_t)count, NULL),
                         slots, (size_t)count);
    }
    free(slots);
    return h;
}

static int64_t api_set_custom_backward(int64_t h)
{
    arena_t *A = &pg_the_arena;
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    A->flags[s] |= FLAG_CUSTOM_BACKWARD;
    if (A->flags[s] & FLAG_TAPED)
        A->custom_epoch++; /* tapes holding it recount their custom ops */
    return PG_OK;
}

int64_t pg_leaf(double data) { PG_LOCKED(api_leaf(data)); }
int64_t pg_add(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_ADD, a, b)); }
int64_t pg_mul(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_MUL, a, b)); }
int64_t pg_pow(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_POW, a, b)); }
int64_t pg_add_const(int64_t a, double k) { PG_LOCKED(api_with_const(PG_OP_ADD, a, k)); }
int64_t pg_mul_const(int64_t a, double k) { PG_LOCKED(api_with_const(PG_OP_MUL, a, k)); }
int64_t pg_sub(int64_t a, int64_t b) { PG_LOCKED(api_sub(a, b)); }
int64_t pg_rsub_const(int64_t a, double k) { PG_LOCKED(api_rsub_const(a, k)); }
int64_t pg_div(int64_t a, int64_t b) { PG_LOCKED(api_div(a, b)); }
int64_t pg_rdiv_const(int64_t a, double k) { PG_LOCKED(api_rdiv_const(a, k)); }
int64_t pg_pow_const(int64_t a, double k, int32_t flags) { PG_LOCKED(api_pow_const(a, k, flags)); }
int64_t pg_rpow_const(int64_t b, double k) { PG_LOCKED(api_rpow_const(b, k)); }
#define UNARY_API(TAG, name, op) \
    int64_t pg_##name(int64_t a) { PG_LOCKED(api_unary(PG_OP_##TAG, a)); }
PG_UNARY_OPS(UNARY_API)
#undef UNARY_API

int64_t pg_custom_node(double data, const int64_t *children, int64_t count)
{
    PG_LOCKED(api_custom_node(data, children, count));
}

int64_t pg_set_custom_backward(int64_t h) { PG_LOCKED(api_set_custom_backward(h)); }

/* The op table's third column; it never changes, so no lock. */
const char *pg_op_name(int64_t op)
{
#define OP_NAME(TAG, name, op) [PG_OP_##TAG] = op,
    static const char *const names[PG_OP_COUNT] = {PG_OPS(OP_NAME)};
#undef OP_NAME
    return op >= 0 && op < PG_OP_COUNT ? names[op] : NULL;
}
