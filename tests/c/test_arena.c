/* Unit tests for pygrad's C core (csrc/), through its C API (csrc/pygrad.h).
 *
 * Self-contained: no test framework.  `make ctest` builds this file with the
 * core under AddressSanitizer and UBSan, with -DPG_DEBUG (freed slots are
 * poisoned, reference counts asserted).  Each failing check prints one line,
 * file:line and the expression; the last line is "N passed, N failed" and the
 * exit status is non-zero if anything failed.
 *
 * Tests run in order in one process and share the one arena, so each test
 * measures pg_live_nodes() at its start and checks it gets back there.
 */
#define _POSIX_C_SOURCE 200809L /* fork, alarm, waitpid, barriers under -std=c11 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pygrad.h"

/* Handle layout: slot << PG_GEN_BITS | generation. */
#define SLOT(h) ((h) >> PG_GEN_BITS)

/* --- the checks ------------------------------------------------------------ */

static int passed, failed;

static int check(int ok, const char *file, int line, const char *expr)
{
    if (ok)
        passed++;
    else {
        failed++;
        printf("%s:%d: CHECK failed: %s\n", file, line, expr);
    }
    return ok;
}

/* Integers: on failure, the line also shows both values. */
static void check_eq(int64_t got, int64_t want, const char *file, int line, const char *expr)
{
    if (got == want)
        passed++;
    else {
        failed++;
        printf("%s:%d: CHECK failed: %s (got %lld, want %lld)\n", file, line, expr,
               (long long)got, (long long)want);
    }
}

/* Doubles, exactly: same value and same sign of zero, or both NaN. */
static int same(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

static void check_same(double got, double want, const char *file, int line, const char *expr)
{
    if (same(got, want))
        passed++;
    else {
        failed++;
        printf("%s:%d: CHECK failed: %s (got %.17g, want %.17g)\n", file, line, expr, got, want);
    }
}

#define CHECK(expr) check((expr) != 0, __FILE__, __LINE__, #expr)
#define CHECK_EQ(got, want) check_eq((int64_t)(got), (int64_t)(want), __FILE__, __LINE__, #got " == " #want)
#define CHECK_SAME(got, want) check_same((got), (want), __FILE__, __LINE__, #got " is " #want)

/* Doubles computed at run time, so that the compiler's constant folding (which
 * may round differently from libm) never stands in for what the core computes. */
static double rt(double x)
{
    volatile double v = x;
    return v;
}

/* The handle of h's i-th child, without keeping the reference child_retain gives. */
static int64_t child(int64_t h, int64_t i)
{
    int64_t c = pg_child_retain(h, i);
    if (c >= 0)
        pg_release(c);
    return c;
}

/* Nodes made along the way, to release together. */
static int64_t kept[32];
static int n_kept;

static double kept_value(int64_t h)
{
    kept[n_kept++] = h;
    return pg_data(h);
}

/* Zero leaf's grad, backpropagate from node, return leaf's grad (NaN on error). */
static double backward_grad(int64_t node, int64_t leaf)
{
    pg_set_grad(leaf, 0.0);
    return pg_backward(node) == PG_OK ? pg_grad(leaf) : NAN;
}

static double now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- making nodes ---------------------------------------------------------- */

/* Every op computes its forward value as Python would, and records its op tag,
 * children, exponent and flags; a leaf starts with grad 0 and one reference. */
static void test_leaf_and_ops(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(-3.0);
    CHECK(a >= 0 && b >= 0 && a != b);
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    CHECK_SAME(pg_data(a), 2.0);
    CHECK_SAME(pg_grad(a), 0.0);
    CHECK_EQ(pg_op(a), PG_OP_LEAF);
    CHECK_EQ(pg_child_count(a), 0);
    CHECK_EQ(pg_external_refs(a), 1);
    CHECK_EQ(pg_internal_refs(a), 0);
    CHECK_EQ(pg_valid(a), 1);

    int64_t s = pg_add(a, b);
    CHECK_SAME(pg_data(s), -1.0);
    CHECK_EQ(pg_op(s), PG_OP_ADD);
    CHECK_EQ(pg_child_count(s), 2);
    CHECK_EQ(child(s, 0), a);
    CHECK_EQ(child(s, 1), b);
    CHECK_EQ(pg_internal_refs(a), 1);

    int64_t m = pg_mul(a, b);
    CHECK_SAME(pg_data(m), -6.0);
    CHECK_EQ(pg_op(m), PG_OP_MUL);

    int64_t p3 = pg_pow_const(a, 3.0, PG_FLAG_INT_EXPONENT);
    CHECK_SAME(pg_data(p3), 8.0);
    CHECK_EQ(pg_op(p3), PG_OP_POW_CONST);
    CHECK_EQ(pg_child_count(p3), 1);
    CHECK_EQ(child(p3, 0), a);
    CHECK_SAME(pg_exponent(p3), 3.0);
    CHECK_EQ(pg_flags(p3), PG_FLAG_INT_EXPONENT);
    int64_t ph = pg_pow_const(a, 0.5, 0);
    CHECK_SAME(pg_data(ph), pow(rt(2.0), rt(0.5)));
    CHECK_EQ(pg_flags(ph), 0);
    CHECK_EQ(pg_pow_const(a, 2.0, 4), PG_ERR_ARG); /* unknown flag */

    int64_t pv = pg_pow(a, b); /* 2 ** -3, b a Value */
    CHECK_SAME(pg_data(pv), 0.125);
    CHECK_EQ(pg_op(pv), PG_OP_POW);
    CHECK_EQ(child(pv, 1), b);

    int64_t r_pos = pg_relu(a), r_neg = pg_relu(b);
    int64_t mz = pg_leaf(-0.0), r_mz = pg_relu(mz);
    CHECK_SAME(pg_data(r_pos), 2.0);
    CHECK_SAME(pg_data(r_neg), 0.0);
    CHECK_SAME(pg_data(r_mz), -0.0); /* -0.0 < 0 is false: micrograd keeps -0.0 */
    CHECK_EQ(pg_op(r_pos), PG_OP_RELU);

    int64_t t = pg_tanh(a), e = pg_exp(a), l = pg_log(a);
    int64_t sg = pg_sigmoid(a), sgn = pg_sigmoid(b);
    CHECK_SAME(pg_data(t), tanh(rt(2.0)));
    CHECK_SAME(pg_data(e), exp(rt(2.0)));
    CHECK_SAME(pg_data(l), log(rt(2.0)));
    CHECK(fabs(pg_data(sg) - 1.0 / (1.0 + exp(rt(-2.0)))) <= 1e-16);
    CHECK(fabs(pg_data(sgn) - 1.0 / (1.0 + exp(rt(3.0)))) <= 1e-16);
    CHECK_EQ(pg_op(t), PG_OP_TANH);
    CHECK_EQ(pg_op(e), PG_OP_EXP);
    CHECK_EQ(pg_op(l), PG_OP_LOG);
    CHECK_EQ(pg_op(sg), PG_OP_SIGMOID);

    /* a + 5 and a * 5 wrap 5 in a leaf, as the right operand. */
    int64_t ac = pg_add_const(a, 5.0), mc = pg_mul_const(a, 5.0);
    CHECK_SAME(pg_data(ac), 7.0);
    CHECK_SAME(pg_data(mc), 10.0);
    CHECK_EQ(pg_op(ac), PG_OP_ADD);
    CHECK_EQ(pg_op(mc), PG_OP_MUL);
    CHECK_EQ(child(ac, 0), a);
    CHECK_EQ(pg_op(child(ac, 1)), PG_OP_LEAF);
    CHECK_SAME(pg_data(child(mc, 1)), 5.0);

    /* 10 - a == (a * -1) + Value(10) */
    int64_t rs = pg_rsub_const(a, 10.0);
    CHECK_SAME(pg_data(rs), 8.0);
    CHECK_EQ(pg_op(rs), PG_OP_ADD);
    int64_t neg = child(rs, 0);
    CHECK_EQ(pg_op(neg), PG_OP_MUL);
    CHECK_EQ(child(neg, 0), a);
    CHECK_SAME(pg_data(child(neg, 1)), -1.0);
    CHECK_SAME(pg_data(child(rs, 1)), 10.0);

    /* 1 / a == (a ** -1) * Value(1) */
    int64_t rd = pg_rdiv_const(a, 1.0);
    CHECK_SAME(pg_data(rd), 0.5);
    CHECK_EQ(pg_op(rd), PG_OP_MUL);
    int64_t inv = child(rd, 0);
    CHECK_EQ(pg_op(inv), PG_OP_POW_CONST);
    CHECK_SAME(pg_exponent(inv), -1.0);
    CHECK_EQ(child(inv, 0), a);
    CHECK_SAME(pg_data(child(rd, 1)), 1.0);

    /* Value(2) ** b */
    int64_t rp = pg_rpow_const(b, 2.0);
    CHECK_SAME(pg_data(rp), 0.125);
    CHECK_EQ(pg_op(rp), PG_OP_POW);
    CHECK_SAME(pg_data(child(rp, 0)), 2.0);
    CHECK_EQ(child(rp, 1), b);

    int64_t all[] = {a, b, s, m, p3, ph, pv, r_pos, r_neg, mz, r_mz, t, e, l, sg, sgn,
                     ac, mc, rs, rd, rp};
    CHECK_EQ(pg_release_many(all, (int64_t)(sizeof all / sizeof *all)), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_sub and pg_div build micrograd's graphs: a + (b * -1) and a * b**-1, with
 * micrograd's values (a * pow(b, -1), not a / b) and gradients. */
static void test_composite_ops(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(7.0), b = pg_leaf(3.0);

    int64_t d = pg_sub(a, b);
    CHECK_SAME(pg_data(d), 4.0);
    CHECK_EQ(pg_live_nodes(), live0 + 5); /* a, b, leaf -1, b * -1, sum */
    CHECK_EQ(pg_op(d), PG_OP_ADD);
    CHECK_EQ(pg_child_count(d), 2);
    CHECK_EQ(child(d, 0), a);
    int64_t nb = child(d, 1);
    CHECK_EQ(pg_op(nb), PG_OP_MUL);
    CHECK_EQ(pg_child_count(nb), 2);
    CHECK_EQ(child(nb, 0), b);
    CHECK_EQ(pg_op(child(nb, 1)), PG_OP_LEAF);
    CHECK_SAME(pg_data(child(nb, 1)), -1.0);
    CHECK_EQ(pg_external_refs(nb), 0); /* the temporary is held by its parent only */
    CHECK_EQ(pg_internal_refs(nb), 1);
    CHECK_EQ(pg_backward(d), PG_OK);
    CHECK_SAME(pg_grad(a), 1.0);
    CHECK_SAME(pg_grad(b), -1.0);
    CHECK_EQ(pg_release(d), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    pg_set_grad(a, 0.0);
    pg_set_grad(b, 0.0);

    int64_t q = pg_div(a, b);
    double inv_b = pow(rt(3.0), rt(-1.0));
    CHECK_SAME(pg_data(q), 7.0 * inv_b);
    CHECK_EQ(pg_op(q), PG_OP_MUL);
    CHECK_EQ(child(q, 0), a);
    int64_t ib = child(q, 1);
    CHECK_EQ(pg_op(ib), PG_OP_POW_CONST);
    CHECK_SAME(pg_exponent(ib), -1.0);
    CHECK_EQ(pg_flags(ib), PG_FLAG_INT_EXPONENT);
    CHECK_EQ(child(ib, 0), b);
    CHECK_SAME(pg_data(ib), inv_b);
    CHECK_EQ(pg_backward(q), PG_OK);
    CHECK_SAME(pg_grad(a), inv_b);
    /* micrograd: b.grad += (-1 * b**-2) * (a.data * q.grad) */
    CHECK_SAME(pg_grad(b), (-1.0 * pow(rt(3.0), rt(-2.0))) * 7.0);

    int64_t all[] = {q, a, b};
    CHECK_EQ(pg_release_many(all, 3), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Python float semantics: the errors micrograd raises become error codes (and
 * no node is made), and the special values Python returns come back as values. */
static void test_python_float_semantics(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t zero = pg_leaf(0.0), mzero = pg_leaf(-0.0), m8 = pg_leaf(-8.0), ten = pg_leaf(10.0);
    int64_t thousand = pg_leaf(1000.0), m1 = pg_leaf(-1.0), one = pg_leaf(1.0);
    int64_t inf = pg_leaf(INFINITY), minf = pg_leaf(-INFINITY), nan_ = pg_leaf(NAN);
    int64_t half = pg_leaf(0.5);
    int64_t live1 = pg_live_nodes();

    CHECK_EQ(pg_pow_const(zero, -1.0, PG_FLAG_INT_EXPONENT), PG_ERR_ZERODIV);
    CHECK_EQ(pg_pow(zero, m1), PG_ERR_ZERODIV);
    CHECK_EQ(pg_div(one, zero), PG_ERR_ZERODIV);
    CHECK_EQ(pg_rdiv_const(zero, 1.0), PG_ERR_ZERODIV);
    CHECK_EQ(pg_pow_const(m8, 1.0 / 3.0, 0), PG_ERR_COMPLEX);
    CHECK_EQ(pg_rpow_const(half, -2.0), PG_ERR_COMPLEX); /* Value(-2.0) ** 0.5 */
    CHECK_EQ(pg_pow_const(ten, 400.0, PG_FLAG_INT_EXPONENT), PG_ERR_OVERFLOW);
    CHECK_EQ(pg_exp(thousand), PG_ERR_RANGE);
    CHECK_EQ(pg_log(zero), PG_ERR_DOMAIN);
    CHECK_EQ(pg_log(m1), PG_ERR_DOMAIN);
    CHECK_EQ(pg_log(minf), PG_ERR_DOMAIN);
    CHECK_EQ(pg_live_nodes(), live1); /* failed ops made nothing */

    /* Special values that are not errors in Python. */
    n_kept = 0;
    CHECK_SAME(kept_value(pg_exp(inf)), INFINITY);
    CHECK_SAME(kept_value(pg_exp(minf)), 0.0);
    CHECK(isnan(kept_value(pg_log(nan_))));
    CHECK_SAME(kept_value(pg_log(inf)), INFINITY);
    CHECK_SAME(kept_value(pg_pow_const(m8, 3.0, 0)), -512.0);
    CHECK_SAME(kept_value(pg_pow_const(zero, 0.0, 0)), 1.0);
    CHECK_SAME(kept_value(pg_pow_const(nan_, 0.0, 0)), 1.0);
    CHECK_SAME(kept_value(pg_pow_const(one, NAN, 0)), 1.0);
    CHECK_SAME(kept_value(pg_pow_const(mzero, 3.0, 0)), -0.0);
    CHECK_SAME(kept_value(pg_pow_const(minf, -1.0, 0)), -0.0);
    CHECK_SAME(kept_value(pg_pow_const(ten, -400.0, 0)), 0.0); /* underflow is no error */
    CHECK_SAME(kept_value(pg_pow_const(m1, INFINITY, 0)), 1.0);
    CHECK_SAME(kept_value(pg_sigmoid(minf)), 0.0);
    for (int i = 0; i < n_kept; i++)
        CHECK(kept[i] >= 0);
    CHECK_EQ(pg_release_many(kept, n_kept), 0);

    /* Backward of x**0.5 at 0: micrograd computes 0.5 * 0.0**-0.5 and raises. */
    int64_t r = pg_pow_const(zero, 0.5, 0);
    CHECK_SAME(pg_data(r), 0.0);
    CHECK_EQ(pg_backward(r), PG_ERR_ZERODIV);
    CHECK_EQ(pg_release(r), PG_OK);
    /* x**2 at 0 is fine: 2 * 0.0**1 == 0. */
    int64_t sq = pg_pow_const(zero, 2.0, PG_FLAG_INT_EXPONENT);
    CHECK_EQ(pg_backward(sq), PG_OK);
    CHECK_SAME(pg_grad(zero), 0.0);
    CHECK_EQ(pg_release(sq), PG_OK);

    int64_t leaves[] = {zero, mzero, m8, ten, thousand, m1, one, inf, minf, nan_, half};
    CHECK_EQ(pg_release_many(leaves, 11), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- backward -------------------------------------------------------------- */

/* The root's grad is set to 1 (not accumulated); every other node accumulates,
 * so a second backward adds again exactly as micrograd's does. */
static void test_backward_accumulates(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(3.0), c = pg_leaf(4.0);
    int64_t ab = pg_mul(a, b), L = pg_mul(ab, c);
    CHECK_EQ(pg_backward(L), PG_OK);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_SAME(pg_grad(ab), 4.0);
    CHECK_SAME(pg_grad(a), 12.0);
    CHECK_SAME(pg_grad(b), 8.0);
    CHECK_SAME(pg_grad(c), 6.0);
    CHECK_EQ(pg_set_grad(L, 5.0), PG_OK); /* overwritten by the next backward */
    CHECK_EQ(pg_backward(L), PG_OK);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_SAME(pg_grad(ab), 8.0);
    CHECK_SAME(pg_grad(a), 3.0 * 3.0 * 4.0); /* 3 * b * c */
    CHECK_SAME(pg_grad(b), 3.0 * 2.0 * 4.0);
    CHECK_SAME(pg_grad(c), 2.0 * 6.0);

    /* micrograd's _backward: one node's local step, from its current grad. */
    CHECK_EQ(pg_set_grad(ab, 1.0), PG_OK);
    CHECK_EQ(pg_set_grad(a, 0.0), PG_OK);
    CHECK_EQ(pg_node_backward(ab), PG_OK);
    CHECK_SAME(pg_grad(a), 3.0);
    CHECK_EQ(pg_node_backward(a), PG_OK); /* a leaf's step does nothing */
    CHECK_SAME(pg_grad(a), 3.0);

    /* Backward reads the current data, as micrograd's closures do. */
    pg_set_grad(a, 0.0);
    pg_set_grad(b, 0.0);
    CHECK_EQ(pg_set_data(b, 10.0), PG_OK);
    CHECK_SAME(pg_data(b), 10.0);
    CHECK_SAME(pg_data(ab), 6.0); /* setting data recomputes nothing */
    CHECK_EQ(pg_backward(ab), PG_OK);
    CHECK_SAME(pg_grad(a), 10.0);
    CHECK_SAME(pg_grad(b), 2.0);

    int64_t all[] = {a, b, c, ab, L};
    CHECK_EQ(pg_release_many(all, 5), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Shared subexpressions: a node reached twice gets both contributions, and
 * every node's step runs once, after all its parents'. */
static void test_backward_shared(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(3.0);
    int64_t xx = pg_mul(x, x);
    CHECK_EQ(pg_backward(xx), PG_OK);
    CHECK_SAME(pg_grad(x), 6.0);
    pg_set_grad(x, 0.0);
    int64_t x2 = pg_add(x, x);
    CHECK_EQ(pg_backward(x2), PG_OK);
    CHECK_SAME(pg_grad(x), 2.0);

    /* Diamond: d = (a + 1) * (a * 3), dd/da = 3a + 3(a + 1) = 15 at a = 2. */
    int64_t a = pg_leaf(2.0);
    int64_t b = pg_add_const(a, 1.0), c = pg_mul_const(a, 3.0), d = pg_mul(b, c);
    CHECK_SAME(pg_data(d), 18.0);
    CHECK_EQ(pg_backward(d), PG_OK);
    CHECK_SAME(pg_grad(a), 15.0);
    CHECK_SAME(pg_grad(b), 6.0);
    CHECK_SAME(pg_grad(c), 3.0);

    /* A stacked diamond: e = d + d*b reaches a through four paths. */
    pg_set_grad(a, 0.0);
    pg_set_grad(b, 0.0);
    pg_set_grad(c, 0.0);
    pg_set_grad(d, 0.0);
    int64_t db = pg_mul(d, b), e = pg_add(d, db);
    /* e = d(1 + b);  de/dd = 1 + b = 4;  de/db = d + (1+b)*c = 18 + 4*6 = 42;
     * de/dc = (1+b)*b = 12;  de/da = 42 + 12*3 = 78. */
    CHECK_EQ(pg_backward(e), PG_OK);
    CHECK_SAME(pg_grad(d), 4.0);
    CHECK_SAME(pg_grad(b), 42.0);
    CHECK_SAME(pg_grad(c), 12.0);
    CHECK_SAME(pg_grad(a), 78.0);

    int64_t all[] = {x, xx, x2, a, b, c, d, db, e};
    CHECK_EQ(pg_release_many(all, 9), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Each op's local derivative is micrograd's formula (or the textbook one for
 * the ops micrograd lacks), evaluated on the node's values. */
static void test_op_gradients(void)
{
    int64_t live0 = pg_live_nodes();
    double xv = rt(0.7);
    int64_t x = pg_leaf(xv), y = pg_leaf(-1.3);
    int64_t h;

    h = pg_tanh(x);
    CHECK_SAME(backward_grad(h, x), 1.0 - pg_data(h) * pg_data(h));
    pg_release(h);
    h = pg_exp(x);
    CHECK_SAME(backward_grad(h, x), pg_data(h));
    pg_release(h);
    h = pg_log(x);
    CHECK_SAME(backward_grad(h, x), 1.0 / xv);
    pg_release(h);
    h = pg_sigmoid(x);
    CHECK_SAME(backward_grad(h, x), pg_data(h) * (1.0 - pg_data(h)));
    pg_release(h);
    h = pg_relu(x);
    CHECK_SAME(backward_grad(h, x), 1.0);
    pg_release(h);
    h = pg_relu(y);
    CHECK_SAME(backward_grad(h, y), 0.0);
    pg_release(h);
    h = pg_pow_const(x, 3.0, PG_FLAG_INT_EXPONENT); /* micrograd: (3 * x**2) * grad */
    CHECK_SAME(backward_grad(h, x), 3.0 * pow(xv, 2.0));
    pg_release(h);
    h = pg_pow_const(x, -0.5, 0);
    CHECK_SAME(backward_grad(h, x), -0.5 * pow(xv, -1.5));
    pg_release(h);

    /* a ** b with b a Value: d/da = b * a**(b-1), d/db = out * log(a). */
    int64_t a = pg_leaf(2.5), b = pg_leaf(1.5);
    int64_t p = pg_pow(a, b);
    CHECK_EQ(pg_backward(p), PG_OK);
    CHECK_SAME(pg_grad(a), 1.5 * pow(rt(2.5), rt(0.5)));
    CHECK_SAME(pg_grad(b), pg_data(p) * log(rt(2.5)));

    int64_t all[] = {x, y, a, b, p};
    CHECK_EQ(pg_release_many(all, 5), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- references ------------------------------------------------------------- */

/* Releasing frees exactly what nothing refers to any more: a child outlives its
 * own handle while a parent holds it, and goes with the parent. */
static void test_refcounting(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(1.0), b = pg_leaf(2.0), s = pg_add(a, b);
    CHECK_EQ(pg_live_nodes(), live0 + 3);
    CHECK_EQ(pg_internal_refs(a), 1);

    CHECK_EQ(pg_release(a), PG_OK);
    CHECK_EQ(pg_valid(a), 1); /* s still holds it */
    CHECK_EQ(pg_external_refs(a), 0);
    CHECK_SAME(pg_data(a), 1.0);
    CHECK_EQ(pg_live_nodes(), live0 + 3);

    /* A second release was not owed: refused, and a stays alive for s. */
    CHECK_EQ(pg_release(a), PG_ERR_HANDLE);
    CHECK_EQ(pg_valid(a), 1);
    CHECK_EQ(pg_backward(s), PG_OK);
    CHECK_SAME(pg_grad(a), 1.0);

    CHECK_EQ(pg_release(s), PG_OK); /* frees s, then a; b has its handle */
    CHECK_EQ(pg_valid(s), 0);
    CHECK_EQ(pg_valid(a), 0);
    CHECK_EQ(pg_valid(b), 1);
    CHECK_EQ(pg_internal_refs(b), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 1);

    /* pg_retain / pg_release pairs. */
    CHECK_EQ(pg_retain(b), PG_OK);
    CHECK_EQ(pg_retain(b), PG_OK);
    CHECK_EQ(pg_external_refs(b), 3);
    CHECK_EQ(pg_release(b), PG_OK);
    CHECK_EQ(pg_release(b), PG_OK);
    CHECK_EQ(pg_valid(b), 1);
    CHECK_EQ(pg_release(b), PG_OK);
    CHECK_EQ(pg_valid(b), 0);
    CHECK_EQ(pg_release(b), PG_ERR_HANDLE);
    CHECK_EQ(pg_live_nodes(), live0);

    /* A node alive only through its parent can be taken back with child_retain. */
    int64_t c = pg_leaf(3.0), t = pg_tanh(c);
    pg_release(c);
    int64_t c2 = pg_child_retain(t, 0);
    CHECK_EQ(c2, c);
    CHECK_EQ(pg_external_refs(c), 1);
    CHECK_EQ(pg_child_retain(t, 1), PG_ERR_ARG);
    CHECK_EQ(pg_child_retain(t, -1), PG_ERR_ARG);
    CHECK_EQ(pg_release(t), PG_OK);
    CHECK_EQ(pg_valid(c), 1); /* our new reference keeps it */
    CHECK_EQ(pg_release(c2), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* A freed slot is reused, under a new generation: the old handle stays dead
 * even though its slot holds a live node again. */
static void test_slot_reuse(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(1.0);
    CHECK_EQ(pg_release(x), PG_OK);
    int64_t y = pg_leaf(2.0);
    CHECK_EQ(SLOT(y), SLOT(x)); /* the same slot */
    CHECK(y != x);
    CHECK_EQ(pg_valid(x), 0);
    CHECK_EQ(pg_valid(y), 1);
    CHECK(isnan(pg_data(x)));
    CHECK_EQ(pg_release(x), PG_ERR_HANDLE);
    CHECK_EQ(pg_valid(y), 1);

    /* Churning through 20,000 short-lived nodes reuses a handful of slots. */
    int64_t slots[16];
    int n_slots = 0, too_many = 0;
    for (int i = 0; i < 10000; i++) {
        int64_t u = pg_leaf(i), v = pg_mul(u, y), uv[] = {u, v};
        for (int j = 0; j < 2; j++) {
            int k = 0;
            while (k < n_slots && slots[k] != SLOT(uv[j]))
                k++;
            if (k == n_slots && n_slots < 16)
                slots[n_slots++] = SLOT(uv[j]);
            too_many += k == 16;
        }
        pg_release(u);
        pg_release(v);
    }
    CHECK_EQ(too_many, 0);
    CHECK(n_slots >= 2);
    CHECK_EQ(pg_release(y), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Every entry point given handle h (bad) rejects it and makes nothing; `ok` is
 * a live node used as the other operand. */
static void check_rejected(int64_t h, int64_t ok, const char *what)
{
    int failed0 = failed;
    int64_t live0 = pg_live_nodes();
    CHECK_EQ(pg_add(h, ok), PG_ERR_HANDLE);
    CHECK_EQ(pg_add(ok, h), PG_ERR_HANDLE);
    CHECK_EQ(pg_mul(h, ok), PG_ERR_HANDLE);
    CHECK_EQ(pg_mul(ok, h), PG_ERR_HANDLE);
    CHECK_EQ(pg_pow(h, ok), PG_ERR_HANDLE);
    CHECK_EQ(pg_pow(ok, h), PG_ERR_HANDLE);
    CHECK_EQ(pg_sub(h, ok), PG_ERR_HANDLE);
    CHECK_EQ(pg_sub(ok, h), PG_ERR_HANDLE);
    CHECK_EQ(pg_div(h, ok), PG_ERR_HANDLE);
    CHECK_EQ(pg_div(ok, h), PG_ERR_HANDLE);
    CHECK_EQ(pg_add_const(h, 1.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_mul_const(h, 1.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_rsub_const(h, 1.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_rdiv_const(h, 1.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_pow_const(h, 2.0, 0), PG_ERR_HANDLE);
    CHECK_EQ(pg_rpow_const(h, 2.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_relu(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_tanh(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_exp(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_log(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_sigmoid(h), PG_ERR_HANDLE);
    int64_t children[3] = {ok, h, ok};
    CHECK_EQ(pg_custom_node(1.0, children, 2), PG_ERR_HANDLE);
    CHECK_EQ(pg_custom_node(1.0, children, 3), PG_ERR_HANDLE);
    CHECK_EQ(pg_set_custom_backward(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_set_stateful(h), PG_ERR_HANDLE);
    pg_tape_ref ref = {0, 0};
    CHECK_EQ(pg_tape_record_into(&ref, h), PG_ERR_HANDLE);
    CHECK_EQ(ref.recorded, 0);
    CHECK_EQ(pg_retain(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_release(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_release_many(&h, 1), 1);
    CHECK(isnan(pg_data(h)));
    CHECK(isnan(pg_grad(h)));
    CHECK(isnan(pg_exponent(h)));
    CHECK_EQ(pg_set_data(h, 1.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_set_grad(h, 1.0), PG_ERR_HANDLE);
    double one_value = 5.0;
    CHECK_EQ(pg_set_data_many(&h, &one_value, 1), PG_ERR_HANDLE);
    CHECK_EQ(pg_valid(h), 0);
    CHECK_EQ(pg_op(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_flags(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_child_count(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_child_retain(h, 0), PG_ERR_HANDLE);
    CHECK_EQ(pg_internal_refs(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_external_refs(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_backward(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_node_backward(h), PG_ERR_HANDLE);
    CHECK_EQ(pg_tape_record(h), PG_ERR_HANDLE);
    /* The array entry points: one bad handle among good ones. */
    int64_t out[2] = {-100, -100}, one_ok[1] = {ok}, two[2] = {ok, h};
    CHECK_EQ(pg_layer(one_ok, one_ok, &h, 1, 1, 0, out), PG_ERR_HANDLE); /* x */
    CHECK_EQ(pg_layer(&h, one_ok, one_ok, 1, 1, 1, out), PG_ERR_HANDLE); /* w */
    CHECK_EQ(pg_layer(one_ok, &h, one_ok, 1, 1, 0, out), PG_ERR_HANDLE); /* b */
    CHECK_EQ(out[0], -100);
    int64_t sizes[2] = {1, 1};
    int32_t relu[1] = {0};
    CHECK_EQ(pg_mlp(two, 2, sizes, relu, 1, one_ok, out), PG_ERR_HANDLE); /* a bias */
    CHECK_EQ(pg_mlp((int64_t[]){ok, ok}, 2, sizes, relu, 1, &h, out), PG_ERR_HANDLE); /* x */
    double m[2] = {0.0, 0.0}, v[2] = {0.0, 0.0};
    pg_set_grad(ok, 1.0);
    CHECK_EQ(pg_zero_grad(two, 2), PG_ERR_HANDLE);
    CHECK_EQ(pg_sgd_step(two, m, 2, 0.1, 0.9, 0.0), PG_ERR_HANDLE);
    CHECK_EQ(pg_adam_step(two, m, v, 2, 1, 0.1, 0.9, 0.999, 1e-8, 0.0), PG_ERR_HANDLE);
    CHECK_SAME(pg_grad(ok), 1.0); /* all or nothing: ok was not touched */
    CHECK_SAME(pg_data(ok), 2.0);
    CHECK(m[0] == 0.0 && v[0] == 0.0);
    pg_set_grad(ok, 0.0);
    CHECK_EQ(pg_live_nodes(), live0);
    CHECK_EQ(pg_external_refs(ok), 1);
    CHECK_EQ(pg_internal_refs(ok), 0);
    if (failed != failed0)
        printf("  (the failures above are for the %s handle %lld)\n", what, (long long)h);
}

/* Stale (freed), negative and out-of-range handles are rejected everywhere. */
static void test_bad_handles(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t ok = pg_leaf(2.0);

    int64_t stale = pg_leaf(1.0);
    pg_release(stale);
    check_rejected(stale, ok, "freed");
    /* Stale although its slot is live again. */
    int64_t reused = pg_leaf(3.0);
    CHECK_EQ(SLOT(reused), SLOT(stale));
    check_rejected(stale, ok, "stale, slot reused");
    CHECK_EQ(pg_release(reused), PG_OK);

    /* A stale child of a freed parent. */
    int64_t k = pg_leaf(4.0), parent = pg_exp(k);
    pg_release(k);
    pg_release(parent);
    check_rejected(k, ok, "freed child");

    check_rejected(-1, ok, "negative");
    check_rejected(INT64_MIN, ok, "INT64_MIN");
    check_rejected(INT64_MAX, ok, "INT64_MAX");
    check_rejected((int64_t)1 << 42, ok, "2^42");
    check_rejected(((int64_t)1 << 42) | ok, ok, "2^42 + live");
    check_rejected((int64_t)1 << 40, ok, "never-used slot");
    check_rejected(ok ^ 1, ok, "wrong generation"); /* same slot */

    CHECK_EQ(pg_release(ok), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_release_many releases what it can and counts what it refused. */
static void test_release_many(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(1.0), b = pg_leaf(2.0), c = pg_leaf(3.0);
    int64_t gone = pg_leaf(4.0);
    pg_release(gone);
    pg_retain(c);
    /* a twice (owed once), b, c twice (owed twice), two bad handles */
    int64_t hs[] = {a, gone, b, a, c, -7, c};
    CHECK_EQ(pg_release_many(hs, 7), 3);
    CHECK_EQ(pg_valid(a), 0);
    CHECK_EQ(pg_valid(b), 0);
    CHECK_EQ(pg_valid(c), 0);
    CHECK_EQ(pg_release_many(NULL, 0), 0);
    CHECK_EQ(pg_release_many(NULL, 1), PG_ERR_ARG);
    CHECK_EQ(pg_release_many(hs, -1), PG_ERR_ARG);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- growth and depth ------------------------------------------------------- */

/* 300,000 nodes: the arena's arrays are reallocated many times, and handles
 * taken before any growth still read their own data. */
static void test_growth(void)
{
    enum { N = 300000 };
    int64_t live0 = pg_live_nodes();
    int64_t *h = malloc(N * sizeof *h);
    int bad_handle = 0, bad_data = 0;
    for (int i = 0; i < N; i++) {
        h[i] = i % 2 ? pg_mul_const(h[i - 1], 2.0) : pg_leaf(i);
        /* mul_const makes two nodes: about 450,000 in all */
        bad_handle += h[i] < 0;
    }
    CHECK_EQ(bad_handle, 0);
    CHECK_EQ(pg_live_nodes(), live0 + N + N / 2);
    for (int i = 0; i < N; i++)
        bad_data += !same(pg_data(h[i]), i % 2 ? 2.0 * (i - 1) : (double)i);
    CHECK_EQ(bad_data, 0);
    CHECK_SAME(pg_data(h[0]), 0.0);
    CHECK_SAME(pg_data(h[3]), 4.0);
    CHECK_SAME(pg_data(h[N - 1]), 2.0 * (N - 2));
    CHECK_EQ(pg_backward(h[1]), PG_OK); /* an early node, after all the growth */
    CHECK_SAME(pg_grad(h[0]), 2.0);
    CHECK_EQ(pg_release_many(h, N), 0);
    CHECK_EQ(pg_live_nodes(), live0);
    free(h);
}

/* A chain n deep, x = x * c: built, backpropagated and freed without recursion
 * (ASan's stack would overflow otherwise).  Gradients are exact: each step of
 * the expected values rounds exactly as the core's backward does. */
static void test_deep_mul_chain(void)
{
    enum { N = 1000000 };
    int64_t live0 = pg_live_nodes();
    const double cv = rt(1.0000001);
    int64_t c = pg_leaf(cv), x0 = pg_leaf(1.0), x = x0;
    double *vals = malloc((N + 1) * sizeof *vals); /* vals[i] = data of x_i */
    vals[0] = 1.0;
    int bad = 0;
    for (int i = 1; i <= N; i++) {
        int64_t next = pg_mul(x, c);
        bad += next < 0;
        if (x != x0)
            pg_release(x);
        x = next;
        vals[i] = vals[i - 1] * cv;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(pg_live_nodes(), live0 + N + 2);
    CHECK_SAME(pg_data(x), vals[N]);
    CHECK_EQ(pg_internal_refs(c), N);

    CHECK_EQ(pg_backward(x), PG_OK);
    /* Sweep from the root: x_i.grad = c * x_{i+1}.grad, c.grad += x_i * x_{i+1}.grad */
    double g = 1.0, gc = 0.0;
    for (int i = N; i >= 1; i--) {
        gc += vals[i - 1] * g;
        g = cv * g;
    }
    CHECK_SAME(pg_grad(x0), g);
    CHECK_SAME(pg_grad(c), gc);

    CHECK_EQ(pg_release(x), PG_OK); /* frees the whole chain, iteratively */
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    CHECK_EQ(pg_internal_refs(c), 0);
    CHECK_EQ(pg_internal_refs(x0), 0);
    pg_release(c);
    pg_release(x0);
    CHECK_EQ(pg_live_nodes(), live0);
    free(vals);
}

/* x = x + one, n deep; with a tape, released by freeing the tape. */
static void deep_add_chain(int64_t n, int through_tape)
{
    int64_t live0 = pg_live_nodes();
    int64_t one = pg_leaf(1.0), x0 = pg_leaf(1.0), x = x0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t next = pg_add(x, one);
        bad += next < 0;
        if (x != x0)
            pg_release(x);
        x = next;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(pg_live_nodes(), live0 + n + 2);
    CHECK_SAME(pg_data(x), 1.0 + (double)n);
    if (!through_tape) {
        CHECK_EQ(pg_backward(x), PG_OK);
        CHECK_SAME(pg_grad(x0), 1.0);
        CHECK_SAME(pg_grad(one), (double)n);
        CHECK_EQ(pg_release(x), PG_OK);
    } else {
        int64_t t = pg_tape_record(x);
        CHECK(t >= 0);
        CHECK_EQ(pg_tape_length(t), n + 2);
        CHECK_EQ(pg_tape_node(t, n + 1), x);
        CHECK_EQ(pg_release(x), PG_OK);
        CHECK_EQ(pg_live_nodes(), live0 + n + 2); /* the tape holds them */
        CHECK_EQ(pg_tape_backward(t, n + 2), 0);
        CHECK_SAME(pg_grad(x0), 1.0);
        CHECK_SAME(pg_grad(one), (double)n);
        CHECK_EQ(pg_tape_free(t), PG_OK); /* frees the chain, iteratively */
    }
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    pg_release(one);
    pg_release(x0);
    CHECK_EQ(pg_live_nodes(), live0);
}

static void test_deep_add_chain_tape(void) { deep_add_chain(1000000, 1); }

/* DESIGN.md: "a 10,000,000-deep chain must work".  About 4 s under ASan here. */
static void test_deep_chain_10m(void) { deep_add_chain(10000000, 0); }

/* --- tapes ------------------------------------------------------------------ */

/* A tape is a topological order holding a reference to each node: it keeps the
 * graph alive after the caller's handles go, and its id goes stale when freed. */
static void test_tapes(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(3.0);
    int64_t ab = pg_mul(a, b), L = pg_add(ab, a); /* L = a*b + a */
    int64_t t = pg_tape_record(L);
    CHECK(t >= 0);
    CHECK_EQ(pg_tape_length(t), 4);
    /* children before parents, the root last: a, b, a*b, L */
    CHECK_EQ(pg_tape_node(t, 0), a);
    CHECK_EQ(pg_tape_node(t, 1), b);
    CHECK_EQ(pg_tape_node(t, 2), ab);
    CHECK_EQ(pg_tape_node(t, 3), L);
    CHECK_EQ(pg_tape_node(t, 4), PG_ERR_ARG);
    CHECK_EQ(pg_tape_node(t, -1), PG_ERR_ARG);
    CHECK_EQ(pg_internal_refs(a), 3); /* a*b, L and the tape */
    CHECK_EQ(pg_internal_refs(L), 1);

    int64_t hs[] = {a, b, ab, L};
    CHECK_EQ(pg_release_many(hs, 4), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 4);
    CHECK_EQ(pg_valid(L), 1);
    CHECK_SAME(pg_data(pg_tape_node(t, 0)), 2.0);

    CHECK_EQ(pg_tape_backward(t, 5), PG_ERR_ARG);
    CHECK_EQ(pg_tape_backward(t, -1), PG_ERR_ARG);
    CHECK_EQ(pg_tape_backward(t, 4), 0);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_SAME(pg_grad(a), 4.0); /* b + 1 */
    CHECK_SAME(pg_grad(b), 2.0);
    /* Again: L.grad is reset to 1, the rest accumulate, like pg_backward:
     * a*b.grad = 2, a.grad = 4 + 1 + 3*2 = 11, b.grad = 2 + 2*2 = 6. */
    CHECK_EQ(pg_tape_backward(t, 4), 0);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_SAME(pg_grad(pg_tape_node(t, 2)), 2.0);
    CHECK_SAME(pg_grad(a), 11.0);
    CHECK_SAME(pg_grad(b), 6.0);

    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
    CHECK_EQ(pg_valid(a), 0);
    CHECK_EQ(pg_tape_free(t), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_length(t), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_node(t, 0), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_backward(t, 0), PG_ERR_TAPE);

    /* A new tape may reuse the entry, under a new id; the old id stays stale. */
    int64_t x = pg_leaf(1.0);
    int64_t t2 = pg_tape_record(x);
    CHECK(t2 >= 0 && t2 != t);
    CHECK_EQ(pg_tape_length(t), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_length(t2), 1);
    CHECK_EQ(pg_tape_backward(t2, 1), 0);
    CHECK_SAME(pg_grad(x), 1.0);
    CHECK_EQ(pg_tape_free(t2), PG_OK);
    CHECK_EQ(pg_valid(x), 1); /* our handle still holds it */
    pg_release(x);

    CHECK_EQ(pg_tape_length(-1), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_length(123456789), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_free(INT64_MAX), PG_ERR_TAPE);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_tape_backward stops at a custom node, returning its position + 1, and
 * resumes below it once the caller has run the node's backward. */
static void test_tape_custom_stop(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(3.0), y = pg_mul(x, x);
    int64_t p = pg_custom_node(2.0 * pg_data(y), &y, 1); /* p = 2y, a custom op */
    int64_t L = pg_add_const(p, 1.0);
    CHECK_SAME(pg_data(L), 19.0);

    /* pg_backward refuses, changing nothing. */
    pg_set_grad(L, 7.0);
    CHECK_EQ(pg_backward(L), PG_CUSTOM_OPS);
    CHECK_SAME(pg_grad(L), 7.0);
    CHECK_SAME(pg_grad(p), 0.0);
    pg_set_grad(p, 1.0);
    CHECK_EQ(pg_node_backward(p), PG_OK); /* a custom op has no built-in step */
    CHECK_SAME(pg_grad(y), 0.0);
    pg_set_grad(p, 0.0);

    int64_t t = pg_tape_record(L);
    int64_t len = pg_tape_length(t);
    CHECK_EQ(len, 5); /* x, y, p, leaf 1, L */
    int64_t pos = -1;
    for (int64_t i = 0; i < len; i++)
        if (pg_tape_node(t, i) == p)
            pos = i;
    CHECK_EQ(pos, 2);
    CHECK_EQ(pg_tape_backward(t, len), pos + 1);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_SAME(pg_grad(p), 1.0);
    CHECK_SAME(pg_grad(y), 0.0); /* not yet: the caller runs p's backward */
    pg_set_grad(y, pg_grad(y) + 2.0 * pg_grad(p));
    CHECK_EQ(pg_tape_backward(t, pos), 0);
    CHECK_SAME(pg_grad(x), 12.0); /* 2 * 2x */

    /* A custom root: the first call seeds it and stops at once. */
    int64_t t2 = pg_tape_record(p);
    CHECK_EQ(pg_tape_length(t2), 3);
    pg_set_grad(p, 0.0);
    CHECK_EQ(pg_tape_backward(t2, 3), 3);
    CHECK_SAME(pg_grad(p), 1.0);
    CHECK_EQ(pg_tape_backward(t2, 2), 0);

    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_tape_free(t2), PG_OK);
    int64_t all[] = {x, y, p, L};
    CHECK_EQ(pg_release_many(all, 4), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Replay: pg_set_data_many feeds inputs (all or nothing), pg_tape_forward
 * recomputes every node leaves first, pg_tape_replay_backward zeroes every grad
 * then backpropagates, pg_tape_diff finds the first differing node. */
static void test_tape_replay(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(2.0), y = pg_leaf(3.0), m = pg_mul(x, y), L = pg_add(m, x);
    int64_t t = pg_tape_record(L); /* x, y, m, L */
    CHECK_EQ(pg_tape_custom_ops(t), 0);

    int64_t xy[2] = {x, y}, bad[2] = {x, -1};
    double vals[2] = {5.0, 7.0};
    CHECK_EQ(pg_set_data_many(bad, vals, 2), PG_ERR_HANDLE);
    CHECK_SAME(pg_data(x), 2.0); /* all or nothing */
    CHECK_EQ(pg_set_data_many(xy, vals, -1), PG_ERR_ARG);
    CHECK_EQ(pg_set_data_many(xy, vals, 2), PG_OK);
    CHECK_SAME(pg_data(y), 7.0);
    CHECK_SAME(pg_data(L), 8.0); /* nothing recomputed yet */
    CHECK_EQ(pg_tape_forward(t), PG_OK);
    CHECK_SAME(pg_data(m), 35.0);
    CHECK_SAME(pg_data(L), 40.0);

    pg_set_grad(x, 100.0);
    for (int pass = 0; pass < 2; pass++) { /* zeroed each time: no accumulation */
        CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
        CHECK_SAME(pg_grad(x), 8.0);
        CHECK_SAME(pg_grad(y), 5.0);
        CHECK_SAME(pg_grad(L), 1.0);
    }

    /* The same graph built again has no difference; a changed value does. */
    int64_t m2 = pg_mul(x, y), L2 = pg_add(m2, x), t2 = pg_tape_record(L2);
    CHECK_EQ(pg_tape_diff(t, t2), 4);
    pg_set_data(m2, 36.0);
    CHECK_EQ(pg_tape_diff(t, t2), 2);
    int64_t t3 = pg_tape_record(m); /* a prefix of t */
    CHECK_EQ(pg_tape_diff(t, t3), 3);

    /* A forward error stops the replay. */
    int64_t lg = pg_log(x), t4 = pg_tape_record(lg);
    pg_set_data(x, -1.0);
    CHECK_EQ(pg_tape_forward(t4), PG_ERR_DOMAIN);

    /* Custom ops cannot be replayed. */
    int64_t p = pg_custom_node(1.0, &x, 1), t5 = pg_tape_record(p);
    CHECK_EQ(pg_tape_custom_ops(t5), 1);
    CHECK_EQ(pg_tape_forward(t5), PG_CUSTOM_OPS);
    CHECK_EQ(pg_tape_replay_backward(t5), PG_CUSTOM_OPS);

    int64_t tapes[] = {t, t2, t3, t4, t5};
    for (int i = 0; i < 5; i++)
        CHECK_EQ(pg_tape_free(tapes[i]), PG_OK);
    CHECK_EQ(pg_tape_custom_ops(t5), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_forward(t), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_replay_backward(t), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_diff(t, t2), PG_ERR_TAPE);
    int64_t all[] = {x, y, m, L, m2, L2, lg, p};
    CHECK_EQ(pg_release_many(all, 8), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_tape_skip_grads: the leaves it is given get no gradient from a replay
 * (grad 0); every other grad is what a replay without it computes. */
static void test_tape_skip_grads(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x[2] = {pg_leaf(0.5), pg_leaf(-2.0)};
    int64_t w[4] = {pg_leaf(0.25), pg_leaf(-0.75), pg_leaf(1.5), pg_leaf(0.125)};
    int64_t b[2] = {pg_leaf(0.1), pg_leaf(-0.2)}, h[2];
    CHECK_EQ(pg_layer(w, b, x, 2, 2, 1, h), PG_OK); /* DOTs whose x are x[] */
    int64_t s = pg_add(h[0], h[1]), L = pg_mul(s, x[0]); /* x[0] also outside a DOT */
    int64_t t = pg_tape_record(L);
    int64_t params[6] = {w[0], w[1], w[2], w[3], b[0], b[1]};
    double want[6];
    CHECK_EQ(pg_tape_forward(t), PG_OK);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    for (int i = 0; i < 6; i++)
        want[i] = pg_grad(params[i]);
    CHECK(pg_grad(x[0]) != 0.0 && pg_grad(x[1]) != 0.0);
    double grad_s = pg_grad(s);

    CHECK_EQ(pg_tape_skip_grads(t, x, 2), 2);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    for (int i = 0; i < 6; i++)
        CHECK_SAME(pg_grad(params[i]), want[i]);
    CHECK_SAME(pg_grad(s), grad_s);
    CHECK_SAME(pg_grad(x[0]), 0.0);
    CHECK_SAME(pg_grad(x[1]), 0.0);

    /* Non-leaves, the root, nodes off the tape and repeats are left out. */
    int64_t off = pg_leaf(1.0), some[5] = {x[1], s, L, off, x[1]};
    CHECK_EQ(pg_tape_skip_grads(t, some, 5), 1);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    CHECK(pg_grad(x[0]) != 0.0); /* no longer skipped: the set was replaced */
    CHECK_SAME(pg_grad(x[1]), 0.0);
    CHECK_SAME(pg_grad(L), 1.0);
    CHECK_EQ(pg_tape_skip_grads(t, NULL, 0), 0);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    CHECK(pg_grad(x[1]) != 0.0);

    /* Bad arguments change nothing. */
    int64_t bad[2] = {x[0], -1};
    CHECK_EQ(pg_tape_skip_grads(t, bad, 2), PG_ERR_HANDLE);
    CHECK_EQ(pg_tape_skip_grads(t, x, -1), PG_ERR_ARG);
    CHECK_EQ(pg_tape_skip_grads(t, NULL, 2), PG_ERR_ARG);
    CHECK_EQ(pg_tape_skip_grads(-1, x, 2), PG_ERR_TAPE);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    CHECK(pg_grad(x[1]) != 0.0);

    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_tape_skip_grads(t, x, 2), PG_ERR_TAPE);
    int64_t all[13] = {x[0], x[1], w[0], w[1], w[2], w[3], b[0], b[1], h[0], h[1], s, L, off};
    CHECK_EQ(pg_release_many(all, 13), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* A layer over a batch, for the dense replay tests: S samples of NIN inputs
 * through NOUT ReLU neurons, then sum of squares of the outputs, plus a log
 * of the first input (so that fed data can make the forward fail).  Returns
 * the loss; its nodes' handles are released (the caller's tape holds them). */
enum { DENSE_S = 9, DENSE_NIN = 3, DENSE_NOUT = 5 };

static int64_t dense_loss(const int64_t *w, const int64_t *b, const int64_t (*x)[DENSE_NIN])
{
    int64_t total = pg_leaf(0.0);
    for (int s = 0; s < DENSE_S; s++) {
        int64_t h[DENSE_NOUT];
        pg_layer(w, b, x[s], DENSE_NIN, DENSE_NOUT, 1, h);
        for (int j = 0; j < DENSE_NOUT; j++) {
            int64_t sq = pg_mul(h[j], h[j]), next = pg_add(total, sq);
            pg_release(sq);
            pg_release(h[j]);
            pg_release(total);
            total = next;
        }
    }
    int64_t lg = pg_log(x[0][0]), root = pg_pow_const(x[1][1], 0.5, 0);
    int64_t with_log = pg_add(total, lg), loss = pg_add(with_log, root);
    int64_t temporaries[] = {lg, root, total, with_log};
    pg_release_many(temporaries, 4);
    return loss;
}

/* The dense replay gives every node the value and grad the eager graph
 * gives, bit for bit, and a failing replay the error eager gives. */
static void test_dense_replay(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t w[DENSE_NIN * DENSE_NOUT], b[DENSE_NOUT], x[DENSE_S][DENSE_NIN];
    for (int i = 0; i < DENSE_NIN * DENSE_NOUT; i++)
        w[i] = pg_leaf(0.25 * (i % 7) - 0.8);
    for (int j = 0; j < DENSE_NOUT; j++)
        b[j] = pg_leaf(j == 2 ? -0.0 : 0.1 * j);
    for (int s = 0; s < DENSE_S; s++)
        for (int i = 0; i < DENSE_NIN; i++)
            x[s][i] = pg_leaf(0.5 + 0.3 * s - 0.7 * i);
    int64_t loss = dense_loss(w, b, x);
    int64_t t = pg_tape_record(loss);
    /* Handles read off the tape before it is planned, without references of
     * their own: planning may move those nodes; a handle then goes stale
     * (refused), never names another node. */
    int64_t n_before = pg_tape_length(t), *before = malloc((size_t)n_before * sizeof *before);
    for (int64_t i = 0; i < n_before; i++)
        before[i] = pg_tape_node(t, i);
    CHECK_EQ(pg_tape_groups(t), 1);
    int moved = 0, wrong = 0;
    for (int64_t i = 0; i < n_before; i++) {
        moved += pg_tape_node(t, i) != before[i];
        wrong += pg_tape_node(t, i) != before[i] && pg_valid(before[i]);
    }
    free(before);
    CHECK(moved > 0);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(pg_tape_forward(t), PG_OK);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);

    int64_t eager_loss = dense_loss(w, b, x), te = pg_tape_record(eager_loss);
    CHECK_EQ(pg_backward(eager_loss), PG_OK);
    int64_t n = pg_tape_length(t);
    CHECK_EQ(pg_tape_length(te), n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = pg_tape_node(t, i), e = pg_tape_node(te, i);
        int leaf = pg_child_count(r) == 0;
        double rd = pg_data(r), ed = pg_data(e), rg = pg_grad(r), eg = pg_grad(e);
        bad += memcmp(&rd, &ed, sizeof rd) != 0;
        /* shared leaves (w, b, x) got both backwards' grads: compare the rest */
        bad += !leaf && memcmp(&rg, &eg, sizeof rg) != 0;
    }
    CHECK_EQ(bad, 0);

    /* Fed data that makes log fail, or the backward of x ** 0.5 at 0: the
     * replay's error is eager's. */
    pg_set_data(x[0][0], -1.0);
    CHECK_EQ(pg_tape_forward(t), PG_ERR_DOMAIN);
    pg_set_data(x[0][0], 0.5);
    CHECK_EQ(pg_tape_forward(t), PG_OK);
    pg_set_data(x[1][1], 0.0);
    CHECK_EQ(pg_tape_forward(t), PG_OK);
    CHECK_EQ(pg_tape_replay_backward(t), PG_ERR_ZERODIV);
    CHECK_EQ(pg_tape_forward(te), PG_OK);
    CHECK_EQ(pg_backward(eager_loss), PG_ERR_ZERODIV);

    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_tape_free(te), PG_OK);
    int64_t rest[] = {loss, eager_loss};
    CHECK_EQ(pg_release_many(rest, 2), 0);
    CHECK_EQ(pg_release_many(w, DENSE_NIN * DENSE_NOUT), 0);
    CHECK_EQ(pg_release_many(b, DENSE_NOUT), 0);
    CHECK_EQ(pg_release_many(&x[0][0], DENSE_S * DENSE_NIN), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_set_custom_backward (a user assigning v._backward): the node keeps its op
 * and children, every backward that would run its built-in step instead stops
 * at it, and pg_node_backward still runs that step (micrograd's
 * v._backward() on a node whose closure the user replaced calls the new one;
 * Python decides, C only offers the old). */
static void test_set_custom_backward(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(3.0), y = pg_leaf(4.0), m = pg_mul(x, y), L = pg_mul_const(m, 2.0);
    int64_t t = pg_tape_record(L); /* x, y, m, leaf 2, L */
    CHECK_EQ(pg_tape_node(t, 2), m);
    CHECK_EQ(pg_tape_custom_ops(t), 0);
    CHECK_EQ(pg_set_custom_backward(m), PG_OK);
    CHECK_EQ(pg_op(m), PG_OP_MUL);
    CHECK_EQ(pg_child_count(m), 2);
    CHECK_EQ(pg_flags(m), 0); /* the core's own flag is not the caller's business */
    CHECK_SAME(pg_data(m), 12.0);

    /* pg_backward refuses, with nothing changed, from above m and at m. */
    pg_set_grad(L, 5.0);
    CHECK_EQ(pg_backward(L), PG_CUSTOM_OPS);
    CHECK_EQ(pg_backward(m), PG_CUSTOM_OPS);
    CHECK_SAME(pg_grad(L), 5.0);
    CHECK_SAME(pg_grad(m), 0.0);

    /* A tape recorded before stops at m: checked at run time. */
    CHECK_EQ(pg_tape_backward(t, 5), 3);
    CHECK_SAME(pg_grad(m), 2.0);
    CHECK_SAME(pg_grad(x), 0.0);
    CHECK_EQ(pg_node_backward(m), PG_OK); /* the built-in step, on request */
    CHECK_SAME(pg_grad(x), 8.0);
    CHECK_SAME(pg_grad(y), 6.0);
    CHECK_EQ(pg_tape_backward(t, 2), 0);
    CHECK_SAME(pg_grad(x), 8.0);

    /* Replay refuses, with nothing changed (once a bug: the count was kept
     * from recording). */
    CHECK_EQ(pg_tape_custom_ops(t), 1);
    CHECK_EQ(pg_tape_replay_backward(t), PG_CUSTOM_OPS);
    CHECK_SAME(pg_grad(x), 8.0);
    pg_set_data(x, 10.0);
    CHECK_EQ(pg_tape_forward(t), PG_CUSTOM_OPS);
    CHECK_SAME(pg_data(m), 12.0);

    /* Counted once each: set twice, and on a custom op; in a tape recorded after. */
    int64_t p = pg_custom_node(1.0, &L, 1);
    CHECK_EQ(pg_set_custom_backward(m), PG_OK);
    CHECK_EQ(pg_set_custom_backward(p), PG_OK);
    CHECK_EQ(pg_op(p), PG_OP_CUSTOM);
    int64_t t2 = pg_tape_record(p);
    CHECK_EQ(pg_tape_length(t2), 6);
    CHECK_EQ(pg_tape_custom_ops(t2), 2);
    CHECK_EQ(pg_tape_custom_ops(t), 1);
    pg_set_grad(L, 0.0);
    pg_set_grad(m, 0.0);
    CHECK_EQ(pg_tape_backward(t2, 6), 6); /* p, the root, first */
    pg_set_grad(L, 3.0 * pg_grad(p));      /* the caller's backward for p */
    CHECK_EQ(pg_tape_backward(t2, 5), 3);  /* L's step, then m stops it again */
    CHECK_SAME(pg_grad(m), 6.0);

    /* Freed, the flag goes with the node: six new nodes take the six slots
     * just freed (m's among them) and backpropagate as usual. */
    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_tape_free(t2), PG_OK);
    int64_t all[] = {x, y, m, L, p};
    CHECK_EQ(pg_release_many(all, 5), 0);
    int64_t a = pg_leaf(2.0), top = a;
    int reused_m = SLOT(a) == SLOT(m);
    for (int i = 0; i < 5; i++) {
        int64_t next = pg_mul(top, a);
        reused_m |= SLOT(next) == SLOT(m);
        if (top != a)
            pg_release(top);
        top = next;
    }
    CHECK(reused_m);
    CHECK_EQ(pg_backward(top), PG_OK);
    CHECK_SAME(pg_grad(a), 6.0 * 32.0); /* d(a**6)/da at 2 */
    pg_release(top);
    pg_release(a);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- custom nodes ----------------------------------------------------------- */

/* pg_custom_node with 0, 1, 2 and 5 children (more than 2 are stored apart):
 * values, children, references, and backward handed to the caller. */
static void test_custom_nodes(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t k[5];
    for (int i = 0; i < 5; i++)
        k[i] = pg_leaf(10.0 + i);

    int64_t p0 = pg_custom_node(1.5, NULL, 0);
    int64_t p1 = pg_custom_node(2.5, k, 1);
    int64_t p2 = pg_custom_node(3.5, k + 3, 2);
    int64_t p5 = pg_custom_node(4.5, k, 5);
    int64_t ps[] = {p0, p1, p2, p5};
    int64_t arity[] = {0, 1, 2, 5};
    for (int j = 0; j < 4; j++) {
        CHECK(ps[j] >= 0);
        CHECK_EQ(pg_op(ps[j]), PG_OP_CUSTOM); /* with no children too: Value(5.0, (), 'op') */
        CHECK_EQ(pg_child_count(ps[j]), arity[j]);
        CHECK_SAME(pg_data(ps[j]), 1.5 + j);
    }
    CHECK_EQ(child(p2, 0), k[3]);
    CHECK_EQ(child(p2, 1), k[4]);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(child(p5, i), k[i]);
    CHECK_EQ(pg_child_retain(p5, 5), PG_ERR_ARG);
    CHECK_EQ(pg_internal_refs(k[0]), 2);
    CHECK_EQ(pg_internal_refs(k[4]), 2);
    CHECK_EQ(pg_live_nodes(), live0 + 9);

    /* A graph through a wide custom node: backward needs Python; a tape stops at it. */
    int64_t top = pg_mul(p5, k[0]);
    CHECK_EQ(pg_backward(top), PG_CUSTOM_OPS);
    int64_t t = pg_tape_record(top);
    CHECK_EQ(pg_tape_length(t), 7); /* five leaves, p5, top */
    CHECK_EQ(pg_tape_node(t, 5), p5);
    CHECK_EQ(pg_tape_backward(t, 7), 6);
    CHECK_SAME(pg_grad(p5), 10.0);
    CHECK_EQ(pg_tape_backward(t, 5), 0);
    CHECK_SAME(pg_grad(k[0]), 4.5); /* from top only: p5's backward is the caller's */
    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_release(top), PG_OK);

    /* Duplicate children are counted once each. */
    int64_t dup[] = {k[1], k[1], k[2]};
    int64_t pd = pg_custom_node(0.0, dup, 3);
    CHECK_EQ(pg_internal_refs(k[1]), 3); /* p5, and pd twice */
    CHECK_EQ(pg_release(pd), PG_OK);
    CHECK_EQ(pg_internal_refs(k[1]), 1);

    /* Bad arguments make nothing. */
    int64_t live1 = pg_live_nodes();
    CHECK_EQ(pg_custom_node(0.0, k, -1), PG_ERR_ARG);
    CHECK_EQ(pg_custom_node(0.0, NULL, 1), PG_ERR_ARG);
    CHECK_EQ(pg_live_nodes(), live1);

    /* Custom nodes are freed like any other: p1 alone, and k[2] not while
     * p5 holds it. */
    CHECK_EQ(pg_release(p1), PG_OK);
    CHECK_EQ(pg_valid(p1), 0);
    CHECK_EQ(pg_internal_refs(k[0]), 1);
    CHECK_EQ(pg_release(k[2]), PG_OK);
    CHECK_EQ(pg_valid(k[2]), 1);
    CHECK_EQ(pg_live_nodes(), live0 + 8);

    /* Freeing p5 frees its separately stored children array (LSan would report
     * it otherwise) and k[2], which only p5 still held. */
    int64_t over = pg_exp(p0);
    int64_t rest[] = {p5, p2, p0};
    CHECK_EQ(pg_release_many(rest, 3), 0);
    CHECK_EQ(pg_valid(p0), 1); /* `over` holds it */
    CHECK_EQ(pg_valid(p5), 0);
    CHECK_EQ(pg_valid(p2), 0);
    CHECK_EQ(pg_valid(k[2]), 0);
    CHECK_EQ(pg_valid(k[3]), 1);
    CHECK_EQ(pg_internal_refs(k[3]), 0);
    CHECK_EQ(pg_release(over), PG_OK);
    CHECK_EQ(pg_valid(p0), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 4);

    int64_t leaves[] = {k[0], k[1], k[3], k[4]};
    CHECK_EQ(pg_release_many(leaves, 4), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- the node limit ---------------------------------------------------------- */

/* At the node limit, making a node fails with PG_ERR_NOMEM; an op that makes
 * several nodes fails as a whole, leaving nothing behind. */
static void test_node_limit(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(1.0), b = pg_leaf(2.0);
    CHECK_EQ(pg_set_node_limit(live0 + 3), 0);
    int64_t c = pg_leaf(3.0);
    CHECK(c >= 0);
    CHECK_EQ(pg_leaf(4.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_add(a, b), PG_ERR_NOMEM);
    int64_t children[] = {a, b, c};
    CHECK_EQ(pg_custom_node(0.0, children, 3), PG_ERR_NOMEM); /* its children array is freed: LSan */
    CHECK_EQ(pg_live_nodes(), live0 + 3);
    CHECK_EQ(pg_internal_refs(a), 0);

    /* Room for one node: ops that make two or three fail. */
    CHECK_EQ(pg_release(c), PG_OK);
    CHECK_EQ(pg_add_const(a, 1.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_mul_const(a, 1.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_div(a, b), PG_ERR_NOMEM);
    CHECK_EQ(pg_rdiv_const(a, 1.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_rpow_const(a, 2.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_sub(a, b), PG_ERR_NOMEM);
    CHECK_EQ(pg_rsub_const(a, 1.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    CHECK_EQ(pg_internal_refs(a), 0);
    CHECK_EQ(pg_internal_refs(b), 0);

    /* Room for two: the three-node ops fail at their last node. */
    CHECK_EQ(pg_set_node_limit(live0 + 4), live0 + 3);
    CHECK_EQ(pg_sub(a, b), PG_ERR_NOMEM);
    CHECK_EQ(pg_rsub_const(a, 1.0), PG_ERR_NOMEM);
    CHECK_EQ(pg_live_nodes(), live0 + 2);
    CHECK_EQ(pg_internal_refs(b), 0);
    int64_t q = pg_div(a, b); /* two nodes: fits */
    CHECK(q >= 0);
    CHECK_EQ(pg_live_nodes(), live0 + 4);
    CHECK_EQ(pg_release(q), PG_OK);

    CHECK_EQ(pg_set_node_limit(-1), PG_ERR_ARG);
    CHECK_EQ(pg_set_node_limit(0), live0 + 4);
    int64_t s = pg_sub(a, b);
    CHECK(s >= 0);
    int64_t all[] = {s, a, b};
    CHECK_EQ(pg_release_many(all, 3), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- neurons, layers, MLPs ---------------------------------------------------- */

/* pg_layer makes one DOT node per neuron, children (b, w row, x), summed left
 * to right from b as micrograd's sum(..., b) rounds, with a RELU on top when
 * asked; its backward is that of the same sum of products. */
static void test_layer(void)
{
    int64_t live0 = pg_live_nodes();
    const double wv[6] = {0.5, -1.25, 2.0, 0.1, 0.2, 0.3}, bv[2] = {0.25, -3.0},
                 xv[3] = {1.5, 0.7, -0.4};
    int64_t w[6], b[2], x[3], out[2];
    for (int i = 0; i < 6; i++)
        w[i] = pg_leaf(wv[i]);
    for (int j = 0; j < 2; j++)
        b[j] = pg_leaf(bv[j]);
    for (int i = 0; i < 3; i++)
        x[i] = pg_leaf(xv[i]);
    int64_t live1 = pg_live_nodes();

    CHECK_EQ(pg_layer(w, b, x, 3, 2, 0, out), PG_OK);
    CHECK_EQ(pg_live_nodes(), live1 + 2);
    for (int j = 0; j < 2; j++) {
        double want = bv[j];
        for (int i = 0; i < 3; i++)
            want = want + wv[3 * j + i] * xv[i];
        CHECK_SAME(pg_data(out[j]), want);
        CHECK_EQ(pg_op(out[j]), PG_OP_DOT);
        CHECK_EQ(pg_child_count(out[j]), 7);
        CHECK_EQ(child(out[j], 0), b[j]);
        CHECK_EQ(child(out[j], 1 + 2), w[3 * j + 2]);
        CHECK_EQ(child(out[j], 4 + 1), x[1]);
        CHECK_EQ(pg_external_refs(out[j]), 1);
    }
    CHECK_EQ(pg_internal_refs(x[0]), 2);
    CHECK_EQ(pg_backward(out[1]), PG_OK);
    CHECK_SAME(pg_grad(b[1]), 1.0);
    CHECK_SAME(pg_grad(b[0]), 0.0);
    CHECK_SAME(pg_grad(w[4]), xv[1]);
    CHECK_SAME(pg_grad(x[2]), wv[5]);
    CHECK_EQ(pg_release_many(out, 2), 0);
    CHECK_EQ(pg_live_nodes(), live1);

    /* With ReLU: out[1] is negative, so relu gives 0 and passes no gradient. */
    CHECK_EQ(pg_layer(w, b, x, 3, 2, 1, out), PG_OK);
    CHECK_EQ(pg_live_nodes(), live1 + 4);
    CHECK_EQ(pg_op(out[0]), PG_OP_RELU);
    CHECK_EQ(pg_op(child(out[0], 0)), PG_OP_DOT);
    CHECK_SAME(pg_data(out[1]), 0.0);
    pg_set_grad(x[0], 0.0);
    CHECK_EQ(pg_backward(out[1]), PG_OK);
    CHECK_SAME(pg_grad(x[0]), 0.0);
    CHECK_EQ(pg_release_many(out, 2), 0);
    CHECK_EQ(pg_live_nodes(), live1);

    /* TANH and SIGMOID over the DOT node: the nodes pg_tanh and pg_sigmoid make
     * over it, the same bits.  Codes C has no activation for make nothing. */
    const int32_t acts[2] = {PG_ACT_TANH, PG_ACT_SIGMOID};
    const int64_t ops[2] = {PG_OP_TANH, PG_OP_SIGMOID};
    for (int a = 0; a < 2; a++) {
        CHECK_EQ(pg_layer(w, b, x, 3, 2, acts[a], out), PG_OK);
        CHECK_EQ(pg_live_nodes(), live1 + 4);
        for (int j = 0; j < 2; j++) {
            int64_t dot = child(out[j], 0);
            int64_t ref = a == 0 ? pg_tanh(dot) : pg_sigmoid(dot);
            CHECK_EQ(pg_op(out[j]), ops[a]);
            CHECK_EQ(pg_op(dot), PG_OP_DOT);
            CHECK_SAME(pg_data(out[j]), pg_data(ref));
            pg_set_grad(dot, 0.0); /* backward accumulates into it, as micrograd's */
            double fused = backward_grad(out[j], x[2]);
            pg_set_grad(dot, 0.0);
            CHECK_SAME(fused, backward_grad(ref, x[2]));
            CHECK(fused != 0.0);
            pg_release(ref);
        }
        CHECK_EQ(pg_release_many(out, 2), 0);
        CHECK_EQ(pg_live_nodes(), live1);
    }
    const int32_t bad_acts[4] = {-1, PG_ACT_SIGMOID + 1, 100, INT32_MIN};
    for (int a = 0; a < 4; a++) {
        CHECK_EQ(pg_layer(w, b, x, 3, 2, bad_acts[a], out), PG_ERR_ARG);
        CHECK_EQ(pg_live_nodes(), live1);
    }

    /* micrograd's order matters: (1e16 + 1) + 1 rounds back to 1e16 twice,
     * where 1e16 + (1 + 1) would not. */
    int64_t big = pg_leaf(1e16), ones[2] = {x[0], x[0]};
    pg_set_data(x[0], 1.0);
    CHECK_EQ(pg_layer(ones, &big, ones, 2, 1, 0, out), PG_OK);
    CHECK_SAME(pg_data(out[0]), 1e16);
    pg_release(out[0]);
    pg_release(big);

    /* No inputs: a neuron is its bias. */
    CHECK_EQ(pg_layer(NULL, b, NULL, 0, 2, 0, out), PG_OK);
    CHECK_SAME(pg_data(out[1]), -3.0);
    CHECK_EQ(pg_child_count(out[1]), 1);
    CHECK_EQ(pg_release_many(out, 2), 0);

    /* Bad sizes; and at the node limit, all or nothing. */
    CHECK_EQ(pg_layer(w, b, x, -1, 2, 0, out), PG_ERR_ARG);
    CHECK_EQ(pg_layer(w, NULL, x, 3, 2, 0, out), PG_ERR_ARG);
    CHECK_EQ(pg_layer(w, b, x, 3, 2, 0, NULL), PG_ERR_ARG);
    CHECK_EQ(pg_set_node_limit(live1 + 3), 0);
    CHECK_EQ(pg_layer(w, b, x, 3, 2, 1, out), PG_ERR_NOMEM); /* the second RELU */
    CHECK_EQ(pg_layer(w, b, x, 3, 2, 0, out), PG_OK);        /* fits */
    CHECK_EQ(pg_set_node_limit(0), live1 + 3);
    CHECK_EQ(pg_release_many(out, 2), 0);
    CHECK_EQ(pg_live_nodes(), live1);
    CHECK_EQ(pg_internal_refs(x[0]), 0);

    CHECK_EQ(pg_release_many(w, 6), 0);
    CHECK_EQ(pg_release_many(b, 2), 0);
    CHECK_EQ(pg_release_many(x, 3), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_mlp is pg_layer applied layer after layer: same values bit for bit, same
 * gradients, inner nodes held only by their parents, all or nothing. */
static void test_mlp(void)
{
    int64_t live0 = pg_live_nodes();
    enum { NP = 3 * 2 + 3 + 1 * 3 + 1 };
    int64_t p[NP], x[2], out[1], hid[3], ref[1];
    for (int i = 0; i < NP; i++)
        p[i] = pg_leaf(0.1 * (i + 1) * (i % 3 ? 1 : -1));
    x[0] = pg_leaf(0.9);
    x[1] = pg_leaf(-1.7);
    int64_t sizes[3] = {2, 3, 1};
    int32_t relu[2] = {1, 0};
    int64_t live1 = pg_live_nodes();

    CHECK_EQ(pg_mlp(p, NP, sizes, relu, 2, x, out), PG_OK);
    CHECK_EQ(pg_live_nodes(), live1 + 7); /* 3 DOT + 3 RELU + 1 DOT */
    CHECK_EQ(pg_op(out[0]), PG_OP_DOT);
    int64_t inner = child(out[0], 1 + 3); /* its first input: a hidden RELU */
    CHECK_EQ(pg_op(inner), PG_OP_RELU);
    CHECK_EQ(pg_external_refs(inner), 0);

    CHECK_EQ(pg_layer(p, p + 6, x, 2, 3, 1, hid), PG_OK);
    CHECK_EQ(pg_layer(p + 9, p + 12, hid, 3, 1, 0, ref), PG_OK);
    CHECK_SAME(pg_data(out[0]), pg_data(ref[0]));

    double g_mlp[NP], g_ref[NP];
    CHECK_EQ(pg_backward(out[0]), PG_OK);
    for (int i = 0; i < NP; i++)
        g_mlp[i] = pg_grad(p[i]);
    CHECK_EQ(pg_zero_grad(p, NP), PG_OK);
    CHECK_EQ(pg_backward(ref[0]), PG_OK);
    int differ = 0, nonzero = 0;
    for (int i = 0; i < NP; i++) {
        g_ref[i] = pg_grad(p[i]);
        differ += !same(g_mlp[i], g_ref[i]);
        nonzero += g_ref[i] != 0.0;
    }
    CHECK_EQ(differ, 0);
    CHECK(nonzero >= 8);
    CHECK_EQ(pg_release_many(hid, 3), 0);
    CHECK_EQ(pg_release(ref[0]), PG_OK);
    CHECK_EQ(pg_release(out[0]), PG_OK);
    CHECK_EQ(pg_live_nodes(), live1);

    /* Wrong parameter count, bad sizes; at the node limit, nothing is left. */
    CHECK_EQ(pg_mlp(p, NP - 1, sizes, relu, 2, x, out), PG_ERR_ARG);
    CHECK_EQ(pg_mlp(p, NP, sizes, relu, 0, x, out), PG_ERR_ARG);
    CHECK_EQ(pg_mlp(p, NP, (int64_t[]){2, -3, 1}, relu, 2, x, out), PG_ERR_ARG);
    CHECK_EQ(pg_mlp(p, NP, sizes, (int32_t[]){1, PG_ACT_SIGMOID + 1}, 2, x, out), PG_ERR_ARG);
    CHECK_EQ(pg_mlp(p, NP, sizes, (int32_t[]){-1, 0}, 2, x, out), PG_ERR_ARG);
    CHECK_EQ(pg_set_node_limit(live1 + 6), 0); /* the last DOT does not fit */
    CHECK_EQ(pg_mlp(p, NP, sizes, relu, 2, x, out), PG_ERR_NOMEM);
    CHECK_EQ(pg_live_nodes(), live1);
    CHECK_EQ(pg_set_node_limit(live1 + 4), live1 + 6); /* a hidden RELU does not */
    CHECK_EQ(pg_mlp(p, NP, sizes, relu, 2, x, out), PG_ERR_NOMEM);
    CHECK_EQ(pg_live_nodes(), live1);
    CHECK_EQ(pg_set_node_limit(0), live1 + 4);
    CHECK_EQ(pg_internal_refs(x[0]), 0);

    CHECK_EQ(pg_release_many(p, NP), 0);
    CHECK_EQ(pg_release_many(x, 2), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- optimizers ----------------------------------------------------------------- */

/* zero_grad, SGD (plain, momentum, weight decay) and Adam update every
 * parameter with PyTorch's formulas, evaluated here in the same order. */
static void test_optimizers(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t p[2] = {pg_leaf(1.0), pg_leaf(-2.0)};
    double vel[2] = {0.0, 0.0}, m[2] = {0.0, 0.0}, v[2] = {0.0, 0.0};
    const double g[2] = {0.5, -0.25};

    pg_set_grad(p[0], g[0]);
    pg_set_grad(p[1], g[1]);
    CHECK_EQ(pg_sgd_step(p, NULL, 2, 0.1, 0.0, 0.0), PG_OK);
    CHECK_SAME(pg_data(p[0]), 1.0 - 0.1 * 0.5);
    CHECK_SAME(pg_data(p[1]), -2.0 - 0.1 * -0.25);
    CHECK_SAME(pg_grad(p[0]), 0.5); /* a step leaves grads alone */

    /* momentum 0.9, weight decay 0.01, two steps */
    double d = pg_data(p[0]), vv = 0.0;
    for (int step = 0; step < 2; step++) {
        CHECK_EQ(pg_sgd_step(p, vel, 2, 0.1, 0.9, 0.01), PG_OK);
        double gg = g[0] + 0.01 * d;
        vv = 0.9 * vv + gg;
        d -= 0.1 * vv;
    }
    CHECK_SAME(pg_data(p[0]), d);
    CHECK_SAME(vel[0], vv);
    CHECK_EQ(pg_sgd_step(p, NULL, 2, 0.1, 0.9, 0.0), PG_ERR_ARG);

    /* Adam, two steps */
    pg_set_data(p[1], 3.0);
    double dv = 3.0, mm = 0.0, v2 = 0.0;
    for (int t = 1; t <= 2; t++) {
        CHECK_EQ(pg_adam_step(p, m, v, 2, t, 0.01, 0.9, 0.999, 1e-8, 0.0), PG_OK);
        mm = 0.9 * mm + (1.0 - 0.9) * g[1];
        v2 = 0.999 * v2 + (1.0 - 0.999) * g[1] * g[1];
        double bc1 = 1.0 - pow(rt(0.9), t), bc2 = sqrt(1.0 - pow(rt(0.999), t));
        dv -= (0.01 / bc1) * (mm / (sqrt(v2) / bc2 + 1e-8));
    }
    CHECK_SAME(pg_data(p[1]), dv);
    CHECK_SAME(m[1], mm);
    CHECK_SAME(v[1], v2);
    CHECK(fabs(pg_data(p[1]) - (3.0 + 2 * 0.01)) < 1e-6); /* Adam's steps are about lr */
    CHECK_EQ(pg_adam_step(p, m, v, 2, 0, 0.01, 0.9, 0.999, 1e-8, 0.0), PG_ERR_ARG);
    CHECK_EQ(pg_adam_step(p, NULL, v, 2, 1, 0.01, 0.9, 0.999, 1e-8, 0.0), PG_ERR_ARG);

    CHECK_EQ(pg_zero_grad(p, 2), PG_OK);
    CHECK_SAME(pg_grad(p[0]), 0.0);
    CHECK_SAME(pg_grad(p[1]), 0.0);
    CHECK_EQ(pg_zero_grad(NULL, 0), PG_OK);
    CHECK_EQ(pg_zero_grad(p, -1), PG_ERR_ARG);
    CHECK_EQ(pg_release_many(p, 2), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- no_grad ---------------------------------------------------------------------- */

static void *make_sum_op(void *arg)
{
    int64_t *h = arg; /* h[0], h[1] in; h[2] = op of their sum out */
    int64_t s = pg_add(h[0], h[1]);
    h[2] = pg_op(s);
    pg_release(s);
    return NULL;
}

/* While the thread holds an active no_grad token, new nodes keep their value
 * but become leaves (their temporaries freed at once); the setting belongs to
 * the calling thread.  A token starts inactive; tokens nest. */
static void test_no_grad(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(5.0), zero = pg_leaf(0.0);
    CHECK_EQ(pg_grad_recording(), 1);
    pg_grad_off *token = pg_grad_off_new();
    CHECK(token != NULL);
    CHECK_EQ(pg_grad_recording(), 1); /* not started yet */
    CHECK_EQ(pg_grad_off_start(token), PG_OK);
    CHECK_EQ(pg_grad_recording(), 0);
    CHECK_EQ(pg_grad_off_start(token), PG_ERR_ARG); /* already active */
    CHECK_EQ(pg_grad_off_start(NULL), PG_ERR_ARG);

    int64_t s = pg_add(a, b), d = pg_sub(a, b), q = pg_div(a, b), out[1];
    CHECK_SAME(pg_data(s), 7.0);
    CHECK_SAME(pg_data(d), -3.0);
    CHECK_SAME(pg_data(q), 2.0 * pow(rt(5.0), rt(-1.0)));
    CHECK_EQ(pg_op(s), PG_OP_LEAF);
    CHECK_EQ(pg_op(d), PG_OP_LEAF);
    CHECK_EQ(pg_child_count(q), 0);
    CHECK_EQ(pg_internal_refs(a), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 6); /* no temporaries left */
    CHECK_EQ(pg_log(zero), PG_ERR_DOMAIN);
    int64_t wb[2] = {a, b};
    CHECK_EQ(pg_layer(wb, wb + 1, wb, 1, 1, 1, out), PG_OK); /* relu(5 + 2*2) */
    CHECK_SAME(pg_data(out[0]), 9.0);
    CHECK_EQ(pg_op(out[0]), PG_OP_LEAF);
    int64_t c = pg_custom_node(4.0, wb, 2); /* a custom op too */
    CHECK_EQ(pg_op(c), PG_OP_LEAF);
    CHECK_EQ(pg_child_count(c), 0);
    CHECK_EQ(pg_internal_refs(b), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 8);

    /* Another thread still records graphs. */
    int64_t args[3] = {a, b, -1};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, make_sum_op, args), 0);
    pthread_join(th, NULL);
    CHECK_EQ(args[2], PG_OP_ADD);

    /* Nested: recording resumes only when the last active token goes. */
    pg_grad_off *inner = pg_grad_off_new(), *unused = pg_grad_off_new();
    CHECK_EQ(pg_grad_off_start(inner), PG_OK);
    pg_grad_off_release(token);
    CHECK_EQ(pg_grad_recording(), 0);
    int64_t s1 = pg_mul(a, b);
    CHECK_EQ(pg_op(s1), PG_OP_LEAF);
    pg_grad_off_release(inner);
    CHECK_EQ(pg_grad_recording(), 1);
    pg_grad_off_release(unused); /* never started: changes nothing */
    pg_grad_off_release(NULL);
    CHECK_EQ(pg_grad_recording(), 1);

    int64_t s2 = pg_add(a, b);
    CHECK_EQ(pg_op(s2), PG_OP_ADD);
    int64_t all[] = {a, b, zero, s, d, q, out[0], c, s1, s2};
    CHECK_EQ(pg_release_many(all, 10), 0);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Threads for test_grad_tokens_threads: each starts a token of its own, and
 * gives it up itself (even ids) or has the main thread release it (odd). */
enum { GRAD_THREADS = 4 };

typedef struct {
    int id;
    pthread_barrier_t *all_off, *released;
    int64_t a, b;
    pg_grad_off *token;
    int64_t start_rc, recording_off, op_off, recording_on, op_on;
} grad_thread_t;

static int64_t op_of_product(int64_t a, int64_t b)
{
    int64_t m = pg_mul(a, b), op = pg_op(m);
    pg_release(m);
    return op;
}

static void *grad_thread(void *arg)
{
    grad_thread_t *g = arg;
    g->token = pg_grad_off_new();
    g->start_rc = pg_grad_off_start(g->token);
    g->recording_off = pg_grad_recording();
    g->op_off = op_of_product(g->a, g->b);
    pthread_barrier_wait(g->all_off);
    if (g->id % 2 == 0)
        pg_grad_off_release(g->token);
    pthread_barrier_wait(g->released);
    g->recording_on = pg_grad_recording();
    g->op_on = op_of_product(g->a, g->b);
    return NULL;
}

static void *start_and_exit(void *arg)
{
    pg_grad_off **token = arg;
    *token = pg_grad_off_new();
    pg_grad_off_start(*token);
    return NULL;
}

static void *start_foreign(void *arg)
{
    int64_t *rc = arg; /* in: a token's address; out: what starting it here gave */
    *rc = pg_grad_off_start((pg_grad_off *)(intptr_t)*rc);
    return NULL;
}

/* Several threads with tokens at once: each sees only its own; a token
 * released from another thread turns its own thread's recording back on; a
 * token outlives its thread; only the thread that made a token starts it. */
static void test_grad_tokens_threads(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(3.0);
    pthread_barrier_t all_off, released;
    pthread_barrier_init(&all_off, NULL, GRAD_THREADS + 1);
    pthread_barrier_init(&released, NULL, GRAD_THREADS + 1);
    pthread_t tid[GRAD_THREADS];
    grad_thread_t g[GRAD_THREADS];
    for (int i = 0; i < GRAD_THREADS; i++) {
        g[i] = (grad_thread_t){.id = i, .all_off = &all_off, .released = &released, .a = a, .b = b};
        CHECK_EQ(pthread_create(&tid[i], NULL, grad_thread, &g[i]), 0);
    }
    pthread_barrier_wait(&all_off); /* every thread has an active token */
    CHECK_EQ(pg_grad_recording(), 1);
    CHECK_EQ(op_of_product(a, b), PG_OP_MUL);
    for (int i = 1; i < GRAD_THREADS; i += 2)
        pg_grad_off_release(g[i].token); /* from here, for thread i */
    pthread_barrier_wait(&released);
    for (int i = 0; i < GRAD_THREADS; i++) {
        CHECK_EQ(pthread_join(tid[i], NULL), 0);
        CHECK_EQ(g[i].start_rc, PG_OK);
        CHECK_EQ(g[i].recording_off, 0);
        CHECK_EQ(g[i].op_off, PG_OP_LEAF);
        CHECK_EQ(g[i].recording_on, 1);
        CHECK_EQ(g[i].op_on, PG_OP_MUL);
    }
    pthread_barrier_destroy(&all_off);
    pthread_barrier_destroy(&released);

    /* A thread ends with its token active; the token is released later (ASan
     * would see its thread's counter used after free). */
    pg_grad_off *orphan = NULL;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, start_and_exit, &orphan), 0);
    pthread_join(th, NULL);
    CHECK(orphan != NULL);
    CHECK_EQ(pg_grad_recording(), 1);
    pg_grad_off_release(orphan);
    CHECK_EQ(pg_grad_recording(), 1);

    /* Starting another thread's token is refused, and changes nothing here. */
    pg_grad_off *mine = pg_grad_off_new();
    int64_t rc = (int64_t)(intptr_t)mine;
    CHECK_EQ(pthread_create(&th, NULL, start_foreign, &rc), 0);
    pthread_join(th, NULL);
    CHECK_EQ(rc, PG_ERR_ARG);
    CHECK_EQ(pg_grad_recording(), 1);
    CHECK_EQ(pg_grad_off_start(mine), PG_OK);
    CHECK_EQ(pg_grad_recording(), 0);
    pg_grad_off_release(mine);
    CHECK_EQ(pg_grad_recording(), 1);

    pg_release(a);
    pg_release(b);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- threads ----------------------------------------------------------------- */

enum { THREADS = 4, ITERATIONS = 200, TERMS = 495 }; /* 10 + 1 + 2*495 = 1001 nodes */

typedef struct {
    int id;
    int done, wrong; /* iterations completed, and those with a wrong number */
} worker_t;

/* Each iteration: sum_j a[j%10] * a[(j+1)%10] over 10 integer leaves, built
 * node by node, then backward (odd iterations through a tape).  Integer values
 * keep every sum exact whatever the order, so results compare with ==. */
static void *worker(void *arg)
{
    worker_t *w = arg;
    double av[10], want_grad[10] = {0}, want_sum = 0.0;
    for (int i = 0; i < 10; i++)
        av[i] = (double)(i + 1 + 10 * w->id);
    for (int j = 0; j < TERMS; j++) {
        want_sum += av[j % 10] * av[(j + 1) % 10];
        want_grad[j % 10] += av[(j + 1) % 10];
        want_grad[(j + 1) % 10] += av[j % 10];
    }
    for (int it = 0; it < ITERATIONS; it++) {
        int64_t a[10], acc = pg_leaf(0.0);
        int ok = acc >= 0;
        for (int i = 0; i < 10; i++)
            ok &= (a[i] = pg_leaf(av[i])) >= 0;
        for (int j = 0; j < TERMS && ok; j++) {
            int64_t p = pg_mul(a[j % 10], a[(j + 1) % 10]);
            int64_t s = pg_add(acc, p);
            ok &= p >= 0 && s >= 0;
            pg_release(p);
            pg_release(acc);
            acc = s;
        }
        if (it % 2) {
            int64_t t = pg_tape_record(acc);
            ok &= t >= 0 && pg_tape_length(t) == 2 * TERMS + 11;
            ok &= pg_tape_backward(t, pg_tape_length(t)) == 0;
            ok &= pg_tape_free(t) == PG_OK;
        } else {
            ok &= pg_backward(acc) == PG_OK;
        }
        ok &= pg_data(acc) == want_sum;
        for (int i = 0; i < 10; i++)
            ok &= pg_grad(a[i]) == want_grad[i];
        ok &= pg_release(acc) == PG_OK;
        ok &= pg_release_many(a, 10) == 0;
        w->wrong += !ok;
        w->done++;
    }
    return NULL;
}

/* Four threads build and backpropagate their own graphs at once: every result
 * is exact and every node is freed. */
static void test_threads(void)
{
    int64_t live0 = pg_live_nodes();
    pthread_t tid[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){.id = i};
        CHECK_EQ(pthread_create(&tid[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK_EQ(pthread_join(tid[i], NULL), 0);
        CHECK_EQ(w[i].done, ITERATIONS);
        CHECK_EQ(w[i].wrong, 0);
    }
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- the Python layer ------------------------------------------------------------
 * With pg_python_layer(1), every handle a call hands out comes with a
 * reference the nursery holds until a sweep says whether a Value kept it.
 * These tests turn the layer off again and leave the nursery empty. */

/* PG_PENDING (csrc/arena.h): added to a result when Python has work first. */
#define PENDING (-((int64_t)1 << PG_PENDING_SHIFT))

/* r without its PG_PENDING flag; *flagged says whether it had one. */
static int64_t unflag(int64_t r, int *flagged)
{
    *flagged = r < PENDING / 2; /* error codes are small negatives */
    return *flagged ? r - PENDING : r;
}

/* A sweep in which Python kept and dropped nothing: the nursery releases all
 * but the handles of each thread's latest call.  Returns how many it released. */
static int64_t sweep_nothing(void)
{
    pg_sweep_begin();
    return pg_sweep_end(NULL, 0, NULL, 0);
}

/* Empty the nursery (no other thread making calls): a throwaway leaf becomes
 * this thread's latest call, a sweep releases the rest, and pg_release takes
 * the leaf's own entry out. */
static void empty_nursery(void)
{
    int flagged;
    int64_t h = unflag(pg_leaf(0.0), &flagged);
    sweep_nothing();
    pg_release(h);
}

/* The layer's tests need a handing-out call to work under -DPG_DEBUG; a child
 * process finds out whether one does. */
static int layer_works = -1;

static int python_layer_works(void)
{
    if (layer_works < 0) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            freopen("/dev/null", "w", stderr); /* the assertion's message: see below */
            pg_python_layer(1);
            _exit(pg_leaf(1.0) >= 0 ? 0 : 1);
        }
        int status = 0;
        layer_works = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0;
        CHECK(layer_works); /* a handing-out call with the layer on works */
    }
    return layer_works;
}

/* What a sweep does with each nursery entry: kept (the reference becomes the
 * Value's), dropped or lost (released), in flight (carried over). */
static void test_nursery(void)
{
    if (!python_layer_works())
        return;
    int64_t live0 = pg_live_nodes();
    CHECK_EQ(pg_python_layer(1), 0);
    CHECK_EQ(pg_python_layer(1), 1); /* returns the old setting */
    empty_nursery();
    CHECK_EQ(sweep_nothing(), 0);

    /* a is lost (no Value took it), b kept; c, the latest call, is in flight:
     * its Value may not exist yet. */
    int64_t a = pg_leaf(1.0), b = pg_leaf(2.0), c = pg_leaf(3.0);
    CHECK(a >= 0 && b >= 0 && c >= 0);
    CHECK_EQ(pg_external_refs(a), 1); /* the nursery's */
    CHECK_EQ(pg_sweep_begin(), 2);
    int64_t kept1[] = {b};
    CHECK_EQ(pg_sweep_end(kept1, 1, kept1, 0), 1);
    CHECK_EQ(pg_valid(a), 0);
    CHECK_EQ(pg_external_refs(b), 1); /* now its Value's */
    CHECK_EQ(pg_external_refs(c), 1);
    CHECK_EQ(pg_live_nodes(), live0 + 2);

    /* A later call: c is not in flight any more and goes; d is. */
    int64_t d = pg_mul(b, c);
    CHECK_EQ(sweep_nothing(), 1);
    CHECK_EQ(pg_external_refs(c), 0);
    CHECK_EQ(pg_valid(c), 1); /* d holds it */
    CHECK_EQ(pg_external_refs(b), 1); /* a kept reference is not the nursery's */
    CHECK_EQ(pg_external_refs(d), 1);

    /* Dropped: with a nursery entry, the entry goes, once, even in flight;
     * without one, the Value's own reference.  kept[] and dropped[] come in
     * any order. */
    int64_t e = pg_leaf(5.0);
    CHECK_EQ(pg_sweep_begin(), 1); /* d */
    int64_t kept2[] = {d}, dropped2[] = {e, b};
    if (e < b) { /* reversed, so that pg_sweep_end has to sort */
        dropped2[0] = b;
        dropped2[1] = e;
    }
    CHECK_EQ(pg_sweep_end(kept2, 1, dropped2, 2), 2);
    CHECK_EQ(pg_valid(e), 0);
    CHECK_EQ(pg_external_refs(b), 0);
    CHECK_EQ(pg_valid(b), 1); /* d holds it */
    CHECK_EQ(pg_external_refs(d), 1);
    CHECK_EQ(sweep_nothing(), 0);

    /* pg_release of the latest call's handle takes the nursery's reference:
     * no sweep releases it again. */
    int64_t f = pg_add(d, d);
    CHECK_EQ(pg_retain(f), PG_OK);
    CHECK_EQ(pg_release(f), PG_OK); /* the nursery's */
    int64_t g = pg_leaf(6.0);       /* f is not in flight any more */
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_external_refs(f), 1);
    CHECK_EQ(pg_release(f), PG_OK);
    CHECK_EQ(pg_valid(f), 0);
    /* Of an earlier call, it releases the caller's own: the entry stays for
     * the sweep. */
    CHECK_EQ(pg_retain(g), PG_OK);
    int64_t i1 = pg_leaf(7.0);
    CHECK_EQ(pg_release(g), PG_OK);
    CHECK_EQ(pg_external_refs(g), 1);
    CHECK_EQ(sweep_nothing(), 1);
    CHECK_EQ(pg_valid(g), 0);
    CHECK_EQ(pg_release(i1), PG_OK); /* in flight: its entry goes with it */
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_live_nodes(), live0 + 3); /* b, c, d */

    /* One call's handles are in flight together; a child's handle is in the
     * nursery too, one entry per call even for the same node. */
    int64_t bias[2] = {pg_leaf(1.0), pg_leaf(2.0)}, out[2];
    CHECK_EQ(pg_layer(NULL, bias, NULL, 0, 2, 0, out), PG_OK); /* neurons without inputs */
    int64_t kept_bias[2] = {bias[0], bias[1]}; /* pg_sweep_end sorts it */
    CHECK_EQ(pg_sweep_begin(), 2);              /* the biases */
    CHECK_EQ(pg_sweep_end(kept_bias, 2, kept_bias, 0), 0);
    int64_t k1 = pg_child_retain(out[0], 0), k2 = pg_child_retain(out[0], 0);
    CHECK_EQ(k1, bias[0]);
    CHECK_EQ(k2, bias[0]);
    CHECK_EQ(pg_external_refs(bias[0]), 3);
    int64_t t = pg_tape_record(out[1]); /* a call too: k2 is no longer in flight */
    CHECK(t >= 0);
    CHECK_EQ(pg_sweep_begin(), 4); /* out[0], out[1], k1, k2 */
    int64_t kept3[] = {out[1], k1, out[0], k2};
    CHECK_EQ(pg_sweep_end(kept3, 4, kept3, 0), 0);
    CHECK_EQ(pg_external_refs(bias[0]), 3);
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_tape_free(t), PG_OK);

    /* A kept handle is released once by pg_release, and no more. */
    int64_t rest[] = {out[0], out[1], bias[0], bias[0], bias[0], bias[1]};
    for (int i = 0; i < 6; i++)
        CHECK_EQ(pg_release(rest[i]), PG_OK);
    CHECK_EQ(pg_valid(bias[0]), 0);
    CHECK_EQ(pg_release(bias[0]), PG_ERR_HANDLE);
    CHECK_EQ(pg_release(d), PG_OK); /* frees d, b, c */
    CHECK_EQ(pg_valid(c), 0);
    CHECK_EQ(pg_release(d), PG_ERR_HANDLE);
    CHECK_EQ(pg_live_nodes(), live0);

    /* With the layer off, handles are not the nursery's. */
    CHECK_EQ(pg_python_layer(0), 1);
    int64_t h1 = pg_leaf(1.0), h2 = pg_leaf(2.0);
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_valid(h1), 1);
    pg_release(h1);
    pg_release(h2);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* A sweep takes the entries there were when it began: entries made since stay
 * young unless Python names them (its Values may have joined the batch after
 * their calls), and a release during the sweep takes its entry out of it. */
static void test_sweep_in_progress(void)
{
    if (!python_layer_works())
        return;
    int64_t live0 = pg_live_nodes();
    pg_python_layer(1);
    empty_nursery();
    int64_t y1 = pg_leaf(1.0), y2 = pg_leaf(2.0), y3 = pg_leaf(3.0);
    CHECK_EQ(pg_sweep_begin(), 2);   /* y1, y2 */
    CHECK_EQ(pg_release(y3), PG_OK); /* the latest call's: out of the sweep */
    int64_t z1 = pg_leaf(4.0), z2 = pg_leaf(5.0), z3 = pg_leaf(6.0), z4 = pg_leaf(7.0);
    int64_t kept[] = {y2, z2}, dropped[] = {z3};
    CHECK_EQ(pg_sweep_end(kept, 2, dropped, 1), 2); /* y1, z3 */
    CHECK_EQ(pg_valid(y1), 0);
    CHECK_EQ(pg_valid(y3), 0);
    CHECK_EQ(pg_external_refs(y2), 1);
    CHECK_EQ(pg_valid(z1), 1); /* made during the sweep: young */
    CHECK_EQ(pg_valid(z3), 0); /* named: its young entry went, once */
    CHECK_EQ(sweep_nothing(), 1); /* z1; z2 was kept, z4 is in flight */
    CHECK_EQ(pg_valid(z1), 0);
    CHECK_EQ(pg_external_refs(z2), 1);
    int64_t rest[] = {z4, z2, y2};
    for (int i = 0; i < 3; i++)
        CHECK_EQ(pg_release(rest[i]), PG_OK);
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_sweep_end's arguments: bad counts change nothing. */
static void test_sweep_end_args(void)
{
    if (!python_layer_works())
        return;
    int64_t live0 = pg_live_nodes(), one[1] = {0};
    pg_python_layer(1);
    empty_nursery();
    int64_t a = pg_leaf(1.0), b = pg_leaf(2.0);
    pg_sweep_begin();
    CHECK_EQ(pg_sweep_end(NULL, 1, one, 0), PG_ERR_ARG);
    CHECK_EQ(pg_sweep_end(one, -1, one, 0), PG_ERR_ARG);
    CHECK_EQ(pg_sweep_end(one, 0, NULL, 2), PG_ERR_ARG);
    CHECK_EQ(pg_valid(a), 1);
    CHECK_EQ(pg_sweep_end(NULL, 0, NULL, 0), 1); /* a */
    CHECK_EQ(pg_valid(a), 0);
    CHECK_EQ(pg_release(b), PG_OK);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_live_nodes(), live0);
}

typedef struct {
    pthread_barrier_t *made, *swept;
    int64_t h;
} leaf_thread_t;

static void *leaf_then_wait(void *arg)
{
    leaf_thread_t *l = arg;
    l->h = pg_leaf(7.0);
    pthread_barrier_wait(l->made);
    pthread_barrier_wait(l->swept);
    return NULL;
}

/* Each thread's latest call is in flight, whichever thread sweeps, and only
 * that thread's pg_release takes its entry; once the thread has ended, its
 * handles are not in flight. */
static void test_nursery_threads(void)
{
    if (!python_layer_works())
        return;
    int64_t live0 = pg_live_nodes();
    pg_python_layer(1);
    empty_nursery();
    pthread_barrier_t made, swept;
    pthread_barrier_init(&made, NULL, 2);
    pthread_barrier_init(&swept, NULL, 2);
    leaf_thread_t l = {&made, &swept, -1};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, leaf_then_wait, &l), 0);
    pthread_barrier_wait(&made);
    CHECK(l.h >= 0);
    CHECK_EQ(pg_retain(l.h), PG_OK);
    CHECK_EQ(pg_release(l.h), PG_OK); /* this thread's reference, not the entry */
    int64_t m1 = pg_leaf(1.0), m2 = pg_leaf(2.0);
    CHECK_EQ(pg_sweep_begin(), 1); /* m1: the other thread's h and m2 are in flight */
    CHECK_EQ(pg_sweep_end(&m1, 0, &m1, 0), 1);
    CHECK_EQ(pg_valid(m1), 0);
    CHECK_EQ(pg_valid(l.h), 1);
    CHECK_EQ(pg_valid(m2), 1);
    pthread_barrier_wait(&swept);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(sweep_nothing(), 1); /* the ended thread's h */
    CHECK_EQ(pg_valid(l.h), 0);
    CHECK_EQ(pg_release(m2), PG_OK);
    pthread_barrier_destroy(&made);
    pthread_barrier_destroy(&swept);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* Results are PG_PENDING-flagged once the nursery holds PG_SWEEP_EVERY
 * handles, until a sweep; errors come back as they are. */
static void test_sweep_due(void)
{
    if (!python_layer_works())
        return;
    int64_t live0 = pg_live_nodes();
    pg_python_layer(1);
    empty_nursery();
    int64_t *h = malloc(PG_SWEEP_EVERY * sizeof *h);
    int flagged, n_flagged = 0;
    for (int i = 0; i < PG_SWEEP_EVERY - 1; i++) {
        h[i] = unflag(pg_leaf(i), &flagged);
        n_flagged += flagged;
    }
    CHECK_EQ(n_flagged, 0);
    int64_t r = pg_leaf(-1.5); /* the PG_SWEEP_EVERY-th */
    int64_t last = unflag(r, &flagged);
    CHECK(flagged);
    CHECK_EQ(pg_valid(last), 1);
    CHECK_SAME(pg_data(last), -1.5);
    CHECK_EQ(pg_log(h[0]), PG_ERR_DOMAIN); /* log(0): an error, unflagged */
    int64_t out[1];
    CHECK_EQ(pg_layer(NULL, &last, NULL, 0, 1, 0, out), PENDING); /* PG_OK, flagged */
    CHECK_SAME(pg_data(out[0]), -1.5);
    CHECK_EQ(unflag(pg_child_retain(out[0], 0), &flagged), last);
    CHECK(flagged);
    /* All but the latest call's handle (last's second reference) go. */
    CHECK_EQ(sweep_nothing(), PG_SWEEP_EVERY + 1);
    CHECK_EQ(pg_valid(h[0]), 0);
    CHECK_EQ(pg_valid(out[0]), 0);
    CHECK_EQ(pg_external_refs(last), 1);
    CHECK_EQ(pg_live_nodes(), live0 + 1);
    CHECK_EQ(pg_release(last), PG_OK);
    int64_t next = pg_leaf(1.0);
    CHECK(next >= 0); /* no sweep due */
    CHECK_EQ(pg_release(next), PG_OK);
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_live_nodes(), live0);
    free(h);
}

/* pg_tape_record_into: a tape a Python object owns, recorded into a zeroed
 * struct whose destructor (pg_tape_ref_clear) the object already holds. */
static void test_tape_ref(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t x = pg_leaf(2.0), e = pg_exp(x);
    pg_tape_ref ref = {0, 0};
    pg_tape_ref_clear(&ref); /* empty: nothing to free */
    int64_t t = pg_tape_record_into(&ref, e);
    CHECK(t >= 0);
    CHECK_EQ(ref.recorded, 1);
    CHECK_EQ(ref.tape, t);
    CHECK_EQ(pg_tape_length(t), 2);
    CHECK_EQ(pg_internal_refs(e), 1);
    /* A ref holds one tape: a second recording is refused, and makes none. */
    CHECK_EQ(pg_tape_record_into(&ref, e), PG_ERR_ARG);
    CHECK_EQ(pg_tape_record_into(NULL, e), PG_ERR_ARG);
    CHECK_EQ(pg_internal_refs(e), 1);
    CHECK_EQ(ref.tape, t);
    pg_release(x);
    pg_release(e);
    CHECK_EQ(pg_valid(x), 1); /* the tape holds them */
    pg_tape_ref_clear(&ref);
    CHECK_EQ(ref.recorded, 0);
    CHECK_EQ(pg_tape_length(t), PG_ERR_TAPE);
    CHECK_EQ(pg_valid(x), 0);
    pg_tape_ref_clear(&ref); /* cleared: nothing more to free */
    pg_tape_ref_clear(NULL);
    CHECK_EQ(pg_live_nodes(), live0);
    if (!python_layer_works())
        return;

    /* A stateful root: the result is PG_PENDING-flagged, the ref holds the id. */
    int64_t a = pg_leaf(1.0);
    pg_set_stateful(a);
    pg_python_layer(1);
    empty_nursery();
    int flagged;
    t = unflag(pg_tape_record_into(&ref, a), &flagged);
    CHECK(flagged);
    CHECK_EQ(ref.recorded, 1);
    CHECK_EQ(ref.tape, t);
    CHECK_EQ(pg_tape_length(ref.tape), 1);
    CHECK_EQ(pg_internal_refs(a), 1);
    pg_tape_ref_clear(&ref);
    CHECK_EQ(pg_internal_refs(a), 0);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_release(a), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* pg_set_stateful returns the node's parent and tape references; with the
 * layer on, a call that gives a stateful node a parent or a tape is
 * PG_PENDING-flagged (Python must then hold the node's state). */
/* A new leaf in the free slot `slot`, made with the Python layer on. A sparse
 * arena hands out its low slots first (a high one waits at the end of the
 * free list), so leaves are made until one lands there; a sweep in which
 * Python keeps nothing then frees the others. */
static int64_t leaf_in_slot(int64_t slot, double v)
{
    int flagged;
    int64_t h = unflag(pg_leaf(v), &flagged), made = 0;
    while (h >= 0 && SLOT(h) != slot) {
        made++;
        h = unflag(pg_leaf(v), &flagged);
    }
    if (made)
        CHECK_EQ(sweep_nothing(), made); /* all but h, the latest call's */
    return h;
}

static void test_stateful(void)
{
    int64_t live0 = pg_live_nodes();
    int64_t a = pg_leaf(2.0), b = pg_leaf(3.0);
    CHECK_EQ(pg_set_stateful(a), 0);
    CHECK_EQ(pg_flags(a), 0); /* the core's own flag */
    int64_t s = pg_add(a, a);
    CHECK(s >= 0); /* layer off: never flagged */
    CHECK_EQ(pg_set_stateful(a), 2);
    int64_t t = pg_tape_record(a);
    CHECK(t >= 0);
    CHECK_EQ(pg_set_stateful(a), 3);
    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_set_stateful(a), 2);
    if (!python_layer_works()) {
        int64_t all[] = {s, a, b};
        CHECK_EQ(pg_release_many(all, 3), 0);
        return;
    }

    pg_python_layer(1);
    empty_nursery();
    int flagged;
    int64_t made[6];
    made[0] = unflag(pg_mul(b, a), &flagged);
    CHECK(flagged);
    CHECK_EQ(pg_op(made[0]), PG_OP_MUL);
    CHECK_SAME(pg_data(made[0]), 6.0);
    made[1] = unflag(pg_mul(b, b), &flagged);
    CHECK(!flagged);
    made[2] = unflag(pg_add_const(a, 1.0), &flagged);
    CHECK(flagged);
    made[3] = unflag(pg_div(b, a), &flagged);
    CHECK(flagged);
    made[4] = unflag(pg_custom_node(1.0, &a, 1), &flagged);
    CHECK(flagged);
    CHECK_EQ(pg_layer(&a, &b, &b, 1, 1, 0, &made[5]), PENDING); /* a weight */
    CHECK_EQ(pg_release(made[5]), PG_OK);
    CHECK_EQ(pg_layer(&b, &b, &a, 1, 1, 0, &made[5]), PENDING); /* an input */
    CHECK_EQ(pg_release(made[5]), PG_OK);
    CHECK_EQ(pg_layer(&b, &b, &b, 1, 1, 0, &made[5]), PG_OK);
    CHECK_EQ(pg_release(made[5]), PG_OK);
    int64_t params[2] = {b, a}, sizes[2] = {1, 1}; /* a bias */
    int32_t relu[1] = {0};
    CHECK_EQ(pg_mlp(params, 2, sizes, relu, 1, &b, &made[5]), PENDING);
    CHECK_EQ(pg_internal_refs(a), 7); /* s twice, and made[0], [2], [3], [4], [5] */
    t = unflag(pg_tape_record(a), &flagged);
    CHECK(flagged);
    CHECK_EQ(pg_tape_length(t), 1);
    CHECK_EQ(pg_tape_free(t), PG_OK);
    t = unflag(pg_tape_record(s), &flagged);
    CHECK(!flagged); /* the root is not stateful; a has its parents already */
    CHECK_EQ(pg_tape_free(t), PG_OK);
    int64_t k = unflag(pg_child_retain(s, 0), &flagged);
    CHECK(!flagged); /* no new parent */
    CHECK_EQ(k, a);
    CHECK_EQ(pg_release(k), PG_OK);
    CHECK_EQ(pg_sweep_begin(), 6);
    CHECK_EQ(pg_sweep_end(made, 6, made, 0), 0); /* their Values keep them */
    CHECK_EQ(pg_release_many(made, 6), 0);

    /* A stateful node's slot, freed and used again, holds a plain node. */
    CHECK_EQ(pg_release(s), PG_OK);
    CHECK_EQ(pg_release(a), PG_OK);
    CHECK_EQ(pg_valid(a), 0);
    int64_t a2 = leaf_in_slot(SLOT(a), 2.0);
    CHECK_EQ(SLOT(a2), SLOT(a));
    int64_t m = unflag(pg_mul(a2, b), &flagged);
    CHECK(!flagged);
    CHECK_EQ(pg_release(m), PG_OK);
    CHECK_EQ(sweep_nothing(), 1); /* a2 */
    CHECK_EQ(pg_valid(a2), 0);
    CHECK_EQ(pg_release(b), PG_OK);
    CHECK_EQ(sweep_nothing(), 0);
    CHECK_EQ(pg_python_layer(0), 1);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- fork --------------------------------------------------------------------------- */

typedef struct {
    int stop;
    int64_t k, loops, bad;
} call_loop_t;

/* pg_ calls as fast as it can, releasing each handle before its next call
 * (so that, with the layer on, pg_release takes the nursery's entry). */
static void *call_loop(void *arg)
{
    call_loop_t *l = arg;
    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        int64_t a = pg_leaf(1.0);
        /* Under valgrind, which runs one thread at a time, fork's wait for
         * the arena lock would starve for seconds without a yield; here, a
         * fork finds this thread with a handle in flight. */
        if (__atomic_add_fetch(&l->loops, 1, __ATOMIC_ACQ_REL) % 16 == 0)
            sched_yield();
        l->bad += a < 0 || pg_release(a) != PG_OK;
        int64_t b = pg_mul_const(l->k, 2.0);
        l->bad += b < 0 || pg_data(b) != 4.0 || pg_release(b) != PG_OK;
    }
    return NULL;
}

/* In a forked child: the arena works, and with the layer on, the handles of
 * the thread that did not come along are not in flight.  Returns the exit
 * status. */
static int forked_child(int64_t live0, int layer)
{
    int failed0 = failed;
    alarm(20); /* a hang (a lock held by a thread that is not here) fails */
    if (layer) {
        sweep_nothing();
        CHECK_EQ(pg_live_nodes(), live0);
        CHECK_EQ(pg_python_layer(0), 1);
    }
    int64_t live1 = pg_live_nodes(); /* without the layer: the other thread's too */
    int64_t a = pg_leaf(2.0), b = pg_leaf(3.0), m = pg_mul(a, b), L = pg_add(m, a);
    CHECK_EQ(pg_backward(L), PG_OK);
    CHECK_SAME(pg_grad(a), 4.0);
    CHECK_SAME(pg_grad(b), 2.0);
    int64_t t = pg_tape_record(L);
    CHECK_EQ(pg_tape_replay_backward(t), PG_OK);
    CHECK_SAME(pg_grad(a), 4.0);
    CHECK_EQ(pg_tape_free(t), PG_OK);
    pg_grad_off *token = pg_grad_off_new();
    CHECK_EQ(pg_grad_off_start(token), PG_OK);
    int64_t s = pg_add(a, b);
    CHECK_EQ(pg_op(s), PG_OP_LEAF);
    pg_grad_off_release(token);
    CHECK_EQ(pg_grad_recording(), 1);
    int64_t all[] = {a, b, m, L, s};
    CHECK_EQ(pg_release_many(all, 5), 0);
    CHECK_EQ(pg_live_nodes(), live1);
    fflush(stdout);
    return failed != failed0;
}

/* fork() while another thread is in a pg_ call loop: the child can use the
 * arena; the parent goes on.  With the Python layer on when it works. */
static void test_fork(void)
{
    enum { FORKS = 3 };
    call_loop_t l = {0, pg_leaf(2.0), 0, 0}; /* k: made before the layer is on */
    int64_t live0 = pg_live_nodes();
    int layer = python_layer_works();
    if (layer) {
        pg_python_layer(1);
        empty_nursery();
    }
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, call_loop, &l), 0);
    for (int i = 0; i <= FORKS; i++) {
        int64_t loops0 = __atomic_load_n(&l.loops, __ATOMIC_ACQUIRE);
        while (__atomic_load_n(&l.loops, __ATOMIC_ACQUIRE) < loops0 + 100)
            nanosleep(&(struct timespec){0, 1000000}, NULL); /* it goes on, after a fork too */
        if (i == FORKS)
            break;
        fflush(stdout); /* else the child prints the parent's buffer again */
        pid_t pid = fork();
        if (pid == 0)
            _exit(forked_child(live0, layer));
        CHECK(pid > 0);
        int status = 0;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            if (WIFSIGNALED(status))
                printf("  (the child of fork %d died of signal %d)\n", i, WTERMSIG(status));
            break;
        }
    }
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(l.bad, 0);
    if (layer) {
        CHECK_EQ(sweep_nothing(), 0); /* the thread took its entries out */
        CHECK_EQ(pg_python_layer(0), 1);
    }
    CHECK_EQ(pg_live_nodes(), live0);
    CHECK_EQ(pg_release(l.k), PG_OK);
}

/* --- shrinking ------------------------------------------------------------------------- */

/* Once few nodes are live, the arena is cut down from the top to just above
 * its highest live node; nodes kept alive below keep their handles and values,
 * and the arena goes on working. */
static void test_shrink(void)
{
    enum { N = 1000000 };
    int64_t live0 = pg_live_nodes(); /* 0: every earlier test cleaned up */
    int64_t c = pg_leaf(1.0), x0 = pg_leaf(3.0), x = x0, high = -1;
    pg_set_grad(c, 0.25);
    for (int i = 1; i <= N; i++) {
        int64_t next = pg_mul(x, c);
        if (x != x0)
            pg_release(x);
        x = next;
        if (i == N / 2)
            high = pg_leaf(7.0); /* a long-lived node high up */
    }
    CHECK(pg_slots_in_use() >= N + 3);
    CHECK(SLOT(high) >= N / 2);
    int64_t top_kept = SLOT(c) > SLOT(x0) ? SLOT(c) : SLOT(x0);
    CHECK(top_kept < 1000);

    CHECK_EQ(pg_release(x), PG_OK); /* frees the chain */
    CHECK_EQ(pg_live_nodes(), live0 + 3);
    CHECK_EQ(pg_slots_in_use(), SLOT(high) + 1); /* high blocks the cut */
    CHECK_EQ(pg_release(high), PG_OK);
    /* A shrink scans every slot, so the next waits for half a capacity of
     * frees (2^19 here): churn until then. */
    int64_t last_at_high = high; /* the last node made in high's slot before the cut */
    for (int i = 0; i < N; i++) {
        int64_t leaf = pg_leaf(i);
        if (SLOT(leaf) == SLOT(high))
            last_at_high = leaf;
        pg_release(leaf);
    }
    CHECK_EQ(pg_slots_in_use(), top_kept + 2); /* and the churn's slot, used after the cut */
    CHECK_SAME(pg_data(c), 1.0);
    CHECK_SAME(pg_grad(c), 0.25);
    CHECK_SAME(pg_data(x0), 3.0);

    /* New nodes fill the low slots first; walks size their scratch anew. */
    int64_t y = pg_mul(x0, c);
    CHECK(SLOT(y) <= top_kept + 1);
    CHECK_EQ(pg_backward(y), PG_OK);
    CHECK_SAME(pg_grad(x0), 1.0);
    CHECK_SAME(pg_grad(c), 0.25 + 3.0);
    int64_t t = pg_tape_record(y);
    CHECK_EQ(pg_tape_length(t), 3);
    CHECK_EQ(pg_tape_free(t), PG_OK);
    CHECK_EQ(pg_release(y), PG_OK);

    /* Growing again past the cut. */
    int64_t *h = malloc((size_t)(SLOT(high) + 1) * sizeof *h);
    int bad = 0;
    for (int64_t i = 0; i <= SLOT(high); i++)
        bad += (h[i] = pg_leaf((double)i)) < 0;
    CHECK_EQ(bad, 0);
    CHECK(pg_slots_in_use() > SLOT(high));
    for (int64_t i = 0; i <= SLOT(high); i++)
        bad += !same(pg_data(h[i]), (double)i);
    CHECK_EQ(bad, 0);
    CHECK_EQ(pg_valid(last_at_high), 0); /* a cut slot grown again keeps its generation */
    CHECK_EQ(pg_release_many(h, SLOT(high) + 1), 0);
    free(h);
    CHECK_EQ(pg_release(c), PG_OK);
    CHECK_EQ(pg_release(x0), PG_OK);
    CHECK_EQ(pg_live_nodes(), live0);
}

/* --- main --------------------------------------------------------------------- */

static void run(const char *name, void (*test)(void))
{
    double t0 = now();
    int failed0 = failed;
    test();
    double dt = now() - t0;
    if (failed != failed0 || dt > 1.0)
        printf("%s: %d failed, %.1f s\n", name, failed - failed0, dt);
}

#define RUN(test) run(#test, test)

int main(void)
{
    int64_t live0 = pg_live_nodes();
    CHECK_EQ(live0, 0);
    RUN(test_leaf_and_ops);
    RUN(test_composite_ops);
    RUN(test_python_float_semantics);
    RUN(test_backward_accumulates);
    RUN(test_backward_shared);
    RUN(test_op_gradients);
    RUN(test_refcounting);
    RUN(test_slot_reuse);
    RUN(test_bad_handles);
    RUN(test_release_many);
    RUN(test_tapes);
    RUN(test_tape_custom_stop);
    RUN(test_custom_nodes);
    RUN(test_tape_replay);
    RUN(test_tape_skip_grads);
    RUN(test_dense_replay);
    RUN(test_set_custom_backward);
    RUN(test_node_limit);
    RUN(test_layer);
    RUN(test_mlp);
    RUN(test_optimizers);
    RUN(test_no_grad);
    RUN(test_grad_tokens_threads);
    RUN(test_threads);
    RUN(test_nursery);
    RUN(test_sweep_in_progress);
    RUN(test_sweep_end_args);
    RUN(test_nursery_threads);
    RUN(test_sweep_due);
    RUN(test_tape_ref);
    RUN(test_stateful);
    RUN(test_fork);
    RUN(test_growth);
    RUN(test_deep_mul_chain);
    RUN(test_deep_add_chain_tape);
    RUN(test_shrink);
    if (!getenv("PG_TEST_QUICK")) /* make valgrind sets it: 26 s more under memcheck */
        RUN(test_deep_chain_10m);
    CHECK_EQ(pg_live_nodes(), live0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
