// Replays the libFuzzer seed corpus tests/corpus/proto/ (and any crash reproducers added there)
// through the fuzz target, so every `make test` (and the ASan build) runs what the fuzzer found.
// VICMAE_WRITE_CORPUS=DIR makes proto_fuzz_seeds write the generated seeds there (how the committed
// corpus was made).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/harness.h"
#define FUZZ_FAIL(...) vt_fail(__FILE__, __LINE__, "fuzz property", __VA_ARGS__)
#include "tests/fuzz/fuzz_proto.c"

#define CORPUS_DIR "tests/corpus/proto"

TEST(proto_fuzz_corpus_replay) {
    DIR *d = opendir(CORPUS_DIR);
    CHECK(d != NULL, "%s missing (tests run from the repository root)", CORPUS_DIR);
    int files = 0, valid = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        void *msg;
        size_t len;
        vm_error err = {0};
        CHECK_OK(vm_batch_file_read(path, &msg, &len, &err), err);
        LLVMFuzzerTestOneInput(msg, len);
        if (fuzz_receive(msg, len) == 0) valid++;
        free(msg);
        files++;
    }
    closedir(d);
    CHECK(files >= 10 && valid >= 5, "corpus has %d files, %d valid messages", files, valid);
}

// The seeds: valid messages of both codecs across shapes and block kinds, plus a few near misses.
TEST(proto_fuzz_seeds) {
    const char *out_dir = getenv("VICMAE_WRITE_CORPUS");
    const struct { uint32_t b, v, h, w, codec, block; int kind; } seeds[] = {
        {1, 1, 1, 1, 0, 0, 0},    {1, 2, 4, 4, 1, 0, 0},   {2, 2, 8, 8, 1, 0, 2},  {3, 1, 5, 7, 0, 0, 1},
        {2, 2, 30, 24, 1, 4096, 2}, {1, 4, 16, 16, 1, 4096, 0}, {2, 3, 12, 20, 1, 0, 1}, {4, 2, 6, 6, 0, 0, 0},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        tp_batch t;
        tp_batch_init(&t, seeds[i].b, seeds[i].v, seeds[i].h, seeds[i].w, seeds[i].codec, seeds[i].kind, i);
        t.h.block_size = seeds[i].block;
        vm_error err = {0};
        size_t len;
        uint8_t *msg = tp_encode(&t, &len, &err);
        CHECK(msg != NULL, "%s", err.msg);
        CHECK_EQ_INT(fuzz_receive(msg, len), 0);
        for (int variant = 0; variant < (i < 3 ? 2 : 1); variant++) {
            if (variant) {  // a truncated and a version-2 near miss of the first seeds
                if (i == 0) len -= 3;
                else msg[4] = 2, tp_reseal(msg, len);
                CHECK(fuzz_receive(msg, len) < 0);
            }
            if (out_dir) {
                char path[1024];
                snprintf(path, sizeof path, "%s/seed-%02zu%s", out_dir, i, variant ? "-bad" : "");
                CHECK_OK(vm_batch_file_write(path, msg, len, &err), err);
            }
            n++;
        }
        free(msg);
        tp_batch_free(&t);
    }
    CHECK_EQ_INT(n, 11);
}
