/* Neural-network kernels: micrograd's Neuron, Layer and MLP forward, each one
 * call, as DOT nodes (b + w.x summed in micrograd's order) and RELU nodes. */
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* One neuron over kids = (b, w[0..nin), x[0..nin)): DOT, then RELU if asked. */
static int64_t make_neuron(arena_t *A, const uint32_t *kids, uint32_t nin, int relu,
                           uint32_t *slot)
{
    uint32_t dot;
    int64_t h = pg_make_op(A, PG_OP_DOT, kids, 2 * nin + 1, 0.0, 0, &dot);
    if (h < 0 || !relu) {
        if (slot)
            *slot = dot;
        return h;
    }
    return pg_drop_temporary(A, dot, pg_make_op(A, PG_OP_RELU, &dot, 1, 0.0, 0, slot));
}

static void release_slots(arena_t *A, const uint32_t *slots, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        pg_node_release(A, slots[i]);
}

/* out[j] = neuron j over inputs x (all slots validated), each out[j] with one
 * external reference.  All or nothing: on error, nothing made survives.
 * `kids` is scratch for 2 * nin + 1 slots. */
static int64_t build_layer(arena_t *A, const uint32_t *w, const uint32_t *b, const uint32_t *x,
                           uint32_t nin, uint32_t nout, int relu, uint32_t *kids, uint32_t *out)
{
    memcpy(kids + 1 + nin, x, (size_t)nin * sizeof *kids);
    for (uint32_t j = 0; j < nout; j++) {
        kids[0] = b[j];
        memcpy(kids + 1, w + (size_t)j * nin, (size_t)nin * sizeof *kids);
        int64_t h = make_neuron(A, kids, nin, relu, &out[j]);
        if (h < 0) {
            release_slots(A, out, j);
            return h;
        }
    }
    return PG_OK;
}

static int size_ok(int64_t n) { return n >= 0 && 2 * n + 1 <= (int64_t)MAX_SLOTS; }

/* --- validated parameters ----------------------------------------------------
 * A training loop calls pg_mlp once per sample with the same parameter
 * handles, and validating them all (range, generation, liveness, and whether
 * any is stateful) every time costs about what the neurons' arithmetic does.
 * So the last few sets validated are kept with the arena's `mutations` count
 * of the time: while no node has been freed or made stateful since, the same
 * handles (compared with memcmp) are still valid, name the same slots, and
 * are still all stateless or not. */

#define PARAM_SETS 4

typedef struct {
    int64_t *handles; /* a copy of the set */
    uint32_t *slots;  /* their slots */
    size_t count, capacity;
    uint64_t mutations; /* A->mutations when validated */
    int stateful;       /* any of them is */
    int valid;
} param_set_t;

static param_set_t param_sets[PARAM_SETS];
static unsigned param_sets_next;

static int same_set(const arena_t *A, const param_set_t *set, const int64_t *handles, size_t count)
{
    return set->valid && set->count == count && set->mutations == A->mutations &&
           memcmp(set->handles, handles, count * sizeof *handles) == 0;
}

/* The slots of handles[0..count) and whether any is stateful: from a set
 * validated before, or validated now (and kept).  PG_OK, PG_ERR_HANDLE if
 * one is bad, PG_ERR_NOMEM.  *slots stays valid until the arena unlocks. */
static int64_t lookup_params(arena_t *A, const int64_t *handles, size_t count,
                             const uint32_t **slots, int *stateful)
{
    for (unsigned i = 0; i < PARAM_SETS; i++)
        if (same_set(A, &param_sets[i], handles, count)) {
            *slots = param_sets[i].slots;
            *stateful = param_sets[i].stateful;
            return PG_OK;
        }
    param_set_t *set = &param_sets[param_sets_next++ % PARAM_SETS];
    set->valid = 0;
    if (count > set->capacity) {
        int64_t *h = realloc(set->handles, count * sizeof *h);
        if (h)
            set->handles = h;
        uint32_t *s = realloc(set->slots, count * sizeof *s);
        if (s)
            set->slots = s;
        if (!h || !s)
            return PG_ERR_NOMEM;
        set->capacity = count;
    }
    if (!pg_lookup_all(A, handles, (int64_t)count, set->slots))
        return PG_ERR_HANDLE;
    if (count) /* (handles may be NULL then) */
        memcpy(set->handles, handles, count * sizeof *handles);
    set->count = count;
    set->mutations = A->mutations;
    set->stateful = pg_any_stateful(A, set->slots, count);
    set->valid = 1;
    *slots = set->slots;
    *stateful = set->stateful;
    return PG_OK;
}

static int64_t api_layer(const int64_t *w, const int64_t *b, const int64_t *x, int64_t nin,
                         int64_t nout, int32_t relu, int64_t *out)
{
    arena_t *A = &pg_the_arena;
    if (!size_ok(nin) || !size_ok(nout) || !size_ok(nin * nout) ||
        (nout > 0 && (!b || !out)) || (nin > 0 && (!x || (nout > 0 && !w))))
        return PG_ERR_ARG;
    /* Scratch: neuron children, then the slots of x and out. */
    uint32_t *kids = pg_scratch(A, (3 * (size_t)nin + 1 + (size_t)nout) * sizeof *kids);
    if (!kids)
        return PG_ERR_NOMEM;
    uint32_t *x_s = kids + 2 * nin + 1, *out_s = x_s + nin;
    const uint32_t *w_s, *b_s;
    int w_stateful, b_stateful;
    int64_t rc = lookup_params(A, w, (size_t)(nin * nout), &w_s, &w_stateful);
    if (rc == PG_OK)
        rc = lookup_params(A, b, (size_t)nout, &b_s, &b_stateful);
    if (rc == PG_OK && !pg_lookup_all(A, x, nin, x_s))
        rc = PG_ERR_HANDLE;
    if (rc == PG_OK)
        rc = pg_nursery_reserve(A, (size_t)nout);
    if (rc == PG_OK)
        rc = build_layer(A, w_s, b_s, x_s, (uint32_t)nin, (uint32_t)nout, relu, kids, out_s);
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
                       const int32_t *relu, int64_t n_layers, const int64_t *x, int64_t *out)
{
    arena_t *A = &pg_the_arena;
    if (n_layers < 1 || !sizes || !relu || !out || (n_params > 0 && !params) || !x)
        return PG_ERR_ARG;
    int64_t widest = check_mlp_shape(sizes, n_layers, n_params);
    if (widest < 0)
        return widest;
    /* Scratch: neuron children, and two layers of activations. */
    uint32_t *kids = pg_scratch(A, (4 * (size_t)widest + 1) * sizeof *kids);
    if (!kids)
        return PG_ERR_NOMEM;
    uint32_t *in = kids + 2 * widest + 1, *next = in + widest;
    const uint32_t *p_s;
    int stateful;
    int64_t rc = lookup_params(A, params, (size_t)n_params, &p_s, &stateful);
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
        rc = build_layer(A, w, b, in, nin, nout, relu[l] != 0, kids, next);
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
                 int64_t nout, int32_t relu, int64_t *out)
{
    PG_LOCKED(api_layer(w, b, x, nin, nout, relu, out));
}

int64_t pg_mlp(const int64_t *params, int64_t n_params, const int64_t *sizes,
               const int32_t *relu, int64_t n_layers, const int64_t *x, int64_t *out)
{
    PG_LOCKED(api_mlp(params, n_params, sizes, relu, n_layers, x, out));
}
