"""`turndiff iq`: task-based image quality of a trained TurnDiff model against FBP and,
with ``baselines``, against every other method of the benchmark (docs/BENCHMARKS.md,
"Task-based image quality").

For one model (any trained on the default fan geometry) and a few doses:

1. **Detectability**: :func:`~turndiff.phantoms.qa.make_lcd_phantom` simulated with
   ``realizations`` noise draws per dose (and at 100% for FBP's reference), and as many of
   the same phantom without its rods, reconstructed by FBP, by the stage-1 prior x0 and by
   TurnDiff; a channelized Hotelling observer (Laguerre-Gauss channels) gives d' and AUC per
   rod, its signal-absent ROIs at the rods' own positions in the rod-free scans
   (:func:`lcd_detectability`). The dose-reduction factor of a
   method at dose D is ``(d'(D) / d'_FBP(100%))^2 / D``: with a quantum-limited FBP
   (``d'`` proportional to the square root of the dose) it is how much less dose the method
   needs for full-dose FBP's detectability (above 1: it saves dose).
2. **NPS** from the same realisations (a central flat ROI, each realisation minus their
   mean), with peak and mean frequency.
3. **TTF and CT numbers**: :func:`~turndiff.phantoms.qa.make_ctp404_phantom`, realisations
   averaged, the TTF of each insert's edge (f50, f10) and its mean HU against nominal.
4. **Inserted lesions**: discs of 3-5 px at +20 to +30 HU inserted into the projections of
   the benchmark's *test* phantoms (:func:`turndiff.dose.insert_lesions`), reconstructed with
   and without them from the same noisy data: contrast recovery (measured / inserted) and
   contrast-to-noise ratio per method; and, on the lesion-free scans, how well TurnDiff's
   uncertainty map (:mod:`turndiff.inference.uncertainty`, fitted on validation phantoms)
   tracks its error: rank correlation and the coverage of ``|error| <= 2u``.

Baselines go through the benchmark's own evaluation path: each is fitted on the benchmark's
training sinograms (``make_bench_data`` of the preset; learned ones resume from, or leave,
their checkpoints under ``runs_dir``, so a benchmark's ``runs/`` folder makes this a
matter of loading) and reconstructs every QA and lesion scan with ``Baseline.reconstruct``.

Nothing here is tuned: the QA phantoms and lesions are inputs, and the model is whatever
``fit`` made.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..dose import Lesion, insert_lesions, photons_from_dose, simulate_scan
from ..errors import InputError
from ..iq import cho_detectability, disc_rois, insert_accuracy, laguerre_gauss_channels, nps, ttf
from ..phantoms import make_phantoms
from ..phantoms.qa import make_ctp404_phantom, make_lcd_phantom
from ..physics import CTProjector
from .splits import TEST_SEED

__all__ = ["run_iq", "lcd_detectability", "lesion_positions", "lesion_scores", "format_d_prime", "IQ_DOSES",
           "IQ_METHODS"]

IQ_DOSES = (0.25, 0.10, 0.50)
IQ_METHODS = ("FBP", "x0 (stage 1)", "TurnDiff")
#: The QA inserts must span several pixels for the TTF and the observer (a 12.2 mm insert is
#: 4 px across at 3 mm).
MAX_PIXEL_MM = 1.6
_LESION_RADII = (3.0, 4.0, 5.0)
_LESION_CONTRASTS = (20.0, 25.0, 30.0)


def _reconstruct(pipe, A, sino: np.ndarray, seed: int, output: list | None = None,
                 others: dict | None = None, photons: float | None = None) -> dict[str, np.ndarray]:
    """FBP, x0 and TurnDiff of ``sino``, and each fitted baseline of ``others`` (name ->
    (baseline, state)) at ``photons``; ``output`` receives the pipeline's whole output."""
    res = pipe(sino, strategy="auto", fusion="pixel", seed=seed, progress=False)
    if output is not None:
        output.append(res)
    out = {"FBP": A.fbp_hu(sino), "x0 (stage 1)": res.x0, "TurnDiff": res.image_hu}
    for name, (b, state) in (others or {}).items():
        out[name] = np.asarray(b.reconstruct(state, sino, A.geometry, photons=photons), np.float32)
    return out


def _fit_baselines(names, geometry, preset: str, seed: int, device: str, runs_dir: Path, log) -> dict:
    """Each named baseline fitted as the benchmark fits it (its training data and preset;
    checkpoints in ``runs_dir / name``, resumed when there)."""
    from ..baselines import BASELINES
    from .data import make_bench_data
    from .methods import fit_baseline
    from .runner import PRESETS

    p = PRESETS[preset]
    if any(BASELINES[n].trained for n in names):
        if p["size"] != geometry.image_size:
            raise InputError(f"--baselines: the {preset} benchmark trains at {p['size']} x {p['size']}, the model at "
                             f"{geometry.image_size} x {geometry.image_size}; use the model of that benchmark")
        data = make_bench_data(size=p["size"], n_train=p["n_train"], n_test=1, test_doses=(IQ_DOSES[0],), seed=seed,
                               progress=False)
    else:  # nothing learns: one slice on the model's grid serves the fit's checks
        data = make_bench_data(size=geometry.image_size, n_train=1, n_test=1, test_doses=(IQ_DOSES[0],), seed=seed,
                               progress=False)
    if data.geometry.to_json() != geometry.to_json():
        raise InputError("--baselines: the model's geometry is not the benchmark's; use a model of `turndiff benchmark`")
    fitted = {}
    for name in names:
        log(f"fitting {name} ({'checkpoints in ' + str(runs_dir) if BASELINES[name].trained else 'no training'})")
        fitted[name] = (BASELINES[name], fit_baseline(name, data, preset=preset, seed=seed, device=device,
                                                      runs_dir=runs_dir))
    return fitted


#: Bootstrap resamplings behind each d' interval of :func:`lcd_detectability`.
LCD_BOOTSTRAP = 1000


def lcd_detectability(images: np.ndarray, phantom, absent: np.ndarray | None = None) -> dict[str, dict]:
    """d' and AUC per rod of ``phantom`` (a :func:`~turndiff.phantoms.qa.make_lcd_phantom`)
    from its noise realisations ``images`` ``[R, H, W]`` (HU, on the phantom's grid).

    Signal-present ROIs are every copy of the rod in every realisation. ``absent``
    ``[R', H, W]``: realisations of the same phantom without its rods (``make_lcd_phantom(...,
    signal=False)``), reconstructed the same way; the signal-absent ROIs are then the same
    positions in them, so the two classes differ by the rod alone (Yu et al., Med. Phys.
    2013; the FDA's LCD-CT toolbox). This is what `turndiff iq` uses. Without ``absent`` the
    signal-absent ROIs are the phantom's background positions in ``images`` (the design
    before session 32): adequate for a linear, shift-invariant reconstruction such as FBP,
    but a nonlinear one leaves a structure that differs between the rods' positions and the
    background's in every realisation alike, and the observer counts it as signal (TurnDiff's
    d' at 7 mm read 2.67 that way and 0.46 with signal-absent scans; docs/METHOD.md,
    "Signal-absent scans"). R >= 12 for the 5-channel, two-fold observer.

    Returns ``{rod name: {"d_prime", "d_prime_ci", "auc", "n_present", "n_absent",
    "diameter_mm", "contrast_hu", "absent"}}`` (``d_prime_ci``: 95% bootstrap interval,
    templates retrained on each resample, :func:`cho_detectability`; ``absent``:
    ``"signal-free scans"`` or ``"background positions"``)."""
    if absent is not None and np.shape(absent)[1:] != np.shape(images)[1:]:
        raise InputError(f"absent images {np.shape(absent)} do not match the signal-present ones {np.shape(images)}")
    out = {}
    rods: dict[str, list] = {}
    for ins in phantom.inserts:
        rods.setdefault(ins.name, []).append(ins)
    for name, copies in rods.items():
        radius = copies[0].radius
        size = int(max(9, 2 * math.ceil(2 * radius) + 1))  # ROIs clear of the neighbouring rods
        width = max(1.5, 2.0 * radius)  # channel width (pixels) for a disc of this radius
        channels = laguerre_gauss_channels(size, width, 5)
        centres = [c.centre for c in copies]
        present = disc_rois(images, centres, size)
        negatives = disc_rois(absent, centres, size) if absent is not None else disc_rois(images, phantom.background,
                                                                                            size)
        det = cho_detectability(present, negatives, channels, bootstrap=LCD_BOOTSTRAP)
        out[name] = {"d_prime": det.d_prime, "d_prime_ci": list(det.d_prime_ci), "auc": det.auc,
                     "n_present": det.n_present, "n_absent": det.n_absent,
                     "diameter_mm": 2 * radius * phantom.pixel_spacing, "contrast_hu": copies[0].contrast,
                     "absent": "signal-free scans" if absent is not None else "background positions"}
    return out


def _noise_power(images: np.ndarray, pixel_spacing: float) -> dict:
    r = len(images)
    noise = (images - images.mean(0)) * math.sqrt(r / (r - 1))
    h, w = images.shape[1:]
    half = max(8, int(round(20.0 / pixel_spacing)))  # 40 mm square, inside the ring of rods
    roi = noise[:, h // 2 - half : h // 2 + half, w // 2 - half : w // 2 + half]
    res = nps(roi, pixel_spacing)
    return {"frequencies": res.frequencies.tolist(), "radial": res.radial.tolist(), "peak_frequency":
            res.peak_frequency, "mean_frequency": res.mean_frequency, "noise_std_hu": math.sqrt(res.variance)}


def _resolution(images: np.ndarray, phantom) -> dict:
    out = {}
    masks = {i.name: phantom.mask(i) for i in phantom.inserts}
    acc = insert_accuracy(images, masks, {i.name: i.value for i in phantom.inserts})
    for ins in phantom.inserts:
        t = ttf(images, ins.centre, ins.radius, phantom.pixel_spacing, half_width=0.8 * ins.radius)
        out[ins.name] = {**acc[ins.name], "f50": t.f50, "f10": t.f10, "frequencies": t.frequencies.tolist(),
                         "ttf": t.ttf.tolist()}
    return out


def lesion_positions(ref: np.ndarray, rng: np.random.Generator, per_slice: int):
    """Up to ``per_slice`` :class:`~turndiff.dose.Lesion` per slice of ``ref`` ``[N, H, W]``
    (HU), radii 3-5 px and contrasts +20 to +30 HU in turn, placed in soft tissue (the
    reference within [-50, 150] HU over a disc two pixels wider than the lesion) and apart
    from each other; positions drawn from ``rng``."""
    lesions = []
    h, w = ref.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    for k in range(ref.shape[0]):
        placed: list[tuple[float, float, float]] = []
        for _ in range(200):
            if len(placed) == per_slice:
                break
            j = len(lesions)
            radius, contrast = _LESION_RADII[j % 3], _LESION_CONTRASTS[(j // 3) % 3]
            r, c = rng.uniform(radius + 4, h - radius - 4), rng.uniform(radius + 4, w - radius - 4)
            disc = np.hypot(yy - r, xx - c) <= radius + 2
            region = ref[k][disc]
            if region.min() < -50 or region.max() > 150:
                continue
            if any(math.hypot(r - pr, c - pc) < radius + pr_r + 6 for pr, pc, pr_r in placed):
                continue
            placed.append((r, c, radius))
            lesions.append(Lesion((float(r), float(c)), float(radius), float(contrast), k))
    return lesions


def _lesion_study(pipe, A, geometry, dose: float, n_slices: int, seed: int, others: dict | None = None) -> dict:
    size = geometry.image_size
    ref = make_phantoms(n_slices, size, seed=TEST_SEED + seed)
    i0 = photons_from_dose(dose)
    sino, _ = simulate_scan(ref, geometry, photons=i0, seed=seed + 31)
    lesions = lesion_positions(ref, np.random.default_rng(seed), per_slice=2)
    with_les, change = insert_lesions(sino, geometry, lesions, photons=i0, seed=seed + 37)
    whole: list = []
    base = _reconstruct(pipe, A, sino, seed, whole, others, i0)
    plus = _reconstruct(pipe, A, with_les, seed, None, others, i0)
    out = {}
    # The uncertainty map of TurnDiff's output against its true error (the lesion-free scans).
    from scipy import stats

    from ..masks import body_mask

    res = whole[0]
    # The map `reconstruct --uncertainty` writes, against the error of the image it writes.
    u, err, body = res.uncertainty(), res.image_hu - ref, body_mask(ref)
    uncertainty = {"spearman": float(stats.spearmanr(u[body], np.abs(err[body]))[0]),
                   "coverage_2u": float(np.mean(np.abs(err[body]) <= 2 * u[body])), "slices": int(n_slices)}
    for m in base:
        out[m] = {**lesion_scores(base[m], plus[m], ref, lesions), "lesions": len(lesions)}
    return out, uncertainty


def lesion_scores(base: np.ndarray, plus: np.ndarray, ref: np.ndarray, lesions) -> dict[str, float]:
    """Contrast recovery and CNR of ``lesions`` in one method's images ``[N, H, W]`` (HU) of
    the same scans without (``base``) and with (``plus``) them, ``ref`` the lesion-free
    reference. Recovery: the mean of ``plus - base`` over the lesion's inner 70% radius over
    the inserted contrast (the same noise cancels); CNR: that disc's mean minus a ring's
    (2-8 px outside the lesion) over the ring's noise std in ``base - ref``. Returns
    ``{"contrast_recovery", "contrast_recovery_min", "cnr"}`` (means over the lesions)."""
    h, w = ref.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    rec, cnr = [], []
    for les in lesions:
        d = np.hypot(yy - les.centre[0], xx - les.centre[1])
        inner, ring = d <= 0.7 * les.radius, (d >= les.radius + 2) & (d <= les.radius + 8)
        rec.append(float((plus[les.slice] - base[les.slice])[inner].mean()) / les.contrast)
        noise = float((base[les.slice] - ref[les.slice])[ring].std())
        cnr.append(float(plus[les.slice][inner].mean() - plus[les.slice][ring].mean()) / noise)
    return {"contrast_recovery": float(np.mean(rec)), "contrast_recovery_min": float(np.min(rec)),
            "cnr": float(np.mean(cnr))}


def run_iq(model_dir: str | Path, out_dir: str | Path, *, doses=IQ_DOSES, realizations: int = 16,
           lesion_slices: int = 8, seed: int = 0, device: str = "auto", baselines=(), preset: str = "fast",
           runs_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the task-based study of the model in ``model_dir``; writes ``iq.json``,
    ``iq.md`` and figures into ``out_dir`` and returns the results.

    ``baselines``: names of :data:`turndiff.baselines.BASELINES` to add (FBP is always
    there), fitted as the ``preset`` benchmark fits them, checkpoints under ``runs_dir``
    (default ``out_dir/runs``; a benchmark's ``BENCH_OUT/runs`` reuses its trainings)."""
    from ..io import atomic_output
    from ..pipeline import TurnDiffPipeline

    if realizations < 12:  # 2 x 12 signal-present ROIs per rod: the least a 5-channel, 2-fold CHO takes
        raise InputError(f"--realizations must be at least 12 for the observer study, got {realizations}")
    pipe = TurnDiffPipeline.from_pretrained(model_dir, device=device)
    g = pipe.geometry
    if g.pixel_spacing > MAX_PIXEL_MM or g.image_size * g.pixel_spacing < 210:
        raise InputError(f"{model_dir}: turndiff iq needs pixels of at most {MAX_PIXEL_MM} mm and a field of view "
                         f"over 210 mm (e.g. 256 x 256 over 384 mm); this model's are {g.pixel_spacing:.2f} mm and "
                         f"{g.image_size * g.pixel_spacing:.0f} mm")
    A = CTProjector(g)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    others = _fit_baselines([b for b in baselines if b != "FBP"], g, preset, seed, device,
                            Path(runs_dir) if runs_dir else out / "runs", log) if baselines else {}
    methods = (*IQ_METHODS, *others)
    lcd = make_lcd_phantom(g.image_size, pixel_spacing=g.pixel_spacing)
    lcd_free = make_lcd_phantom(g.image_size, pixel_spacing=g.pixel_spacing, signal=False)
    ctp = make_ctp404_phantom(g.image_size, pixel_spacing=g.pixel_spacing)
    results: dict = {"doses": list(doses), "realizations": realizations, "methods": list(methods),
                     "detectability": {}, "nps": {}, "resolution": {}}
    full = [(1.0, ("FBP",))] + [(d, methods) for d in doses]
    for dose, these in full:
        key = f"{dose:g}"
        log(f"dose {dose:.0%}: {realizations} realisations of the LCD phantom with and without its rods and of "
            f"the CTP404 phantom, {', '.join(these)}")
        i0 = photons_from_dose(dose)
        s_lcd, _ = simulate_scan(np.repeat(lcd.hu[None], realizations, 0), g, photons=i0, seed=seed + 1000 + int(dose * 1e4))
        s_free, _ = simulate_scan(np.repeat(lcd_free.hu[None], realizations, 0), g, photons=i0,
                                  seed=seed + 3000 + int(dose * 1e4))
        s_ctp, _ = simulate_scan(np.repeat(ctp.hu[None], realizations // 2, 0), g, photons=i0,
                                 seed=seed + 2000 + int(dose * 1e4))
        if these == ("FBP",):
            im_lcd, im_free, im_ctp = {"FBP": A.fbp_hu(s_lcd)}, {"FBP": A.fbp_hu(s_free)}, {"FBP": A.fbp_hu(s_ctp)}
        else:
            im_lcd = _reconstruct(pipe, A, s_lcd, seed, None, others, i0)
            im_free = _reconstruct(pipe, A, s_free, seed, None, others, i0)
            im_ctp = _reconstruct(pipe, A, s_ctp, seed, None, others, i0)
        for m in these:
            results["detectability"].setdefault(m, {})[key] = lcd_detectability(im_lcd[m], lcd, im_free[m])
            results["nps"].setdefault(m, {})[key] = _noise_power(im_lcd[m], g.pixel_spacing)
            results["resolution"].setdefault(m, {})[key] = _resolution(im_ctp[m], ctp)
    reference = results["detectability"]["FBP"]["1"]
    results["dose_reduction"] = {
        m: {f"{d:g}": {rod: (v["d_prime"] / reference[rod]["d_prime"]) ** 2 / d
                       for rod, v in results["detectability"][m][f"{d:g}"].items() if reference[rod]["d_prime"] > 0}
            for d in doses} for m in methods}
    log(f"inserted lesions: {lesion_slices} test phantoms at {doses[0]:.0%}, 2 lesions each")
    results["lesions"], results["uncertainty"] = _lesion_study(pipe, A, g, doses[0], lesion_slices, seed, others)
    results["seconds"] = time.perf_counter() - t0
    md = iq_tables(results)
    with atomic_output(out / "iq.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=float))
    with atomic_output(out / "iq.md") as tmp:
        tmp.write_text(md)
    iq_figures(results, out)
    log(md)
    log(f"iq done in {results['seconds'] / 60:.1f} min; outputs in {out}/")
    return results


def format_d_prime(v: dict) -> str:
    """``"d' [lo, hi]"`` of one rod's entry of :func:`lcd_detectability` (``"d'"`` alone for
    results written before the interval existed)."""
    ci = v.get("d_prime_ci")
    return f"{v['d_prime']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def iq_tables(r: dict) -> str:
    """Markdown tables of a :func:`run_iq` result."""
    doses = [f"{d:g}" for d in r["doses"]]
    rods = list(r["detectability"]["FBP"]["1"])
    absent = ("scans of the phantom without its rods, at the rods' positions"
              if r["detectability"]["FBP"]["1"][rods[0]].get("absent") == "signal-free scans"
              else "signal-free positions of the same scans (before session 32)")
    lines = ["## Detectability (CHO d', Laguerre-Gauss channels; 95% bootstrap interval, templates retrained "
             f"on each resample; signal-absent ROIs from {absent})", "",
             "| method | dose | " + " | ".join(rods) + " |", "|---|---|" + "---|" * len(rods)]
    lines.append("| FBP | 100% | " + " | ".join(format_d_prime(r['detectability']['FBP']['1'][k]) for k in rods) + " |")
    for m in r.get("methods", IQ_METHODS):
        for d in doses:
            det = r["detectability"][m][d]
            lines.append(f"| {m} | {float(d):.0%} | " + " | ".join(format_d_prime(det[k]) for k in rods) + " |")
    lines += ["", "## Dose-reduction factor against full-dose FBP ((d' / d'_FBP,100%)^2 / dose; >1 saves dose)", "",
              "| method | dose | " + " | ".join(rods) + " |", "|---|---|" + "---|" * len(rods)]
    for m in r.get("methods", IQ_METHODS):
        for d in doses:
            dr = r["dose_reduction"][m][d]
            lines.append(f"| {m} | {float(d):.0%} | " + " | ".join(f"{dr.get(k, float('nan')):.2f}" for k in rods) + " |")
    lines += ["", "## Noise (central 40 mm ROI): std, NPS peak and mean frequency", "",
              "| method | dose | noise std (HU) | NPS peak (cycles/mm) | NPS mean (cycles/mm) |", "|---|---|---|---|---|"]
    for m, per in r["nps"].items():
        for d, v in per.items():
            lines.append(f"| {m} | {float(d):.0%} | {v['noise_std_hu']:.1f} | {v['peak_frequency']:.3f} | "
                         f"{v['mean_frequency']:.3f} |")
    names = list(r["resolution"]["FBP"]["1"])
    lines += ["", f"## TTF f50 (cycles/mm) and CT-number bias (HU) per insert, {float(doses[0]):.0%} dose "
              "(FBP also at 100%)", "", "| method | dose | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for m, per in r["resolution"].items():
        for d, v in per.items():
            if m != "FBP" and d != doses[0] or m == "FBP" and d not in ("1", doses[0]):
                continue
            lines.append(f"| {m} | {float(d):.0%} | " + " | ".join(
                f"{v[k]['f50']:.3f} / {v[k]['bias']:+.1f}" for k in names) + " |")
    lines += ["", f"## Inserted lesions (3-5 px, +20 to +30 HU), {float(doses[0]):.0%} dose", "",
              "| method | contrast recovery (mean) | (min) | CNR |", "|---|---|---|---|"]
    for m, v in r["lesions"].items():
        lines.append(f"| {m} | {v['contrast_recovery']:.3f} | {v['contrast_recovery_min']:.3f} | {v['cnr']:.2f} |")
    u = r.get("uncertainty")
    if u:
        lines += ["", f"## Uncertainty map of TurnDiff ({u['slices']} test phantoms, {float(doses[0]):.0%} dose, body)",
                  "", f"Spearman with the absolute error {u['spearman']:.3f}; |error| <= 2u on {u['coverage_2u']:.1%} "
                  "of the pixels."]
    return "\n".join(lines) + "\n"


def iq_figures(r: dict, out: Path) -> list[Path]:
    """d' against dose per rod, NPS curves and TTF curves at the first dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import _save

    doses = [float(d) for d in r["doses"]]
    order = np.argsort(doses)
    rods = list(r["detectability"]["FBP"]["1"])
    fig, axes = plt.subplots(1, len(rods), figsize=(3.2 * len(rods), 3), squeeze=False)
    for ax, rod in zip(axes[0], rods):
        for m in r.get("methods", IQ_METHODS):
            ys = [r["detectability"][m][f"{doses[i]:g}"][rod]["d_prime"] for i in order]
            ax.plot([doses[i] * 100 for i in order], ys, "o-", label=m)
        ax.axhline(r["detectability"]["FBP"]["1"][rod]["d_prime"], color="k", ls="--", lw=0.8, label="FBP 100%")
        ax.set_title(rod, fontsize=9)
        ax.set_xlabel("dose (%)")
        ax.set_ylabel("d'")
    axes[0, 0].legend(fontsize=7)
    paths = [_save(fig, out / "iq_detectability.png")]
    d0 = f"{doses[0]:g}"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for m in r.get("methods", IQ_METHODS):
        v = r["nps"][m][d0]
        a1.plot(v["frequencies"], v["radial"], label=m)
    v = r["nps"]["FBP"]["1"]
    a1.plot(v["frequencies"], v["radial"], "k--", lw=0.8, label="FBP 100%")
    a1.set_xlabel("cycles/mm")
    a1.set_ylabel("NPS (HU² mm²)")
    a1.set_title(f"NPS, {doses[0]:.0%} dose", fontsize=9)
    a1.legend(fontsize=7)
    for m in r.get("methods", IQ_METHODS):
        for ins, ls in (("polystyrene", "-"), ("Teflon", ":")):
            t = r["resolution"][m][d0][ins]
            a2.plot(t["frequencies"], t["ttf"], ls, label=f"{m}, {ins}")
    a2.set_xlabel("cycles/mm")
    a2.set_ylabel("TTF")
    a2.set_title(f"TTF, {doses[0]:.0%} dose (-35 HU solid, +990 HU dotted)", fontsize=9)
    a2.legend(fontsize=6)
    paths.append(_save(fig, out / "iq_nps_ttf.png"))
    return paths
