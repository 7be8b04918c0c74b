"""Stage 2: which training condition, and how much detail x~0 keeps (docs/STAGE2.md).

Run::

    python benchmarks/bench_stage2_condition.py MODEL_DIR [--variant NAME=JSON ...] [--seed 1[,2,...]]
    python benchmarks/bench_stage2_condition.py MODEL_DIR --kappa 0.1,0.2,0.35,0.5,1
    python benchmarks/bench_stage2_condition.py MODEL_DIR --fusion

``MODEL_DIR`` is the model a benchmark run saved (``BENCH_OUT/runs/turndiff/model``). Its
stage 1 and autoencoder are kept; for every variant only the diffusion U-Net is
retrained on the benchmark's 8 training slices (``Stage2Config`` overrides as JSON, e.g.
``paper_condition='{"cond_noise_scale": [1, 1]}'``; with ``r2r_weight > 0`` or the
``"consistent"`` teacher the U-Net trains on recorrupted copies as ``fit`` does,
:func:`turndiff.stage2.train.recorrupted_images`; ``'{"unet": {"teacher": "x0", "r2r_weight":
100}}'`` is the model before session 21). Each variant prints one Markdown
row: x~0 conditioned on ``x_ld`` and on the ``auto`` blend at 25% (PSNR / SSIM soft,
gradient ratio all / edges / flat, inside the body), and the fused TurnDiff PSNR at 25%,
10% and 50%, on 6 validation phantoms (``VALIDATION_SEED``; never the test slices).
``--pipeline`` scores each variant through the whole pipeline instead (x~0 and TurnDiff's
output, PSNR / SSIM, at 25%, 10% and 50%, the same stage-1 pass for every variant), after
a first row for the saved U-Net itself (no retraining). ``--lcd R`` (with ``--pipeline``)
adds what `turndiff iq` measures on the test side, on validation data at 25%: the CHO's
d' per rod of the MITA-like phantom over ``R`` noise realisations drawn from validation
seeds (the phantom is the same object as `turndiff iq`'s, its noise is not), and the
contrast recovery and CNR of up to 12 lesions (3-5 px, +20 to +30 HU; two per scan where
soft tissue has room, 11 in practice) inserted into the projections of the 6 validation scans; so a stage-2 choice is checked for detectability
before it reaches the QA phantoms (docs/STAGE2.md, "Session 22"). ``--seed 1,2,3,4`` trains
each variant once per seed and adds rows of the mean and range over them. (Session 31 saw d'
at 5 and 7 mm move with the seed far more than PSNR or contrast; that spread was the old
observer design's, docs/STAGE2.md "Session 32". With 16 realisations a d' difference below
about 0.5 is still noise, so d' comparisons want several seeds or more realisations.)
``--kappa`` instead evaluates the model itself on the validation phantoms for several
``auto`` noise fractions, and ``--fusion`` the pixel-fusion constants (one at a time
around the defaults, with the diffusion output of the ``auto`` blend). The references
are used for evaluation only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import format_d_prime, lcd_detectability, lesion_positions, lesion_scores
from turndiff.benchmark.splits import VALIDATION_SEED
from turndiff.inference import FusionConfig, blend, choose_strategy, pixel_fusion
from turndiff.metrics import evaluate, gradient_ratios
from turndiff.pipeline import TurnDiffPipeline, stage2_copies
from turndiff.dose import estimate_photons, insert_lesions, photons_from_dose, simulate_scan
from turndiff.phantoms.qa import make_lcd_phantom
from turndiff.stage2.config import legacy_changes
from turndiff.stage2.train import distillation_stacks, train_latent_diffusion

DOSES = (0.25, 0.10, 0.5)
#: Noise seed of the validation LCD realisations (`turndiff iq --seed S` draws its own from
#: ``S + 1000 + dose * 1e4``, with small ``S``; these come from the validation range).
LCD_NOISE_SEED = VALIDATION_SEED + 3500


@dataclass
class LcdScans:
    """The MITA-like phantom and its validation scans: ``low`` / ``full`` at 25% / 100% dose,
    and ``free_low`` / ``free_full`` of the same phantom without its rods (the observer's
    signal-absent class, read at the rods' positions; :func:`lcd_detectability`)."""

    phantom: object
    low: np.ndarray
    full: np.ndarray
    free_low: np.ndarray
    free_full: np.ndarray


def lcd_scans(projector, realizations: int) -> LcdScans:
    """``realizations`` noisy scans of each, drawn from validation seeds."""
    g = projector.geometry
    lcd = make_lcd_phantom(g.image_size, pixel_spacing=g.pixel_spacing)
    free = make_lcd_phantom(g.image_size, pixel_spacing=g.pixel_spacing, signal=False)

    def scans(phantom, dose: float, seed: int) -> np.ndarray:
        stack = np.repeat(phantom.hu[None], realizations, 0)
        return simulate_scan(stack, g, photons=photons_from_dose(dose), seed=seed)[0]
    return LcdScans(lcd, scans(lcd, DOSES[0], LCD_NOISE_SEED), scans(lcd, 1.0, LCD_NOISE_SEED + 1),
                    scans(free, DOSES[0], LCD_NOISE_SEED + 2), scans(free, 1.0, LCD_NOISE_SEED + 3))


def unet_trainer(pipe: TurnDiffPipeline, train_sinogram: np.ndarray, cfg):
    """``train(seed) -> LatentDiffusion``: the U-Net of ``cfg`` trained as ``fit`` trains it
    (the recorrupted copies of its seed 0, read as ``train_stage2`` reads them), with the
    pipeline's autoencoder and latent statistics; the training stacks are made once."""
    base, A = pipe.stage2, pipe.projector
    roles = distillation_stacks(stage2_copies(train_sinogram, pipe.stage1, A, cfg, seed=0), cfg)
    if roles is None:  # no copies: the training slices' own x_ld and x0
        roles = (A.fbp_hu(train_sinogram), A.fbp_hu(pipe.stage1.denoise(train_sinogram)), None, None)
    cond, teacher, target, prior = roles

    def train(seed: int):
        return train_latent_diffusion(base.autoencoder, cond, teacher, cfg, target=target, prior=prior,
                                      latent_stats=(base.latent_shift, base.latent_scale), seed=seed,
                                      progress=False)[0]
    return train


class _Detectability:
    """Validation-side task-based checks at 25% dose for ``--lcd``: the LCD phantom's noise
    realisations and the validation scans with inserted lesions, each with its stage-1 pass
    made once, so every U-Net is scored on the same inputs."""

    def __init__(self, pipe: TurnDiffPipeline, data, realizations: int) -> None:
        g, dose = pipe.projector.geometry, DOSES[0]
        i0 = photons_from_dose(dose)
        self.pipe, self.ref = pipe, data.test_reference_hu
        self.scans = scans = lcd_scans(pipe.projector, realizations)
        self.lcd, self.lcd_sino, self.free_sino = scans.phantom, scans.low, scans.free_low
        fbp = pipe.projector.fbp_hu
        self.fbp_full = lcd_detectability(fbp(scans.full), self.lcd, fbp(scans.free_full))
        self.lcd_pass = pipe.project(self.lcd_sino, progress=False)
        self.free_pass = pipe.project(self.free_sino, progress=False)
        self.lesions = lesion_positions(self.ref, np.random.default_rng(0), per_slice=2)
        self.les_sino = insert_lesions(data.test_sinograms[dose], g, self.lesions, photons=i0, seed=37)[0]
        self.les_pass = pipe.project(self.les_sino, progress=False)
        self.rods = list(self.fbp_full)

    def header(self) -> str:
        return ("| U-Net training | lesion contrast x~0 / TurnDiff | lesion CNR TurnDiff | d' TurnDiff "
                + " / ".join(r.split(",")[0] for r in self.rods) + " |\n|---|---|---|---|\n"
                + "| (FBP at 100%) | | | " + " / ".join(format_d_prime(self.fbp_full[r]) for r in self.rods) + " |")

    def lesion_scores(self, base: np.ndarray, plus: np.ndarray) -> tuple[float, float]:
        r = lesion_scores(base, plus, self.ref, self.lesions)
        return r["contrast_recovery"], r["cnr"]

    def lcd_outputs(self, **kwargs) -> tuple:
        """The pipeline's outputs on the LCD realisations with and without the rods
        (``kwargs``: more arguments of the pipeline's call)."""
        return tuple(self.pipe(s, seed=0, progress=False, projection=p, **kwargs)
                     for s, p in ((self.lcd_sino, self.lcd_pass), (self.free_sino, self.free_pass)))

    def scored_row(self, name: str, base_out, plus_out, lcd_out, free_out, scores: list | None = None) -> str:
        """One Markdown row from the pipeline's outputs on the lesion-free scans, the same
        scans with the lesions, and the LCD realisations with and without the rods;
        ``scores`` as in :meth:`row`."""
        rx, _ = self.lesion_scores(base_out.x_diffusion, plus_out.x_diffusion)
        rt, ct = self.lesion_scores(base_out.image_hu, plus_out.image_hu)
        det = lcd_detectability(lcd_out.image_hu, self.lcd, free_out.image_hu)
        if scores is not None:
            scores.append([rx, rt, ct] + [det[r]["d_prime"] for r in self.rods])
        return (f"| {name} | {rx:.3f} / {rt:.3f} | {ct:.2f} | "
                + " / ".join(format_d_prime(det[r]) for r in self.rods) + " |")

    def row(self, name: str, base_out, scores: list | None = None) -> str:
        """``base_out``: the pipeline's output on the lesion-free validation scans at 25%
        with the U-Net now in ``self.pipe``. ``scores``, if given, gets the row's numbers
        (contrast x~0, contrast TurnDiff, CNR, d' per rod) appended, for a summary over seeds."""
        pipe = self.pipe
        plus = pipe(self.les_sino, seed=0, progress=False, projection=self.les_pass)
        lcd, free = self.lcd_outputs()
        row = self.scored_row(name, base_out, plus, lcd, free, scores)
        if name.startswith("shipped"):  # x0 does not depend on the U-Net: once
            r0, c0 = self.lesion_scores(base_out.x0, plus.x0)
            d0 = lcd_detectability(lcd.x0, self.lcd, free.x0)
            row = (f"| (x0, calibrated) | {r0:.3f} | {c0:.2f} | "
                   + " / ".join(format_d_prime(d0[r]) for r in self.rods) + " |\n" + row)
        return row


def _row(x: np.ndarray, ref: np.ndarray) -> str:
    e, g = evaluate(x, ref, mask="body")["soft"], gradient_ratios(x, ref, mask="body")
    return (f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.3f} / {g['all']:.3f} / {g['edges']:.3f} / "
            f"{g['flat']:.2f}")


def _short(x: np.ndarray, ref: np.ndarray) -> str:
    e = evaluate(x, ref, mask="body")["soft"]
    return f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f}"


def _psnr(x: np.ndarray, ref: np.ndarray) -> str:
    return f"{evaluate(x, ref, mask='body')['soft']['psnr']['mean']:.2f}"


def _summary(name: str, rows: list[list[float]], formats: list[str]) -> str:
    """One Markdown row: the mean of each column over the seeds, with its range."""
    a = np.asarray(rows, np.float64)
    cells = [f"{m:{f}} ({lo:{f}} - {hi:{f}})" for m, lo, hi, f in zip(a.mean(0), a.min(0), a.max(0), formats)]
    return f"| {name}, mean of {len(rows)} seeds | " + " | ".join(cells) + " |"


def variants(pipe: TurnDiffPipeline, specs: list[str], seeds: list[int], whole: bool = False, lcd: int = 0) -> None:
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    A = pipe.projector
    passes = {d: pipe.project(data.test_sinograms[d], progress=False) for d in DOSES} if whole else {}
    detect = _Detectability(pipe, data, lcd) if whole and lcd else None
    detect_rows = []

    def images(sino):
        return A.fbp_hu(sino), A.fbp_hu(pipe.stage1.denoise(sino))

    test = {}
    for d in DOSES:
        s = data.test_sinograms[d]
        ld, x0 = images(s)
        choice = choose_strategy("auto", None, photons_input=estimate_photons(s),
                                 photons_train=pipe.info.get("photons_train_estimated"))
        test[d] = (ld, x0, blend(ld, x0, choice))
    ref = data.test_reference_hu
    ld, x0, prior = test[0.25]
    if whole:
        print("| U-Net training | " + " | ".join(f"x~0 {d:.0%} | TurnDiff {d:.0%}" for d in DOSES) + " |")
        print("|---|" + "---|---|" * len(DOSES))
        print("| (x0 itself, calibrated) | " + " | ".join(f"{_short(passes[d].x0, ref)} | " for d in DOSES) + " |")
        outs = {d: pipe(data.test_sinograms[d], seed=0, progress=False, projection=passes[d]) for d in DOSES}
        print("| shipped U-Net (no retraining) | " + " | ".join(
            f"{_short(outs[d].x_diffusion, ref)} | {_short(outs[d].image_hu, ref)}" for d in DOSES) + " |", flush=True)
        if detect is not None:
            detect_rows.append(detect.row("shipped U-Net (no retraining)", outs[DOSES[0]]))
    else:
        print("| U-Net training | x~0, condition x_ld | x~0, condition auto blend | TurnDiff (fused) PSNR 25% / 10% / 50% |")
        print("|---|---|---|---|")
        print(f"| (x0 itself) | {_row(x0, ref)} | | |", flush=True)
    base = pipe.stage2
    summaries, detect_summaries = [], []
    for spec in specs:
        # NAME=JSON; a name may hold "=" itself ("s=1={...}"): the JSON starts at the first "={".
        cut = spec.find("={")
        name, text = (spec[:cut], spec[cut + 1:]) if cut >= 0 else spec.partition("=")[::2]
        try:
            changes = json.loads(text) if text else {}
        except json.JSONDecodeError as e:
            raise SystemExit(f"--variant {spec!r}: the part after NAME= is not JSON ({e})") from None
        train = unet_trainer(pipe, data.train_sinogram, base.config.replace(**legacy_changes(changes)))
        quality, scores = [], []
        for seed in seeds:
            model = train(seed)
            if whole:  # the whole pipeline with this U-Net (same stage-1 pass for every variant)
                pipe.stage2 = model
                outs = {d: pipe(data.test_sinograms[d], seed=0, progress=False, projection=passes[d]) for d in DOSES}
                if detect is not None:
                    detect_rows.append(detect.row(f"{name}, seed {seed}", outs[DOSES[0]], scores))
                pipe.stage2 = base
                quality.append([evaluate(outs[d].image_hu, ref, mask="body")["soft"]["psnr"]["mean"] for d in DOSES])
                print(f"| {name}, seed {seed} | " + " | ".join(
                    f"{_short(outs[d].x_diffusion, ref)} | {_short(outs[d].image_hu, ref)}" for d in DOSES) + " |",
                      flush=True)
                continue
            fused = [_psnr(pixel_fusion(model.sample(test[d][2], seed=0), test[d][1], test[d][0])[0], ref)
                     for d in DOSES]
            print(f"| {name}, seed {seed} | {_row(model.sample(ld, seed=0), ref)} | "
                  f"{_row(model.sample(prior, seed=0), ref)} | {' / '.join(fused)} |", flush=True)
        if len(seeds) > 1 and quality:
            summaries.append(_summary(name, quality, [".2f"] * len(DOSES)))
        if len(seeds) > 1 and scores:
            detect_summaries.append(_summary(name, scores, [".3f", ".3f"] + [".2f"] * (len(scores[0]) - 2)))
    if summaries:
        print("\nTurnDiff's PSNR over the seeds (mean, min - max):\n")
        print("| U-Net training | " + " | ".join(f"TurnDiff {d:.0%}" for d in DOSES) + " |")
        print("|---|" + "---|" * len(DOSES))
        print("\n".join(summaries), flush=True)
    if detect is not None:
        print(f"\nDetectability at {DOSES[0]:.0%}, validation data ({len(detect.lesions)} lesions in "
              f"{len(ref)} scans; LCD phantom, {len(detect.lcd_sino)} realisations):\n")
        print(detect.header())
        print("\n".join(detect_rows), flush=True)
        if detect_summaries:
            print("\nOver the seeds (mean, min - max):\n")
            print("| U-Net training | lesion contrast x~0 | lesion contrast TurnDiff | lesion CNR | "
                  + " | ".join(f"d' {r.split(',')[0]}" for r in detect.rods)
                  + " |\n|---|" + "---|" * (3 + len(detect.rods)))
            print("\n".join(detect_summaries), flush=True)


def kappas(pipe: TurnDiffPipeline, values: list[float]) -> None:
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    ref = data.test_reference_hu
    print("| dose | " + " | ".join(f"kappa = {k}" for k in values) + " |")
    print("|---|" + "---|" * len(values))
    for d in DOSES:
        sino = data.test_sinograms[d]
        r = pipe(sino, strategy="auto", progress=False).strategy.noise_ratio
        cells = []
        for k in values:
            out = pipe(sino, strategy="up", lam=min(1.0, k / r), progress=False)
            e = evaluate(out.image_hu, ref, mask="body")["soft"]
            cells.append(f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.3f}")
        print(f"| {d:.0%} | " + " | ".join(cells) + " |", flush=True)


FUSION_SWEEP = {"k_edge": (0.25, 0.5, 1.0, 2.0), "k_dev": (1.0, 2.0, 4.0, 1e6), "noise_sigma_px": (2.0, 4.0, 8.0),
                "edge_sigma_px": (0.5, 1.0, 2.0)}


def fusions(pipe: TurnDiffPipeline) -> None:
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    ref = data.test_reference_hu
    outs = {d: pipe(data.test_sinograms[d], strategy="auto", progress=False) for d in DOSES}
    print("| fusion constant | " + " | ".join(f"{d:.0%} PSNR / SSIM" for d in DOSES) + " |")
    print("|---|" + "---|" * len(DOSES))
    for key, values in FUSION_SWEEP.items():
        for v in values:
            cfg = FusionConfig(**{key: v})
            cells = []
            for d in DOSES:
                o = outs[d]
                e = evaluate(pixel_fusion(o.x_diffusion, o.x0, o.x_ld, cfg)[0], ref, mask="body")["soft"]
                cells.append(f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.3f}")
            print(f"| {key} = {v:g} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--variant", action="append", default=None,
                    help='NAME=JSON of Stage2Config overrides (repeatable; default: the saved config)')
    ap.add_argument("--seed", default="1",
                    help="seed of the U-Net training (fit uses 1), or several, comma-separated: each variant is "
                         "trained once per seed and summarised (mean, range); d' at 5 and 7 mm moves with the "
                         "seed far more than PSNR does (docs/STAGE2.md, session 31)")
    ap.add_argument("--kappa", default=None, help="comma-separated auto noise fractions to evaluate instead")
    ap.add_argument("--fusion", action="store_true", help="sweep the pixel-fusion constants instead")
    ap.add_argument("--pipeline", action="store_true",
                    help="score each variant's x~0 and the whole pipeline's output at 25/10/50%% instead")
    ap.add_argument("--lcd", type=int, default=0, metavar="R",
                    help="with --pipeline: also d' on R >= 12 LCD realisations and inserted-lesion contrast, "
                         "validation seeds, 25%% dose")
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model_dir, device="cpu")
    if args.fusion:
        fusions(pipe)
    elif args.kappa:
        kappas(pipe, [float(v) for v in args.kappa.split(",")])
    else:
        if args.lcd and (not args.pipeline or args.lcd < 12):
            ap.error("--lcd needs --pipeline and at least 12 realisations")
        try:
            seeds = [int(v) for v in args.seed.split(",")]
        except ValueError:
            ap.error(f"--seed takes whole numbers, comma-separated, got {args.seed!r}")
        variants(pipe, args.variant or ["saved config="], seeds, whole=args.pipeline, lcd=args.lcd)


if __name__ == "__main__":
    main()
