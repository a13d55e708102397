# eval/: evaluation of an encoder (ImageFolder reading, features with a cache, k-NN, linear probe)
# and the timm export.  Part of the GStreamer-free trainer binary.
LIBS += eval
eval_SRCS := $(wildcard eval/*.c)
eval_PKGS := libjpeg libxxhash openblas
eval_DEBS := libjpeg62-turbo-dev libxxhash-dev libopenblas-dev
DEBS += $(eval_DEBS)

# docs/RESULTS.md's small ablation (tools/reproduce-small.sh; knobs through the environment).
.PHONY: reproduce-small
reproduce-small: deps
	@$(MAKE) --no-print-directory $(BUILD)/vicmae $(BUILD)/vicmae-trainer
	BUILD=$(BUILD) NO_BUILD=1 tools/reproduce-small.sh
