// common/log.h — one-line logging to stderr: "12:03:04.123 vicmae[pid] INFO  message".
// The level is process-wide (set once by the CLI from -v/-q or VICMAE_LOG=debug|info|warn|error).
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { VM_LOG_ERROR = 0, VM_LOG_WARN, VM_LOG_INFO, VM_LOG_DEBUG } vm_log_level;

void vm_log_init_from_env(void);
void vm_log_set_level(vm_log_level level);
vm_log_level vm_log_get_level(void);
// Optional short role tag printed after the pid ("worker 3", "trainer").
void vm_log_set_role(const char *role);
void vm_log(vm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define vm_error_log(...) vm_log(VM_LOG_ERROR, __VA_ARGS__)
#define vm_warn(...) vm_log(VM_LOG_WARN, __VA_ARGS__)
#define vm_info(...) vm_log(VM_LOG_INFO, __VA_ARGS__)
#define vm_debug(...) vm_log(VM_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
