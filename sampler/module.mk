# sampler/: frame-pair / clip / multi-view sampling with augmentations (needs decoder/, proto.h).
LIBS += sampler
sampler_SRCS := $(wildcard sampler/*.c)
sampler_PKGS :=
# libyuv-dev: only bench/bench_sampler links it (the baseline the kernel is measured against);
# python3-opencv/numpy: bench/opencv_crop.py; python3-torch: tests/test_sampler_torch.py.
sampler_DEBS := libyuv-dev python3-opencv python3-numpy python3-torch
DEBS += $(sampler_DEBS)
# The resampling loops are the hot path: let the vectoriser at them (a later -O3 wins over -O2).
$(BUILD)/sampler/image.o: CFLAGS += -O3
# Programs built with `make` (EXTRA_BINS): tools/clip_example, the sampler reused for clip
# classification (clips written as .npy), and bench/bench_sampler, run by bench/bench_sampler.sh.
SAMPLER_BIN_LIBS := sampler decoder common
EXTRA_BINS += $(BUILD)/tools/clip_example $(BUILD)/bench/bench_sampler
$(BUILD)/tools/clip_example $(BUILD)/bench/bench_sampler: $(BUILD)/%: $(BUILD)/%.o $(foreach l,$(SAMPLER_BIN_LIBS),$(BUILD)/lib$(l).a)
	$(CC) $(LDFLAGS) -o $@ $^ $(call ldlibs_of,$(SAMPLER_BIN_LIBS)) $(if $(findstring bench_sampler,$@),-lyuv)
$(BUILD)/tools/clip_example.o $(BUILD)/bench/bench_sampler.o: PKG_CFLAGS = $(shell pkg-config --cflags $(call pkgs_of,$(SAMPLER_BIN_LIBS)))
