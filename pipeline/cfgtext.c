// pipeline/cfgtext.c — configuration to and from INI text.
#include "pipeline/cfgtext.h"
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>

int vm_config_to_text(const vm_config *cfg, char **text, size_t *len, vm_error *err) {
    *text = NULL;
    *len = 0;
    FILE *f = open_memstream(text, len);
    if (!f) return vm_fail(err, VM_ENOMEM, "config text: out of memory");
    vm_config_print(cfg, f);
    if (fclose(f) != 0 || !*text) return vm_fail(err, VM_ENOMEM, "config text: out of memory");
    return 0;
}

typedef struct { vm_config *cfg; const char *origin; vm_error *err; int rc; } parse_ctx;

static int on_key(void *user, const char *section, const char *key, const char *value) {
    parse_ctx *p = user;
    if (p->rc) return 0;
    p->rc = vm_config_set(p->cfg, section, key, value, p->origin, p->err);
    return p->rc == 0;
}

int vm_config_from_text(vm_config *cfg, const char *text, const char *origin, vm_error *err) {
    vm_config_defaults(cfg);
    parse_ctx p = {cfg, origin, err, 0};
    int line = ini_parse_string(text, on_key, &p);
    if (p.rc) return p.rc;
    if (line != 0) return vm_fail(err, VM_EINVAL, "%s: INI syntax error on line %d", origin, line);
    return vm_config_validate(cfg, err);
}
