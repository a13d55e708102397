#!/usr/bin/python3
"""The PyTorch DataLoader baseline of `bench/bench_pipeline.sh` (run with /usr/bin/python3: Debian's
python3-torch and python3-av).

It does what a `vicmae worker` does for the default pair policy, the usual PyTorch way: a Dataset whose
item is one video; __getitem__ opens it with PyAV, draws `pairs` pairs with "distant" sampling (one
random time in each half of the video), seeks to each (backward to the keyframe, decode forward),
converts the frame to RGB at short side `short_side` (libswscale), then per view RandomResizedCrop to
img x img (torchvision's parameters: scale, log-uniform ratio, 10 tries then centre crop; bilinear with
antialias, as torchvision's tensor transform) and a horizontal flip with p = 0.5.  A DataLoader with
`workers` worker processes collates uint8 batches (B, 2, img, img, 3).

Prints one line: torch workers=N pairs=P seconds=T pairs_per_s=X steady_pairs_per_s=Y (seconds from the
start, worker start-up included, to the last batch; steady from the first batch), the same windows
`vicmae bench pipeline` measures.  Workers persist across epochs (persistent_workers=True).
"""
import argparse
import math
import os
import random
import sys
import time

import av
import av.logging
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

EXTS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".ts"}


def list_videos(root):
    if os.path.isfile(root):  # manifest: first field of each line, relative to its directory
        base = os.path.dirname(os.path.abspath(root))
        out = []
        for line in open(root):
            line = line.strip()
            if line and not line.startswith("#"):
                p = line.split("\t")[0] if "\t" in line else line.split()[0]
                out.append(p if p.startswith("/") else os.path.join(base, p))
        return out
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        out += [os.path.join(d, f) for f in files if not f.startswith(".") and os.path.splitext(f)[1].lower() in EXTS]
    return sorted(out)


def rrc_params(rng, w, h, scale, ratio):
    area = w * h
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        a = area * rng.uniform(scale[0], scale[1])
        r = math.exp(rng.uniform(lr[0], lr[1]))
        cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    r_in = w / h
    if r_in < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif r_in > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def frame_at(container, stream, t):
    """First decoded frame at or after time t (seconds): seek back to a keyframe, decode forward."""
    container.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True, any_frame=False)
    last = None
    for f in container.decode(stream):
        if f.time is None:
            continue
        last = f
        if f.time >= t:
            break
    return last


class PairDataset(Dataset):
    def __init__(self, paths, args):
        self.paths, self.a = paths, args
        self.calls = 0  # per worker process: draws differ from epoch to epoch

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        a = self.a
        self.calls += 1
        rng = random.Random((a.seed * 1000003 + self.calls) * 1000003 + i)
        out = np.empty((a.pairs, 2, a.img, a.img, 3), np.uint8)
        with av.open(self.paths[i]) as c:
            s = c.streams.video[0]
            tb = float(s.time_base)
            start = float(s.start_time * tb) if s.start_time is not None else 0.0
            dur = float(s.duration * tb) if s.duration else (c.duration / 1e6 if c.duration else 1.0)
            for k in range(a.pairs):
                ts = sorted((start + rng.uniform(0, dur / 2), start + dur / 2 + rng.uniform(0, dur / 2)))
                for j, t in enumerate(ts):
                    f = frame_at(c, s, t)
                    sc = a.short_side / min(f.width, f.height)
                    ow, oh = max(1, round(f.width * sc)), max(1, round(f.height * sc))
                    img = f.to_ndarray(width=ow, height=oh, format="rgb24")
                    x, y, cw, ch = rrc_params(rng, ow, oh, (a.scale_min, 1.0), (3 / 4, 4 / 3))
                    crop = torch.from_numpy(np.ascontiguousarray(img[y:y + ch, x:x + cw])).permute(2, 0, 1)[None].float()
                    v = F.interpolate(crop, size=(a.img, a.img), mode="bilinear", align_corners=False, antialias=True)
                    if rng.random() < 0.5:
                        v = v.flip(-1)
                    out[k, j] = v[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        return torch.from_numpy(out)


def worker_init(_):
    torch.set_num_threads(1)  # one core per worker, like a vicmae worker
    av.logging.set_level(av.logging.ERROR)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/videos")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="pairs per batch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--scale-min", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    av.logging.set_level(av.logging.ERROR)
    torch.set_num_threads(1)
    paths = list_videos(a.data)
    ds = PairDataset(paths, a)
    per_batch = max(1, a.batch // a.pairs)  # videos per batch
    pairs, t_first, t0 = 0, None, time.time()
    dl = DataLoader(ds, batch_size=per_batch, shuffle=True, num_workers=a.workers, worker_init_fn=worker_init,
                    generator=torch.Generator().manual_seed(a.seed), persistent_workers=a.workers > 0)
    for _ in range(a.epochs):
        for b in dl:
            if t_first is None:
                t_first = time.time()
            pairs += b.shape[0] * b.shape[1]
    t1 = time.time()
    print(f"torch workers={a.workers} pairs={pairs} seconds={t1 - t0:.2f} pairs_per_s={pairs / (t1 - t0):.2f} "
          f"steady_pairs_per_s={pairs / (t1 - t_first):.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
