# decoder/: GStreamer video decoding with a cached frame index and frame-accurate random access.
LIBS += decoder
decoder_SRCS := $(wildcard decoder/*.c)
decoder_PKGS := gstreamer-1.0 gstreamer-app-1.0 gstreamer-video-1.0 gstreamer-pbutils-1.0 libxxhash
decoder_LDLIBS := -lyuv
decoder_DEBS := libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
                gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
                gstreamer1.0-tools libxxhash-dev ffmpeg python3-av bc libyuv-dev
DEBS += $(decoder_DEBS)

# bench/bench_decoder.sh's measuring program (decoder + common only).
EXTRA_BINS += $(BUILD)/bench/bench_decoder
$(BUILD)/bench/bench_decoder: $(BUILD)/bench/bench_decoder.o $(BUILD)/libdecoder.a $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(call ldlibs_of,decoder common)
$(BUILD)/bench/bench_decoder.o: PKG_CFLAGS = $(shell pkg-config --cflags $(decoder_PKGS))
