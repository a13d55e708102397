#!/usr/bin/env python3
"""PyTorch CPU baseline of bench/bench_train.sh: one ViC-MAE training step in fp32 on the CPU.

The model is bench/torch_vitb_step.py's ViCMAE (the official layout: timm-0.3.2-style attention,
sin-cos position embeddings, MAE random masking, norm-pix MSE on masked patches, projector
Linear-BN-ReLU-Linear-BN-ReLU-Linear on the mean-pooled tokens of each view, InfoNCE), trained as
main_pretrain.py does it minus autocast: fp32, AdamW betas (0.9, 0.95) with MAE's weight-decay groups,
uint8 views normalised every step.  Same shapes and thread count as bench/train_cpu_bench.c.
Prints one "result impl=torch-cpu ..." line.  Run with /usr/bin/python3 (Debian python3-torch).
"""
import argparse
import math
import os
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vitb_step import ViCMAE, param_groups  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32, help="pairs per step")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--embed-dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--dec-dim", type=int, default=128)
    ap.add_argument("--dec-depth", type=int, default=4)
    ap.add_argument("--dec-heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--proj-hidden", type=int, default=1024)
    ap.add_argument("--proj-out", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = SimpleNamespace(patch=a.patch, mask_ratio=a.mask_ratio, temperature=a.temperature, embed_dim=a.embed_dim,
                        dec_dim=a.dec_dim, img=a.img, heads=a.heads, depth=a.depth, dec_depth=a.dec_depth,
                        dec_heads=a.dec_heads, mlp_ratio=a.mlp_ratio, proj_hidden=a.proj_hidden, proj_out=a.proj_out)
    model = ViCMAE(m, sdpa=False)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1.5e-4 * a.batch / 256, betas=(0.9, 0.95))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    views = torch.randint(0, 256, (a.batch, 2, a.img, a.img, 3), dtype=torch.uint8)

    def step():
        x = views.permute(0, 1, 4, 2, 3).float().div_(255).sub_(mean).div_(std)
        loss = model(x[:, 0].contiguous(), x[:, 1].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    times, cpu = [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if not math.isfinite(loss.item()):
        raise SystemExit("torch_cpu_step: loss is %g" % loss.item())
    best, mean_t = min(times), sum(times) / len(times)
    print("torch %s cpu, %d threads: %d pairs of %dx%d: step best %.1f ms, mean %.1f ms, %.2f pairs/s, cpu time %.1f ms, loss %.4f" % (
        torch.__version__, torch.get_num_threads(), a.batch, a.img, a.img, best * 1e3, mean_t * 1e3, a.batch / best,
        min(cpu) * 1e3, loss.item()))
    print("result impl=torch-cpu batch=%d step_ms=%.3f mean_ms=%.3f cpu_ms=%.3f" % (a.batch, best * 1e3, mean_t * 1e3,
                                                                                  min(cpu) * 1e3))


if __name__ == "__main__":
    main()
