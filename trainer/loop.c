// trainer/loop.c — the training loop (see loop.h).
#include "trainer/loop.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/io.h"
#include "common/log.h"
#include "common/rng.h"
#include "pipeline/dataset.h"
#include "pipeline/receiver.h"
#include "proto/proto.h"
#include "trainer/feed.h"
#include "trainer/state.h"

void vm_train_opts_default(vm_train_opts *o) { memset(o, 0, sizeof *o); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

void vm_train_state_path(const char *arg, char *out, size_t cap) {
    struct stat sb;
    if (!stat(arg, &sb) && S_ISDIR(sb.st_mode)) {
        snprintf(out, cap, "%s/train_state.safetensors", arg);
    } else if (ends_with(arg, "model.safetensors")) {
        size_t n = strlen(arg) - strlen("model.safetensors");
        snprintf(out, cap, "%.*strain_state.safetensors", (int)n, arg);
    } else {
        snprintf(out, cap, "%s", arg);
    }
}

// ---- replay: stored batch files ------------------------------------------------------------------

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Parse (and fully validate) one stored message; on success *msg holds the file (caller frees).
static int replay_open(const char *path, int size, void **msg, vm_batch_view *v, vm_error *err) {
    size_t len;
    int rc = vm_batch_file_read(path, msg, &len, err);
    if (rc) return rc;
    if ((rc = vm_batch_parse(*msg, len, v, err))) {
        free(*msg), *msg = NULL;
        return vm_error_prefix(err, "%s: ", path);
    }
    if (v->h.views != 2 || v->h.height != (uint32_t)size || v->h.width != (uint32_t)size || v->h.batch < 1) {
        free(*msg), *msg = NULL;
        return vm_fail(err, VM_EINVAL, "%s: batch of %u samples x %u views of %ux%u, the model needs pairs of %dx%d",
                       path, v->h.batch, v->h.views, v->h.width, v->h.height, size, size);
    }
    return 0;
}

int vm_replay_scan(const char *dir, int size, char ***paths_out, int **counts_out, int *nfiles, long *total,
                   vm_error *err) {
    DIR *d = opendir(dir);
    if (!d) return vm_fail(err, VM_EIO, "%s: %s", dir, strerror(errno));
    char **paths = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp")) continue;  // hidden, unfinished atomic writes
        char path[VM_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(paths, (size_t)cap * sizeof *p);
            if (!p) { rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir); break; }
            paths = p;
        }
        if (!(paths[n] = strdup(path))) { rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir); break; }
        n++;
    }
    closedir(d);
    if (!rc && n == 0) rc = vm_fail(err, VM_ENOTFOUND, "%s: no batch files to replay", dir);
    int *counts = rc ? NULL : malloc((size_t)n * sizeof *counts);
    if (!rc && !counts) rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir);
    long sum = 0;
    if (!rc) {
        qsort(paths, (size_t)n, sizeof *paths, cmp_str);
        for (int i = 0; i < n && !rc; i++) {
            void *msg = NULL;
            vm_batch_view v;
            if (!(rc = replay_open(paths[i], size, &msg, &v, err))) counts[i] = (int)v.h.batch, sum += v.h.batch;
            free(msg);
        }
    }
    if (rc) {
        for (int i = 0; i < n; i++) free(paths[i]);
        free(paths), free(counts);
        return rc;
    }
    *paths_out = paths, *counts_out = counts, *nfiles = n, *total = sum;
    return 0;
}

typedef struct replay {
    char **paths;
    int *counts, nfiles, size;
    long per_epoch;           // samples in one pass over the files
    uint64_t seed;
    int *order;               // file order of the current epoch
    int pos;                  // index into order of the file in buf
    uint8_t *buf;             // pixels of that file (n, 2, S, S, 3)
    int buf_n, buf_off;       // its samples, the next one to hand out
    size_t sample_bytes;
} replay;

static void replay_free(replay *r) {
    for (int i = 0; i < r->nfiles; i++) free(r->paths[i]);
    free(r->paths), free(r->counts), free(r->order), free(r->buf);
}

// File order of an epoch: Fisher-Yates over name order with Philox keyed by (seed, epoch).
static void replay_shuffle(replay *r, long epoch) {
    vm_rng g;
    vm_rng_init(&g, r->seed, vm_rng_stream(VM_RNG_DATA_ORDER, (uint64_t)epoch, 0, 0));
    for (int i = 0; i < r->nfiles; i++) r->order[i] = i;
    for (int i = r->nfiles - 1; i > 0; i--) {
        int j = (int)vm_rng_int(&g, 0, i), t = r->order[i];
        r->order[i] = r->order[j], r->order[j] = t;
    }
}

static int replay_load(replay *r, int pos, vm_error *err) {
    const char *path = r->paths[r->order[pos]];
    void *msg = NULL;
    vm_batch_view v;
    int rc = replay_open(path, r->size, &msg, &v, err);
    if (!rc && (int)v.h.batch != r->counts[r->order[pos]])
        rc = vm_fail(err, VM_EINVAL, "%s: changed during the run (%u samples, %d when scanned)", path, v.h.batch,
                     r->counts[r->order[pos]]);
    if (!rc) {
        uint8_t *b = realloc(r->buf, v.h.raw_size);
        if (!b) rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
        else r->buf = b, rc = vm_batch_decode_pixels(&v, r->buf, v.h.raw_size, err);
        if (rc && rc != VM_ENOMEM) vm_error_prefix(err, "%s: ", path);
    }
    free(msg);
    if (rc) return rc;
    r->pos = pos, r->buf_n = (int)v.h.batch, r->buf_off = 0;
    return 0;
}

// Position at sample `sample` (< per_epoch) of epoch `epoch`.
static int replay_seek(replay *r, long epoch, long sample, vm_error *err) {
    replay_shuffle(r, epoch);
    int pos = 0;
    while (pos < r->nfiles && sample >= r->counts[r->order[pos]]) sample -= r->counts[r->order[pos++]];
    if (pos == r->nfiles) return vm_fail(err, VM_ERANGE, "replay: data position past the end of the epoch");
    int rc = replay_load(r, pos, err);
    if (!rc) r->buf_off = (int)sample;
    return rc;
}

// Copy B samples of the current epoch into views; the caller guarantees they exist in this epoch.
static int replay_take(replay *r, uint8_t *views, int B, vm_error *err) {
    for (int got = 0; got < B;) {
        if (r->buf_off == r->buf_n) {
            int rc = replay_load(r, r->pos + 1, err);
            if (rc) return rc;
        }
        int k = r->buf_n - r->buf_off;
        if (k > B - got) k = B - got;
        memcpy(views + (size_t)got * r->sample_bytes, r->buf + (size_t)r->buf_off * r->sample_bytes,
               (size_t)k * r->sample_bytes);
        got += k, r->buf_off += k;
    }
    return 0;
}

// ---- the data source, run on the input feed's thread (trainer/feed.h) ------------------------------

// Where the data stands after a batch: its epoch and, from the ordered pipeline, the unit position
// (pipeline/receiver.h vm_receiver_pos; unit -1 = none).  The feed's thread runs ahead of the steps,
// so each batch's position travels with it (the feed's info beside the slot).
typedef struct batch_pos {
    long epoch, unit, sample;
} batch_pos;

typedef struct source {
    int B, S;
    long remaining;                 // batches still to produce: exactly those the loop will train on
    replay rp;                      // replay mode when rp.paths is set
    long epoch, epoch_sample;       // replay: position of the next batch
    vm_receiver *recv;              // pipeline mode
    vm_sample_meta *smeta;          // (B) records of the batch, for save_batches
    vm_view_meta *vmeta;            // (B, 2)
    const char *save_batches;       // directory, or NULL
    long sequence;                  // step number of the next batch (names its stored file)
    uint8_t *msgbuf;
    size_t msgcap;
} source;

// Store a received batch as a proto file named after its step, for `train --replay`.
static int source_save(source *s, const uint8_t *views, uint32_t ep, vm_error *err) {
    vm_batch_header h = {.batch = (uint32_t)s->B, .views = 2, .height = (uint32_t)s->S, .width = (uint32_t)s->S,
                         .codec = VM_BATCH_CODEC_LZ4, .epoch = ep, .sequence = (uint64_t)s->sequence};
    size_t need = vm_batch_max_size(&h), len = 0;
    if (need > s->msgcap) {
        uint8_t *nb = realloc(s->msgbuf, need);
        if (!nb) return vm_fail(err, VM_ENOMEM, "out of memory");
        s->msgbuf = nb, s->msgcap = need;
    }
    char path[VM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/batch-%08ld.vmb", s->save_batches, s->sequence);
    int rc = vm_batch_encode(&h, s->smeta, s->vmeta, views, s->msgbuf, s->msgcap, &len, err);
    return rc ? rc : vm_batch_file_write(path, s->msgbuf, len, err);
}

// vm_feed_fill_fn: the next batch of B pairs into views, its position into info (a batch_pos).
static int source_fill(void *ctx, uint8_t *views, void *info, vm_error *err) {
    source *s = ctx;
    int rc;
    if (s->remaining <= 0) return 0;
    batch_pos *bp = info;
    if (s->rp.paths) {
        if (s->epoch_sample + s->B > s->rp.per_epoch) {  // drop the tail: a batch never mixes epochs
            s->epoch++, s->epoch_sample = 0;
            if ((rc = replay_seek(&s->rp, s->epoch, 0, err))) return rc;
        }
        if ((rc = replay_take(&s->rp, views, s->B, err))) return rc;
        *bp = (batch_pos){s->epoch, -1, 0};
        s->epoch_sample += s->B;
    } else {
        uint32_t ep = 0;
        int n = vm_receiver_next_batch_ex(s->recv, views, s->smeta, s->vmeta, s->B, &ep, NULL, err);
        if (n <= 0) return n;
        vm_receiver_pos p;
        *bp = vm_receiver_position(s->recv, &p) ? (batch_pos){(long)ep, p.unit, p.sample} : (batch_pos){(long)ep, -1, 0};
        if (s->save_batches && (rc = source_save(s, views, ep, err))) return rc;
    }
    s->sequence++, s->remaining--;
    return 1;
}

// vm_feed_cancel_fn: a fill() waiting for workers returns.
static void source_cancel(void *ctx) {
    source *s = ctx;
    if (s->recv) vm_receiver_cancel(s->recv, "the trainer stopped");
}

// ---- resuming from the pipeline -----------------------------------------------------------------------

// Where the receiver starts (ro) for the state st: at the checkpoint's epoch (its unit order and
// samples); with ordered delivery and a unit position that fits this dataset, at the very sample.
// Otherwise the epoch starts again and st's position within it is reset.
static int pipeline_resume_position(const vm_config *cfg, vm_train_state *st, const char *state_path,
                                    vm_receiver_opts *ro, vm_error *err) {
    ro->start_epoch = st->epoch;
    int exact = 0;
    if (st->step && !cfg->pipeline.ordered) {
        vm_info("resume from the pipeline: epoch %ld starts again ([pipeline] ordered = false: the workers' "
                "arrival order is not replayable)", st->epoch);
    } else if (st->step && st->unit < 0) {
        vm_info("resume from the pipeline: epoch %ld starts again (the workers' order is not replayable)", st->epoch);
    } else if (st->step) {
        // The position counts units of this dataset: another dataset (or pairs_per_video) makes it meaningless.
        vm_dataset ds;
        int rc = vm_dataset_open_config(&ds, cfg, err);
        if (rc) {
            vm_error_prefix(err, "dataset: ");
            return rc;
        }
        int n = ds.n, spu = vm_pipeline_samples_per_unit(cfg);
        vm_dataset_free(&ds);
        if (st->videos != n || st->unit > n || st->unit_sample >= spu || (st->unit == n && st->unit_sample)) {
            vm_warn("%s: data position unit %ld sample %ld of %ld videos does not fit this dataset (%d videos of "
                    "%d samples): epoch %ld starts again", state_path, st->unit, st->unit_sample, st->videos, n, spu,
                    st->epoch);
        } else {
            exact = 1;
            ro->start_unit = st->unit, ro->start_sample = st->unit_sample;
            vm_info("resume from the pipeline: epoch %ld continues at unit %ld of its order, sample %ld of that "
                    "unit (ordered delivery)", st->epoch, st->unit, st->unit_sample);
        }
    }
    if (!exact) st->epoch_sample = 0, st->unit = -1;
    return 0;
}

// ---- metrics, checkpoints -------------------------------------------------------------------------

// Keep the lines of metrics.jsonl whose "step" is <= step (a resumed run rewrites what follows).
static int metrics_truncate(const char *path, long step, vm_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return errno == ENOENT ? 0 : vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    char *out = NULL, *line = NULL;
    size_t out_n = 0, cap = 0;
    FILE *mem = open_memstream(&out, &out_n);
    if (!mem) {
        fclose(fp);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    while (getline(&line, &cap, fp) > 0) {
        long s;
        if (sscanf(line, "{\"step\": %ld", &s) == 1 && s <= step) fputs(line, mem);
    }
    fclose(fp);
    fclose(mem);
    free(line);
    int rc = vm_write_file_atomic(path, out, out_n, err);
    free(out);
    return rc;
}

static int checkpoint(vm_model *m, const char *dir, const vm_train_state *st, const char *ini, char *state_path,
                      size_t cap, vm_error *err) {
    char path[VM_PATH_MAX + 64], step[32];
    snprintf(step, sizeof step, "%ld", st->step);
    // The exportable model first: a crash between the two writes leaves the previous state file,
    // which is still a consistent snapshot to resume from.
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *meta[] = {"format", "pt", "step", step, "config", ini ? ini : "", NULL};
    int rc = vm_model_save(m, path, meta, 0, err);
    if (rc) return rc;
    snprintf(state_path, cap, "%s/train_state.safetensors", dir);
    return vm_state_save(m, state_path, st, ini, err);
}

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(buf, cap, "?");
    else if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

// ---- stop while waiting for workers ---------------------------------------------------------------------

// A signal sets *stop; the handler cannot take the receiver's lock, so this thread polls the flag and
// cancels the receiver, which wakes a next_batch blocked on workers that may never come.
typedef struct watcher {
    vm_receiver *recv;
    volatile sig_atomic_t *stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} watcher;

static void *watch_stop(void *arg) {
    watcher *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        if (*w->stop) {
            vm_receiver_cancel(w->recv, "stopped by a signal");
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

// ---- the loop ---------------------------------------------------------------------------------------

int vm_train(const vm_config *cfg, const vm_train_opts *o, vm_train_result *res, vm_error *err) {
    memset(res, 0, sizeof *res);
    const vm_backend_ops *be = o->be ? o->be : vm_backend_cpu(cfg->run.threads);
    const char *dir = cfg->run.out_dir;
    int B = cfg->optim.batch_size, S = cfg->model.img_size, rc = 0;
    size_t sample_bytes = (size_t)2 * S * S * 3;
    if (cfg->loss.contrastive != VM_CON_NONE && B < 2)
        return vm_fail(err, VM_EINVAL, "[optim] batch_size = %d: a contrastive loss needs at least 2 pairs", B);
    if ((rc = vm_mkdirs(dir, err))) return rc;
    // One trainer per run directory: a second one would interleave metrics and checkpoints.
    char lock_path[VM_PATH_MAX + 64];
    snprintf(lock_path, sizeof lock_path, "%s/.lock", dir);
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) return vm_fail(err, VM_EIO, "%s: %s", lock_path, strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB)) {
        close(lock_fd);
        return vm_fail(err, VM_EAGAIN, "%s: another trainer is using this run directory (set run.out_dir)", dir);
    }

    vm_model *m = NULL;
    source src = {.B = B, .S = S, .save_batches = o->replay_dir ? NULL : o->save_batches};
    replay *rp = &src.rp;
    vm_feed *feed = NULL;
    FILE *metrics = NULL;
    char *ini = NULL;  // NULL on failure, reported below
    vm_config_to_text(cfg, &ini, NULL, NULL);
    vm_train_state st = {.seed = (uint64_t)cfg->run.seed, .unit = -1};
    long steps_per_epoch = 0, epochs = cfg->pipeline.epochs ? cfg->pipeline.epochs : cfg->optim.epochs;

    if (!ini) { rc = vm_fail(err, VM_ENOMEM, "out of memory"); goto done; }
    if ((rc = vm_model_create(&m, cfg, be, B, err))) goto done;
    vm_model_init(m, (uint64_t)cfg->run.seed);
    if (o->resume) {
        vm_train_state rs;
        if ((rc = vm_state_load(m, o->resume, &rs, err))) goto done;
        if (rs.seed != st.seed) {
            rc = vm_fail(err, VM_EINVAL, "%s: written with run.seed %llu, this run has %ld (resume needs the same seed)",
                         o->resume, (unsigned long long)rs.seed, cfg->run.seed);
            goto done;
        }
        st = rs;
    }

    // Data source and plan: steps per epoch (tail dropped), total steps.
    if (o->replay_dir) {
        rp->size = S, rp->seed = st.seed, rp->sample_bytes = sample_bytes;
        if ((rc = vm_replay_scan(o->replay_dir, S, &rp->paths, &rp->counts, &rp->nfiles, &rp->per_epoch, err)))
            goto done;
        if (!(rp->order = malloc((size_t)rp->nfiles * sizeof *rp->order))) {
            rc = vm_fail(err, VM_ENOMEM, "out of memory");
            goto done;
        }
        steps_per_epoch = rp->per_epoch / B;
        if (steps_per_epoch == 0) {
            rc = vm_fail(err, VM_EINVAL, "%s: %ld samples, fewer than one batch of %d", o->replay_dir, rp->per_epoch, B);
            goto done;
        }
        if (st.epoch_sample + B > rp->per_epoch) st.epoch++, st.epoch_sample = 0;
        if ((rc = replay_seek(rp, st.epoch, st.epoch_sample, err))) goto done;
        src.epoch = st.epoch, src.epoch_sample = st.epoch_sample;
    } else {
        vm_receiver_opts ro;
        vm_receiver_opts_default(&ro);
        ro.epochs = cfg->optim.steps > 0 ? -1 : (int)epochs;
        ro.drop_last = 1;
        ro.curve_admit = o->curve_admit;
        if ((rc = pipeline_resume_position(cfg, &st, o->resume, &ro, err))) goto done;
        if ((rc = vm_receiver_start(&src.recv, cfg, &ro, err))) goto done;
        vm_receiver *recv = src.recv;
        if (vm_receiver_views(recv) != 2 || vm_receiver_size(recv) != S) {
            rc = vm_fail(err, VM_EINVAL, "the pipeline delivers %d views of %dx%d, the model trains on pairs of %dx%d",
                         vm_receiver_views(recv), vm_receiver_size(recv), vm_receiver_size(recv), S, S);
            goto done;
        }
        steps_per_epoch = (long)vm_receiver_dataset_size(recv) * vm_pipeline_samples_per_unit(cfg) / B;
        if (steps_per_epoch < 1) steps_per_epoch = 1;
        st.videos = vm_receiver_dataset_size(recv);
        if (!(src.smeta = malloc((size_t)B * sizeof *src.smeta)) ||
            !(src.vmeta = malloc((size_t)B * 2 * sizeof *src.vmeta))) {
            rc = vm_fail(err, VM_ENOMEM, "out of memory");
            goto done;
        }
        vm_info("trainer: listening on %s for workers (%d videos, %ld steps per epoch)", vm_receiver_endpoint(recv),
                vm_receiver_dataset_size(recv), steps_per_epoch);
    }
    long total = cfg->optim.steps > 0 ? cfg->optim.steps : epochs * steps_per_epoch;
    if (o->resume && st.total_steps != total)
        vm_warn("%s: planned for %ld steps, this configuration plans %ld: the lr schedule changes from here", o->resume,
                st.total_steps, total);
    st.total_steps = total;
    vm_model_set_total_steps(m, total);
    res->total_steps = total;
    res->bf16_activations = vm_model_bf16_activations(m);
    long end = o->stop_after > 0 && o->stop_after < total ? o->stop_after : total;

    // Run directory: configuration and metrics (cut back to the checkpoint when resuming).
    char path[VM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/config.ini", dir);
    if ((rc = vm_write_file_atomic(path, ini, strlen(ini), err))) goto done;
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (o->resume && (rc = metrics_truncate(path, st.step, err))) goto done;
    if (!(metrics = fopen(path, o->resume ? "a" : "w"))) {
        rc = vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (src.save_batches && (rc = vm_mkdirs(src.save_batches, err))) goto done;
    // The input feed: a thread fills cfg->train.slots batch slots ahead of the steps.
    src.remaining = end - st.step, src.sequence = st.step;
    if ((rc = vm_feed_start(&feed, be, cfg->train.slots, (size_t)B * sample_bytes, sizeof(batch_pos), source_fill,
                            source_cancel, &src, err)))
        goto done;
    if (!o->quiet)
        vm_info("train: %s backend, %s activations, %d pairs of %dx%d per step, steps %ld..%ld of %ld, %ld per epoch, "
                "run dir %s", be->name, vm_model_bf16_activations(m) ? "bf16" : "fp32", B, S, S, st.step, end, total,
                steps_per_epoch, dir);

    watcher w = {.recv = src.recv, .stop = o->stop, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t wth;
    int watching = src.recv && o->stop && pthread_create(&wth, NULL, watch_stop, &w) == 0;
    double t0 = vm_now(), win_t = t0, win_wait = 0, wait_total = 0;
    long win_steps = 0, first_step = st.step;
    int checkpointed = 0;
    while (st.step < end && !(o->stop && *o->stop)) {
        double t_step = vm_now();
        vm_feed_batch in;
        int got = vm_feed_next(feed, &in, err);
        if (got < 0) {
            if (o->stop && *o->stop) break;  // the watcher cancelled the receiver: a clean stop
            rc = got;
            break;
        }
        if (got == 0) {
            vm_info("train: the pipeline delivered every epoch after %ld steps (planned %ld)", st.step, total);
            break;
        }
        batch_pos bp = *(const batch_pos *)in.info;  // read before the slot goes back to the feed
        if (bp.epoch != st.epoch) st.epoch = bp.epoch, st.epoch_sample = 0;
        vm_losses ls;
        float lr = 0, gnorm = 0;
        rc = vm_model_forward_backward_dev(m, in.views, B, st.step, &ls, err);
        vm_feed_release(feed, &in);
        if (rc) break;
        vm_model_optimizer_step(m, st.step, &lr, &gnorm);
        double wait = in.wait_s;
        st.step++, st.epoch_sample += B, st.samples += B;
        st.unit = bp.unit, st.unit_sample = bp.sample;
        double now = vm_now(), dt = now - t_step;
        wait_total += wait, win_wait += wait, win_steps++;
        if (st.step == first_step + 1) res->first = ls;
        res->last = ls;
        fprintf(metrics,
                "{\"step\": %ld, \"epoch\": %ld, \"loss\": %.9g, \"rec\": %.9g, \"con\": %.9g, \"w_rec\": %.9g, "
                "\"w_con\": %.9g, ",
                st.step, st.epoch, ls.total, ls.rec, ls.con, ls.w_rec, ls.w_con);
        if (cfg->loss.contrastive == VM_CON_VICREG)
            fprintf(metrics, "\"con_terms\": [%.9g, %.9g, %.9g], ", ls.con_terms[0], ls.con_terms[1], ls.con_terms[2]);
        fprintf(metrics, "\"lr\": %.9g, \"grad_norm\": %.9g, \"pairs\": %d, \"step_s\": %.6f, \"wait_s\": %.6f, "
                         "\"time_s\": %.3f}\n",
                lr, gnorm, B, dt, wait, now - t0);
        fflush(metrics);
        if (!(ls.total == ls.total)) {  // NaN: stop with the reason rather than train garbage
            rc = vm_fail(err, VM_ERANGE, "step %ld: the loss is not a number (rec %g, con %g): lower optim.base_lr?",
                         st.step, ls.rec, ls.con);
            break;
        }
        if (!o->quiet && (st.step % cfg->run.log_every == 0 || st.step == end)) {
            double span = now - win_t, eta_s = span / win_steps * (double)(end - st.step);
            char eta[32];
            fmt_duration(eta, sizeof eta, eta_s);
            vm_info("step %ld/%ld ep %ld | loss %.4f rec %.4f con %.4f w_con %.4f | lr %.3e | gnorm %.3f | "
                    "%.1f pairs/s | wait %.0f%% | ETA %s",
                    st.step, total, st.epoch, ls.total, ls.rec, ls.con, ls.w_con, lr, gnorm,
                    span > 0 ? win_steps * B / span : 0.0, span > 0 ? 100.0 * win_wait / span : 0.0, eta);
            win_t = now, win_wait = 0, win_steps = 0;
        }
        checkpointed = 0;
        if (cfg->train.checkpoint_every > 0 && st.step % cfg->train.checkpoint_every == 0 && st.step < end) {
            if ((rc = checkpoint(m, dir, &st, ini, res->checkpoint, sizeof res->checkpoint, err))) break;
            checkpointed = 1;
        }
    }
    vm_feed_stop(feed);  // before the final checkpoint: the feed's thread holds the receiver
    feed = NULL;
    if (watching) {
        pthread_mutex_lock(&w.mu);
        w.done = 1;
        pthread_cond_signal(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(wth, NULL);
    }
    res->steps = st.step;
    res->seconds = vm_now() - t0;
    res->wait_seconds = wait_total;
    // The final checkpoint (also after an error in the data source: what was learned is kept).
    if (st.step > first_step && !checkpointed) {
        vm_error e2 = {0};
        int rc2 = checkpoint(m, dir, &st, ini, res->checkpoint, sizeof res->checkpoint, &e2);
        if (rc2 && !rc) rc = rc2, *err = e2;
    }
    if (!o->quiet && st.step > first_step)
        vm_info("train: %ld steps in %.1f s (data wait %.0f%%), checkpoint %s", st.step - first_step, res->seconds,
                res->seconds > 0 ? 100.0 * wait_total / res->seconds : 0.0, res->checkpoint);

done:
    if (metrics) fclose(metrics);
    vm_feed_stop(feed);
    vm_receiver_stop(src.recv);
    replay_free(rp);
    vm_model_free(m);
    free(src.smeta), free(src.vmeta), free(src.msgbuf), free(ini);
    close(lock_fd);  // releases the lock
    return rc;
}
