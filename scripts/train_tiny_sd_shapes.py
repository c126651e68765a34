#!/usr/bin/env python3
"""Train the weights of `builtin:tiny-sd-shapes`: the tiny-sd architecture taught to make the
procedural images of autotune/models/shapes.py, so the quality guard is measured on images with
edges and flat areas rather than on the random built-ins' noise.

The latent space is fixed, not learned: a latent is the image's colours averaged over each 8x8
block (analytic_latents). Two stages, seeded and on one CPU thread so that a rerun with the same
torch build on the same kind of CPU writes the same bytes (the checksums in weights.json say
whether it did):
  1. the VAE: its decoder learns latents -> image, its encoder's mean image -> latents, on 32 px
     crops of 64 px shape images (MSE);
  2. the UNet as an epsilon-predicting denoiser of the latents of 64 px images (8x8 latents),
     with the DDPM schedule of the pipeline's scheduler. Conditioning is trivial: the
     cross-attention output projections are zero and frozen, so the prompt changes nothing and
     classifier-free guidance is a no-op (cond and uncond predictions are the same).
The text encoder keeps tiny-sd's seeded random weights (builtins.build_builtin makes them).

    python scripts/train_tiny_sd_shapes.py [--out autotune/model_weights/tiny-sd-shapes]
    python scripts/train_tiny_sd_shapes.py --vae-steps 5 --unet-steps 5 --out /tmp/x  # a smoke run
Weights are written in fp16 (2.6 MB for both); the scaling factor of the latents and the sha256
of each file go to weights.json beside them, which builtins.py reads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autotune.models.builtins import WEIGHT_SEED, builtin_configs  # noqa: E402
from autotune.models.shapes import shape_images  # noqa: E402

log = logging.getLogger("train_tiny_sd_shapes")

DATA_SEED = 0
IMAGE_SIZE = 64
#: Pixels per latent sample (tiny-sd's VAE downsamples 8x, as SD's does).
SCALE = 8
VAE_STEPS, VAE_BATCH, VAE_CROP, VAE_LR = 800, 8, 32, 3e-3
UNET_STEPS, UNET_BATCH, UNET_LR = 1200, 16, 2e-3
#: Distinct 64 px images the UNet learns the latents of (flipped at random).
LATENT_IMAGES = 4096
#: Latent channels from RGB: the three colours and their mean.
COLOUR_TO_LATENT = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
#: The encoder's log-variance bias (std 0.02): the posterior is nearly its mean.
LOGVAR = -8.0
WARMUP = 50
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "autotune" / "model_weights" / "tiny-sd-shapes"


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up, then a cosine to zero: short runs end far better with the decay."""
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    return peak * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(1, steps - WARMUP)))


def analytic_latents(images: torch.Tensor) -> torch.Tensor:
    """The latents an image stands for: its colours averaged over each 8x8 block. Fixed, not
    learned: a VAE learned from scratch needs far more than minutes on two cores (measured: a
    32 px autoencoder stayed near a flat colour per crop after 500 steps), and a decoder that
    only has to upsample learns in a few hundred."""
    pooled = torch.nn.functional.avg_pool2d(images, SCALE)
    return torch.einsum("lc,bchw->blhw", COLOUR_TO_LATENT, pooled)


def train_decoder(vae: Any, steps: int, gen: torch.Generator) -> None:
    """The decoder learns latents -> image; the encoder's mean is fitted to the same latents on
    the same batch (its log-variance is pinned low), so `vae.encode` is the decoder's inverse."""
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels:] = LOGVAR
    opt = torch.optim.Adam(vae.parameters(), lr=VAE_LR)
    vae.train()
    images = torch.from_numpy(shape_images(DATA_SEED, max(steps, 1) * VAE_BATCH // 4 + VAE_BATCH, IMAGE_SIZE))
    start = time.perf_counter()
    cells = (IMAGE_SIZE - VAE_CROP) // SCALE + 1
    for step in range(steps):
        idx = torch.randint(0, len(images), (VAE_BATCH,), generator=gen)
        y0, x0 = (SCALE * torch.randint(0, cells, (2,), generator=gen)).tolist()
        x = images[idx, :, y0:y0 + VAE_CROP, x0:x0 + VAE_CROP]
        z = analytic_latents(x)
        set_lr(opt, lr_at(step, steps, VAE_LR))
        recon = vae.decode(z).sample
        mean = vae.encode(x).latent_dist.mean
        loss = torch.nn.functional.mse_loss(recon, x) + torch.nn.functional.mse_loss(mean, z)
        descend(opt, loss, "vae", step, steps, start)
    vae.eval()


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, what: str, step: int, steps: int, start: float) -> None:
    """One optimizer step, logged every 100 steps and at the last."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0 or step == steps - 1:
        log.info("%s step %d/%d loss %.5f (%.0f s)", what, step, steps, loss.item(), time.perf_counter() - start)


def freeze_cross_attention(unet: Any) -> None:
    """Zero the cross-attention output projections and freeze cross-attention: text is ignored."""
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            torch.nn.init.zeros_(module.to_out[0].weight)
            torch.nn.init.zeros_(module.to_out[0].bias)
            for p in module.parameters():
                p.requires_grad_(False)


def train_unet(unet: Any, latents: torch.Tensor, steps: int, gen: torch.Generator) -> None:
    from diffusers import DDPMScheduler

    sched_cfg = builtin_configs("builtin:tiny-sd")["scheduler"]
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_start=sched_cfg["beta_start"],
                             beta_end=sched_cfg["beta_end"], beta_schedule=sched_cfg["beta_schedule"])
    freeze_cross_attention(unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=UNET_LR)
    context = torch.zeros(UNET_BATCH, 1, unet.config.cross_attention_dim)
    unet.train()
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(latents), (UNET_BATCH,), generator=gen)
        x0 = latents[idx]
        flip = torch.rand(UNET_BATCH, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (UNET_BATCH,), generator=gen)
        set_lr(opt, lr_at(step, steps, UNET_LR))
        pred = unet(schedule.add_noise(x0, noise, t), t, context).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        descend(opt, loss, "unet", step, steps, start)
    unet.eval()


@torch.no_grad()
def round_to_fp16(module: Any) -> None:
    for p in module.parameters():
        p.copy_(p.to(torch.float16).float())


def save(module: Any, path: Path) -> str:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vae-steps", type=int, default=VAE_STEPS)
    parser.add_argument("--unet-steps", type=int, default=UNET_STEPS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.set_num_threads(1)  # one thread: the same reduction order on every run
    torch.use_deterministic_algorithms(True)
    configs = builtin_configs("builtin:tiny-sd")
    torch.manual_seed(WEIGHT_SEED)
    gen = torch.Generator().manual_seed(DATA_SEED)
    vae = AutoencoderKL.from_config(configs["vae"])
    train_decoder(vae, args.vae_steps, gen)
    latents = analytic_latents(torch.from_numpy(shape_images(DATA_SEED + 1, LATENT_IMAGES, IMAGE_SIZE)))
    scaling = float(f"{1 / latents.std().item():.4g}")
    log.info("latents: std %.4f, mean %.4f -> scaling factor %s", latents.std(), latents.mean(), scaling)
    unet = UNet2DConditionModel.from_config(configs["unet"])
    train_unet(unet, latents * scaling, args.unet_steps, gen)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "trained_by": "scripts/train_tiny_sd_shapes.py",
        "vae_steps": args.vae_steps, "unet_steps": args.unet_steps,
        "scaling_factor": scaling, "image_size": IMAGE_SIZE,
        "torch": torch.__version__, "numpy": np.__version__,
        "sha256": {name: save(module, args.out / f"{name}.safetensors") for name, module in (("unet", unet), ("vae", vae))},
    }
    (args.out / "weights.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, meta["sha256"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
