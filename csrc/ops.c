/* The ops: for each, its forward and backward side by side, then the C API
 * that makes nodes.  Forward values follow Python's float semantics exactly
 * (micrograd computes in Python floats), errors included. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* --- Python's float arithmetic --------------------------------------------- */

static int is_odd_integer(double x) { return fmod(fabs(x), 2.0) == 1.0; }

/* float.__pow__ (CPython Objects/floatobject.c, float_pow), case by case, so
 * that every value and every error matches what micrograd computes. */
static int64_t py_pow(double base, double exponent, double *out)
{
    if (exponent == 0.0) {
        *out = 1.0;
        return PG_OK;
    }
    if (isnan(base)) {
        *out = base;
        return PG_OK;
    }
    if (isnan(exponent)) {
        *out = base == 1.0 ? 1.0 : exponent;
        return PG_OK;
    }
    if (isinf(exponent)) {
        double magnitude = fabs(base);
        if (magnitude == 1.0)
            *out = 1.0;
        else if ((exponent > 0.0) == (magnitude > 1.0))
            *out = fabs(exponent);
        else
            *out = 0.0;
        return PG_OK;
    }
    if (isinf(base)) {
        int odd = is_odd_integer(exponent);
        if (exponent > 0.0)
            *out = odd ? base : fabs(base);
        else
            *out = odd ? copysign(0.0, base) : 0.0;
        return PG_OK;
    }
    if (base == 0.0) {
        if (exponent < 0.0)
            return PG_ERR_ZERODIV; /* "0.0 cannot be raised to a negative power" */
        *out = is_odd_integer(exponent) ? base : 0.0;
        return PG_OK;
    }
    int negate = 0;
    if (base < 0.0) {
        if (exponent != floor(exponent)) /* Python goes to complex pow, which */
            return isinf(pow(-base, exponent)) /* raises if its modulus overflows */
                       ? PG_ERR_OVERFLOW : PG_ERR_COMPLEX;
        base = -base;
        negate = is_odd_integer(exponent);
    }
    if (base == 1.0) {
        *out = negate ? -1.0 : 1.0;
        return PG_OK;
    }
    double result = pow(base, exponent);
    if (isinf(result))
        return PG_ERR_OVERFLOW; /* (34, 'Numerical result out of range') */
    *out = negate ? -result : result;
    return PG_OK;
}

/* math.exp: OverflowError("math range error") when a finite x overflows. */
static int64_t py_exp(double x, double *out)
{
    *out = exp(x);
    return isinf(*out) && isfinite(x) ? PG_ERR_RANGE : PG_OK;
}

/* math.log: ValueError("math domain error") for x <= 0 and -inf. */
static int64_t py_log(double x, double *out)
{
    if (!(x > 0.0) && !isnan(x))
        return PG_ERR_DOMAIN;
    *out = log(x);
    return PG_OK;
}

static double stable_sigmoid(double x)
{
    if (x >= 0.0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x); /* exp(-x) would overflow for very negative x */
    return e / (1.0 + e);
}

/* --- forward and backward, op by op ----------------------------------------
 * Each op reads its children k[] in the arena.  Forward writes the node's
 * value D[n] (or returns an error, writing nothing); backward reads D[n] and
 * G[n] and accumulates (+=) into the children's gradients, as micrograd's
 * closures do. */

#define D (A->data)
#define G (A->grad)

/* ADD: out = a + b */
static void add_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = D[k[0]] + D[k[1]];
}

static void add_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += G[n];
    G[k[1]] += G[n];
}

/* MUL: out = a * b */
static void mul_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = D[k[0]] * D[k[1]];
}

static void mul_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += D[k[1]] * G[n];
    G[k[1]] += D[k[0]] * G[n];
}

/* POW: out = a ** e, e a constant (the node's exponent). */
static int64_t pow_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_pow(D[k[0]], A->exponent[n], &D[n]);
}

/* micrograd: (e * a**(e-1)) * out.grad, which raises in Python for 0.0 ** a
 * negative power, so it fails here too. */
static int64_t pow_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    double e = A->exponent[n], power;
    int64_t rc = py_pow(D[k[0]], e - 1.0, &power);
    if (rc < 0)
        return rc;
    G[k[0]] += (e * power) * G[n];
    return PG_OK;
}

/* POWV: out = a ** b, b a Value. */
static int64_t powv_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_pow(D[k[0]], D[k[1]], &D[n]);
}

/* d/da = b * a**(b-1); d/db = out * log(a).  Like PyTorch, each is 0 where
 * its formula is 0 * inf (b == 0; a == 0 with b >= 0). */
static void powv_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    double a = D[k[0]], b = D[k[1]];
    double da = b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
    double db = a == 0.0 && b >= 0.0 ? 0.0 : D[n] * log(a);
    G[k[0]] += da * G[n];
    G[k[1]] += db * G[n];
}

/* RELU: out = 0 if a < 0 else a (so relu(-0.0) is -0.0, as in micrograd) */
static void relu_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = D[k[0]] < 0.0 ? 0.0 : D[k[0]];
}

/* micrograd: (out.data > 0) * out.grad */
static void relu_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += (double)(D[n] > 0.0) * G[n];
}

/* TANH: out = tanh(a) */
static void tanh_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = tanh(D[k[0]]);
}

static void tanh_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += (1.0 - D[n] * D[n]) * G[n];
}

/* EXP: out = exp(a) */
static int64_t exp_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_exp(D[k[0]], &D[n]);
}

static void exp_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += D[n] * G[n];
}

/* LOG: out = log(a) */
static int64_t log_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_log(D[k[0]], &D[n]);
}

static void log_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += G[n] / D[k[0]];
}

/* SIGMOID: out = 1 / (1 + exp(-a)) */
static void sigmoid_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = stable_sigmoid(D[k[0]]);
}

static void sigmoid_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += D[n] * (1.0 - D[n]) * G[n];
}

/* DOT: out = b + w[0]*x[0] + w[1]*x[1] + ..., children (b, w[0..m), x[0..m)).
 * A neuron's pre-activation: summed left to right from b, exactly as
 * micrograd's sum((wi*xi for wi, xi in zip(w, x)), b) rounds. */
static void dot_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    double acc = D[k[0]];
    for (uint32_t i = 0; i < m; i++)
        acc = acc + D[w[i]] * D[x[i]];
    D[n] = acc;
}

static void dot_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    G[k[0]] += G[n];
    for (uint32_t i = 0; i < m; i++) {
        G[w[i]] += D[x[i]] * G[n];
        G[x[i]] += D[w[i]] * G[n];
    }
}

/* Recompute a node's value from its children's. */
int64_t pg_op_forward(arena_t *A, uint32_t n)
{
    const uint32_t *k = children_of(A, n);
    switch (A->op[n]) {
    case PG_OP_ADD: add_forward(A, n, k); break;
    case PG_OP_MUL: mul_forward(A, n, k); break;
    case PG_OP_POW: return pow_forward(A, n, k);
    case PG_OP_POWV: return powv_forward(A, n, k);
    case PG_OP_RELU: relu_forward(A, n, k); break;
    case PG_OP_TANH: tanh_forward(A, n, k); break;
    case PG_OP_EXP: return exp_forward(A, n, k);
    case PG_OP_LOG: return log_forward(A, n, k);
    case PG_OP_SIGMOID: sigmoid_forward(A, n, k); break;
    case PG_OP_DOT: dot_forward(A, n, k); break;
    default: break; /* leaves and custom ops keep the value they were given */
    }
    return PG_OK;
}

/* One node's local backward step.  Leaves and custom ops do nothing here. */
int64_t pg_op_backward(arena_t *A, uint32_t n)
{
    const uint32_t *k = children_of(A, n);
    switch (A->op[n]) {
    case PG_OP_ADD: add_backward(A, n, k); break;
    case PG_OP_MUL: mul_backward(A, n, k); break;
    case PG_OP_POW: return pow_backward(A, n, k);
    case PG_OP_POWV: powv_backward(A, n, k); break;
    case PG_OP_RELU: relu_backward(A, n, k); break;
    case PG_OP_TANH: tanh_backward(A, n, k); break;
    case PG_OP_EXP: exp_backward(A, n, k); break;
    case PG_OP_LOG: log_backward(A, n, k); break;
    case PG_OP_SIGMOID: sigmoid_backward(A, n, k); break;
    case PG_OP_DOT: dot_backward(A, n, k); break;
    default: break;
    }
    return PG_OK;
}

#undef D
#undef G

/* --- making nodes ----------------------------------------------------------
 * Internal helpers work on slots already validated; each returns a handle with
 * one reference for the caller, or an error having made nothing. */

static int64_t make_leaf(arena_t *A, double value, uint32_t *slot)
{
    return pg_node_new(A, PG_OP_LEAF, value, NULL, 0, slot);
}

int64_t pg_make_op(arena_t *A, uint8_t op, const uint32_t *kids, uint32_t arity,
                   double exponent, uint8_t flags, uint32_t *slot)
{
    uint32_t s;
    int64_t h = pg_node_new(A, op, 0.0, kids, arity, &s);
    if (h < 0)
        return h;
    A->exponent[s] = exponent;
    A->flags[s] = flags;
    int64_t rc = pg_op_forward(A, s);
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
    uint32_t kids[2] = {a, b};
    return pg_make_op(A, op, kids, 2, 0.0, 0, slot);
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
    uint32_t kids[1] = {a};
    return pg_make_op(A, PG_OP_POW, kids, 1, k, flags, slot);
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
    return pg_drop_temporary(A, base, make_binary(A, PG_OP_POWV, base, b, NULL));
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
    uint32_t *kids = malloc((size_t)(count ? count : 1) * sizeof *kids);
    if (!kids)
        return PG_ERR_NOMEM;
    int64_t h = PG_ERR_HANDLE;
    if (pg_lookup_all(A, children, count, kids)) {
        h = pg_nursery_reserve(A, 1);
        if (h == PG_OK)
            h = hand_out(A, pg_node_new(A, recording ? PG_OP_CUSTOM : PG_OP_LEAF, data, kids,
                                        (uint32_t)count, NULL),
                         kids, (size_t)count);
    }
    free(kids);
    return h;
}

static int64_t api_set_custom_backward(int64_t h)
{
    arena_t *A = &pg_the_arena;
    uint32_t s;
    if (!lookup(A, h, &s))
        return PG_ERR_HANDLE;
    A->flags[s] |= FLAG_CUSTOM_BACKWARD;
    A->custom_epoch++;
    return PG_OK;
}

int64_t pg_leaf(double data) { PG_LOCKED(api_leaf(data)); }
int64_t pg_add(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_ADD, a, b)); }
int64_t pg_mul(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_MUL, a, b)); }
int64_t pg_pow(int64_t a, int64_t b) { PG_LOCKED(api_binary(PG_OP_POWV, a, b)); }
int64_t pg_add_const(int64_t a, double k) { PG_LOCKED(api_with_const(PG_OP_ADD, a, k)); }
int64_t pg_mul_const(int64_t a, double k) { PG_LOCKED(api_with_const(PG_OP_MUL, a, k)); }
int64_t pg_sub(int64_t a, int64_t b) { PG_LOCKED(api_sub(a, b)); }
int64_t pg_rsub_const(int64_t a, double k) { PG_LOCKED(api_rsub_const(a, k)); }
int64_t pg_div(int64_t a, int64_t b) { PG_LOCKED(api_div(a, b)); }
int64_t pg_rdiv_const(int64_t a, double k) { PG_LOCKED(api_rdiv_const(a, k)); }
int64_t pg_pow_const(int64_t a, double k, int32_t flags) { PG_LOCKED(api_pow_const(a, k, flags)); }
int64_t pg_rpow_const(int64_t b, double k) { PG_LOCKED(api_rpow_const(b, k)); }
int64_t pg_relu(int64_t a) { PG_LOCKED(api_unary(PG_OP_RELU, a)); }
int64_t pg_tanh(int64_t a) { PG_LOCKED(api_unary(PG_OP_TANH, a)); }
int64_t pg_exp(int64_t a) { PG_LOCKED(api_unary(PG_OP_EXP, a)); }
int64_t pg_log(int64_t a) { PG_LOCKED(api_unary(PG_OP_LOG, a)); }
int64_t pg_sigmoid(int64_t a) { PG_LOCKED(api_unary(PG_OP_SIGMOID, a)); }

int64_t pg_custom_node(double data, const int64_t *children, int64_t count)
{
    PG_LOCKED(api_custom_node(data, children, count));
}

int64_t pg_set_custom_backward(int64_t h) { PG_LOCKED(api_set_custom_backward(h)); }
