"""Signal and noise of the LCD rods, U-Net seed by seed (docs/STAGE2.md, "Sessions 31 and
32"; *validation* noise realisations only): written to find why the CHO's d' moved with
stage 2's training seed, which turned out to be the old observer design.

For the U-Net of each seed (1: the saved one; others retrained as
``bench_stage2_condition.py`` does), the pipeline runs on the validation realisations of the
MITA-like phantom at 25% (``bench_stage2_condition._Detectability``), and per rod size, for
x~0 and TurnDiff's output: the mean contrast over realisations and rod positions (disc
means at the rods minus those at the signal-free positions), the noise of a disc mean at a
signal-free position over realisations, and the fixed pattern: the spread over the
signal-free positions of their disc means averaged over realisations (structure that is the
same in every realisation but differs between positions). Then the same three at the rods'
own positions, the signal-free disc means taken from the scans of the phantom without its
rods (the observer's signal-absent class since session 32): contrast there minus the
contrast above is what the background positions add to the rods' apparent contrast.

Run::

    python benchmarks/bench_lcd_signal_noise.py MODEL_DIR [--seeds 1,2] [--lcd 16]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_stage2_condition import DOSES, _Detectability, unet_trainer  # the script next to this one (isort: skip)
from turndiff.benchmark.data import make_dev_data
from turndiff.pipeline import TurnDiffPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seeds", default="1,2", help="U-Net training seeds (1: the saved U-Net)")
    ap.add_argument("--lcd", type=int, default=16, help="LCD noise realisations (validation seeds)")
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    det = _Detectability(pipe, data, args.lcd)
    base = pipe.stage2
    lcd = det.lcd
    yy, xx = np.mgrid[: lcd.hu.shape[0], : lcd.hu.shape[1]]
    water = np.abs(lcd.hu) < 1
    radii = sorted({i.radius for i in lcd.inserts})

    def disc_means(x, centres, r):
        return np.stack([x[:, np.hypot(yy - c[0], xx - c[1]) <= r].mean(1) for c in centres])
    train = None
    print("| U-Net seed | image | pixel noise (HU) | " + " | ".join(
        f"rod {r * lcd.pixel_spacing * 2:.0f} mm: contrast / disc-mean noise / fixed pattern (HU)" for r in radii)
        + " |\n|---|---|---|" + "---|" * len(radii))
    for seed in (int(v) for v in args.seeds.split(",")):
        if seed != 1 and train is None:
            train = unet_trainer(pipe, data.train_sinogram, base.config)
        pipe.stage2 = base if seed == 1 else train(seed)
        out, out_free = det.lcd_outputs()
        for name, imgs, imgs_free in (("x~0", out.x_diffusion, out_free.x_diffusion),
                                      ("TurnDiff", out.image_hu, out_free.image_hu)):
            for where in ("background positions", "rod positions, scans without rods"):
                cells = []
                for r in radii:
                    centres = [i.centre for i in lcd.inserts if i.radius == r]
                    rods = disc_means(imgs, centres, r)  # [positions, realisations]
                    free = (disc_means(imgs, lcd.background, r) if where.startswith("b")
                            else disc_means(imgs_free, centres, r))
                    noise = float(np.std(free - free.mean(1, keepdims=True), ddof=1))
                    cells.append(f"{rods.mean() - free.mean():.2f} / {noise:.2f} / {np.std(free.mean(1), ddof=1):.2f}")
                print(f"| {seed} | {name}, {where} | {np.mean(imgs.std(0, ddof=1)[water]):.2f} | " + " | ".join(cells)
                      + " |", flush=True)
    pipe.stage2 = base


if __name__ == "__main__":
    main()
