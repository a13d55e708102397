// tests/test_pipeline_curve.c — CURVE on the pipeline's wire (pipeline/curve.h): key text and key
// files with their errors, keygen's modes, the admitted keys, the ZAP answer; a receiver with forked
// workers on loopback (admitted: the same batches as plaintext; an unlisted key, the wrong server
// key, CURVE at one end only: refused, told and counted); the CLI (keygen, the worker's key
// options and exit status, `vicmae run` with CURVE on, sink and trainer).
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include "common/io.h"
#include "pipeline/curve.h"
#include "pipeline/receiver.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_pipeline_util.h"

// The example key pair of zmq_curve(7) (a server's).
#define RFC_PUB "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define RFC_SEC "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"

static const char *tmp_path(const char *name) {
    static char path[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(path[k], sizeof path[k], "%s/%s", vt_tmpdir(), name);
    return path[k];
}

static const char *write_text(const char *name, const char *text, mode_t mode) {
    const char *p = tmp_path(name);
    unlink(p);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    CHECK(fd >= 0, "cannot create %s", p);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
    return p;
}

static mode_t mode_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0, "%s missing", path);
    return st.st_mode & 07777;
}

// ---- key text, key files, keygen ------------------------------------------------------------------

TEST(z85_check_says_what_is_wrong) {
    char why[128];
    CHECK_OK(vm_curve_z85_check(RFC_PUB, 40, why, sizeof why), (vm_error){0});
    CHECK(vm_curve_z85_check(RFC_PUB, 39, why, sizeof why) == VM_EINVAL && strstr(why, "39 characters"), "%s", why);
    char k[41];
    memcpy(k, RFC_PUB, 41);
    k[7] = '"';
    CHECK(vm_curve_z85_check(k, 40, why, sizeof why) == VM_EINVAL && strstr(why, "'\"' at position 8"), "%s", why);
    k[7] = ' ';
    CHECK(vm_curve_z85_check(k, 40, why, sizeof why) == VM_EINVAL && strstr(why, "0x20 at position 8"), "%s", why);
    // "#####" is 85^5 - 1 > 2^32 - 1: Z85 characters, but no 4 bytes encode to them.
    memcpy(k, RFC_PUB, 41);
    memcpy(k + 10, "#####", 5);
    CHECK(vm_curve_z85_check(k, 40, why, sizeof why) == VM_EINVAL && strstr(why, "11-15") && strstr(why, "32 bits"),
          "%s", why);
}

TEST(key_text_parses_and_errors_name_origin_and_line) {
    vm_curve_key k;
    vm_error err = {0};
    CHECK_OK(vm_curve_key_parse("# a comment\r\n  public-key = " RFC_PUB "\r\n\nsecret-key=" RFC_SEC "\n", "t.key_secret",
                                1, &k, &err), err);
    CHECK(!strcmp(k.pub, RFC_PUB) && !strcmp(k.sec, RFC_SEC), "%s / %s", k.pub, k.sec);
    CHECK_OK(vm_curve_key_parse("public-key = " RFC_PUB, "t.key", 0, &k, &err), err);
    CHECK(!k.sec[0]);
    struct { const char *text, *want1, *want2; int need_secret; } bad[] = {
        {"public-key = " RFC_PUB "\n", "w.key: no secret-key line", ".key_secret", 1},
        {"public-key = abc\n", "w.key:1: public-key has 3 characters", "40", 0},
        {"# x\npubkey = " RFC_PUB "\n", "w.key:2: unknown entry 'pubkey'", "public-key", 0},
        {"\n\nthis is not a key\n", "w.key:3: 'this is not a key' is not an entry", "public-key = KEY", 0},
        {"public-key = " RFC_PUB "\npublic-key = " RFC_PUB "\n", "w.key:2: a second public-key", "one key pair", 0},
        {"# nothing\n", "w.key: no public-key line", "keygen", 0},
        {"secret-key = " RFC_SEC "\n", "w.key: no public-key line", "keygen", 1},
        // secret-key of the RFC pair under another public key: an edited file
        {"public-key = " RFC_SEC "\nsecret-key = " RFC_SEC "\n", "w.key: public-key does not belong to secret-key", "", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(vm_curve_key_parse(bad[i].text, "w.key", bad[i].need_secret, &k, &err) == VM_EINVAL, "case %zu accepted", i);
        CHECK(strstr(err.msg, bad[i].want1) && strstr(err.msg, bad[i].want2), "case %zu: %s", i, err.msg);
    }
}

TEST(keygen_writes_0600_secret_0644_public_and_refuses_to_overwrite) {
    vm_curve_key k, back;
    vm_error err = {0};
    CHECK_OK(vm_curve_keygen(&k, &err), err);
    char pub[1100], sec[1100];
    const char *name = tmp_path("kg/node");
    CHECK_OK(vm_mkdirs(tmp_path("kg"), &err), err);
    mode_t old = umask(0);  // modes must not depend on the caller's umask
    int rc = vm_curve_key_write(name, &k, pub, sec, sizeof pub, &err);
    umask(old);
    CHECK_OK(rc, err);
    CHECK(strstr(pub, "kg/node.key") && strstr(sec, "kg/node.key_secret"), "%s %s", pub, sec);
    CHECK_EQ_INT(mode_of(sec), 0600);
    CHECK_EQ_INT(mode_of(pub), 0644);
    CHECK_OK(vm_curve_key_load(sec, 1, &back, &err), err);
    CHECK(!strcmp(back.pub, k.pub) && !strcmp(back.sec, k.sec), "the secret file does not reload the pair");
    CHECK_OK(vm_curve_key_load(pub, 0, &back, &err), err);
    CHECK(!strcmp(back.pub, k.pub) && !back.sec[0]);
    CHECK(vm_curve_key_load(pub, 1, &back, &err) == VM_EINVAL && strstr(err.msg, pub) && strstr(err.msg, "no secret-key"),
          "%s", err.msg);
    // A second keygen to the same name: refused, naming the file, and nothing changes.
    char *before = read_whole_file(sec, NULL);
    vm_curve_key k2;
    CHECK_OK(vm_curve_keygen(&k2, &err), err);
    CHECK(vm_curve_key_write(name, &k2, NULL, NULL, 0, &err) == VM_EINVAL, "overwrote a key pair");
    CHECK(strstr(err.msg, "node.key") && strstr(err.msg, "exists"), "%s", err.msg);
    char *after = read_whole_file(sec, NULL);
    CHECK(before && after && !strcmp(before, after), "the secret file changed");
    free(before);
    free(after);
    // Only the secret file left: still refused, and no public file appears beside it.
    CHECK(unlink(pub) == 0);
    CHECK(vm_curve_key_write(name, &k2, NULL, NULL, 0, &err) == VM_EINVAL && strstr(err.msg, "key_secret exists"), "%s",
          err.msg);
    CHECK(access(pub, F_OK) != 0, "a public file was written beside a refused secret");
    // A secret that group or others may read is refused, naming the file and the fix.
    CHECK(chmod(sec, 0640) == 0);
    CHECK(vm_curve_key_load(sec, 1, &back, &err) == VM_EINVAL, "a 0640 secret file was accepted");
    CHECK(strstr(err.msg, sec) && strstr(err.msg, "0640") && strstr(err.msg, "chmod 600"), "%s", err.msg);
    CHECK(vm_curve_key_load(tmp_path("kg/absent.key_secret"), 1, &back, &err) == VM_EIO);
    CHECK(strstr(err.msg, "absent.key_secret") && strstr(err.msg, "No such file"), "%s", err.msg);
    CHECK(vm_curve_key_load(tmp_path("kg"), 0, &back, &err) == VM_EINVAL && strstr(err.msg, "not a regular file"), "%s",
          err.msg);
}

TEST(clients_file_and_directory) {
    vm_curve_key a, b;
    vm_error err = {0};
    CHECK_OK(vm_curve_keygen(&a, &err), err);
    CHECK_OK(vm_curve_keygen(&b, &err), err);
    uint8_t ka[32], kb[32], krfc[32];
    zmq_z85_decode(ka, a.pub);
    zmq_z85_decode(kb, b.pub);
    zmq_z85_decode(krfc, RFC_PUB);
    char text[512];
    snprintf(text, sizeof text, "# workers\npublic-key = %s\n\n  public-key = %s  \n# again\npublic-key = %s\n", a.pub,
             b.pub, a.pub);
    vm_curve_clients c = {0};
    CHECK_OK(vm_curve_clients_load(&c, write_text("clients.txt", text, 0644), &err), err);
    CHECK_EQ_INT(c.n, 2);  // the repeated key once
    CHECK(vm_curve_clients_has(&c, ka) && vm_curve_clients_has(&c, kb) && !vm_curve_clients_has(&c, krfc));
    vm_curve_clients_free(&c);
    // A secret line, a bad key, a stray line: refused, naming file and line.
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", a.pub, a.sec);
    CHECK(vm_curve_clients_load(&c, write_text("clients-sec.txt", text, 0600), &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "clients-sec.txt:2") && strstr(err.msg, "secret"), "%s", err.msg);
    vm_curve_clients_free(&c);
    CHECK(vm_curve_clients_load(&c, write_text("clients-bad.txt", "# x\npublic-key = " RFC_PUB "x\n", 0644), &err) ==
          VM_EINVAL);
    CHECK(strstr(err.msg, "clients-bad.txt:2") && strstr(err.msg, "41 characters"), "%s", err.msg);
    vm_curve_clients_free(&c);
    CHECK(vm_curve_clients_load(&c, write_text("clients-stray.txt", RFC_PUB "\n", 0644), &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "clients-stray.txt:1") && strstr(err.msg, "not an entry"), "%s", err.msg);
    vm_curve_clients_free(&c);
    // A directory: its *.key files; key_secret files and other names are not read.
    CHECK_OK(vm_mkdirs(tmp_path("cdir"), &err), err);
    CHECK_OK(vm_curve_key_write(tmp_path("cdir/a"), &a, NULL, NULL, 0, &err), err);
    CHECK_OK(vm_curve_key_write(tmp_path("cdir/b"), &b, NULL, NULL, 0, &err), err);
    write_text("cdir/README", "not a key\n", 0644);
    CHECK_OK(vm_curve_clients_load(&c, tmp_path("cdir"), &err), err);
    CHECK_EQ_INT(c.n, 2);
    CHECK(vm_curve_clients_has(&c, ka) && vm_curve_clients_has(&c, kb));
    vm_curve_clients_free(&c);
    // A renamed .key_secret in the directory is refused; so is a broken .key, by name.
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", a.pub, a.sec);
    write_text("cdir/c.key", text, 0600);
    CHECK(vm_curve_clients_load(&c, tmp_path("cdir"), &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "cdir/c.key") && strstr(err.msg, "secret"), "%s", err.msg);
    vm_curve_clients_free(&c);
    write_text("cdir/c.key", "public-key = nope\n", 0644);
    CHECK(vm_curve_clients_load(&c, tmp_path("cdir"), &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "cdir/c.key:1") && strstr(err.msg, "4 characters"), "%s", err.msg);
    vm_curve_clients_free(&c);
    CHECK(vm_curve_clients_load(&c, tmp_path("no-such-clients"), &err) == VM_EIO && strstr(err.msg, "no-such-clients"),
          "%s", err.msg);
    CHECK(vm_curve_clients_add(&c, "short", "test", &err) == VM_EINVAL && strstr(err.msg, "5 characters"), "%s", err.msg);
    vm_curve_clients_free(&c);
}

// ---- the ZAP answer (RFC 27) ----------------------------------------------------------------------

static void zap_request(void *req, const char *version, const char *mech, const uint8_t *cred, size_t credlen) {
    const char *f[] = {version, "req-7", "", "10.0.0.9", "", mech};
    for (int i = 0; i < 6; i++) zmq_send(req, f[i], strlen(f[i]), cred || i < 5 ? ZMQ_SNDMORE : 0);
    if (cred) zmq_send(req, cred, credlen, 0);
}

// The reply's frames 0..3 into out (NUL-terminated), its frame count returned.
static int zap_reply(void *req, char out[6][64]) {
    int n = 0, more = 1;
    while (more && n < 6) {
        int len = zmq_recv(req, out[n], 63, 0);
        CHECK(len >= 0, "no ZAP reply");
        out[n][len < 63 ? len : 63] = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(req, ZMQ_RCVMORE, &more, &ml);
        n++;
    }
    return n;
}

TEST(zap_handler_answers_per_rfc27) {
    void *ctx = zmq_ctx_new();
    void *rep = zmq_socket(ctx, ZMQ_REP), *req = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0, tmo = 2000;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    CHECK(zmq_bind(rep, "inproc://zeromq.zap.01") == 0 && zmq_connect(req, "inproc://zeromq.zap.01") == 0);
    vm_curve_clients c = {0};
    vm_error err = {0};
    CHECK_OK(vm_curve_clients_add(&c, RFC_PUB, "test", &err), err);
    vm_curve_zap_req q;
    CHECK_EQ_INT(vm_curve_zap_serve(rep, &c, &q), 0);  // nothing waiting: no blocking
    uint8_t admitted[32], other[32];
    zmq_z85_decode(admitted, RFC_PUB);
    memcpy(other, admitted, 32);
    other[0] ^= 1;
    char r[6][64];
    struct { const char *version, *mech; const uint8_t *cred; const char *status; int admitted; } cases[] = {
        {"1.0", "CURVE", admitted, "200", 1},
        {"1.0", "CURVE", other, "400", 0},
        {"1.0", "NULL", NULL, "400", 0},
        {"2.0", "CURVE", admitted, "500", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zap_request(req, cases[i].version, cases[i].mech, cases[i].cred, 32);
        for (int t = 0; t < 200 && !vm_curve_zap_serve(rep, &c, &q); t++) usleep(5000);
        CHECK_EQ_INT(zap_reply(req, r), 6);
        CHECK(!strcmp(r[0], "1.0") && !strcmp(r[1], "req-7") && !strcmp(r[2], cases[i].status), "case %zu: %s %s %s", i,
              r[0], r[1], r[2]);
        CHECK_EQ_INT(q.admitted, cases[i].admitted);
        if (cases[i].cred && cases[i].version[0] == '1') {
            char z85[41];
            zmq_z85_encode(z85, (uint8_t *)cases[i].cred, 32);
            CHECK(!strcmp(q.key, z85) && !strcmp(q.address, "10.0.0.9"), "case %zu: key %s address %s", i, q.key, q.address);
        }
        CHECK(q.admitted ? !strcmp(r[4], RFC_PUB) : q.why[0] != 0, "case %zu: user id '%s', why '%s'", i, r[4], q.why);
    }
    vm_curve_clients_free(&c);
    zmq_close(req);
    zmq_close(rep);
    zmq_ctx_term(ctx);
}

// ---- a receiver and forked workers on loopback --------------------------------------------------------

// The keys of these tests: the trainer's pair in files, an admitted worker (its .key in the clients
// directory) and one nobody admitted.
static struct {
    vm_curve_key trainer, good, stranger;
    char trainer_secret[1100], clients[1100];
} K;

static void make_keys(void) {
    if (K.trainer.pub[0]) return;
    vm_error err = {0};
    CHECK_OK(vm_curve_keygen(&K.trainer, &err), err);
    CHECK_OK(vm_curve_keygen(&K.good, &err), err);
    CHECK_OK(vm_curve_keygen(&K.stranger, &err), err);
    snprintf(K.clients, sizeof K.clients, "%s", tmp_path("net-clients"));
    CHECK_OK(vm_mkdirs(K.clients, &err), err);
    CHECK_OK(vm_curve_key_write(tmp_path("net-trainer"), &K.trainer, NULL, K.trainer_secret, sizeof K.trainer_secret, &err),
             err);
    CHECK_OK(vm_curve_key_write(tmp_path("net-clients/good"), &K.good, NULL, NULL, 0, &err), err);
}

static void curve_config(vm_config *cfg, int videos, int curve) {
    make_keys();
    vm_config_defaults(cfg);
    synthetic_manifest(cfg, videos, 0, -1);
    cfg->model.img_size = 16;
    cfg->model.patch_size = 8;
    cfg->sampler.pairs_per_video = 3;
    cfg->pipeline.chunk_samples = 2;
    cfg->pipeline.credits = 4;
    cfg->pipeline.heartbeat_ms = 50;
    cfg->pipeline.lease_timeout_ms = 2000;
    cfg->pipeline.epochs = 1;
    if (curve) {
        snprintf(cfg->pipeline.curve_secret_key, sizeof cfg->pipeline.curve_secret_key, "%s", K.trainer_secret);
        snprintf(cfg->pipeline.curve_clients, sizeof cfg->pipeline.curve_clients, "%s", K.clients);
    }
    pick_endpoint(cfg);
    vm_error err = {0};
    CHECK_OK(vm_config_validate(cfg, &err), err);
    alarm(60);
}

// What a forked worker must end with: its exit status is 42 when vm_worker_run returned `code` with
// every one of `words` in its message (0 and no words: a clean stop after one session), else 1.
typedef struct {
    int code;
    const char *words[3];
} expect;

static pid_t spawn_worker(const char *endpoint, const char *server, const vm_curve_key *self, expect want) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        vm_worker_opts o;
        child_worker_opts(&o, endpoint, fake_factory);
        o.idle_exit_s = 15;
        if (server) o.curve_server_key = server, o.curve_public_key = self->pub, o.curve_secret_key = self->sec;
        vm_error err = {0};
        int rc = vm_worker_run(&o, NULL, &err);
        int ok = rc == want.code;
        for (int i = 0; i < 3 && want.words[i]; i++) ok &= strstr(err.msg, want.words[i]) != NULL;
        if (!ok) fprintf(stderr, "worker: rc %d: %s\n", rc, err.msg);
        _exit(ok ? 42 : 1);
    }
    return pid;
}

static vm_receiver *start(const vm_config *cfg) {
    vm_receiver_opts o;
    quiet_receiver_opts(&o, 0);
    vm_receiver *r;
    vm_error err = {0};
    CHECK_OK(vm_receiver_start(&r, cfg, &o, &err), err);
    return r;
}

// Every batch of the run, pixels and records, in one buffer; each (video, draw) checked once and by
// the pixel rule.
static size_t consume_all(vm_receiver *r, int videos, uint8_t **all) {
    int V = vm_receiver_views(r), S = vm_receiver_size(r), B = 5, n;
    size_t sb = (size_t)V * S * S * 3, len = 0, cap = 1 << 20;
    uint8_t *px = malloc(B * sb), *buf = malloc(cap);
    vm_sample_meta meta[5];
    vm_view_meta vmeta[5 * 8];
    int *seen = calloc((size_t)videos * 3, sizeof(int)), bad = 0;
    vm_error err = {0};
    uint32_t epoch = 0;
    while ((n = vm_receiver_next_batch_ex(r, px, meta, vmeta, B, &epoch, NULL, &err)) > 0) {
        for (int b = 0; b < n; b++) {
            uint64_t vid = meta[b].video_id;
            int draw = (int)vmeta[b * V].frame;
            CHECK(vid < (uint64_t)videos && draw >= 0 && draw < 3, "video %llu draw %d", (unsigned long long)vid, draw);
            seen[vid * 3 + draw]++;
            for (int v = 0; v < V; v++)
                for (size_t i = 0; i < (size_t)S * S * 3; i++)
                    bad += px[b * sb + v * (size_t)S * S * 3 + i] != pix(vid, epoch, draw, v, i);
        }
        // Pixels, then the records field by field (their structs have padding bytes).
        CHECK(len + (size_t)n * (sb + 24 + V * 56) <= cap);
        memcpy(buf + len, px, (size_t)n * sb), len += (size_t)n * sb;
        for (int b = 0; b < n; b++) {
            int64_t f[] = {(int64_t)meta[b].video_id, meta[b].src_width, meta[b].src_height};
            memcpy(buf + len, f, sizeof f), len += sizeof f;
            for (int v = 0; v < V; v++) {
                const vm_view_meta *m = &vmeta[b * V + v];
                int64_t g[] = {m->frame, m->pts_ns, m->crop_x, m->crop_y, m->crop_w, m->crop_h, m->flip};
                memcpy(buf + len, g, sizeof g), len += sizeof g;
            }
        }
    }
    CHECK(n == 0, "next_batch: %s", err.msg);
    for (int i = 0; i < videos * 3; i++) CHECK(seen[i] == 1, "video %d draw %d seen %d times", i / 3, i % 3, seen[i]);
    CHECK_EQ_INT(bad, 0);
    free(seen);
    free(px);
    *all = buf;
    return len;
}

// Stats of r once it counted min_handshakes refused handshakes (those failing before the key check
// reach it asynchronously), or after 5 s.
static vm_receiver_stats stats_when(vm_receiver *r, int64_t min_handshakes) {
    vm_receiver_stats s;
    for (int i = 0; i < 500; i++) {
        vm_receiver_get_stats(r, &s);
        if (s.rejected_handshake >= min_handshakes) break;
        usleep(10000);
    }
    return s;
}

TEST(admitted_worker_delivers_the_same_batches_as_plaintext) {
    uint8_t *got[2];
    size_t len[2];
    for (int curve = 0; curve < 2; curve++) {
        vm_config cfg;
        curve_config(&cfg, 10, curve);
        pid_t w = spawn_worker(cfg.pipeline.endpoint, curve ? K.trainer.pub : NULL, &K.good, (expect){0});
        vm_receiver *r = start(&cfg);
        len[curve] = consume_all(r, 10, &got[curve]);
        vm_receiver_stats s;
        vm_receiver_get_stats(r, &s);
        vm_receiver_stop(r);
        CHECK_EQ_INT(reap(w, 10), 42);
        CHECK_EQ_INT(s.samples, 30);
        CHECK_EQ_INT(s.workers_joined, 1);
        CHECK_EQ_INT(s.rejected, 0);
        CHECK_EQ_INT(s.rejected_handshake, 0);
    }
    CHECK(len[0] == len[1] && !memcmp(got[0], got[1], len[0]), "CURVE changed what was delivered (%zu vs %zu bytes)",
          len[0], len[1]);
    free(got[0]);
    free(got[1]);
}

// This process's stderr (the receiver's warnings) into a file until capture_stderr_end, which
// returns the file's text.
static void capture_stderr_begin(int *saved) {
    fflush(stderr);
    *saved = dup(2);
    int fd = open(tmp_path("stderr.log"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && *saved >= 0);
    dup2(fd, 2);
    close(fd);
}

static char *capture_stderr_end(int saved) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = read_whole_file(tmp_path("stderr.log"), NULL);
    CHECK(text);
    return text;
}

static int count_of(const char *text, const char *word) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, word)); p++) n++;
    return n;
}

TEST(unlisted_worker_key_is_refused_logged_once_counted_and_told) {
    vm_config cfg;
    curve_config(&cfg, 4, 1);
    expect want = {VM_EAUTH, {"refused this worker's key", K.stranger.pub, "curve_clients"}};
    pid_t a = spawn_worker(cfg.pipeline.endpoint, K.trainer.pub, &K.stranger, want);
    pid_t b = spawn_worker(cfg.pipeline.endpoint, K.trainer.pub, &K.stranger, want);
    int saved;
    capture_stderr_begin(&saved);
    vm_receiver *r = start(&cfg);
    int ra = reap(a, 15), rb = reap(b, 15);
    vm_receiver_stats s = stats_when(r, 2);
    vm_receiver_stop(r);
    char *log = capture_stderr_end(saved);
    CHECK_EQ_INT(ra, 42);
    CHECK_EQ_INT(rb, 42);
    CHECK_EQ_INT(s.rejected_handshake, 2);
    CHECK_EQ_INT(s.rejected, 2);
    CHECK_EQ_INT(s.workers_joined, 0);
    CHECK_EQ_INT(count_of(log, "is not admitted"), 1);  // two refusals of one key: one line
    CHECK(strstr(log, K.stranger.pub) && strstr(log, "127.0.0.1"), "the refusal names neither key nor address:\n%s", log);
    free(log);
    char line[1024];  // the statistics line says so
    vm_receiver_format_stats(&s, 1, line, sizeof line);
    CHECK(strstr(line, "2 rejected (2 at the CURVE handshake)"), "%s", line);
}

TEST(wrong_server_key_fails_the_handshake_with_a_clear_message) {
    vm_config cfg;
    curve_config(&cfg, 4, 1);
    // The worker's key is admitted, but it expects another server: the trainer cannot decrypt its HELLO.
    expect want = {VM_EAUTH, {"handshake with the trainer at", "failed", "is the trainer's public key right?"}};
    pid_t w = spawn_worker(cfg.pipeline.endpoint, K.stranger.pub, &K.good, want);
    vm_receiver *r = start(&cfg);
    int rw = reap(w, 15);
    vm_receiver_stats s = stats_when(r, 1);
    vm_receiver_stop(r);
    CHECK_EQ_INT(rw, 42);
    CHECK(s.rejected_handshake >= 1, "no refused handshake counted");
    CHECK_EQ_INT(s.workers_joined, 0);
}

TEST(curve_at_one_end_only_is_refused_both_ways) {
    vm_config cfg;
    curve_config(&cfg, 4, 1);
    // A plaintext worker at a CURVE trainer.  Which end notices the mismatch first is a race: the
    // worker hears "mechanism mismatch", or the trainer closes first; either way it is told to use keys.
    expect want = {VM_EAUTH, {"handshake with the trainer at", "--server-key TRAINER.key --key WORKER.key_secret"}};
    pid_t w = spawn_worker(cfg.pipeline.endpoint, NULL, NULL, want);
    vm_receiver *r = start(&cfg);
    int rw = reap(w, 15);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(rw, 42);
    CHECK_EQ_INT(s.workers_joined, 0);
    CHECK_EQ_INT(s.samples, 0);
    // A CURVE worker at a plaintext trainer (the same race).
    curve_config(&cfg, 4, 0);
    expect want2 = {VM_EAUTH, {"handshake with the trainer at", "is CURVE on at both ends?"}};
    w = spawn_worker(cfg.pipeline.endpoint, K.trainer.pub, &K.good, want2);
    r = start(&cfg);
    rw = reap(w, 15);
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(rw, 42);
    CHECK_EQ_INT(s.workers_joined, 0);
}

TEST(receiver_start_refuses_bad_curve_settings_naming_the_file) {
    vm_config cfg;
    curve_config(&cfg, 2, 1);
    vm_receiver_opts o;
    vm_receiver_opts_default(&o);
    o.quiet = 1;
    vm_receiver *r = NULL;
    vm_error err = {0};
    snprintf(cfg.pipeline.curve_secret_key, sizeof cfg.pipeline.curve_secret_key, "%s", tmp_path("nope.key_secret"));
    CHECK(vm_receiver_start(&r, &cfg, &o, &err) != 0 && !r);
    CHECK(strstr(err.msg, "curve_secret_key") && strstr(err.msg, "nope.key_secret"), "%s", err.msg);
    snprintf(cfg.pipeline.curve_secret_key, sizeof cfg.pipeline.curve_secret_key, "%s", tmp_path("net-clients/good.key"));
    CHECK(vm_receiver_start(&r, &cfg, &o, &err) != 0);
    CHECK(strstr(err.msg, "good.key: no secret-key line"), "%s", err.msg);
    snprintf(cfg.pipeline.curve_secret_key, sizeof cfg.pipeline.curve_secret_key, "%s", K.trainer_secret);
    snprintf(cfg.pipeline.curve_clients, sizeof cfg.pipeline.curve_clients, "%s",
             write_text("clients-broken.txt", "public-key = " RFC_PUB "\npublic key = x\n", 0644));
    CHECK(vm_receiver_start(&r, &cfg, &o, &err) != 0);
    CHECK(strstr(err.msg, "curve_clients") && strstr(err.msg, "clients-broken.txt:2"), "%s", err.msg);
    cfg.pipeline.curve_clients[0] = 0;  // nobody admitted: an error, not a run that refuses every worker
    CHECK(vm_receiver_start(&r, &cfg, &o, &err) != 0);
    CHECK(strstr(err.msg, "no worker key is admitted"), "%s", err.msg);
    o.curve_admit = "not-a-key";
    CHECK(vm_receiver_start(&r, &cfg, &o, &err) != 0);
    CHECK(strstr(err.msg, "curve_admit") && strstr(err.msg, "9 characters"), "%s", err.msg);
    o.curve_admit = " " RFC_PUB "\n";  // admitted in memory only: starts
    CHECK_OK(vm_receiver_start(&r, &cfg, &o, &err), err);
    vm_receiver_stop(r);
}

// ---- the CLI ----------------------------------------------------------------------------------------


TEST(cli_keygen_modes_refusal_and_the_trainer_binary) {
    const char *b = vicmae_bin_or_skip();
    char name[1100], log[1100], trainer_bin[1100];
    snprintf(name, sizeof name, "%s/cli-node", vt_tmpdir());
    snprintf(log, sizeof log, "%s/keygen.log", vt_tmpdir());
    char *argv[] = {(char *)b, "keygen", name, NULL};
    CHECK_EQ_INT(run_logged(argv, log, 10), 0);
    char pub[1200], sec[1200];
    snprintf(pub, sizeof pub, "%s.key", name);
    snprintf(sec, sizeof sec, "%s.key_secret", name);
    CHECK_EQ_INT(mode_of(sec), 0600);
    vm_curve_key k;
    vm_error err = {0};
    CHECK_OK(vm_curve_key_load(sec, 1, &k, &err), err);
    char *text = read_whole_file(log, NULL);
    CHECK(text && strstr(text, k.pub) && !strstr(text, k.sec), "keygen's output: %s", text ? text : "");
    free(text);
    CHECK_EQ_INT(run_logged(argv, log, 10), 2);  // exists: refused
    text = read_whole_file(log, NULL);
    CHECK(text && strstr(text, "cli-node.key exists"), "%s", text ? text : "");
    free(text);
    vm_curve_key again;
    CHECK_OK(vm_curve_key_load(sec, 1, &again, &err), err);
    CHECK(!strcmp(again.sec, k.sec), "the refused keygen changed the secret");
    char *help[] = {(char *)b, "--help", NULL};
    CHECK_EQ_INT(run_logged(help, log, 10), 0);
    text = read_whole_file(log, NULL);
    CHECK(text && strstr(text, "  keygen "), "vicmae --help does not list keygen");
    free(text);
    // The GStreamer-free trainer binary has it too (a trainer node makes its own pair).
    snprintf(trainer_bin, sizeof trainer_bin, "%s-trainer", b);
    if (access(trainer_bin, X_OK) == 0) {
        snprintf(name, sizeof name, "%s/cli-trainer-node", vt_tmpdir());
        char *targv[] = {trainer_bin, "keygen", name, NULL};
        CHECK_EQ_INT(run_logged(targv, log, 10), 0);
        snprintf(sec, sizeof sec, "%s.key_secret", name);
        CHECK_EQ_INT(mode_of(sec), 0600);
    }
}

TEST(cli_worker_key_errors_exit_2_naming_the_file_and_refusals_exit_4) {
    const char *b = vicmae_bin_or_skip();
    make_keys();
    char log[1100], good_sec[1100], trainer_pub[1100];
    snprintf(log, sizeof log, "%s/worker.log", vt_tmpdir());
    vm_error err = {0};
    CHECK_OK(vm_curve_key_write(tmp_path("cli-good"), &K.good, NULL, good_sec, sizeof good_sec, &err), err);
    snprintf(trainer_pub, sizeof trainer_pub, "%s/net-trainer.key", vt_tmpdir());
    const char *bad_key = write_text("bad.key", "# broken\npublic-key = " RFC_PUB "\"\n", 0644);
    const char *open_sec = write_text("open.key_secret", "public-key = " RFC_PUB "\nsecret-key = " RFC_SEC "\n", 0644);
    struct { const char *server, *key, *want; } bad[] = {
        {tmp_path("missing.key"), good_sec, "missing.key"},
        {bad_key, good_sec, "bad.key:2: public-key has 41 characters"},
        {trainer_pub, open_sec, "chmod 600"},
        {trainer_pub, NULL, "--server-key and --key go together"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {(char *)b, "worker", "--connect", "tcp://127.0.0.1:9", "--idle-exit", "5", "--server-key",
                        (char *)bad[i].server, bad[i].key ? "--key" : NULL, (char *)bad[i].key, NULL};
        CHECK_EQ_INT(run_logged(argv, log, 10), 2);
        char *text = read_whole_file(log, NULL);
        CHECK(text && strstr(text, bad[i].want), "case %zu: %s", i, text ? text : "");
        free(text);
    }
    // A trainer that refuses the worker's key, and one whose public key the worker does not have.
    vm_config cfg;
    curve_config(&cfg, 2, 1);
    vm_receiver *r = start(&cfg);
    char stranger_sec[1100], other_pub[1100];
    CHECK_OK(vm_curve_key_write(tmp_path("cli-stranger"), &K.stranger, other_pub, stranger_sec, sizeof stranger_sec, &err),
             err);
    struct { const char *server, *key, *want; } refused[] = {
        {trainer_pub, stranger_sec, "refused this worker's key"},
        {other_pub, good_sec, "is the trainer's public key right?"},
    };
    for (int i = 0; i < 2; i++) {
        char *argv[] = {(char *)b, "worker", "--connect", cfg.pipeline.endpoint, "--idle-exit", "10", "--server-key",
                        (char *)refused[i].server, "--key", (char *)refused[i].key, NULL};
        CHECK_EQ_INT(run_logged(argv, log, 15), 4);
        char *text = read_whole_file(log, NULL);
        CHECK(text && strstr(text, refused[i].want), "case %d: %s", i, text ? text : "");
        free(text);
    }
    vm_receiver_stats s = stats_when(r, 2);
    vm_receiver_stop(r);
    CHECK(s.rejected_handshake >= 2, "%lld handshakes refused", (long long)s.rejected_handshake);
}

TEST(cli_run_with_curve_on_sink_batches_identical_and_training) {
    char synth[1024], s_synth[1100], dir[2][1100], log[1200], s_key[1200];
    const char *b = bin_and_data(synth, sizeof synth);
    make_keys();
    alarm(180);
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    snprintf(s_key, sizeof s_key, "pipeline.curve_secret_key=%s", K.trainer_secret);
    // The sink with 2 local workers, plaintext then CURVE (no curve_clients: only the run's own
    // workers are admitted): the stored batches are the same bytes.
    for (int k = 0; k < 2; k++) {
        snprintf(dir[k], sizeof dir[k], "%s/sink-curve%d", vt_tmpdir(), k);
        snprintf(log, sizeof log, "%s.log", dir[k]);
        char *argv[] = {(char *)b, "run", "--sink", "--config", "configs/demo.ini", "--set", s_synth,
                        "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--workers", "2", "--epochs", "1",
                        "--batch", "8", "--save-batches", dir[k], k ? "--set" : NULL, s_key, NULL};
        CHECK_EQ_INT(run_logged(argv, log, 60), 0);
        char *text = read_whole_file(log, NULL);
        CHECK(text && (strstr(text, "CURVE on") != NULL) == k, "run %d:\n%s", k, text ? text : "");
        CHECK(!k || count_of(text, "CURVE: encrypted") == 2, "the local workers did not join encrypted:\n%s", text);
        CHECK(!strstr(text, "rejected (") && !strstr(text, K.trainer.sec), "%s", text);
        free(text);
    }
    for (int i = 0;; i++) {
        char a[1200], c[1200];
        snprintf(a, sizeof a, "%s/batch-%06d.vmb", dir[0], i);
        snprintf(c, sizeof c, "%s/batch-%06d.vmb", dir[1], i);
        size_t la = 0, lc = 0;
        char *x = read_whole_file(a, &la), *y = read_whole_file(c, &lc);
        CHECK((x == NULL) == (y == NULL), "batch %d exists in one run only", i);
        if (!x) {
            CHECK(i >= 2, "only %d batches", i);
            break;
        }
        CHECK(la == lc && !memcmp(x, y, la), "%s and %s differ", a, c);
        free(x);
        free(y);
    }
    // Training: `vicmae run` starts `vicmae train` (which admits the workers' key given on its
    // command line) and the workers (their keys in the environment).
    if (access("configs/tiny.ini", R_OK)) SKIP("configs/tiny.ini not found (run from the repository root)");
    char s_out[1200];
    snprintf(s_out, sizeof s_out, "run.out_dir=%s/curve-run", vt_tmpdir());
    snprintf(log, sizeof log, "%s/curve-run.log", vt_tmpdir());
    char *argv[] = {(char *)b, "run", "--config", "configs/tiny.ini", "--workers", "2", "--set", s_synth, "--set", s_out,
                    "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "optim.steps=3", "--set", s_key, NULL};
    CHECK_EQ_INT(run_logged(argv, log, 120), 0);
    char *text = read_whole_file(log, NULL);
    CHECK(text && strstr(text, "CURVE on") && strstr(text, "train: 3/3 steps") && count_of(text, "CURVE: encrypted") >= 1,
          "%s", text ? text : "");
    free(text);
}
