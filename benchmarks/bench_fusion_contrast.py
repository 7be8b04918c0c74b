"""Does a low-pass consistency step keep the prior's lesion contrast? (issue 17, on
*validation* phantoms only.)

TurnDiff's output keeps less of an inserted lesion's contrast than its stage-1 prior x0
(`turndiff iq`: 92.7% against 95.8% at 25% dose). The fusion weighs the diffusion output
in flat regions, and the diffusion smooths faint discs. A candidate fix takes the lowest
spatial frequencies from x0 again: ``x = fused + G_s * (x0 - fused)`` with a Gaussian of
``s`` pixels (``s = 0``: today's output). This script measures it on validation phantoms:

Run::

    python benchmarks/bench_fusion_contrast.py MODEL_DIR [--slices 8] [--doses 0.25,0.10,0.50]
        [--prior-scales 0.577,1,2] [--scale-lowband 1] [--lowband 1,2] [--polish 0,28] [--lcd 16]

MODEL_DIR: a model of the benchmark's training phantoms (``BENCH_OUT/runs/turndiff/model``).
For each dose: lesions of 3-5 px, +20 to +30 HU inserted into the projections of the
validation scans (as `turndiff iq` inserts them into test scans), the pipeline run once on
the scans with and once without them, and every ``s`` applied to its outputs: contrast
recovery and CNR of the lesions, and soft-window PSNR / SSIM of the lesion-free images in
the body, for every intermediate image of the pipeline (where the contrast is lost) and,
with ``--prior-scales``, for the data-consistency step redone with a looser or tighter
prior (its mean with x0's band below ``--scale-lowband`` px, by default the pipeline's),
and with ``--lowband``, redone with x0's band below a Gaussian in the prior's mean
(the pipeline's ``lowband=True``), and with ``--polish``, the output before the pipeline's
final TV polish polished with each weight (HU; ``turndiff.inference.polish.bregman_tv``; 0:
none). Prints a Markdown table. ``--lcd R`` adds a second
table: the CHO's d' per rod of the MITA-like phantom at 25% dose over ``R`` noise
realisations drawn from validation seeds (``bench_stage2_condition.lcd_scans``; the
phantom is `turndiff iq`'s object, its noise is not), for the shipped output and for every
``--prior-scales``, ``--lowband`` and ``--polish`` option, so a contrast fix is checked for what it costs
in detectability before it reaches the test side.
"""

from __future__ import annotations

import argparse

import numpy as np

from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import lesion_positions, lesion_scores
from turndiff.benchmark.iq import format_d_prime, lcd_detectability
from turndiff.dose import insert_lesions, photons_from_dose
from turndiff.masks import body_mask
from turndiff.metrics import psnr, ssim
from turndiff.inference import LOWBAND_PX, lowband_fusion
from turndiff.inference.consistency import CONSISTENCY_PRIOR_SCALE, data_consistency
from turndiff.inference.polish import bregman_tv
from turndiff.pipeline import TurnDiffPipeline, consistency_prior

SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)


def _redo_consistency(pipe, out, sinogram, *, prior_scale: float = CONSISTENCY_PRIOR_SCALE,
                      lowband_px: float = 0.0) -> np.ndarray:
    """The pipeline's data-consistency step on ``out.x_restored`` again, with another
    prior scale, or with the prior's mean given x0's band below a Gaussian of
    ``lowband_px`` pixels (0: the mean and std the pipeline used by default)."""
    mean = lowband_fusion(out.x_restored, out.x0, lowband_px)
    prior_mean, prior_std = consistency_prior(mean, out.x_ld, out.x0, out.x_diffusion)
    return data_consistency(prior_mean, sinogram, pipe.projector, prior_std_hu=prior_std,
                            photons=out.photons_estimated, denoised=pipe.stage1.denoise(sinogram, device=pipe.device),
                            prior_scale=prior_scale, device=pipe.device)


def _lesion_scores(base, plus, ref, lesions):
    """(mean contrast recovery, min, mean CNR): :func:`turndiff.benchmark.iq.lesion_scores`."""
    r = lesion_scores(base, plus, ref, lesions)
    return r["contrast_recovery"], r["contrast_recovery_min"], r["cnr"]


def _lcd_table(pipe, args) -> str:
    """d' per rod at 25% for the shipped output and every consistency option (Markdown)."""
    from bench_stage2_condition import lcd_scans  # noqa: PLC0415 (a sibling script)

    scans = lcd_scans(pipe.projector, args.lcd)
    lcd, fbp = scans.phantom, pipe.projector.fbp_hu
    images = {"FBP at 100%": (fbp(scans.full), fbp(scans.free_full))}
    outs = [pipe(s, seed=0, progress=False, lowband_x0=args.band_x0) for s in (scans.low, scans.free_low)]
    images["x0 (prior)"] = tuple(o.x0 for o in outs)
    if args.band_x0 == "calibrated":
        images["TurnDiff (shipped)"] = tuple(o.image_hu for o in outs)
    else:  # the shipped output beside the option's, on the same realisations
        images["TurnDiff (shipped)"] = tuple(pipe(s, seed=0, progress=False).image_hu
                                             for s in (scans.low, scans.free_low))
        images[f"TurnDiff, low band from x0 {args.band_x0}"] = tuple(o.image_hu for o in outs)
    for scale in args.prior_scales:
        images[f"TurnDiff, prior scale {scale:g}"] = tuple(
            _redo_consistency(pipe, o, s, prior_scale=scale, lowband_px=args.scale_lowband)
            for o, s in zip(outs, (scans.low, scans.free_low)))
    for px in args.lowband:
        images[f"TurnDiff, x0's band below {px:g} px"] = tuple(
            _redo_consistency(pipe, o, s, lowband_px=px) for o, s in zip(outs, (scans.low, scans.free_low)))
    for w in args.polish:
        images[f"TurnDiff, polish {w:g} HU"] = tuple(bregman_tv(o.unpolished, w) for o in outs)
    rows = []
    for name, (x, x_free) in images.items():
        det = lcd_detectability(x, lcd, x_free)
        if not rows:
            rows.append("| image (25%) | d' " + " / ".join(r.split(",")[0] for r in det) + " | noise std (HU) |")
            rows.append("|---|---|---|")
        # Pixelwise spread over the realisations, in the water (the discs are >= +3 HU).
        noise = float(np.mean(np.std(x, axis=0, ddof=1)[np.abs(lcd.hu) < 1]))
        rows.append(f"| {name} | " + " / ".join(format_d_prime(det[r]) for r in det) + f" | {noise:.1f} |")
    return f"\nLCD phantom, {args.lcd} validation realisations at 25%:\n\n" + "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--doses", default="0.25,0.10,0.50")
    ap.add_argument("--prior-scales", default="",
                    help="comma-separated prior scales s of the data-consistency step to redo it with "
                         f"(default: none; the shipped one is {CONSISTENCY_PRIOR_SCALE:g})")
    ap.add_argument("--band-x0", choices=("calibrated", "uncalibrated"), default="calibrated",
                    help="the stage-1 image of the pipeline's low band (its lowband_x0): the rows' 'shipped' output "
                         "is then the pipeline's with this option")
    ap.add_argument("--lowband", default="",
                    help="comma-separated Gaussians (px) of x0's band put into the data-consistency prior's mean "
                         "before the step (the pipeline's lowband=True is 1; default: none)")
    ap.add_argument("--scale-lowband", type=float, default=LOWBAND_PX, metavar="PX",
                    help="x0's band (px) in the prior's mean of the --prior-scales rows (default: the pipeline's "
                         f"default, {LOWBAND_PX:g}; 0: none, as before session 34)")
    ap.add_argument("--polish", default="",
                    help="comma-separated TV weights (HU) of the final polish to score the output with, in place of "
                         "the pipeline's (0: none; default: no extra rows)")
    ap.add_argument("--lcd", type=int, default=0, metavar="R",
                    help="also the CHO's d' on R validation noise realisations of the LCD phantom at 25%% dose")
    args = ap.parse_args()
    args.prior_scales = tuple(float(v) for v in args.prior_scales.split(",") if v)
    args.lowband = tuple(float(v) for v in args.lowband.split(",") if v)
    args.polish = tuple(float(v) for v in args.polish.split(",") if v)
    doses = tuple(float(d) for d in args.doses.split(","))
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(n_val=args.slices, val_doses=doses, progress=False)
    g, ref = data.geometry, data.test_reference_hu
    body = body_mask(ref)
    lesions = lesion_positions(ref, np.random.default_rng(0), per_slice=2)
    rows = []
    for dose in doses:
        sino = data.test_sinograms[dose]
        with_les, _ = insert_lesions(sino, g, lesions, photons=photons_from_dose(dose), seed=37)
        base = pipe(sino, seed=0, progress=False, lowband_x0=args.band_x0)
        plus = pipe(with_les, seed=0, progress=False, lowband_x0=args.band_x0)
        rows.append((dose, "x0 (prior)", *_lesion_scores(base.x0, plus.x0, ref, lesions),
                     float(np.mean(psnr(base.x0, ref, window="soft", mask=body))),
                     float(np.mean(ssim(base.x0, ref, window="soft", mask=body)))))
        # Where along the pipeline the contrast goes (issue 17): each intermediate image.
        for name, attr in (("x_ld (FBP)", "x_ld"), ("x~0 (diffusion)", "x_diffusion"), ("fused", "x_fused"),
                           ("restored (before data consistency)", "x_restored")):
            b, p = getattr(base, attr), getattr(plus, attr)
            rows.append((dose, name, *_lesion_scores(b, p, ref, lesions),
                         float(np.mean(psnr(b, ref, window="soft", mask=body))),
                         float(np.mean(ssim(b, ref, window="soft", mask=body)))))
        for scale in args.prior_scales:
            kw = dict(prior_scale=scale, lowband_px=args.scale_lowband)
            b, p = (_redo_consistency(pipe, o, y, **kw) for o, y in ((base, sino), (plus, with_les)))
            rows.append((dose, f"TurnDiff, data-consistency prior scale {scale:g}", *_lesion_scores(b, p, ref, lesions),
                         float(np.mean(psnr(b, ref, window="soft", mask=body))),
                         float(np.mean(ssim(b, ref, window="soft", mask=body)))))
        for px in args.lowband:
            b, p = (_redo_consistency(pipe, o, y, lowband_px=px) for o, y in ((base, sino), (plus, with_les)))
            rows.append((dose, f"TurnDiff, x0's band below {px:g} px in the prior, then the step",
                         *_lesion_scores(b, p, ref, lesions),
                         float(np.mean(psnr(b, ref, window="soft", mask=body))),
                         float(np.mean(ssim(b, ref, window="soft", mask=body)))))
        for w in args.polish:
            b, p = bregman_tv(base.unpolished, w), bregman_tv(plus.unpolished, w)
            rows.append((dose, f"TurnDiff, polish {w:g} HU", *_lesion_scores(b, p, ref, lesions),
                         float(np.mean(psnr(b, ref, window="soft", mask=body))),
                         float(np.mean(ssim(b, ref, window="soft", mask=body)))))
        for s in SIGMAS:
            b, p = lowband_fusion(base.image_hu, base.x0, s), lowband_fusion(plus.image_hu, plus.x0, s)
            rows.append((dose, f"TurnDiff, s = {s:g} px", *_lesion_scores(b, p, ref, lesions),
                         float(np.mean(psnr(b, ref, window="soft", mask=body))),
                         float(np.mean(ssim(b, ref, window="soft", mask=body)))))
        for r in rows[-len(SIGMAS) - 5 - len(args.prior_scales) - len(args.lowband) - len(args.polish):]:
            print(r, flush=True)
    if args.lcd:
        print(_lcd_table(pipe, args), flush=True)
    print(f"\nvalidation phantoms: {args.slices}, {len(lesions)} lesions\n")
    print("| dose | image | contrast recovery | min | CNR | soft PSNR | soft SSIM |\n|---|---|---|---|---|---|---|")
    for dose, name, rec, mn, cnr, p, s in rows:
        print(f"| {dose:.0%} | {name} | {rec:.3f} | {mn:.3f} | {cnr:.2f} | {p:.3f} | {s:.4f} |")


if __name__ == "__main__":
    main()
