/* Neural-network kernels: micrograd's Neuron, Layer and MLP forward, each one
 * call, as DOT nodes (b + w.x summed in micrograd's order) and activation nodes
 * (RELU, or pygrad's TANH and SIGMOID). */
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* The op over a neuron's DOT node, by pg_activation (none for PG_ACT_LINEAR). */
static const uint8_t activation_op[] = {
    [PG_ACT_LINEAR] = PG_OP_FREE, [PG_ACT_RELU] = PG_OP_RELU,
    [PG_ACT_TANH] = PG_OP_TANH, [PG_ACT_SIGMOID] = PG_OP_SIGMOID,
};

static int act_ok(int32_t act)
{
    return act >= 0 && act < (int32_t)(sizeof activation_op / sizeof *activation_op);
}

/* One neuron over children = (b, w[0..nin), x[0..nin)): DOT, then its activation. */
static int64_t make_neuron(arena_t *A, const uint32_t *children, uint32_t nin, int act,
                           uint32_t *slot)
{
    uint32_t dot;
    int64_t h = pg_make_op(A, PG_OP_DOT, children, 2 * nin + 1, 0.0, 0, &dot);
    if (h < 0 || act == PG_ACT_LINEAR) {
        if (slot)
            *slot = dot;
        return h;
    }
    return pg_drop_temporary(A, dot, pg_make_op(A, activation_op[act], &dot, 1, 0.0, 0, slot));
}

static void release_slots(arena_t *A, const uint32_t *slots, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        pg_node_release(A, slots[i]);
}

/* out[j] = neuron j over inputs x (all slots validated), each out[j] with one
 * external reference.  All or nothing: on error, nothing made survives.
 * `children` is scratch for 2 * nin + 1 slots. */
static int64_t build_layer(arena_t *A, const uint32_t *w, const uint32_t *b, const uint32_t *x,
                           uint32_t nin, uint32_t nout, int act, uint32_t *children, uint32_t *out)
{
    memcpy(children + 1 + nin, x, (size_t)nin * sizeof *children);
    for (uint32_t j = 0; j < nout; j++) {
        children[0] = b[j];
        memcpy(children + 1, w + (size_t)j * nin, (size_t)nin * sizeof *children);
        int64_t h = make_neuron(A, children, nin, act, &out[j]);
        if (h < 0) {
            release_slots(A, out, j);
            return h;
        }
    }
    return PG_OK;
}

static int size_ok(int64_t n) { return n >= 0 && 2 * n + 1 <= (int64_t)MAX_SLOTS; }

static int64_t api_layer(const int64_t *w, const int64_t *b, const int64_t *x, int64_t nin,
                         int64_t nout, int32_t act, int64_t *out)
{
    arena_t *A = &pg_the_arena;
    if (!act_ok(act) || !size_ok(nin) || !size_ok(nout) || !size_ok(nin * nout) ||
        (nout > 0 && (!b || !out)) || (nin > 0 && (!x || (nout > 0 && !w))))
        return PG_ERR_ARG;
    /* Scratch: neuron children, then the slots of x and out. */
    uint32_t *children = pg_scratch(A, (3 * (size_t)nin + 1 + (size_t)nout) * sizeof *children);
    if (!children)
        return PG_ERR_NOMEM;
    uint32_t *x_s = children + 2 * nin + 1, *out_s = x_s + nin;
    const uint32_t *w_s, *b_s;
    int w_stateful, b_stateful;
    int64_t rc = pg_lookup_params(A, w, (size_t)(nin * nout), &w_s, &w_stateful);
    if (rc == PG_OK)
        rc = pg_lookup_params(A, b, (size_t)nout, &b_s, &b_stateful);
    if (rc == PG_OK && !pg_lookup_all(A, x, nin, x_s))
        rc = PG_ERR_HANDLE;
    if (rc == PG_OK)
        rc = pg_nursery_reserve(A, (size_t)nout);
    if (rc == PG_OK)
        rc = build_layer(A, w_s, b_s, x_s, (uint32_t)nin, (uint32_t)nout, act, children, out_s);
    if (rc < 0)
        return rc;
    for (int64_t j = 0; j < nout; j++)
        out[j] = handle_of(A, out_s[j]);
    return pg_hand_out(A, rc, out, (size_t)nout,
                       w_stateful || b_stateful || pg_any_stateful(A, x_s, (size_t)nin));
}

/* Check the layer sizes against n_params; returns the widest layer, or < 0. */
static int64_t check_mlp_shape(const int64_t *sizes, int64_t n_layers, int64_t n_params)
{
    int64_t widest = 0, expected = 0;
    for (int64_t l = 0; l <= n_layers; l++) {
        if (!size_ok(sizes[l]))
            return PG_ERR_ARG;
        widest = sizes[l] > widest ? sizes[l] : widest;
    }
    for (int64_t l = 0; l < n_layers; l++) {
        if (!size_ok(sizes[l] * sizes[l + 1]))
            return PG_ERR_ARG;
        expected += sizes[l] * sizes[l + 1] + sizes[l + 1];
        if (expected > (int64_t)MAX_SLOTS)
            return PG_ERR_ARG;
    }
    return expected == n_params ? widest : PG_ERR_ARG;
}

static int64_t api_mlp(const int64_t *params, int64_t n_params, const int64_t *sizes,
                       const int32_t *act, int64_t n_layers, const int64_t *x, int64_t *out)
{
    arena_t *A = &pg_the_arena;
    if (n_layers < 1 || !sizes || !act || !out || (n_params > 0 && !params) || !x)
        return PG_ERR_ARG;
    int64_t widest = check_mlp_shape(sizes, n_layers, n_params);
    if (widest < 0)
        return widest;
    for (int64_t l = 0; l < n_layers; l++)
        if (!act_ok(act[l]))
            return PG_ERR_ARG;
    /* Scratch: neuron children, and two layers of activations. */
    uint32_t *children = pg_scratch(A, (4 * (size_t)widest + 1) * sizeof *children);
    if (!children)
        return PG_ERR_NOMEM;
    uint32_t *in = children + 2 * widest + 1, *next = in + widest;
    const uint32_t *p_s;
    int stateful;
    int64_t rc = pg_lookup_params(A, params, (size_t)n_params, &p_s, &stateful);
    if (rc == PG_OK && !pg_lookup_all(A, x, sizes[0], in))
        rc = PG_ERR_HANDLE;
    if (rc < 0)
        return rc;
    stateful = stateful || pg_any_stateful(A, in, (size_t)sizes[0]);
    rc = pg_nursery_reserve(A, (size_t)sizes[n_layers]);
    const uint32_t *w = p_s;
    for (int64_t l = 0; rc == PG_OK && l < n_layers; l++) {
        uint32_t nin = (uint32_t)sizes[l], nout = (uint32_t)sizes[l + 1];
        const uint32_t *b = w + (size_t)nin * nout;
        rc = build_layer(A, w, b, in, nin, nout, act[l], children, next);
        if (l > 0) /* the inputs were this call's own: now their parents hold them */
            release_slots(A, in, nin);
        w = b + nout;
        uint32_t *swap = in;
        in = next;
        next = swap;
    }
    for (int64_t j = 0; rc == PG_OK && j < sizes[n_layers]; j++)
        out[j] = handle_of(A, in[j]);
    return pg_hand_out(A, rc, out, (size_t)sizes[n_layers], stateful);
}

int64_t pg_layer(const int64_t *w, const int64_t *b, const int64_t *x, int64_t nin,
                 int64_t nout, int32_t act, int64_t *out)
{
    PG_LOCKED(api_layer(w, b, x, nin, nout, act, out));
}

int64_t pg_mlp(const int64_t *params, int64_t n_params, const int64_t *sizes,
               const int32_t *act, int64_t n_layers, const int64_t *x, int64_t *out)
{
    PG_LOCKED(api_mlp(params, n_params, sizes, act, n_layers, x, out));
}
