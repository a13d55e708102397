// pipeline/dataset.c — manifest reader and recursive directory scan (see dataset.h).
#include "pipeline/dataset.h"
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *video_exts[] = {"mp4", "mkv", "avi", "mov", "webm", "m4v", "mpg", "mpeg", "ogv", "flv", "wmv", "ts"};

int vm_dataset_is_video_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (size_t i = 0; i < sizeof video_exts / sizeof video_exts[0]; i++)
        if (!strcasecmp(dot + 1, video_exts[i])) return 1;
    return 0;
}

void vm_dataset_free(vm_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) free(ds->videos[i].path);
    free(ds->videos);
    ds->videos = NULL;
    ds->n = 0;
}

static int push(vm_dataset *ds, int *cap, char *path, int label, int64_t id, vm_error *err) {
    if (ds->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        vm_video *v = realloc(ds->videos, (size_t)nc * sizeof *v);
        if (!v) { free(path); return vm_fail(err, VM_ENOMEM, "%s: out of memory", ds->source); }
        ds->videos = v;
        *cap = nc;
    }
    ds->videos[ds->n++] = (vm_video){path, label, id};
    return 0;
}

// ---- directory scan ------------------------------------------------------------------------

typedef struct { char **v; int n, cap; } strvec;

static int strvec_push(strvec *s, const char *str) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        char **v = realloc(s->v, (size_t)nc * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(str))) return -1;
    s->n++;
    return 0;
}

static void strvec_free(strvec *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Collect video files under dir (absolute) into out; depth guards against symlink loops.
static int scan(const char *dir, strvec *out, int depth, vm_error *err) {
    if (depth > 32) return vm_fail(err, VM_EINVAL, "%s: directories nested too deep (symlink loop?)", dir);
    DIR *d = opendir(dir);
    if (!d) return vm_fail(err, VM_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    char path[PATH_MAX];
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;  // ., .., hidden files
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;  // dangling link: not a video we can read
        if (S_ISDIR(st.st_mode)) rc = scan(path, out, depth + 1, err);
        else if (S_ISREG(st.st_mode) && vm_dataset_is_video_name(e->d_name) && strvec_push(out, path))
            rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir);
    }
    closedir(d);
    return rc;
}

static int open_dir(vm_dataset *ds, const char *root, vm_error *err) {
    strvec files = {0}, classes = {0};
    int cap = 0, rc = scan(root, &files, 0, err);
    if (rc) goto done;
    qsort(files.v, files.n, sizeof *files.v, cmp_str);
    size_t rl = strlen(root);
    // First-level sub-directories that hold videos, sorted: the ImageFolder class list.
    for (int i = 0; i < files.n; i++) {
        const char *rel = files.v[i] + rl + 1, *slash = strchr(rel, '/');
        if (!slash) continue;
        char cls[PATH_MAX];
        snprintf(cls, sizeof cls, "%.*s", (int)(slash - rel), rel);
        if (!classes.n || strcmp(classes.v[classes.n - 1], cls))  // files are sorted: groups are contiguous
            if (strvec_push(&classes, cls)) { rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", root); goto done; }
    }
    for (int i = 0; i < files.n && !rc; i++) {
        const char *rel = files.v[i] + rl + 1, *slash = strchr(rel, '/');
        int label = -1;
        if (slash)
            for (int c = 0; c < classes.n; c++)
                if (!strncmp(classes.v[c], rel, slash - rel) && classes.v[c][slash - rel] == 0) { label = c; break; }
        char *p = strdup(files.v[i]);
        rc = p ? push(ds, &cap, p, label, i, err) : vm_fail(err, VM_ENOMEM, "%s: out of memory", root);
    }
done:
    strvec_free(&files);
    strvec_free(&classes);
    return rc;
}

// ---- manifest ------------------------------------------------------------------------------

// Split line in place into up to 3 fields (tabs when the line has one, else runs of blanks).
static int split(char *line, char *f[3]) {
    const char *sep = strchr(line, '\t') ? "\t" : " \t";
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, sep, &save); t; t = strtok_r(NULL, sep, &save)) {
        if (n == 3) return 4;
        f[n++] = t;
    }
    return n;
}

static int parse_int64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = ((const vm_video *)a)->id, y = ((const vm_video *)b)->id;
    return x < y ? -1 : x > y;
}

static int open_manifest(vm_dataset *ds, const char *file, vm_error *err) {
    FILE *f = fopen(file, "r");
    if (!f) return vm_fail(err, VM_EIO, "%s: %s", file, strerror(errno));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    *slash = 0;  // file is absolute (realpath), so there is always a slash
    if (!dir[0]) snprintf(dir, sizeof dir, "/");
    char *line = NULL;
    size_t lcap = 0;
    int cap = 0, rc = 0, lineno = 0;
    ssize_t len;
    while (!rc && (len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        char *p = line;
        while (*p == ' ') p++;
        if (!*p || *p == '#') continue;
        char *fld[3] = {0};
        int nf = split(p, fld);
        if (nf < 1 || nf > 3) { rc = vm_fail(err, VM_EINVAL, "%s:%d: expected PATH [LABEL [ID]]", file, lineno); break; }
        int64_t label = -1, id = ds->n;
        if (nf >= 2 && (parse_int64(fld[1], &label) || label < -1 || label > INT32_MAX)) {
            rc = vm_fail(err, VM_EINVAL, "%s:%d: label '%s' is not an integer >= -1", file, lineno, fld[1]);
            break;
        }
        if (nf == 3 && (parse_int64(fld[2], &id) || id < 0)) {
            rc = vm_fail(err, VM_EINVAL, "%s:%d: id '%s' is not an integer >= 0", file, lineno, fld[2]);
            break;
        }
        char path[PATH_MAX];
        if (fld[0][0] == '/') snprintf(path, sizeof path, "%s", fld[0]);
        else snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") ? dir : "", fld[0]);
        char *dup = strdup(path);
        rc = dup ? push(ds, &cap, dup, (int)label, id, err) : vm_fail(err, VM_ENOMEM, "%s: out of memory", file);
    }
    free(line);
    fclose(f);
    if (rc) return rc;
    // Ids seed the sampler: two videos with one id would draw identical samples.
    vm_video *sorted = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *sorted);
    if (!sorted) return vm_fail(err, VM_ENOMEM, "%s: out of memory", file);
    if (ds->n) memcpy(sorted, ds->videos, (size_t)ds->n * sizeof *sorted);
    qsort(sorted, ds->n, sizeof *sorted, cmp_id);
    for (int i = 1; i < ds->n && !rc; i++)
        if (sorted[i].id == sorted[i - 1].id)
            rc = vm_fail(err, VM_EINVAL, "%s: id %lld is used twice (%s, %s)", file, (long long)sorted[i].id,
                         sorted[i - 1].path, sorted[i].path);
    free(sorted);
    return rc;
}

int vm_dataset_open(vm_dataset *ds, const char *path, vm_error *err) {
    memset(ds, 0, sizeof *ds);
    snprintf(ds->source, sizeof ds->source, "%s", path);
    char abs[PATH_MAX];
    if (!path[0]) return vm_fail(err, VM_EINVAL, "dataset: empty path");
    if (!realpath(path, abs)) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (stat(abs, &st) != 0) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    int rc = S_ISDIR(st.st_mode) ? open_dir(ds, abs, err) : open_manifest(ds, abs, err);
    if (!rc && ds->n == 0)
        rc = vm_fail(err, VM_ENOTFOUND, "%s: no videos (%s)", path,
                     S_ISDIR(st.st_mode) ? "no file with a video extension below it" : "empty manifest");
    if (rc) vm_dataset_free(ds);
    return rc;
}

int vm_dataset_open_config(vm_dataset *ds, const vm_config *cfg, vm_error *err) {
    if (cfg->data.path[0]) return vm_dataset_open(ds, cfg->data.path, err);
    char m[VM_PATH_MAX + 16];
    snprintf(m, sizeof m, "%s/manifest.txt", cfg->data.synth_dir);
    struct stat st;
    return vm_dataset_open(ds, stat(m, &st) == 0 ? m : cfg->data.synth_dir, err);
}
