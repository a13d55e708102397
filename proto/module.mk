# proto/: the batch wire format (header + metadata table + LZ4/none payload, XXH3 checksums).
LIBS += proto
proto_SRCS := proto/proto.c
proto_PKGS := liblz4 libxxhash
proto_DEBS := liblz4-dev libxxhash-dev
DEBS += $(proto_DEBS)
