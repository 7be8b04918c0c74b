"""Reading and writing CT data: DICOM, NIfTI, ``.npy``, PNG and turndiff HDF5 files.

* :func:`read_volume` / :func:`write_volume`: HU image stacks ``[N, H, W]`` in every
  supported format (:class:`Volume` carries spacing, slice positions and a DICOM
  template for writing derived series).
* :func:`read_sinogram_h5` (training: the noisy ``sinogram`` and attributes only; a
  :class:`SinogramReader` reads it a batch of slices at a time),
  :func:`read_h5`, :func:`read_h5_dataset`, :func:`write_h5`: the HDF5 layout of
  SURFACE.md.
* :func:`atomic_output`: every output is written under a temporary name and renamed.
* :func:`claim_run_dir`: a resumable ``OUT.run/`` folder tied to its input and settings.

Bad input raises :class:`turndiff.errors.InputError` with a one-line message naming the
file and the problem.
"""

from turndiff.io.atomic import atomic_output, check_output
from turndiff.io.hdf5 import (H5Data, SinogramReader, read_h5, read_h5_dataset, read_sinogram_h5,
                              spread_slices, write_h5)
from turndiff.io.volume import WINDOWS, Volume, placement_of, read_volume, window_to_uint8, write_volume
from turndiff.io.runs import claim_run_dir, run_dir_for

__all__ = [
    "atomic_output",
    "claim_run_dir",
    "run_dir_for",
    "check_output",
    "H5Data",
    "read_h5",
    "read_h5_dataset",
    "read_sinogram_h5",
    "SinogramReader",
    "spread_slices",
    "write_h5",
    "Volume",
    "placement_of",
    "WINDOWS",
    "read_volume",
    "write_volume",
    "window_to_uint8",
]
