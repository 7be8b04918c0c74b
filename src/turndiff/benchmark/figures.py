"""Figures in the style of the paper: methods side by side with an ROI zoom and absolute
error maps (fig. 6), dose generalisation grids (fig. 9) and line profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..windows import WINDOWS

__all__ = ["comparison_figure", "dose_grid_figure", "profile_figure", "reformat_figure", "pick_roi"]


def _window(name_or_range) -> tuple[float, float]:
    return WINDOWS[name_or_range] if isinstance(name_or_range, str) else tuple(name_or_range)


def pick_roi(reference: np.ndarray, size: int | None = None) -> tuple[int, int, int]:
    """A square ROI ``(row, col, size)`` where the reference has the most soft-tissue detail."""
    from scipy.ndimage import uniform_filter

    h, w = reference.shape
    s = size or max(16, h // 4)
    soft = (reference > -200) & (reference < 300)
    gy, gx = np.gradient(np.clip(reference, -200, 300))
    score = uniform_filter((np.hypot(gx, gy) * soft).astype(np.float64), s)
    score[: s // 2, :] = score[-s // 2 :, :] = 0
    score[:, : s // 2] = score[:, -s // 2 :] = 0
    r, c = np.unravel_index(np.argmax(score), score.shape)
    return int(max(0, r - s // 2)), int(max(0, c - s // 2)), s


def comparison_figure(
    images: Mapping[str, np.ndarray],
    reference: np.ndarray,
    out_path: str | Path,
    *,
    window: str | tuple[float, float] = "abdomen",
    roi: tuple[int, int, int] | None = None,
    error_max: float = 150.0,
    metrics: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Rows: full image (with ROI box), ROI zoom, absolute error map (HU). Columns: the
    reference then each method (``images``: name -> HU ``[H, W]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    lo, hi = _window(window)
    names = ["Reference", *images]
    arrs = [reference, *images.values()]
    r0, c0, s = roi or pick_roi(reference)
    n = len(names)
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 6.9), squeeze=False)
    for j, (name, a) in enumerate(zip(names, arrs)):
        ax = axes[0, j]
        ax.imshow(a, cmap="gray", vmin=lo, vmax=hi)
        ax.add_patch(Rectangle((c0, r0), s, s, fill=False, edgecolor="yellow", lw=1))
        label = name if not metrics or name not in metrics else f"{name}\n{metrics[name]}"
        ax.set_title(label, fontsize=8)
        axes[1, j].imshow(a[r0 : r0 + s, c0 : c0 + s], cmap="gray", vmin=lo, vmax=hi)
        if j == 0:
            axes[2, j].imshow(np.zeros_like(a), cmap="magma", vmin=0, vmax=error_max)
            axes[2, j].text(0.5, 0.5, "|error| (HU)", color="w", ha="center", va="center",
                            transform=axes[2, j].transAxes, fontsize=8)
        else:
            im = axes[2, j].imshow(np.abs(a - reference), cmap="magma", vmin=0, vmax=error_max)
    if n > 1:
        fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, label="HU")
    return _finish(fig, axes, out_path, title)


def dose_grid_figure(
    rows: Mapping[str, Mapping[str, np.ndarray]],
    reference: np.ndarray,
    out_path: str | Path,
    *,
    window: str | tuple[float, float] = "abdomen",
    title: str | None = None,
) -> Path:
    """Rows: doses; columns: methods (``rows[dose][method] -> HU [H, W]``), plus the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = _window(window)
    doses = list(rows)
    methods = list(next(iter(rows.values())))
    fig, axes = plt.subplots(len(doses), len(methods) + 1, figsize=(2.2 * (len(methods) + 1), 2.3 * len(doses)),
                             squeeze=False)
    for i, d in enumerate(doses):
        axes[i, 0].imshow(reference, cmap="gray", vmin=lo, vmax=hi)
        axes[i, 0].set_ylabel(d, fontsize=9)
        axes[0, 0].set_title("Reference", fontsize=8)
        for j, m in enumerate(methods):
            axes[i, j + 1].imshow(rows[d][m], cmap="gray", vmin=lo, vmax=hi)
            if i == 0:
                axes[0, j + 1].set_title(m, fontsize=8)
    return _finish(fig, axes, out_path, title)


def profile_figure(
    images: Mapping[str, np.ndarray], reference: np.ndarray, out_path: str | Path, *, row: int | None = None,
    cols: Sequence[int] | None = None,
) -> Path:
    """HU along one image row for the reference and each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = reference.shape[0] // 2 if row is None else row
    c = slice(None) if cols is None else slice(*cols)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(reference[r, c], "k-", lw=1.5, label="Reference")
    for name, a in images.items():
        ax.plot(a[r, c], lw=0.9, label=name)
    ax.set_ylim(-250, 350)
    ax.set_xlabel("pixel")
    ax.set_ylabel("HU")
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(f"line profile, row {r}", fontsize=9)
    return _save(fig, out_path)


def reformat_figure(
    volumes: Mapping[str, np.ndarray],
    reference: np.ndarray,
    out_path: str | Path,
    *,
    pixel_spacing: float,
    slice_spacing: float,
    window: str | tuple[float, float] = "abdomen",
    row: int | None = None,
    metrics: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Axial middle slice above a coronal reformat (the stack cut along one image row),
    for the reference volume and each method (``volumes``: name -> HU ``[N, H, W]``).

    The reformat is drawn to scale (``slice_spacing`` mm between its rows, ``pixel_spacing``
    mm between its columns), so slice-to-slice inconsistency shows as horizontal banding
    or flicker that the axial slice cannot show; a dashed line on the axial slice marks the
    row cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = _window(window)
    names = ["Reference", *volumes]
    vols = [reference, *volumes.values()]
    n_sl, h, w = reference.shape
    r = h // 2 if row is None else int(row)
    k = n_sl // 2
    aspect = slice_spacing / pixel_spacing
    ratio = n_sl * aspect / h  # height of the reformat panel relative to the axial one
    fig, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 2.4 * (1 + max(ratio, 0.05)) + 0.7), squeeze=False,
                             gridspec_kw={"height_ratios": [1, max(ratio, 0.05)]})
    for j, (name, v) in enumerate(zip(names, vols)):
        axes[0, j].imshow(v[k], cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].axhline(r, color="yellow", lw=0.8, ls="--")
        label = name if not metrics or name not in metrics else f"{name}\n{metrics[name]}"
        axes[0, j].set_title(label, fontsize=8)
        axes[1, j].imshow(v[:, r, :], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
    axes[1, 0].set_ylabel(f"coronal, {n_sl} x {slice_spacing:g} mm", fontsize=7)
    return _finish(fig, axes, out_path, title)


def _finish(fig, axes, out_path, title: str | None) -> Path:
    """Image panels without ticks, the title, and the file written."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def _save(fig, out_path) -> Path:
    import matplotlib.pyplot as plt

    from ..io import atomic_output

    p = Path(out_path)
    with atomic_output(p) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=p.suffix.lstrip(".") or "png")
    plt.close(fig)
    return p
