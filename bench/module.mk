# bench/: benchmark programs that are C binaries (the benchmarks themselves are bench/*.sh).
# gpu_bench: training-step throughput on the CUDA backend (bench/gpu.sh); GStreamer-free, linked
# like the trainer so that it runs on a GPU node.  Built by `make all` everywhere (CI checks that it
# compiles); without CUDA it says so and exits.
GPU_BENCH := $(BUILD)/bench/gpu_bench
EXTRA_BINS += $(GPU_BENCH)
# Prerequisites are expanded when this file is read, before the Makefile defines TRAINER_LIBS (and
# before the other module.mk add to LIBS), so the archives are named from the same list as
# TRAINER_LIBS, one per module directory that exists; the link line expands TRAINER_LIBS itself.
GPU_BENCH_LIBS := $(foreach l,eval trainer pipeline proto common,$(if $(wildcard $(l)/module.mk),$(BUILD)/lib$(l).a))
# train_cpu_bench: one training step on the CPU backend against PyTorch (bench/bench_train.sh).
TRAIN_CPU_BENCH := $(BUILD)/bench/train_cpu_bench
EXTRA_BINS += $(TRAIN_CPU_BENCH)
# tools/bf16_diag: how far bf16 rounding moves the tiny model's gradients on the CPU (cpu-bf16 vs
# fp32, and cpu-bf16 against itself under fp32-level changes): the numbers behind the bf16
# tolerances of tests/test_cuda_model.c.  Built with `make all` so that it keeps compiling.
BF16_DIAG := $(BUILD)/tools/bf16_diag
EXTRA_BINS += $(BF16_DIAG)
# All three are one C file each, linked like the trainer.
$(GPU_BENCH) $(TRAIN_CPU_BENCH) $(BF16_DIAG): $(BUILD)/%: $(BUILD)/%.o $(GPU_BENCH_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(foreach l,$(TRAINER_LIBS),$(BUILD)/lib$(l).a) $(call ldlibs_of,$(TRAINER_LIBS))
