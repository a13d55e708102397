// cli/cli.h — what the subcommands of `vicmae` share.
//
// Each subcommand lives in cli/cmd_<name>.c as `int cmd_<name>(int argc, char **argv)` (argv[0] is
// the subcommand name) and returns the process exit status: 0 success, 1 failure, 2 usage or
// invalid input.  The table of subcommands is in cli/main.c.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/config.h"

// Standard config options, shared by every command that takes a config:
//   --config FILE   (default configs/demo.ini when present, else the built-in defaults)
//   --set section.key=value   (repeatable)
// vm_cli_config consumes them from argv (compacting argv, updating *argc), loads and validates.
// On error it prints the reason and returns non-zero.
int vm_cli_config(int *argc, char **argv, vm_config *cfg);
// The same for commands that read a checkpoint: without --config, the configuration stored in
// the checkpoint (its "config" metadata) is the base that --set applies to.
int vm_cli_config_ckpt(int *argc, char **argv, const char *ckpt, vm_config *cfg);
// For commands that take `--resume X` (the last one; without it: vm_cli_config, state_path ""):
// the training state X means (vm_train_state_path, into state_path unless it is NULL) must be
// readable, and without --config its stored configuration is the base that --set applies to.
// --resume stays in argv for the command's own parsing.  1 when it cannot be read (the reason printed), 2 on a config error.
int vm_cli_config_resume(int *argc, char **argv, char *state_path, size_t cap, vm_config *cfg);
// A command's integer option: v must be a whole decimal number in [lo, hi], else
// "vicmae CMD: FLAG 'V': expected an integer in [LO, HI]" on stderr and 2 (the usage status).
int vm_cli_int(const char *cmd, const char *flag, const char *v, long lo, long hi, int *out);
// The same for a number (e.g. seconds): "expected a number in [LO, HI]" (">= LO" when hi is INFINITY).
int vm_cli_num(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out);
// The same for an unsigned 64-bit integer (a seed): digits only.
int vm_cli_u64(const char *cmd, const char *flag, const char *v, uint64_t *out);
// Path of the running binary's sibling (e.g. to start `vicmae worker` processes).
const char *vm_cli_self(void);

// `vicmae run` hands its local workers their CURVE keys in this environment variable, value
// "SERVER_PUBLIC WORKER_PUBLIC WORKER_SECRET" (Z85): never on a command line, which any user of the
// machine can read (cli/local.c says why not a file either).  `vicmae worker` reads it only when
// --server-key/--key are not given, and removes it from its environment at once.
#define VM_CLI_ENV_WORKER_KEYS "VICMAE_WORKER_KEYS"
