"""Benchmark stage 2 (latent diffusion distilled from the stage-1 teacher) on arrays.

Usage::

    python benchmarks/bench_stage2.py DATA.npz --out DIR [--preset fast|paper]
        [--slices 8] [--device cpu] [--steps K] [--strength S] [--seed K] [--lam L]

``DATA.npz`` holds float32 HU stacks ``x_ld`` (FBP of the noisy sinograms) and ``x0``
(the stage-1 teacher), both ``[N, H, W]``, and optionally ``reference`` (ground truth,
used only for the metrics, never for training). The script trains stage 2 on the
first ``--slices`` slices, samples x~0 conditioned on ``x_ld`` (or on the blend
``lam * x_ld + (1 - lam) * x0`` of the tunable strategy) and writes to DIR:
``stage2_report.json`` (timings, autoencoder error in HU, PSNR/SSIM in the soft and
full windows, detail measures incl. ``turndiff.metrics.gradient_ratios``, the per-pixel
spread over 4 seeds), ``stage2.png``
and the model folder ``model/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

WINDOWS = {"soft": (-160.0, 240.0), "full": (-1024.0, 3072.0)}


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip(x, lo, hi) - lo) / (hi - lo)


def window_metrics(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM per window (clipped and scaled to [0, 1]) and RMSE in HU, slice means."""
    from skimage.metrics import structural_similarity

    out: dict[str, float] = {"rmse_hu": float(np.sqrt(np.mean((image - reference) ** 2)))}
    for name, (lo, hi) in WINDOWS.items():
        a, r = _scaled(image, lo, hi), _scaled(reference, lo, hi)
        mse = np.mean((a - r) ** 2, axis=(1, 2))
        out[f"psnr_{name}"] = float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))
        out[f"ssim_{name}"] = float(np.mean([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, r)]))
    return out


def detail(image: np.ndarray) -> dict[str, float]:
    """Detail measures in the soft window: mean gradient magnitude (HU / pixel) and the
    fraction of spectral energy above half the Nyquist frequency."""
    lo, hi = WINDOWS["soft"]
    x = np.clip(image, lo, hi)
    gy, gx = np.gradient(x, axis=(1, 2))
    spec = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True)), axes=(1, 2))) ** 2
    n = x.shape[-1]
    f = np.fft.fftshift(np.fft.fftfreq(n))
    radius = np.sqrt(f[None, :] ** 2 + f[:, None] ** 2)
    high = spec[:, radius > 0.25].sum() / spec.sum()
    return {"grad_mean_hu": float(np.mean(np.hypot(gx, gy))), "hf_energy_fraction": float(high)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="fast", choices=["fast", "paper"])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strength", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lam", type=float, default=1.0,
                        help="sample conditioned on lam * x_ld + (1 - lam) * x0 (1: x_ld itself)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from turndiff.stage2 import Stage2Config, autoencoder_error_hu, sample_spread, train_stage2

    data = np.load(args.data)
    x_ld = data["x_ld"][: args.slices].astype(np.float32)
    x0 = data["x0"][: args.slices].astype(np.float32)
    reference = data["reference"][: args.slices].astype(np.float32) if "reference" in data else None
    args.out.mkdir(parents=True, exist_ok=True)
    config = Stage2Config.preset(args.preset)
    report: dict = {"preset": args.preset, "slices": int(x_ld.shape[0]), "shape": list(x_ld.shape[1:]),
                    "torch_threads": torch.get_num_threads(), "config": config.to_dict()}

    t0 = time.perf_counter()
    model = train_stage2(x_ld, x0, config, run_dir=args.out / "run", device=args.device, seed=args.seed,
                         progress=not args.no_progress)
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    report["training"] = model.training_info
    model.save_pretrained(args.out / "model")

    kwargs = {"steps": args.steps, "strength": args.strength}
    condition = args.lam * x_ld + (1.0 - args.lam) * x0
    report["condition_lam"] = args.lam
    t0 = time.perf_counter()
    x_tilde = model.sample(condition, seed=args.seed, **kwargs)
    report["sample_seconds"] = round(time.perf_counter() - t0, 2)
    report["sample_steps"] = args.steps or config.sampler.steps
    report["sample_strength"] = args.strength or config.sampler.strength
    spread = sample_spread(model, condition, seeds=(0, 1, 2, 3), **kwargs)
    report["seed_spread_hu"] = spread.summary()
    report["autoencoder_error_hu"] = {"x0": autoencoder_error_hu(model, x0), "x_ld": autoencoder_error_hu(model, x_ld)}
    ae_x0 = model.reconstruct(x0)

    images = {"x_ld": x_ld, "x0": x0, "ae(x0)": ae_x0, "x_tilde": x_tilde}
    report["detail"] = {k: detail(v) for k, v in images.items()}
    report["vs_teacher"] = window_metrics(x_tilde, x0)
    if reference is not None:
        from turndiff.metrics import gradient_ratios

        report["detail"]["reference"] = detail(reference)
        report["metrics"] = {k: window_metrics(v, reference) for k, v in images.items()}
        # Issue 4's detail measure (inside the body), split into edges and flat regions.
        report["gradient_ratios"] = {k: gradient_ratios(v, reference, mask="body") for k, v in images.items()}
        m, g = report["metrics"], report["gradient_ratios"]
        report["bars"] = {
            "ssim_soft_x_tilde_minus_x0": m["x_tilde"]["ssim_soft"] - m["x0"]["ssim_soft"],
            "psnr_soft_x_tilde_minus_x0_db": m["x_tilde"]["psnr_soft"] - m["x0"]["psnr_soft"],
            "gradient_ratio_x_tilde_minus_x0": g["x_tilde"]["all"] - g["x0"]["all"],
        }
    (args.out / "stage2_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dict(images, **({"reference": reference} if reference is not None else {}))
    panels["seed std (0-20 HU)"] = spread.std
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, img) in zip(axes, panels.items()):
        if name.startswith("seed std"):
            ax.imshow(img[0], cmap="magma", vmin=0, vmax=20)
        else:
            ax.imshow(img[0], cmap="gray", vmin=-160, vmax=240)
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "stage2.png", dpi=90)
    print(json.dumps({k: report[k] for k in ("train_seconds", "sample_seconds", "seed_spread_hu",
                                             "autoencoder_error_hu", "vs_teacher")
                      + (("metrics", "bars") if reference is not None else ())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
