"""Contextual random sub-sampling (CSSS, fig. 3 of the paper).

The sinogram ``[B, C, V, D]`` is cut into 2x2 cells over (view, detector). For every cell
and every training step a random permutation of the cell's four positions is drawn; the
first ``k`` positions feed the sub-sinograms ``s1, s2, ..., sk`` (``k <= 4``). Each
sub-sinogram is half size, ``[B, C, V/2, D/2]``, every cell gives it exactly one sample,
and within a cell the sub-sinograms take distinct samples, so their noise is independent
(Poisson noise is independent across detector bins and views) while their content
differs only by a sub-pixel shift of the anatomy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["draw_cell_positions", "subsample", "pad_even"]


def pad_even(y: torch.Tensor) -> torch.Tensor:
    """Replicate-pad the last two axes to even lengths (2x2 cells need them)."""
    pv, pd = y.shape[-2] % 2, y.shape[-1] % 2
    if pv or pd:
        y = F.pad(y, (0, pd, 0, pv), mode="replicate")
    return y


def draw_cell_positions(
    shape: tuple[int, ...], k: int = 2, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Random distinct positions (0..3) per cell: ``long [k, B, V/2, D/2]``.

    ``shape`` is the even-sized ``[B, C, V, D]`` of the sinogram.
    """
    if not 2 <= k <= 4:
        raise ValueError(f"k must be 2, 3 or 4 sub-sinograms, got {k}")
    b, _, v, d = shape
    if v % 2 or d % 2:
        raise ValueError(f"sub-sampling needs even views and bins, got {v} x {d}")
    keys = torch.rand((b, v // 2, d // 2, 4), generator=generator, device="cpu")
    perm = keys.argsort(-1)[..., :k]  # a random permutation's first k entries: distinct
    return perm.permute(3, 0, 1, 2).contiguous().to(device)


def subsample(y: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
    """Gather the sub-sinograms of ``y`` ``[B, C, V, D]`` at ``positions`` ``[k, B, V/2, D/2]``.

    Position ``p`` in a cell is (view offset ``p // 2``, bin offset ``p % 2``).
    """
    b, c, v, d = y.shape
    cells = y.reshape(b, c, v // 2, 2, d // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, v // 2, d // 2, 4)
    out = []
    for pos in positions:
        idx = pos[:, None, :, :, None].expand(b, c, v // 2, d // 2, 1)
        out.append(torch.gather(cells, -1, idx)[..., 0])
    return out
