# proto/: the batch wire format (header + metadata table + LZ4/none payload, XXH3 checksums).
LIBS += proto
proto_SRCS := proto/proto.c
proto_PKGS := liblz4 libxxhash
proto_DEBS := liblz4-dev libxxhash-dev
DEBS += $(proto_DEBS)

# libFuzzer target (clang; Debian clang + libclang-rt-14-dev): `make fuzz-proto FUZZ_SECONDS=30`
# fuzzes from the seed corpus tests/corpus/proto/ (new inputs go to $(BUILD)/fuzz/corpus-proto/;
# copy a crash reproducer into tests/corpus/proto/ so that test_proto_fuzz replays it forever).
# Not part of `all`: `make test` replays the corpus through the same target (tests/test_proto_fuzz.c).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_DEBS    := clang libclang-rt-14-dev
PROTO_FUZZ_SRCS := tests/fuzz/fuzz_proto.c proto/proto.c common/error.c common/io.c
$(BUILD)/fuzz/fuzz_proto: $(PROTO_FUZZ_SRCS) proto/proto.h tests/test_proto_util.h
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=gnu11 -g -O1 -I. -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -o $@ $(PROTO_FUZZ_SRCS) $(shell pkg-config --libs liblz4 libxxhash libpng) -lm
.PHONY: fuzz-proto
fuzz-proto:
	@tools/deps.sh $(FUZZ_DEBS)
	@$(MAKE) --no-print-directory $(BUILD)/fuzz/fuzz_proto
	@mkdir -p $(BUILD)/fuzz/corpus-proto
	$(BUILD)/fuzz/fuzz_proto -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 $(BUILD)/fuzz/corpus-proto tests/corpus/proto
fuzz: fuzz-proto

# Benchmark program of bench/bench_proto.sh (throughput and ratio on real frames).
EXTRA_BINS += $(BUILD)/bench/proto_bench
$(BUILD)/bench/proto_bench: $(BUILD)/bench/proto_bench.o $(BUILD)/libproto.a $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(call ldlibs_of,proto common)
