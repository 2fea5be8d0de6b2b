/* Private to csrc/: the ops' arithmetic, for each its forward and backward
 * side by side, and the switch on the op tag that dispatches them.  All of
 * it is static inline, so that the loops that run ops node by node (making
 * nodes, backward, replay) inline the dispatch instead of calling across
 * files.  Forward values follow Python's float semantics exactly (micrograd
 * computes in Python floats), errors included. */
#ifndef PG_OPS_H
#define PG_OPS_H
#include <math.h>

#include "arena.h"

/* --- Python's float arithmetic --------------------------------------------- */

static inline int is_odd_integer(double x) { return fmod(fabs(x), 2.0) == 1.0; }

/* float.__pow__ (CPython Objects/floatobject.c, float_pow), case by case, so
 * that every value and every error matches what micrograd computes. */
static inline int64_t py_pow(double base, double exponent, double *out)
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
static inline int64_t py_exp(double x, double *out)
{
    *out = exp(x);
    return isinf(*out) && isfinite(x) ? PG_ERR_RANGE : PG_OK;
}

/* math.log: ValueError("math domain error") for x <= 0 and -inf. */
static inline int64_t py_log(double x, double *out)
{
    if (!(x > 0.0) && !isnan(x))
        return PG_ERR_DOMAIN;
    *out = log(x);
    return PG_OK;
}

static inline double stable_sigmoid(double x)
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
static inline int64_t add_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = D[k[0]] + D[k[1]];
    return PG_OK;
}

static inline int64_t add_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += G[n];
    G[k[1]] += G[n];
    return PG_OK;
}

/* MUL: out = a * b */
static inline int64_t mul_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = D[k[0]] * D[k[1]];
    return PG_OK;
}

static inline int64_t mul_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += D[k[1]] * G[n];
    G[k[1]] += D[k[0]] * G[n];
    return PG_OK;
}

/* POW_CONST: out = a ** e, e a constant (the node's exponent). */
static inline int64_t pow_const_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_pow(D[k[0]], A->exponent[n], &D[n]);
}

/* micrograd: (e * a**(e-1)) * out.grad, which raises in Python for 0.0 ** a
 * negative power, so it fails here too. */
static inline int64_t pow_const_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    double e = A->exponent[n], power;
    int64_t rc = py_pow(D[k[0]], e - 1.0, &power);
    if (rc < 0)
        return rc;
    G[k[0]] += (e * power) * G[n];
    return PG_OK;
}

/* POW: out = a ** b, b a Value. */
static inline int64_t pow_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_pow(D[k[0]], D[k[1]], &D[n]);
}

/* d/da = b * a**(b-1); d/db = out * log(a).  Like PyTorch, each is 0 where
 * its formula is 0 * inf (b == 0; a == 0 with b >= 0). */
static inline int64_t pow_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    double a = D[k[0]], b = D[k[1]];
    double da = b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
    double db = a == 0.0 && b >= 0.0 ? 0.0 : D[n] * log(a);
    G[k[0]] += da * G[n];
    G[k[1]] += db * G[n];
    return PG_OK;
}

/* RELU: out = 0 if a < 0 else a (so relu(-0.0) is -0.0, as in micrograd).
 * The activations' *_value and *_grad (what backward adds to the input's grad,
 * given the output and its grad) serve replay's dense layers too. */
static inline double relu_value(double a) { return a < 0.0 ? 0.0 : a; }
/* micrograd: (out.data > 0) * out.grad */
static inline double relu_grad(double out, double g) { return (double)(out > 0.0) * g; }

static inline int64_t relu_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = relu_value(D[k[0]]);
    return PG_OK;
}

static inline int64_t relu_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += relu_grad(D[n], G[n]);
    return PG_OK;
}

/* TANH: out = tanh(a) */
static inline double tanh_grad(double out, double g) { return (1.0 - out * out) * g; }

static inline int64_t tanh_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = tanh(D[k[0]]);
    return PG_OK;
}

static inline int64_t tanh_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += tanh_grad(D[n], G[n]);
    return PG_OK;
}

/* EXP: out = exp(a) */
static inline int64_t exp_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_exp(D[k[0]], &D[n]);
}

static inline int64_t exp_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += D[n] * G[n];
    return PG_OK;
}

/* LOG: out = log(a) */
static inline int64_t log_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    return py_log(D[k[0]], &D[n]);
}

static inline int64_t log_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += G[n] / D[k[0]];
    return PG_OK;
}

/* SIGMOID: out = 1 / (1 + exp(-a)) */
static inline int64_t sigmoid_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    D[n] = stable_sigmoid(D[k[0]]);
    return PG_OK;
}

static inline double sigmoid_grad(double out, double g) { return out * (1.0 - out) * g; }

static inline int64_t sigmoid_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    G[k[0]] += sigmoid_grad(D[n], G[n]);
    return PG_OK;
}

/* DOT: out = b + w[0]*x[0] + w[1]*x[1] + ..., children (b, w[0..m), x[0..m)).
 * A neuron's pre-activation: summed left to right from b, exactly as
 * micrograd's sum((wi*xi for wi, xi in zip(w, x)), b) rounds. */
static inline int64_t dot_forward(arena_t *A, uint32_t n, const uint32_t *k)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    double acc = D[k[0]];
    for (uint32_t i = 0; i < m; i++)
        acc = acc + D[w[i]] * D[x[i]];
    D[n] = acc;
    return PG_OK;
}

static inline int64_t dot_backward(arena_t *A, uint32_t n, const uint32_t *k)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    G[k[0]] += G[n];
    for (uint32_t i = 0; i < m; i++) {
        G[w[i]] += D[x[i]] * G[n];
        G[x[i]] += D[w[i]] * G[n];
    }
    return PG_OK;
}

/* Recompute a node's value from its children's: PG_OK, or the error the
 * forward raises in Python.  Leaves and custom ops keep the value they were
 * given. */
static inline int64_t op_forward(arena_t *A, uint32_t n)
{
    const uint32_t *k = children_of(A, n);
    switch (A->op[n]) {
#define FORWARD_CASE(TAG, name, op) case PG_OP_##TAG: return name##_forward(A, n, k);
        PG_COMPUTED_OPS(FORWARD_CASE)
#undef FORWARD_CASE
    default: return PG_OK;
    }
}

/* One node's local backward step.  Leaves and custom ops do nothing here. */
static inline int64_t op_backward(arena_t *A, uint32_t n)
{
    const uint32_t *k = children_of(A, n);
    switch (A->op[n]) {
#define BACKWARD_CASE(TAG, name, op) case PG_OP_##TAG: return name##_backward(A, n, k);
        PG_COMPUTED_OPS(BACKWARD_CASE)
#undef BACKWARD_CASE
    default: return PG_OK;
    }
}

#undef D
#undef G

#endif /* PG_OPS_H */
