/* Replaying a tape.  A plan is made once from the tape's recorded order (on
 * the first replay) and run every step: forward recomputes every node from
 * its children, backward zeroes every grad of the tape and backpropagates
 * from the root, bit for bit as the eager graph would.
 *
 * Leaves do nothing in either direction, so the plan holds only the other
 * nodes.  Leaves the caller asked to skip (pg_tape_skip_grads: fed-in data)
 * get no gradient: a DOT whose inputs x are all such leaves runs a backward
 * that only reaches its weights and bias, and whatever else reached them is
 * zeroed again at the end. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct pg_plan {
    uint32_t *nodes;       /* the tape's nodes that are not leaves, children first */
    uint8_t *no_x_grad;    /* per node: a DOT whose inputs x get no gradient */
    uint32_t n_nodes;
    uint32_t *grads;       /* every node of the tape: backward zeroes their grads */
    uint32_t n_grads;
    uint32_t *skip;        /* leaves whose grad is left at 0 */
    uint32_t n_skip;
    uint32_t root;
};

void pg_plan_free(pg_plan *plan)
{
    if (!plan)
        return;
    free(plan->nodes);
    free(plan->no_x_grad);
    free(plan->grads);
    free(plan->skip);
    free(plan);
}

/* 1 if every input x of DOT node n is marked (A->mark == skipped). */
static int inputs_all_skipped(const arena_t *A, uint32_t n, uint32_t skipped)
{
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *x = children_of(A, n) + 1 + m;
    for (uint32_t i = 0; i < m; i++)
        if (A->mark[x[i]] != skipped)
            return 0;
    return m > 0;
}

int64_t pg_plan_build(arena_t *A, const uint32_t *order, uint32_t count, const uint32_t *skip,
                      uint32_t n_skip, pg_plan **out)
{
    pg_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return PG_ERR_NOMEM;
    size_t n = count ? count : 1;
    plan->nodes = malloc(n * sizeof *plan->nodes);
    plan->no_x_grad = malloc(n);
    plan->grads = malloc(n * sizeof *plan->grads);
    plan->skip = malloc((n_skip ? n_skip : 1) * sizeof *plan->skip);
    if (!plan->nodes || !plan->no_x_grad || !plan->grads || !plan->skip) {
        pg_plan_free(plan);
        return PG_ERR_NOMEM;
    }
    memcpy(plan->grads, order, (size_t)count * sizeof *order);
    if (n_skip) /* skip may be NULL then, which memcpy must not be given */
        memcpy(plan->skip, skip, (size_t)n_skip * sizeof *skip);
    plan->n_grads = count;
    plan->n_skip = n_skip;
    plan->root = order[count - 1];
    const uint32_t skipped = pg_new_epoch(A);
    for (uint32_t i = 0; i < n_skip; i++)
        A->mark[skip[i]] = skipped;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t s = order[i];
        if (A->op[s] == PG_OP_LEAF)
            continue;
        plan->no_x_grad[plan->n_nodes] =
            n_skip && A->op[s] == PG_OP_DOT && inputs_all_skipped(A, s, skipped);
        plan->nodes[plan->n_nodes++] = s;
    }
    *out = plan;
    return PG_OK;
}

int64_t pg_plan_forward(arena_t *A, const pg_plan *plan)
{
    for (uint32_t i = 0; i < plan->n_nodes; i++) {
        int64_t rc = op_forward(A, plan->nodes[i]);
        if (rc < 0)
            return rc;
    }
    return PG_OK;
}

/* DOT's backward without the grads into its inputs x. */
static void dot_backward_weights(arena_t *A, uint32_t n)
{
    const uint32_t *k = children_of(A, n);
    uint32_t m = (A->arity[n] - 1) / 2;
    const uint32_t *w = k + 1, *x = k + 1 + m;
    double *G = A->grad;
    const double *D = A->data;
    G[k[0]] += G[n];
    for (uint32_t i = 0; i < m; i++)
        G[w[i]] += D[x[i]] * G[n];
}

int64_t pg_plan_backward(arena_t *A, const pg_plan *plan)
{
    double *G = A->grad;
    for (uint32_t i = 0; i < plan->n_grads; i++)
        G[plan->grads[i]] = 0.0;
    G[plan->root] = 1.0;
    for (uint32_t i = plan->n_nodes; i-- > 0;) {
        uint32_t s = plan->nodes[i];
        if (plan->no_x_grad[i]) {
            dot_backward_weights(A, s);
            continue;
        }
        int64_t rc = op_backward(A, s);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < plan->n_skip; i++)
        G[plan->skip[i]] = 0.0;
    return PG_OK;
}
