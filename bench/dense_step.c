/* One dense MLP training step written by hand in plain C: the reference that
   bench/bench.py measures pygrad's Replay against ("how fast is this step when
   the layers are dense loops over contiguous memory?").

   The maths is the bench's: an MLP of Linear layers (ReLU on all but the last),
   a loss over the batch, plus alpha * (sum of every parameter squared), then
   plain SGD, p -= lr * dloss/dp.  Two losses:
     DENSE_SVM    one output s per sample, label y = -1 or +1:
                  mean over the batch of relu(1 - y * s)   (micrograd's demo)
     DENSE_HINGE  nout scores s per sample, one-hot row o:
                  t = sum_k o_k * s_k,
                  mean over the batch of sum_j (1 - o_j) * relu(1 + s_j - t)
   dense_step() returns the loss of the parameters it was given (before the
   update), as pygrad's forward() does.

   Layouts:
     params   pygrad's parameters() order: layer by layer, neuron by neuron,
              w[0..nin-1] then b, so a row is nin + 1 doubles
     x        [batch][nin], one sample after another (as a minibatch comes)
     target   DENSE_SVM: [batch]; DENSE_HINGE: [batch][nout]
     act[l]   layer l's input (act[0]: x, transposed), [features][batch]:
              feature-major, so that every inner loop runs across the batch
              over contiguous memory and the compiler can vectorize it without
              reordering any sample's sums (each neuron's output is summed
              b + w0*x0 + w1*x1 + ..., micrograd's order)
   Gradients into the input x are not computed: nothing reads them.

   Built by bench/dense.py with pygrad's own compiler flags, loaded with cffi. */
#include <stdlib.h>
#include <string.h>

enum { DENSE_SVM = 0, DENSE_HINGE = 1 };

typedef struct dense_net {
    int n_layers, batch, n_params;
    int *sizes;            /* [n_layers + 1] */
    int *relu;             /* [n_layers] */
    size_t *offset;        /* [n_layers]: where layer l's rows start in params */
    double **act;          /* [n_layers + 1] arrays of [sizes[l]][batch] */
    double *grad_out;      /* dloss/d(layer output), [max size][batch] */
    double *grad_in;       /* dloss/d(layer input), [max size][batch] */
    double *grad;          /* dloss/dparams, [n_params], params' layout */
} dense_net;

void dense_free(dense_net *net)
{
    if (net == NULL)
        return;
    if (net->act != NULL)
        for (int l = 0; l <= net->n_layers; l++)
            free(net->act[l]);
    free(net->act);
    free(net->sizes);
    free(net->relu);
    free(net->offset);
    free(net->grad_out);
    free(net->grad_in);
    free(net->grad);
    free(net);
}

dense_net *dense_new(int n_layers, const int *sizes, const int *relu, int batch)
{
    dense_net *net = calloc(1, sizeof *net);
    if (net == NULL)
        return NULL;
    net->n_layers = n_layers;
    net->batch = batch;
    net->sizes = malloc((size_t)(n_layers + 1) * sizeof *net->sizes);
    net->relu = malloc((size_t)n_layers * sizeof *net->relu);
    net->offset = malloc((size_t)n_layers * sizeof *net->offset);
    net->act = calloc((size_t)n_layers + 1, sizeof *net->act);
    if (net->sizes == NULL || net->relu == NULL || net->offset == NULL || net->act == NULL) {
        dense_free(net);
        return NULL;
    }
    int widest = 0;
    for (int l = 0; l <= n_layers; l++) {
        net->sizes[l] = sizes[l];
        widest = sizes[l] > widest ? sizes[l] : widest;
        net->act[l] = malloc((size_t)sizes[l] * batch * sizeof(double));
        if (net->act[l] == NULL) {
            dense_free(net);
            return NULL;
        }
    }
    for (int l = 0; l < n_layers; l++) {
        net->relu[l] = relu[l];
        net->offset[l] = (size_t)net->n_params;
        net->n_params += (sizes[l] + 1) * sizes[l + 1];
    }
    net->grad_out = malloc((size_t)widest * batch * sizeof(double));
    net->grad_in = malloc((size_t)widest * batch * sizeof(double));
    net->grad = malloc((size_t)net->n_params * sizeof(double));
    if (net->grad_out == NULL || net->grad_in == NULL || net->grad == NULL) {
        dense_free(net);
        return NULL;
    }
    return net;
}

/* a . b over n doubles, four partial sums (a reduction the compiler may not
   reorder by itself) */
static double dot(const double *restrict a, const double *restrict b, int n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* out[nout][B] = relu?(b + W in), in is [nin][B], W rows of nin + 1 (bias last) */
static void linear_forward(const double *restrict w, const double *restrict in,
                           double *restrict out, int nin, int nout, int B, int relu)
{
    for (int j = 0; j < nout; j++) {
        const double *row = w + (size_t)j * (nin + 1);
        double *o = out + (size_t)j * B;
        for (int n = 0; n < B; n++)
            o[n] = row[nin];
        for (int i = 0; i < nin; i++) {
            const double wi = row[i];
            const double *x = in + (size_t)i * B;
            for (int n = 0; n < B; n++)
                o[n] += wi * x[n];
        }
        if (relu)
            for (int n = 0; n < B; n++)
                o[n] = o[n] > 0 ? o[n] : 0;
    }
}

/* Given dout = dloss/dout [nout][B] (already through the ReLU), accumulate
   dloss/dW into gw (same layout as w) and, if din != NULL, set
   din = dloss/din [nin][B]. */
static void linear_backward(const double *restrict w, const double *restrict in,
                            const double *restrict dout, double *restrict gw,
                            double *restrict din, int nin, int nout, int B)
{
    if (din != NULL)
        memset(din, 0, (size_t)nin * B * sizeof(double));
    for (int j = 0; j < nout; j++) {
        const double *row = w + (size_t)j * (nin + 1);
        const double *d = dout + (size_t)j * B;
        double *g = gw + (size_t)j * (nin + 1);
        double bias_grad = 0;
        for (int n = 0; n < B; n++)
            bias_grad += d[n];
        g[nin] = bias_grad;
        for (int i = 0; i < nin; i++)
            g[i] = dot(d, in + (size_t)i * B, B);
        if (din != NULL)
            for (int i = 0; i < nin; i++) {
                const double wi = row[i];
                double *dx = din + (size_t)i * B;
                for (int n = 0; n < B; n++)
                    dx[n] += wi * d[n];
            }
    }
}

/* The data loss of scores s [nout][B]; sets ds = dloss/ds [nout][B]. */
static double svm_loss(const double *s, const double *y, double *ds, int B)
{
    const double scale = 1.0 / B;
    double loss = 0;
    for (int n = 0; n < B; n++) {
        const double margin = 1 - y[n] * s[n];
        loss += margin > 0 ? margin : 0;
        ds[n] = margin > 0 ? -y[n] * scale : 0;
    }
    return loss * scale;
}

static double hinge_loss(const double *s, const double *onehot, double *ds, int nout, int B)
{
    const double scale = 1.0 / B;
    double loss = 0;
    for (int n = 0; n < B; n++) {
        const double *o = onehot + (size_t)n * nout;
        double true_score = 0;
        for (int k = 0; k < nout; k++)
            true_score += o[k] * s[(size_t)k * B + n];
        double true_grad = 0;
        for (int j = 0; j < nout; j++) {
            const double margin = 1 + s[(size_t)j * B + n] - true_score;
            const double g = margin > 0 ? (1 - o[j]) * scale : 0;
            loss += margin > 0 ? (1 - o[j]) * margin : 0;
            ds[(size_t)j * B + n] = g;
            true_grad -= g;
        }
        for (int k = 0; k < nout; k++)
            ds[(size_t)k * B + n] += o[k] * true_grad;
    }
    return loss * scale;
}

/* One training step (see the top of this file); returns the loss before the
   update, or -1 for an unknown loss kind. */
double dense_step(dense_net *net, double *params, const double *x, const double *target,
                  int loss_kind, double alpha, double lr)
{
    const int L = net->n_layers, B = net->batch, nin = net->sizes[0];
    for (int n = 0; n < B; n++)
        for (int i = 0; i < nin; i++)
            net->act[0][(size_t)i * B + n] = x[(size_t)n * nin + i];

    for (int l = 0; l < L; l++)
        linear_forward(params + net->offset[l], net->act[l], net->act[l + 1],
                       net->sizes[l], net->sizes[l + 1], B, net->relu[l]);

    double loss;
    if (loss_kind == DENSE_SVM)
        loss = svm_loss(net->act[L], target, net->grad_out, B);
    else if (loss_kind == DENSE_HINGE)
        loss = hinge_loss(net->act[L], target, net->grad_out, net->sizes[L], B);
    else
        return -1;
    double reg = 0;
    for (int p = 0; p < net->n_params; p++)
        reg += params[p] * params[p];
    loss += alpha * reg;

    for (int l = L - 1; l >= 0; l--) {
        const int nout = net->sizes[l + 1];
        double *dout = net->grad_out;
        if (net->relu[l]) {
            const double *out = net->act[l + 1];
            for (size_t k = 0; k < (size_t)nout * B; k++)
                dout[k] = out[k] > 0 ? dout[k] : 0;
        }
        linear_backward(params + net->offset[l], net->act[l], dout, net->grad + net->offset[l],
                        l > 0 ? net->grad_in : NULL, net->sizes[l], nout, B);
        double *swap = net->grad_out;  /* this layer's input grad: the next one's output grad */
        net->grad_out = net->grad_in;
        net->grad_in = swap;
    }

    for (int p = 0; p < net->n_params; p++)
        params[p] -= lr * (net->grad[p] + 2 * alpha * params[p]);
    return loss;
}
