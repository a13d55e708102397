// cli/cmd_synth.c — `vicmae synth --out DIR`: generate the labeled demo dataset (pipeline/synth.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "common/io.h"
#include "common/log.h"
#include "pipeline/synth.h"

static void usage(FILE *f) {
    fprintf(f, "usage: vicmae synth [--out DIR] [--videos N] [--size WxH] [--frames N] [--fps N] [--seed S]\n"
               "  Generate small labeled videos (4 classes of textured objects moving over textured, panning\n"
               "  backgrounds), H.264/MP4, plus DIR/manifest.txt (path label id), train.txt, val.txt,\n"
               "  classes.txt.  Defaults: --out [data] synth_dir of the config, 64 videos, 128x128, 48 frames\n"
               "  at 12 fps, --seed [run] seed.  Deterministic for given options.\n");
}

int cmd_synth(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    vm_config cfg;
    if (vm_cli_config(&argc, argv, &cfg)) return 2;
    vm_synth_opts o;
    vm_synth_opts_default(&o);
    o.out_dir = cfg.data.synth_dir;
    o.seed = (uint64_t)cfg.run.seed;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "vicmae synth: unexpected argument '%s' (or its value is missing)\n", a); usage(stderr); return 2; }
        int bad = 0;
        if (!strcmp(a, "--out")) o.out_dir = v;
        else if (!strcmp(a, "--videos")) bad = vm_cli_int("synth", a, v, 1, 1000000, &o.videos);
        else if (!strcmp(a, "--frames")) bad = vm_cli_int("synth", a, v, 2, 1000000, &o.frames);
        else if (!strcmp(a, "--fps")) bad = vm_cli_int("synth", a, v, 1, 1000, &o.fps);
        else if (!strcmp(a, "--seed")) bad = vm_cli_u64("synth", a, v, &o.seed);
        else if (!strcmp(a, "--size")) {
            int w, h, n = -1;
            if (sscanf(v, "%dx%d%n", &w, &h, &n) != 2 || v[n] || w < 16 || h < 16 || w > 8192 || h > 8192 || w % 2 ||
                h % 2) {
                fprintf(stderr, "vicmae synth: --size '%s': expected WxH, even, each in [16, 8192]\n", v);
                return 2;
            }
            o.width = w, o.height = h;
        } else { fprintf(stderr, "vicmae synth: unexpected argument '%s'\n", a); usage(stderr); return 2; }
        if (bad) return bad;
        i++;
    }
    vm_error err = {0};
    double t0 = vm_now();
    if (vm_synth_generate(&o, &err)) {
        fprintf(stderr, "vicmae synth: %s\n", err.msg);
        return err.code == VM_EINVAL ? 2 : 1;
    }
    vm_info("synth: %d videos (%dx%d, %d frames at %d fps, %d classes) in %s/ in %.1f s", o.videos, o.width,
            o.height, o.frames, o.fps, VM_SYNTH_CLASSES, o.out_dir, vm_now() - t0);
    return 0;
}
