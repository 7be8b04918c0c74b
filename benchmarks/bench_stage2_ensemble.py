"""Does averaging stage 2 over several training seeds steady the model observer's d'?
(docs/STAGE2.md, "Session 31"; *validation* phantoms only.)

The CHO's d' of TurnDiff's output at 5 and 7 mm moves with the diffusion U-Net's training
seed far more than PSNR or lesion contrast do. This script trains the U-Net of ``MODEL_DIR``'s
stage-2 configuration once per seed (seed 1 is ``fit``'s, so the saved U-Net is used for it),
averages their x~0 over every chosen group of seeds, and runs the rest of the pipeline
(fusion, detail restoration, data consistency) on that average (``x_diffusion=``): the same
stage-1 pass, validation scans, inserted lesions and LCD realisations as
``bench_stage2_condition.py --pipeline --lcd``.

Run::

    python benchmarks/bench_stage2_ensemble.py MODEL_DIR [--seeds 1,2,3,4] [--groups 1+2,3+4,1+2+3+4] [--lcd 16]

Prints one Markdown row per single seed and per group: TurnDiff's soft PSNR / SSIM in the
body at 25 / 10 / 50%, the lesion contrast recovery of x~0 / TurnDiff and its CNR, and d'
per rod at 25%.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_stage2_condition import DOSES, _Detectability, unet_trainer  # the script next to this one (isort: skip)
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import lcd_detectability
from turndiff.metrics import evaluate
from turndiff.pipeline import TurnDiffPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seeds", default="1,2,3,4", help="U-Net training seeds (1: the saved U-Net)")
    ap.add_argument("--groups", default="1+2,3+4,1+3,2+4,1+2+3+4", help="groups of seeds whose x~0 is averaged")
    ap.add_argument("--lcd", type=int, default=16, help="LCD noise realisations (validation seeds)")
    args = ap.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    groups = [(s,) for s in seeds] + [tuple(int(v) for v in g.split("+")) for g in args.groups.split(",") if g]
    if any(s not in seeds for g in groups for s in g):
        ap.error("--groups may only name seeds given in --seeds")

    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    ref = data.test_reference_hu
    det = _Detectability(pipe, data, args.lcd)
    inputs = {d: (data.test_sinograms[d], pipe.project(data.test_sinograms[d], progress=False)) for d in DOSES}
    inputs["lesions"] = (det.les_sino, det.les_pass)
    inputs["lcd"] = (det.lcd_sino, det.lcd_pass)
    inputs["lcd without rods"] = (det.free_sino, det.free_pass)
    base = pipe.stage2
    train = unet_trainer(pipe, data.train_sinogram, base.config)
    x_diff = {}
    for seed in seeds:
        pipe.stage2 = base if seed == 1 else train(seed)
        x_diff[seed] = {k: pipe(s, seed=0, progress=False, projection=p).x_diffusion for k, (s, p) in inputs.items()}
        print(f"U-Net of seed {seed} ready", flush=True)
    pipe.stage2 = base

    print("\n| U-Nets (seeds) | " + " | ".join(f"TurnDiff {d:.0%}" for d in DOSES)
          + " | lesion contrast x~0 / TurnDiff | lesion CNR | d' " + " / ".join(r.split(",")[0] for r in det.rods)
          + " |\n|---|" + "---|" * (len(DOSES) + 3))
    for group in groups:
        mean = {k: np.mean([x_diff[s][k] for s in group], 0) for k in inputs}
        outs = {k: pipe(s, seed=0, progress=False, projection=p, x_diffusion=mean[k]) for k, (s, p) in inputs.items()}
        quality = [evaluate(outs[d].image_hu, ref, mask="body")["soft"] for d in DOSES]
        rx, _ = det.lesion_scores(mean[DOSES[0]], mean["lesions"])
        rt, ct = det.lesion_scores(outs[DOSES[0]].image_hu, outs["lesions"].image_hu)
        d_prime = lcd_detectability(outs["lcd"].image_hu, det.lcd, outs["lcd without rods"].image_hu)
        print(f"| {' + '.join(map(str, group))} | "
              + " | ".join(f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f}" for e in quality)
              + f" | {rx:.3f} / {rt:.3f} | {ct:.2f} | "
              + " / ".join(f"{d_prime[r]['d_prime']:.2f}" for r in det.rods) + " |", flush=True)


if __name__ == "__main__":
    main()
