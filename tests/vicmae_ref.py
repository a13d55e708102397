"""PyTorch reference of the ViC-MAE model, written after the official code (models_vicmae.py of
jeffhernandez1995/ViC-MAE, itself MAE's models_mae.py + projector + InfoNCE) with timm's Block
semantics, so that a `vicmae debug-step` file can be checked independently of the C code.

Only numpy and torch (Debian python3-torch) are needed: safetensors files are parsed here.
Run everything in float64 so that the C float32 results are compared against exact-ish values.
"""
import configparser
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMNET_MEAN = (0.485, 0.456, 0.406)
IMNET_STD = (0.229, 0.224, 0.225)

ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    """-> (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        arr = np.frombuffer(data[b:en], dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = arr.copy()
    return out, meta


def parse_config(ini_text):
    cp = configparser.ConfigParser()
    cp.read_string(ini_text)
    return cp


# ---- MAE's util/pos_embed.py ---------------------------------------------------------------------
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    pos = pos.reshape(-1)
    out = np.einsum("m,d->md", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    pos_embed = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


# ---- timm's ViT Block (qkv_bias=True, exact GELU, LayerNorm eps 1e-6) ----------------------------
class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViCMAERef(nn.Module):
    """The official ViCMAE module layout (parameter registration order = state_dict order)."""

    def __init__(self, cfg):
        super().__init__()
        m = cfg["model"]
        g = lambda k: m.getint(k)
        self.img_size, self.patch_size = g("img_size"), g("patch_size")
        D, Dd = g("embed_dim"), g("decoder_embed_dim")
        mlp_ratio = m.getfloat("mlp_ratio")
        L = (self.img_size // self.patch_size) ** 2
        self.num_patches = L
        self.mask_ratio = m.getfloat("mask_ratio")
        self.norm_pix_loss = m.getboolean("norm_pix_loss")
        self.pool = m.get("pool")
        self.patch_embed = PatchEmbed(self.patch_size, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, D), requires_grad=False)
        self.blocks = nn.ModuleList([Block(D, g("num_heads"), mlp_ratio) for _ in range(g("depth"))])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.decoder_embed = nn.Linear(D, Dd, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, Dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(Dd, g("decoder_num_heads"), mlp_ratio) for _ in range(g("decoder_depth"))])
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, self.patch_size ** 2 * 3, bias=True)
        h, o = g("proj_hidden_dim"), g("proj_out_dim")
        self.projector = nn.Sequential(
            nn.Linear(D, h), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, o))
        lo = cfg["loss"]
        self.contrastive = lo.get("contrastive")
        self.temperature = lo.getfloat("temperature")
        self.vicreg = (lo.getfloat("vicreg_sim"), lo.getfloat("vicreg_var"), lo.getfloat("vicreg_cov"))
        if self.contrastive == "simsiam":
            ph = g("pred_hidden_dim")
            self.predictor = nn.Sequential(nn.Linear(o, ph, bias=False), nn.BatchNorm1d(ph), nn.ReLU(),
                                           nn.Linear(ph, o))

    # -- MAE pieces --
    def patchify(self, imgs):
        p = self.patch_size
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * 3))

    def given_masking(self, x, ids_keep, ids_restore):
        """MAE's random_masking with the noise's argsort replaced by the recorded indices."""
        N, L, D = x.shape
        len_keep = ids_keep.shape[1]
        ids_shuffle = torch.argsort(ids_restore, dim=1)
        assert torch.equal(ids_shuffle[:, :len_keep], ids_keep), "ids_keep and ids_restore disagree"
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask

    def forward_encoder(self, x, ids_keep, ids_restore):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask = self.given_masking(x, ids_keep, ids_restore)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def mse_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    # -- contrastive losses --
    def info_nce_loss(self, z):
        z = F.normalize(z, dim=-1)
        sim = torch.exp(torch.einsum("if, jf -> ij", z, z) / self.temperature)
        indexes = torch.arange(z.size(0) // 2).repeat(2).unsqueeze(0)
        pos_mask = indexes.t() == indexes
        pos_mask.fill_diagonal_(0)
        neg_mask = indexes.t() != indexes
        pos = torch.sum(sim * pos_mask, 1)
        neg = torch.sum(sim * neg_mask, 1)
        return -(torch.mean(torch.log(pos / (pos + neg))))

    def vicreg_loss(self, x, y):
        sim, var, cov = self.vicreg
        N, D = x.shape
        repr_loss = F.mse_loss(x, y)
        x = x - x.mean(dim=0)
        y = y - y.mean(dim=0)
        std_x = torch.sqrt(x.var(dim=0) + 0.0001)
        std_y = torch.sqrt(y.var(dim=0) + 0.0001)
        std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
        cov_x = (x.T @ x) / (N - 1)
        cov_y = (y.T @ y) / (N - 1)
        off = lambda c: c.flatten()[:-1].view(D - 1, D + 1)[:, 1:].flatten()
        cov_loss = off(cov_x).pow(2).sum() / D + off(cov_y).pow(2).sum() / D
        return sim * repr_loss + var * std_loss + cov * cov_loss, (repr_loss, std_loss, cov_loss)

    def forward(self, views, ids_keep, ids_restore, w_rec, w_con):
        """views (B, 2, H, W, 3) uint8 tensor; ids (B, 2, K) / (B, 2, L) int64."""
        x = views.to(torch.float64) / 255.0
        mean = torch.tensor(IMNET_MEAN, dtype=torch.float64)
        std = torch.tensor(IMNET_STD, dtype=torch.float64)
        x = ((x - mean) / std).permute(0, 1, 4, 2, 3)  # (B, 2, 3, H, W)
        x1, x2 = x[:, 0].contiguous(), x[:, 1].contiguous()
        z1, mask1 = self.forward_encoder(x1, ids_keep[:, 0], ids_restore[:, 0])
        z2, mask2 = self.forward_encoder(x2, ids_keep[:, 1], ids_restore[:, 1])
        x1_pred = self.forward_decoder(z1, ids_restore[:, 0])
        x2_pred = self.forward_decoder(z2, ids_restore[:, 1])
        loss_recon = 0.5 * (self.mse_loss(x1, x1_pred, mask1) + self.mse_loss(x2, x2_pred, mask2))
        terms = (0.0, 0.0, 0.0)
        if self.contrastive == "none":
            loss_con = torch.zeros((), dtype=torch.float64)
        else:
            f = (lambda z: z[:, 0]) if self.pool == "cls" else (lambda z: torch.mean(z[:, 1:, :], dim=1))
            u1, u2 = self.projector(f(z1)), self.projector(f(z2))
            if self.contrastive == "infonce":
                loss_con = self.info_nce_loss(torch.cat([u1, u2]))
            elif self.contrastive == "simsiam":
                p1, p2 = self.predictor(u1), self.predictor(u2)
                loss_con = -(F.cosine_similarity(p1, u2.detach(), dim=-1).mean() +
                             F.cosine_similarity(p2, u1.detach(), dim=-1).mean()) * 0.5
            else:
                loss_con, terms = self.vicreg_loss(u1, u2)
        loss = w_con * loss_con + w_rec * loss_recon
        return loss, loss_recon, loss_con, terms


# ---- schedules and param groups (MAE main_pretrain / lr_sched, per step) -------------------------
def lr_at(cfg, step, total_steps):
    o = cfg["optim"]
    peak = o.getfloat("base_lr") * o.getint("batch_size") / 256.0
    lo, warm = o.getfloat("min_lr"), o.getint("warmup_steps")
    if step < warm:
        return peak * step / warm
    if total_steps <= warm:
        return peak
    t = min(1.0, (step - warm) / (total_steps - warm))
    return lo + (peak - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def w_con_at(cfg, step):
    lo = cfg["loss"]
    w, n = lo.getfloat("w_con"), lo.getint("con_warmup_steps")
    if n <= 0 or step >= n:
        return w
    t = step / n
    return w * 0.5 * (1 - math.cos(math.pi * t)) if lo.get("con_warmup_shape") == "cosine" else w * t


def param_groups(model, weight_decay):
    """timm add_weight_decay as MAE's main_pretrain.py uses it."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_from_debug_step(path):
    """-> (model in float64 with the file's parameters, tensors, cfg)."""
    t, meta = read_safetensors(path)
    cfg = parse_config(meta["config"])
    model = ViCMAERef(cfg).double()
    sd = {}
    for k in model.state_dict().keys():
        if k not in t:
            raise KeyError(f"{path}: state_dict tensor {k} missing")
        v = torch.from_numpy(t[k])
        sd[k] = v if v.dtype == torch.int64 else v.double()
    model.load_state_dict(sd, strict=True)
    model.train()
    return model, t, cfg, meta
