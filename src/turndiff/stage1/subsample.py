"""Contextual random sub-sampling (CSSS, fig. 3 of the paper) and its view-pair variant.

The sinogram ``[B, C, V, D]`` is cut into cells over (view, detector): 2x2 cells in the
paper's form (``cell=(2, 2)``), or 2x1 cells, two consecutive views of one detector bin
(``cell=(2, 1)``, "view pairs"). For every cell and every training step a random
permutation of the cell's positions is drawn; the first ``k`` positions feed the
sub-sinograms ``s1, s2, ..., sk``. Each sub-sinogram is ``[B, C, V/2, D/cd]``, every cell
gives it exactly one sample, and within a cell the sub-sinograms take distinct samples,
so their noise is independent (Poisson noise is independent across bins and views).

Why view pairs: Neighbor2Neighbor needs the content of ``s1`` and ``s2`` to differ by
much less than the noise. In a sinogram it does not along the detector: the clean
difference of bin neighbours (and diagonals) is 2-17 times the noise energy at 25% dose
on the benchmark phantoms, against 0.3-2.3 for view neighbours (docs/METHOD.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["draw_cell_positions", "subsample", "pad_even", "CELLS"]

#: Cell shapes (views, bins) by name.
CELLS = {"cell": (2, 2), "views": (2, 1)}


def pad_even(y: torch.Tensor) -> torch.Tensor:
    """Replicate-pad the last two axes to even lengths (2x2 cells need them)."""
    pv, pd = y.shape[-2] % 2, y.shape[-1] % 2
    if pv or pd:
        y = F.pad(y, (0, pd, 0, pv), mode="replicate")
    return y


def draw_cell_positions(
    shape: tuple[int, ...],
    k: int = 2,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    cell: tuple[int, int] = (2, 2),
) -> torch.Tensor:
    """Random distinct positions per cell: ``long [k, B, V/cv, D/cd]``, values in ``0..cv*cd-1``.

    ``shape`` is the ``[B, C, V, D]`` of the sinogram (V, D multiples of the cell).
    """
    cv, cd = cell
    n = cv * cd
    if not 2 <= k <= n:
        raise ValueError(f"k must be 2..{n} sub-sinograms for a {cv}x{cd} cell, got {k}")
    b, _, v, d = shape
    if v % cv or d % cd:
        raise ValueError(f"sub-sampling needs views and bins divisible by {cv} x {cd}, got {v} x {d}")
    keys = torch.rand((b, v // cv, d // cd, n), generator=generator, device="cpu")
    perm = keys.argsort(-1)[..., :k]  # a random permutation's first k entries: distinct
    return perm.permute(3, 0, 1, 2).contiguous().to(device)


def subsample(y: torch.Tensor, positions: torch.Tensor, cell: tuple[int, int] = (2, 2)) -> list[torch.Tensor]:
    """Gather the sub-sinograms of ``y`` ``[B, C, V, D]`` at ``positions`` ``[k, B, V/cv, D/cd]``.

    Position ``p`` in a cell is (view offset ``p // cd``, bin offset ``p % cd``).
    """
    cv, cd = cell
    b, c, v, d = y.shape
    n = cv * cd
    cells = y.reshape(b, c, v // cv, cv, d // cd, cd).permute(0, 1, 2, 4, 3, 5).reshape(b, c, v // cv, d // cd, n)
    out = []
    for pos in positions:
        idx = pos[:, None, :, :, None].expand(b, c, v // cv, d // cd, 1)
        out.append(torch.gather(cells, -1, idx)[..., 0])
    return out
