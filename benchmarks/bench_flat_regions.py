"""Where TurnDiff's SSIM at 50% dose goes, and what would move it (session 35; *validation*
phantoms only: a second set, base seed 5001, that no decision has used).

Run::

    python benchmarks/bench_flat_regions.py CHECK [--model MODEL_DIR] [--slices 24] [--val-seed 5001]

MODEL_DIR: a model of the benchmark's training phantoms (default
``bench_out/fast34/runs/turndiff/model``). CHECK is one of:

- ``fusion``: variants of the fusion before the data-consistency step (stage 1's pass and
  the diffusion's draw reused), output / fused / restored soft PSNR / SSIM at 25 / 10 / 50%;
- ``blur``: a Gaussian blur of the output (0.3 / 0.5 / 0.7 px) at 50% and 25%;
- ``prior-refit``: the step's prior standard-deviation map (``PRIOR_UNCERTAINTY_COEF``)
  refitted as ``bench_uncertainty.py`` fits it, on the usual validation set (5000) pooled
  over 25 / 10 / 50%, and the step redone with it at prior scales 0.5 / 0.7 / 1.0 on this set;
- ``stage1-at-dose``: stage 1 trained (``fast`` preset) on the training phantoms simulated at
  50% and swapped into the pipeline: the upper bound of adapting stage 1 to a cleaner scan;
- ``regions``: the SSIM maps of TurnDiff and TV (as the benchmark runs it, trainings from
  ``--runs``) at 50%, averaged per region of the reference (flattest 50%, middle, strongest
  10% edges, the body's outline), and the error's standard deviation in the flat half for
  the pipeline's intermediates;
- ``tv-polish``: a total-variation polish (``skimage.restoration.denoise_tv_chambolle``,
  weight in HU) of the output, or with ``--on prior`` of the data-consistency prior's mean
  before the shipped step: soft PSNR / SSIM and the contrast recovery and CNR of lesions
  inserted into the projections (as ``bench_fusion_contrast.py`` inserts them).

- ``polish-forms`` (session 36): ways of polishing the output that keep faint lesions, at
  50% and 25%: plain TV, TV with what it removed below 0.7 px put back, TV left off where x0
  shows structure (``|DoG| > 3`` noise std), TV followed by x0's band below 1.5 px, and TV with
  one or two Bregman steps (``turndiff.inference.polish.bregman_tv`` is the one-step form);
  soft PSNR / SSIM and the inserted lesions' contrast recovery, as ``tv-polish`` scores them.

Session 35's checks score the output as it was then, without the final polish that session
36 added (``polish=0.0``). Prints its rows; docs/STAGE2.md, "Session 35" and "Session 36",
has the tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from turndiff.benchmark.data import make_dev_data
from turndiff.metrics import apply_window, evaluate
from turndiff.pipeline import TurnDiffPipeline

DOSES = (0.25, 0.1, 0.5)


def _scorer(ref):
    def sc(x) -> str:
        e = evaluate(x, ref, mask="body")["soft"]
        return f"{e['psnr']['mean']:.3f} / {e['ssim']['mean']:.4f}"
    return sc


def _tv(x: np.ndarray, weight_hu: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    if not weight_hu:
        return x
    return np.stack([denoise_tv_chambolle(s / 1000.0, weight=weight_hu / 1000.0) * 1000.0 for s in x])


def check_fusion(pipe, args) -> None:
    from turndiff.inference import FusionConfig

    data = make_dev_data(n_val=args.slices, val_doses=DOSES, val_seed=args.val_seed)
    sc = _scorer(data.test_reference_hu)
    variants = {"global 1 (x~0)": dict(fusion="global", fusion_lam=1.0),
                "global 0.75": dict(fusion="global", fusion_lam=0.75),
                "pixel k_dev 4": dict(fusion_config=FusionConfig(k_dev=4.0)),
                "pixel k_edge 1": dict(fusion_config=FusionConfig(k_edge=1.0)),
                "pixel k_edge 0.25": dict(fusion_config=FusionConfig(k_edge=0.25)),
                "pixel, no restore": dict(restore=False)}
    for d in DOSES:
        sino = data.test_sinograms[d]
        t0 = time.time()
        proj = pipe.project(sino, progress=False)
        res = pipe(sino, seed=0, progress=False, polish=0.0, projection=proj)
        print(f"{d:.0%} shipped: out {sc(res.image_hu)} fused {sc(res.x_fused)} restored {sc(res.x_restored)} "
              f"x~0 {sc(res.x_diffusion)} x0 {sc(res.x0)} ({time.time() - t0:.0f}s)", flush=True)
        same = dict(seed=0, progress=False, polish=0.0, projection=proj, x_diffusion=res.x_diffusion)
        for name, kw in variants.items():
            r = pipe(sino, **same, **kw)
            fused = sc(r.x_fused) if r.x_fused is not None else "-"
            print(f"{d:.0%} {name}: out {sc(r.image_hu)} fused {fused} restored {sc(r.x_restored)}", flush=True)


def check_blur(pipe, args) -> None:
    data = make_dev_data(n_val=args.slices, val_doses=(0.5, 0.25), val_seed=args.val_seed)
    sc = _scorer(data.test_reference_hu)
    for d in (0.5, 0.25):
        res = pipe(data.test_sinograms[d], seed=0, progress=False, polish=0.0)
        print(d, "shipped", sc(res.image_hu), flush=True)
        for s in (0.3, 0.5, 0.7):
            print(d, "blur", s, sc(np.stack([ndimage.gaussian_filter(x, s) for x in res.image_hu])), flush=True)


def check_prior_refit(pipe, args) -> None:
    import turndiff.pipeline as P
    from turndiff.inference.consistency import data_consistency
    from turndiff.inference.uncertainty import PRIOR_UNCERTAINTY_COEF, UNCERTAINTY_FEATURES, uncertainty_features
    from turndiff.masks import body_mask

    fitset = make_dev_data(n_val=args.slices, val_doses=DOSES)
    use = [k for k in UNCERTAINTY_FEATURES if "consistency" not in k and k != "posterior"]
    X, Y = [], []
    for d in DOSES:
        res = pipe(fitset.test_sinograms[d], seed=0, progress=False, polish=0.0)
        ref = fitset.test_reference_hu
        mask = body_mask(ref)
        f = uncertainty_features(res.x_restored, res.x_ld, res.x0, res.x_diffusion)
        X.append(np.stack([np.log1p(f[k][mask]) for k in use] + [np.ones(mask.sum())], 1))
        Y.append(np.log1p(np.abs((res.x_restored - ref)[mask])))
    beta, *_ = np.linalg.lstsq(np.concatenate(X), np.concatenate(Y), rcond=None)
    coef = ({k: 0.0 for k in UNCERTAINTY_FEATURES} | {k: float(b) for k, b in zip(use, beta)}
            | {"offset": float(beta[-1])})
    # The coverage scale, as bench_uncertainty.py sets it: |error| <= 2u on 95% of the pixels.
    ratio = np.expm1(np.concatenate(Y)) / np.exp(np.concatenate(X) @ beta)
    coef["log_scale"] = float(np.log(np.quantile(ratio, 0.95) / 2))
    print("refit:", {k: round(v, 3) for k, v in coef.items()}, flush=True)
    ex = make_dev_data(n_val=args.slices, val_doses=DOSES, val_seed=args.val_seed)
    sc = _scorer(ex.test_reference_hu)
    try:
        for d in DOSES:
            y = ex.test_sinograms[d]
            proj = pipe.project(y, progress=False)
            res = pipe(y, seed=0, progress=False, polish=0.0, projection=proj)
            print(d, "shipped", sc(res.image_hu), flush=True)
            for name, c in (("shipped coef", PRIOR_UNCERTAINTY_COEF), ("refit coef", coef)):
                P.PRIOR_UNCERTAINTY_COEF = c  # what consistency_prior reads
                mean, std = P.consistency_prior(res.x_restored, res.x_ld, res.x0, res.x_diffusion, lowband=True)
                for s in (0.5, 0.7, 1.0):
                    out = data_consistency(mean, y, pipe.projector, prior_std_hu=std, photons=res.photons_estimated,
                                           denoised=proj.denoised, prior_scale=s)
                    print(d, name, "s", s, sc(out), flush=True)
    finally:
        P.PRIOR_UNCERTAINTY_COEF = PRIOR_UNCERTAINTY_COEF


def check_stage1_at_dose(pipe, args) -> None:
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    tr = make_dev_data(n_val=1, val_doses=(0.5,), train_dose=0.5)
    t0 = time.time()
    s1 = train_projection_denoiser(tr.train_sinogram, photons=tr.train_photons, geometry_json=tr.geometry.to_json(),
                                   config=Stage1Config.preset("fast"), device="cpu", progress=False)
    print(f"stage 1 at 50% trained in {time.time() - t0:.0f} s", flush=True)
    ex = make_dev_data(n_val=args.slices, val_doses=(0.5,), val_seed=args.val_seed)
    sc = _scorer(ex.test_reference_hu)
    y = ex.test_sinograms[0.5]
    a = pipe(y, seed=0, progress=False, polish=0.0)
    print("shipped stage 1:", "out", sc(a.image_hu), "x0", sc(a.x0), "x~0", sc(a.x_diffusion), flush=True)
    pipe.stage1 = s1
    for cal in (None, False):
        b = pipe(y, seed=0, progress=False, polish=0.0, calibrate=cal)
        print(f"stage 1 trained at 50% (calibrate={cal}):", "out", sc(b.image_hu), "x0", sc(b.x0), "x~0",
              sc(b.x_diffusion), flush=True)


def check_regions(pipe, args) -> None:
    from skimage.metrics import structural_similarity

    from turndiff.benchmark.methods import METHODS, RunContext
    from turndiff.masks import body_mask

    data = make_dev_data(size=256, n_train=8, n_val=args.slices, val_doses=(0.5,), val_seed=args.val_seed)
    ref = data.test_reference_hu
    ctx = RunContext(preset="fast", seed=0, device="cpu", run_dir=Path(args.runs), log=lambda m: None)
    tv = METHODS["TV"].run(data, (0.5,), ctx)["TV"].images[0.5]
    res = pipe(data.test_sinograms[0.5], seed=0, progress=False, polish=0.0)
    images = {"TurnDiff": res.image_hu, "before step": res.x_restored, "x~0": res.x_diffusion, "x0": res.x0, "TV": tv}
    body = body_mask(ref)
    acc: dict = {}
    flat_err: dict = {n: [0.0, 0] for n in images}
    for i in range(ref.shape[0]):
        rw = apply_window(ref[i], "soft")
        maps = {n: structural_similarity(rw, apply_window(x[i], "soft"), data_range=1.0, win_size=7, full=True)[1]
                for n, x in images.items()}
        g = np.hypot(ndimage.sobel(ref[i], 0), ndimage.sobel(ref[i], 1)) / 8
        b = body[i].copy()
        b[:3] = b[-3:] = False
        b[:, :3] = b[:, -3:] = False
        inside = ndimage.binary_erosion(body[i], iterations=6)
        q50, q90 = np.quantile(g[b], [0.5, 0.9])
        inwin = (ref[i] > -160) & (ref[i] < 240)
        regions = {"all body": b, "outline (6 px)": b & ~inside, "flat 50%": b & inside & (g <= q50),
                   "mid": b & inside & (g > q50) & (g <= q90), "edges 10%": b & inside & (g > q90),
                   "ref inside soft window": b & inside & inwin, "ref outside soft window": b & inside & ~inwin}
        for r, m in regions.items():
            a = acc.setdefault(r, {"n": 0} | {n: 0.0 for n in images})
            a["n"] += int(m.sum())
            for n in images:
                a[n] += float(maps[n][m].sum())
        flat = regions["flat 50%"]
        for n, x in images.items():
            flat_err[n][0] += float(np.std((x[i] - ref[i])[flat]) * flat.sum())
            flat_err[n][1] += int(flat.sum())
    tot = acc["all body"]["n"]
    dall = (acc["all body"]["TurnDiff"] - acc["all body"]["TV"]) / tot
    print("| region | share of body pixels | TurnDiff SSIM | TV SSIM | TurnDiff - TV | share of the body-mean difference |")
    for r, a in acc.items():
        t, v = a["TurnDiff"] / a["n"], a["TV"] / a["n"]
        share = (a["TurnDiff"] - a["TV"]) / tot / dall if dall else 0.0
        print(f"| {r} | {a['n'] / tot:.2f} | {t:.4f} | {v:.4f} | {t - v:+.4f} | {share:+.2f} |")
    for n in images:
        a = acc["flat 50%"]
        print(f"{n:12s} flat-50% SSIM {a[n] / a['n']:.4f}  error std in flat regions "
              f"{flat_err[n][0] / flat_err[n][1]:.1f} HU", flush=True)


def check_tv_polish(pipe, args) -> None:
    from turndiff.benchmark.iq import lesion_positions, lesion_scores
    from turndiff.dose import insert_lesions, photons_from_dose
    from turndiff.inference.consistency import data_consistency
    from turndiff.pipeline import consistency_prior

    doses = DOSES if args.on == "output" else (0.25, 0.5)
    weights = (0, 2, 4, 8) if args.on == "output" else (0, 4, 8, 16)
    data = make_dev_data(n_val=args.slices, val_doses=doses, val_seed=args.val_seed)
    ref = data.test_reference_hu
    lesions = lesion_positions(ref, np.random.default_rng(0), per_slice=2)
    for d in doses:
        y = data.test_sinograms[d]
        with_les, _ = insert_lesions(y, data.geometry, lesions, photons=photons_from_dose(d), seed=37)
        passes = (pipe.project(y, progress=False), pipe.project(with_les, progress=False))
        base, plus = (pipe(s, seed=0, progress=False, polish=0.0, projection=p) for s, p in zip((y, with_les), passes))
        if args.on == "output":
            x0s = lesion_scores(base.x0, plus.x0, ref, lesions)
            print(f"{d:.0%} x0: contrast {x0s['contrast_recovery']:.3f} CNR {x0s['cnr']:.2f}", flush=True)
        for w in weights:
            if args.on == "output":
                b, p = _tv(base.image_hu, w), _tv(plus.image_hu, w)
            else:
                b, p = (data_consistency(_tv(mean, w), s, pipe.projector, prior_std_hu=std,
                                         photons=o.photons_estimated, denoised=pp.denoised)
                        for o, s, pp in zip((base, plus), (y, with_les), passes)
                        for mean, std in [consistency_prior(o.x_restored, o.x_ld, o.x0, o.x_diffusion,
                                                            lowband=True)])
            e = evaluate(b, ref, mask="body")["soft"]
            ls = lesion_scores(b, p, ref, lesions)
            print(f"{d:.0%} TV on the {args.on} {w} HU: {e['psnr']['mean']:.3f} / {e['ssim']['mean']:.4f}  contrast "
                  f"{ls['contrast_recovery']:.3f} (min {ls['contrast_recovery_min']:.3f}) CNR {ls['cnr']:.2f}",
                  flush=True)


def check_polish_forms(pipe, args) -> None:
    from turndiff.benchmark.iq import lesion_positions, lesion_scores
    from turndiff.dose import insert_lesions, photons_from_dose

    data = make_dev_data(n_val=args.slices, val_doses=(0.5, 0.25), val_seed=args.val_seed)
    ref = data.test_reference_hu
    lesions = lesion_positions(ref, np.random.default_rng(0), per_slice=2)

    def gauss(x, s):
        return ndimage.gaussian_filter(x, (0, s, s))

    def bregman(x, w, steps):
        v, out = np.zeros_like(x), x
        for _ in range(steps + 1):
            out = _tv(x + v, w)
            v = v + (x - out)
        return out

    def structure(x0):  # |DoG| of x0 over its robust spread in the body (x0 > -500 HU)
        b = gauss(x0, 1.5) - gauss(x0, 4.0)
        s = np.array([1.4826 * np.median(np.abs(bi[mi] - np.median(bi[mi]))) for bi, mi in zip(b, x0 > -500)])
        return np.abs(b) / s[:, None, None]

    def masked(x, x0, w):
        t = _tv(x, w)
        polished = t + gauss(x - t, 0.7)
        m = ndimage.maximum_filter(np.clip(structure(x0) - 3.0, 0, 1), (1, 5, 5))
        return polished + m * (x - polished)

    forms = {f"TV {w}": (lambda x, x0, w=w: _tv(x, w)) for w in (4, 8)}
    forms.update({f"TV {w}, below 0.7 px put back": (lambda x, x0, w=w: (lambda t: t + gauss(x - t, 0.7))(_tv(x, w)))
                  for w in (4, 8)})
    forms["TV 8, x0's structure unpolished"] = lambda x, x0: masked(x, x0, 8)
    forms["TV 8, then x0's band below 1.5 px"] = lambda x, x0: (lambda t: t + gauss(x0 - t, 1.5))(_tv(x, 8))
    forms.update({f"TV {w}, one Bregman step": (lambda x, x0, w=w: bregman(x, w, 1)) for w in (20, 24, 28, 32)})
    forms["TV 16, two Bregman steps"] = lambda x, x0: bregman(x, 16, 2)
    for d in (0.5, 0.25):
        y = data.test_sinograms[d]
        with_les, _ = insert_lesions(y, data.geometry, lesions, photons=photons_from_dose(d), seed=37)
        base, plus = (pipe(s, seed=0, progress=False, polish=0.0) for s in (y, with_les))
        rows = {"none (session 35's output)": (base.image_hu, plus.image_hu), "x0": (base.x0, plus.x0)}
        rows.update({name: (f(base.image_hu, base.x0), f(plus.image_hu, plus.x0)) for name, f in forms.items()})
        for name, (b, p) in rows.items():
            e = evaluate(b, ref, mask="body")["soft"]
            ls = lesion_scores(b, p, ref, lesions)
            print(f"{d:.0%} {name}: {e['psnr']['mean']:.3f} / {e['ssim']['mean']:.4f}  contrast "
                  f"{ls['contrast_recovery']:.3f} (min {ls['contrast_recovery_min']:.3f})", flush=True)


CHECKS = {"fusion": check_fusion, "blur": check_blur, "prior-refit": check_prior_refit,
          "stage1-at-dose": check_stage1_at_dose, "regions": check_regions, "tv-polish": check_tv_polish,
          "polish-forms": check_polish_forms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=tuple(CHECKS))
    ap.add_argument("--model", default="bench_out/fast34/runs/turndiff/model")
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--val-seed", type=int, default=5001, help="validation base seed of the scored phantoms")
    ap.add_argument("--runs", default="bench_out/fast34/runs", help="the baselines' trainings (regions: TV)")
    ap.add_argument("--on", choices=("output", "prior"), default="output", help="tv-polish: what is polished")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    CHECKS[args.check](TurnDiffPipeline.from_pretrained(args.model, device="cpu"), args)


if __name__ == "__main__":
    main()
