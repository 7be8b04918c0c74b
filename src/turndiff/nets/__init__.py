"""Shared network builders: a residual U-Net denoiser (MONAI BasicUNet inside)."""

from .denoiser import ResidualDenoiser, build_denoiser

__all__ = ["ResidualDenoiser", "build_denoiser"]
