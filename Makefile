# vicmae build.  `make` builds everything this machine can (CUDA when nvcc exists).
#   make            libraries, the `vicmae` binary and the GStreamer-free `vicmae-trainer`
#   make test       install missing Debian packages, build, run every test (ends "N passed, N failed")
#   make run        install, build, run the demo pipeline + trainer (configs/demo.ini)
#   make bench      benchmarks against their named baselines (never part of `make test`)
#   make gpu-check  GPU parity tests, compute-sanitizer run and GPU benchmark (needs a GPU)
#   make install    libvicmae-video (decoder + sampler), its headers and vicmae-video.pc (PREFIX, DESTDIR)
#   make uninstall  removes them
# Knobs: SAN=address|undefined  CUDA=auto|0|1  GPU_ARCH=sm_90  CUDA_HOME=/usr/local/cuda  CI=true (-Werror)
#        CUDA_SHARED=1 (the CUDA backend in one $(BUILD)/libvicmae-cuda.so; tools/gpu-dist.sh)
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
ifeq ($(CI),true)
NVFLAGS += -Werror all-warnings -Xcompiler -Werror
endif
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
TRAINER_CMDS := config inspect train debug_step eval export plot keygen

lib_a   = $(BUILD)/lib$(1).a
pkgs_of = $(sort $(foreach l,$(1),$($(l)_PKGS)))
ldlibs_of = $(if $(call pkgs_of,$(1)),$(shell pkg-config --libs $(call pkgs_of,$(1)))) \
            $(foreach l,$(1),$($(l)_LDLIBS)) -lm -lpthread $(if $(filter trainer,$(1)),$(CUDA_LDLIBS))

define lib_rules
$(1)_CU_OBJS := $$(if $$(filter 1,$(HAVE_CUDA)),$$(patsubst %.cu,$(BUILD)/%.cu.o,$$($(1)_CU_SRCS)))
$(1)_OBJS := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRCS)) $$(if $$(filter 1,$(CUDA_SHARED)),,$$($(1)_CU_OBJS))
$$($(1)_OBJS): PKG_CFLAGS = $$(if $$($(1)_PKGS),$$(shell pkg-config --cflags $$($(1)_PKGS)))
$(BUILD)/lib$(1).a: $$($(1)_OBJS)
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(LIBS),$(eval $(call lib_rules,$(l))))

# CUDA_SHARED=1 (tools/gpu-dist.sh): the CUDA objects of every module go into ONE shared library,
# $(BUILD)/libvicmae-cuda.so (with cudart_static inside: each .cu object registers its fatbin from a
# constructor, which needs the one cudart that the library carries; no C file calls the CUDA
# runtime), and not into the module archives; every program that links the trainer loads it, by
# rpath $ORIGIN/../lib (gpu-dist's bin/ beside lib/), $ORIGIN or $ORIGIN/.. (this build tree).
# One copy of the kernels instead of one per program: gpu-dist carries 9+ programs.
# --exclude-libs: cudart's own symbols stay inside.  A BUILD directory is built one way or the other
# (libtrainer.a differs): tools/gpu-dist.sh removes an archive of the other kind.
ifeq ($(HAVE_CUDA)$(CUDA_SHARED),11)
CUDA_SO := $(BUILD)/libvicmae-cuda.so
CUDA_SO_LDLIBS := $(CUDA_LDLIBS)
$(CUDA_SO): $(foreach l,$(LIBS),$($(l)_CU_OBJS))
	$(CC) -shared -Wl,-soname,libvicmae-cuda.so -Wl,--no-undefined -Wl,--exclude-libs,ALL -o $@ $^ $(CUDA_SO_LDLIBS) -lm
$(foreach l,$(LIBS),$(if $($(l)_CU_OBJS),$(call lib_a,$(l)))): | $(CUDA_SO)
CUDA_LDLIBS := $(CUDA_SO) -Wl,-rpath,'$$ORIGIN/../lib:$$ORIGIN:$$ORIGIN/..'
endif

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

# ---- the installable video library ---------------------------------------------------------
# libvicmae-video: the decoder and the sampler for other programs (clip classification, multi-view
# testing), with what their headers need: common/ (errors, config, RNG, .npy/PNG) and proto/ (the
# sampler writes proto.h's vm_sample_meta / vm_view_meta; the whole module, so that every function
# an installed header declares links).  One library, not four: the parts are used together and one
# -l is what a pkg-config user expects.  Archive and shared library (soname .so.$(VIDEO_ABI)) come
# from the module objects as they are: CFLAGS has -fPIC for every object already, so there is no
# second object set and the sampler's hot path is the code `vicmae` runs.  `make` builds both, so
# `sudo make install` only copies.
#   make install   [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib] [INCLUDEDIR=$(PREFIX)/include]
#                  [PKGCONFIGDIR=$(LIBDIR)/pkgconfig]
#   make uninstall (same variables)
# Headers go to $(INCLUDEDIR)/vicmae/ in the source layout (vicmae/sampler/sampler.h); their
# "common/error.h" includes become <vicmae/common/error.h>, so that a user's own common/ on the
# include path cannot stand in for ours.  vicmae-video.pc is written at install time and is
# relocatable: prefix=${pcfiledir}/../.. (as many .. as PKGCONFIGDIR lies below PREFIX; the absolute
# PREFIX when it lies elsewhere), libdir and includedir ${prefix}/... where they are under PREFIX,
# so a DESTDIR install or a moved tree is found through PKG_CONFIG_PATH alone
# (tests/test_install.py).  pkg-config --define-variable=prefix would not do: it moves the prefix
# of every package, gstreamer's too.
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VIDEO_ABI     := 0
VIDEO_VERSION := 0.1.0
VIDEO_LIBS    := $(foreach l,sampler decoder proto common,$(filter $(l),$(LIBS)))
VIDEO_OBJS    := $(foreach l,$(VIDEO_LIBS),$($(l)_OBJS))
VIDEO_HEADERS := $(wildcard common/config.h common/error.h common/io.h common/log.h common/rng.h \
                            proto/proto.h decoder/decoder.h sampler/sampler.h)
VIDEO_A       := $(BUILD)/libvicmae-video.a
VIDEO_SO      := $(BUILD)/libvicmae-video.so.$(VIDEO_VERSION)
VIDEO_MAP     := tools/libvicmae-video.map

$(VIDEO_A): $(VIDEO_OBJS)
	@rm -f $@
	ar rcs $@ $^
# --no-undefined: every library the objects need is on this line (and so in the .pc file).  The
# version script exports the installed headers' functions only (see the file).
$(VIDEO_SO): $(VIDEO_OBJS) $(VIDEO_MAP)
	$(CC) -shared -Wl,-soname,libvicmae-video.so.$(VIDEO_ABI) -Wl,--no-undefined -Wl,--version-script=$(VIDEO_MAP) \
	    $(filter-out -fopenmp,$(LDFLAGS)) \
	    -o $@ $(VIDEO_OBJS) $(call ldlibs_of,$(VIDEO_LIBS))

# vicmae-video.pc, one quoted line per field (printf '%s\n' writes them).
VIDEO_PC_UP    := $(subst / ,/,$(patsubst %,../,$(subst /, ,$(patsubst $(PREFIX)/%,%,$(PKGCONFIGDIR)))))
VIDEO_PC_LINES := 'prefix=$(if $(filter $(PREFIX)/%,$(PKGCONFIGDIR)),$${pcfiledir}/$(VIDEO_PC_UP:%/=%),$(PREFIX))' \
    'libdir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))' \
    'includedir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))' '' \
    'Name: vicmae-video' \
    'Description: ViC-MAE video decoding (GStreamer, frame-accurate random access) and frame-pair/clip sampling' \
    'Version: $(VIDEO_VERSION)' \
    'Requires.private: $(call pkgs_of,$(VIDEO_LIBS))' \
    'Libs: -L$${libdir} -lvicmae-video' \
    'Libs.private: $(strip $(foreach l,$(VIDEO_LIBS),$($(l)_LDLIBS)) -lm -lpthread)' \
    'Cflags: -I$${includedir}'

.PHONY: install uninstall
install: $(VIDEO_A) $(VIDEO_SO)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(addprefix $(DESTDIR)$(INCLUDEDIR)/vicmae/,$(sort $(dir $(VIDEO_HEADERS))))
	install -m 644 $(VIDEO_A) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(VIDEO_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libvicmae-video.so.$(VIDEO_VERSION) $(DESTDIR)$(LIBDIR)/libvicmae-video.so.$(VIDEO_ABI)
	ln -sf libvicmae-video.so.$(VIDEO_ABI) $(DESTDIR)$(LIBDIR)/libvicmae-video.so
	for h in $(VIDEO_HEADERS); do \
	    sed -E 's,^#include "([a-z]+/[^"]+)",#include <vicmae/\1>,' $$h > $(DESTDIR)$(INCLUDEDIR)/vicmae/$$h && \
	    chmod 644 $(DESTDIR)$(INCLUDEDIR)/vicmae/$$h || exit 1; done
	printf '%s\n' $(VIDEO_PC_LINES) > $(DESTDIR)$(PKGCONFIGDIR)/vicmae-video.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/vicmae-video.pc
uninstall:
	rm -f $(addprefix $(DESTDIR)$(LIBDIR)/libvicmae-video.,a so so.$(VIDEO_ABI) so.$(VIDEO_VERSION)) \
	      $(DESTDIR)$(PKGCONFIGDIR)/vicmae-video.pc $(addprefix $(DESTDIR)$(INCLUDEDIR)/vicmae/,$(VIDEO_HEADERS))
	rmdir $(addprefix $(DESTDIR)$(INCLUDEDIR)/vicmae/,$(sort $(dir $(VIDEO_HEADERS)))) $(DESTDIR)$(INCLUDEDIR)/vicmae 2>/dev/null || true

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
# tests/test_*.cu: host-only programs built by nvcc (CUDA emulations that need no GPU: the .cu is
# compiled as any other, by $(BUILD)/%.cu.o's rule, NVFLAGS without the SAN flags), linked by $(CC)
# with LDFLAGS so that a SAN build's harness.o finds its runtime; only when nvcc exists.
ifeq ($(HAVE_CUDA),1)
CU_TEST_BINS := $(patsubst tests/%.cu,$(BUILD)/tests/%,$(wildcard tests/test_*.cu))
TEST_BINS    += $(CU_TEST_BINS)
$(CU_TEST_BINS): $(BUILD)/tests/%: $(BUILD)/tests/%.cu.o $(HARNESS_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm
endif

# Extra build products a module wants (fuzzers, bench programs): <module>.mk appends to EXTRA_BINS.
EXTRA_BINS ?=

# ---- top-level targets ---------------------------------------------------------------------
.PHONY: all deps test check test-core run bench bench-gpu gpu-check clean fuzz
all: $(BUILD)/vicmae $(BUILD)/vicmae-trainer $(VIDEO_A) $(VIDEO_SO) $(TEST_BINS) $(EXTRA_BINS)

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
