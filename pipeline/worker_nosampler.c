// pipeline/worker_nosampler.c — linked only when sampler/ is absent from the tree (see module.mk).
#include "pipeline/worker.h"

int vm_worker_sampler_source(const vm_config *cfg, vm_unit_source *out, vm_error *err) {
    (void)cfg;
    (void)out;
    return vm_fail(err, VM_EUNSUPPORTED, "worker: this binary was built without sampler/ (no video source)");
}
