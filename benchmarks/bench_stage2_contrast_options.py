"""The two routes to lesion contrast, alone and together, on *validation* phantoms:
stage 2 distilled onto the consistent teacher (``unet.teacher="consistent"``, no recorrupted
loss; U-Net of seed 1 retrained as ``bench_stage2_condition.py`` does) and the prior's low
band from x0 (the pipeline's ``lowband=True``), against the model's own stage 2. Per row: TurnDiff's
soft PSNR / SSIM inside the body at 25 / 10 / 50% on the 6 validation scans, and the contrast
recovery (min) and CNR of the lesions (3-5 px, +20 to +30 HU) inserted into their 25%
projections; x0's contrast for reference (docs/STAGE2.md, "Session 32").

Run::

    python benchmarks/bench_stage2_contrast_options.py MODEL_DIR
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_stage2_condition import DOSES, unet_trainer  # the script next to this one (isort: skip)
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import lesion_positions, lesion_scores
from turndiff.dose import insert_lesions, photons_from_dose
from turndiff.metrics import evaluate
from turndiff.pipeline import TurnDiffPipeline
from turndiff.stage2.config import legacy_changes

CONSISTENT = {"unet": {"teacher": "consistent", "r2r_weight": 0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    ref, g = data.test_reference_hu, pipe.projector.geometry
    lesions = lesion_positions(ref, np.random.default_rng(0), per_slice=2)
    les = insert_lesions(data.test_sinograms[0.25], g, lesions, photons=photons_from_dose(0.25), seed=37)[0]
    passes = {d: pipe.project(data.test_sinograms[d], progress=False) for d in DOSES}
    les_pass = pipe.project(les, progress=False)
    base = pipe.stage2
    consistent = unet_trainer(pipe, data.train_sinogram, base.config.replace(**legacy_changes(CONSISTENT)))(1)

    def quality(x) -> str:
        e = evaluate(x, ref, mask="body")["soft"]
        return f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f}"

    def contrast(base_image, plus_image) -> str:
        r = lesion_scores(base_image, plus_image, ref, lesions)
        return f"{r['contrast_recovery']:.3f} ({r['contrast_recovery_min']:.3f}) / {r['cnr']:.2f}"

    print("| stage 2 | low band | " + " | ".join(f"TurnDiff {d:.0%}" for d in DOSES)
          + " | lesion contrast (min) / CNR |\n|---|---|" + "---|" * len(DOSES) + "---|")
    # The first row is whatever the model was trained with (x0 teacher before session 33, the
    # consistent teacher after): name it by its teacher, not as "the default".
    own = f"the model's own ({base.config.unet.teacher} teacher, {base.config.unet.train.iters} steps)"
    for name, stage2 in ((own, base), ("consistent teacher, retrained", consistent)):
        pipe.stage2 = stage2
        for lowband in (False, True):
            outs = {d: pipe(data.test_sinograms[d], seed=0, progress=False, projection=passes[d], lowband=lowband)
                    for d in DOSES}
            plus = pipe(les, seed=0, progress=False, projection=les_pass, lowband=lowband)
            print(f"| {name} | {'1 px' if lowband else 'off'} | " + " | ".join(quality(outs[d].image_hu) for d in DOSES)
                  + f" | {contrast(outs[0.25].image_hu, plus.image_hu)} |", flush=True)
        if stage2 is base:
            print("| x0 | | " + " | " * len(DOSES) + f"{contrast(outs[0.25].x0, plus.x0)} |", flush=True)
    pipe.stage2 = base


if __name__ == "__main__":
    main()
