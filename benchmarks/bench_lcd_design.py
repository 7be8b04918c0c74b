"""The observer's two designs side by side: d' per rod with the signal-absent ROIs at the
background positions of the same scans (before session 32) and at the rods' own positions in
scans of the phantom without its rods (`turndiff iq` since), for FBP at 100% and 25%, x0 and
TurnDiff with the U-Net of each seed (1: the saved one; others retrained as
``bench_stage2_condition.py`` does). *Validation* noise realisations only
(``bench_stage2_condition.lcd_scans``); docs/METHOD.md, "Signal-absent scans".

Run::

    python benchmarks/bench_lcd_design.py MODEL_DIR [--seeds 1,2,3] [--lcd 16]
"""

from __future__ import annotations

import argparse

from bench_stage2_condition import DOSES, _Detectability, unet_trainer  # the script next to this one (isort: skip)
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import format_d_prime, lcd_detectability
from turndiff.pipeline import TurnDiffPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seeds", default="1,2,3", help="U-Net training seeds (1: the saved U-Net)")
    ap.add_argument("--lcd", type=int, default=16, help="LCD noise realisations (validation seeds)")
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    det = _Detectability(pipe, data, args.lcd)
    fbp = pipe.projector.fbp_hu

    def row(name: str, images, free) -> None:
        old, new = lcd_detectability(images, det.lcd), lcd_detectability(images, det.lcd, free)
        print(f"| {name} | " + " | ".join(f"{format_d_prime(old[r])} -> {format_d_prime(new[r])}" for r in det.rods)
              + " |", flush=True)

    print("| image (d': background positions -> rod-free scans) | "
          + " | ".join(r.split(",")[0] for r in det.rods) + " |\n|---|" + "---|" * len(det.rods))
    scans = det.scans
    row("FBP, 100%", fbp(scans.full), fbp(scans.free_full))
    row(f"FBP, {DOSES[0]:.0%}", fbp(scans.low), fbp(scans.free_low))
    base, train = pipe.stage2, None
    for seed in (int(v) for v in args.seeds.split(",")):
        if seed != 1 and train is None:
            train = unet_trainer(pipe, data.train_sinogram, base.config)
        pipe.stage2 = base if seed == 1 else train(seed)
        out, free = det.lcd_outputs()
        if seed == 1:
            row(f"x0, {DOSES[0]:.0%}", out.x0, free.x0)
        row(f"TurnDiff, U-Net seed {seed}, {DOSES[0]:.0%}", out.image_hu, free.image_hu)
    pipe.stage2 = base


if __name__ == "__main__":
    main()
