/* pygrad C API: the single source of truth.
 *
 * cffi's cdef is this file run through the C preprocessor (csrc/build.py), so
 * it holds only what cffi's parser accepts once macros are expanded: no
 * #include, fixed-width types, constants as enums.  The .c files include
 * <stdint.h> before it.
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
    PG_CUSTOM_OPS = -10    /* the graph holds custom ops: use a tape */
};

/* Handles carry the slot in their high bits: slot = handle >> PG_GEN_BITS.
 * Once the Python layer is on (pg_python_layer), a call that hands out handles
 * returns PG_PENDING + result, PG_PENDING being -(2 ** PG_PENDING_SHIFT), when
 * the Python layer has work to do first (see "the Python layer" below). */
enum pg_layout {
    PG_GEN_BITS = 10,
    PG_PENDING_SHIFT = 60,
    PG_SWEEP_EVERY = 2048     /* handles in the nursery that make a sweep due */
};

/* The op table: every node's op tag, in one place (an X-macro, as Lua's
 * lopcodes.h).  X(TAG, name, op):
 *   TAG   the tag, PG_OP_TAG (pg_op);
 *   name  for a computed op, csrc/ops.h's name_forward and name_backward
 *         compute it; for a unary op, pg_name makes it and Value.name calls that;
 *   op    micrograd's _op string (pg_op_name).
 * A unary op is one row of PG_UNARY_OPS, its forward and backward in ops.h, its
 * Value method (and its stub) and its test: the switches, pg_<name>, the Python
 * op names and the tests' lists of ops all come from here.
 *
 * cffi cannot read macros, so csrc/build.py gives it this header run through
 * the C preprocessor: what it sees is the expanded enum and declarations. */
#define PG_UNARY_OPS(X)                 \
    X(RELU, relu, "ReLU")               \
    X(TANH, tanh, "tanh")               \
    X(EXP, exp, "exp")                  \
    X(LOG, log, "log")                  \
    X(SIGMOID, sigmoid, "sigmoid")

#define PG_COMPUTED_OPS(X)                                                  \
    X(ADD, add, "+")                /* a + b */                             \
    X(MUL, mul, "*")                /* a * b */                             \
    X(POW_CONST, pow_const, "**")   /* a ** k, k the node's exponent */     \
    X(POW, pow, "**")               /* a ** b, b a Value */                 \
    PG_UNARY_OPS(X)                                                         \
    X(DOT, dot, "dot")              /* b + w[0]*x[0] + ...: a neuron, */    \
                                    /* children (b, w..., x...) */

#define PG_OPS(X)                                                           \
    X(FREE, free, "")               /* a slot on the free list */           \
    X(LEAF, leaf, "")               /* Value(x) */                          \
    X(CUSTOM, custom, "")           /* value given, backward in Python */   \
    PG_COMPUTED_OPS(X)

#define PG_OP_TAG(TAG, name, op) PG_OP_##TAG,
enum pg_op { PG_OPS(PG_OP_TAG) PG_OP_COUNT };
#undef PG_OP_TAG

/* Activations of pg_layer and pg_mlp: the node each neuron's DOT node goes
 * through, computed as pg_relu, pg_tanh and pg_sigmoid compute it. */
enum pg_activation {
    PG_ACT_LINEAR = 0,  /* none: the neuron is its DOT node */
    PG_ACT_RELU = 1,
    PG_ACT_TANH = 2,
    PG_ACT_SIGMOID = 3
};

/* Node flags (pg_flags). */
enum pg_flag {
    PG_FLAG_INT_EXPONENT = 1,   /* POW_CONST's exponent was a Python int: '**2', not '**2.0' */
    PG_FLAG_BOOL_EXPONENT = 2   /* ... a bool: '**True' */
};

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
#define PG_UNARY_DECLARATION(TAG, name, op) int64_t pg_##name(int64_t a);
PG_UNARY_OPS(PG_UNARY_DECLARATION)                 /* pg_relu(a), pg_tanh(a), ... */
#undef PG_UNARY_DECLARATION
/* A whole layer of micrograd Neurons in one call: for j < nout,
 *   out[j] = act(b[j] + w[j*nin + 0]*x[0] + ... + w[j*nin + nin-1]*x[nin-1])
 * as DOT nodes (and RELU, TANH or SIGMOID nodes over them, by act, a
 * pg_activation).  Nothing is made unless every handle and act are valid. */
int64_t pg_layer(const int64_t *w, const int64_t *b, const int64_t *x, int64_t nin,
                 int64_t nout, int32_t act, int64_t *out);
/* A whole MLP on one input x[0..sizes[0]): layer l maps sizes[l] inputs to
 * sizes[l+1] outputs with parameters laid out layer after layer as its weights
 * (row-major, sizes[l+1] x sizes[l]) then its biases, n_params in all; act[l]
 * is layer l's pg_activation.  out[0..sizes[n_layers]) receives the last layer's
 * outputs; inner layers' nodes get no handles (their parents hold them). */
int64_t pg_mlp(const int64_t *params, int64_t n_params, const int64_t *sizes,
               const int32_t *act, int64_t n_layers, const int64_t *x, int64_t *out);
/* A custom op: value `data`, children[0..count), backward run by the caller. */
int64_t pg_custom_node(double data, const int64_t *children, int64_t count);
/* Hand an existing node's backward to the caller: backward() stops at it as at
 * a custom op (pg_node_backward still runs its built-in step). */
int64_t pg_set_custom_backward(int64_t h);

/* --- references -------------------------------------------------------------
 * A node lives while it has an external reference (a handle held by the
 * caller) or a parent.  pg_release refuses a release it was not owed; if
 * the nursery holds h for the calling thread's latest call, that is the
 * reference released. */
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
const char *pg_op_name(int64_t op);          /* micrograd's _op string for a tag; NULL if none */
int64_t pg_flags(int64_t h);
double pg_exponent(int64_t h);                  /* POW_CONST's exponent */
int64_t pg_child_count(int64_t h);
int64_t pg_child_retain(int64_t h, int64_t i);  /* i-th child, one reference to the caller */
int64_t pg_internal_refs(int64_t h);           /* references from parents and tapes */
int64_t pg_external_refs(int64_t h);           /* references from pg_retain / new nodes */

/* --- backward ------------------------------------------------------------- */
/* Set root.grad = 1 and run every node's local backward in reverse topological
 * order (+= into children).  PG_CUSTOM_OPS, with nothing changed, if the graph
 * holds custom ops: record a tape and use pg_tape_backward instead. */
int64_t pg_backward(int64_t root);
/* One node's built-in local backward step (micrograd's v._backward()); a
 * custom op has none: PG_OK, nothing done. */
int64_t pg_node_backward(int64_t h);

/* --- tapes: a recorded topological order, holding a reference to each node -- */
int64_t pg_tape_record(int64_t root);           /* tape id */
int64_t pg_tape_free(int64_t tape);
/* A tape a Python object owns: Python makes the struct (ffi.new zeroes it) and
 * hands it to a gc object whose destructor is pg_tape_ref_clear *before* the
 * call that records into it, so that no interrupt between the two loses it. */
typedef struct pg_tape_ref { int64_t recorded; int64_t tape; } pg_tape_ref;
int64_t pg_tape_record_into(pg_tape_ref *ref, int64_t root); /* pg_tape_record's result */
void pg_tape_ref_clear(pg_tape_ref *ref);       /* frees its tape, if it holds one */
int64_t pg_tape_length(int64_t tape);
int64_t pg_tape_node(int64_t tape, int64_t i);  /* handle at position i (root is last) */
/* Run local backward steps for positions end-1, end-2, ... down to 0, stopping
 * at a custom op.  Returns 0 when done, or p > 0: position p-1 is a custom op
 * whose backward the caller runs before resuming with end = p-1. */
int64_t pg_tape_backward(int64_t tape, int64_t end);
int64_t pg_tape_custom_ops(int64_t tape);      /* how many custom-op nodes it holds */
/* Replay: recompute every node's value from its children (leaves first), or
 * zero every grad and backpropagate from the root.  One call each; both
 * return PG_CUSTOM_OPS for a tape with custom ops, which cannot be replayed. */
int64_t pg_tape_forward(int64_t tape);
int64_t pg_tape_replay_backward(int64_t tape);
/* Replay without gradients into fed-in data: the leaves among
 * handles[0..count) that are on the tape (its root excepted) get none from
 * pg_tape_replay_backward, which leaves their grad at 0.  Replaces any set
 * given before; returns how many leaves it holds. */
int64_t pg_tape_skip_grads(int64_t tape, const int64_t *handles, int64_t count);
/* How many dense groups (a neuron's DOT nodes across samples: a layer over
 * a batch, run as batched kernels) the tape's replay runs; plans the replay
 * if it was not yet. */
int64_t pg_tape_groups(int64_t tape);
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

/* --- grad mode ------------------------------------------------------------
 * New nodes record their children unless the calling thread holds an active
 * no_grad token; then they are leaves.  A token starts inactive, so that the
 * caller can hand it to a gc object before it matters; releasing an active
 * token (from any thread) turns recording back on for the thread that started
 * it, once all of that thread's tokens are released. */
typedef struct pg_grad_off pg_grad_off;
pg_grad_off *pg_grad_off_new(void);            /* NULL when out of memory */
int64_t pg_grad_off_start(pg_grad_off *token); /* in the thread that made it */
void pg_grad_off_release(pg_grad_off *token);  /* deactivates and frees */
int64_t pg_grad_recording(void);               /* 1 if the calling thread records */

/* --- the Python layer ------------------------------------------------------
 * (pygrad/_lifetime.py.)  pg_python_layer(1) turns on what it needs.  Every
 * handle a call then hands out (constructors, pg_child_retain) comes with an
 * external reference that a *nursery* holds until the Python layer's next
 * sweep.  A sweep (pg_sweep_begin, then pg_sweep_end) says which handles
 * Python kept -- their references become its Values' own -- and which it
 * dropped; the nursery releases the rest, handles lost on their way to a
 * Value (to an exception a signal handler raised right after the call),
 * except those of each thread's latest call, whose Values may not exist yet.
 * Results are PG_PENDING-flagged when a sweep is due, and when a call gave a
 * parent or a tape to a stateful node (pg_set_stateful): its Python state
 * must then outlive its Values. */
int64_t pg_python_layer(int64_t on);        /* returns the old setting */
/* Begin a sweep: returns how many nursery handles are not in flight. */
int64_t pg_sweep_begin(void);
/* End it: kept[] and dropped[] (both reordered) are handles of the Values
 * Python looked at; returns how many references were released. */
int64_t pg_sweep_end(int64_t *kept, int64_t n_kept, int64_t *dropped, int64_t n_dropped);
int64_t pg_set_stateful(int64_t h);         /* returns its parent and tape references */


/* --- bookkeeping ---------------------------------------------------------- */
int64_t pg_live_nodes(void);
int64_t pg_slots_in_use(void);                  /* every live node's slot is below this */
int64_t pg_set_node_limit(int64_t limit);       /* returns the old limit; 0 = none */
