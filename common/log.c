#include "common/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static vm_log_level current = VM_LOG_INFO;
static char role[32];

void vm_log_set_level(vm_log_level level) { current = level; }
vm_log_level vm_log_get_level(void) { return current; }
void vm_log_set_role(const char *r) { snprintf(role, sizeof role, "%s", r ? r : ""); }

void vm_log_init_from_env(void) {
    const char *e = getenv("VICMAE_LOG");
    if (!e) return;
    if (!strcasecmp(e, "debug")) current = VM_LOG_DEBUG;
    else if (!strcasecmp(e, "info")) current = VM_LOG_INFO;
    else if (!strcasecmp(e, "warn")) current = VM_LOG_WARN;
    else if (!strcasecmp(e, "error")) current = VM_LOG_ERROR;
    else fprintf(stderr, "vicmae: VICMAE_LOG=%s is not a level (debug, info, warn or error): logging at %s\n", e,
                 current == VM_LOG_DEBUG ? "debug" : current == VM_LOG_INFO ? "info" : current == VM_LOG_WARN ? "warn" : "error");
}

void vm_log(vm_log_level level, const char *fmt, ...) {
    if (level > current) return;
    static const char *names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char line[4096];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03d vicmae[%d%s%s] %s ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), role[0] ? " " : "", role, names[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line) vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);  // one write per line so that processes do not interleave
}
