"""Tests of the shared training loop and of the safetensors/JSON checkpoint helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from turndiff.checkpoint import (
    CheckpointError,
    load_pretrained_config,
    load_state,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    save_pretrained,
)
from turndiff.errors import InputError, TurnDiffError
from turndiff.training import (
    TrainConfig,
    autocast_enabled,
    cpu_bf16_native,
    latest_checkpoint,
    lr_factor,
    resolve_device,
    train,
)


class TinyObjective(torch.nn.Module):
    """Denoise random patterns; uses global RNG (noise, dropout) and numpy on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Dropout(0.1),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        )
        self.frozen = torch.nn.Conv2d(1, 1, 1)
        self.frozen.requires_grad_(False)

    def forward(self, batch: torch.Tensor):
        noise = 0.1 * torch.randn_like(batch) + float(np.random.uniform(-1e-3, 1e-3))
        loss = (self.net(batch + noise) - self.frozen(batch)).square().mean()
        return loss, {"noise_std": noise.std()}


def batches(step: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(2, 1, 8, 8, generator=generator)


def make(seed: int = 0) -> TinyObjective:
    torch.manual_seed(seed)
    return TinyObjective()


CFG = TrainConfig(iters=20, lr=3e-3, warmup=3, ema_decay=0.9, checkpoint_every=5, seed=7, log_every=4)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(iters=110, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    values = [lr_factor(s, cfg) for s in range(10, 110)]
    assert all(x >= y for x, y in zip(values, values[1:]))


@pytest.mark.parametrize(
    "changes",
    [{"iters": 0}, {"lr": -1.0}, {"ema_decay": 1.0}, {"grad_clip": 0.0}, {"log_every": 0}, {"warmup": -1}],
)
def test_config_rejects_bad_values(changes: dict) -> None:
    with pytest.raises(InputError):
        TrainConfig(**changes)


def test_config_json_round_trip() -> None:
    cfg = CFG.replace(grad_clip=None)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(InputError):
        TrainConfig.from_dict({"itres": 3})


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError):
            resolve_device("cuda")


def test_training_reduces_the_loss_and_freezes_frozen_parts() -> None:
    obj = make()
    frozen_before = obj.frozen.weight.clone()
    res = train(obj, batches, CFG.replace(iters=150, lr=1e-2, ema_decay=None), progress=False)
    assert res.steps == 150 and res.completed and len(res.losses) == 150
    assert np.mean(res.losses[-20:]) < 0.5 * np.mean(res.losses[:5])
    assert len(res.logs["noise_std"]) == 150
    assert torch.equal(obj.frozen.weight, frozen_before)
    assert not obj.training


def test_amp_cpu_runs_the_forward_in_bf16_and_keeps_float32_weights() -> None:
    """``amp_cpu`` autocasts the forward to bf16 on a CPU with native bf16 (float32
    elsewhere), never by default, while weights, gradients and the loss stay float32; the
    GPU's ``amp`` alone does not change the CPU's arithmetic."""
    assert not autocast_enabled(TrainConfig(), "cpu")  # amp=True by default: CUDA only
    assert autocast_enabled(TrainConfig(amp_cpu=True), "cpu") == cpu_bf16_native()
    assert autocast_enabled(TrainConfig(amp=True), "cuda") and not autocast_enabled(TrainConfig(amp=False), "cuda")
    dtypes: dict[bool, set] = {}
    for amp_cpu in (False, True):
        obj, seen = make(), set()
        obj.net[0].register_forward_hook(lambda m, i, out: seen.add(out.dtype))
        res = train(obj, batches, CFG.replace(iters=30, amp_cpu=amp_cpu, checkpoint_every=0), progress=False)
        assert all(p.dtype == torch.float32 for p in obj.parameters())
        assert np.isfinite(res.losses).all() and np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
        dtypes[amp_cpu] = seen
    assert dtypes[False] == {torch.float32}
    assert dtypes[True] == ({torch.bfloat16} if cpu_bf16_native() else {torch.float32})


def test_cpu_bf16_native_reads_the_cpu_flags(monkeypatch) -> None:
    """oneDNN's check alone also passes AVX-512 CPUs that only emulate bf16 (no faster than
    float32); the CPU's own flags decide."""
    import turndiff.training as training

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("oneDNN has no bf16 on this CPU")

    class FakePath:
        text = ""

        def __init__(self, *_):
            pass

        def read_text(self):
            return FakePath.text

    monkeypatch.setattr(training, "Path", FakePath)
    for flags, expected in (("fpu avx512f avx512bw avx512vl avx512dq", False),
                            ("fpu avx512f avx512bw avx512_bf16", True), ("fpu amx_tile amx_bf16", True)):
        FakePath.text = f"processor\t: 0\nflags\t\t: {flags}\n"
        assert training.cpu_bf16_native.__wrapped__() is expected, flags


def test_ema_weights_are_returned() -> None:
    """The returned weights are the exponential moving average of the trajectory, with the
    decay warm-up ``min(decay, (1 + k) / (10 + k))``, recomputed here from every iterate."""
    smoothed = make()
    start = smoothed.net[0].weight.detach().clone()
    iterates: list[torch.Tensor] = []
    res = train(smoothed, batches, CFG, progress=False,
                callback=lambda step, loss: iterates.append(smoothed.net[0].weight.detach().clone()))
    assert res.ema_applied and len(iterates) == CFG.iters
    expected = start.clone()
    for k, w in enumerate(iterates):
        d = min(CFG.ema_decay, (1 + k) / (10 + k))
        expected = d * expected + (1 - d) * w
    assert torch.allclose(smoothed.net[0].weight, expected, atol=1e-6)
    assert not torch.allclose(smoothed.net[0].weight, iterates[-1], atol=1e-4)  # not the last iterate


def test_interrupted_run_resumes_bit_exact(tmp_path) -> None:
    reference = make()
    ref = train(reference, batches, CFG, run_dir=tmp_path / "ref", progress=False)

    class Crash(RuntimeError):
        pass

    def crash_at_13(step: int, loss: float) -> None:
        if step == 13:
            raise Crash

    run = tmp_path / "run"
    with pytest.raises(Crash):
        train(make(), batches, CFG, run_dir=run, progress=False, callback=crash_at_13)
    assert latest_checkpoint(run).name == "step_00000010"
    resumed = make(seed=123)  # the checkpoint, not the initialisation, must decide
    res = train(resumed, batches, CFG, run_dir=run, progress=False)
    assert res.start_step == 10 and res.steps == 20
    _assert_same_state(reference, resumed)
    assert res.losses == ref.losses
    assert res.logs["noise_std"] == ref.logs["noise_std"]


def test_max_steps_then_continue_is_bit_exact(tmp_path) -> None:
    reference = make()
    train(reference, batches, CFG.replace(checkpoint_every=0), progress=False)
    first = make()
    res1 = train(first, batches, CFG.replace(checkpoint_every=0), run_dir=tmp_path, progress=False, max_steps=7)
    assert res1.steps == 7 and not res1.completed and not res1.ema_applied
    second = make(seed=5)
    res2 = train(second, batches, CFG.replace(checkpoint_every=0), run_dir=tmp_path, progress=False)
    assert res2.start_step == 7
    _assert_same_state(reference, second)
    # A finished run is loaded, not trained again.
    third = make(seed=9)
    res3 = train(third, batches, CFG.replace(checkpoint_every=0), run_dir=tmp_path, progress=False)
    assert res3.start_step == 20 and res3.steps == 20 and res3.ema_applied
    _assert_same_state(reference, third)


def test_checkpoints_are_safetensors_and_json_only(tmp_path) -> None:
    train(make(), batches, CFG.replace(keep_checkpoints=2), run_dir=tmp_path, progress=False)
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["step_00000015", "step_00000020"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.suffix in {".safetensors", ".json"} for p in files)
    state = json.loads((tmp_path / "checkpoints" / "step_00000020" / "state.json").read_text())
    assert state["step"] == 20 and state["config"]["seed"] == 7


def test_resume_with_different_config_is_refused(tmp_path) -> None:
    train(make(), batches, CFG, run_dir=tmp_path, progress=False, max_steps=5)
    with pytest.raises(CheckpointError, match="lr"):
        train(make(), batches, CFG.replace(lr=1e-2), run_dir=tmp_path, progress=False)
    # resume=False starts over
    res = train(make(), batches, CFG.replace(lr=1e-2), run_dir=tmp_path, progress=False, resume=False)
    assert res.start_step == 0


def test_global_rng_state_is_left_alone() -> None:
    obj = make()
    torch.manual_seed(1)
    np.random.seed(1)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(1)
    np.random.seed(1)
    train(obj, batches, CFG.replace(iters=3), progress=False)
    assert torch.equal(torch.rand(3), expected_t)
    assert np.array_equal(np.random.rand(3), expected_n)


def test_callback_can_stop_early(tmp_path) -> None:
    res = train(make(), batches, CFG, run_dir=tmp_path, progress=False, callback=lambda s, l: s == 6)
    assert res.steps == 6 and latest_checkpoint(tmp_path).name == "step_00000006"


def test_nan_loss_is_reported() -> None:
    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return self.w * float("nan")

    with pytest.raises(TurnDiffError, match="nan"):
        train(Bad(), batches, CFG.replace(grad_clip=None), progress=False)


def test_objective_without_trainable_parameters_is_rejected() -> None:
    obj = make()
    obj.requires_grad_(False)
    with pytest.raises(InputError):
        train(obj, batches, CFG, progress=False)


# ------------------------------------------------------------------------ checkpoint.py


def test_save_pretrained_round_trip(tmp_path) -> None:
    net = make().net
    save_pretrained(tmp_path / "denoiser", {"channels": 4, "tuple": [1, 2]}, net)
    meta = json.loads((tmp_path / "denoiser" / "config.json").read_text())
    assert meta["class"] == "torch.nn.modules.container.Sequential"
    assert meta["config"] == {"channels": 4, "tuple": [1, 2]} and "turndiff_version" in meta
    assert load_pretrained_config(tmp_path / "denoiser", expected_class="Sequential")["channels"] == 4
    other = make(seed=3).net
    load_state(other, tmp_path / "denoiser")
    _assert_same_state(net, other)


def test_save_pretrained_errors_are_explicit(tmp_path) -> None:
    net = make().net
    with pytest.raises(CheckpointError, match="missing model folder"):
        load_pretrained_config(tmp_path / "denoiser")
    save_pretrained(tmp_path / "denoiser", {}, net)
    with pytest.raises(CheckpointError, match="expected"):
        load_pretrained_config(tmp_path / "denoiser", expected_class="UNet")
    wider = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                torch.nn.Conv2d(8, 1, 3, padding=1))
    with pytest.raises(CheckpointError, match="shape"):
        load_state(wider, tmp_path / "denoiser")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3)), tmp_path / "denoiser")
    with pytest.raises(CheckpointError, match="missing 2"):
        load_state(torch.nn.Sequential(*net, torch.nn.Conv2d(1, 1, 1)), tmp_path / "denoiser")
    (tmp_path / "denoiser" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing file"):
        load_pretrained_config(tmp_path / "denoiser")


def test_optimizer_state_flattening_round_trip() -> None:
    net = make().net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.rand(1, 1, 8, 8)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt)
    assert all(torch.is_tensor(v) for v in tensors.values())
    json.dumps(meta)
    rebuilt = optimizer_state_from_tensors(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(make(seed=2).net.parameters(), lr=1e-3)
    opt2.load_state_dict(rebuilt)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])
    assert math.isclose(opt2.param_groups[0]["lr"], 1e-3)
