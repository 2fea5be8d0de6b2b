/* Replaying a tape.
 *
 * A plan is made once from the tape's recorded order (on its first replay)
 * and run every step: forward recomputes every node from its children;
 * backward zeroes every grad of the tape, seeds the root with 1 and
 * backpropagates.  Both give, bit for bit, what the eager graph gives.
 *
 * Dense groups.  A recorded training step is mostly neurons: DOT nodes
 * b + w[0]*x[0] + ..., each neuron (b, w) applied to every sample's input row
 * x.  The plan finds them: DOTs that share their (b, w) row are one neuron's
 * applications, DOTs that share an input row are one sample's, and J neurons
 * applied to S samples, all J*S applications present, make a group: a layer
 * over a batch.  A group's forward gathers its weights and inputs into
 * contiguous arrays, computes out[j][s] = b[j] + w[j][0]*x[s][0] + ... with a
 * dense kernel that runs across samples (a vector holds 8 samples) while each
 * sample's sum keeps micrograd's left-to-right order, and writes the values
 * back to the nodes; its backward computes the grads into the inputs and into
 * the weights with two more such kernels.  A ReLU, tanh or sigmoid whose
 * input is a member of a group and nothing else's runs inside the group.
 * Everything else runs node by node, in runs of nodes of one op (one switch
 * per run, not per node).
 *
 * Why the numbers stay the same.  A forward value depends only on its
 * children's values, so any order that computes children first gives the
 * same bits.  Backward adds one term per parent into each node's grad, and
 * floating-point sums depend on their order: a grad comes out the same only
 * if its terms are added in the recorded order (reverse tape order, the
 * order of the eager sweep).  So the plan orders its units (a group, or one
 * node) under two rules: a node's parents come before the node (its grad is
 * complete when it runs), and every node's parents come in their recorded
 * order.  Any order that keeps both is exact.  If grouping makes them
 * unsatisfiable (a cycle among units: a weight whose terms interleave with
 * something else's, say), the groups involved are dissolved and their nodes
 * run one by one.  Inside a group, a weight's terms come from its neuron's S
 * samples and an input's from its sample's J neurons: a group is made only
 * if every neuron meets the samples in one recorded order and every sample
 * meets the neurons in one recorded order, and its kernels add in exactly
 * those orders.  Products and sums are IEEE double operations in vectors as
 * in scalars, and -ffp-contract=off keeps the compiler from fusing them.
 *
 * A replay that fails (a math error from data: a log of a negative number)
 * is run again node by node in tape order, so that the error, and the node
 * it stops at, are the ones a replay without a plan would give. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define NONE UINT32_MAX

/* --- kernels ------------------------------------------------------------------
 * One kernel serves the three products of a layer:
 *   C[r][c] = C[r][c] + A(r, k) * B[k][c],  k = 0, 1, ..., K-1 in this order,
 * for r < rows and c < cols (cols a multiple of VEC), A(r, k) = A[r*ars + k*aks],
 * rows of B and C ldb and ldc doubles apart (either way: strides are signed).  Each C[r][c] is one sum, added
 * in k order: vectorized across c, never reordered.  Register tiles of 8
 * rows (then 4, 2, 1) by 16 columns keep the sums in registers across k.  The
 * unroll pragmas are what keeps them there: without them GCC's -O2 leaves the
 * r and v loops rolled, the acc array in memory, and a load and a store
 * around every addition (2.4x slower; the additions and their order are the
 * same).  Built for AVX-512, AVX2 and the baseline, picked at load time where
 * the toolchain can. */

typedef double vec __attribute__((vector_size(64)));
/* vec in memory at any double's alignment, allowed to alias doubles */
typedef double vec_in_memory __attribute__((vector_size(64), aligned(8), may_alias));
/* 8 64-bit integers: comparisons' masks, shuffles' indices */
typedef long long lvec __attribute__((vector_size(64)));
typedef long long lvec_in_memory __attribute__((vector_size(64), aligned(8), may_alias));
enum { VEC = 8 };

/* Macros, not functions: a 64-byte vector passed by value would have a
 * different ABI in each of accumulate_products' builds. */
#define SPLAT(a) ((vec){(a), (a), (a), (a), (a), (a), (a), (a)})
#define LOAD(p) (*(const vec_in_memory *)(p))
#define STORE(p, v) (*(vec_in_memory *)(p) = (v))

#define DEFINE_TILE(TR, NV)                                                                 \
    static inline __attribute__((always_inline)) void tile_##TR##_##NV(                      \
        double *C, ptrdiff_t ldc, const double *A, ptrdiff_t ars, ptrdiff_t aks,                \
        const double *B, ptrdiff_t ldb, uint32_t K)                                         \
    {                                                                                       \
        vec acc[TR][NV];                                                                    \
        _Pragma("GCC unroll 8") for (int r = 0; r < TR; r++)                                \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                            \
                acc[r][v] = LOAD(C + r * ldc + v * VEC);                                    \
        for (uint32_t k = 0; k < K; k++) {                                                  \
            vec b[NV];                                                                      \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                            \
                b[v] = LOAD(B + k * ldb + v * VEC);                                         \
            _Pragma("GCC unroll 8") for (int r = 0; r < TR; r++) {                          \
                const double a_ = A[r * ars + k * aks];                                     \
                vec a = SPLAT(a_);                                                          \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                        \
                    acc[r][v] = acc[r][v] + a * b[v];                                       \
            }                                                                               \
        }                                                                                   \
        _Pragma("GCC unroll 8") for (int r = 0; r < TR; r++)                                \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                            \
                STORE(C + r * ldc + v * VEC, acc[r][v]);                                    \
    }
DEFINE_TILE(8, 2)
DEFINE_TILE(8, 1)
DEFINE_TILE(4, 2)
DEFINE_TILE(4, 1)
DEFINE_TILE(2, 2)
DEFINE_TILE(2, 1)
DEFINE_TILE(1, 2)
DEFINE_TILE(1, 1)

#define TILE_ROW(TR)                                                                   \
    do {                                                                               \
        uint32_t c = 0;                                                                \
        for (; c + 2 * VEC <= cols; c += 2 * VEC)                                      \
            tile_##TR##_2(C + r * ldc + c, ldc, A + r * ars, ars, aks, B + c, ldb, K); \
        if (c < cols)                                                                  \
            tile_##TR##_1(C + r * ldc + c, ldc, A + r * ars, ars, aks, B + c, ldb, K); \
    } while (0)

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static void accumulate_products(double *C, ptrdiff_t ldc, const double *A, ptrdiff_t ars,
                                ptrdiff_t aks, const double *B, ptrdiff_t ldb, uint32_t rows,
                                uint32_t cols,
                                uint32_t K)
{
    uint32_t r = 0;
    for (; r + 8 <= rows; r += 8)
        TILE_ROW(8);
    for (; r + 4 <= rows; r += 4)
        TILE_ROW(4);
    for (; r + 2 <= rows; r += 2) /* a layer of 10 neurons: 8 + 2, not 8 + 1 + 1 */
        TILE_ROW(2);
    for (; r < rows; r++)
        TILE_ROW(1);
}

/* A group's ReLU over a row of n doubles (n a multiple of VEC), without a
 * branch per element: with data-dependent signs a branch is mispredicted
 * about every other time, and the scalar loops cost more than the products.
 * Bit for bit ops.h's relu_value and 0.0 + relu_grad:
 *   relu_value(a) = a < 0.0 ? 0.0 : a: a's bits with those of a < 0.0 cleared
 *     (0.0 is all zero bits; -0.0 and NaN are not < 0.0 and pass unchanged);
 *   relu_grad(out, g) = (double)(out > 0.0) * g: the factor 1.0 or 0.0 is
 *     1.0's bits masked by out > 0.0, then the same multiply, then 0.0 + it. */

VECTOR_CLONES
static void relu_values(double *act, const double *out, uint32_t n)
{
    const vec zero = SPLAT(0.0);
    for (uint32_t s = 0; s < n; s += VEC) {
        vec a = LOAD(out + s);
        lvec negative = a < zero; /* -1 (all bits) where a < 0.0, else 0 */
        *(lvec_in_memory *)(act + s) = (lvec)a & ~negative;
    }
}

VECTOR_CLONES
static void relu_grads(double *go, const double *act, uint32_t n)
{
    const vec zero = SPLAT(0.0), one = SPLAT(1.0);
    for (uint32_t s = 0; s < n; s += VEC) {
        lvec positive = LOAD(act + s) > zero;
        vec factor = (vec)((lvec)one & positive); /* (double)(out > 0.0) */
        STORE(go + s, zero + factor * LOAD(go + s));
    }
}

/* --- groups ------------------------------------------------------------------------
 * Neurons are numbered in the order backward meets them within a sample, and
 * samples in the order backward meets them for a neuron: the kernels' k
 * loops then run in recorded order. */

typedef struct {
    uint32_t m, J, S;   /* inputs per neuron, neurons, samples */
    uint32_t Sp, m1p;   /* S and m + 1, rounded up to VEC */
    uint32_t *cells;    /* [J][m + 1] slots: neuron j's b, then w[0..m) (as a DOT's children) */
    uint32_t *x_cells;  /* [S][m] slots: sample s's inputs */
    uint32_t *out;      /* [J][S] the DOT nodes */
    uint32_t *act;      /* [J][S] the activation over each, or NULL */
    uint8_t act_op;     /* PG_OP_RELU, PG_OP_TANH, PG_OP_SIGMOID, or 0 */
    uint8_t x_grad;     /* the inputs get grads (they are not all skipped leaves) */
    uint8_t x_fresh;    /* the inputs' only parents are the group's DOTs: their
                         * grads start from 0 here, not from the arena */
    /* Where whole rows lie in order in the arena (after planning laid the
     * nodes out): out_row[j] is the slot of out[j][0] when out[j][s] is that
     * slot + s for every s, else NONE; act_row likewise; x_col[i] the slot of
     * x[0][i] when x[s][i] is that slot + s.  Such rows are copied whole.
     * x_row[s] is the slot of x[s][0] when x[s][i] is that slot + i (a
     * sample's inputs made one after the other): when every sample's are,
     * x_row is kept and X and XT are read from those rows, else it is NULL. */
    uint32_t *out_row, *act_row, *x_col, *x_row;
    /* When not 0: x[s][i] is at slot x_col[0] + i * x_ld + s for every i and
     * s (x_ld < 0: the rows in reverse, as a layer's outputs are when they
     * are the next layer's inputs), and S is a multiple of VEC (S == Sp): the
     * arena's rows themselves
     * are X (for the products; values) and GX (grads, added into in place). */
    int64_t x_ld;
    double *W;          /* [J][m] weights */
    double *B;          /* [J] biases */
    double *X;          /* [m][Sp] inputs, feature-major (the forward's) */
    double *XT;         /* [S][m1p] inputs, sample-major, 1.0 at column m (the bias's) */
    double *OUT, *ACT;  /* [J][Sp] DOT values, activation values */
    double *GO;         /* [J][Sp] grads of the DOTs */
    double *GX;         /* [m][Sp] grads of the inputs */
    double *GW;         /* [J][m1p] grads of the weights, then of the bias */
} group_t;

static uint32_t round_up(uint32_t n) { return (n + VEC - 1) / VEC * VEC; }

static double *doubles(size_t count) /* zeroed, 64-byte aligned; NULL if out of memory */
{
    size_t bytes = (count ? count : 1) * sizeof(double);
    bytes = (bytes + 63) / 64 * 64;
    double *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static void group_free(group_t *g)
{
    free(g->out_row);
    free(g->act_row);
    free(g->x_col);
    free(g->x_row);
    free(g->cells);
    free(g->x_cells);
    free(g->out);
    free(g->act);
    free(g->W);
    free(g->B);
    free(g->X);
    free(g->XT);
    free(g->OUT);
    free(g->ACT);
    free(g->GO);
    free(g->GX);
    free(g->GW);
}

static int64_t group_alloc(group_t *g)
{
    size_t m = g->m, J = g->J, S = g->S, Sp = g->Sp, m1p = g->m1p;
    g->cells = malloc(J * (m + 1) * sizeof *g->cells);
    g->x_cells = malloc(S * m * sizeof *g->x_cells);
    g->out = malloc(J * S * sizeof *g->out);
    g->act = g->act_op ? malloc(J * S * sizeof *g->act) : NULL;
    g->W = doubles(J * m);
    g->B = doubles(J);
    g->X = doubles(m * Sp);
    g->XT = doubles(S * m1p);
    g->OUT = doubles(J * Sp);
    g->ACT = g->act_op ? doubles(J * Sp) : NULL;
    g->GO = doubles(J * Sp);
    g->GX = g->x_grad ? doubles(m * Sp) : NULL;
    g->GW = doubles(J * m1p);
    if (!g->cells || !g->x_cells || !g->out || (g->act_op && (!g->act || !g->ACT)) || !g->W ||
        !g->B || !g->X || !g->XT || !g->OUT || !g->GO || (g->x_grad && !g->GX) || !g->GW)
        return PG_ERR_NOMEM;
    for (size_t s = 0; s < S; s++)
        g->XT[s * m1p + m] = 1.0; /* the bias's "input": b's term is g * 1.0 == g */
    return PG_OK;
}

/* The rows' maps (see group_t), once the nodes are where they stay. */
static int64_t map_rows(group_t *g)
{
    const uint32_t m = g->m, J = g->J, S = g->S;
    g->out_row = malloc(((size_t)J + 1) * sizeof *g->out_row);
    g->act_row = malloc(((size_t)J + 1) * sizeof *g->act_row);
    g->x_col = malloc(((size_t)m + 1) * sizeof *g->x_col);
    if (!g->out_row || !g->act_row || !g->x_col)
        return PG_ERR_NOMEM;
    for (uint32_t j = 0; j < J; j++) {
        const uint32_t *out = g->out + (size_t)j * S, *act = g->act ? g->act + (size_t)j * S : NULL;
        g->out_row[j] = out[0];
        g->act_row[j] = act ? act[0] : NONE;
        for (uint32_t s = 1; s < S; s++) {
            if (out[s] != out[0] + s)
                g->out_row[j] = NONE;
            if (act && act[s] != act[0] + s)
                g->act_row[j] = NONE;
        }
    }
    for (uint32_t i = 0; i < m; i++) {
        g->x_col[i] = g->x_cells[i];
        for (uint32_t s = 1; s < S; s++)
            if (g->x_cells[(size_t)s * m + i] != g->x_cells[i] + s)
                g->x_col[i] = NONE;
    }
    g->x_ld = 0;
    if (S % VEC == 0 && m > 0 && g->x_col[0] != NONE) {
        int64_t ld = m > 1 ? (int64_t)g->x_col[1] - g->x_col[0] : S;
        g->x_ld = ld; /* rows no closer than S: they do not overlap */
        for (uint32_t i = 0; i < m; i++)
            if ((ld < 0 ? -ld : ld) < S || g->x_col[i] == NONE ||
                (int64_t)g->x_col[i] != g->x_col[0] + (int64_t)i * ld)
                g->x_ld = 0;
    }
    g->x_row = malloc(((size_t)S + 1) * sizeof *g->x_row);
    if (!g->x_row)
        return PG_ERR_NOMEM;
    for (uint32_t s = 0; s < S; s++) {
        const uint32_t *x = g->x_cells + (size_t)s * m;
        g->x_row[s] = x[0];
        for (uint32_t i = 1; i < m; i++)
            if (x[i] != x[0] + i) {
                free(g->x_row);
                g->x_row = NULL;
                return PG_OK;
            }
    }
    return PG_OK;
}

/* row[0..S) = field[slots of a row]: its slot `base` + s if it lies in
 * order, else nodes[s] (stride apart in `nodes`). */
static void read_row(double *row, const double *field, uint32_t base, const uint32_t *nodes,
                     size_t stride, uint32_t S)
{
    if (base != NONE) {
        memcpy(row, field + base, (size_t)S * sizeof *row);
        return;
    }
    for (uint32_t s = 0; s < S; s++)
        row[s] = field[nodes[(size_t)s * stride]];
}

static void write_row(double *field, const double *row, uint32_t base, const uint32_t *nodes,
                      size_t stride, uint32_t S)
{
    if (base != NONE) {
        memcpy(field + base, row, (size_t)S * sizeof *row);
        return;
    }
    for (uint32_t s = 0; s < S; s++)
        field[nodes[(size_t)s * stride]] = row[s];
}

/* An 8 by 8 block transposed in registers: v[k][c] becomes v[c][k]. */
#define TRANSPOSE_8x8(v)                                                                  \
    do {                                                                                  \
        const lvec lo1 = {0, 8, 2, 10, 4, 12, 6, 14}, hi1 = {1, 9, 3, 11, 5, 13, 7, 15};  \
        const lvec lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};  \
        const lvec lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};  \
        vec t[8], u[8];                                                                   \
        _Pragma("GCC unroll 4") for (int k = 0; k < 8; k += 2) {                          \
            t[k] = __builtin_shuffle(v[k], v[k + 1], lo1);                                \
            t[k + 1] = __builtin_shuffle(v[k], v[k + 1], hi1);                            \
        }                                                                                 \
        _Pragma("GCC unroll 2") for (int k = 0; k < 8; k += 4)                            \
            _Pragma("GCC unroll 2") for (int d = 0; d < 2; d++) {                         \
                u[k + d] = __builtin_shuffle(t[k + d], t[k + d + 2], lo2);                \
                u[k + d + 2] = __builtin_shuffle(t[k + d], t[k + d + 2], hi2);            \
            }                                                                             \
        _Pragma("GCC unroll 4") for (int d = 0; d < 4; d++) {                             \
            v[d] = __builtin_shuffle(u[d], u[d + 4], lo4);                                \
            v[d + 4] = __builtin_shuffle(u[d], u[d + 4], hi4);                            \
        }                                                                                 \
    } while (0)

/* dst[c * ldd + r] = row r's [c], for r < rows and c < cols: row r starts at
 * src + at[r], or src + r * lds without `at`.  Copies only, so every bit
 * (a NaN's payload too) arrives as it was; 8 by 8 blocks in vectors. */
VECTOR_CLONES
static void transpose(double *dst, size_t ldd, const double *src, const uint32_t *at,
                      ptrdiff_t lds, uint32_t rows, uint32_t cols)
{
    uint32_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        const double *row[8];
        for (int k = 0; k < 8; k++)
            row[k] = src + (at ? (ptrdiff_t)at[r0 + k] : (ptrdiff_t)(r0 + k) * lds);
        uint32_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            vec v[8];
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
                v[k] = LOAD(row[k] + c0);
            TRANSPOSE_8x8(v);
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
                STORE(dst + (size_t)(c0 + k) * ldd + r0, v[k]);
        }
        for (; c0 < cols; c0++)
            for (int k = 0; k < 8; k++)
                dst[(size_t)c0 * ldd + r0 + k] = row[k][c0];
    }
    for (; r0 < rows; r0++) {
        const double *row = src + (at ? (ptrdiff_t)at[r0] : (ptrdiff_t)r0 * lds);
        for (uint32_t c = 0; c < cols; c++)
            dst[(size_t)c * ldd + r0] = row[c];
    }
}

/* The inputs feature-major, rows ld apart: the arena's own (x_ld) or X. */
static const double *inputs(const arena_t *A, const group_t *g, ptrdiff_t *ld)
{
    *ld = g->x_ld ? (ptrdiff_t)g->x_ld : (ptrdiff_t)g->Sp;
    return g->x_ld ? A->data + g->x_col[0] : g->X;
}

/* Weights, biases and inputs (feature-major), read from the arena. */
static void gather_operands(const arena_t *A, group_t *g)
{
    const double *D = A->data;
    const uint32_t m = g->m, Sp = g->Sp;
    for (uint32_t j = 0; j < g->J; j++) {
        const uint32_t *cell = g->cells + (size_t)j * (m + 1);
        g->B[j] = D[cell[0]];
        for (uint32_t i = 0; i < m; i++)
            g->W[(size_t)j * m + i] = D[cell[1 + i]];
    }
    if (g->x_ld) /* X is not used: the products read the arena's rows */
        return;
    int by_columns = 1;
    for (uint32_t i = 0; i < m; i++)
        by_columns &= g->x_col[i] != NONE;
    if (!by_columns && g->x_row) { /* the samples' rows, transposed */
        transpose(g->X, Sp, D, g->x_row, 0, g->S, m);
        return;
    }
    for (uint32_t i = 0; i < m; i++)
        read_row(g->X + (size_t)i * Sp, D, g->x_col[i], g->x_cells + i, m, g->S);
}

/* The inputs sample-major (the weights' grads' operand): the samples' rows
 * as they are in the arena (the values gather_operands last read: backward
 * reads them again if any value was written since), else X transposed. */
static void transpose_inputs(const arena_t *A, group_t *g)
{
    const uint32_t m = g->m, m1p = g->m1p;
    if (g->x_row) {
        for (uint32_t s = 0; s < g->S; s++)
            memcpy(g->XT + (size_t)s * m1p, A->data + g->x_row[s], (size_t)m * sizeof *g->XT);
        return;
    }
    ptrdiff_t ld;
    const double *X = inputs(A, g, &ld);
    transpose(g->XT, m1p, X, NULL, ld, m, g->S);
}

/* out[j][s] = b[j] + w[j][0]*x[s][0] + ... (+ the activation), into the nodes. */
static void group_forward(arena_t *A, group_t *g)
{
    double *D = A->data;
    const uint32_t J = g->J, S = g->S, Sp = g->Sp;
    gather_operands(A, g);
    for (uint32_t j = 0; j < J; j++)
        for (uint32_t s = 0; s < Sp; s++)
            g->OUT[(size_t)j * Sp + s] = g->B[j]; /* each sum starts from b, as micrograd's */
    ptrdiff_t ld;
    const double *X = inputs(A, g, &ld);
    accumulate_products(g->OUT, Sp, g->W, g->m, 1, X, ld, J, Sp, g->m);
    for (uint32_t j = 0; j < J; j++) {
        const double *out = g->OUT + (size_t)j * Sp;
        write_row(D, out, g->out_row[j], g->out + (size_t)j * S, 1, S);
        if (!g->act_op)
            continue;
        double *act = g->ACT + (size_t)j * Sp;
        switch (g->act_op) {
        case PG_OP_RELU:
            relu_values(act, out, Sp);
            break;
        case PG_OP_TANH:
            for (uint32_t s = 0; s < S; s++)
                act[s] = tanh(out[s]);
            break;
        default:
            for (uint32_t s = 0; s < S; s++)
                act[s] = stable_sigmoid(out[s]);
        }
        write_row(D, act, g->act_row[j], g->act + (size_t)j * S, 1, S);
    }
}

/* The DOTs' grads: through the activation (whose term is the DOT's only
 * one: 0 + term, as eager's zeroed grad plus it), or as parents left them.
 * The activations' values are the forward's (ACT), read again from the arena
 * if values were written since. */
static void gather_output_grads(arena_t *A, group_t *g, int values_unchanged)
{
    double *G = A->grad;
    const uint32_t J = g->J, S = g->S, Sp = g->Sp;
    for (uint32_t j = 0; j < J; j++) {
        double *go = g->GO + (size_t)j * Sp;
        const uint32_t *out = g->out + (size_t)j * S;
        if (!g->act_op) {
            read_row(go, G, g->out_row[j], out, 1, S);
            continue;
        }
        const uint32_t *act_node = g->act + (size_t)j * S;
        double *act = g->ACT + (size_t)j * Sp;
        if (!values_unchanged)
            read_row(act, A->data, g->act_row[j], act_node, 1, S);
        read_row(go, G, g->act_row[j], act_node, 1, S); /* the activations' grads... */
        switch (g->act_op) {                            /* ...through them */
        case PG_OP_RELU:
            relu_grads(go, act, Sp);
            break;
        case PG_OP_TANH:
            for (uint32_t s = 0; s < S; s++)
                go[s] = 0.0 + tanh_grad(act[s], go[s]);
            break;
        default:
            for (uint32_t s = 0; s < S; s++)
                go[s] = 0.0 + sigmoid_grad(act[s], go[s]);
        }
        write_row(G, go, g->out_row[j], out, 1, S);
    }
}

/* grad x[s][i] += w[j][i] * grad out[j][s] for j in order; grad w[j][i] (and
 * b[j]) += x[s][i] (and 1) * grad out[j][s] for s in order. */
static void group_backward(arena_t *A, group_t *g, int values_unchanged)
{
    double *G = A->grad;
    const uint32_t m = g->m, J = g->J, S = g->S, Sp = g->Sp, m1p = g->m1p;
    if (!values_unchanged) /* backward reads the values as they are now, as eager's */
        gather_operands(A, g);
    gather_output_grads(A, g, values_unchanged);
    if (g->x_grad && g->x_ld) { /* into the arena's rows in place */
        double *GX = G + g->x_col[0];
        if (g->x_fresh)
            for (uint32_t i = 0; i < m; i++) /* 0.0 bits: eager's zeroed grads */
                memset(GX + (ptrdiff_t)i * g->x_ld, 0, (size_t)S * sizeof *GX);
        accumulate_products(GX, g->x_ld, g->W, 1, m, g->GO, Sp, m, Sp, J);
    } else if (g->x_grad) {
        for (uint32_t i = 0; i < m; i++) {
            double *gx = g->GX + (size_t)i * Sp;
            if (g->x_fresh)
                memset(gx, 0, (size_t)S * sizeof *gx); /* 0.0 bits: eager's zeroed grads */
            else
                read_row(gx, G, g->x_col[i], g->x_cells + i, m, S);
        }
        accumulate_products(g->GX, Sp, g->W, 1, m, g->GO, Sp, m, Sp, J);
        for (uint32_t i = 0; i < m; i++)
            write_row(G, g->GX + (size_t)i * Sp, g->x_col[i], g->x_cells + i, m, S);
    }
    transpose_inputs(A, g);
    for (uint32_t j = 0; j < J; j++) {
        const uint32_t *cell = g->cells + (size_t)j * (m + 1);
        double *gw = g->GW + (size_t)j * m1p;
        for (uint32_t i = 0; i < m; i++)
            gw[i] = G[cell[1 + i]];
        gw[m] = G[cell[0]];
    }
    accumulate_products(g->GW, m1p, g->GO, Sp, 1, g->XT, m1p, J, m1p, S);
    for (uint32_t j = 0; j < J; j++) {
        const uint32_t *cell = g->cells + (size_t)j * (m + 1);
        const double *gw = g->GW + (size_t)j * m1p;
        for (uint32_t i = 0; i < m; i++)
            G[cell[1 + i]] = gw[i];
        G[cell[0]] = gw[m];
    }
}

/* --- the plan ------------------------------------------------------------------------ */

/* A run's nodes all have one op; a DOT whose inputs get no grad is its own kind. */
enum { KIND_DOT_NO_X = 16, KIND_GROUP = 17, N_KINDS = 18 };

typedef struct {
    uint8_t kind;   /* an op tag, KIND_DOT_NO_X, or KIND_GROUP */
    uint32_t first; /* a run: its records start at ops[first]; a group: groups[first] */
    uint32_t count; /* a run: how many nodes */
} step_t;

/* A run's node is a record in `ops`: the node, then its children for ops of
 * one or two (so that the loop reads them from the run, not the arena), as
 * the ops' forward and backward take them (ops.h); a DOT's record is the
 * node alone (its children: children_of). */
static uint32_t record_size(uint8_t kind)
{
    switch (kind) {
    case PG_OP_ADD:
    case PG_OP_MUL:
    case PG_OP_POW: return 3;
#define UNARY_CASE(TAG, name, op) case PG_OP_##TAG:
    PG_UNARY_OPS(UNARY_CASE)
#undef UNARY_CASE
    case PG_OP_POW_CONST: return 2;
    default: return 1;
    }
}

struct pg_plan {
    step_t *steps; /* forward order; backward runs them in reverse */
    uint32_t n_steps;
    uint32_t *ops;   /* the runs' records, forward order */
    group_t *groups;
    uint32_t n_groups;
    uint32_t *zero; /* nodes whose grads backward zeroes first, as runs of
                     * slots: (first slot, count) pairs (relocate() packs the
                     * nodes, so there are few), n_zero of them */
    uint32_t n_zero;
    uint32_t *skip; /* leaves whose grads it zeroes last */
    uint32_t n_skip;
    uint32_t root;
    /* the tape itself, and which of its DOTs get no input grads: the order a
     * failed replay is run again in */
    uint32_t *order;
    uint8_t *no_x_grad;
    uint32_t count;
    /* A->data_writes when its forward finished: if no value was written
     * since, the groups' buffers still hold the nodes' values */
    uint64_t forward_writes;
};

void pg_plan_free(pg_plan *plan)
{
    if (!plan)
        return;
    for (uint32_t i = 0; i < plan->n_groups; i++)
        group_free(&plan->groups[i]);
    free(plan->groups);
    free(plan->steps);
    free(plan->ops);
    free(plan->zero);
    free(plan->skip);
    free(plan->order);
    free(plan->no_x_grad);
    free(plan);
}

int64_t pg_plan_groups(const pg_plan *plan) { return plan->n_groups; }

/* --- making a plan: what is known of each tape position -------------------------- */

typedef struct {
    arena_t *A;
    uint32_t *order;        /* the tape's order (relocate() renames its slots) */
    uint32_t count;
    uint32_t *pos;          /* slot -> tape position (for the tape's slots) */
    uint8_t *skipped;       /* position -> a leaf that gets no grad */
    uint8_t *no_x;          /* position -> a DOT whose inputs are all skipped */
    uint32_t *n_parents;    /* position -> parent terms (a child twice: two) */
    uint32_t *a_parent;     /* position -> one of its parents (a slot) */
    uint32_t *group_of;     /* position -> its group (a member or an activation), or NONE */
    group_t *groups;
    uint32_t n_groups, cap_groups;
    uint8_t *dissolved;     /* group -> its nodes run alone after all */
} builder_t;


static int64_t index_tape(builder_t *b, const uint32_t *skip, uint32_t n_skip)
{
    arena_t *A = b->A;
    const uint32_t P = b->count;
    b->pos = malloc((size_t)A->used * sizeof *b->pos);
    b->skipped = calloc(P, 1);
    b->no_x = calloc(P, 1);
    b->n_parents = calloc(P, sizeof *b->n_parents);
    b->a_parent = malloc((size_t)P * sizeof *b->a_parent);
    b->group_of = malloc((size_t)P * sizeof *b->group_of);
    if (!b->pos || !b->skipped || !b->no_x || !b->n_parents || !b->a_parent || !b->group_of)
        return PG_ERR_NOMEM;
    for (uint32_t p = 0; p < P; p++) {
        b->pos[b->order[p]] = p;
        b->group_of[p] = NONE;
    }
    for (uint32_t i = 0; i < n_skip; i++)
        b->skipped[b->pos[skip[i]]] = 1;
    for (uint32_t p = 0; p < P; p++) {
        uint32_t s = b->order[p];
        const uint32_t *k = children_of(A, s);
        for (uint32_t i = 0; i < A->arity[s]; i++) {
            uint32_t c = b->pos[k[i]];
            b->n_parents[c]++;
            b->a_parent[c] = s;
        }
        if (n_skip && A->op[s] == PG_OP_DOT) {
            uint32_t m = (A->arity[s] - 1) / 2, i = 0;
            while (i < m && b->skipped[b->pos[k[1 + m + i]]])
                i++;
            b->no_x[p] = m > 0 && i == m;
        }
    }
    return PG_OK;
}

/* --- finding groups -----------------------------------------------------------------
 * Each DOT gets the id of its neuron row (b, w[0..m)) and of its input row
 * x[0..m), equal rows equal ids (a hash table of rows); neurons and samples
 * joined by a DOT fall in one component (union-find); a component whose
 * every neuron meets every sample exactly once is a candidate group. */

typedef struct {
    uint32_t slot, pos, neuron, sample;
} dot_t;

static uint64_t hash_row(const uint32_t *row, uint32_t n)
{
    uint64_t h = 0x243F6A8885A308D3ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h = (h ^ row[i]) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
    }
    return h;
}

/* ids[d] for each dot's row (children [offset, offset + len) with len = m or
 * m + 1 by `neuron`): equal rows get equal ids.  Returns how many ids. */
static int64_t row_ids(const arena_t *A, dot_t *dots, uint32_t n, int neuron, uint32_t *n_ids)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    uint32_t *table = malloc(cap * sizeof *table); /* dot index + 1 of a row's first dot, or 0 */
    if (!table)
        return PG_ERR_NOMEM;
    memset(table, 0, cap * sizeof *table);
    uint32_t ids = 0;
    for (uint32_t d = 0; d < n; d++) {
        uint32_t m = (A->arity[dots[d].slot] - 1) / 2, len = neuron ? m + 1 : m;
        const uint32_t *row = children_of(A, dots[d].slot) + (neuron ? 0 : m + 1);
        size_t at = hash_row(row, len) & (cap - 1);
        for (;; at = (at + 1) & (cap - 1)) {
            if (!table[at]) {
                table[at] = d + 1;
                if (neuron)
                    dots[d].neuron = ids++;
                else
                    dots[d].sample = ids++;
                break;
            }
            const dot_t *o = &dots[table[at] - 1];
            uint32_t om = (A->arity[o->slot] - 1) / 2;
            if (om == m && memcmp(children_of(A, o->slot) + (neuron ? 0 : m + 1), row,
                                  len * sizeof *row) == 0) {
                if (neuron)
                    dots[d].neuron = o->neuron;
                else
                    dots[d].sample = o->sample;
                break;
            }
        }
    }
    free(table);
    *n_ids = ids;
    return PG_OK;
}

static uint32_t find_root(uint32_t *parent, uint32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Sort the (position, index) pairs of one row of the grid by position,
 * highest first: the order backward meets them. */
typedef struct {
    uint32_t pos, index;
} ranked_t;

static int by_position_down(const void *a, const void *b)
{
    uint32_t x = ((const ranked_t *)a)->pos, y = ((const ranked_t *)b)->pos;
    return (x < y) - (x > y);
}

/* The activation over each member, if every member has one as its only
 * parent, all of one op: that op, else 0. */
static uint8_t fused_activation(const builder_t *b, const uint32_t *members, size_t count)
{
    const arena_t *A = b->A;
    uint8_t op = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t p = b->pos[members[i]];
        if (b->n_parents[p] != 1)
            return 0;
        uint8_t parent_op = A->op[b->a_parent[p]];
        if (parent_op != PG_OP_RELU && parent_op != PG_OP_TANH && parent_op != PG_OP_SIGMOID)
            return 0;
        if (i == 0)
            op = parent_op;
        else if (parent_op != op)
            return 0;
    }
    return op;
}

/* A candidate (grid[jl * S + sl] = its dots) checked and, if it holds, made
 * a group.  stamp[] (per slot) marks the cells of the candidate `mark`. */
static int64_t try_group(builder_t *b, const dot_t *dots, const uint32_t *grid, uint32_t J,
                         uint32_t S, uint32_t *stamp, uint32_t mark, ranked_t *scratch)
{
    arena_t *A = b->A;
    const uint32_t m = (A->arity[dots[grid[0]].slot] - 1) / 2;
    /* Every cell (weight, bias, input) once, and no member among them. */
    for (uint32_t jl = 0; jl < J; jl++) {
        const uint32_t *row = children_of(A, dots[grid[(size_t)jl * S]].slot);
        for (uint32_t i = 0; i <= m; i++) {
            if (stamp[row[i]] == mark)
                return 0;
            stamp[row[i]] = mark;
        }
    }
    for (uint32_t sl = 0; sl < S; sl++) {
        const uint32_t *row = children_of(A, dots[grid[sl]].slot) + m + 1;
        for (uint32_t i = 0; i < m; i++) {
            if (stamp[row[i]] == mark)
                return 0;
            stamp[row[i]] = mark;
        }
    }
    for (size_t d = 0; d < (size_t)J * S; d++)
        if (stamp[dots[grid[d]].slot] == mark)
            return 0;
    /* One order of samples for every neuron, and of neurons for every sample. */
    uint32_t *sample_order = malloc(((size_t)S + J) * sizeof *sample_order);
    if (!sample_order)
        return PG_ERR_NOMEM;
    uint32_t *neuron_order = sample_order + S;
    int consistent = 1;
    for (uint32_t jl = 0; jl < J && consistent; jl++) {
        for (uint32_t sl = 0; sl < S; sl++)
            scratch[sl] = (ranked_t){dots[grid[(size_t)jl * S + sl]].pos, sl};
        qsort(scratch, S, sizeof *scratch, by_position_down);
        for (uint32_t s = 0; s < S; s++) {
            if (jl == 0)
                sample_order[s] = scratch[s].index;
            else if (sample_order[s] != scratch[s].index)
                consistent = 0;
        }
    }
    for (uint32_t sl = 0; sl < S && consistent; sl++) {
        for (uint32_t jl = 0; jl < J; jl++)
            scratch[jl] = (ranked_t){dots[grid[(size_t)jl * S + sl]].pos, jl};
        qsort(scratch, J, sizeof *scratch, by_position_down);
        for (uint32_t j = 0; j < J; j++) {
            if (sl == 0)
                neuron_order[j] = scratch[j].index;
            else if (neuron_order[j] != scratch[j].index)
                consistent = 0;
        }
    }
    if (!consistent) {
        free(sample_order);
        return 0;
    }
    if (b->n_groups == b->cap_groups) {
        uint32_t cap = b->cap_groups ? 2 * b->cap_groups : 8;
        group_t *grown = realloc(b->groups, cap * sizeof *grown);
        if (!grown) {
            free(sample_order);
            return PG_ERR_NOMEM;
        }
        b->groups = grown;
        b->cap_groups = cap;
    }
    /* The members by (neuron, sample) in those orders. */
    uint32_t *members = malloc((size_t)J * S * sizeof *members);
    if (!members) {
        free(sample_order);
        return PG_ERR_NOMEM;
    }
    for (uint32_t j = 0; j < J; j++)
        for (uint32_t s = 0; s < S; s++)
            members[(size_t)j * S + s] = dots[grid[(size_t)neuron_order[j] * S + sample_order[s]]].slot;
    free(sample_order);
    group_t *g = &b->groups[b->n_groups];
    *g = (group_t){.m = m, .J = J, .S = S, .Sp = round_up(S), .m1p = round_up(m + 1)};
    g->act_op = fused_activation(b, members, (size_t)J * S);
    for (size_t d = 0; g->act_op && d < (size_t)J * S; d++)
        if (stamp[b->a_parent[b->pos[members[d]]]] == mark)
            g->act_op = 0; /* an activation that is also an input here: not fused */
    for (uint32_t s = 0; s < S; s++) {
        const uint32_t *x = children_of(A, members[s]) + m + 1;
        for (uint32_t i = 0; i < m; i++)
            g->x_grad |= !b->skipped[b->pos[x[i]]];
    }
    g->x_fresh = g->x_grad;
    for (uint32_t s = 0; s < S && g->x_fresh; s++) {
        const uint32_t *x = children_of(A, members[s]) + m + 1;
        for (uint32_t i = 0; i < m; i++)
            if (b->n_parents[b->pos[x[i]]] != J)
                g->x_fresh = 0;
    }
    int64_t rc = group_alloc(g);
    if (rc < 0) {
        free(members);
        group_free(g);
        return rc;
    }
    memcpy(g->out, members, (size_t)J * S * sizeof *members);
    free(members);
    for (uint32_t j = 0; j < J; j++)
        memcpy(g->cells + (size_t)j * (m + 1), children_of(A, g->out[(size_t)j * S]),
               (m + 1) * sizeof *g->cells);
    for (uint32_t s = 0; s < S; s++)
        memcpy(g->x_cells + (size_t)s * m, children_of(A, g->out[s]) + m + 1, m * sizeof *g->x_cells);
    for (size_t d = 0; d < (size_t)J * S; d++) {
        uint32_t p = b->pos[g->out[d]];
        b->group_of[p] = b->n_groups;
        if (g->act_op) {
            g->act[d] = b->a_parent[p];
            b->group_of[b->pos[g->act[d]]] = b->n_groups;
        }
    }
    b->n_groups++;
    return 1;
}

/* The fewest samples worth a group: below that a layer's vectors would run
 * mostly on padding. */
#define MIN_SAMPLES 4

static int64_t find_groups(builder_t *b)
{
    arena_t *A = b->A;
    uint32_t n_dots = 0;
    for (uint32_t p = 0; p < b->count; p++)
        n_dots += A->op[b->order[p]] == PG_OP_DOT && A->arity[b->order[p]] >= 3;
    if (n_dots < MIN_SAMPLES)
        return PG_OK;
    dot_t *dots = malloc((size_t)n_dots * sizeof *dots);
    uint32_t *stamp = calloc(A->used, sizeof *stamp);
    uint32_t *uf = NULL, *comp_of = NULL, *local = NULL, *count = NULL, *grid = NULL;
    uint32_t *offset = NULL, *root_comp = NULL;
    ranked_t *scratch = NULL;
    int64_t rc = PG_ERR_NOMEM;
    if (!dots || !stamp)
        goto done;
    n_dots = 0;
    for (uint32_t p = 0; p < b->count; p++) {
        uint32_t s = b->order[p];
        if (A->op[s] == PG_OP_DOT && A->arity[s] >= 3)
            dots[n_dots++] = (dot_t){s, p, 0, 0};
    }
    uint32_t n_neurons, n_samples;
    if ((rc = row_ids(A, dots, n_dots, 1, &n_neurons)) < 0 ||
        (rc = row_ids(A, dots, n_dots, 0, &n_samples)) < 0)
        goto done;
    rc = PG_ERR_NOMEM;
    uint32_t n_ids = n_neurons + n_samples;
    uf = malloc((size_t)n_ids * sizeof *uf);
    comp_of = malloc((size_t)n_ids * sizeof *comp_of);
    local = malloc((size_t)n_ids * sizeof *local);
    count = calloc(3 * (size_t)n_ids, sizeof *count); /* per component: neurons, samples, dots */
    grid = malloc((size_t)n_dots * sizeof *grid);
    scratch = malloc(((size_t)n_ids + 1) * sizeof *scratch);
    if (!uf || !comp_of || !local || !count || !grid || !scratch)
        goto done;
    for (uint32_t i = 0; i < n_ids; i++)
        uf[i] = i;
    for (uint32_t d = 0; d < n_dots; d++) {
        uint32_t x = find_root(uf, dots[d].neuron), y = find_root(uf, n_neurons + dots[d].sample);
        if (x != y)
            uf[x] = y;
    }
    /* Components numbered; each neuron and sample its index within its own. */
    uint32_t n_comps = 0;
    for (uint32_t i = 0; i < n_ids; i++)
        comp_of[i] = NONE;
    for (uint32_t i = 0; i < n_ids; i++) {
        uint32_t r = find_root(uf, i);
        if (comp_of[r] == NONE)
            comp_of[r] = n_comps++;
        uint32_t c = comp_of[r];
        local[i] = i < n_neurons ? count[3 * c]++ : count[3 * c + 1]++;
    }
    for (uint32_t d = 0; d < n_dots; d++)
        count[3 * comp_of[find_root(uf, dots[d].neuron)] + 2]++;
    /* Each full component's grid: its dots by (neuron, sample), at an offset. */
    offset = malloc(((size_t)n_comps + 1) * sizeof *offset);
    root_comp = malloc((size_t)n_ids * sizeof *root_comp);
    if (!offset || !root_comp)
        goto done;
    for (uint32_t i = 0; i < n_ids; i++)
        root_comp[i] = comp_of[find_root(uf, i)];
    size_t at = 0;
    for (uint32_t c = 0; c < n_comps; c++) {
        uint64_t J = count[3 * c], S = count[3 * c + 1], n = count[3 * c + 2];
        offset[c] = (J * S == n && S >= MIN_SAMPLES) ? (uint32_t)at : NONE;
        if (offset[c] != NONE)
            at += n;
    }
    for (size_t i = 0; i < at; i++)
        grid[i] = NONE;
    for (uint32_t d = 0; d < n_dots; d++) {
        uint32_t c = root_comp[dots[d].neuron];
        if (offset[c] == NONE)
            continue;
        size_t cell = offset[c] + (size_t)local[dots[d].neuron] * count[3 * c + 1] +
                      local[n_neurons + dots[d].sample];
        if (grid[cell] != NONE)
            offset[c] = NONE; /* one neuron met one sample twice: not a grid */
        else
            grid[cell] = d;
    }
    rc = PG_OK;
    for (uint32_t c = 0; c < n_comps && rc >= 0; c++)
        if (offset[c] != NONE)
            rc = try_group(b, dots, grid + offset[c], count[3 * c], count[3 * c + 1], stamp,
                           c + 1, scratch);
    if (rc > 0)
        rc = PG_OK;
done:
    free(dots);
    free(stamp);
    free(offset);
    free(root_comp);
    free(uf);
    free(comp_of);
    free(local);
    free(count);
    free(grid);
    free(scratch);
    return rc;
}

/* --- scheduling ----------------------------------------------------------------------
 * Units: each group, and each node that is neither a leaf nor in a group.
 * Edges say which unit's backward must come first; Kahn's algorithm orders
 * them, taking next a ready unit of the kind it just took if there is one
 * (long runs of one op), else the one that has been ready longest. */

typedef struct {
    uint32_t n_units, n_single;
    uint32_t *unit_of;  /* position -> unit, NONE for leaves */
    uint32_t *single;   /* single unit -> position */
    uint8_t *kind;      /* unit -> kind */
    uint32_t *edge_from, *edge_to; /* pairs, then CSR by source */
    size_t n_edges, cap_edges;
    uint32_t *last_to;  /* unit -> the target of its last edge (cheap de-duplication) */
    uint32_t *order;    /* the backward order of units */
} schedule_t;

static void schedule_free(schedule_t *sc)
{
    free(sc->unit_of);
    free(sc->single);
    free(sc->kind);
    free(sc->edge_from);
    free(sc->edge_to);
    free(sc->last_to);
    free(sc->order);
    memset(sc, 0, sizeof *sc);
}

static int add_edge(schedule_t *sc, uint32_t from, uint32_t to)
{
    if (from == to || sc->last_to[from] == to)
        return 1;
    sc->last_to[from] = to;
    if (sc->n_edges == sc->cap_edges) {
        size_t cap = sc->cap_edges ? 2 * sc->cap_edges : 1024;
        uint32_t *f = realloc(sc->edge_from, cap * sizeof *f);
        if (f)
            sc->edge_from = f;
        uint32_t *t = realloc(sc->edge_to, cap * sizeof *t);
        if (t)
            sc->edge_to = t;
        if (!f || !t)
            return 0;
        sc->cap_edges = cap;
    }
    sc->edge_from[sc->n_edges] = from;
    sc->edge_to[sc->n_edges++] = to;
    return 1;
}

static int64_t make_units(const builder_t *b, schedule_t *sc)
{
    const arena_t *A = b->A;
    const uint32_t P = b->count;
    sc->unit_of = malloc((size_t)P * sizeof *sc->unit_of);
    sc->single = malloc((size_t)P * sizeof *sc->single);
    if (!sc->unit_of || !sc->single)
        return PG_ERR_NOMEM;
    uint32_t n = 0;
    for (uint32_t p = 0; p < P; p++) {
        uint32_t g = b->group_of[p];
        if (g != NONE && !b->dissolved[g])
            continue;
        if (A->op[b->order[p]] == PG_OP_LEAF) {
            sc->unit_of[p] = NONE;
            continue;
        }
        sc->single[n] = p;
        sc->unit_of[p] = n++;
    }
    sc->n_single = n;
    uint32_t *group_unit = malloc(((size_t)b->n_groups + 1) * sizeof *group_unit);
    if (!group_unit)
        return PG_ERR_NOMEM;
    for (uint32_t g = 0; g < b->n_groups; g++)
        group_unit[g] = b->dissolved[g] ? NONE : n++;
    for (uint32_t p = 0; p < P; p++) {
        uint32_t g = b->group_of[p];
        if (g != NONE && !b->dissolved[g])
            sc->unit_of[p] = group_unit[g];
    }
    free(group_unit);
    sc->n_units = n;
    sc->kind = malloc((size_t)n + 1);
    sc->last_to = malloc(((size_t)n + 1) * sizeof *sc->last_to);
    if (!sc->kind || !sc->last_to)
        return PG_ERR_NOMEM;
    for (uint32_t u = 0; u < n; u++) {
        sc->last_to[u] = NONE;
        if (u >= sc->n_single) {
            sc->kind[u] = KIND_GROUP;
            continue;
        }
        uint32_t p = sc->single[u];
        sc->kind[u] = b->no_x[p] ? KIND_DOT_NO_X : A->op[b->order[p]];
    }
    return PG_OK;
}

/* Edges (u before v in backward): a parent's unit before its child's; a
 * node's parents' units in recorded order (walking parents from the last
 * position down, each child's previous parent comes before the next). */
static int64_t make_edges(const builder_t *b, schedule_t *sc)
{
    const arena_t *A = b->A;
    const uint32_t P = b->count;
    uint32_t *last_parent = malloc((size_t)P * sizeof *last_parent);
    if (!last_parent)
        return PG_ERR_NOMEM;
    for (uint32_t p = 0; p < P; p++)
        last_parent[p] = NONE;
    int ok = 1;
    for (uint32_t p = P; p-- > 0 && ok;) {
        uint32_t u = sc->unit_of[p], s = b->order[p];
        if (u == NONE)
            continue;
        const uint32_t *k = children_of(A, s);
        for (uint32_t i = 0; i < A->arity[s] && ok; i++) {
            uint32_t c = b->pos[k[i]], v = sc->unit_of[c];
            if (v != NONE)
                ok = add_edge(sc, u, v);
            if (last_parent[c] != NONE && ok)
                ok = add_edge(sc, last_parent[c], u);
            last_parent[c] = u;
        }
    }
    free(last_parent);
    return ok ? PG_OK : PG_ERR_NOMEM;
}

/* Order the units; returns how many it could (fewer than all: a cycle). */
static int64_t order_units(schedule_t *sc, uint32_t *scheduled)
{
    const uint32_t n = sc->n_units;
    const size_t E = sc->n_edges;
    uint32_t *start = calloc((size_t)n + 1, sizeof *start);
    uint32_t *targets = malloc((E ? E : 1) * sizeof *targets);
    uint32_t *indeg = calloc((size_t)n + 1, sizeof *indeg);
    uint32_t *next = malloc(((size_t)n + 1) * sizeof *next);
    uint64_t *since = malloc(((size_t)n + 1) * sizeof *since);
    sc->order = malloc(((size_t)n + 1) * sizeof *sc->order);
    int64_t rc = PG_ERR_NOMEM;
    if (!start || !targets || !indeg || !next || !since || !sc->order)
        goto done;
    for (size_t e = 0; e < E; e++) {
        start[sc->edge_from[e] + 1]++;
        indeg[sc->edge_to[e]]++;
    }
    for (uint32_t u = 0; u < n; u++)
        start[u + 1] += start[u];
    for (size_t e = 0; e < E; e++) /* fill, moving each source's start forward... */
        targets[start[sc->edge_from[e]]++] = sc->edge_to[e];
    for (uint32_t u = n; u-- > 0;) /* ...and back */
        start[u + 1] = start[u];
    start[0] = 0;
    uint32_t head[N_KINDS], tail[N_KINDS];
    for (int k = 0; k < N_KINDS; k++)
        head[k] = tail[k] = NONE;
    uint64_t clock = 0;
#define READY(u)                                      \
    do {                                              \
        uint8_t k_ = sc->kind[u];                     \
        next[u] = NONE;                               \
        since[u] = clock++;                           \
        if (tail[k_] == NONE)                         \
            head[k_] = u;                             \
        else                                          \
            next[tail[k_]] = u;                       \
        tail[k_] = u;                                 \
    } while (0)
    for (uint32_t u = n; u-- > 0;) /* from the root's end */
        if (!indeg[u])
            READY(u);
    uint32_t done = 0;
    int kind = -1;
    for (;;) {
        if (kind < 0 || head[kind] == NONE) {
            kind = -1;
            for (int k = 0; k < N_KINDS; k++)
                if (head[k] != NONE && (kind < 0 || since[head[k]] < since[head[kind]]))
                    kind = k;
            if (kind < 0)
                break;
        }
        uint32_t u = head[kind];
        head[kind] = next[u];
        if (head[kind] == NONE)
            tail[kind] = NONE;
        sc->order[done++] = u;
        for (uint32_t e = start[u]; e < start[u + 1]; e++)
            if (--indeg[targets[e]] == 0)
                READY(targets[e]);
    }
#undef READY
    *scheduled = done;
    rc = PG_OK;
done:
    free(start);
    free(targets);
    free(indeg);
    free(next);
    free(since);
    return rc;
}

/* Schedule, dissolving groups caught in a cycle until none is. */
static int64_t schedule(builder_t *b, schedule_t *sc)
{
    for (;;) {
        int64_t rc = make_units(b, sc);
        if (rc == PG_OK)
            rc = make_edges(b, sc);
        uint32_t scheduled = 0;
        if (rc == PG_OK)
            rc = order_units(sc, &scheduled);
        if (rc < 0)
            return rc;
        if (scheduled == sc->n_units)
            return PG_OK;
        /* the groups left over wait on a cycle (or behind one): run them alone */
        uint8_t *placed = calloc((size_t)sc->n_units + 1, 1);
        if (!placed)
            return PG_ERR_NOMEM;
        for (uint32_t i = 0; i < scheduled; i++)
            placed[sc->order[i]] = 1;
        uint32_t u = sc->n_single;
        for (uint32_t g = 0; g < b->n_groups; g++)
            if (!b->dissolved[g] && !placed[u++])
                b->dissolved[g] = 1;
        free(placed);
        schedule_free(sc);
    }
}

/* --- laying the graph out again ------------------------------------------------------
 * The nodes a replay runs are where the eager build left them: a layer's
 * nodes for one sample side by side, the same neuron's for the next sample a
 * graph's width away.  So the plan lays them out again in the order it runs
 * them (a group's DOTs neuron by neuron, sample by sample, then its
 * activations; every other node where its run is, after the leaves it
 * alone has: the numbers an op made Values of): the slots they occupy,
 * sorted, are handed back out in that order.  Only nodes that nothing but
 * this tape can name move: no handle held (ext 0), no Python state, and no
 * parent or tape but this tape's own nodes and this tape.  A slot that gets
 * another node gets a new generation, so that a stale handle to it is
 * refused, never taken for the node that is there now.  Values and grads
 * move with their nodes: nothing observable changes but speed. */

typedef struct {
    double data, grad, exponent;
    uint32_t *children_ext;
    uint32_t children[2], arity, refs, ext, mark;
    uint8_t op, flags;
} node_fields_t;

static int movable(const builder_t *b, uint32_t p)
{
    const arena_t *A = b->A;
    uint32_t s = b->order[p];
    return A->ext[s] == 0 && !(A->flags[s] & FLAG_STATEFUL) && A->refs[s] == b->n_parents[p] + 1;
}

static int by_slot(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void remap_all(uint32_t *slots, size_t count, const uint32_t *map)
{
    for (size_t i = 0; i < count; i++)
        if (map[slots[i]] != NONE)
            slots[i] = map[slots[i]];
}

/* Best effort: out of memory, the nodes stay where they are. */
static void relocate(builder_t *b, const schedule_t *sc)
{
    arena_t *A = b->A;
    const uint32_t P = b->count;
    uint32_t *seq = malloc(((size_t)P + 1) * sizeof *seq);   /* positions, in run order */
    uint32_t *slots = malloc(((size_t)P + 1) * sizeof *slots); /* their slots, sorted */
    uint32_t *group_of_unit = malloc(((size_t)b->n_groups + 1) * sizeof *group_of_unit);
    uint32_t *map = malloc((size_t)A->used * sizeof *map);     /* old slot -> new, or NONE */
    uint8_t *placed = calloc((size_t)P + 1, 1);                /* leaves placed */
    node_fields_t *moved = NULL;
    if (!seq || !slots || !group_of_unit || !map || !placed)
        goto done;
    for (uint32_t g = 0, u = 0; g < b->n_groups; g++)
        if (!b->dissolved[g])
            group_of_unit[u++] = g;
    uint32_t n = 0;
    for (uint32_t i = sc->n_units; i-- > 0;) { /* forward order */
        uint32_t u = sc->order[i];
        if (u < sc->n_single) {
            /* a node's leaves that no other node placed (a number the
             * graph made a Value of: 1 + x) go just before it */
            uint32_t s = b->order[sc->single[u]];
            const uint32_t *k = children_of(A, s);
            for (uint32_t c = 0; c < A->arity[s]; c++) {
                uint32_t q = b->pos[k[c]];
                if (!placed[q] && A->op[k[c]] == PG_OP_LEAF && !b->skipped[q] && movable(b, q)) {
                    placed[q] = 1;
                    seq[n++] = q;
                }
            }
            if (movable(b, sc->single[u]))
                seq[n++] = sc->single[u];
            continue;
        }
        const group_t *g = &b->groups[group_of_unit[u - sc->n_single]];
        for (size_t d = 0; d < (size_t)g->J * g->S; d++)
            if (movable(b, b->pos[g->out[d]]))
                seq[n++] = b->pos[g->out[d]];
        for (size_t d = 0; g->act_op && d < (size_t)g->J * g->S; d++)
            if (movable(b, b->pos[g->act[d]]))
                seq[n++] = b->pos[g->act[d]];
    }
    moved = malloc(((size_t)n + 1) * sizeof *moved);
    if (!moved)
        goto done;
    for (uint32_t k = 0; k < n; k++)
        slots[k] = b->order[seq[k]];
    qsort(slots, n, sizeof *slots, by_slot);
    memset(map, 0xff, (size_t)A->used * sizeof *map);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t s = b->order[seq[k]];
        moved[k] = (node_fields_t){A->data[s], A->grad[s], A->exponent[s], A->children_ext[s],
                                   {A->children[s][0], A->children[s][1]}, A->arity[s], A->refs[s],
                                   A->ext[s], A->mark[s], A->op[s], A->flags[s]};
        map[s] = slots[k];
    }
    for (uint32_t k = 0; k < n; k++) {
        uint32_t t = slots[k];
        const node_fields_t *f = &moved[k];
        if (b->order[seq[k]] != t)
            A->gen[t]++; /* another node: handles to the one that was here go stale */
        A->data[t] = f->data;
        A->grad[t] = f->grad;
        A->exponent[t] = f->exponent;
        A->children_ext[t] = f->children_ext;
        A->children[t][0] = f->children[0];
        A->children[t][1] = f->children[1];
        A->arity[t] = f->arity;
        A->refs[t] = f->refs;
        A->ext[t] = f->ext;
        A->mark[t] = f->mark;
        A->op[t] = f->op;
        A->flags[t] = f->flags;
    }
    /* Every name of a moved node: its position in the tape, its parents'
     * children (all on the tape), the groups' tables. */
    remap_all(b->order, P, map);
    for (uint32_t p = 0; p < P; p++) {
        uint32_t s = b->order[p];
        b->pos[s] = p;
        uint32_t *k = A->arity[s] > 2 ? A->children_ext[s] : A->children[s];
        remap_all(k, A->arity[s], map);
    }
    for (uint32_t g = 0; g < b->n_groups; g++) {
        group_t *grp = &b->groups[g];
        size_t members = (size_t)grp->J * grp->S;
        remap_all(grp->out, members, map);
        if (grp->act)
            remap_all(grp->act, members, map);
        remap_all(grp->cells, (size_t)grp->J * (grp->m + 1), map);
        remap_all(grp->x_cells, (size_t)grp->S * grp->m, map);
    }
    A->mutations++;
done:
    free(seq);
    free(slots);
    free(group_of_unit);
    free(map);
    free(placed);
    free(moved);
}

/* --- making the plan -------------------------------------------------------------------- */

static int64_t emit(builder_t *b, const schedule_t *sc, pg_plan *plan)
{
    const uint32_t n = sc->n_units;
    plan->steps = malloc(((size_t)n + 1) * sizeof *plan->steps);
    plan->ops = malloc((3 * (size_t)sc->n_single + 1) * sizeof *plan->ops);
    plan->groups = malloc(((size_t)b->n_groups + 1) * sizeof *plan->groups);
    if (!plan->steps || !plan->ops || !plan->groups)
        return PG_ERR_NOMEM;
    /* The groups kept go to the plan, in the order of their units (make_units
     * numbers them so); the dissolved ones' buffers go. */
    for (uint32_t g = 0; g < b->n_groups; g++)
        if (b->dissolved[g])
            group_free(&b->groups[g]);
        else
            plan->groups[plan->n_groups++] = b->groups[g];
    b->n_groups = 0; /* the plan owns them now */
    for (uint32_t g = 0; g < plan->n_groups; g++)
        if (map_rows(&plan->groups[g]) < 0)
            return PG_ERR_NOMEM;
    uint32_t n_ops = 0;
    for (uint32_t i = n; i-- > 0;) { /* forward: the backward order reversed */
        uint32_t u = sc->order[i];
        if (sc->kind[u] == KIND_GROUP) {
            plan->steps[plan->n_steps++] = (step_t){KIND_GROUP, u - sc->n_single, 1};
            continue;
        }
        step_t *last = plan->n_steps ? &plan->steps[plan->n_steps - 1] : NULL;
        if (last && last->kind == sc->kind[u])
            last->count++;
        else
            plan->steps[plan->n_steps++] = (step_t){sc->kind[u], n_ops, 1};
        uint32_t n = b->order[sc->single[u]], size = record_size(sc->kind[u]);
        plan->ops[n_ops] = n;
        memcpy(plan->ops + n_ops + 1, children_of(b->A, n), (size - 1) * sizeof *plan->ops);
        n_ops += size;
    }
    return PG_OK;
}

/* Grads backward zeroes first: all but those a group assigns without reading
 * (its DOTs under a fused activation; inputs whose only parents are its DOTs)
 * and the skipped leaves (zeroed last). */
static int64_t zero_list(const builder_t *b, const uint8_t *assigned, pg_plan *plan)
{
    uint32_t *slots = malloc(((size_t)b->count + 1) * sizeof *slots), n = 0;
    plan->zero = malloc((2 * (size_t)b->count + 1) * sizeof *plan->zero);
    if (!slots || !plan->zero) {
        free(slots);
        return PG_ERR_NOMEM;
    }
    for (uint32_t p = 0; p < b->count; p++)
        if (!assigned[p] && !b->skipped[p])
            slots[n++] = b->order[p];
    qsort(slots, n, sizeof *slots, by_slot); /* zeroing's order changes nothing */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t *run = plan->zero + 2 * (size_t)plan->n_zero; /* the next run */
        if (plan->n_zero && run[-2] + run[-1] == slots[i])
            run[-1]++; /* the last run goes on */
        else {
            run[0] = slots[i];
            run[1] = 1;
            plan->n_zero++;
        }
    }
    free(slots);
    return PG_OK;
}

static int64_t assigned_grads(const builder_t *b, const pg_plan *plan, uint8_t **out)
{
    uint8_t *assigned = calloc((size_t)b->count + 1, 1);
    if (!assigned)
        return PG_ERR_NOMEM;
    for (uint32_t i = 0; i < plan->n_groups; i++) {
        const group_t *g = &plan->groups[i];
        for (size_t d = 0; g->act_op && d < (size_t)g->J * g->S; d++)
            assigned[b->pos[g->out[d]]] = 1;
        for (size_t x = 0; g->x_fresh && x < (size_t)g->S * g->m; x++)
            assigned[b->pos[g->x_cells[x]]] = 1;
    }
    assigned[b->count - 1] = 0; /* the root is seeded, whatever else */
    *out = assigned;
    return PG_OK;
}

static void builder_free(builder_t *b)
{
    free(b->pos);
    free(b->skipped);
    free(b->no_x);
    free(b->n_parents);
    free(b->a_parent);
    free(b->group_of);
    for (uint32_t g = 0; g < b->n_groups; g++)
        group_free(&b->groups[g]);
    free(b->groups);
    free(b->dissolved);
}

int64_t pg_plan_build(arena_t *A, uint32_t *order, uint32_t count, const uint32_t *skip,
                      uint32_t n_skip, pg_plan **out)
{
    pg_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return PG_ERR_NOMEM;
    builder_t b = {.A = A, .order = order, .count = count};
    schedule_t sc = {0};
    uint8_t *assigned = NULL;
    int64_t rc = PG_ERR_NOMEM;
    plan->order = malloc(((size_t)count + 1) * sizeof *plan->order);
    plan->skip = malloc(((size_t)n_skip + 1) * sizeof *plan->skip);
    if (!plan->order || !plan->skip)
        goto fail;
    memcpy(plan->order, order, (size_t)count * sizeof *order);
    if (n_skip) /* skip may be NULL then, which memcpy must not be given */
        memcpy(plan->skip, skip, (size_t)n_skip * sizeof *skip);
    plan->count = count;
    plan->n_skip = n_skip;
    plan->root = order[count - 1];
    if ((rc = index_tape(&b, skip, n_skip)) < 0 || (rc = find_groups(&b)) < 0)
        goto fail;
    rc = PG_ERR_NOMEM;
    b.dissolved = calloc((size_t)b.n_groups + 1, 1);
    if (!b.dissolved)
        goto fail;
    if ((rc = schedule(&b, &sc)) < 0)
        goto fail;
    relocate(&b, &sc);
    memcpy(plan->order, order, (size_t)count * sizeof *order); /* as relocate() left it */
    plan->root = order[count - 1];
    if ((rc = emit(&b, &sc, plan)) < 0 ||
        (rc = assigned_grads(&b, plan, &assigned)) < 0 || (rc = zero_list(&b, assigned, plan)) < 0)
        goto fail;
    plan->no_x_grad = b.no_x; /* kept for a failed replay's second run */
    b.no_x = NULL;
    free(assigned);
    schedule_free(&sc);
    builder_free(&b);
    *out = plan;
    return PG_OK;
fail:
    free(assigned);
    schedule_free(&sc);
    builder_free(&b);
    pg_plan_free(plan);
    return rc;
}

/* --- running it -------------------------------------------------------------------------
 * A run of one op: the switch once, the op's own forward (backward) inlined
 * in the loop. */

#define EACH_FORWARD(fn, size)                                           \
    for (const uint32_t *o = ops; o < ops + (size) * count; o += (size)) { \
        int64_t rc = fn(A, o[0], o + 1);                                 \
        if (rc < 0)                                                      \
            return rc;                                                   \
    }
#define EACH_BACKWARD(fn, size)                                          \
    for (const uint32_t *o = ops + (size) * count; o > ops;) {           \
        o -= (size);                                                     \
        int64_t rc = fn(A, o[0], o + 1);                                 \
        if (rc < 0)                                                      \
            return rc;                                                   \
    }
#define EACH_DOT(fn)                                                     \
    for (uint32_t i = 0; i < count; i++)                                 \
        fn(A, ops[i], children_of(A, ops[i]));
#define EACH_DOT_BACKWARD(fn)                                            \
    for (uint32_t i = count; i-- > 0;)                                   \
        fn(A, ops[i], children_of(A, ops[i]));

/* (The ops that cannot fail return a constant PG_OK, so the check on each
 * node compiles away where they are inlined.) */
static int64_t run_forward(arena_t *A, uint8_t kind, const uint32_t *ops, uint32_t count)
{
    switch (kind) {
    case PG_OP_ADD: EACH_FORWARD(add_forward, 3); break;
    case PG_OP_MUL: EACH_FORWARD(mul_forward, 3); break;
    case PG_OP_POW_CONST: EACH_FORWARD(pow_const_forward, 2); break;
    case PG_OP_POW: EACH_FORWARD(pow_forward, 3); break;
#define UNARY_FORWARD(TAG, name, op) case PG_OP_##TAG: EACH_FORWARD(name##_forward, 2); break;
    PG_UNARY_OPS(UNARY_FORWARD)
#undef UNARY_FORWARD
    case PG_OP_DOT:
    case KIND_DOT_NO_X: EACH_DOT(dot_forward); break;
    default: break; /* leaves (and custom ops, which a replay refuses) keep their values */
    }
    return PG_OK;
}

/* DOT's backward without the grads into its inputs x. */
static inline int64_t dot_backward_weights(arena_t *A, uint32_t n, const uint32_t *k)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    double *G = A->grad;
    const double *D = A->data;
    G[k[0]] += G[n];
    for (uint32_t i = 0; i < m; i++)
        G[w[i]] += D[x[i]] * G[n];
    return PG_OK;
}

static int64_t run_backward(arena_t *A, uint8_t kind, const uint32_t *ops, uint32_t count)
{
    switch (kind) {
    case PG_OP_ADD: EACH_BACKWARD(add_backward, 3); break;
    case PG_OP_MUL: EACH_BACKWARD(mul_backward, 3); break;
    case PG_OP_POW_CONST: EACH_BACKWARD(pow_const_backward, 2); break;
    case PG_OP_POW: EACH_BACKWARD(pow_backward, 3); break;
#define UNARY_BACKWARD(TAG, name, op) case PG_OP_##TAG: EACH_BACKWARD(name##_backward, 2); break;
    PG_UNARY_OPS(UNARY_BACKWARD)
#undef UNARY_BACKWARD
    case PG_OP_DOT: EACH_DOT_BACKWARD(dot_backward); break;
    case KIND_DOT_NO_X: EACH_DOT_BACKWARD(dot_backward_weights); break;
    default: break;
    }
    return PG_OK;
}

/* The tape node by node, as a replay without a plan runs it. */
static int64_t forward_in_tape_order(arena_t *A, const pg_plan *plan)
{
    for (uint32_t i = 0; i < plan->count; i++) {
        int64_t rc = op_forward(A, plan->order[i]);
        if (rc < 0)
            return rc;
    }
    return PG_OK;
}

static int64_t backward_in_tape_order(arena_t *A, const pg_plan *plan)
{
    double *G = A->grad;
    for (uint32_t i = 0; i < plan->count; i++)
        G[plan->order[i]] = 0.0;
    G[plan->root] = 1.0;
    for (uint32_t i = plan->count; i-- > 0;) {
        uint32_t n = plan->order[i];
        if (plan->no_x_grad[i]) {
            dot_backward_weights(A, n, children_of(A, n));
            continue;
        }
        int64_t rc = op_backward(A, n);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < plan->n_skip; i++)
        G[plan->skip[i]] = 0.0;
    return PG_OK;
}

int64_t pg_plan_forward(arena_t *A, pg_plan *plan)
{
    ASSERT_LOCKED();
    A->data_writes++;
    for (uint32_t i = 0; i < plan->n_steps; i++) {
        const step_t *step = &plan->steps[i];
        if (step->kind == KIND_GROUP) {
            group_forward(A, &plan->groups[step->first]);
            continue;
        }
        if (run_forward(A, step->kind, plan->ops + step->first, step->count) < 0)
            return forward_in_tape_order(A, plan); /* the same error, from the same node */
    }
    plan->forward_writes = A->data_writes;
    return PG_OK;
}

int64_t pg_plan_backward(arena_t *A, const pg_plan *plan)
{
    ASSERT_LOCKED();
    const int values_unchanged = plan->forward_writes == A->data_writes;
    double *G = A->grad;
    for (uint32_t i = 0; i < plan->n_zero; i++) /* 0.0 is all zero bits */
        memset(G + plan->zero[2 * i], 0, (size_t)plan->zero[2 * i + 1] * sizeof *G);
    G[plan->root] = 1.0;
    for (uint32_t i = plan->n_steps; i-- > 0;) {
        const step_t *step = &plan->steps[i];
        if (step->kind == KIND_GROUP) {
            group_backward(A, &plan->groups[step->first], values_unchanged);
            continue;
        }
        if (run_backward(A, step->kind, plan->ops + step->first, step->count) < 0)
            return backward_in_tape_order(A, plan);
    }
    for (uint32_t i = 0; i < plan->n_skip; i++)
        G[plan->skip[i]] = 0.0;
    return PG_OK;
}
