# pipeline/: work distribution, ZeroMQ transport with credit flow control, decode workers, demo data.
#   pipeline  GStreamer-free: dataset, control protocol, coordinator, receiver (the trainer links it)
#   worker    the decode worker (decoder + sampler) and the synthetic demo dataset (GStreamer)
LIBS += worker pipeline
pipeline_SRCS := pipeline/dataset.c pipeline/wire.c pipeline/coordinator.c pipeline/receiver.c pipeline/curve.c
pipeline_PKGS := libzmq inih
pipeline_DEBS := libzmq3-dev libinih-dev
# Without sampler/ in the tree (a partial checkout) the worker is built without a video source and
# says so at run time (pipeline/worker_nosampler.c) instead of breaking the link.
worker_SRCS := pipeline/worker.c pipeline/synth.c \
               $(if $(wildcard sampler/sampler.c),pipeline/worker_source.c,pipeline/worker_nosampler.c)
worker_PKGS := libzmq gstreamer-1.0 gstreamer-app-1.0 gstreamer-video-1.0
worker_DEBS := libzmq3-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
               gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly iproute2
# bench/bench_pipeline.sh also wants python3-torch and python3-av (it says so and skips the baseline without).
DEBS += $(pipeline_DEBS) $(worker_DEBS)
