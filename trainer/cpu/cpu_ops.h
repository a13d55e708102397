// trainer/cpu/cpu_ops.h — the CPU backend's ops, declared for float (vm_cpu_<op>_f, the functions
// in the backend table) and double (vm_cpu_<op>_d, for the finite-difference tests).  The
// semantics of each op are those of the same-named entry of trainer/backend.h.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define real float
#define FN(name) vm_cpu_##name##_f
#include "trainer/cpu/ops_proto.h"
#undef real
#undef FN

#define real double
#define FN(name) vm_cpu_##name##_d
#include "trainer/cpu/ops_proto.h"
#undef real
#undef FN
