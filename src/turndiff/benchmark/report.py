"""Tables (Markdown), figures and a self-contained HTML report for the benchmark."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .data import VOLUME
from .figures import comparison_figure, dose_grid_figure, pick_roi, profile_figure, reformat_figure
from .machine import speed_text

__all__ = ["quality_table", "ablation_table", "cost_table", "detail_table", "volume_table", "seed_spread_table",
           "paired_comparison", "paired_table", "write_report"]

ABLATION_ROWS = ("x0 (only projection)", "x0, no SURE calibration", "x~0 (diffusion, no fusion)", "x~0 (condition x_ld)",
                 "stage 1: paper CSSS (2x2 cells)", "stage 1: CSSS view pairs", "stage 1: no ramp weighting",
                 "global fusion 0.5", "global fusion 1", "no tunable strategy", "no SURE calibration",
                 "fusion output (no restoration, no data consistency)", "no detail restoration",
                 "no low band (--no-lowband)", "no polish (--polish 0)", "no data consistency",
                 "no diffusion (x0 in place of x~0)", "TurnDiff")


_DETAIL_NOTE = ("Sobel gradient magnitude of each image over the reference's, summed over the reference's body "
                "(all), its strongest 10% edges (below 1: blurred structure) and its flattest 50% (above 1: noise or "
                "texture the reference does not have).")


def _cell(m: dict, metric: str, digits: int) -> str:
    return f"{m[metric]['mean']:.{digits}f} +- {m[metric]['std']:.{digits}f}"


def _clean_data(cost_entry: dict) -> str:
    """A method's clean-data category from its cost entry (results without ``clean_data``,
    written before it existed, only knew whether a method was supervised)."""
    return cost_entry.get("clean_data", "paired" if cost_entry.get("uses_clean_data") else "none")


def _clean_label(kind: str) -> str:
    return "no" if kind == "none" else kind


def quality_table(quality: dict, *, window: str, doses, clean_data: dict | None = None) -> str:
    """Markdown: one row per method, PSNR / SSIM / RMSE per dose in one window; with
    ``clean_data`` (method -> ``"none"``, ``"unpaired"`` or ``"paired"``) a column states
    what clean data each method trained on."""
    clean = clean_data is not None
    head = "| method | " + ("clean data | " if clean else "") + " | ".join(
        f"{d:.0%} PSNR | {d:.0%} SSIM | {d:.0%} RMSE" for d in doses) + " |"
    sep = "|---|" + ("---|" if clean else "") + "---|---|---|" * len(doses)
    rows = [head, sep]
    for name, q in quality.items():
        cells = [_clean_label(clean_data.get(name, "none"))] if clean else []
        for d in doses:
            m = q[f"{d}"][window]
            cells += [_cell(m, "psnr", 2), _cell(m, "ssim", 4), _cell(m, "rmse", 1)]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ablation_table(quality: dict, *, doses) -> str:
    rows = ["| variant | " + " | ".join(f"{d:.0%} PSNR soft | {d:.0%} SSIM soft" for d in doses) + " |",
            "|---|" + "---|---|" * len(doses)]
    for name in ABLATION_ROWS:
        if name in quality:
            q = quality[name]
            rows.append(f"| {name} | " + " | ".join(
                f"{_cell(q[f'{d}']['soft'], 'psnr', 2)} | {_cell(q[f'{d}']['soft'], 'ssim', 4)}" for d in doses) + " |")
    return "\n".join(rows)


def paired_comparison(quality: dict, *, doses, clean_data: dict, method: str = "TurnDiff", window: str = "soft",
                      resamples: int = 10000, seed: int = 0) -> list[dict]:
    """``method`` against the best other method that uses no clean data, slice by slice.

    For each dose and metric (PSNR, SSIM in ``window``): the competitor with the highest
    mean among the methods whose ``clean_data`` is ``"none"`` and that are not TurnDiff's
    own rows (:data:`ABLATION_ROWS`), the per-slice differences ``method - competitor``
    (the same test slices, so the pairing removes what the slices share), their mean, a 95%
    percentile-bootstrap interval of that mean (slices resampled with replacement,
    ``resamples`` times, seeded) and how many slices ``method`` wins. With a handful of test
    slices a lead of a few thousandths of SSIM sits inside that interval: the table says how
    much of a ranking the slices resolve.

    Returns a list of dicts (``dose``, ``metric``, ``competitor``, ``mean_method``,
    ``mean_competitor``, ``diff``, ``low``, ``high``, ``wins``, ``slices``); empty when
    ``method`` or every competitor is missing."""
    if method not in quality:
        return []
    others = [n for n in quality if n != method and n not in ABLATION_ROWS and clean_data.get(n, "none") == "none"]
    rng = np.random.default_rng(seed)
    rows = []
    for d in doses:
        for metric in ("psnr", "ssim"):
            cands = [n for n in others if f"{d}" in quality[n]]
            if not cands:
                continue
            best = max(cands, key=lambda n: quality[n][f"{d}"][window][metric]["mean"])
            a = np.asarray(quality[method][f"{d}"][window][metric]["per_slice"], np.float64)
            b = np.asarray(quality[best][f"{d}"][window][metric]["per_slice"], np.float64)
            if a.shape != b.shape or a.size == 0:
                raise ValueError(f"{method} and {best} were scored on different slices at {d:g}")
            diff = a - b
            boot = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
            low, high = np.percentile(boot, [2.5, 97.5])
            rows.append({"dose": float(d), "metric": metric, "competitor": best, "mean_method": float(a.mean()),
                         "mean_competitor": float(b.mean()), "diff": float(diff.mean()), "low": float(low),
                         "high": float(high), "wins": int((diff > 0).sum()), "slices": int(diff.size)})
    return rows


def paired_table(quality: dict, *, doses, clean_data: dict, method: str = "TurnDiff", window: str = "soft") -> str:
    """Markdown of :func:`paired_comparison` ("" when there is nothing to compare)."""
    rows = paired_comparison(quality, doses=doses, clean_data=clean_data, method=method, window=window)
    if not rows:
        return ""
    out = [f"| dose | metric | best other method without clean data | {method} | that method | "
           "difference (95% bootstrap interval) | slices won |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        k = 2 if r["metric"] == "psnr" else 4
        out.append(f"| {r['dose']:.0%} | {r['metric'].upper()} | {r['competitor']} | {r['mean_method']:.{k}f} | "
                   f"{r['mean_competitor']:.{k}f} | {r['diff']:+.{k}f} ({r['low']:+.{k}f} to {r['high']:+.{k}f}) | "
                   f"{r['wins']} / {r['slices']} |")
    return "\n".join(out)


_PAIRED_NOTE = ("TurnDiff against the best other method that uses no clean data, per dose and metric (soft window, "
                "body): the mean of the per-slice differences, a 95% bootstrap interval of that mean over the scored "
                "slices, and how many slices TurnDiff wins. An interval that spans zero means these slices do not "
                "settle which of the two is better.")


def detail_table(quality: dict, *, dose: float) -> str:
    """Markdown: gradient magnitude relative to the reference (``metrics.gradient_ratios``)."""
    rows = [f"| method ({dose:.0%} dose) | all of the body | reference's strongest 10% edges | "
            "reference's flattest 50% |", "|---|---|---|---|"]
    for name, q in quality.items():
        g = q.get("gradient_ratios")
        if g:
            rows.append(f"| {name} | {g['all']:.3f} | {g['edges']:.3f} | {g['flat']:.3f} |")
    return "\n".join(rows)


_VOLUME_NOTE = ("Consecutive slices of one test patient (turndiff.phantoms.make_volume, 2.5 mm apart) at the "
                "training dose, each slice reconstructed on its own. dz RMSE: RMS error of the change from one "
                "slice to the next (HU); dz ratio: that change relative to the reference's (1 = as much as the "
                "anatomy, above 1 = flicker or noise between slices); banding: std over slices of each slice's "
                "mean error (HU), the level jumps a reformat shows as stripes.")


def volume_table(quality: dict) -> str:
    """Markdown: soft-window quality and the through-plane metrics on the test volume."""
    rows = ["| method | PSNR soft | SSIM soft | dz RMSE (HU) | dz ratio | banding (HU) |", "|---|---|---|---|---|---|"]
    for name, q in quality.items():
        v = q.get(VOLUME)
        if v:
            t = v["through_plane"]
            rows.append(f"| {name} | {_cell(v['soft'], 'psnr', 2)} | {_cell(v['soft'], 'ssim', 4)} | "
                        f"{t['dz_rmse']:.1f} | {t['dz_ratio']:.2f} | {t['banding']:.2f} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def cost_table(cost: dict) -> str:
    rows = ["| method | clean data | training (s) | inference (s / slice) | peak memory (MB) | notes |",
            "|---|---|---|---|---|---|"]
    for name, c in cost.items():
        rows.append(f"| {name} | {_clean_label(_clean_data(c))} | {c['train_seconds']:.0f} | "
                    f"{c['infer_seconds_per_slice']:.2f} | {c['peak_memory_mb']:.0f} | {c['notes']} |")
    return "\n".join(rows)


def seed_spread_table(summaries: list[dict], *, window: str = "soft", doses=None, methods=None) -> str:
    """Markdown: each method's mean PSNR / SSIM over several benchmark runs that differ only
    in their training seed (``turndiff benchmark --train-seed``), as ``mean +- std (min -
    max)`` over the runs of the per-run slice means; ``n`` runs per row. ``summaries`` are
    the runs' ``results.json`` contents: same preset, data seed and doses, distinct
    training seeds (else ``ValueError``). Rows: the methods in every run (or ``methods``)."""
    if len(summaries) < 2:
        raise ValueError("give two or more benchmark runs")
    first = summaries[0]
    for s in summaries[1:]:
        for key in ("preset", "seed"):
            if s.get(key) != first.get(key):
                raise ValueError(f"the runs differ in {key} ({first.get(key)!r} against {s.get(key)!r}): "
                                 "only the training seed may differ")
        if s["data"] != first["data"]:
            raise ValueError("the runs were made on different data settings")
    seeds = [s.get("train_seed", s["seed"]) for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two runs share a training seed ({seeds})")
    doses = list(first["data"]["doses"] if doses is None else doses)
    names = [n for n in first["quality"] if all(n in s["quality"] for s in summaries)] if methods is None \
        else list(methods)
    missing = [n for n in names if not all(n in s["quality"] for s in summaries)]
    missing += [f"dose {d}" for d in doses if not all(f"{d}" in s["quality"][n] for s in summaries for n in names
                                                       if n in s["quality"])]
    if missing:
        raise ValueError(f"not in every run: {', '.join(missing)}")
    head = "| method | n | " + " | ".join(f"{d:.0%} PSNR | {d:.0%} SSIM" for d in doses) + " |"
    rows = [head, "|---|---|" + "---|---|" * len(doses)]
    for name in names:
        cells = []
        for d in doses:
            for metric, digits in (("psnr", 2), ("ssim", 4)):
                v = np.array([s["quality"][name][f"{d}"][window][metric]["mean"] for s in summaries])
                cells.append(f"{v.mean():.{digits}f} +- {v.std(ddof=1):.{digits}f} "
                             f"({v.min():.{digits}f} - {v.max():.{digits}f})")
        rows.append(f"| {name} | {len(summaries)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _md_to_html_table(md: str) -> str:
    lines = [ln for ln in md.strip().splitlines() if not set(ln.replace("|", "").strip()) <= {"-"}]
    out = ["<table>"]
    for i, ln in enumerate(lines):
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(out: Path, summary: dict, results: dict, data, *, log=print) -> None:
    """Write ``results.json``, ``tables.md``, figures and ``report.html`` into ``out``."""
    from ..io import atomic_output

    doses = [float(d) for d in summary["data"]["doses"]]
    quality = summary["quality"]
    clean = {n: _clean_data(c) for n, c in summary["cost"].items()}
    md = {
        "soft": quality_table(quality, window="soft", doses=doses, clean_data=clean),
        "full": quality_table(quality, window="full", doses=doses, clean_data=clean),
        "ablation": ablation_table(quality, doses=doses),
        "cost": cost_table(summary["cost"]),
        "detail": detail_table(quality, dose=doses[0]),
        "volume": volume_table(quality),
        "paired": paired_table(quality, doses=doses, clean_data=clean),
    }
    figs = []
    ref = data.test_reference_hu
    k = int(np.argmax([np.mean(ref[i] > -500) for i in range(ref.shape[0])]))  # a slice with much anatomy
    main = [n for n in ("FBP", "TV", "BM3D", "Neighbor2Neighbor", "Noise2Inverse", "x0 (only projection)",
                        "TurnDiff", "RED-CNN (supervised)") if n in results]
    if main:
        roi = pick_roi(ref[k])
        for win in ("abdomen", "lung"):
            figs.append(comparison_figure({n: results[n].images[doses[0]][k] for n in main}, ref[k],
                                          out / f"fig6_methods_{win}.png", window=win, roi=roi,
                                          title=f"{doses[0]:.0%} dose, {win} window"))
        figs.append(profile_figure({n: results[n].images[doses[0]][k] for n in main}, ref[k],
                                   out / "fig6_profile.png", row=roi[0] + roi[2] // 2))
    gen = [n for n in ("FBP", "x0 (only projection)", "no tunable strategy", "TurnDiff") if n in results]
    if gen:
        figs.append(dose_grid_figure({f"{d:.0%}": {n: results[n].images[d][k] for n in gen} for d in doses}, ref[k],
                                     out / "fig9_dose_generalisation.png", window="abdomen",
                                     title="Dose generalisation (trained at 25%)"))
    vol = [n for n in ("FBP", "TV", "Noiser2Noise", "Noise2Inverse", "x0 (only projection)", "TurnDiff")
           if n in results and VOLUME in results[n].images]
    if vol and data.volume_reference_hu is not None:
        figs.append(reformat_figure({n: results[n].images[VOLUME] for n in vol}, data.volume_reference_hu,
                                    out / "fig_volume_reformat.png", pixel_spacing=data.geometry.pixel_spacing,
                                    slice_spacing=data.slice_spacing, window="abdomen",
                                    title="Test volume at 25% dose: axial slice and coronal reformat"))
    abl = [n for n in ABLATION_ROWS if n in results]
    if len(abl) > 1:
        for win in ("abdomen", "lung"):
            figs.append(comparison_figure({n: results[n].images[doses[0]][k] for n in abl}, ref[k],
                                          out / f"fig11_12_ablations_{win}.png", window=win,
                                          title=f"Ablations, {doses[0]:.0%} dose, {win} window"))
    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    sp = summary.get("sampling_spread")
    spread_md = (f"## Sampling spread of x~0\n\nPer-pixel standard deviation over {sp['seeds']} sampler seeds at "
                 f"{sp['dose']:.0%} dose: mean {sp['std_hu_mean']:.2f} HU (inside the body "
                 f"{sp['std_hu_mean_in_body']:.2f} HU), 95th percentile {sp['std_hu_p95']:.2f} HU.\n\n") if sp else ""
    seed = summary.get("seed", 0)
    train_seed = summary.get("train_seed", seed)
    seeds = f"Seed {seed} (phantoms, noise)" + (f", training seed {train_seed}" if train_seed != seed
                                                else " and trainings")
    split = summary.get("split", "test")  # absent in results of runs before session 33
    if split != "test":
        seeds += (f". Scored on **{split}** phantoms, not the test slices: a development table, "
                  "not a reported result")
    speed = summary.get("machine_speed_s")  # absent in results of runs before session 29
    machine = summary["machine"] + (f"; {speed_text(speed)}" if speed else "")
    tables_md = (f"# Benchmark ({summary['preset']}), {summary['date']}\n\nMachine: {machine}\n\n"
                 f"{seeds}.\n\n"
                 f"## Quality, soft window [-160, 240] HU (inside the body)\n\n{md['soft']}\n\n"
                 f"## Quality, full window [-1024, 3072] HU\n\n{md['full']}\n\n"
                 + (f"## TurnDiff against the best method without clean data, slice by slice\n\n{_PAIRED_NOTE}\n\n"
                    f"{md['paired']}\n\n" if md["paired"] else "")
                 + f"## Ablations (soft window)\n\n{md['ablation']}\n\n{spread_md}"
                 f"## Detail: gradient magnitude relative to the reference\n\n{_DETAIL_NOTE}\n\n{md['detail']}\n\n"
                 + (f"## Test volume: slice-to-slice consistency\n\n{_VOLUME_NOTE}\n\n{md['volume']}\n\n"
                    if md["volume"] else "")
                 + f"## Cost\n\n{md['cost']}\n")
    with atomic_output(out / "tables.md") as tmp:
        tmp.write_text(tables_md)
    imgs = "\n".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(Path(f).read_bytes()).decode()}">'
        f"<figcaption>{html.escape(Path(f).name)}</figcaption></figure>" for f in figs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>turndiff benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:12px;
margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}
td:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>turndiff benchmark ({html.escape(summary['preset'])})</h1>
<p>{html.escape(summary['date'])}; {html.escape(machine)}; total {summary['total_seconds'] / 60:.1f} min.
Trained at 25% dose on noisy sinograms only, except where the clean-data column says otherwise
(IPDM: unpaired normal-dose data of other phantoms; RED-CNN: supervised upper bound).
Metrics inside the body, mean +- std over {html.escape(summary.get('split', 'test'))} slices.</p>
<h2>Soft window [-160, 240] HU</h2>{_md_to_html_table(md['soft'])}
<h2>Full window [-1024, 3072] HU</h2>{_md_to_html_table(md['full'])}
{f"<h2>TurnDiff against the best method without clean data, slice by slice</h2><p>{html.escape(_PAIRED_NOTE)}</p>"
 + _md_to_html_table(md['paired']) if md['paired'] else ""}
<h2>Ablations</h2>{_md_to_html_table(md['ablation'])}
<p>{html.escape(spread_md.replace("## ", "").strip())}</p>
<h2>Detail: gradient magnitude relative to the reference</h2><p>{html.escape(_DETAIL_NOTE)}</p>
{_md_to_html_table(md['detail'])}
{f"<h2>Test volume: slice-to-slice consistency</h2><p>{html.escape(_VOLUME_NOTE)}</p>"
 + _md_to_html_table(md['volume']) if md['volume'] else ""}
<h2>Cost</h2>{_md_to_html_table(md['cost'])}
<h2>Figures</h2>{imgs}
</body></html>"""
    with atomic_output(out / "report.html") as tmp:
        tmp.write_text(page)
    log(tables_md)
