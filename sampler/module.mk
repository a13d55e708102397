# sampler/: frame-pair / clip / multi-view sampling with augmentations (needs decoder/, proto.h).
LIBS += sampler
sampler_SRCS := $(wildcard sampler/*.c)
sampler_PKGS :=
sampler_DEBS :=
DEBS += $(sampler_DEBS)
# The resampling loops are the hot path: let the vectoriser at them (a later -O3 wins over -O2).
$(BUILD)/sampler/image.o: CFLAGS += -O3
