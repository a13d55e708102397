# vicmae build.  `make` builds everything this machine can (CUDA when nvcc exists).
#   make            libraries, the `vicmae` binary and the GStreamer-free `vicmae-trainer`
#   make test       install missing Debian packages, build, run every test (ends "N passed, N failed")
#   make run        install, build, run the demo pipeline + trainer (configs/demo.ini)
#   make bench      benchmarks against their named baselines (never part of `make test`)
#   make gpu-check  GPU parity tests, compute-sanitizer run and GPU benchmark (needs a GPU)
# Knobs: SAN=address|undefined  CUDA=auto|0|1  GPU_ARCH=sm_90  CUDA_HOME=/usr/local/cuda  CI=true (-Werror)
#
# Each module declares its libraries in <module>/module.mk (sources, pkg-config names, Debian
# packages); this file only knows how to build a library, a binary and a test from that.
SHELL := /bin/bash
.DEFAULT_GOAL := all

CC        ?= gcc
SAN       ?=
CUDA      ?= auto
GPU_ARCH  ?= sm_90
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,$(patsubst %/bin/nvcc,%,$(shell command -v nvcc 2>/dev/null)))
NVCC      := $(CUDA_HOME)/bin/nvcc

# V=1 prints every compile command; by default one short line per file (`=`, not `:=`: $< is the
# file being compiled only inside the recipe).
Q = $(if $(filter 1,$(V)),,@echo "  $(if $(filter %.cu,$<),NVCC,CC) $<";)

ifeq ($(SAN),)
BUILD ?= build
else
BUILD ?= build-$(SAN)
endif

ifeq ($(CUDA),auto)
HAVE_CUDA := $(if $(wildcard $(NVCC)),1,0)
else
HAVE_CUDA := $(CUDA)
endif

WARN    := -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wformat=2 -Wvla \
           -Wno-format-zero-length -Wno-format-truncation
ifeq ($(CI),true)
WARN    += -Werror
endif
OPT     ?= -O2
CFLAGS  := -std=gnu11 $(OPT) -g -fPIC -fopenmp -I. $(WARN) -D_GNU_SOURCE
LDFLAGS := -fopenmp
ifneq ($(SAN),)
CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SAN)
endif
ifeq ($(HAVE_CUDA),1)
CFLAGS  += -DVM_HAVE_CUDA=1
NVFLAGS := -O3 -g -lineinfo -std=c++17 -I. -Xcompiler -fPIC,-Wall \
           -gencode arch=compute_$(GPU_ARCH:sm_%=%),code=$(GPU_ARCH) \
           -gencode arch=compute_$(GPU_ARCH:sm_%=%),code=compute_$(GPU_ARCH:sm_%=%) -DVM_HAVE_CUDA=1
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart_static -ldl -lrt -lpthread -lstdc++
endif

# ---- modules -------------------------------------------------------------------------------
# A module.mk appends library names to LIBS and sets, per library L:
#   L_SRCS (C sources)  L_CU_SRCS (CUDA sources, built only with CUDA)  L_PKGS (pkg-config names)
#   L_LDLIBS (extra link flags)  L_DEBS (Debian packages it needs to build and run)
LIBS :=
DEBS := build-essential pkg-config
include $(wildcard */module.mk)

# Libraries of the full `vicmae` binary, in link order, and of the GStreamer-free trainer binary.
ALL_LIBS     := $(foreach l,eval trainer worker pipeline sampler decoder proto common,$(filter $(l),$(LIBS)))
TRAINER_LIBS := $(filter-out worker sampler decoder,$(ALL_LIBS))
# CLI commands that the trainer binary carries (cli/cmd_<name>.c); the others need GStreamer.
TRAINER_CMDS := config inspect train replay debug_step eval export plot keygen

lib_a   = $(BUILD)/lib$(1).a
pkgs_of = $(sort $(foreach l,$(1),$($(l)_PKGS)))
ldlibs_of = $(if $(call pkgs_of,$(1)),$(shell pkg-config --libs $(call pkgs_of,$(1)))) \
            $(foreach l,$(1),$($(l)_LDLIBS)) -lm -lpthread $(if $(filter trainer,$(1)),$(CUDA_LDLIBS))

define lib_rules
$(1)_OBJS := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRCS)) \
             $$(if $$(filter 1,$(HAVE_CUDA)),$$(patsubst %.cu,$(BUILD)/%.cu.o,$$($(1)_CU_SRCS)))
$$($(1)_OBJS): PKG_CFLAGS = $$(if $$($(1)_PKGS),$$(shell pkg-config --cflags $$($(1)_PKGS)))
$(BUILD)/lib$(1).a: $$($(1)_OBJS)
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(LIBS),$(eval $(call lib_rules,$(l))))

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(Q)$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# ---- binaries ------------------------------------------------------------------------------
CLI_ALL     := $(wildcard cli/*.c)
CLI_TRAINER := cli/main.c $(wildcard cli/cli.c $(TRAINER_CMDS:%=cli/cmd_%.c))
CLI_ALL_OBJS     := $(CLI_ALL:%.c=$(BUILD)/%.o)
CLI_TRAINER_OBJS := $(CLI_TRAINER:%.c=$(BUILD)/%.o)
$(CLI_ALL_OBJS): PKG_CFLAGS = $(shell pkg-config --cflags $(call pkgs_of,$(ALL_LIBS)))

$(BUILD)/vicmae: $(CLI_ALL_OBJS) $(foreach l,$(ALL_LIBS),$(call lib_a,$(l)))
	$(CC) $(LDFLAGS) -o $@ $(CLI_ALL_OBJS) $(foreach l,$(ALL_LIBS),$(call lib_a,$(l))) $(call ldlibs_of,$(ALL_LIBS))

$(BUILD)/vicmae-trainer: $(CLI_TRAINER_OBJS) $(foreach l,$(TRAINER_LIBS),$(call lib_a,$(l)))
	$(CC) $(LDFLAGS) -o $@ $(CLI_TRAINER_OBJS) $(foreach l,$(TRAINER_LIBS),$(call lib_a,$(l))) $(call ldlibs_of,$(TRAINER_LIBS))

# ---- tests ---------------------------------------------------------------------------------
# tests/test_<name>.c is one test binary.  Those named test_{common,proto,trainer,cuda,eval}* link
# without GStreamer (they must run on a GPU node); the others link every library.
TEST_SRCS    := $(wildcard tests/test_*.c)
TEST_BINS    := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
NOGST_TESTS  := $(filter $(BUILD)/tests/test_common% $(BUILD)/tests/test_proto% $(BUILD)/tests/test_trainer% $(BUILD)/tests/test_cuda% $(BUILD)/tests/test_eval%,$(TEST_BINS))
GST_TESTS    := $(filter-out $(NOGST_TESTS),$(TEST_BINS))
CORE_TESTS   := $(filter $(BUILD)/tests/test_common% $(BUILD)/tests/test_proto% $(BUILD)/tests/test_sampler% $(BUILD)/tests/test_decoder%,$(TEST_BINS))
HARNESS_OBJ  := $(BUILD)/tests/harness.o

$(BUILD)/tests/harness.o: tests/harness.c tests/harness.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(shell pkg-config --cflags $(call pkgs_of,$(ALL_LIBS))) -MMD -MP -c $< -o $@
$(NOGST_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/%.o $(HARNESS_OBJ) $(foreach l,$(TRAINER_LIBS),$(call lib_a,$(l)))
	$(CC) $(LDFLAGS) -o $@ $^ $(call ldlibs_of,$(TRAINER_LIBS))
$(GST_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/%.o $(HARNESS_OBJ) $(foreach l,$(ALL_LIBS),$(call lib_a,$(l)))
	$(CC) $(LDFLAGS) -o $@ $^ $(call ldlibs_of,$(ALL_LIBS))

# Extra build products a module wants (fuzzers, bench programs): <module>.mk appends to EXTRA_BINS.
EXTRA_BINS ?=

# ---- top-level targets ---------------------------------------------------------------------
.PHONY: all deps test check test-core run bench bench-gpu gpu-check clean fuzz
all: $(BUILD)/vicmae $(BUILD)/vicmae-trainer $(TEST_BINS) $(EXTRA_BINS)

deps:
	@tools/deps.sh $(sort $(DEBS))

# `make test` = install what is missing, then build and run in a fresh make (pkg-config now works).
test: deps
	@$(MAKE) --no-print-directory check
check: all
	@BUILD=$(BUILD) tests/run.sh $(TEST_BINS)
test-core: deps
	@$(MAKE) --no-print-directory $(CORE_TESTS) && BUILD=$(BUILD) VICMAE_CORE_ONLY=1 tests/run.sh $(CORE_TESTS)

run: deps
	@$(MAKE) --no-print-directory all && BUILD=$(BUILD) tools/run-demo.sh
bench: deps
	@$(MAKE) --no-print-directory all && BUILD=$(BUILD) bench/run.sh
bench-gpu: all
	@BUILD=$(BUILD) bench/gpu.sh
gpu-check:
	@BUILD=$(BUILD) tools/gpu-check.sh

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
