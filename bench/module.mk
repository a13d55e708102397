# bench/: benchmark programs that are C binaries (the benchmarks themselves are bench/*.sh).
# gpu_bench: training-step throughput on the CUDA backend (bench/gpu.sh); GStreamer-free, linked
# like the trainer so that it runs on a GPU node.  Built by `make all` everywhere (CI checks that it
# compiles); without CUDA it says so and exits.
GPU_BENCH := $(BUILD)/bench/gpu_bench
EXTRA_BINS += $(GPU_BENCH)
# Prerequisites are expanded when this file is read (before the Makefile defines TRAINER_LIBS), so
# the archives are named here; the link line expands TRAINER_LIBS when it runs.
$(GPU_BENCH): $(BUILD)/bench/gpu_bench.o $(foreach l,trainer pipeline proto common,$(BUILD)/lib$(l).a)
	$(CC) $(LDFLAGS) -o $@ $< $(foreach l,$(TRAINER_LIBS),$(BUILD)/lib$(l).a) $(call ldlibs_of,$(TRAINER_LIBS))
