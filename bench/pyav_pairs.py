#!/usr/bin/python3
"""PyAV baseline of bench/bench_decoder.sh: replay the same frame pairs with accurate seeks.

Reads "file t_a t_b w h" lines (times in seconds, as ffprobe shows them).  Per file one container
stays open, as a worker keeps its video open; per pair: seek to the keyframe before t_a
(backward=True), decode forward to the frame at t_a, then keep decoding forward to t_b (the cheaper
of the two ways for gaps of 0.5-2 s, so no second seek), converting only the two returned frames to
RGB at w x h.  One decoding thread (thread_count=1), like one vicmae decoder per core.
Prints the same "key value" lines as bench_decoder: frames, seconds, fps, decoded, returned.
Run with /usr/bin/python3 (Debian's python3-av).
"""
import sys
import time
from collections import OrderedDict

import av
import av.logging


def main(list_path):
    av.logging.set_level(av.logging.PANIC)  # the damaged clips would print per frame
    pairs = OrderedDict()
    with open(list_path) as f:
        for line in f:
            path, ta, tb, w, h = line.split()
            pairs.setdefault(path, []).append((float(ta), float(tb), int(w), int(h)))
    decoded = returned = 0
    seconds = cpu = 0.0
    for path, items in pairs.items():
        container = av.open(path)
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.thread_type = "SLICE"
        rate = stream.average_rate or stream.guessed_rate or 25
        tol = 0.5 / float(rate)  # half a frame: frames are found by timestamp
        t0, c0 = time.perf_counter(), time.process_time()
        for ta, tb, w, h in items:
            container.seek(int(ta / stream.time_base), stream=stream, backward=True, any_frame=False)
            want = [ta, tb]
            for frame in container.decode(stream):
                decoded += 1
                if frame.time is None or frame.time < want[0] - tol:
                    continue
                frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
                returned += 1
                want.pop(0)
                if want and want[0] <= frame.time + tol:  # the same frame twice
                    returned += 1
                    want.pop(0)
                if not want:
                    break
            if want:
                raise SystemExit(f"pyav_pairs: {path}: no frame at {want[0]:.3f} s")
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        container.close()
    print(f"frames {returned}\nseconds {seconds:.3f}\ncpu {cpu:.3f}\nfps {returned / seconds:.1f}\n"
          f"cpu_fps {returned / cpu:.1f}\ndecoded {decoded}\nreturned {returned}")


if __name__ == "__main__":
    main(sys.argv[1])
