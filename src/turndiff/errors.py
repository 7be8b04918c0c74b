"""Exceptions that the CLI turns into one-line errors (no traceback)."""

from __future__ import annotations

__all__ = ["TurnDiffError", "InputError"]


class TurnDiffError(Exception):
    """Base class for expected, user-facing failures."""


class InputError(TurnDiffError, ValueError):
    """Bad input data: unreadable file, wrong shape, NaN, geometry mismatch, ..."""
