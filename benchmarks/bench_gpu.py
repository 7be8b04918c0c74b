"""The GPU path, measured (issue 16, item 3; issue 20's torch timings): one script for one
lease of a GPU machine, every step guarded so that a failure in one leaves the others.

Run::

    python benchmarks/bench_gpu.py --out DIR [--device cuda] [--size 512] [--quick]

Steps (each prints its numbers as it ends; ``DIR/gpu.json`` gets them all):

1. projectors: ``bench_projectors.py`` on the GPU (torch backend, 1 slice and a batch) and
   on the CPU with every core (numba, single and batched), each in its own process;
2. the torch backend's FBP on the GPU against the numba FBP of the same noisy sinogram
   (HU differences), and both against the phantom;
3. stage 1 with the ``paper`` config: seconds per training step (the difference of a
   long and a short run, so set-up cancels), in float32 and in bf16 autocast;
4. stage-1 inference precision: the same weights in strict float32, TF32 and bf16,
   the HU difference after FBP set against the error x0 has anyway, and the time of each;
5. stage 2 with the ``paper`` config: seconds per autoencoder and per U-Net step
   (differences of runs, as in 3), and the projected ``fit --preset paper`` time;
6. ``turndiff reconstruct --device cuda`` of the paper-architecture model on a short and
   a long study (its own process each): seconds per slice and the start-up;
7. ``fit --preset tiny`` and ``reconstruct`` through the CLI on the GPU, the result
   set against ``reconstruct --device cpu`` of the same model.

The models of 3-6 are trained for a few hundred steps only: their *times* are the
``paper`` architecture's, their images are not the paper preset's quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS: dict = {}
JSON_OUT: list[Path] = []  # where RESULTS is written after every step, so a killed run keeps its numbers


def _step(name: str):
    def wrap(fn):
        def run(*a, **k):
            t = time.perf_counter()
            print(f"\n=== {name}", flush=True)
            try:
                out = fn(*a, **k)
                RESULTS[name] = out
                print(json.dumps(out, indent=1, default=float), flush=True)
                return out
            except Exception as e:  # one failed step must not lose the others' numbers
                traceback.print_exc()
                RESULTS[name] = {"error": f"{type(e).__name__}: {e}"}
                return None
            finally:
                print(f"--- {name}: {time.perf_counter() - t:.1f} s", flush=True)
                for path in JSON_OUT:
                    path.write_text(json.dumps(RESULTS, indent=1, default=str))
        return run
    return wrap


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _turndiff(*args: str, env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "turndiff", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"turndiff {' '.join(args)} failed: {r.stderr[-1500:]}")
    return time.perf_counter() - t


@_step("env")
def env(args) -> dict:
    import numba
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "numba": numba.__version__,
            "numpy": np.__version__, "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@_step("projectors")
def projectors(args) -> dict:
    out = {}
    runs = [("gpu", ["--device", args.device]), ("cpu_all_cores", ["--device", "cpu"])]
    for name, extra in runs:
        if name == "gpu" and args.device == "cpu":
            continue
        js = Path(args.out) / f"proj_{name}.json"
        r = subprocess.run([sys.executable, str(HERE / "bench_projectors.py"), "--size", str(args.size), "--no-cli",
                            "--repeats", "3", "--batch", str(args.batch), "--json", str(js), *extra], capture_output=True, text=True)
        print(r.stdout[-3000:], r.stderr[-1500:], flush=True)
        out[name] = json.loads(js.read_text()) if js.is_file() else {"error": r.stderr[-300:]}
    return out


def _study(args, n: int) -> Path:
    path = Path(args.out) / f"study{n}.h5"
    if not path.is_file():
        _turndiff("simulate", f"phantom:{n}", "--size", str(args.size), "--out", str(path), "--seed", "1")
    return path


def _load(path: Path):
    import h5py

    from turndiff.physics import geometry_from_json

    with h5py.File(path) as f:
        return f["sinogram"][:], f["reference_hu"][:], geometry_from_json(f.attrs["geometry"]), float(f.attrs["photons"])


def _body_rmse(a: np.ndarray, b: np.ndarray, ref: np.ndarray) -> float:
    mask = ref > -500
    return float(np.sqrt(np.mean((a - b)[mask] ** 2)))


@_step("fbp_gpu_vs_numba")
def fbp_accuracy(args) -> dict:
    import torch

    from turndiff.physics import CTProjector
    from turndiff.pipeline import fbp_hu_on

    t = time.perf_counter()
    y, ref, g, _ = _load(_study(args, args.slices))
    sim = time.perf_counter() - t
    A = CTProjector(g)
    cpu = A.fbp_hu(y[:4])
    gpu = fbp_hu_on(A, y[:4], torch.device(args.device))
    # The torch FP (Joseph's method, as numba's) on the device against numba, on the phantoms.
    from turndiff.physics.units import hu_to_mu

    mu = hu_to_mu(ref[:4]).astype(np.float32)
    fp_cpu = A.forward(mu)
    fp_gpu = CTProjector(g, backend="torch").forward(torch.from_numpy(mu).to(args.device)).cpu().numpy()
    return {"fp_gpu_vs_numba_relative": float(np.linalg.norm(fp_gpu - fp_cpu) / np.linalg.norm(fp_cpu)),
            "simulate_seconds": sim, "rmse_gpu_vs_numba_hu": _body_rmse(gpu, cpu, ref[:4]),
            "median_abs_gpu_vs_numba_hu": float(np.median(np.abs(gpu - cpu)[ref[:4] > -500])),
            "rmse_numba_vs_phantom_hu": _body_rmse(cpu, ref[:4], ref[:4]),
            "rmse_gpu_vs_phantom_hu": _body_rmse(gpu, ref[:4], ref[:4])}


def _stage1(y, photons, device, steps, precision, iters_total):
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    cfg = Stage1Config.preset("paper", precision=precision)
    _sync(device)
    t = time.perf_counter()
    model = train_projection_denoiser(y, photons=photons, config=cfg, device=device, progress=False, max_steps=steps)
    _sync(device)
    return time.perf_counter() - t, model, cfg.train.iters


@_step("stage1_paper_train")
def stage1_train(args, state) -> dict:
    y, ref, g, photons = _load(_study(args, args.slices))
    y = y[: args.train]
    out = {"warm_up_seconds": _stage1(y, photons, args.device, 5, "float32", None)[0]}  # CUDA and cuDNN set-up
    for precision in ("float32", "bf16"):
        short, _, _ = _stage1(y, photons, args.device, args.short, precision, None)
        long_, model, iters = _stage1(y, photons, args.device, args.long, precision, None)
        per = (long_ - short) / (args.long - args.short)
        out[precision] = {"seconds_short": short, "seconds_long": long_, "seconds_per_step": per,
                          "paper_iters": iters, "projected_seconds": short + per * iters}
        if precision == "float32":
            state["stage1"] = model
    return out


@_step("stage1_precision")
def stage1_precision(args, state) -> dict:
    import torch

    from turndiff.physics import CTProjector
    from turndiff.pipeline import fbp_hu_on

    y, ref, g, _ = _load(_study(args, args.slices))
    y, ref = y[args.train : args.train + 8], ref[args.train : args.train + 8]
    model, dev = state["stage1"], torch.device(args.device)
    A = CTProjector(g)
    images, seconds = {}, {}
    for name, precision, tf32 in (("strict_fp32", "float32", False), ("tf32", "float32", True), ("bf16", "bf16", True)):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        model.denoise(y[:1], device=dev, precision=precision)  # warm-up (cuDNN autotune)
        _sync(args.device)
        t = time.perf_counter()
        y0 = model.denoise(y, device=dev, precision=precision)
        _sync(args.device)
        seconds[name] = (time.perf_counter() - t) / len(y)
        images[name] = fbp_hu_on(A, y0, dev)
    torch.backends.cudnn.allow_tf32 = True
    base = images["strict_fp32"]
    return {"x0_rmse_vs_phantom_hu": _body_rmse(base, ref, ref),
            "tf32_vs_fp32_rmse_hu": _body_rmse(images["tf32"], base, ref),
            "bf16_vs_fp32_rmse_hu": _body_rmse(images["bf16"], base, ref),
            "seconds_per_slice_4_flips": seconds}


@_step("stage2_paper_train")
def stage2_train(args, state) -> dict:
    import torch

    from turndiff.physics import CTProjector
    from turndiff.pipeline import fbp_hu_on
    from turndiff.stage2 import Stage2Config, train_stage2
    from turndiff.stage2.train import recorrupted_images

    y, ref, g, photons = _load(_study(args, args.slices))
    y = y[: args.train]
    dev = torch.device(args.device)
    A, s1 = CTProjector(g), state["stage1"]
    t = time.perf_counter()
    y0 = s1.denoise(y, device=dev)
    base = Stage2Config.preset("paper")
    rec = None
    if base.unet.r2r_weight > 0:
        rec = recorrupted_images(y, float(s1.photons), lambda s: s1.denoise(s, device=dev),
                                 lambda s: fbp_hu_on(A, s, dev), recorrupt=base.unet.r2r_recorrupt,
                                 copies=base.unet.r2r_copies, seed=0, denoised=y0)
    x_ld, x0 = fbp_hu_on(A, y, dev), fbp_hu_on(A, y0, dev)
    _sync(args.device)
    teacher = time.perf_counter() - t
    times = {}
    for ae, un in ((args.short, args.short), (args.long, args.short), (args.short, args.long)):
        cfg = base.replace(autoencoder={"train": {"iters": ae}}, unet={"train": {"iters": un}})
        _sync(args.device)
        t = time.perf_counter()
        model = train_stage2(x_ld, x0, cfg, recorrupted=rec, device=dev, seed=0, progress=False)
        _sync(args.device)
        times[(ae, un)] = time.perf_counter() - t
    state["stage2"] = model
    base_t = times[(args.short, args.short)]
    per_ae = (times[(args.long, args.short)] - base_t) / (args.long - args.short)
    per_unet = (times[(args.short, args.long)] - base_t) / (args.long - args.short)
    ae_iters, unet_iters = base.autoencoder.train.iters, base.unet.train.iters
    s1 = RESULTS.get("stage1_paper_train", {}).get("float32", {})
    projected = (s1.get("projected_seconds", float("nan")) + teacher + base_t
                 + per_ae * (ae_iters - args.short) + per_unet * (unet_iters - args.short))
    return {"teacher_seconds": teacher, "seconds_short_short": base_t, "ae_seconds_per_step": per_ae,
            "unet_seconds_per_step": per_unet, "ae_iters": ae_iters, "unet_iters": unet_iters,
            "train_slices": len(y), "projected_fit_paper_seconds": projected}


@_step("reconstruct_paper_arch")
def reconstruct_timing(args, state) -> dict:
    import h5py

    from turndiff.pipeline import TurnDiffPipeline, model_index

    path = _study(args, args.slices)
    y, ref, g, photons = _load(path)
    model = Path(args.out) / "paper_model"
    info = model_index(geometry=g, stage1=state["stage1"], sinogram=y[: args.train], preset="paper", seed=0,
                       train_seconds={})
    TurnDiffPipeline(state["stage1"], state["stage2"], info, device="cpu").save_pretrained(model)
    out = {}
    for n in (args.recon_short, args.recon_long):
        part = Path(args.out) / f"part{n}.h5"
        with h5py.File(path) as f, h5py.File(part, "w") as p:
            p["sinogram"] = f["sinogram"][:n]
            for k, v in f.attrs.items():
                p.attrs[k] = v
        out[n] = _turndiff("reconstruct", str(model), str(part), "--out", str(Path(args.out) / f"recon{n}.h5"),
                           "--device", args.device, "--overwrite")
    per = (out[args.recon_long] - out[args.recon_short]) / (args.recon_long - args.recon_short)
    return {"wall_seconds": out, "seconds_per_slice": per,
            "start_up_seconds": out[args.recon_short] - per * args.recon_short}


@_step("cli_tiny_gpu_vs_cpu")
def cli_tiny(args) -> dict:
    import h5py

    d = Path(args.out)
    scan = d / "tiny.h5"
    t = {"simulate": _turndiff("simulate", "phantom:4", "--size", "64", "--out", str(scan))}
    t["fit_tiny"] = _turndiff("fit", str(scan), "--out", str(d / "tiny_model"), "--preset", "tiny",
                              "--device", args.device)
    for dev in dict.fromkeys((args.device, "cpu")):
        t[f"reconstruct_{dev}"] = _turndiff("reconstruct", str(d / "tiny_model"), str(scan), "--out",
                                            str(d / f"tiny_{dev}.h5"), "--device", dev)
    with h5py.File(d / f"tiny_{args.device}.h5") as a, h5py.File(d / "tiny_cpu.h5") as b, h5py.File(scan) as s:
        x, c, ref = a["image_hu"][:], b["image_hu"][:], s["reference_hu"][:]
    return {"seconds": t, "rmse_device_vs_cpu_hu": _body_rmse(x, c, ref),
            "rmse_device_vs_phantom_hu": _body_rmse(x, ref, ref), "rmse_cpu_vs_phantom_hu": _body_rmse(c, ref, ref)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=36, help="slices of the simulated study")
    ap.add_argument("--batch", type=int, default=32, help="slices per batch of the projector timings")
    ap.add_argument("--train", type=int, default=16, help="training slices")
    ap.add_argument("--short", type=int, default=20, help="steps of the short training runs")
    ap.add_argument("--long", type=int, default=220, help="steps of the long training runs")
    ap.add_argument("--recon-short", type=int, default=4)
    ap.add_argument("--recon-long", type=int, default=36,
                    help="slices of the long reconstruct run (4 + one GPU batch of 32 by default)")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: projectors, train (and all after it), "
                    "precision, cli")
    ap.add_argument("--json", action="append", default=[], help="also write the results here (after every step)")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    JSON_OUT.extend([Path(args.out) / "gpu.json", *map(Path, args.json)])
    state: dict = {}
    env(args)
    if "projectors" not in skip:
        projectors(args)
    fbp_accuracy(args)
    if "train" not in skip:  # without it, nothing after it runs (they need its model)
        stage1_train(args, state)
    if "stage1" in state:
        if "precision" not in skip:
            stage1_precision(args, state)
        stage2_train(args, state)
    if "stage2" in state:
        reconstruct_timing(args, state)
    if "cli" not in skip:
        cli_tiny(args)
    print("\n=== summary")
    print(json.dumps(RESULTS, indent=1, default=str)[-6000:])


if __name__ == "__main__":
    main()
