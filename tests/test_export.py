"""`vicmae export --timm` against an independent PyTorch ViT (and timm itself where installed).

A checkpoint with every tensor perturbed away from its init (so zero biases or unit LayerNorm
weights cannot hide a mix-up) is made from a `vicmae debug-step` file; `vicmae export` writes its
encoder; a small PyTorch VisionTransformer in timm's layout (patch_embed.proj Conv2d, cls_token,
pos_embed, blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm; the blocks and patch
embedding of tests/vicmae_ref.py, the PyTorch reference written after timm and MAE) must load
it with load_state_dict(strict=True) and give, for the same PNG images, the features that
`vicmae eval --save-features` computes, within 1e-4 (mean pooling and class token).
"""
import atexit
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import test, skip, run, repo_root, vicmae_bin  # noqa: E402

try:
    import torch
    import torch.nn as nn
    from vicmae_ref import IMNET_MEAN, IMNET_STD, ST_DTYPES, Block, PatchEmbed
    from vicmae_ref import read_safetensors as read_st
except ImportError as e:
    torch = None
    _import_error = str(e)

TOL = 1e-4
TMP = tempfile.mkdtemp(prefix="vicmae_export_")
atexit.register(shutil.rmtree, TMP, True)


def binary():
    b = vicmae_bin()
    trainer = os.path.join(os.path.dirname(b), "vicmae-trainer")  # GStreamer-free: has eval/export
    for c in (trainer, b):
        if os.path.exists(c):
            return c
    skip(f"{b} not built")


def write_st(path, tensors, meta):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        dt = {np.dtype(v): k for k, v in ST_DTYPES.items()}[a.dtype]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---- a small ViT in timm's layout ------------------------------------------------------------

if torch is not None:
    class ViT(nn.Module):
        def __init__(self, img, patch, dim, depth, heads, mlp_ratio, pool):
            super().__init__()
            L = (img // patch) ** 2
            self.pool = pool
            self.patch_embed = PatchEmbed(patch, dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim))
            self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):  # x (N, 3, H, W) normalised
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
            for b in self.blocks:
                x = b(x)
            x = self.norm(x)
            return x[:, 1:].mean(1) if self.pool == "avg" else x[:, 0]


def normalise(imgs):  # (N, H, W, 3) uint8 -> (N, 3, H, W) ImageNet-normalised float64
    x = (imgs.astype(np.float64) / 255.0 - np.array(IMNET_MEAN)) / np.array(IMNET_STD)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def make_setup():
    """-> (export path, metadata, image folder, images (N, S, S, 3) in ImageFolder order)."""
    exe = binary()
    cfg = os.path.join(repo_root(), "configs", "tiny.ini")
    rng = np.random.default_rng(7)
    S = 32
    batch = os.path.join(TMP, "batch.npy")
    np.save(batch, rng.integers(0, 256, (2, 2, S, S, 3), dtype=np.uint8))
    step = os.path.join(TMP, "step.safetensors")
    r = subprocess.run([exe, "debug-step", "--config", cfg, "--batch", batch, "--out", step], capture_output=True,
                       text=True, cwd=repo_root())
    assert r.returncode == 0, r.stderr
    t, meta = read_st(step)
    # Every trained float tensor moved off its init; counters and non-model entries dropped.
    # pos_embed stays the fixed sin-cos table (never trained): its class-token row is zero there,
    # and the C model, as MAE's table allows, does not add that row to the class token.
    ckpt = {}
    for name, a in t.items():
        if name.startswith(("grad.", "input.", "mask.", "loss.", "steps.", "final.")):
            continue
        if a.dtype == np.float32 and "running_var" not in name and "pos_embed" not in name:
            a = (a + rng.normal(0, 0.05, a.shape)).astype(np.float32)
        ckpt[name] = a
    ck = os.path.join(TMP, "model.safetensors")
    write_st(ck, ckpt, {"format": "pt", "config": meta["config"]})
    out = os.path.join(TMP, "enc.safetensors")
    r = subprocess.run([exe, "export", "--ckpt", ck, "--timm", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    folder = os.path.join(TMP, "imgs")
    imgs = []
    for c in ("a", "b"):
        os.makedirs(os.path.join(folder, c), exist_ok=True)
        for i in range(3):
            img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
            write_png(os.path.join(folder, c, f"{i}.png"), img)
            imgs.append(img)
    return exe, ck, out, folder, np.stack(imgs)


_SETUP = None


def setup():
    global _SETUP
    if torch is None:
        skip(f"no torch for /usr/bin/python3: {_import_error}")
    if _SETUP is None:
        _SETUP = make_setup()
    return _SETUP


def vicmae_features(exe, ck, folder, pool):
    feats = os.path.join(TMP, f"feat-{pool}.safetensors")
    r = subprocess.run([exe, "eval", "knn", "--ckpt", ck, "--train", folder, "--val", folder, "--k", "1", "--quiet",
                        "--backend", "cpu", "--pool", pool, "--save-features", feats], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    f, _ = read_st(feats)
    assert np.array_equal(f["train.labels"], [0, 0, 0, 1, 1, 1])
    return f["val.features"]


def check_pool(pool):
    exe, ck, out, folder, imgs = setup()
    enc, meta = read_st(out)
    assert not any(k.startswith(("decoder", "mask_token", "projector", "predictor", "optim")) for k in enc), list(enc)
    ckpt, _ = read_st(ck)
    # timm adds pos_embed[:, 0] to the class token; MAE's table has zeros there, so both agree.
    assert not enc["pos_embed"][0, 0].any()
    for k, v in enc.items():  # exported tensors are the checkpoint's, bit for bit
        assert np.array_equal(v, ckpt[k]), k
    timm_pool = "avg" if pool == "mean" else "token"
    vit = ViT(int(meta["img_size"]), int(meta["patch_size"]), int(meta["embed_dim"]), int(meta["depth"]),
              int(meta["num_heads"]), float(meta["mlp_ratio"]), timm_pool).double()
    vit.load_state_dict({k: torch.from_numpy(v) for k, v in enc.items()}, strict=True)
    with torch.no_grad():
        ref = vit(normalise(imgs)).numpy()
    got = vicmae_features(exe, ck, folder, pool)
    err = np.abs(got - ref).max()
    assert err <= TOL, f"max |vicmae - torch| = {err:.3g} (tol {TOL})"
    assert np.abs(ref).max() > 0.1  # features are not trivially zero
    return enc, meta, imgs, got


@test
def test_export_matches_torch_vit_mean():
    check_pool("mean")


@test
def test_export_matches_torch_vit_cls():
    check_pool("cls")


@test
def test_export_matches_timm():
    if torch is None:
        skip(f"no torch: {_import_error}")
    try:
        import timm
    except ImportError:
        skip("timm is not installed for /usr/bin/python3")
    for pool in ("mean", "cls"):
        enc, meta, imgs, got = check_pool(pool)
        m = timm.models.vision_transformer.VisionTransformer(
            img_size=int(meta["img_size"]), patch_size=int(meta["patch_size"]), embed_dim=int(meta["embed_dim"]),
            depth=int(meta["depth"]), num_heads=int(meta["num_heads"]), mlp_ratio=float(meta["mlp_ratio"]),
            qkv_bias=True, num_classes=0, global_pool="avg" if pool == "mean" else "token", fc_norm=False).double()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in enc.items()}, strict=True)
        m.eval()
        with torch.no_grad():
            ref = m(normalise(imgs)).numpy()
        err = np.abs(got - ref).max()
        assert err <= TOL, f"{pool}: max |vicmae - timm| = {err:.3g}"


@test
def test_export_refuses_a_foreign_file():
    exe, ck, out, folder, imgs = setup()
    bad = os.path.join(TMP, "notckpt.safetensors")
    with open(bad, "wb") as f:
        f.write(b"garbage")
    r = subprocess.run([exe, "export", "--ckpt", bad, "--timm", os.path.join(TMP, "x.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "notckpt.safetensors" in r.stderr, r.stderr


if __name__ == "__main__":
    run()
