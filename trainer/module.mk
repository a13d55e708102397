# trainer/: the ViC-MAE model, losses, optimiser and training loop, on the op interface of
# trainer/backend.h: CPU reference backend in trainer/cpu/ (OpenBLAS + OpenMP), CUDA backend in
# trainer/cuda/ (built only with nvcc).  Model files trainer/*.c join the same library.
LIBS += trainer
trainer_SRCS    := $(wildcard trainer/*.c trainer/cpu/*.c trainer/cuda/*.c)
trainer_CU_SRCS := $(wildcard trainer/cuda/*.cu)
trainer_PKGS    := openblas
trainer_DEBS    := libopenblas-dev
DEBS += $(trainer_DEBS)
# safetensors checkpoints (trainer/safetensors.c) parse their JSON header with cJSON.
trainer_PKGS += libcjson
DEBS += libcjson-dev
DEBS += gnuplot-nox   # `vicmae plot` (cli/cmd_plot.c) draws the loss curves with gnuplot

# The CPU kernels (trainer/cpu/) are built for the vectoriser: -O3's cost model (-O2's "very
# cheap" one rejects loops that need an epilogue), and neither errno from sqrt nor floating-point
# exception flags, which nothing here reads and which keep sqrt and float selects scalar.  None of
# these changes a computed value.
$(BUILD)/trainer/cpu/%.o: CFLAGS += -O3 -fno-math-errno -fno-trapping-math
