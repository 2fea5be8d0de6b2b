/* Optimizers: one call updates every parameter, with PyTorch's formulas. */
#include <math.h>
#include <stdlib.h>

#include "arena.h"

/* Validate every parameter handle before touching any: all or nothing (and
 * once for the same parameters step after step: pg_lookup_params). */
static int64_t param_slots(arena_t *A, const int64_t *params, int64_t count,
                           const uint32_t **slots)
{
    if (count < 0 || (count > 0 && !params))
        return PG_ERR_ARG;
    int stateful;
    return pg_lookup_params(A, params, (size_t)count, slots, &stateful);
}

static int64_t zero_grad(arena_t *A, const int64_t *params, int64_t count)
{
    const uint32_t *slots;
    int64_t rc = param_slots(A, params, count, &slots);
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < count; i++)
        A->grad[slots[i]] = 0.0;
    return PG_OK;
}

static int64_t sgd_step(arena_t *A, const int64_t *params, double *velocity, int64_t count,
                        double lr, double momentum, double weight_decay)
{
    if (momentum != 0.0 && count > 0 && !velocity)
        return PG_ERR_ARG;
    const uint32_t *slots;
    int64_t rc = param_slots(A, params, count, &slots);
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < count; i++) {
        uint32_t p = slots[i];
        double g = A->grad[p];
        if (weight_decay != 0.0)
            g = g + weight_decay * A->data[p];
        if (momentum != 0.0) {
            velocity[i] = momentum * velocity[i] + g;
            g = velocity[i];
        }
        A->data[p] -= lr * g;
    }
    A->data_writes++;
    return PG_OK;
}

static int64_t adam_step(arena_t *A, const int64_t *params, double *m, double *v, int64_t count,
                         int64_t t, double lr, double beta1, double beta2, double eps,
                         double weight_decay)
{
    if (t < 1 || (count > 0 && (!m || !v)))
        return PG_ERR_ARG;
    const uint32_t *slots;
    int64_t rc = param_slots(A, params, count, &slots);
    if (rc < 0)
        return rc;
    double bias_correction1 = 1.0 - pow(beta1, (double)t);
    double bias_correction2_sqrt = sqrt(1.0 - pow(beta2, (double)t));
    double step_size = lr / bias_correction1;
    for (int64_t i = 0; i < count; i++) {
        uint32_t p = slots[i];
        double g = A->grad[p];
        if (weight_decay != 0.0)
            g = g + weight_decay * A->data[p];
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        double denom = sqrt(v[i]) / bias_correction2_sqrt + eps;
        A->data[p] -= step_size * (m[i] / denom);
    }
    A->data_writes++;
    return PG_OK;
}

int64_t pg_zero_grad(const int64_t *params, int64_t count)
{
    PG_LOCKED(zero_grad(&pg_the_arena, params, count));
}

int64_t pg_sgd_step(const int64_t *params, double *velocity, int64_t count, double lr,
                    double momentum, double weight_decay)
{
    PG_LOCKED(sgd_step(&pg_the_arena, params, velocity, count, lr, momentum, weight_decay));
}

int64_t pg_adam_step(const int64_t *params, double *m, double *v, int64_t count, int64_t t,
                     double lr, double beta1, double beta2, double eps, double weight_decay)
{
    PG_LOCKED(adam_step(&pg_the_arena, params, m, v, count, t, lr, beta1, beta2, eps,
                        weight_decay));
}
