"""Where one stage-1 inference pass spends its time, on the CPU (docs/BENCHMARKS.md).

Run::

    python benchmarks/bench_stage1_forward.py STAGE1_DIR [--shape 720x368] [--repeats 8]

STAGE1_DIR: a stage-1 folder (e.g. ``BENCH_OUT/runs/turndiff/model/projection_denoiser``).
Prints, for one forward of its network on a random sinogram of ``--shape`` [views x detector]:
the eager time (min / median of ``--repeats``); the time per slice at batch 1, 2 and 4; the
time on one thread; the share of self CPU time by operator (``torch.profiler``); and a frozen
TorchScript module's time, its one-off trace + freeze + first call, and its largest
difference from the eager output; then one training step of the ``fast`` preset (its batch
and crop, the folder's network) in float32 and under bf16 autocast (``amp_cpu``), interleaved.
Timings only: no data, no reference.
"""

from __future__ import annotations

import argparse
import time

import torch

from turndiff.stage1.model import ProjectionDenoiser, Stage1Config, _make_objective
from turndiff.training import cpu_bf16_native


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up: allocator and mkldnn primitive caches
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage1", help="stage-1 folder")
    ap.add_argument("--shape", default="720x368", help="views x detector")
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    views, bins = (int(v) for v in args.shape.split("x"))
    net = ProjectionDenoiser.from_pretrained(args.stage1, device="cpu").network.eval()
    x = torch.randn(1, 1, views, bins, generator=torch.Generator().manual_seed(0)) * 0.3 + 1.0
    threads = torch.get_num_threads()
    with torch.inference_mode():
        lo, med = _time(lambda: net(x), args.repeats)
        print(f"eager forward {views}x{bins}, {threads} threads: min {lo:.3f} s, median {med:.3f} s")
        for b in (1, 2, 4):
            xb = x.expand(b, -1, -1, -1).contiguous()
            lo, _ = _time(lambda: net(xb), max(2, args.repeats // 2))
            print(f"batch {b}: {lo / b:.3f} s per slice (min)")
        torch.set_num_threads(1)
        lo, _ = _time(lambda: net(x), max(2, args.repeats // 2))
        torch.set_num_threads(threads)
        print(f"one thread: min {lo:.3f} s")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                net(x)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
        print("self CPU time by operator: " + ", ".join(
            f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in top))
    with torch.no_grad():
        t0 = time.perf_counter()
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x).eval()))
        frozen(x)
        setup = time.perf_counter() - t0
        lo, med = _time(lambda: frozen(x), args.repeats)
        diff = (frozen(x) - net(x)).abs().max().item()
    print(f"TorchScript (trace, freeze, optimize_for_inference): setup + first call {setup:.1f} s, "
          f"min {lo:.3f} s, median {med:.3f} s, max |difference| from eager {diff:.2e}")
    _train_steps(net, args.repeats)


def _train_steps(net: torch.nn.Module, repeats: int) -> None:
    """One optimiser step of the ``fast`` preset's objective, float32 against bf16 autocast."""
    cfg = Stage1Config.preset("fast")
    net.train()
    objective = _make_objective(net, cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(1)
    batch = {"sinogram": torch.rand(cfg.batch_size, 1, *cfg.crop, generator=g) * 3,
             "photons": torch.full((cfg.batch_size,), 2.5e5), "step": 100, "generator": g}

    def step(amp: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = objective(batch)
        loss = loss[0] if isinstance(loss, tuple) else loss
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()

    times: dict[bool, list[float]] = {False: [], True: []}
    for amp in (False, True):
        step(amp)  # warm-up of each arithmetic's kernels
    for _ in range(repeats):
        for amp in (False, True):
            t0 = time.perf_counter()
            step(amp)
            times[amp].append(time.perf_counter() - t0)
    fp, bf = (sorted(times[a]) for a in (False, True))
    print(f"training step (batch {cfg.batch_size} x {cfg.crop[0]} x {cfg.crop[1]}): float32 min {fp[0]:.3f} s, "
          f"median {fp[len(fp) // 2]:.3f} s; bf16 autocast min {bf[0]:.3f} s, median {bf[len(bf) // 2]:.3f} s "
          f"(native bf16: {cpu_bf16_native()})")


if __name__ == "__main__":
    main()
