"""How far can image-domain self-supervision take stage 1's image on 8 training slices?
A ceiling probe for issue 13's x~0 bar (docs/STAGE2.md, "Session 30").

Run::

    python benchmarks/bench_stage2_pixel_probe.py MODEL_DIR [--iters 1200] [--calibrated]

``MODEL_DIR`` is a saved model (``BENCH_OUT/runs/turndiff/model``); only its stage 1 is
used. Stage 2's recorrupted loss, without the latent diffusion around it: the project's
pixel-domain residual U-Net (the learned baselines' network and ``fast`` budget: features
16-128, batches of 4 crops of 128, AdamW 1e-3, EMA 0.995, the shared training loop) is
given the blend stage 2 is conditioned on, ``x0+ + s (x_ld+ - x0+)`` with ``s ~ U(0.2,
1.5)``, and ``x_ld+`` beside it, and trained toward ``FBP(y-)`` on the recorrupted copies of
the benchmark's 8 training sinograms (:func:`turndiff.stage2.train.recorrupted_images`,
``a = 0.5``, two copies). ``--calibrated`` builds ``x0+`` with the SURE calibration the
pipeline applies at inference (stage 2 is trained on the uncalibrated one). It prints
soft PSNR / SSIM in the body on the 6 validation phantoms at 25% (``make_dev_data``) of
FBP, x0 (both), and the network on blends of weight ``w`` with the matching x0. If a
pixel network at this budget, given x0, cannot beat x0, the latent diffusion, which adds
an autoencoder and a coarser latent grid to the same signal, is not held back by its
architecture alone. The references are used for evaluation only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from turndiff.baselines.data import HU_SCALE, crop_batch_fn
from turndiff.benchmark.data import make_dev_data
from turndiff.nets.denoiser import ResidualDenoiser
from turndiff.physics import CTProjector
from turndiff.pipeline import fbp_hu_on
from turndiff.stage1.model import ProjectionDenoiser
from turndiff.stage2.train import recorrupted_images
from turndiff.training import TrainConfig, train

from bench_stage2_condition import _Detectability, _short  # the script next to this one (isort: skip)

COND_RANGE = (0.2, 1.5)  # stage 2's `cond_noise_scale`


class _BlendR2R(torch.nn.Module):
    """``images`` channels: x0+, x_ld+, x- (HU / HU_SCALE). Loss: MSE of
    ``net(blend, x_ld+)`` against ``x-``; the blend's weight is drawn per sample."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        x0p, xp, xm = batch["images"][:, :1], batch["images"][:, 1:2], batch["images"][:, 2:3]
        lo, hi = COND_RANGE
        s = lo + (hi - lo) * torch.rand(x0p.shape[0], 1, 1, 1, generator=batch["generator"])
        loss = ((self.network(x0p + s * (xp - x0p), xp) - xm) ** 2).mean()
        return loss, {"mse": loss.detach()}


def _apply(net: torch.nn.Module, condition_hu: np.ndarray, x_ld_hu: np.ndarray) -> np.ndarray:
    """The network's image (HU ``[N, H, W]``) for a condition and ``x_ld`` beside it."""
    with torch.no_grad():
        out = net(torch.from_numpy(condition_hu[:, None] / HU_SCALE).float(),
                  torch.from_numpy(x_ld_hu[:, None] / HU_SCALE).float())
    return out[:, 0].numpy() * HU_SCALE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a saved model folder (its projection_denoiser is used)")
    ap.add_argument("--iters", type=int, default=1200)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--calibrated", action="store_true", help="x0+ (and x0 at inference) SURE-calibrated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pipeline", action="store_true",
                    help="also run the model's whole pipeline with the network's image in place of x~0")
    ap.add_argument("--lcd", type=int, default=0, metavar="R",
                    help="with --pipeline: lesion contrast and the CHO's d' at 25%% (bench_stage2_condition.py's "
                         "validation check, R noise realisations)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    data = make_dev_data(val_doses=(0.25,))
    A = CTProjector(data.geometry)
    cpu = torch.device("cpu")
    s1 = ProjectionDenoiser.from_pretrained(f"{args.model}/projection_denoiser")

    def stage1(s: np.ndarray) -> np.ndarray:
        if args.calibrated:
            return s1.denoise_calibrated(s, calibrate=True, device="cpu").denoised
        return s1.denoise(s, device="cpu")

    t = time.perf_counter()
    xp, x0p, xm = recorrupted_images(data.train_sinogram, float(s1.photons), stage1, lambda s: fbp_hu_on(A, s, cpu),
                                     recorrupt=0.5, copies=args.copies, seed=0)
    print(f"recorrupted copies: {time.perf_counter() - t:.0f} s", flush=True)
    bank = torch.from_numpy(np.stack([x0p, xp, xm], 1) / HU_SCALE).float()
    net = ResidualDenoiser(1, features=(16, 16, 32, 64, 128, 16), in_extra=1)
    cfg = TrainConfig(iters=args.iters, lr=1e-3, warmup=50, weight_decay=1e-4, grad_clip=1.0, ema_decay=0.995,
                      checkpoint_every=0, seed=args.seed, device="cpu")
    res = train(_BlendR2R(net), crop_batch_fn(bank, batch_size=4, crop=128), cfg, progress=False)
    print(f"training: {res.seconds:.0f} s", flush=True)
    net.eval()

    y, ref = data.test_sinograms[0.25], data.test_reference_hu
    x_ld = A.fbp_hu(y)
    x0_raw = A.fbp_hu(s1.denoise(y, device="cpu"))
    x0_cal = A.fbp_hu(s1.denoise_calibrated(y, calibrate=True, device="cpu").denoised)

    def score(img: np.ndarray) -> str:
        return _short(img, ref)

    print(f"| image (validation, 25%) | PSNR / SSIM |\n|---|---|\n| FBP | {score(x_ld)} |\n"
          f"| x0, uncalibrated | {score(x0_raw)} |\n| x0, calibrated | {score(x0_cal)} |")
    base = x0_cal if args.calibrated else x0_raw
    for w in (0.2, 0.5, 1.0):
        out = _apply(net, base + w * (x_ld - base), x_ld)
        print(f"| pixel network, {args.iters} steps, blend w = {w} | {score(out)} |", flush=True)
    if not args.pipeline:
        return
    from turndiff.pipeline import TurnDiffPipeline

    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    for dose in (0.25, 0.1, 0.5):
        yd = make_dev_data(val_doses=(dose,)).test_sinograms[dose]
        shipped = pipe(yd, progress=False)
        x_pix = _apply(net, shipped.x_prior, shipped.x_ld)
        swapped = pipe(yd, progress=False, x_diffusion=x_pix)
        print(f"| {dose:.0%}: x~0 / TurnDiff, shipped | {score(shipped.x_diffusion)} | {score(shipped.image_hu)} |\n"
              f"| {dose:.0%}: pixel network on the pipeline's blend / TurnDiff with it | {score(x_pix)} | "
              f"{score(swapped.image_hu)} |", flush=True)
    if args.lcd:
        _detectability(pipe, net, data, args.lcd)


def _detectability(pipe, net: torch.nn.Module, data, realizations: int) -> None:
    """bench_stage2_condition.py's validation-side check (same lesions, LCD realisations and
    stage-1 passes), with the shipped x~0 and with the network's image in its place."""
    det = _Detectability(pipe, data, realizations)
    print(det.header(), flush=True)

    inputs = ((data.test_sinograms[0.25], None), (det.les_sino, det.les_pass), (det.lcd_sino, det.lcd_pass),
              (det.free_sino, det.free_pass))
    shipped = [pipe(sino, seed=0, progress=False, projection=proj) for sino, proj in inputs]
    runs = {"shipped": shipped,
            "pixel network": [pipe(sino, seed=0, progress=False, projection=proj,
                                   x_diffusion=_apply(net, out.x_prior, out.x_ld))
                              for (sino, proj), out in zip(inputs, shipped)]}
    for name, outs in runs.items():
        print(det.scored_row(name, *outs), flush=True)


if __name__ == "__main__":
    main()
