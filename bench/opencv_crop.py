"""bench/opencv_crop.py DIR [img_size] — the baseline of bench/bench_sampler.sh.

Replays the crops of DIR/boxes.txt (x y w h flip, written by `bench_sampler kernel`) on
DIR/frame.npy with OpenCV-Python doing the same work as the sampler's kernel: crop (a numpy view),
resize to img_size x img_size with INTER_AREA when shrinking (antialiased) and INTER_LINEAR when
enlarging, horizontal flip when asked.  One OpenCV thread, like the sampler's single-threaded
kernel (workers parallelise across videos).  Prints "opencv_us_per_view X": thread CPU time, fastest of 5 runs, as the C side.
Run with /usr/bin/python3 (Debian's python3-opencv).
"""
import sys
import time

import cv2
import numpy as np


def main():
    d = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    cv2.setNumThreads(1)
    frame = np.load(f"{d}/frame.npy")
    boxes = [tuple(int(v) for v in line.split()) for line in open(f"{d}/boxes.txt")]
    out = np.empty((size, size, 3), np.uint8)
    times = []
    for _ in range(5):
        t0 = time.thread_time()
        for x, y, w, h, flip in boxes:
            crop = frame[y:y + h, x:x + w]
            interp = cv2.INTER_AREA if w > size or h > size else cv2.INTER_LINEAR
            if flip:
                cv2.flip(cv2.resize(crop, (size, size), interpolation=interp), 1, dst=out)
            else:
                cv2.resize(crop, (size, size), dst=out, interpolation=interp)
        times.append((time.thread_time() - t0) / len(boxes))
    times.sort()
    print(f"opencv_us_per_view {times[0] * 1e6:.2f}")


if __name__ == "__main__":
    main()
