/* pygrad C API: the single source of truth.
 *
 * cffi's cdef parses this file verbatim (csrc/build.py), so it holds only what
 * cffi's parser accepts: no #include, no #ifdef, fixed-width types.  The .c
 * files include <stdint.h> before it.
 *
 * A node is named by a handle: a slot index and a generation.  Every function
 * validates the handles it is given and returns a negative pg_status instead of
 * touching memory it should not.  Functions that make a node return its handle
 * (>= 0) with one external reference owned by the caller; pg_release gives it
 * back.
 * All functions are thread-safe: one lock guards the arena.
 */

enum pg_status {
    PG_OK = 0,
    PG_ERR_HANDLE = -1,    /* stale, freed or out-of-range node handle */
    PG_ERR_NOMEM = -2,     /* out of memory, or the node limit was reached */
    PG_ERR_ZERODIV = -3,   /* 0.0 raised to a negative power */
    PG_ERR_OVERFLOW = -4,  /* pow result out of range */
    PG_ERR_COMPLEX = -5,   /* negative base, non-integer exponent */
    PG_ERR_RANGE = -6,     /* exp result out of range (math range error) */
    PG_ERR_DOMAIN = -7,    /* log of a number <= 0 (math domain error) */
    PG_ERR_ARG = -8,       /* bad argument: index, count or size */
    PG_ERR_TAPE = -9,      /* stale or unknown tape */
    PG_NEED_PYTHON = -10   /* the graph holds custom ops: use a tape */
};

/* Op tags.  Forward and backward are a switch on these (csrc/ops.c). */
enum pg_op {
    PG_OP_FREE = 0,     /* slot on the free list */
    PG_OP_LEAF = 1,     /* Value(x) */
    PG_OP_ADD = 2,      /* a + b */
    PG_OP_MUL = 3,      /* a * b */
    PG_OP_POW = 4,      /* a ** k, k a constant (the node's exponent) */
    PG_OP_POWV = 5,     /* a ** b, b a Value */
    PG_OP_RELU = 6,
    PG_OP_TANH = 7,
    PG_OP_EXP = 8,
    PG_OP_LOG = 9,
    PG_OP_SIGMOID = 10,
    PG_OP_PYTHON = 11,  /* custom op: value given, backward is a Python callable */
    PG_OP_DOT = 12      /* b + w[0]*x[0] + ... : a neuron, children (b, w..., x...) */
};

/* Node flags (pg_flags). */
#define PG_FLAG_INT_EXPONENT 1   /* POW exponent was a Python int: '**2', not '**2.0' */
#define PG_FLAG_BOOL_EXPONENT 2  /* ... a bool: '**True' */

/* --- making nodes --------------------------------------------------------- */
int64_t pg_leaf(double data);
int64_t pg_add(int64_t a, int64_t b);
int64_t pg_mul(int64_t a, int64_t b);
int64_t pg_add_const(int64_t a, double k);       /* a + Value(k) */
int64_t pg_mul_const(int64_t a, double k);       /* a * Value(k) */
int64_t pg_sub(int64_t a, int64_t b);            /* a + (b * -1), as micrograd builds it */
int64_t pg_rsub_const(int64_t a, double k);      /* (a * -1) + Value(k): k - a */
int64_t pg_div(int64_t a, int64_t b);            /* a * b**-1 */
int64_t pg_rdiv_const(int64_t a, double k);      /* (a ** -1) * Value(k): k / a */
int64_t pg_pow_const(int64_t a, double k, int32_t flags);
int64_t pg_pow(int64_t a, int64_t b);            /* a ** b, b a Value */
int64_t pg_rpow_const(int64_t b, double k);      /* Value(k) ** b */
int64_t pg_relu(int64_t a);
int64_t pg_tanh(int64_t a);
int64_t pg_exp(int64_t a);
int64_t pg_log(int64_t a);
int64_t pg_sigmoid(int64_t a);
/* A whole layer of micrograd Neurons in one call: for j < nout,
 *   out[j] = relu?(b[j] + w[j*nin + 0]*x[0] + ... + w[j*nin + nin-1]*x[nin-1])
 * as DOT nodes (and RELU nodes over them when relu != 0).  Nothing is made
 * unless every handle is valid. */
int64_t pg_layer(const int64_t *w, const int64_t *b, const int64_t *x, int64_t nin,
                 int64_t nout, int32_t relu, int64_t *out);
/* A whole MLP on one input x[0..sizes[0]): layer l maps sizes[l] inputs to
 * sizes[l+1] outputs with parameters laid out layer after layer as its weights
 * (row-major, sizes[l+1] x sizes[l]) then its biases, n_params in all; relu[l]
 * != 0 for a ReLU layer.  out[0..sizes[n_layers]) receives the last layer's
 * outputs; inner layers' nodes get no handles (their parents hold them). */
int64_t pg_mlp(const int64_t *params, int64_t n_params, const int64_t *sizes,
               const int32_t *relu, int64_t n_layers, const int64_t *x, int64_t *out);
/* A custom op: value `data`, children[0..count), backward run by the caller. */
int64_t pg_python_node(double data, const int64_t *children, int64_t count);
/* Turn an existing node into a custom op (its backward becomes the caller's). */
int64_t pg_make_python(int64_t h);

/* --- references -------------------------------------------------------------
 * A node lives while it has an external reference (a handle held by the
 * caller) or a parent.  pg_release refuses a release it was not owed. */
int64_t pg_retain(int64_t h);
int64_t pg_release(int64_t h);
/* Release many handles at once; returns how many were refused (bad or unowed). */
int64_t pg_release_many(const int64_t *handles, int64_t count);

/* --- reading and writing nodes -------------------------------------------- */
/* Getters return NaN for a bad handle; pg_valid tells the two NaNs apart. */
double pg_data(int64_t h);
double pg_grad(int64_t h);
int64_t pg_set_data(int64_t h, double value);
int64_t pg_set_grad(int64_t h, double value);
/* data of handles[i] = values[i] for i < count: all or nothing. */
int64_t pg_set_data_many(const int64_t *handles, const double *values, int64_t count);
int64_t pg_valid(int64_t h);                    /* 1 live, 0 not */
int64_t pg_op(int64_t h);                       /* a pg_op tag */
int64_t pg_flags(int64_t h);
double pg_exponent(int64_t h);                  /* POW's constant exponent */
int64_t pg_child_count(int64_t h);
int64_t pg_child_retain(int64_t h, int64_t i);  /* i-th child, one reference to the caller */
int64_t pg_parent_refs(int64_t h);             /* references from parents and tapes */
int64_t pg_external_refs(int64_t h);           /* references from pg_retain / new nodes */

/* --- backward ------------------------------------------------------------- */
/* Set root.grad = 1 and run every node's local backward in reverse topological
 * order (+= into children).  PG_NEED_PYTHON, with nothing changed, if the graph
 * holds custom ops: record a tape and use pg_tape_backward instead. */
int64_t pg_backward(int64_t root);
/* One node's local backward step (micrograd's v._backward()). */
int64_t pg_node_backward(int64_t h);

/* --- tapes: a recorded topological order, holding a reference to each node -- */
int64_t pg_tape_record(int64_t root);           /* tape id */
int64_t pg_tape_free(int64_t tape);
int64_t pg_tape_length(int64_t tape);
int64_t pg_tape_node(int64_t tape, int64_t i);  /* handle at position i (root is last) */
/* Run local backward steps for positions end-1, end-2, ... down to 0, stopping
 * at a custom op.  Returns 0 when done, or p > 0: position p-1 is a custom op
 * whose backward the caller runs before resuming with end = p-1. */
int64_t pg_tape_backward(int64_t tape, int64_t end);
int64_t pg_tape_custom_ops(int64_t tape);      /* how many custom-op nodes it holds */
/* Replay: recompute every node's value from its children (leaves first), or
 * zero every grad and backpropagate from the root.  One call each; both
 * return PG_NEED_PYTHON for a tape with custom ops, which cannot be replayed. */
int64_t pg_tape_forward(int64_t tape);
int64_t pg_tape_replay_backward(int64_t tape);
/* First position where two tapes differ (op, arity, exponent or value, bit
 * for bit); their common length if none does. */
int64_t pg_tape_diff(int64_t a, int64_t b);

/* --- optimizers: one call updates every parameter --------------------------
 * Nothing is changed unless every handle is valid.  State arrays (velocity,
 * m, v) hold one double per parameter and belong to the caller. */
int64_t pg_zero_grad(const int64_t *params, int64_t count);
/* PyTorch's SGD: g = grad + wd*data; v = momentum*v + g; data -= lr * v
 * (the wd and momentum terms are skipped when 0: then data -= lr * grad). */
int64_t pg_sgd_step(const int64_t *params, double *velocity, int64_t count, double lr,
                    double momentum, double weight_decay);
/* Adam (Kingma & Ba; PyTorch's formulas) at step t >= 1. */
int64_t pg_adam_step(const int64_t *params, double *m, double *v, int64_t count, int64_t t,
                     double lr, double beta1, double beta2, double eps, double weight_decay);

/* --- bookkeeping ---------------------------------------------------------- */
/* Whether new nodes record their children (1) or are leaves (0: no_grad), for
 * the calling thread.  Returns the previous setting. */
int64_t pg_set_grad_enabled(int64_t enabled);
int64_t pg_live_nodes(void);
int64_t pg_set_node_limit(int64_t limit);       /* returns the old limit; 0 = none */
/* Copies up to `cap` handles of freed custom-op nodes into out; returns how many. */
int64_t pg_take_freed_python(int64_t *out, int64_t cap);
