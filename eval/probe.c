// eval/probe.c — k-NN (DINO's weighted vote) and the linear probe (MAE's BatchNorm + Linear head).
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "common/rng.h"
#include "eval/eval.h"

static int check_sets(const vm_feature_set *a, const vm_feature_set *b, vm_error *err) {
    if (!a->n || !b->n) return vm_fail(err, VM_EINVAL, "eval: empty feature set (%d train, %d test)", a->n, b->n);
    if (a->dim != b->dim) return vm_fail(err, VM_EINVAL, "eval: feature sizes differ (%d vs %d)", a->dim, b->dim);
    if (a->nclasses < 1) return vm_fail(err, VM_EINVAL, "eval: no classes");
    for (int i = 0; i < b->n; i++)
        if (b->labels[i] < 0 || b->labels[i] >= a->nclasses)
            return vm_fail(err, VM_EINVAL, "eval: test label %d outside the %d training classes", b->labels[i], a->nclasses);
    return 0;
}

// Rank of the true class among scores (0 = best); ties go against the true class, so a constant
// score vector never counts as a hit.
static int rank_of(const double *score, int nclasses, int truth) {
    int r = 0;
    for (int c = 0; c < nclasses; c++)
        if (c != truth && score[c] >= score[truth]) r++;
    return r;
}

static float *l2_normalised(const vm_feature_set *s) {
    float *x = malloc((size_t)s->n * s->dim * sizeof *x);
    if (!x) return NULL;
    for (int i = 0; i < s->n; i++) {
        const float *a = s->x + (size_t)i * s->dim;
        double ss = 0;
        for (int j = 0; j < s->dim; j++) ss += (double)a[j] * a[j];
        float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));  // F.normalize's eps
        for (int j = 0; j < s->dim; j++) x[(size_t)i * s->dim + j] = a[j] * inv;
    }
    return x;
}

int vm_knn(const vm_feature_set *train, const vm_feature_set *test, int k, double T, vm_eval_result *res,
           vm_error *err) {
    int rc = check_sets(train, test, err);
    if (rc) return rc;
    if (k < 1 || T <= 0) return vm_fail(err, VM_EINVAL, "knn: k %d, T %g (need k >= 1, T > 0)", k, T);
    if (k > train->n) k = train->n;
    const int CH = 256, D = train->dim, NC = train->nclasses, NT = train->n;
    float *xt = l2_normalised(train), *xq = l2_normalised(test), *sim = malloc((size_t)CH * NT * sizeof *sim);
    if (!xt || !xq || !sim) {
        free(xt), free(xq), free(sim);
        return vm_fail(err, VM_ENOMEM, "knn: out of memory (%d x %d similarities)", CH, NT);
    }
    long hit1 = 0, hit5 = 0;
    for (int at = 0; at < test->n; at += CH) {
        int c = test->n - at < CH ? test->n - at : CH;
        // sim (c, NT) = xq[at:at+c] (c, D) @ xt^T (D, NT)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c, NT, D, 1.0f, xq + (size_t)at * D, D, xt, D, 0.0f,
                    sim, NT);
#pragma omp parallel for reduction(+ : hit1, hit5) schedule(static)
        for (int i = 0; i < c; i++) {
            const float *s = sim + (size_t)i * NT;
            // The k largest similarities by insertion into a sorted list (k is small).
            int idx[256];
            float val[256];
            int kk = k < 256 ? k : 256, have = 0;
            for (int j = 0; j < NT; j++) {
                if (have == kk && s[j] <= val[kk - 1]) continue;
                int p = have < kk ? have++ : kk - 1;
                while (p > 0 && val[p - 1] < s[j]) val[p] = val[p - 1], idx[p] = idx[p - 1], p--;
                val[p] = s[j], idx[p] = j;
            }
            double score[1024] = {0};
            double *sc = NC <= 1024 ? score : calloc((size_t)NC, sizeof *sc);
            if (!sc) continue;  // counted as a miss; cannot happen below 1024 classes
            for (int j = 0; j < have; j++) sc[train->labels[idx[j]]] += exp(val[j] / T);
            int r = rank_of(sc, NC, test->labels[at + i]);
            hit1 += r == 0;
            hit5 += r < 5;
            if (sc != score) free(sc);
        }
    }
    free(xt), free(xq), free(sim);
    res->n = test->n;
    res->top1 = 100.0 * hit1 / test->n;
    res->top5 = 100.0 * hit5 / test->n;
    return 0;
}

void vm_probe_opts_default(vm_probe_opts *o) {
    memset(o, 0, sizeof *o);
    o->optimizer = VM_PROBE_SGD;
    o->epochs = 100;
    o->batch = 256;
    o->lr = 0.1;
    o->momentum = 0.9;
    o->weight_decay = 0;
    o->seed = 0;
}

// Cross-entropy over the rows of x (n, D): logits (n, C) = x @ W^T (C, D) + b.  Adds the gradient
// of scale * (summed loss) into gW, gb when they are non-NULL (scale = 1/rows of the whole
// objective, so chunks add up to the mean).  Returns the summed loss of these rows.
static double ce_loss_grad(const float *x, const int32_t *y, int n, int D, int C, const float *W, const float *b,
                           float *logits, float *gW, float *gb, double scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, D, 1.0f, x, D, W, D, 0.0f, logits, C);
    double loss = 0;
    for (int i = 0; i < n; i++) {
        float *l = logits + (size_t)i * C;
        double mx = -DBL_MAX, se = 0;
        for (int c = 0; c < C; c++) l[c] += b[c], mx = fmax(mx, l[c]);
        for (int c = 0; c < C; c++) se += exp(l[c] - mx);
        loss += log(se) + mx - l[y[i]];
        // logits become dlogits = scale * (softmax - onehot)
        for (int c = 0; c < C; c++) l[c] = (float)(scale * (exp(l[c] - mx) / se - (c == y[i])));
    }
    if (gW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, n, 1.0f, logits, C, x, D, 1.0f, gW, D);
    if (gb)
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) gb[c] += logits[(size_t)i * C + c];
    return loss;
}

// Full-batch objective for L-BFGS over theta = [W (C*D), b (C)]: mean CE + wd/2 |W|^2, in chunks
// of 4096 rows (the logits scratch).
static double full_objective(const float *x, const int32_t *y, int n, int D, int C, const float *theta, float *grad,
                             float *logits, double wd) {
    memset(grad, 0, (size_t)(C * D + C) * sizeof *grad);
    double loss = 0;
    for (int at = 0; at < n; at += 4096) {
        int c = n - at < 4096 ? n - at : 4096;
        loss += ce_loss_grad(x + (size_t)at * D, y + at, c, D, C, theta, theta + (size_t)C * D, logits, grad,
                             grad + (size_t)C * D, 1.0 / n);
    }
    loss /= n;
    for (size_t j = 0; j < (size_t)C * D; j++) loss += 0.5 * wd * theta[j] * theta[j], grad[j] += (float)(wd * theta[j]);
    return loss;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// L-BFGS (memory 10) with a backtracking Armijo line search, full batch.
static int train_lbfgs(const float *x, const int32_t *y, int n, int D, int C, float *theta, const vm_probe_opts *o,
                       vm_error *err) {
    const int M = 10;
    size_t P = (size_t)C * D + C;
    float *g = malloc(P * sizeof *g), *gn = malloc(P * sizeof *gn), *d = malloc(P * sizeof *d),
          *tn = malloc(P * sizeof *tn), *S = malloc(M * P * sizeof *S), *Y = malloc(M * P * sizeof *Y),
          *logits = malloc((size_t)4096 * C * sizeof *logits);
    double rho[10], alpha[10];
    int rc = 0;
    if (!g || !gn || !d || !tn || !S || !Y || !logits) { rc = vm_fail(err, VM_ENOMEM, "lbfgs: out of memory"); goto done; }
    double f = full_objective(x, y, n, D, C, theta, g, logits, o->weight_decay);
    int stored = 0, head = 0;
    for (int it = 0; it < o->epochs; it++) {
        // Two-loop recursion: d = -H g
        for (size_t j = 0; j < P; j++) d[j] = -g[j];
        for (int q = 0; q < stored; q++) {
            int s = (head - 1 - q + M) % M;
            alpha[s] = rho[s] * dot(S + s * P, d, P);
            for (size_t j = 0; j < P; j++) d[j] -= (float)(alpha[s] * Y[s * P + j]);
        }
        if (stored) {
            int s = (head - 1 + M) % M;
            double gamma = dot(S + s * P, Y + s * P, P) / dot(Y + s * P, Y + s * P, P);
            for (size_t j = 0; j < P; j++) d[j] *= (float)gamma;
        }
        for (int q = stored - 1; q >= 0; q--) {
            int s = (head - 1 - q + M) % M;
            double beta = rho[s] * dot(Y + s * P, d, P);
            for (size_t j = 0; j < P; j++) d[j] += (float)((alpha[s] - beta) * S[s * P + j]);
        }
        double gd = dot(g, d, P);
        if (gd >= 0) {  // not a descent direction: restart from steepest descent
            for (size_t j = 0; j < P; j++) d[j] = -g[j];
            gd = dot(g, d, P), stored = 0;
        }
        double step = stored ? 1.0 : 1.0 / fmax(1.0, sqrt(-gd)), fn = f;
        int ok = 0;
        for (int ls = 0; ls < 30; ls++) {
            for (size_t j = 0; j < P; j++) tn[j] = theta[j] + (float)(step * d[j]);
            fn = full_objective(x, y, n, D, C, tn, gn, logits, o->weight_decay);
            if (fn <= f + 1e-4 * step * gd) { ok = 1; break; }
            step *= 0.5;
        }
        if (!ok) break;  // no progress possible at float precision: converged
        double sy = 0;
        for (size_t j = 0; j < P; j++) {
            S[head * P + j] = tn[j] - theta[j];
            Y[head * P + j] = gn[j] - g[j];
        }
        sy = dot(S + head * P, Y + head * P, P);
        if (sy > 1e-10) rho[head] = 1.0 / sy, head = (head + 1) % M, stored = stored < M ? stored + 1 : M;
        memcpy(theta, tn, P * sizeof *theta);
        memcpy(g, gn, P * sizeof *g);
        if (o->verbose) fprintf(stderr, "linear: iter %d loss %.5f\n", it + 1, fn);
        if (fabs(f - fn) < 1e-9 * fmax(1.0, fabs(f))) { f = fn; break; }
        f = fn;
    }
done:
    free(g), free(gn), free(d), free(tn), free(S), free(Y), free(logits);
    return rc;
}

static int train_sgd(const float *x, const int32_t *y, int n, int D, int C, float *theta, const vm_probe_opts *o,
                     vm_error *err) {
    int B = o->batch > 0 ? o->batch : 256;
    if (B > n) B = n;
    size_t P = (size_t)C * D + C;
    float *g = malloc(P * sizeof *g), *vel = calloc(P, sizeof *vel), *xb = malloc((size_t)B * D * sizeof *xb),
          *logits = malloc((size_t)B * C * sizeof *logits);
    int32_t *yb = malloc((size_t)B * sizeof *yb), *perm = malloc((size_t)n * sizeof *perm);
    int rc = 0;
    if (!g || !vel || !xb || !logits || !yb || !perm) { rc = vm_fail(err, VM_ENOMEM, "linear: out of memory"); goto done; }
    long steps_per_epoch = n / B, total = steps_per_epoch * o->epochs, step = 0;  // drop_last, as MAE's loader
    double base = o->lr * B / 256.0;
    for (int ep = 0; ep < o->epochs; ep++) {
        vm_rng r;
        vm_rng_init(&r, o->seed, vm_rng_stream(VM_RNG_EVAL, 1, (uint64_t)ep, 0));
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)vm_rng_int(&r, 0, i), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        double eloss = 0;
        for (long s = 0; s < steps_per_epoch; s++, step++) {
            for (int i = 0; i < B; i++) {
                int k = perm[s * B + i];
                memcpy(xb + (size_t)i * D, x + (size_t)k * D, (size_t)D * sizeof *xb);
                yb[i] = y[k];
            }
            memset(g, 0, P * sizeof *g);
            eloss += ce_loss_grad(xb, yb, B, D, C, theta, theta + (size_t)C * D, logits, g, g + (size_t)C * D, 1.0 / B) / B;
            // Half-cycle cosine to 0 over all steps (MAE's schedule without warmup).
            double lr = base * 0.5 * (1 + cos(M_PI * step / (double)total));
            for (size_t j = 0; j < P; j++) {
                double gj = g[j] + (j < (size_t)C * D ? o->weight_decay * theta[j] : 0);
                vel[j] = (float)(o->momentum * vel[j] + gj);
                theta[j] -= (float)(lr * vel[j]);
            }
        }
        if (o->verbose) fprintf(stderr, "linear: epoch %d loss %.5f\n", ep + 1, eloss / (steps_per_epoch ? steps_per_epoch : 1));
    }
done:
    free(g), free(vel), free(xb), free(logits), free(yb), free(perm);
    return rc;
}

int vm_linear_probe(const vm_feature_set *train, const vm_feature_set *test, const vm_probe_opts *o,
                    vm_eval_result *res, vm_error *err) {
    int rc = check_sets(train, test, err);
    if (rc) return rc;
    if (o->epochs < 1) return vm_fail(err, VM_EINVAL, "linear: epochs %d (need >= 1)", o->epochs);
    int D = train->dim, C = train->nclasses, n = train->n;
    // Standardise with the training set's statistics: the non-affine BatchNorm1d(eps=1e-6) of
    // MAE's probe at evaluation time, with its running statistics at their fixed point.
    double *mean = calloc((size_t)D, sizeof *mean), *var = calloc((size_t)D, sizeof *var);
    float *xs = malloc((size_t)n * D * sizeof *xs), *xq = malloc((size_t)test->n * D * sizeof *xq);
    size_t P = (size_t)C * D + C;
    float *theta = calloc(P, sizeof *theta), *logits = malloc((size_t)test->n * C * sizeof *logits);
    if (!mean || !var || !xs || !xq || !theta || !logits) { rc = vm_fail(err, VM_ENOMEM, "linear: out of memory"); goto done; }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) mean[j] += train->x[(size_t)i * D + j];
    for (int j = 0; j < D; j++) mean[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            double t = train->x[(size_t)i * D + j] - mean[j];
            var[j] += t * t;
        }
    for (int j = 0; j < D; j++) var[j] = 1.0 / sqrt(var[j] / n + 1e-6);  // now rstd
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) xs[(size_t)i * D + j] = (float)((train->x[(size_t)i * D + j] - mean[j]) * var[j]);
    for (int i = 0; i < test->n; i++)
        for (int j = 0; j < D; j++) xq[(size_t)i * D + j] = (float)((test->x[(size_t)i * D + j] - mean[j]) * var[j]);
    // MAE's head init: trunc_normal(std=0.01) weights, zero bias.
    vm_rng r;
    vm_rng_init(&r, o->seed, vm_rng_stream(VM_RNG_EVAL, 2, 0, 0));
    for (size_t j = 0; j < (size_t)C * D; j++) {
        double v;
        do v = vm_rng_normal(&r); while (fabs(v) > 2);
        theta[j] = (float)(0.01 * v);
    }
    rc = o->optimizer == VM_PROBE_LBFGS ? train_lbfgs(xs, train->labels, n, D, C, theta, o, err)
                                        : train_sgd(xs, train->labels, n, D, C, theta, o, err);
    if (rc) goto done;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, test->n, C, D, 1.0f, xq, D, theta, D, 0.0f, logits, C);
    long hit1 = 0, hit5 = 0;
    double *sc = malloc((size_t)C * sizeof *sc);
    if (!sc) { rc = vm_fail(err, VM_ENOMEM, "linear: out of memory"); goto done; }
    for (int i = 0; i < test->n; i++) {
        for (int c = 0; c < C; c++) sc[c] = logits[(size_t)i * C + c] + theta[(size_t)C * D + c];
        int rk = rank_of(sc, C, test->labels[i]);
        hit1 += rk == 0, hit5 += rk < 5;
    }
    free(sc);
    res->n = test->n;
    res->top1 = 100.0 * hit1 / test->n;
    res->top5 = 100.0 * hit5 / test->n;
done:
    free(mean), free(var), free(xs), free(xq), free(theta), free(logits);
    return rc;
}
