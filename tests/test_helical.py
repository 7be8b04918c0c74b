"""Issue 18: DICOM-CT-PD helical projections in: the synthetic helical scanner, the reader,
single-slice rebinning to fan beam (with and without flying focal spot) and `turndiff rebin`."""

from __future__ import annotations

import dataclasses
import io
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pydicom
import pytest

from turndiff.cli import main
from turndiff.io.ctpd import TAGS, read_ctpd, write_ctpd
from turndiff.phantoms import make_volume
from turndiff.physics import CTProjector
from turndiff.physics.geometry import MU_WATER
from turndiff.physics.helical import fan_geometry_for, helical_project, make_helical_scan, rebin_to_fan

N, PS = 128, 3.0          # 128 x 128 at 3 mm
DU = PS * 1085.6 / 595.0  # one column per pixel at the isocentre
DV = 0.25 * 1085.6 / 595.0  # 0.25 mm rows at the isocentre: 64 rows cover 16 mm
Z0 = 20.0


@pytest.fixture(scope="module")
def volume():
    hu = make_volume(40, N, seed=3, slice_spacing=1.0)
    return np.maximum(MU_WATER * (1 + hu / 1000.0), 0).astype(np.float32)


def _scan(ffs: str):
    one = make_helical_scan(views_per_turn=360, turns=1, rows=64, cols=184, du=DU, dv=DV, ffs=ffs)
    return make_helical_scan(views_per_turn=360, turns=2.5, rows=64, cols=184, du=DU, dv=DV, ffs=ffs, pitch=1.0,
                             z_start=Z0 - 1.25 * one.feed_per_turn)


_PROJECTED: dict = {}


def _projected(ffs: str, volume):
    if ffs not in _PROJECTED:
        scan = _scan(ffs)
        _PROJECTED[ffs] = scan, helical_project(volume, scan, pixel_spacing=PS, slice_positions=np.arange(40.0),
                                                 step=1.0)
    return _PROJECTED[ffs]


def _errors(scan, proj, volume):
    g = fan_geometry_for(scan, N, PS)
    A = CTProjector(g)
    truth = A.fbp_hu(A.forward(volume[[int(Z0)]]))
    got = A.fbp_hu(rebin_to_fan(scan, proj, [Z0], g))
    yy, xx = np.mgrid[:N, :N]
    inside = np.hypot(yy - (N - 1) / 2, xx - (N - 1) / 2) * PS < 0.95 * g.fov_radius
    return np.abs(got - truth)[0][inside]


@pytest.mark.parametrize("ffs", ["none", "phi"])
def test_rebinned_fbp_matches_a_true_fan_scan_of_the_slice(volume, ffs):
    """The bar at test scale: 64 rows, pitch 1; FBP of the rebinned sinogram against FBP
    of a 2D fan scan of the same slice, inside the field of view (15 HU median; measured
    about 1.5 HU, so a 5 HU guard catches a regression long before the bar)."""
    scan, proj = _projected(ffs, volume)
    err = _errors(scan, proj, volume)
    assert np.median(err) < 5.0, (ffs, np.median(err))


def test_a_gantry_turning_the_other_way_is_rebinned(volume):
    """Views whose angle decreases (the opposite turning sense) give the same slice."""
    scan = _scan("none")
    rev = dataclasses.replace(scan, phi=-scan.phi)
    proj = helical_project(volume, rev, pixel_spacing=PS, slice_positions=np.arange(40.0), step=1.0)
    assert np.median(_errors(rev, proj, volume)) < 5.0


def test_the_in_plane_flying_focal_spot_is_used(volume):
    """Rebinning phi-FFS data as if the focal spot stood still puts the interleaved rays a
    quarter column off: the rebinned sinogram is measurably further from the true one."""
    scan, proj = _projected("phi", volume)
    g = fan_geometry_for(scan, N, PS)
    truth = CTProjector(g).forward(volume[[int(Z0)]])

    def rms(s):
        return float(np.sqrt(np.mean((rebin_to_fan(s, proj, [Z0], g) - truth) ** 2)))

    right, blind = rms(scan), rms(dataclasses.replace(scan, dphi=np.zeros_like(scan.dphi)))
    assert blind > 2 * right, (right, blind)


def _small_scan(ffs="phiz"):
    scan = make_helical_scan(views_per_turn=16, turns=2, rows=4, cols=12, du=1.3, dv=1.1, ffs=ffs)
    return dataclasses.replace(scan, photons=2.5e4, mu_water=0.0195)


def test_every_listed_tag_round_trips(tmp_path):
    scan = _small_scan()
    rng = np.random.default_rng(0)
    proj = rng.uniform(-0.05, 6.0, (scan.n_views, scan.cols, scan.rows)).astype(np.float32)
    write_ctpd(tmp_path / "pd", proj, scan)
    files = sorted((tmp_path / "pd").iterdir())
    assert len(files) == scan.n_views
    ds = pydicom.dcmread(files[5])
    want = {0x70291010: scan.rows, 0x70291011: scan.cols, 0x70291002: scan.du, 0x70291006: scan.dv,
            0x7029100B: "CYLINDRICAL", 0x70311001: scan.phi[5] % (2 * np.pi), 0x70311002: scan.z[5],
            0x70311003: scan.rho[5], 0x70311031: scan.det_radius,
            0x70311033: [scan.central[0] + 1, scan.central[1] + 1], 0x7033100B: scan.dphi[5], 0x7033100C: scan.dz[5],
            0x7033100D: scan.drho[5], 0x7033100E: "FFSXYZ", 0x70331013: 16, 0x70331065: [2.5e4] * scan.cols,
            0x70371009: "HELICAL", 0x7037100A: "FANBEAM", 0x70411001: 0.0195, 0x00180061: 0.0195}
    assert set(want) == {t for t, *_ in TAGS}
    for tag, v in want.items():
        got = ds[tag].value
        if isinstance(v, str):
            assert got == v, hex(tag)
        else:
            np.testing.assert_allclose(np.asarray(got, np.float64), v, rtol=1e-6, atol=1e-6, err_msg=hex(tag))
    back, loader = read_ctpd(tmp_path / "pd")
    for name in ("phi", "z", "rho", "dphi", "dz", "drho"):
        np.testing.assert_allclose(getattr(back, name), getattr(scan, name), atol=1e-5, err_msg=name)
    assert (back.rows, back.cols, back.views_per_turn, back.ffs_mode) == (4, 12, 16, "FFSXYZ")
    assert back.central == pytest.approx(scan.central) and back.photons == pytest.approx(2.5e4)
    assert back.mu_water == pytest.approx(0.0195)
    step = float(ds.RescaleSlope)
    assert np.abs(loader(np.arange(scan.n_views)) - proj).max() <= step  # 16-bit storage


def test_private_values_given_as_raw_bytes_are_read(tmp_path):
    """Implicit-VR files (as public data sets ship) hand private values over as bytes."""
    scan = _small_scan("none")
    write_ctpd(tmp_path / "pd", np.ones((scan.n_views, scan.cols, scan.rows), np.float32), scan)
    for f in (tmp_path / "pd").iterdir():
        ds = pydicom.dcmread(f)
        for tag, *_ in TAGS:
            if tag in ds and ds[tag].VR in ("FL", "US"):
                dt = "<f4" if ds[tag].VR == "FL" else "<u2"
                ds[tag] = pydicom.DataElement(tag, "UN", np.asarray(ds[tag].value, dt).tobytes())
        ds.save_as(f)
    back, _ = read_ctpd(tmp_path / "pd")
    np.testing.assert_allclose(back.z, scan.z, atol=1e-4)
    assert (back.rows, back.cols) == (4, 12)


def _cli(args):
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def test_simulate_helical_then_rebin_then_fbp(tmp_path):
    """The user's path without a download: a synthetic scanner writes DICOM-CT-PD with a
    flying focal spot, `rebin` turns it into the HDF5 that `fit` trains on and
    `reconstruct` takes, and `fbp` gives the slices back."""
    code, err = _cli(["simulate-helical", "phantom:48", "--size", 64, "--rows", 64, "--row-width", 0.25,
                      "--views", 240, "--ffs", "phi", "--out", tmp_path / "pd"])
    assert code == 0, err[-2000:]
    code, err = _cli(["rebin", tmp_path / "pd", "--out", tmp_path / "scan.h5", "--size", 64, "--slices", "20:22:1"])
    assert code == 0, err[-2000:]
    import h5py

    with h5py.File(tmp_path / "scan.h5") as f:
        assert f["sinogram"].shape == (3, 120, 92)
        assert float(f.attrs["photons_scanner"]) == pytest.approx(2.5e4)  # PhotonStatistics
        assert float(f.attrs["photons"]) > 2.5e4  # the rebinned sinograms' own noise level
        assert "clean_sinogram" not in f and "reference_hu" not in f
    code, err = _cli(["fit", tmp_path / "scan.h5", "--out", tmp_path / "model", "--preset", "tiny"])
    assert code == 0, err[-2000:]
    code, err = _cli(["reconstruct", tmp_path / "model", tmp_path / "scan.h5", "--out", tmp_path / "td.npy"])
    assert code == 0, err[-2000:]
    assert np.load(tmp_path / "td.npy").shape == (3, 64, 64)
    code, err = _cli(["fbp", tmp_path / "scan.h5", "--out", tmp_path / "img.npy"])
    assert code == 0, err[-2000:]
    img = np.load(tmp_path / "img.npy")
    ref = make_volume(48, 64, seed=0, slice_spacing=1.0)[[20, 21, 22]]
    body = ref > -500
    assert np.corrcoef(img[body], ref[body])[0, 1] > 0.9
    assert np.median(np.abs(img - ref)[body]) < 60  # FBP noise at 25% dose, 64 x 64


@pytest.fixture(scope="module")
def ctpd_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ctpd") / "pd"
    scan = _small_scan("none")
    write_ctpd(folder, np.ones((scan.n_views, scan.cols, scan.rows), np.float32), scan)
    return folder


def _truncate(folder: Path) -> str:
    f = sorted(folder.iterdir())[7]
    f.write_bytes(f.read_bytes()[:-40])
    return "truncated"


def _drop_view(folder: Path) -> str:
    sorted(folder.iterdir())[9].unlink()
    return "missing view"


def _other_series(folder: Path) -> str:
    f = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(f)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(f)
    return "mixed series"


def _no_angle(folder: Path) -> str:
    f = sorted(folder.iterdir())[2]
    ds = pydicom.dcmread(f)
    del ds[0x70311001]
    ds.save_as(f)
    return "(7031,1001)"


def _not_dicom(folder: Path) -> str:
    (folder / "notes.txt").write_text("not a projection")
    return "not a readable DICOM file"


def _same_angle(folder: Path) -> str:
    f = sorted(folder.iterdir())[4]
    ds = pydicom.dcmread(f)
    ds[0x70311001].value = float(ds[0x70311001].value) + 0.6
    ds.save_as(f)
    return "source angle jumps"


@pytest.mark.parametrize("damage", [_truncate, _drop_view, _other_series, _no_angle, _not_dicom, _same_angle])
def test_damaged_folders_are_refused_with_one_line(ctpd_folder, tmp_path, damage):
    import shutil

    folder = tmp_path / "pd"
    shutil.copytree(ctpd_folder, folder)
    expect = damage(folder)
    code, err = _cli(["rebin", folder, "--out", tmp_path / "scan.h5"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("turndiff: error:"), err
    assert expect in lines[0], lines[0]
    assert not (tmp_path / "scan.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pd"]


def test_the_photon_level_of_the_rebinned_sinograms(tmp_path):
    """Without (7033,1065), I0 is estimated from the raw projections; `photons` of the
    rebinned file is the I0 whose noise the rebinned sinograms carry (rebinning averages
    several measurements per bin): the measured variance of rebinned noise matches it."""
    from turndiff.dose import add_noise

    scan = dataclasses.replace(make_helical_scan(views_per_turn=64, turns=2, rows=8, cols=48, du=1.3, dv=1.1),
                               photons=None)
    clean = np.full((scan.n_views, scan.cols, scan.rows), 2.0, np.float32)
    noisy = add_noise(clean, 2.5e4, rng=0)
    write_ctpd(tmp_path / "pd", noisy, scan)
    code, err = _cli(["rebin", tmp_path / "pd", "--out", tmp_path / "scan.h5", "--size", 32, "--fov", 60])
    assert code == 0, err[-2000:]
    import h5py

    with h5py.File(tmp_path / "scan.h5") as f:
        photons, scanner, sino = float(f.attrs["photons"]), float(f.attrs["photons_scanner"]), f["sinogram"][:]
    assert "estimated from the projections" in err and 2.2e4 < scanner < 3.2e4, scanner
    measured = np.exp(2.0) / np.var(sino[:, :, 3:-3])  # post-log variance e^p / I0
    assert 0.75 < photons / measured < 1.33, (photons, measured)
    assert photons > 2 * scanner
