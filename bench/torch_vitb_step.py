#!/usr/bin/env python3
"""PyTorch baseline of bench/gpu.sh: one ViC-MAE training step, the official way.

The model is the official ViC-MAE layout (MAE's models_mae.py: timm ViT Blocks, sin-cos position
embeddings, random masking by argsort of noise, norm-pix MSE on the masked patches; plus the
projector Linear-BN-ReLU-Linear-BN-ReLU-Linear on the mean-pooled encoder tokens and InfoNCE),
trained as main_pretrain.py does it: autocast (bf16 here instead of fp16 + GradScaler), AdamW with
betas (0.9, 0.95) and MAE's weight-decay groups, uint8 views uploaded from host memory every step.

Modes: eager  attention as timm 0.3.2 (which MAE pins): q @ k^T, softmax, @ v
       sdpa   attention through F.scaled_dot_product_attention (timm >= 0.9, fused kernels)
       compile  the sdpa model under torch.compile (default mode)

Prints one "result impl=torch-<mode> ..." line, like bench/gpu_bench.c.  Self-contained: torch only.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(dim, grid, cls_token):
    """MAE's get_2d_sincos_pos_embed, in torch."""
    def one_d(d, pos):
        omega = torch.arange(d // 2, dtype=torch.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    gh = torch.arange(grid, dtype=torch.float64)
    gw = torch.arange(grid, dtype=torch.float64)
    w, h = torch.meshgrid(gw, gh, indexing="xy")  # w goes first, as MAE
    emb = torch.cat([one_d(dim // 2, w), one_d(dim // 2, h)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()


class Attention(nn.Module):
    def __init__(self, dim, heads, sdpa):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, sdpa):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sdpa)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViCMAE(nn.Module):
    def __init__(self, a, sdpa):
        super().__init__()
        self.p, self.mask_ratio, self.temperature = a.patch, a.mask_ratio, a.temperature
        D, Dd, grid = a.embed_dim, a.dec_dim, a.img // a.patch
        self.patch_embed = nn.Conv2d(3, D, kernel_size=a.patch, stride=a.patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.register_buffer("pos_embed", sincos_2d(D, grid, True)[None])
        self.blocks = nn.ModuleList([Block(D, a.heads, a.mlp_ratio, sdpa) for _ in range(a.depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.randn(1, 1, Dd) * 0.02)
        self.register_buffer("decoder_pos_embed", sincos_2d(Dd, grid, True)[None])
        self.decoder_blocks = nn.ModuleList([Block(Dd, a.dec_heads, a.mlp_ratio, sdpa) for _ in range(a.dec_depth)])
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, a.patch ** 2 * 3)
        h, o = a.proj_hidden, a.proj_out
        self.projector = nn.Sequential(nn.Linear(D, h), nn.BatchNorm1d(h), nn.ReLU(),
                                       nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))

    def patchify(self, imgs):
        p, n = self.p, imgs.shape[0]
        h = w = imgs.shape[2] // p
        x = imgs.reshape(n, 3, h, p, w, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, h * w, p * p * 3)

    def random_masking(self, x):
        N, L, D = x.shape
        keep = int(L * (1 - self.mask_ratio))
        noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(N, L, device=x.device)
        mask[:, :keep] = 0
        return x, torch.gather(mask, 1, ids_restore), ids_restore

    def encoder(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mt = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mt], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def rec_loss(self, imgs, pred, mask):
        t = self.patchify(imgs)
        t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred - t) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def info_nce(self, z):
        z = F.normalize(z, dim=-1)
        n = z.shape[0] // 2
        logits = z @ z.t() / self.temperature
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, target)

    def forward(self, x1, x2, w_rec=0.97, w_con=0.03):
        z1, m1, r1 = self.encoder(x1)
        z2, m2, r2 = self.encoder(x2)
        rec = 0.5 * (self.rec_loss(x1, self.decoder(z1, r1), m1) + self.rec_loss(x2, self.decoder(z2, r2), m2))
        u1 = self.projector(z1[:, 1:, :].mean(dim=1))
        u2 = self.projector(z2[:, 1:, :].mean(dim=1))
        return w_rec * rec + w_con * self.info_nce(torch.cat([u1, u2]))


def param_groups(model, wd):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["eager", "sdpa", "compile"], default="eager")
    ap.add_argument("--batch", type=int, default=64, help="pairs per step")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--embed-dim", type=int, default=768)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dec-dim", type=int, default=512)
    ap.add_argument("--dec-depth", type=int, default=8)
    ap.add_argument("--dec-heads", type=int, default=16)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--proj-hidden", type=int, default=4096)
    ap.add_argument("--proj-out", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script, not a baseline")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch_vitb_step: no CUDA device visible to torch")
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = ViCMAE(a, sdpa=a.mode != "eager").to(dev)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1.5e-4 * a.batch * 2 / 256, betas=(0.9, 0.95))
    step_model = torch.compile(model) if a.mode == "compile" else model
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 1, 3, 1, 1)
    views = torch.randint(0, 256, (a.batch, 2, a.img, a.img, 3), dtype=torch.uint8)  # host memory

    def step():
        x = views.to(dev).permute(0, 1, 4, 2, 3).float().div_(255).sub_(mean).div_(std)
        with torch.autocast(a.device, dtype=torch.bfloat16):
            loss = step_model(x[:, 0].contiguous(), x[:, 1].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_warm = time.perf_counter()
    for _ in range(a.warmup):
        step()
    sync()
    t_warm = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    if not math.isfinite(loss.item()):
        raise SystemExit("torch_vitb_step: loss is %g" % loss.item())
    print("torch %s on %s: %s, warmup %.1f s, step %.2f ms, %.1f pairs/s, loss %.4f" % (
        torch.__version__, torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", a.mode, t_warm, dt * 1e3, a.batch / dt, loss.item()))
    print("result impl=torch-%s precision=bf16-autocast batch=%d step_ms=%.3f pairs_per_s=%.2f" % (
        a.mode, a.batch, dt * 1e3, a.batch / dt))


if __name__ == "__main__":
    main()
