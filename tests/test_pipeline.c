// tests/test_pipeline.c — dataset, control protocol, coordinator rules, config text (no sockets).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "common/io.h"
#include "pipeline/coordinator.h"
#include "pipeline/dataset.h"
#include "pipeline/wire.h"
#include "tests/harness.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

TEST(manifest_fields_defaults_and_relative_paths) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/m1", vt_tmpdir());
    vm_error err = {0};
    CHECK_OK(vm_mkdirs(dir, &err), err);
    snprintf(path, sizeof path, "%s/list.txt", dir);
    write_text(path, "# comment\n\na.mp4\nsub/b.mkv 3\n/abs/c.avi 2 17\nwith space.mp4\t1\t9\n");
    vm_dataset ds;
    CHECK_OK(vm_dataset_open(&ds, path, &err), err);
    CHECK_EQ_INT(ds.n, 4);
    char want[800];
    char real[600];
    CHECK(realpath(dir, real));
    snprintf(want, sizeof want, "%s/a.mp4", real);
    CHECK(!strcmp(ds.videos[0].path, want), "%s vs %s", ds.videos[0].path, want);
    CHECK_EQ_INT(ds.videos[0].label, -1);
    CHECK_EQ_INT(ds.videos[0].id, 0);
    CHECK_EQ_INT(ds.videos[1].label, 3);
    CHECK_EQ_INT(ds.videos[1].id, 1);
    CHECK(!strcmp(ds.videos[2].path, "/abs/c.avi"));
    CHECK_EQ_INT(ds.videos[2].id, 17);
    snprintf(want, sizeof want, "%s/with space.mp4", real);
    CHECK(!strcmp(ds.videos[3].path, want), "%s", ds.videos[3].path);
    CHECK_EQ_INT(ds.videos[3].label, 1);
    vm_dataset_free(&ds);
}

TEST(manifest_errors_name_file_and_line) {
    char path[700];
    vm_error err = {0};
    vm_dataset ds;
    snprintf(path, sizeof path, "%s/bad1.txt", vt_tmpdir());
    write_text(path, "a.mp4 x\n");
    CHECK(vm_dataset_open(&ds, path, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "bad1.txt:1") && strstr(err.msg, "label"), "%s", err.msg);
    write_text(path, "a.mp4 1 5\nb.mp4 1 5\n");
    CHECK(vm_dataset_open(&ds, path, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "id 5 is used twice"), "%s", err.msg);
    write_text(path, "# nothing\n");
    CHECK(vm_dataset_open(&ds, path, &err) == VM_ENOTFOUND);
    CHECK(vm_dataset_open(&ds, "/nonexistent/vicmae/x", &err) == VM_EIO);
    CHECK(strstr(err.msg, "/nonexistent/vicmae/x"), "%s", err.msg);
}

TEST(directory_scan_sorted_recursive_imagefolder_labels) {
    char root[600], p[800];
    vm_error err = {0};
    snprintf(root, sizeof root, "%s/scan", vt_tmpdir());
    const char *files[] = {"b_cls/x/2.mp4", "b_cls/1.MKV", "a_cls/z.avi", "top.webm", "a_cls/notes.txt", ".hidden/h.mp4"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", root, files[i]);
        char d[800];
        snprintf(d, sizeof d, "%s", p);
        *strrchr(d, '/') = 0;
        CHECK_OK(vm_mkdirs(d, &err), err);
        write_text(p, "x");
    }
    vm_dataset ds;
    CHECK_OK(vm_dataset_open(&ds, root, &err), err);
    CHECK_EQ_INT(ds.n, 4);  // the .txt and the hidden directory are not videos
    const char *rel[] = {"a_cls/z.avi", "b_cls/1.MKV", "b_cls/x/2.mp4", "top.webm"};
    int labels[] = {0, 1, 1, -1};
    for (int i = 0; i < 4; i++) {
        const char *s = strstr(ds.videos[i].path, "/scan/");
        CHECK(s && !strcmp(s + 6, rel[i]), "%d: %s", i, ds.videos[i].path);
        CHECK_EQ_INT(ds.videos[i].label, labels[i]);
        CHECK_EQ_INT(ds.videos[i].id, i);
    }
    vm_dataset_free(&ds);
}

TEST(shared_videos_scan) {
    const char *d = vt_data_dir();
    if (!d) SKIP("no shared data (../shared/data or $VICMAE_DATA)");
    char p[600];
    snprintf(p, sizeof p, "%s/videos", d);
    vm_dataset ds;
    vm_error err = {0};
    CHECK_OK(vm_dataset_open(&ds, p, &err), err);
    CHECK_EQ_INT(ds.n, 34);
    for (int i = 1; i < ds.n; i++) CHECK(strcmp(ds.videos[i - 1].path, ds.videos[i].path) < 0);
    vm_dataset_free(&ds);
}

TEST(wire_roundtrip_and_rejections) {
    vm_wire_msg m = {.type = VM_MSG_DATA, .flags = VM_WIRE_F_LAST, .epoch = 7, .seq = 3, .count = 4,
                     .session = 0x1234567890abcdefull, .unit = 99, .arg = 5};
    uint8_t b[VM_WIRE_HDR_SIZE];
    vm_wire_encode(&m, b);
    vm_wire_msg o;
    vm_error err = {0};
    CHECK_OK(vm_wire_decode(b, sizeof b, &o, &err), err);
    CHECK(o.type == m.type && o.flags == m.flags && o.epoch == 7 && o.seq == 3 && o.count == 4 &&
          o.session == m.session && o.unit == 99 && o.arg == 5 && o.major == VM_WIRE_MAJOR);
    CHECK(vm_wire_decode(b, sizeof b - 1, &o, &err) == VM_ECORRUPT);
    uint8_t c[VM_WIRE_HDR_SIZE];
    memcpy(c, b, sizeof c);
    c[0] ^= 0xff;
    CHECK(vm_wire_decode(c, sizeof c, &o, &err) == VM_ECORRUPT);
    memcpy(c, b, sizeof c);
    c[4] = VM_WIRE_MAJOR + 1;  // another major version
    CHECK(vm_wire_decode(c, sizeof c, &o, &err) == VM_EVERSION);
    CHECK(strstr(err.msg, "protocol version 2.0") != NULL, "%s", err.msg);
    memcpy(c, b, sizeof c);
    c[8] = 200;  // unknown type
    CHECK(vm_wire_decode(c, sizeof c, &o, &err) == VM_ECORRUPT);
}

TEST(config_text_roundtrip) {
    vm_config a, b;
    vm_config_defaults(&a);
    a.model.img_size = 48;
    a.sampler.pairs_per_video = 7;
    snprintf(a.data.path, sizeof a.data.path, "/x/y z");
    char *text;
    size_t len;
    vm_error err = {0};
    CHECK_OK(vm_config_to_text(&a, &text, &len, &err), err);
    CHECK_OK(vm_config_from_text(&b, text, "test", &err), err);
    free(text);
    CHECK_EQ_INT(b.model.img_size, 48);
    CHECK_EQ_INT(b.sampler.pairs_per_video, 7);
    CHECK(!strcmp(b.data.path, "/x/y z"));
    CHECK(vm_config_from_text(&b, "[model]\nimg_size = -3\n", "test", &err) == VM_EINVAL);
}

// ---- coordinator ------------------------------------------------------------------------------

static vm_coord *mk(int n, int epochs, double timeout) {
    vm_coord_opts o = {.n_units = n, .epochs = epochs, .seed = 1, .lease_timeout = timeout, .max_attempts = 3};
    vm_coord *c = vm_coord_new(&o, 0);
    CHECK(c);
    return c;
}

TEST(coord_every_unit_once_per_epoch_shuffled) {
    vm_coord *c = mk(10, 2, 5);
    int w = vm_coord_add_worker(c, 0);
    int order[2][10];
    vm_epoch_summary s;
    for (int e = 0; e < 2; e++) {
        int seen[10] = {0};
        for (int i = 0; i < 10; i++) {
            vm_lease l;
            CHECK_EQ_INT(vm_coord_lease(c, w, 0, &l), 1);
            CHECK_EQ_INT(l.epoch, e);
            CHECK_EQ_INT(l.first_seq, 0);
            seen[l.unit]++;
            order[e][i] = (int)l.unit;
            CHECK_EQ_INT(vm_coord_chunk(c, w, l.epoch, l.unit, 0, 0, 2, 100), VM_CHUNK_ACCEPT);
            CHECK_EQ_INT(vm_coord_chunk(c, w, l.epoch, l.unit, 0, 0, 2, 100), VM_CHUNK_DUPLICATE);
            CHECK_EQ_INT(vm_coord_chunk(c, w, l.epoch, l.unit, 2, 1, 2, 100), VM_CHUNK_INVALID);  // a hole
            CHECK_EQ_INT(vm_coord_chunk(c, w, l.epoch, l.unit, 1, 1, 1, 50), VM_CHUNK_ACCEPT);
        }
        for (int u = 0; u < 10; u++) CHECK_EQ_INT(seen[u], 1);
        CHECK_EQ_INT(vm_coord_next_summary(c, &s), 1);
        CHECK_EQ_INT(s.epoch, e);
        CHECK_EQ_INT(s.delivered, 10);
        CHECK_EQ_INT(s.samples, 30);
        CHECK_EQ_INT(s.bytes, 1500);
        CHECK_EQ_INT(s.duplicates, 10);
    }
    CHECK(memcmp(order[0], order[1], sizeof order[0]) != 0, "the two epochs visited units in the same order");
    vm_lease l;
    CHECK_EQ_INT(vm_coord_lease(c, w, 0, &l), -1);
    CHECK(vm_coord_finished(c));
    // A late chunk of a finished run is a duplicate, never a delivery.
    CHECK_EQ_INT(vm_coord_chunk(c, w, 1, 0, 0, 1, 1, 1), VM_CHUNK_DUPLICATE);
    vm_coord_free(c);
}

// A resumed run: epoch 1 from position 4 of its order, the unit there from chunk 1.  The units
// before it are never leased, the epoch still completes (its summary counts them skipped), and the
// next epoch is a whole one in its own order.
TEST(coord_start_position_skips_consumed_units_and_chunks) {
    vm_coord_opts o = {.n_units = 10, .epochs = 3, .seed = 1, .lease_timeout = 5, .max_attempts = 3,
                       .start_epoch = 1, .start_unit = 4, .start_seq = 1};
    vm_coord *c = vm_coord_new(&o, 0);
    CHECK(c);
    uint32_t order[10];
    vm_coord_unit_order(1, 1, 10, order);
    int w = vm_coord_add_worker(c, 0);
    for (int i = 4; i < 10; i++) {
        vm_lease l;
        CHECK_EQ_INT(vm_coord_lease(c, w, 0, &l), 1);
        CHECK_EQ_INT(l.epoch, 1);
        CHECK_EQ_INT(l.unit, order[i]);
        CHECK_EQ_INT(l.first_seq, i == 4 ? 1 : 0);
        if (i == 4) CHECK_EQ_INT(vm_coord_chunk(c, w, 1, l.unit, 0, 0, 2, 10), VM_CHUNK_DUPLICATE);  // consumed before
        for (uint32_t q = l.first_seq; q < 2; q++)
            CHECK_EQ_INT(vm_coord_chunk(c, w, 1, l.unit, q, q == 1, 2, 10), VM_CHUNK_ACCEPT);
    }
    vm_epoch_summary s;
    CHECK_EQ_INT(vm_coord_next_summary(c, &s), 1);
    CHECK_EQ_INT(s.epoch, 1);
    CHECK_EQ_INT(s.skipped, 4);
    CHECK_EQ_INT(s.delivered, 6);
    CHECK_EQ_INT(s.samples, 22);  // 5 whole units of 4 samples + the head unit's last chunk
    CHECK_EQ_INT(vm_coord_epoch(c), 2);
    vm_lease l;
    CHECK_EQ_INT(vm_coord_lease(c, w, 0, &l), 1);
    vm_coord_unit_order(1, 2, 10, order);
    CHECK_EQ_INT(l.unit, order[0]);
    CHECK_EQ_INT(l.first_seq, 0);
    vm_coord_free(c);
    // Starting at or past the last epoch: the run is over; a position outside the epoch is refused.
    o.start_epoch = 3, o.start_unit = 0, o.start_seq = 0;
    CHECK((c = vm_coord_new(&o, 0)));
    CHECK(vm_coord_finished(c));
    CHECK_EQ_INT(vm_coord_lease(c, vm_coord_add_worker(c, 0), 0, &l), -1);
    vm_coord_free(c);
    o.start_epoch = 0, o.start_unit = 10;
    CHECK(vm_coord_new(&o, 0) == NULL);
}

TEST(coord_lost_worker_reissue_resumes_after_delivered_chunks) {
    vm_coord *c = mk(3, 1, 1.0);
    int a = vm_coord_add_worker(c, 0), b = vm_coord_add_worker(c, 0);
    vm_lease la, lb;
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &la), 1);
    CHECK_EQ_INT(vm_coord_chunk(c, a, 0, la.unit, 0, 0, 2, 10), VM_CHUNK_ACCEPT);  // chunk 0 of 2 delivered
    // b stays alive, a goes silent.
    vm_coord_touch(c, b, 1.5);
    int lost[4];
    CHECK_EQ_INT(vm_coord_expire(c, 1.6, lost, 4), 1);
    CHECK_EQ_INT(lost[0], a);
    CHECK(!vm_coord_worker_alive(c, a));
    // The re-issued unit comes first and skips the delivered chunk.
    CHECK_EQ_INT(vm_coord_lease(c, b, 1.6, &lb), 1);
    CHECK_EQ_INT(lb.unit, la.unit);
    CHECK_EQ_INT(lb.first_seq, 1);
    // The presumed-dead worker was only slow: its chunk 1 arrives first and is delivered; b's copy is
    // then a duplicate.  Either way the unit's samples are delivered once.
    CHECK_EQ_INT(vm_coord_chunk(c, a, 0, la.unit, 1, 1, 2, 10), VM_CHUNK_ACCEPT);
    CHECK_EQ_INT(vm_coord_chunk(c, b, 0, lb.unit, 1, 1, 2, 10), VM_CHUNK_DUPLICATE);
    // A stale FAIL for it is ignored.
    CHECK_EQ_INT(vm_coord_fail(c, b, 0, lb.unit, -3), 0);
    for (int i = 0; i < 2; i++) {
        vm_lease l;
        CHECK_EQ_INT(vm_coord_lease(c, b, 2, &l), 1);
        CHECK_EQ_INT(vm_coord_chunk(c, b, 0, l.unit, 0, 1, 2, 10), VM_CHUNK_ACCEPT);
    }
    vm_epoch_summary s;
    CHECK_EQ_INT(vm_coord_next_summary(c, &s), 1);
    CHECK_EQ_INT(s.delivered, 3);
    CHECK_EQ_INT(s.samples, 8);
    CHECK_EQ_INT(s.reissued, 1);
    CHECK_EQ_INT(s.duplicates, 1);
    vm_coord_free(c);
}

TEST(coord_failures_close_units_and_unit_lost_too_often_fails) {
    vm_coord *c = mk(2, 1, 1.0);
    int a = vm_coord_add_worker(c, 0);
    vm_lease l;
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &l), 1);
    CHECK_EQ_INT(vm_coord_fail(c, a, 0, l.unit, -3 /* VM_ECORRUPT */), 1);
    CHECK_EQ_INT(vm_coord_fail(c, a, 0, l.unit, -3), 0);  // counted once
    // The other unit: its worker dies three times (a video that crashes the decoder).
    double t = 0;
    int w = a;
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(vm_coord_lease(c, w, t, &l), 1);
        int lost[2];
        t += 2;
        CHECK_EQ_INT(vm_coord_expire(c, t, lost, 2), 1);
        w = vm_coord_add_worker(c, t);
    }
    CHECK(vm_coord_finished(c), "the epoch must end: one unit corrupt, one lost 3 times");
    vm_epoch_summary s;
    CHECK_EQ_INT(vm_coord_next_summary(c, &s), 1);
    CHECK_EQ_INT(s.failed, 2);
    CHECK_EQ_INT(s.failed_by_code[3], 1);
    CHECK_EQ_INT(s.failed_by_code[6], 1);
    CHECK_EQ_INT(s.reissued, 2);
    vm_coord_free(c);
}

TEST(coord_bye_reissues_and_wait_at_epoch_end) {
    vm_coord *c = mk(2, 2, 10);
    int a = vm_coord_add_worker(c, 0), b = vm_coord_add_worker(c, 0);
    vm_lease l1, l2, l3;
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &l1), 1);
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &l2), 1);
    CHECK_EQ_INT(vm_coord_lease(c, b, 0, &l3), 0);  // nothing pending: epoch 1 waits for epoch 0
    CHECK_EQ_INT(vm_coord_worker_leases(c, a), 2);
    CHECK_EQ_INT(vm_coord_remove_worker(c, a), 2);
    CHECK_EQ_INT(vm_coord_outstanding(c), 0);
    CHECK_EQ_INT(vm_coord_lease(c, b, 0, &l3), 1);
    CHECK_EQ_INT(l3.epoch, 0);
    vm_coord_free(c);
}

TEST(coord_lease_limit_reissue_exempt_failed_records_in_order) {
    vm_coord *c = mk(6, 2, 1.0);
    uint32_t order[6], order1[6];
    vm_coord_unit_order(1, 0, 6, order);
    vm_coord_unit_order(1, 1, 6, order1);
    CHECK(memcmp(order, order1, sizeof order) != 0, "epochs 0 and 1 have the same order");
    int a = vm_coord_add_worker(c, 0), b = vm_coord_add_worker(c, 0);
    vm_lease l[6];
    vm_coord_set_lease_limit(c, 2);  // positions 0 and 1 only
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &l[0]), 1);
    CHECK_EQ_INT(vm_coord_lease(c, a, 0, &l[1]), 1);
    CHECK_EQ_INT(vm_coord_lease(c, b, 0, &l[2]), 0);
    CHECK_EQ_INT(l[0].unit, order[0]);
    CHECK_EQ_INT(l[1].unit, order[1]);
    uint32_t fe;
    uint64_t fu;
    CHECK_EQ_INT(vm_coord_next_failed(c, &fe, &fu), 0);
    CHECK_EQ_INT(vm_coord_fail(c, a, 0, l[0].unit, -3), 1);
    // a is lost: its other unit goes back and is leased even below the limit (it was leased before).
    vm_coord_touch(c, b, 1.5);
    int lost[2];
    CHECK_EQ_INT(vm_coord_expire(c, 1.6, lost, 2), 1);
    vm_coord_set_lease_limit(c, 0);
    CHECK_EQ_INT(vm_coord_lease(c, b, 1.6, &l[2]), 1);
    CHECK_EQ_INT(l[2].unit, order[1]);
    CHECK_EQ_INT(vm_coord_lease(c, b, 1.6, &l[3]), 0);
    // ... and lost twice more (b silent, then w leaves): the third loss fails it, after the first failure.
    CHECK_EQ_INT(vm_coord_expire(c, 3.0, lost, 2), 1);
    int w3 = vm_coord_add_worker(c, 3.0);
    CHECK_EQ_INT(vm_coord_lease(c, w3, 3.0, &l[3]), 1);
    CHECK_EQ_INT(l[3].unit, order[1]);
    CHECK_EQ_INT(vm_coord_remove_worker(c, w3), 0);
    CHECK_EQ_INT(vm_coord_next_failed(c, &fe, &fu), 1);
    CHECK(fe == 0 && fu == order[0], "first failure: epoch %u unit %llu", fe, (unsigned long long)fu);
    CHECK_EQ_INT(vm_coord_next_failed(c, &fe, &fu), 1);
    CHECK(fe == 0 && fu == order[1], "second failure: epoch %u unit %llu", fe, (unsigned long long)fu);
    CHECK_EQ_INT(vm_coord_next_failed(c, &fe, &fu), 0);
    // The rest of epoch 0 in order, one position at a time; epoch 1 waits for the limit 6 + 1.
    int w = vm_coord_add_worker(c, 10);
    for (int p = 2; p < 6; p++) {
        vm_coord_set_lease_limit(c, p + 1);
        CHECK_EQ_INT(vm_coord_lease(c, w, 10, &l[4]), 1);
        CHECK_EQ_INT(l[4].unit, order[p]);
        CHECK_EQ_INT(vm_coord_lease(c, w, 10, &l[5]), 0);
        CHECK_EQ_INT(vm_coord_chunk(c, w, 0, l[4].unit, 0, 1, 3, 10), VM_CHUNK_ACCEPT);
    }
    CHECK_EQ_INT(vm_coord_epoch(c), 1);
    CHECK_EQ_INT(vm_coord_lease(c, w, 10, &l[5]), 0);
    vm_coord_set_lease_limit(c, 7);
    CHECK_EQ_INT(vm_coord_lease(c, w, 10, &l[5]), 1);
    CHECK(l[5].epoch == 1 && l[5].unit == order1[0], "epoch %u unit %llu", l[5].epoch, (unsigned long long)l[5].unit);
    vm_coord_free(c);
}
