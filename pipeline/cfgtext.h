// pipeline/cfgtext.h — a configuration as INI text (what the coordinator sends to workers).
#pragma once
#include <stddef.h>
#include "common/config.h"
#include "common/error.h"

// The effective configuration as INI text (vm_config_print); *text is malloc'ed (caller frees).
int vm_config_to_text(const vm_config *cfg, char **text, size_t *len, vm_error *err);
// Defaults, then every key of the text, then validation.  origin names the text in messages.
int vm_config_from_text(vm_config *cfg, const char *text, const char *origin, vm_error *err);
