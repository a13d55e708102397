"""The C model against an independent PyTorch reference (tests/vicmae_ref.py, written after the
official ViC-MAE code): `vicmae debug-step` on a tiny model writes parameters, masks, losses and
gradients; the reference rebuilds the model from the file (load_state_dict strict: the names are
the official ones), replays the step in float64 and compares

  - every loss term within 1e-5 relative,
  - every gradient within 1e-4 relative (norm-wise: |g_c - g_ref| / |g_ref|),
  - the fixed 2D sin-cos position embeddings against MAE's get_2d_sincos_pos_embed,
  - 5 AdamW steps (MAE param groups, lr warmup + cosine, w_con warmup, grad clipping): the losses
    of every step, the parameters and BatchNorm running statistics after the last step,

for InfoNCE, SimSiam and VICReg, with and without norm_pix_loss (configs/tiny.ini sizes).

Some gradients are exactly zero in exact arithmetic: the biases of the Linear layers that feed a
BatchNorm (projector.0/3.bias: BatchNorm subtracts them again) and the key part of every
attn.qkv.bias (softmax is invariant to adding q.b_k to every logit of a row).  Rounding leaves
noise there (~1e-8 in float32, ~1e-17 in float64), which a relative comparison cannot judge, so
those are compared absolutely against the size of the whole gradient, and after AdamW steps (which
turn any noise into a full +-lr step) they are only required to move at most lr per step, and
the BatchNorm running means that follow them are compared loosely (1e-2).
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import test, skip, run, repo_root, vicmae_bin  # noqa: E402

try:
    import torch
    import vicmae_ref as ref
except ImportError as e:  # reported per test below
    torch = None
    _import_error = str(e)

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
B = 4
# VICMAE_DEBUG_BACKEND=cuda checks the CUDA backend against the same reference (on a GPU node).
BACKEND = os.environ.get("VICMAE_DEBUG_BACKEND", "cpu")
# VICMAE_DEBUG_DIR=DIR checks DIR/<test>.safetensors made elsewhere by the commands that VICMAE_PRINT_COMMANDS=1 prints.
PRE_DIR = os.environ.get("VICMAE_DEBUG_DIR")
PRINT_ONLY = os.environ.get("VICMAE_PRINT_COMMANDS") == "1"
TMP = tempfile.mkdtemp(prefix="vicmae_torch_")
atexit.register(shutil.rmtree, TMP, True)


def binary():
    b = vicmae_bin()
    trainer = os.path.join(os.path.dirname(b), "vicmae-trainer")  # GStreamer-free, enough here
    for c in (trainer, b):
        if os.path.exists(c):
            return c
    skip(f"{b} not built")


def batch_file():
    path = os.path.join(TMP, "batch.npy")
    if not os.path.exists(path):
        rng = np.random.default_rng(1234)
        # smooth-ish images (so norm_pix and attention see structure) plus noise
        yy, xx = np.mgrid[0:32, 0:32]
        base = (np.sin(xx[None, None, :, :, None] * 0.3 + rng.uniform(0, 6, (B, 2, 1, 1, 3))) * 80 + 128)
        img = base + rng.normal(0, 20, (B, 2, 32, 32, 3)) + yy[None, None, :, :, None]
        np.save(path, np.clip(img, 0, 255).astype(np.uint8))
    return path


def debug_step(name, sets, steps=1):
    if torch is None:
        skip(f"python3-torch missing: {_import_error}")
    if PRE_DIR:  # files written elsewhere (a GPU node without torch) by the same commands
        path = os.path.join(PRE_DIR, name + ".safetensors")
        if not os.path.exists(path):
            skip(f"{path} absent")
        return path
    out = os.path.join(TMP, name + ".safetensors")
    cmd = [binary(), "debug-step", "--config", os.path.join(repo_root(), "configs", "tiny.ini"),
           "--batch", batch_file(), "--out", out, "--backend", BACKEND, "--steps", str(steps),
           "--set", f"optim.batch_size={B}", "--set", "run.seed=7"]
    for s in sets:
        cmd += ["--set", s]
    if PRINT_ONLY:  # a shell script that writes the files into $OUT (for VICMAE_DEBUG_DIR)
        line = " ".join(cmd[1:]).replace(out, f"$OUT/{name}.safetensors")
        print(f'"$BIN" {line}'.replace(batch_file(), "$OUT/batch.npy").replace(repo_root() + "/", ""))
        skip("printed")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"debug-step failed ({r.returncode}): {r.stderr.strip()}"
    return out


def rel(a, b):
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-12)


def zero_grad_part(name, shape, contrastive):
    """Boolean mask of the elements whose exact gradient is zero (see the module comment)."""
    m = np.zeros(shape, dtype=bool)
    if name.endswith("attn.qkv.bias"):
        C = shape[0] // 3
        m[C:2 * C] = True
    elif name in ("projector.0.bias", "projector.3.bias"):
        m[:] = True
    elif name == "projector.6.bias" and contrastive in ("simsiam", "vicreg"):
        # SimSiam: z reaches the loss only through the predictor's BatchNorm (stop-gradient
        # elsewhere); VICReg: a shift common to z1 and z2 cancels in every term.
        m[:] = True
    return m


def forward(model, t, cfg, step, prefix="mask"):
    views = torch.from_numpy(t["input.views"])
    if prefix == "steps":
        keep = torch.from_numpy(t["steps.ids_keep"][step]).long()
        restore = torch.from_numpy(t["steps.ids_restore"][step]).long()
    else:
        keep = torch.from_numpy(t["mask.ids_keep"]).long()
        restore = torch.from_numpy(t["mask.ids_restore"]).long()
    return model(views, keep, restore, cfg["loss"].getfloat("w_rec"), ref.w_con_at(cfg, step))


def check_one_step(name, sets):
    path = debug_step(name, sets)
    model, t, cfg, _ = ref.build_from_debug_step(path)
    # fixed position embeddings are MAE's
    G = cfg["model"].getint("img_size") // cfg["model"].getint("patch_size")
    for k, dim in (("pos_embed", "embed_dim"), ("decoder_pos_embed", "decoder_embed_dim")):
        want = ref.get_2d_sincos_pos_embed(cfg["model"].getint(dim), G, cls_token=True).astype(np.float32)
        assert np.array_equal(t[k][0], want), f"{k} differs from MAE's sin-cos by {np.abs(t[k][0] - want).max()}"
    loss, rec, con, terms = forward(model, t, cfg, 0)
    assert rel(t["loss.w_con"], ref.w_con_at(cfg, 0)) < 1e-6, "w_con"
    worst = {}
    for key, val in (("loss.total", loss), ("loss.rec", rec), ("loss.con", con)):
        worst[key] = rel(t[key], val)
        assert worst[key] < LOSS_RTOL, f"{key}: C {float(t[key]):.9g} vs torch {float(val):.9g} (rel {worst[key]:.2e})"
    if cfg["loss"].get("contrastive") == "vicreg":
        for i in range(3):
            assert rel(t["loss.con_terms"][i], terms[i]) < LOSS_RTOL, f"vicreg term {i}"
    loss.backward()
    gworst, gname, n = 0.0, "", 0
    grads = {pname: (t["grad." + pname].astype(np.float64),
                     p.grad.numpy() if p.grad is not None else np.zeros(p.shape))
             for pname, p in model.named_parameters() if p.requires_grad}
    total = np.sqrt(sum(np.sum(g_t ** 2) for _, g_t in grads.values()))
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            assert "grad." + pname not in t, f"gradient written for the fixed {pname}"
            continue
        g_c, g_t = grads[pname]
        z = zero_grad_part(pname, g_c.shape, cfg["loss"].get("contrastive"))
        if z.any():
            noise = np.linalg.norm(g_c[z]) / total
            assert noise < GRAD_RTOL * 0.1, f"grad.{pname}: {noise:.2e} of the gradient norm where it is exactly zero"
            assert np.linalg.norm(g_t[z]) / total < 1e-12, f"torch grad.{pname} not zero where expected"
            g_c, g_t = g_c[~z], g_t[~z]
            if g_c.size == 0:
                continue
        nt = np.linalg.norm(g_t)
        err = np.linalg.norm(g_c - g_t) / nt if nt > 0 else np.linalg.norm(g_c)
        n += 1
        if err > gworst:
            gworst, gname = err, pname
        assert err < GRAD_RTOL, f"grad.{pname}: relative error {err:.2e} (|g| {nt:.3e})"
    print(f"    {name}: loss rel err {max(worst.values()):.1e}, worst grad rel err {gworst:.1e} ({gname}), "
          f"{n} gradients", flush=True)


def check_steps(name, sets, steps=5, loss_rtol=1e-4, param_rtol=1e-4):
    path = debug_step(name, sets, steps)
    model, t, cfg, meta = ref.build_from_debug_step(path)
    total = int(meta["total_steps"])
    o = cfg["optim"]
    opt = torch.optim.AdamW(ref.param_groups(model, o.getfloat("weight_decay")), lr=0.0,
                            betas=(o.getfloat("beta1"), o.getfloat("beta2")), eps=o.getfloat("eps"))
    clip = o.getfloat("clip_grad")
    worst, lr_sum = 0.0, 0.0
    for s in range(steps):
        lr = ref.lr_at(cfg, s, total)
        lr_sum += lr
        assert rel(t["steps.lr"][s], lr) < 1e-6 or abs(lr) < 1e-12 and t["steps.lr"][s] == 0, \
            f"step {s}: lr C {t['steps.lr'][s]} vs {lr}"
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss, rec, con, _ = forward(model, t, cfg, s, prefix="steps")
        for i, v in enumerate((loss, rec, con)):
            # SimSiam's loss is a mean cosine: it crosses 0, its natural scale is 1.
            floor = 1.0 if i == 2 and cfg["loss"].get("contrastive") == "simsiam" else 0.0
            e = abs(float(t["steps.loss"][s][i]) - float(v)) / max(abs(float(v)), floor, 1e-12)
            worst = max(worst, e)
            assert e < loss_rtol, f"step {s} loss term {i}: C {t['steps.loss'][s][i]:.9g} vs torch {float(v):.9g}"
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        assert rel(t["steps.grad_norm"][s], norm) < 1e-4, f"step {s}: grad norm {t['steps.grad_norm'][s]} vs {norm}"
        opt.step()
    pworst, pname = 0.0, ""
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        c = t["final." + k].astype(np.float64)
        r = v.numpy()
        z = zero_grad_part(k, c.shape, cfg["loss"].get("contrastive"))
        if z.any():  # driven by rounding noise on both sides: bounded by the lr steps only
            moved = np.abs(c[z] - t[k][z]).max()
            assert moved <= lr_sum * 1.001 + 1e-7, f"final.{k}: moved {moved} > sum of lr {lr_sum}"
            c, r = c[~z], r[~z]
            if c.size == 0:
                continue
        e = np.linalg.norm(c - r) / max(np.linalg.norm(r), 1e-12)
        if k.endswith("running_mean"):
            # follows the noise-driven biases above (a shift of the BatchNorm input): loose
            assert e < 1e-2, f"final.{k}: relative error {e:.2e}"
            continue
        if e > pworst:
            pworst, pname = e, k
        assert e < param_rtol, f"final.{k}: relative error {e:.2e}"
    print(f"    {name}: {steps} AdamW steps, worst loss rel err {worst:.1e}, worst param rel err {pworst:.1e} "
          f"({pname})", flush=True)


@test
def test_infonce_norm_pix():
    check_one_step("infonce_np", ["loss.contrastive=infonce", "model.norm_pix_loss=true"])


@test
def test_infonce_raw_pix():
    check_one_step("infonce_raw", ["loss.contrastive=infonce", "model.norm_pix_loss=false"])


@test
def test_simsiam_norm_pix():
    check_one_step("simsiam_np", ["loss.contrastive=simsiam", "model.norm_pix_loss=true"])


@test
def test_simsiam_raw_pix():
    check_one_step("simsiam_raw", ["loss.contrastive=simsiam", "model.norm_pix_loss=false"])


@test
def test_vicreg_norm_pix():
    check_one_step("vicreg_np", ["loss.contrastive=vicreg", "model.norm_pix_loss=true"])


@test
def test_vicreg_raw_pix():
    check_one_step("vicreg_raw", ["loss.contrastive=vicreg", "model.norm_pix_loss=false"])


@test
def test_no_contrastive():
    check_one_step("none", ["loss.contrastive=none"])


@test
def test_cls_pool_and_strong_contrastive_weight():
    # A large w_con makes the contrastive gradient through the encoder visible in every tensor.
    check_one_step("cls_pool", ["loss.contrastive=infonce", "model.pool=cls", "loss.w_con=0.5"])


@test
def test_adamw_steps_infonce():
    check_steps("steps_infonce", ["loss.contrastive=infonce", "optim.warmup_steps=2", "optim.steps=6",
                                  "optim.min_lr=1e-5", "loss.con_warmup_steps=3", "loss.con_warmup_shape=cosine",
                                  "optim.clip_grad=0.5", "optim.base_lr=0.05"])


@test
def test_adamw_steps_simsiam():
    check_steps("steps_simsiam", ["loss.contrastive=simsiam", "optim.warmup_steps=1", "loss.con_warmup_steps=2",
                                  "optim.base_lr=0.05", "model.norm_pix_loss=false"])


@test
def test_adamw_steps_vicreg():
    check_steps("steps_vicreg", ["loss.contrastive=vicreg", "optim.base_lr=0.05", "optim.clip_grad=2.0"])


if __name__ == "__main__":
    torch_threads = 1
    if torch is not None:
        torch.set_num_threads(torch_threads)
    run()
