"""tests/test_sampler_torch.py — `vicmae sample` end to end against PyTorch as the outside reference.

A tiny video is generated with gst-launch-1.0; `vicmae sample` writes views (PNG) and their crop
boxes (samples.jsonl); `vicmae frames` writes the decoded source frames.  Each view must equal
torchvision's RandomResizedCrop resampling of that box: crop, then
torch.nn.functional.interpolate(bilinear, align_corners=False, antialias=True) (the tensor path of
torchvision, the same filter as PIL's BILINEAR), then the flip; within 2 levels (the sampler works in
fixed point, torch in float).  Run with /usr/bin/python3 (Debian's python3-torch, python3-opencv).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, skip, test, vicmae_bin  # noqa: E402


def _need():
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        skip(f"python module missing: {e}")
    if not os.path.exists(vicmae_bin()):
        skip(f"{vicmae_bin()} not built")
    if not shutil.which("gst-launch-1.0"):
        skip("gst-launch-1.0 not installed")


def _video(tmp, name, frames, w, h, pattern="ball"):
    path = os.path.join(tmp, name)
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}", f"pattern={pattern}", "!",
                    f"video/x-raw,width={w},height={h},framerate=30/1", "!", "x264enc", "!", "mp4mux", "!",
                    "filesink", f"location={path}"], check=True, capture_output=True)
    return path


@test
def test_views_match_torch_antialiased_resize():
    _need()
    import cv2
    import numpy as np
    import torch
    import torch.nn.functional as F
    with tempfile.TemporaryDirectory() as tmp:
        video = _video(tmp, "v.mp4", 45, 160, 120)
        out = os.path.join(tmp, "out")
        sets = ["model.img_size=48", "model.patch_size=8", "decoder.decode_short_side=90",
                "decoder.index_cache=off", "sampler.mode=uniform", "sampler.gap_unit=frames",
                "sampler.gap_min=2", "sampler.gap_max=30", "run.seed=3"]
        args = [vicmae_bin(), "sample", "--video", video, "--count", "6", "--out", out]
        for s in sets:
            args += ["--set", s]
        r = subprocess.run(args, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in open(os.path.join(out, "samples.jsonl"))]
        assert len(rows) == 12, len(rows)
        assert {(x["sample"], x["view"]) for x in rows} == {(b, j) for b in range(6) for j in range(2)}
        frames = sorted({x["frame"] for x in rows})
        fdir = os.path.join(tmp, "frames")
        r = subprocess.run([vicmae_bin(), "frames", video, "--at", ",".join(map(str, frames)), "--short-side", "90",
                            "--out", fdir, "--set", "decoder.index_cache=off"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        worst = 0
        flips = 0
        for x in rows:
            assert x["src"] == [120, 90], x["src"]
            frame = cv2.cvtColor(cv2.imread(os.path.join(fdir, "%06d.png" % x["frame"])), cv2.COLOR_BGR2RGB)
            view = cv2.cvtColor(cv2.imread(os.path.join(out, x["png"])), cv2.COLOR_BGR2RGB)
            cx, cy, cw, ch = x["crop"]
            assert 0 <= cx and 0 <= cy and cx + cw <= 120 and cy + ch <= 90, x["crop"]
            t = torch.from_numpy(frame[cy:cy + ch, cx:cx + cw]).permute(2, 0, 1)[None].float()
            ref = F.interpolate(t, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
            ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.int16)
            if x["flip"]:
                ref = ref[:, ::-1]
                flips += 1
            d = int(np.abs(ref - view.astype(np.int16)).max())
            assert d <= 2, f"sample {x['sample']} view {x['view']} crop {x['crop']}: max difference {d} levels"
            worst = max(worst, d)
            if x["view"] == 1:
                prev = next(y for y in rows if y["sample"] == x["sample"] and y["view"] == 0)
                assert 2 <= x["frame"] - prev["frame"] <= 30
        print(f"    12 views: max difference to torch {worst} levels, {flips} flipped")


@test
def test_clip_example_writes_npy():
    _need()
    import numpy as np
    ex = os.path.join(os.path.dirname(vicmae_bin()), "tools", "clip_example")
    if not os.path.exists(ex):
        skip(f"{ex} not built")
    with tempfile.TemporaryDirectory() as tmp:
        v0 = _video(tmp, "a.mp4", 60, 160, 120, "ball")
        v1 = _video(tmp, "b.mp4", 50, 128, 96, "snow")
        r = subprocess.run([ex, os.path.join(tmp, "out"), v0, v1], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        tr = np.load(os.path.join(tmp, "out", "train_1.npy"))
        te = np.load(os.path.join(tmp, "out", "test_0.npy"))
        lab = np.load(os.path.join(tmp, "out", "labels.npy"))
        assert tr.shape == (2, 8, 112, 112, 3) and tr.dtype == np.uint8, tr.shape
        assert te.shape == (9, 8, 112, 112, 3), te.shape
        assert lab.tolist() == [0, 1]
        assert tr.std() > 5 and te.std() > 5  # real content, not a blank buffer


if __name__ == "__main__":
    run()
