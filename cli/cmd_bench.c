// cli/cmd_bench.c — `vicmae bench pipeline`: videos -> N local workers -> the sink, timed.
//
// Other benchmarks of the project are bench/bench_<name>.sh scripts (bench/run.sh runs them all);
// this command is the measuring half of bench/bench_pipeline.sh, which adds the PyTorch DataLoader
// baseline (bench/torch_dataloader.py) and prints the ratios.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/cli.h"
#include "cli/local.h"
#include "common/log.h"
#include "pipeline/dataset.h"

static void usage(FILE *f) {
    fprintf(f, "usage: vicmae bench pipeline [--data DIR|MANIFEST] [--workers 1,2] [--epochs N] [--batch B]\n"
               "                             [--warmup N] [--config F] [--set k=v ...]\n"
               "  Run the pipeline into the sink once per worker count and print, per run, one line\n"
               "  `vicmae workers=N pairs=P seconds=T pairs_per_s=X ...` (seconds from the start, worker start-up\n"
               "  included, to the last batch; steady_pairs_per_s from the first batch), then the scaling efficiency.  --warmup N epochs run first,\n"
               "  untimed, with the most workers (fills the decoder's index cache and the page cache).\n"
               "  Defaults: --data ../shared/data/videos, --workers 1,2, --epochs 2, --warmup 1; the endpoint\n"
               "  is a free loopback port.\n");
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "pipeline")) {
        fprintf(stderr, "vicmae bench: unknown benchmark '%s' (this binary measures `pipeline`; the others are "
                        "bench/bench_<name>.sh, run by `make bench`)\n", argv[1]);
        return 2;
    }
    argc--, argv++;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    vm_config cfg;
    if (vm_cli_config(&argc, argv, &cfg)) return 2;
    const char *data = "../shared/data/videos", *wlist = "1,2";
    int epochs = 2, batch = 0, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "vicmae bench: unexpected argument '%s' (or its value is missing)\n", a); usage(stderr); return 2; }
        int bad = 0;
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--workers")) wlist = v;
        else if (!strcmp(a, "--epochs")) bad = vm_cli_int("bench", a, v, 1, 1000000, &epochs);
        else if (!strcmp(a, "--batch")) bad = vm_cli_int("bench", a, v, 1, 1000000, &batch);
        else if (!strcmp(a, "--warmup")) bad = vm_cli_int("bench", a, v, 0, 1000000, &warmup);
        else { fprintf(stderr, "vicmae bench: unexpected argument '%s'\n", a); usage(stderr); return 2; }
        if (bad) return bad;
        i++;
    }
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", data);
    snprintf(cfg.pipeline.endpoint, sizeof cfg.pipeline.endpoint, "tcp://127.0.0.1:*");
    int counts[16], nc = 0, maxw = 1;
    for (const char *p = wlist;; p++) {  // "1,2,4": each in [1, 64], at most 16 of them
        char *end;
        errno = 0;
        long w = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : 0;
        if (!w || errno || w > 64 || (*end && *end != ',') || nc == 16) {
            fprintf(stderr, "vicmae bench: --workers '%s': expected a comma-separated list of up to 16 counts in [1, 64]\n",
                    wlist);
            return 2;
        }
        counts[nc++] = (int)w;
        if (w > maxw) maxw = (int)w;
        if (!*(p = end)) break;
    }
    vm_dataset ds;
    vm_error err = {0};
    if (vm_dataset_open(&ds, data, &err)) {
        fprintf(stderr, "vicmae bench pipeline: %s\n", err.msg);
        return 2;
    }
    int nvideos = ds.n;
    vm_dataset_free(&ds);
    vm_log_set_role("bench");
    if (vm_log_get_level() == VM_LOG_INFO) vm_log_set_level(VM_LOG_WARN);  // keep the output to the figures
    printf("bench pipeline: %s (%d videos), %d views of %dx%d, decode short side %d, %d pairs/video, "
           "chunks of %d, %d credits, batch %d, %d epoch%s per run, %ld cores\n",
           data, nvideos, 2, cfg.model.img_size, cfg.model.img_size, cfg.decoder.decode_short_side,
           cfg.sampler.pairs_per_video, cfg.pipeline.chunk_samples, cfg.pipeline.credits,
           batch ? batch : cfg.optim.batch_size, epochs, epochs == 1 ? "" : "s", sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    if (warmup > 0) {
        vm_sink_opts o = {.cfg = &cfg, .workers = maxw, .epochs = warmup, .batch = batch, .quiet = 1};
        vm_sink_result res;
        if (vm_sink_run(&o, &res, &err)) {
            fprintf(stderr, "vicmae bench pipeline: warm-up: %s\n", err.msg);
            return 1;
        }
    }
    double rate1 = 0;
    for (int i = 0; i < nc; i++) {
        vm_sink_opts o = {.cfg = &cfg, .workers = counts[i], .epochs = epochs, .batch = batch, .quiet = 1};
        vm_sink_result res;
        if (vm_sink_run(&o, &res, &err)) {
            fprintf(stderr, "vicmae bench pipeline: %d workers: %s\n", counts[i], err.msg);
            return 1;
        }
        double rate = res.seconds > 0 ? res.samples / res.seconds : 0;
        if (counts[i] == 1) rate1 = rate;
        printf("vicmae workers=%d pairs=%lld seconds=%.2f pairs_per_s=%.2f steady_pairs_per_s=%.2f bytes_per_pair=%.0f "
               "compression=%.2f failed=%lld data_wait_s=%.2f\n",
               counts[i], (long long)res.samples, res.seconds, rate,
               res.steady_seconds > 0 ? res.samples / res.steady_seconds : 0.0,
               res.samples ? (double)res.st.bytes_wire / res.samples : 0.0,
               res.st.bytes_wire ? (double)res.st.bytes_raw / res.st.bytes_wire : 0.0, (long long)res.st.units_failed,
               res.st.wait_s);
        if (counts[i] > 1 && rate1 > 0)
            printf("vicmae scaling efficiency %d workers: %.2f (pairs/s / (%d x 1-worker pairs/s))\n", counts[i],
                   rate / (counts[i] * rate1), counts[i]);
        fflush(stdout);
    }
    return 0;
}
