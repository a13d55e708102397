// vicmae plot RUN_DIR [--out FILE.png] [--smooth ALPHA]
//
// Draws the loss curves of a run (RUN_DIR/metrics.jsonl, one JSON object per step, trainer/loop.h)
// as RUN_DIR/loss.png: four panels, total loss, reconstruction loss, contrastive loss (with its
// weight w_con on a second axis) and learning rate, against the step.  Losses are drawn raw (light)
// and smoothed by an exponential moving average (bold).  gnuplot (Debian gnuplot-nox) draws it; we
// only turn the JSON lines into columns.  The PNG is written atomically (temp file + rename).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cli/cli.h"
#include "common/error.h"

static int usage_to(FILE *f) {
    fprintf(f, "usage: vicmae plot RUN_DIR [--out FILE.png] [--smooth ALPHA]\n"
               "  draws total, reconstruction and contrastive loss and the lr of RUN_DIR/metrics.jsonl\n"
               "  as RUN_DIR/loss.png (gnuplot); ALPHA (0..1, default 0.1) weights the moving average\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

// The number after "key": in a JSON line, or 0 when absent.  Our writer puts numbers only.
static int json_num(const char *line, const char *key, double *out) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    char *end;
    *out = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

// metrics.jsonl -> whitespace-separated columns: step total rec con w_con lr, then EMAs of the three
// losses.  Returns the number of rows, or a negative VM_E* code.
static int to_columns(const char *in_path, FILE *out, double alpha, double *wmax, vm_error *err) {
    FILE *in = fopen(in_path, "r");
    if (!in) return vm_fail(err, VM_EIO, "%s: %s", in_path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int rows = 0, lineno = 0, skipped = 0;
    double ema[3] = {0};
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        double v[6];
        static const char *keys[6] = {"step", "loss", "rec", "con", "w_con", "lr"};
        int ok = 1;
        for (int k = 0; k < 6 && ok; k++) ok = json_num(line, keys[k], &v[k]);
        if (!ok) {  // a line being written right now, or not ours: skip it, say so once
            if (line[0] != '\n' && skipped++ == 0)
                fprintf(stderr, "vicmae plot: %s:%d: not a metrics line of vicmae train (skipped)\n", in_path, lineno);
            continue;
        }
        if (v[4] > *wmax) *wmax = v[4];
        for (int k = 0; k < 3; k++) ema[k] = rows ? (1 - alpha) * ema[k] + alpha * v[1 + k] : v[1 + k];
        fprintf(out, "%.0f %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", v[0], v[1], v[2], v[3], v[4], v[5], ema[0],
                ema[1], ema[2]);
        rows++;
    }
    free(line);
    fclose(in);
    if (rows == 0) return vm_fail(err, VM_ENOTFOUND, "%s: no steps recorded yet", in_path);
    return rows;
}

int cmd_plot(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    double alpha = 0.1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage_to(stdout), 0;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--smooth") && i + 1 < argc) {
            if (vm_cli_num("plot", "--smooth", argv[++i], 0, 1, &alpha)) return 2;
        }
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else return usage();
    }
    if (!dir || !(alpha > 0 && alpha <= 1)) return usage();
    char metrics[4096], png[4096], tmp_png[4200], data[64] = "/tmp/vicmae-plot-XXXXXX";
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    snprintf(png, sizeof png, "%s", out ? out : "");
    if (!out) snprintf(png, sizeof png, "%s/loss.png", dir);
    snprintf(tmp_png, sizeof tmp_png, "%s.tmp.%d.png", png, (int)getpid());

    int fd = mkstemp(data);
    FILE *df = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!df) {
        fprintf(stderr, "vicmae plot: %s: %s\n", data, strerror(errno));
        return 1;
    }
    vm_error err = {0};
    double wmax = 0;
    int rows = to_columns(metrics, df, alpha, &wmax, &err);
    fclose(df);
    if (rows < 0) {
        fprintf(stderr, "vicmae plot: %s\n", err.msg);
        unlink(data);
        return 1;
    }

    // A missing or failing gnuplot closes the pipe early: without this, writing the script would
    // kill us (and the trainer that calls us at the end of a run) with SIGPIPE.
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe;
    sigaction(SIGPIPE, &ign, &old_pipe);
    FILE *gp = popen("gnuplot 2>&1", "w");
    if (!gp) {
        sigaction(SIGPIPE, &old_pipe, NULL);
        fprintf(stderr, "vicmae plot: cannot start gnuplot: %s\n", strerror(errno));
        unlink(data);
        return 1;
    }
    // Columns: 1 step, 2 total, 3 rec, 4 con, 5 w_con, 6 lr, 7-9 EMAs of total, rec, con.
    fprintf(gp,
            "set terminal pngcairo size 1200,800 font 'sans,10'\n"
            "set output '%s'\n"
            "set datafile separator whitespace\n"
            "set multiplot layout 2,2 title \"%s: %d steps\"\n"
            "set grid\nset xlabel 'step'\nset key top right\n"
            "set title 'total loss'\n"
            "plot '%s' u 1:2 w l lc rgb '#b0c4de' t 'raw', '' u 1:7 w l lw 2 lc rgb '#1f4e99' t 'smoothed'\n"
            "set title 'reconstruction loss (masked patches)'\n"
            "plot '%s' u 1:3 w l lc rgb '#f4c7a1' t 'raw', '' u 1:8 w l lw 2 lc rgb '#c0501c' t 'smoothed'\n"
            "set title 'contrastive loss and its weight'\nset y2tics\nset ytics nomirror\nset y2label 'w\\_con'\n"
            "set y2range [0:%g]\n"
            "plot '%s' u 1:4 w l lc rgb '#b5e0b5' t 'raw', '' u 1:9 w l lw 2 lc rgb '#2a7f2a' t 'smoothed', "
            "'' u 1:5 axes x1y2 w l dt 2 lc rgb '#555555' t 'w\\_con'\n"
            "unset y2tics\nunset y2label\nset ytics mirror\n"
            "set title 'learning rate'\nset format y '%%.1e'\n"
            "plot '%s' u 1:6 w l lw 2 lc rgb '#7b3fa0' t 'lr'\n"
            "unset multiplot\n",
            tmp_png, dir, rows, data, data, wmax > 0 ? 1.15 * wmax : 1.0, data, data);
    int st = pclose(gp);
    sigaction(SIGPIPE, &old_pipe, NULL);
    unlink(data);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "vicmae plot: gnuplot failed (exit %d)%s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                WIFEXITED(st) && WEXITSTATUS(st) == 127 ? ": not installed? apt-get install gnuplot-nox" : "");
        unlink(tmp_png);
        return 1;
    }
    if (access(tmp_png, R_OK) != 0 || rename(tmp_png, png) != 0) {
        fprintf(stderr, "vicmae plot: %s: %s\n", png, strerror(errno));
        unlink(tmp_png);
        return 1;
    }
    fflush(stderr);
    printf("plot: %d steps -> %s\n", rows, png);
    return 0;
}
