"""Procedural axial CT anatomy: upper abdomen and lower thorax.

All sizes are in millimetres and all values in HU, so the same patient appears at any
pixel size. Image axes: ``x`` to the image right (the patient's left, radiological
convention), ``y`` down (posterior). Structures are painted back to front with
partial-volume weights; every soft tissue carries its own band-limited texture.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from ._raster import Blob, Canvas, add_wobble, gaussian_fields, line_coverage, polyline_distance, random_wobble

__all__ = ["Tissue", "render"]


class Tissue(IntEnum):
    """Labels of the tissue map returned with ``return_labels=True``."""

    AIR = 0  #: outside the body (and the gaps of the patient table)
    SKIN = 1
    FAT = 2  #: subcutaneous, visceral, mediastinal, epicardial, renal sinus fat
    MUSCLE = 3  #: body wall, paraspinal, psoas, diaphragmatic crura, intercostal
    CORTICAL_BONE = 4
    TRABECULAR_BONE = 5  #: marrow space of vertebrae, ribs and sternum
    LIVER = 6
    SPLEEN = 7
    KIDNEY = 8  #: cortex and medulla
    BLOOD = 9  #: aorta, venae cavae, heart chambers, organ and lung vessels
    MYOCARDIUM = 10
    LUNG = 11  #: aerated lung parenchyma
    GAS = 12  #: bowel, stomach, oesophageal and bronchial gas
    BOWEL = 13  #: stomach and bowel wall and non-gas contents
    PANCREAS = 14
    FLUID = 15  #: bile, renal pelvis, spinal canal (CSF and cord)
    CARTILAGE = 16  #: costal cartilage
    LESION = 17  #: focal lesions and lung nodules
    CALCIFICATION = 18  #: vascular plaques, granulomas, stones
    TABLE = 19  #: patient table shells (its foam core stays AIR)


T = Tissue

# Texture fields: name -> correlation length (mm) of the smoothing Gaussian.
_FIELDS = {
    "fine": 0.45,
    "small": 1.2,
    "med": 3.0,
    "coarse": 8.0,
    "large": 25.0,
    "septa": 3.0,
    "trab": 0.9,
    "streak": 5.0,
    "mottle": 2.2,
    "fine2": 0.45,
    "med2": 3.0,
}


class _Scene:
    def __init__(self, canvas: Canvas, rng: np.random.Generator, texture_seq: np.random.SeedSequence,
                 contrast: bool) -> None:
        self.c = canvas
        self.rng = rng
        self.h = canvas.h
        fields = gaussian_fields(texture_seq, canvas.n, canvas.h, list(_FIELDS.values()))
        self.f = dict(zip(_FIELDS, fields))
        # Thin line networks at the zero crossings of band-limited fields: fibrous septa
        # in fat, trabeculae in bone.
        self.ridge_septa = self._ridge(self.f["septa"], _FIELDS["septa"], 0.35)
        self.ridge_trab = self._ridge(self.f["trab"], _FIELDS["trab"], 0.25)
        self.ridge_streak = self._ridge(self.f["streak"], _FIELDS["streak"], 0.3)
        self.contrast = contrast
        self.v = self._values(contrast)

    def _ridge(self, field: np.ndarray, sigma: float, half_width: float) -> np.ndarray:
        # |grad F| ~ 1 / sigma for a unit-variance field, so |F| < w / sigma is a band of
        # half-width ~ w mm around the zero crossing.
        return np.clip(1.0 - np.abs(field) * (sigma / half_width), 0.0, 1.0) ** 2

    # ----------------------------------------------------------------- values
    def _values(self, contrast: bool) -> dict[str, float]:
        r = self.rng.uniform
        v = {
            "fat": r(-112, -92),
            "skin": r(15, 45),
            "muscle": r(42, 58),
            "cortical": r(750, 1150),
            "trabecular": r(160, 280),
            "fluid": r(0, 18),
            "csf": r(4, 14),
            "cord": r(28, 38),
            "lung": r(-880, -830),
            "gas": r(-1000, -985),
            "cartilage": r(90, 170),
            "stool": r(-40, 30),
        }
        if contrast:
            blood = r(150, 240)
            v.update(
                blood=blood,
                portal=blood * r(0.7, 0.95),
                liver=r(95, 118),
                spleen=r(100, 125),
                cortex=r(150, 200),
                pancreas=r(80, 110),
                myocardium=r(90, 120),
                bowel_wall=r(70, 100),
                muscle=v["muscle"] + r(4, 10),
            )
            v["medulla"] = v["cortex"] * (r(0.5, 0.65) if self.rng.random() < 0.5 else r(0.9, 1.0))
        else:
            blood = r(35, 50)
            v.update(
                blood=blood,
                portal=blood,
                liver=r(52, 66),
                spleen=r(42, 52),
                cortex=r(28, 38),
                pancreas=r(35, 48),
                myocardium=r(40, 52),
                bowel_wall=r(35, 48),
            )
            v["medulla"] = v["cortex"] - r(2, 8)
        return v

    # ---------------------------------------------------------------- helpers
    def tex(self, box, base: float, **amps: float):
        out = np.full((box[0].stop - box[0].start, box[1].stop - box[1].start), base, np.float32)
        for name, amp in amps.items():
            src = getattr(self, name) if name.startswith("ridge") else self.f[name]
            out += np.float32(amp) * src[box]
        return out

    def fill(self, box, d, value, label, edge: float = 0.0, weight=None) -> np.ndarray | None:
        if box is None:
            return None
        a = self.c.alpha(d, edge)
        if weight is not None:
            a = a * weight
        self.c.paint(box, a, value, label)
        return a

    def fat_value(self, box):
        return self.tex(box, self.v["fat"], large=4, med=3, fine=3, ridge_septa=55)

    def muscle_value(self, box):
        return self.tex(box, self.v["muscle"], coarse=3, med=4, small=4, fine=3, ridge_streak=-35)

    def blob(self, blob: Blob, value, label, *, parent=None, margin: float = 0.0,
             minus: tuple = (), edge: float = 0.0, roughen: float = 0.0):
        """Paint a blob, optionally inside ``parent`` (full-size sdf) shrunk by
        ``margin`` and outside each blob in ``minus``; returns ``(box, d)``."""
        box, d = blob.sdf(self.c)
        if box is None:
            return None, None
        d = self.combine(box, d, parent=parent, margin=margin, minus=minus, roughen=roughen)
        val = value(box) if callable(value) else value
        self.fill(box, d, val, label, edge)
        return box, d

    def combine(self, box, d, *, parent=None, margin=0.0, minus=(), roughen=0.0):
        if roughen:
            d = d + np.float32(roughen) * self.f["med2"][box]
        if parent is not None:
            d = np.maximum(d, parent[box] + np.float32(margin))
        for m in minus:
            _, dm = m.sdf(self.c, box)
            d = np.maximum(d, -dm)
        return d

    def tube(self, pts, radii, value, label, *, weight_full=None, pad: float = 0.0, strength: float = 1.0) -> None:
        """Paint a tapered tube along a polyline with exact thin-line partial volume."""
        pts = np.asarray(pts, np.float32)
        radii = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),)).copy()
        box, dist, r = polyline_distance(self.c, pts, radii, pad)
        if box is None:
            return
        a = line_coverage(dist, r, self.h)
        if strength != 1.0:
            a = a * np.float32(strength)
        if weight_full is not None:
            a = a * weight_full[box]
        val = value(box) if callable(value) else value
        self.c.paint(box, a, val, label)

    def dot(self, x, y, r, value, label, *, weight_full=None, length=0.0, angle=0.0):
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        self.tube([(x - dx, y - dy), (x + dx, y + dy)], [r, r], value, label, weight_full=weight_full)

    def bone(self, blob: Blob, cortex: float, *, parent=None) -> None:
        """Cortical shell of thickness ``cortex`` mm around textured marrow."""
        box, d = blob.sdf(self.c)
        if box is None:
            return
        if parent is not None:
            d = np.maximum(d, parent[box])
        self.fill(box, d, self.tex(box, self.v["cortical"], med=60, fine=40), T.CORTICAL_BONE)
        self.fill(box, d + np.float32(cortex), self.trab_value(box), T.TRABECULAR_BONE)

    def trab_value(self, box):
        # Trabecular bone: a bright lattice on a fatty marrow background.
        return self.tex(box, self.v["trabecular"] - 15, ridge_trab=160, small=25, coarse=25, fine=20)

    def bone_tube(self, pts, radii, cortex: float) -> None:
        radii = np.asarray(radii, np.float32)
        self.tube(pts, radii, lambda b: self.tex(b, self.v["cortical"], med=60), T.CORTICAL_BONE)
        self.tube(pts, np.maximum(radii - cortex, 0.2), self.trab_value, T.TRABECULAR_BONE)

    def vessel_tree(self, x, y, angle, r0, *, min_r, seg_len, p_stop, max_depth, curl=0.25):
        """Random 2D branching tree: list of (points [K, 2], radii [K]) branches.

        Branches leave the slice (stop) at random, so the slice shows short segments
        and stumps as in a real axial cut through a 3D vessel tree.
        """
        rng = self.rng
        out = []
        stack = [(x, y, angle, r0, 0)]
        while stack:
            x, y, ang, r, depth = stack.pop()
            length = seg_len * math.sqrt(r / r0) * rng.uniform(0.6, 1.4) + 3 * r
            pts, rs = [(x, y)], [r]
            for k in range(4):
                ang += rng.normal(0, curl)
                x += length / 4 * math.cos(ang)
                y += length / 4 * math.sin(ang)
                pts.append((x, y))
                rs.append(r * (1 - 0.05 * (k + 1)))
            out.append((np.array(pts, np.float32), np.array(rs, np.float32)))
            r_end = rs[-1]
            if depth + 1 >= max_depth or r_end * 0.75 < min_r:
                continue
            for sgn in (-1.0, 1.0):
                if rng.random() < p_stop:
                    continue
                stack.append((x, y, ang + sgn * rng.uniform(0.3, 0.75), r_end * rng.uniform(0.68, 0.85), depth + 1))
        return out

    def sub_rng(self) -> np.random.Generator:
        """A generator for work whose number of draws depends on the pixel grid: the
        main stream always advances by one draw, so the anatomy stays the same at
        every image size."""
        return np.random.default_rng(int(self.rng.integers(1 << 62)))

    def sample_inside(self, d_full: np.ndarray, min_depth: float, k: int = 1):
        """Up to ``k`` random points ``(x, y, rng)`` (mm) at least ``min_depth`` mm inside
        a full-size sdf. Candidates are drawn in mm over the field of view, so the picks
        do not depend on the pixel size."""
        if k <= 0:
            return []
        key = int(self.rng.integers(1 << 62))
        sub = np.random.default_rng(key)
        half = 0.5 * self.c.n * self.h
        pts = sub.uniform(-half, half, (max(512, 64 * k), 2))
        ij = np.clip(np.rint(pts / self.h + (self.c.n - 1) / 2.0).astype(np.int64), 0, self.c.n - 1)
        ok = np.flatnonzero(d_full[ij[:, 1], ij[:, 0]] < -min_depth)[:k]
        # each candidate owns a generator for its own attributes, so a point dropped
        # at one pixel size does not shift the attributes of the others
        return [(float(pts[i, 0]), float(pts[i, 1]), np.random.default_rng([key, int(i)])) for i in ok]

    def lesion(self, x, y, r, delta, *, organ_alpha=None, hetero: float = 0.0, rng=None) -> None:
        """A focal lesion: ``delta`` HU over the local tissue, soft margin, keeps the
        underlying texture (plus optional own heterogeneity)."""
        rng = rng or self.rng
        b = Blob(x, y, (r * rng.uniform(0.8, 1.2),) * 2, (r,) * 2, rng.uniform(0, np.pi),
                 wobble=random_wobble(rng, 0.08, 5))
        box, d = b.sdf(self.c)
        if box is None:
            return
        a = self.c.alpha(d, edge=rng.uniform(0.6, 2.5))
        if organ_alpha is not None:
            a = a * organ_alpha[box]
        val = self.c.hu[box] + np.float32(delta)
        if hetero:
            val = val + np.float32(hetero) * self.f["small"][box]
        self.c.paint(box, a, val, T.LESION)

    def calcification(self, x, y, r, *, label=T.CALCIFICATION, rng=None) -> None:
        rng = rng or self.rng
        self.dot(x, y, r, rng.uniform(300, 900), label, length=rng.uniform(0, 2 * r), angle=rng.uniform(0, np.pi))


# ==================================================================== body wall
class _Body:
    """Outline, skin, subcutaneous fat and muscle wall; the cavity inside them.

    Layer thicknesses are functions of ``phi``, the angle from the anterior midline
    (0 anterior, +-pi posterior), in the outline's own frame.
    """

    def __init__(self, s: _Scene, region: str) -> None:
        rng = s.rng
        self.region = region
        self.habitus = rng.beta(2.0, 2.0)
        scale = 0.88 + 0.22 * self.habitus
        if region == "abdomen":
            a, bt, bb = rng.uniform(135, 158), rng.uniform(112, 128), rng.uniform(94, 106)
        else:
            a, bt, bb = rng.uniform(140, 160), rng.uniform(96, 110), rng.uniform(96, 108)
        a, bt, bb = a * scale, bt * scale, bb * scale
        cx, cy = rng.uniform(-6, 6), rng.uniform(-14, 0)
        self.blob = Blob(cx, cy, (a * rng.uniform(0.97, 1.03), a * rng.uniform(0.97, 1.03)), (bt, bb),
                         angle=rng.uniform(-0.03, 0.03), p=rng.uniform(2.1, 2.5),
                         wobble=random_wobble(rng, 0.025, 6))
        _, self.d, z = self.blob.sdf(s.c, s.c.full, want_phase=True)
        self.phi = self._phi(z)
        self.t_skin = rng.uniform(1.5, 2.5)
        # subcutaneous fat: thicker anteriorly and over the flanks in the abdomen
        t0 = 3.0 + 26.0 * self.habitus if region == "abdomen" else 2.0 + 15.0 * self.habitus
        self.fat_par = (t0, rng.uniform(0.1, 0.35) if region == "abdomen" else rng.uniform(-0.1, 0.2),
                        rng.uniform(0.0, 0.3), random_wobble(rng, 0.15, 4, 1))
        # muscle wall: (|phi| nodes, relative thickness) -- rectus pair split by the
        # linea alba, thin linea semilunaris, layered obliques, thin posterior wall
        if region == "abdomen":
            t_m = rng.uniform(8, 13)
            g = rng.uniform(2.0, 6.0) / bt
            nodes = [(0.0, 0.1), (g, 0.1), (g + 0.05, 1.0), (0.42, 0.95), (0.55, 0.35), (0.68, 0.85),
                     (1.6, 1.15), (2.25, 0.9), (2.55, 0.45), (np.pi, 0.35)]
        else:
            t_m = rng.uniform(5, 10)
            nodes = [(0.0, 0.25), (0.14, 0.3), (0.22, 1.0), (0.95, 1.0), (1.25, 0.55), (2.0, 0.6),
                     (2.3, 0.9), (2.7, 0.8), (np.pi, 0.5)]
        xs = np.array([n[0] for n in nodes])
        ys = np.array([n[1] for n in nodes]) * rng.uniform(0.85, 1.15, len(nodes))
        self.mus_par = (t_m, xs, ys, rng.uniform(-0.12, 0.12))
        self.t_fat = self._fat(self.phi)
        self.t_mus = self._mus(self.phi)

    @staticmethod
    def _phi(z):
        phi = np.angle(z) + np.pi / 2
        return (np.mod(phi + np.pi, 2 * np.pi) - np.pi).astype(np.float32)

    def _fat(self, phi):
        t0, ant, flank, wob = self.fat_par
        mod = 1.0 + ant * np.cos(phi) - flank * np.cos(2 * phi)
        z = np.exp(1j * (phi - np.pi / 2))
        zk = z
        for ck in wob:
            mod = mod + (ck * zk).real
            zk = zk * z
        return (t0 * np.clip(mod, 0.3, None)).astype(np.float32)

    def _mus(self, phi):
        t_m, xs, ys, asym = self.mus_par
        return (t_m * np.interp(np.abs(phi), xs, ys) * (1.0 + asym * np.sin(phi))).astype(np.float32)

    def thickness_at(self, which: str, theta: float) -> float:
        """Fat or muscle thickness (mm) at image angle ``theta``."""
        phi = self._phi(np.array([math.cos(theta) + 1j * math.sin(theta)]))
        return float((self._fat if which == "fat" else self._mus)(phi)[0])

    def inset(self, theta: float, extra: float = 0.0) -> float:
        """Depth (mm) of the muscle wall's inner surface at image angle ``theta``."""
        return self.t_skin + self.thickness_at("fat", theta) + self.thickness_at("mus", theta) + extra

    def paint(self, s: _Scene) -> None:
        full = s.c.full
        s.fill(full, self.d, s.tex(full, s.v["skin"], med=5), T.SKIN)
        self.d_fat = self.d + np.float32(self.t_skin)
        s.fill(full, self.d_fat, s.fat_value(full), T.FAT)
        self.d_mus = self.d_fat + self.t_fat
        s.fill(full, self.d_mus, s.muscle_value(full), T.MUSCLE)
        self.d_cav = self.d_mus + self.t_mus
        if self.region == "abdomen":
            # fat planes between the external oblique, internal oblique and transversus
            win = np.clip((np.abs(self.phi) - 0.72) / 0.1, 0, 1) * np.clip((2.2 - np.abs(self.phi)) / 0.1, 0, 1)
            for frac in (s.rng.uniform(0.3, 0.6),):
                dist = np.abs(self.d_mus + np.float32(frac) * self.t_mus + np.float32(0.6) * s.f["coarse"])
                a = line_coverage(dist, np.float32(s.rng.uniform(0.25, 0.6)), s.h) * win
                s.c.paint(full, a.astype(np.float32), s.fat_value(full), T.FAT)

    def cavity_frame(self, extra: float = 0.0):
        """Centre and half-extents (left, right, anterior, posterior) of the cavity."""
        b = self.blob
        pts = {name: b.boundary_point(th, self.inset(th, extra))
               for name, th in (("r", 0.0), ("p", np.pi / 2), ("l", np.pi), ("a", -np.pi / 2))}
        return (b.cx, b.cy, b.cx - pts["l"][0], pts["r"][0] - b.cx, b.cy - pts["a"][1], pts["p"][1] - b.cy)


def _table(s: _Scene, body: _Body) -> None:
    """Curved patient table below the body: thin shells around a foam core, and a
    foam mattress (all foam below -500 HU so body masks stay separate)."""
    rng = s.rng
    y_back = max(body.blob.boundary_point(np.pi / 2 + t)[1] for t in (-0.3, 0.0, 0.3))
    y0 = y_back + rng.uniform(1.0, 4.0)
    curv = rng.uniform(0.0, 4e-4)
    mat = rng.uniform(6.0, 12.0)
    X, Y = s.c.grid(s.c.full)
    top = y0 + curv * X * X
    foam = s.tex(s.c.full, rng.uniform(-960, -900), med=8)
    # mattress
    a = np.clip(0.5 - (top - Y) / s.h, 0, 1) * np.clip(0.5 - (Y - top - mat) / s.h, 0, 1)
    s.c.paint(s.c.full, a.astype(np.float32), foam, None)
    shell = rng.uniform(2.5, 5.0)
    core = rng.uniform(18.0, 35.0)
    y1 = top + mat + rng.uniform(0.0, 3.0)
    val = rng.uniform(150, 450)
    for y_lo in (y1, y1 + shell + core):
        a = line_coverage(np.abs(Y - (y_lo + 0.5 * shell)), np.float32(0.5 * shell), s.h)
        s.c.paint(s.c.full, np.broadcast_to(a, s.c.hu.shape), val, T.TABLE)
    a = np.clip(0.5 - (y1 + shell - Y) / s.h, 0, 1) * np.clip(0.5 - (Y - y1 - shell - core) / s.h, 0, 1)
    s.c.paint(s.c.full, np.broadcast_to(a.astype(np.float32), s.c.hu.shape), foam, None)


# ======================================================================== spine
class _Spine:
    def __init__(self, s: _Scene, body: _Body, region: str) -> None:
        rng = s.rng
        self.vx = body.blob.cx + rng.uniform(-3, 3)
        y_skin = body.blob.boundary_point(np.pi / 2)[1]
        back = body.t_skin + body.thickness_at("fat", np.pi / 2)
        lumbar = region == "abdomen"
        self.y_back = y_skin - back  # inner surface of the posterior subcutaneous fat
        self.vy = self.y_back - (rng.uniform(58, 68) if lumbar else rng.uniform(50, 60))
        self.w = rng.uniform(40, 48) if lumbar else rng.uniform(30, 38)
        self.ay = (rng.uniform(14, 17), rng.uniform(12, 15)) if lumbar else (rng.uniform(12, 15), rng.uniform(10, 13))
        self.lumbar = lumbar
        if lumbar:
            self.canal_r = (rng.uniform(10, 12), rng.uniform(7.5, 9.5))
        else:
            self.canal_r = (rng.uniform(7.5, 9), rng.uniform(7, 8.5))
        self.canal_y = self.vy + self.ay[1] + self.canal_r[1] + rng.uniform(1.0, 3.0)

    def paint_muscles(self, s: _Scene, lev: float) -> list[Blob]:
        rng = s.rng
        out = []
        top = self.canal_y + rng.uniform(-2, 2)
        bottom = self.y_back - rng.uniform(0, 3)
        for side in (-1, 1):
            ax = rng.uniform(18, 24)
            pm = Blob(self.vx + side * (ax + rng.uniform(3, 6)), 0.5 * (top + bottom), (ax, ax),
                      (0.5 * (bottom - top),) * 2, angle=side * rng.uniform(0.0, 0.15), p=2.6,
                      wobble=random_wobble(rng, 0.03, 4))
            s.blob(pm, s.muscle_value, T.MUSCLE)
            if rng.random() < 0.7:  # fat plane between multifidus and longissimus
                x0 = self.vx + side * rng.uniform(14, 22)
                pts = [(x0, top + 4)]
                for k in range(3):
                    pts.append((pts[-1][0] + side * rng.uniform(1, 5), pts[-1][1] + (bottom - top - 6) / 3))
                s.tube(pts, rng.uniform(0.3, 0.8), s.fat_value, T.FAT)
            out.append(pm)
        if self.lumbar and lev > 0.25:  # psoas
            r = 5 + 14 * lev
            for side in (-1, 1):
                b = Blob(self.vx + side * (self.w / 2 + r * 0.8), self.vy + rng.uniform(-2, 6),
                         (r * rng.uniform(0.8, 1.1),) * 2, (r * rng.uniform(0.9, 1.2),) * 2,
                         wobble=random_wobble(rng, 0.05, 4))
                s.blob(b, s.muscle_value, T.MUSCLE)
                out.append(b)
        if self.lumbar and lev > 0.45:  # quadratus lumborum
            for side in (-1, 1):
                b = Blob(self.vx + side * (self.w / 2 + rng.uniform(38, 46)), self.canal_y + rng.uniform(-4, 4),
                         (rng.uniform(9, 13),) * 2, (rng.uniform(12, 17),) * 2,
                         angle=side * rng.uniform(0.2, 0.6), wobble=random_wobble(rng, 0.05, 4))
                s.blob(b, s.muscle_value, T.MUSCLE)
                out.append(b)
        return out

    def paint_bone(self, s: _Scene, *, transverse: bool, ribs: bool) -> None:
        rng = s.rng
        vx, vy, w = self.vx, self.vy, self.w
        cort = rng.uniform(1.2, 2.0)
        vb = Blob(vx, vy, (w / 2, w / 2), self.ay, p=rng.uniform(2.0, 2.6), wobble=random_wobble(rng, 0.03, 4))
        s.bone(vb, cort)
        # posterior arch (pedicles, laminae) around the canal, then the canal itself
        cy, (crx, cry) = self.canal_y, self.canal_r
        r_arch = rng.uniform(2.8, 4.0)
        arch = [(vx - w * 0.33, vy + self.ay[1] * 0.5), (vx - crx - 2.5, cy - 1), (vx - crx * 0.8, cy + cry + 2),
                (vx, cy + cry + r_arch + 1), (vx + crx * 0.8, cy + cry + 2), (vx + crx + 2.5, cy - 1),
                (vx + w * 0.33, vy + self.ay[1] * 0.5)]
        s.bone_tube(arch, [r_arch] * len(arch), cort)
        spin_y = cy + cry + r_arch
        spin_len = min(rng.uniform(22, 32), self.y_back - 3 - spin_y)
        s.bone_tube([(vx, spin_y), (vx + rng.uniform(-2, 2), spin_y + spin_len * 0.6),
                     (vx + rng.uniform(-3, 3), spin_y + spin_len)],
                    [r_arch, r_arch * 0.8, r_arch * 0.75], cort)
        if transverse:
            for side in (-1, 1):
                ln = rng.uniform(20, 30) if self.lumbar else rng.uniform(14, 20)
                drop = rng.uniform(-2, 10) if self.lumbar else rng.uniform(6, 12)
                y0 = cy - 0.5 * cry
                s.bone_tube([(vx + side * (crx + 2), y0), (vx + side * (crx + 2 + 0.6 * ln), y0 + 0.4 * drop),
                             (vx + side * (crx + 2 + ln), y0 + drop)],
                            [rng.uniform(3.0, 4.0), rng.uniform(2.2, 2.8), rng.uniform(1.8, 2.4)], cort)
        if ribs and not self.lumbar:
            for side in (-1, 1):  # rib heads beside the vertebral body
                s.bone_tube([(vx + side * (w / 2 + 3), vy + 2), (vx + side * (w / 2 + 16), cy + 6)],
                            [rng.uniform(4, 5.5), rng.uniform(4, 5)], cort)
        canal = Blob(vx, cy, (crx, crx), (cry, cry), p=2.2)
        s.blob(canal, s.fat_value, T.FAT)
        dura = Blob(vx, cy + 0.5, (crx - 2.2,) * 2, (cry - 1.8,) * 2)
        s.blob(dura, lambda b: s.tex(b, s.v["csf"], med=2), T.FLUID)
        cord_r = rng.uniform(3.8, 5.0)
        if rng.random() < 0.8:
            cord = Blob(vx, cy - 0.5, (cord_r * 1.2,) * 2, (cord_r,) * 2)
            s.blob(cord, lambda b: s.tex(b, s.v["cord"], small=2), T.FLUID)


def _ribs(s: _Scene, body: _Body, thetas, *, depth_frac=(0.3, 0.8), extra=0.0, cartilage_from=None) -> None:
    """Oblique rib cross-sections lying in the chest wall at image angles ``thetas``."""
    rng = s.rng
    for th in thetas:
        ins = (body.t_skin + body.thickness_at("fat", th)
               + body.thickness_at("mus", th) * rng.uniform(*depth_frac) + extra)
        x, y = body.blob.boundary_point(th, ins)
        half_len = rng.uniform(5, 13)
        thick = rng.uniform(3.0, 4.6)
        b = Blob(x, y, (thick, thick), (half_len, half_len), angle=th + rng.normal(0, 0.1),
                 wobble=random_wobble(rng, 0.04, 3))
        if cartilage_from is not None and cartilage_from(th):
            s.blob(b, lambda bx: s.tex(bx, s.v["cartilage"], med=12, small=8), T.CARTILAGE)
            if rng.random() < 0.5:
                for _ in range(rng.integers(1, 4)):
                    s.calcification(x + rng.normal(0, half_len / 3), y + rng.normal(0, 1.5), rng.uniform(0.4, 1.2))
        else:
            s.bone(b, rng.uniform(1.0, 1.7))


def _bowel_loop(s: _Scene, rng: np.random.Generator, x, y, r, kind: str, angle: float, elong: float,
                oral: float | None, haustra: bool = False) -> Blob:
    """One bowel segment cut by the slice: enhancing wall around its contents.

    ``kind``: 'fluid', 'gas' (maybe with an air-fluid level), 'stool' (mottled with gas
    bubbles) or 'collapsed' (thick wall, slit-like lumen).
    """
    wob = random_wobble(rng, 0.07, 6)
    if haustra:
        wob = add_wobble(wob, random_wobble(rng, 0.05, 9, 7))
    b = Blob(x, y, (r * elong, r * elong), (r, r), angle=angle, wobble=wob)
    wall = rng.uniform(1.5, 3.0) if kind != "collapsed" else r * rng.uniform(0.55, 0.75)
    s.blob(b, lambda bx: s.tex(bx, s.v["bowel_wall"], med=4, small=4), T.BOWEL)
    inner = Blob(x, y, (max(r * elong - wall, 0.5),) * 2, (max(r - wall, 0.5),) * 2, angle=angle,
                 wobble=add_wobble(wob, random_wobble(rng, 0.06, 12, 6)))
    box, d = inner.sdf(s.c)
    if box is None:
        return b
    if kind == "collapsed":
        s.fill(box, d, s.v["gas"] if rng.random() < 0.3 else s.v["fluid"], T.BOWEL)
    elif kind == "fluid":
        base = oral if oral is not None else s.v["fluid"] + rng.uniform(0, 15)
        s.fill(box, d, s.tex(box, base, med=4, small=3), T.BOWEL)
    elif kind == "gas":
        s.fill(box, d, s.v["gas"], T.GAS)
        if rng.random() < 0.5:  # air-fluid level: gas rises anteriorly (up)
            X, Y = s.c.grid(box)
            level = y + rng.uniform(-0.2, 0.6) * r
            s.fill(box, np.maximum(d, level - Y), s.v["fluid"] + 10, T.BOWEL)
    else:  # stool: mottled mixture of soft tissue and small gas bubbles
        s.fill(box, d, s.tex(box, s.v["stool"] + 40, mottle=70, small=25), T.BOWEL)
        bubbles = np.clip((s.f["mottle"][box] - 1.0) * 3.0, 0, 1) * s.c.alpha(d + 1.0)
        s.c.paint(box, bubbles.astype(np.float32), s.v["gas"], T.GAS)
    return b


def _free_spot(s: _Scene, occupied: list[tuple[float, float, float]], d_cav: np.ndarray, r: float,
               xlim, ylim, tries: int = 30):
    rng = s.sub_rng()
    for _ in range(tries):
        x, y = rng.uniform(*xlim), rng.uniform(*ylim)
        i, j = s.c.point_index(x, y)
        if d_cav[i, j] > -r * 0.8:
            continue
        if all(math.hypot(x - ox, y - oy) > (r + orad) * 1.05 + 2.0 for ox, oy, orad in occupied):
            return x, y
    return None


# ===================================================================== abdomen
def _abdomen(s: _Scene, body: _Body) -> None:
    rng = s.rng
    v = s.v
    lev = rng.uniform(0.0, 1.0)  # 0: dome of the liver (T11), 1: lower pole of kidneys (L2)
    cx, cy, cl, cr, ca, cp = body.cavity_frame()

    def cav(sx, sy):
        return cx + sx * (cl if sx < 0 else cr), cy + sy * (ca if sy < 0 else cp)

    # visceral fat fills the cavity, with mesenteric strands and small vessels
    full = s.c.full
    s.fill(full, body.d_cav, s.tex(full, v["fat"] + rng.uniform(0, 12), large=6, med=4, fine=3, ridge_septa=70), T.FAT)

    spine = _Spine(s, body, "abdomen")
    occupied: list[tuple[float, float, float]] = []

    # --- plan the solid organs first, so bowel can fill the space left over
    kid = []
    for side in (-1, 1):
        start = 0.15 if side > 0 else 0.3  # left kidney sits higher
        if lev > start:
            k = min(1.0, (lev - start) / 0.35) ** 0.5
            kx = spine.vx + side * rng.uniform(56, 70)
            ky = spine.vy + rng.uniform(-4, 10)
            b = Blob(kx, ky, (rng.uniform(19, 25) * k + 4,) * 2, (rng.uniform(25, 31) * k + 6,) * 2,
                     angle=-side * rng.uniform(0.3, 0.65), p=2.1, wobble=random_wobble(rng, 0.03, 4))
            kid.append((side, b, k))
            occupied.append((kx, ky, max(b.ay) + 6))
    sL = 1.0 - 0.45 * lev
    liver_r = Blob(*cav(-0.4 - 0.25 * lev, -0.1 * lev), (0.95 * cl * sL, 0.6 * cl * sL),
                   (1.0 * ca * sL, 0.95 * cp * sL), angle=rng.uniform(-0.15, 0.15), p=2.2,
                   wobble=random_wobble(rng, 0.06, 5))
    liver_parts = [liver_r]
    if lev < 0.65:
        sLL = 1.0 - lev / 0.65
        liver_parts.append(Blob(*cav(rng.uniform(0.0, 0.2), -0.5), (0.45 * cl * sLL + 5, 0.5 * cr * sLL + 5),
                                (0.45 * ca * sLL + 5, 0.3 * ca * sLL + 5), angle=rng.uniform(-0.4, 0.0),
                                wobble=random_wobble(rng, 0.06, 5)))
    occupied.append((liver_r.cx, liver_r.cy, min(liver_r.ax + liver_r.ay) * 0.9))
    spine_zone = Blob(spine.vx, spine.vy + 10, (spine.w / 2 + 14,) * 2, (spine.ay[0] + 12, 40.0))
    aorta_r = rng.uniform(9, 12.5)
    ao = (spine.vx + rng.uniform(8, 17), spine.vy - spine.ay[0] - aorta_r - rng.uniform(1, 4))
    ivc = (spine.vx - rng.uniform(20, 28), spine.vy - spine.ay[0] - rng.uniform(10, 18))
    occupied += [(ao[0], ao[1], aorta_r + 6), (ivc[0], ivc[1], 16), (spine.vx, spine.vy, spine.w / 2 + 10)]

    sp_s = 1.0 - 0.6 * abs(lev - 0.3)
    th_sp = rng.uniform(0.35, 0.75)
    spx, spy = body.blob.boundary_point(th_sp, body.inset(th_sp) + 22 * sp_s)
    spleen = Blob(spx, spy, (rng.uniform(17, 24) * sp_s,) * 2, (rng.uniform(38, 52) * sp_s,) * 2,
                  angle=th_sp + rng.uniform(-0.2, 0.2), p=2.0, wobble=random_wobble(rng, 0.06, 5))
    occupied.append((spx, spy, 25 * sp_s))
    stomach = None
    if lev < 0.8:
        st_s = 1.0 - 0.8 * lev
        stomach = Blob(*cav(rng.uniform(0.2, 0.45), rng.uniform(-0.5, -0.2)),
                       (rng.uniform(35, 60) * st_s + 8,) * 2, (rng.uniform(28, 45) * st_s + 8,) * 2,
                       angle=rng.uniform(-0.6, 0.6), wobble=random_wobble(rng, 0.07, 5))
        occupied.append((stomach.cx, stomach.cy, min(stomach.ax + stomach.ay)))

    # --- mesenteric vessels and bowel in the free space
    for x, y, g in s.sample_inside(body.d_cav, 3.0, int(rng.integers(12, 30))):
        s.dot(x, y, g.uniform(0.5, 2.2), v["blood"], T.BLOOD, length=g.exponential(3.0), angle=g.uniform(0, np.pi))
    oral = rng.uniform(180, 400) if rng.random() < 0.2 else None
    colon = []
    if lev > 0.45:  # ascending colon in the right flank
        colon.append((cav(-rng.uniform(0.6, 0.75), rng.uniform(-0.1, 0.3)), rng.uniform(15, 24), 1.0))
    if lev > 0.3:  # descending colon in the left flank
        colon.append((cav(rng.uniform(0.7, 0.82), rng.uniform(0.0, 0.4)), rng.uniform(11, 17), 1.0))
    if lev > 0.25 and rng.random() < 0.8:  # transverse colon anteriorly
        colon.append((cav(rng.uniform(-0.3, 0.4), -rng.uniform(0.6, 0.75)), rng.uniform(13, 20), rng.uniform(1.4, 2.5)))
    for (x, y), r, el in colon:
        _bowel_loop(s, s.sub_rng(), x, y, r, rng.choice(["stool", "gas"], p=[0.65, 0.35]), rng.uniform(-0.3, 0.3), el,
                    None, haustra=True)
        occupied.append((x, y, r * el))
    n_loops = int(4 + 16 * lev + rng.integers(0, 5))
    for _ in range(n_loops):
        # draw everything first: whether a spot is free may depend on the pixel grid
        r = rng.uniform(6, 14)
        kind = rng.choice(["fluid", "collapsed", "gas"], p=[0.5, 0.4, 0.1])
        angle, elong, loop_rng = rng.uniform(0, np.pi), rng.uniform(1.0, 1.8), s.sub_rng()
        p = _free_spot(s, occupied, body.d_cav, r, (cx - cl, cx + cr), (cy - ca, cy + 0.75 * cp))
        if p is None:
            continue
        _bowel_loop(s, loop_rng, *p, r, kind, angle, elong, oral if kind == "fluid" else None)
        occupied.append((p[0], p[1], r))

    # --- solid organs
    box, d = liver_parts[0].sdf(s.c, full)
    for part in liver_parts[1:]:
        d = np.minimum(d, part.sdf(s.c, full)[1])
    d += np.float32(1.5) * s.f["coarse"]  # gently irregular outline
    d = np.maximum(d, body.d_cav + np.float32(rng.uniform(0.5, 2.5)))
    d = np.maximum(d, -spine_zone.sdf(s.c, full)[1])
    for _, kb, kk in kid:
        d = np.maximum(d, -(kb.sdf(s.c, full)[1] - (2.0 + 4.0 * kk)))
    if stomach is not None:
        d = np.maximum(d, -(stomach.sdf(s.c, full)[1] - 3.0))
    liver_d = d
    s.fill(full, liver_d, s.tex(full, v["liver"], large=4, coarse=4, med=4, small=3, fine=3), T.LIVER)
    liver_a = s.c.alpha(liver_d)
    # hepatic veins towards the IVC, portal branches from the hilum
    vessel_val = v["blood"] if s.contrast else v["liver"] - rng.uniform(12, 22)
    for _ in range(int(rng.integers(2, 4))):
        ang = np.pi + rng.uniform(-1.1, 0.6)
        for seg in s.vessel_tree(ivc[0], ivc[1], ang, rng.uniform(2.5, 4.5), min_r=0.4,
                                 seg_len=rng.uniform(16, 26), p_stop=0.35, max_depth=5, curl=0.3):
            s.tube(*seg, vessel_val, T.BLOOD, weight_full=liver_a, strength=rng.uniform(0.5, 1.0))
    hil = cav(-0.15, -0.05)
    for _ in range(int(rng.integers(1, 4))):
        for seg in s.vessel_tree(*hil, np.pi + rng.uniform(-1.2, 1.2), rng.uniform(2.5, 4.5), min_r=0.4,
                                 seg_len=rng.uniform(14, 24), p_stop=0.4, max_depth=5, curl=0.3):
            s.tube(*seg, v["portal"] if s.contrast else vessel_val, T.BLOOD, weight_full=liver_a,
                   strength=rng.uniform(0.5, 1.0))
    for x, y, g in s.sample_inside(liver_d, 3.0, int(rng.integers(25, 60))):
        s.dot(x, y, g.uniform(0.4, 2.5), vessel_val, T.BLOOD, weight_full=liver_a * np.float32(g.uniform(0.5, 1.0)),
              length=g.exponential(1.5), angle=g.uniform(0, np.pi))

    # gallbladder at the inferior liver surface
    if 0.3 < lev < 0.85 and rng.random() < 0.5:
        gb = Blob(*cav(rng.uniform(-0.4, -0.2), rng.uniform(-0.5, -0.25)), (rng.uniform(11, 17),) * 2,
                  (rng.uniform(16, 25),) * 2, angle=rng.uniform(-0.8, 0.8), wobble=random_wobble(rng, 0.04, 4))
        s.blob(gb, v["bowel_wall"], T.BOWEL)
        inner = Blob(gb.cx, gb.cy, (gb.ax[0] - 1.5,) * 2, (gb.ay[0] - 1.5,) * 2, angle=gb.angle, wobble=gb.wobble)
        s.blob(inner, lambda b: s.tex(b, rng.uniform(0, 20), med=2), T.FLUID)

    # spleen, a crescent against the posterolateral wall
    notch = Blob(*body.blob.boundary_point(th_sp, body.inset(th_sp) + 22 * sp_s + spleen.ax[0] * 2.0),
                 (spleen.ax[0] * 1.3,) * 2, (spleen.ay[0] * 0.6,) * 2, angle=spleen.angle)
    sp_box, sp_d = s.blob(spleen, lambda b: s.tex(b, v["spleen"], coarse=4, med=4, small=3),
                          T.SPLEEN, parent=body.d_cav, margin=rng.uniform(0.5, 2.0), minus=(notch,))
    spleen_d = None
    if sp_box is not None:
        spleen_d = np.full_like(body.d, 1e3)
        spleen_d[sp_box] = sp_d

    # stomach: wall with rugal folds around gas / fluid / food
    if stomach is not None:
        st_box, st_d = s.blob(stomach, lambda b: s.tex(b, v["bowel_wall"], med=4, small=3), T.BOWEL,
                              parent=body.d_cav, margin=1.0)
        wall = rng.uniform(3, 6)
        lumen = Blob(stomach.cx, stomach.cy, (stomach.ax[0] - wall,) * 2, (stomach.ay[0] - wall,) * 2,
                     angle=stomach.angle, wobble=add_wobble(stomach.wobble, random_wobble(rng, 0.05, 14, 8)))
        kind = rng.choice(["gas_fluid", "food", "collapsed"], p=[0.5, 0.3, 0.2])
        if st_box is not None and kind != "collapsed":
            _, d_l = lumen.sdf(s.c, st_box)
            d_l = np.maximum(d_l, st_d + wall)
            if kind == "gas_fluid":
                s.fill(st_box, d_l, s.tex(st_box, s.v["fluid"] + rng.uniform(0, 25), med=3), T.BOWEL)
                X, Y = s.c.grid(st_box)
                level = stomach.cy + rng.uniform(-0.6, 0.3) * stomach.ay[0]
                s.fill(st_box, np.maximum(d_l, Y - level), s.v["gas"], T.GAS)
            else:
                s.fill(st_box, d_l, s.tex(st_box, rng.uniform(10, 50), mottle=35, med=20, small=10), T.BOWEL)
                bub = np.clip((s.f["mottle"][st_box] - 1.6) * 3, 0, 1) * s.c.alpha(d_l)
                s.c.paint(st_box, bub.astype(np.float32), s.v["gas"], T.GAS)

    # pancreas (lobulated, with fat between lobules) and splenic vein
    if 0.3 < lev < 0.9:
        py = spine.vy - spine.ay[0] - rng.uniform(28, 40)
        pts = [(spine.vx - rng.uniform(20, 32), py + rng.uniform(0, 10)), (spine.vx + 5, py - rng.uniform(4, 10)),
               (spine.vx + rng.uniform(40, 55), py + rng.uniform(0, 12)),
               (spine.vx + rng.uniform(65, 85), spine.vy - rng.uniform(0, 15))]
        radii = [rng.uniform(9, 13), rng.uniform(7, 10), rng.uniform(6, 9), rng.uniform(5, 8)]
        box, dist, r = polyline_distance(s.c, np.array(pts, np.float32), np.array(radii, np.float32), pad=3)
        if box is not None:
            d = dist - r + np.float32(2.0) * s.f["med2"][box]
            val = s.tex(box, v["pancreas"], med=5, small=5) - np.float32(v["pancreas"] - v["fat"]) * (
                np.clip((s.f["mottle"][box] - 1.3) * 2, 0, 1))
            s.fill(box, d, val, T.PANCREAS)
        sv = [(x + 0.0, y + rr * 0.9) for (x, y), rr in zip(pts[1:], radii[1:])]
        s.tube(sv, rng.uniform(3, 4.5), v["portal"], T.BLOOD)

    # kidneys: cortex, medullary pyramids, sinus fat with the pelvis
    for side, kb, k in kid:
        box, d = kb.sdf(s.c)
        if box is None:
            continue
        s.fill(box, d, s.tex(box, v["cortex"], med=3, small=3), T.KIDNEY)
        ca_, sa_ = math.cos(kb.angle), math.sin(kb.angle)
        def local(px, py):  # kidney frame -> image
            return kb.cx + ca_ * px - sa_ * py, kb.cy + sa_ * px + ca_ * py
        med = -side  # medial direction in the kidney frame's x
        sin_c = (med * kb.ax[0] * rng.uniform(0.45, 0.6), rng.normal(0, 2))
        n_pyr = int(rng.integers(4, 7))
        for alpha_ in np.linspace(-1.3, 1.3, n_pyr) + rng.normal(0, 0.1, n_pyr):
            if k < 0.4:
                break
            ux, uy = -med * math.cos(alpha_), math.sin(alpha_)
            px, py = local(sin_c[0] + ux * 0.75 * kb.ax[0], sin_c[1] + uy * 0.6 * kb.ay[0])
            psi = math.atan2(py - local(*sin_c)[1], px - local(*sin_c)[0])
            half_len, half_w = kb.ax[0] * rng.uniform(0.22, 0.3), kb.ax[0] * rng.uniform(0.12, 0.17)
            s.blob(Blob(px, py, (half_w,) * 2, (half_len * 1.1, half_len * 0.9), angle=psi - np.pi / 2,
                        wobble=random_wobble(rng, 0.05, 3)),
                   lambda b: s.tex(b, v["medulla"], small=3), T.KIDNEY)
        if k > 0.5:
            sx_, sy_ = local(sin_c[0] + med * kb.ax[0] * 0.15, sin_c[1])
            sinus = Blob(sx_, sy_, (kb.ax[0] * 0.42,) * 2, (kb.ay[0] * 0.38,) * 2, angle=kb.angle,
                         wobble=random_wobble(rng, 0.08, 4))
            s.blob(sinus, s.fat_value, T.FAT)
            s.blob(Blob(sx_ + rng.normal(0, 2), sy_, (sinus.ax[0] * 0.45,) * 2, (sinus.ay[0] * 0.5,) * 2),
                   v["fluid"], T.FLUID)
            if k > 0.8 and rng.random() < 0.6:  # renal vein towards the IVC / past the aorta
                hx, hy = local(med * kb.ax[0] * 1.4, 0.0)
                tx, ty = (ivc[0] + 6, ivc[1] + 4) if side < 0 else (ao[0] + aorta_r * 0.2, ao[1] - aorta_r - 3)
                s.tube([(sx_, sy_), (hx, hy), (0.5 * (hx + tx), 0.5 * (hy + ty) - 3), (tx, ty)],
                       [3.5, 4.0, 3.2, 3.0], v["blood"], T.BLOOD)

    # diaphragmatic crura around the aorta
    if lev < 0.75:
        for side in (-1, 1):
            s.tube([(spine.vx + side * (spine.w / 2 - 4), spine.vy - spine.ay[0] * 0.3),
                    (ao[0] + side * (aorta_r + 3.5), ao[1] + aorta_r * 0.3),
                    (ao[0] + side * (aorta_r * 0.6 + 2.5), ao[1] - aorta_r - 2)],
                   [rng.uniform(2.5, 4), rng.uniform(2.2, 3.2), rng.uniform(1.2, 2.2)], s.muscle_value, T.MUSCLE)
    # great vessels
    ivc_b = Blob(*ivc, (rng.uniform(10, 15),) * 2, (rng.uniform(7, 11),) * 2, angle=rng.uniform(-0.5, 0.5))
    s.blob(ivc_b, lambda b: s.tex(b, v["blood"] * (0.9 if s.contrast else 1.0), med=2), T.BLOOD)
    ao_b = Blob(*ao, (aorta_r,) * 2, (aorta_r,) * 2)
    s.blob(ao_b, lambda b: s.tex(b, v["blood"] + rng.uniform(-5, 10), med=2), T.BLOOD)
    if rng.random() < 0.5:  # atherosclerotic plaques on the aortic wall
        for _ in range(int(rng.integers(1, 4))):
            t = rng.uniform(0, 2 * np.pi)
            s.calcification(ao[0] + (aorta_r - 0.5) * math.cos(t), ao[1] + (aorta_r - 0.5) * math.sin(t),
                            rng.uniform(0.6, 1.6))
    if lev > 0.5:  # superior mesenteric artery and vein
        sma = (ao[0] - rng.uniform(0, 5), ao[1] - aorta_r - rng.uniform(10, 16))
        s.dot(*sma, rng.uniform(2.5, 3.8), v["blood"], T.BLOOD)
        s.dot(sma[0] - rng.uniform(10, 15), sma[1] + rng.uniform(-3, 3), rng.uniform(4, 6), v["portal"], T.BLOOD)

    spine.paint_muscles(s, lev)
    spine.paint_bone(s, transverse=rng.random() < 0.6, ribs=False)

    # ribs and costal cartilage in the wall at the upper levels
    n_r = max(0, int(round((1.0 - lev) * 4 + rng.uniform(0, 2))))
    for side in (-1, 1):
        ths = rng.uniform(-0.9, 1.3, n_r)
        ths = np.where(side > 0, ths, np.pi - ths)
        _ribs(s, body, ths, cartilage_from=lambda th: math.sin(th) < -0.5)

    # lesions and calcifications
    for x, y, g in s.sample_inside(liver_d, 10.0, int(rng.integers(2, 5))):
        s.lesion(x, y, g.uniform(1.5, 7.5), g.choice([-1, -1, 1]) * g.uniform(10, 30), organ_alpha=liver_a,
                 hetero=g.uniform(0, 6), rng=g)
    if spleen_d is not None and rng.random() < 0.6:
        for x, y, g in s.sample_inside(spleen_d, 8.0, 1):
            s.lesion(x, y, g.uniform(1.5, 6), -g.uniform(10, 30), organ_alpha=s.c.alpha(spleen_d), rng=g)
    for side, kb, k in kid:
        if rng.random() < 0.5:
            box, d = kb.sdf(s.c)
            kd = np.full_like(body.d, 1e3)
            kd[box] = d
            for x, y, g in s.sample_inside(kd, 6.0, 1):
                s.lesion(x, y, g.uniform(2.0, 7.0), g.choice([-1, 1]) * g.uniform(15, 30),
                         organ_alpha=s.c.alpha(kd), rng=g)
        if rng.random() < 0.15:
            s.calcification(kb.cx + rng.normal(0, 4), kb.cy + rng.normal(0, 6), rng.uniform(0.8, 2.0))
    if rng.random() < 0.4:  # a granuloma in liver or spleen
        pts = s.sample_inside(liver_d if (spleen_d is None or rng.random() < 0.6) else spleen_d, 4.0, 1)
        for x, y, g in pts:
            s.calcification(x, y, g.uniform(0.6, 1.8), rng=g)


# ====================================================================== thorax
def _thorax(s: _Scene, body: _Body) -> None:
    rng = s.rng
    v = s.v
    lev = rng.uniform(0.0, 1.0)  # 0: mid heart, 1: near the diaphragm
    full = s.c.full
    t_ic = rng.uniform(4, 7)  # intercostal layer holding the ribs
    d_cav = body.d_cav + np.float32(t_ic)
    spine = _Spine(s, body, "thorax")
    cx, cy, cl, cr, ca, cp = body.cavity_frame(t_ic)

    # the posterior cavity wraps around the spine: carve out the paraspinal region
    indent = Blob(spine.vx, spine.canal_y + 18, (rng.uniform(40, 48),) * 2, (rng.uniform(28, 34), 60.0), p=2.4)
    _, d_ind = indent.sdf(s.c, full)
    d_cav = np.maximum(d_cav, -d_ind)
    # lungs fill the cavity; denser posteriorly (gravity-dependent perfusion)
    X, Y = s.c.grid(full)
    dep = np.clip((Y - cy) / (cp + ca), -0.5, 0.5) * np.float32(rng.uniform(40, 80))
    lung_val = s.tex(full, v["lung"], coarse=15, med=10, small=12, fine=18, fine2=10) + dep
    s.fill(full, d_cav, lung_val, T.LUNG)

    # mediastinum: posterior fat around spine/aorta/oesophagus, anterior heart
    aorta_r = rng.uniform(10.5, 14)
    ao = (spine.vx + spine.w / 2 + aorta_r * rng.uniform(0.2, 0.6), spine.vy - rng.uniform(4, 14))
    eso = (spine.vx + rng.uniform(2, 10), spine.vy - spine.ay[0] - rng.uniform(8, 14))
    post = Blob(spine.vx + 6, spine.vy - 4, (spine.w / 2 + 8, spine.w / 2 + 2 * aorta_r + 4),
                (spine.ay[0] + 22, spine.ay[1] + 8), wobble=random_wobble(rng, 0.05, 4))
    s.blob(post, s.fat_value, T.FAT, parent=d_cav, margin=0.5)

    sH = 1.0 - 0.45 * lev
    h_ax, h_ay = rng.uniform(46, 56) * sH, rng.uniform(35, 43) * sH
    hx, hy = cx + rng.uniform(10, 30), cy - ca + h_ay * 1.1 + rng.uniform(4, 12)
    heart = Blob(hx, hy, (h_ax,) * 2, (h_ay,) * 2, angle=rng.uniform(-0.6, -0.25), wobble=random_wobble(rng, 0.05, 4))
    fat_pad = Blob(heart.cx + 3, heart.cy - 2, (heart.ax[0] + rng.uniform(2, 6),) * 2,
                   (heart.ay[0] + rng.uniform(2, 5),) * 2, angle=heart.angle, wobble=random_wobble(rng, 0.08, 4))
    s.blob(fat_pad, s.fat_value, T.FAT, parent=d_cav, margin=rng.uniform(0.5, 2))
    # anterior mediastinal fat behind the sternum
    s.blob(Blob(cx + rng.uniform(-5, 5), cy - ca + 12, (rng.uniform(14, 24),) * 2, (12.0, 12.0),
                wobble=random_wobble(rng, 0.1, 4)),
           s.fat_value, T.FAT, parent=d_cav)

    liver_d = None
    if lev > 0.45 and rng.random() < 0.4 + 0.6 * lev:  # liver dome under the right lung
        k = (lev - 0.45) / 0.55
        dome = Blob(cx - cl * rng.uniform(0.35, 0.5), cy + cp * rng.uniform(-0.1, 0.25),
                    (cl * (0.3 + 0.45 * k),) * 2, (cp * (0.35 + 0.4 * k),) * 2, wobble=random_wobble(rng, 0.05, 4))
        box, d = dome.sdf(s.c, full)
        d = np.maximum(d, d_cav + np.float32(rng.uniform(1.0, 3.0)))
        liver_d = d
        s.fill(full, d, s.tex(full, v["liver"], large=4, coarse=4, med=4, small=3, fine=3), T.LIVER)
        la = s.c.alpha(d)
        vval = v["blood"] if s.contrast else v["liver"] - rng.uniform(12, 22)
        for x, y, g in s.sample_inside(d, 3.0, int(rng.integers(10, 30))):
            s.dot(x, y, g.uniform(0.5, 3.0), vval, T.BLOOD, weight_full=la, length=g.exponential(3),
                  angle=g.uniform(0, np.pi))
    if lev > 0.7 and rng.random() < 0.5:  # gastric fundus with its air bubble
        f = Blob(cx + cr * rng.uniform(0.35, 0.5), cy + cp * rng.uniform(-0.2, 0.2), (rng.uniform(20, 32),) * 2,
                 (rng.uniform(18, 28),) * 2, wobble=random_wobble(rng, 0.06, 5))
        box, d = f.sdf(s.c)
        if box is not None:
            d = np.maximum(d, d_cav[box] + 2.0)
            s.fill(box, d, v["bowel_wall"], T.BOWEL)
            X, Y = s.c.grid(box)
            lvl = f.cy + rng.uniform(-0.3, 0.5) * f.ay[0]
            s.fill(box, d + 3.0, s.v["fluid"] + 10, T.BOWEL)
            s.fill(box, np.maximum(d + 3.0, Y - lvl), s.v["gas"], T.GAS)

    # heart: myocardium, chambers, coronary arteries in the epicardial fat
    s.blob(heart, lambda b: s.tex(b, v["myocardium"], med=3, small=3), T.MYOCARDIUM, parent=d_cav, margin=3.0)
    ca_, sa_ = math.cos(heart.angle), math.sin(heart.angle)

    def hl(px, py):
        return heart.cx + ca_ * px - sa_ * py, heart.cy + sa_ * px + ca_ * py
    A, B = heart.ax[0], heart.ay[0]
    blood = lambda b: s.tex(b, v["blood"], med=2, small=2)  # noqa: E731
    lv = Blob(*hl(0.2 * A, 0.18 * B), (0.45 * A,) * 2, (0.42 * B,) * 2, angle=heart.angle,
              wobble=random_wobble(rng, 0.05, 4))
    rv = Blob(*hl(-0.05 * A, -0.5 * B), (0.55 * A,) * 2, (0.28 * B,) * 2, angle=heart.angle - 0.15,
              wobble=random_wobble(rng, 0.06, 4))
    s.blob(lv, blood, T.BLOOD)
    s.blob(rv, blood, T.BLOOD, minus=(Blob(lv.cx, lv.cy, (lv.ax[0] + 7,) * 2, (lv.ay[0] + 7,) * 2, angle=lv.angle),))
    if lev < 0.6:  # atria behind the ventricles
        ra = Blob(*hl(-0.62 * A, 0.3 * B), (0.3 * A,) * 2, (0.4 * B,) * 2, angle=heart.angle)
        s.blob(ra, blood, T.BLOOD)
    # papillary muscles and trabeculation in the LV
    for _ in range(2):
        px, py = hl(rng.uniform(0.1, 0.45) * A, rng.uniform(0.0, 0.4) * B)
        s.dot(px, py, rng.uniform(2.0, 4.0), v["myocardium"], T.MYOCARDIUM)
    for t in rng.uniform(0, 2 * np.pi, int(rng.integers(2, 5))):
        px, py = heart.boundary_point(t, -rng.uniform(1.0, 3.0))
        s.dot(px, py, rng.uniform(1.2, 2.2), v["blood"], T.BLOOD)
        if rng.random() < 0.35:
            s.calcification(px, py, rng.uniform(0.6, 1.5))

    # posterior mediastinum: aorta, oesophagus, azygos
    s.blob(Blob(*ao, (aorta_r,) * 2, (aorta_r,) * 2), lambda b: s.tex(b, v["blood"], med=2), T.BLOOD)
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            t = rng.uniform(0, 2 * np.pi)
            s.calcification(ao[0] + (aorta_r - 0.5) * math.cos(t), ao[1] + (aorta_r - 0.5) * math.sin(t),
                            rng.uniform(0.6, 1.5))
    er = rng.uniform(6, 9)
    s.blob(Blob(*eso, (er,) * 2, (er * 0.8,) * 2, wobble=random_wobble(rng, 0.08, 4)), s.muscle_value, T.MUSCLE)
    if rng.random() < 0.5:
        s.dot(eso[0] + rng.normal(0, 1), eso[1], rng.uniform(1.0, 2.5), v["gas"], T.GAS)
    s.dot(spine.vx - rng.uniform(8, 14), spine.vy - spine.ay[0] + rng.uniform(-2, 4), rng.uniform(2.5, 4),
          v["blood"], T.BLOOD)  # azygos vein
    if lev > 0.4:  # IVC entering the right atrium
        s.blob(Blob(cx - rng.uniform(20, 35), spine.vy - spine.ay[0] - rng.uniform(25, 40), (rng.uniform(10, 14),) * 2,
                    (rng.uniform(9, 12),) * 2), v["blood"], T.BLOOD)

    # lung vessels: trees from the hila, and cross-sections everywhere
    lung_m = (np.clip((-350.0 - s.c.hu) / 400.0, 0.0, 1.0) * s.c.alpha(d_cav)).astype(np.float32)
    lung_d = np.where(s.c.label == T.LUNG, d_cav, np.float32(10.0))
    vval = v["blood"] if s.contrast else v["blood"] - 5
    for side in (-1, 1):
        hxl = spine.vx + side * rng.uniform(30, 45)
        hyl = spine.vy - spine.ay[0] - rng.uniform(15, 35)
        base = 0.0 if side > 0 else np.pi
        for _ in range(int(rng.integers(4, 8))):
            ang = base + side * rng.uniform(-1.4, 1.4)
            x0, y0 = hxl + rng.normal(0, 8), hyl + rng.normal(0, 12)
            for seg in s.vessel_tree(x0, y0, ang, rng.uniform(1.5, 3.2), min_r=0.3,
                                     seg_len=rng.uniform(10, 18), p_stop=0.45, max_depth=5, curl=0.3):
                s.tube(*seg, vval, T.BLOOD, weight_full=lung_m)
        near = [p for p in s.sample_inside(lung_d, 6.0, 60) if math.hypot(p[0] - hxl, p[1] - hyl) < 55]
        for bx_, by_, g in near[: int(rng.integers(1, 4))]:  # bronchi: thin wall, dark lumen, beside an artery
            br = g.uniform(1.2, 3.0)
            ang = g.uniform(0, np.pi)
            ln = g.exponential(4)
            s.dot(bx_, by_, br + g.uniform(0.6, 1.2), v["muscle"] - 20, T.MUSCLE, weight_full=lung_m,
                  length=ln, angle=ang)
            s.dot(bx_, by_, br, v["gas"] + 50, T.GAS, weight_full=lung_m, length=ln, angle=ang)
            s.dot(bx_ + br * 2.2, by_ + br * 0.5, br * g.uniform(0.8, 1.1), vval, T.BLOOD, weight_full=lung_m,
                  length=ln, angle=ang)
    for x, y, g in s.sample_inside(lung_d, 2.0, int(rng.integers(100, 180))):
        dm = min(abs(x - spine.vx), 120.0)
        r = g.uniform(0.25, 0.7) + g.exponential(0.6) * (1.3 - dm / 120.0)
        s.dot(x, y, r, vval, T.BLOOD, weight_full=lung_m, length=g.exponential(1.2), angle=g.uniform(0, np.pi))
    # interlobar fissures: faint thin curved lines
    for side in (-1, 1):
        if rng.random() < 0.6:
            x0 = spine.vx + side * rng.uniform(25, 45)
            y0 = spine.vy - rng.uniform(20, 50)
            pts = [(x0, y0)]
            ang = (0.0 if side > 0 else np.pi) - side * rng.uniform(0.6, 1.2)
            for _ in range(5):
                ang += rng.normal(0, 0.15)
                pts.append((pts[-1][0] + 20 * math.cos(ang), pts[-1][1] + 20 * math.sin(ang)))
            s.tube(pts, rng.uniform(0.15, 0.3), v["muscle"], T.LUNG, weight_full=lung_m)
    # lung nodules
    for x, y, g in s.sample_inside(lung_d, 6.0, int(rng.integers(1, 4))):
        r = g.uniform(1.5, 5.0)
        b = Blob(x, y, (r,) * 2, (r,) * 2, wobble=random_wobble(g, 0.12, 6))
        box, d = b.sdf(s.c)
        if box is not None:
            d = d + np.float32(0.4) * s.f["small"][box]
            s.fill(box, d, s.tex(box, g.uniform(-20, 40), small=8), T.LESION, edge=g.uniform(0.5, 1.5))

    spine.paint_muscles(s, lev)
    spine.paint_bone(s, transverse=rng.random() < 0.7, ribs=rng.random() < 0.3)
    # sternum (body or xiphoid) and ribs / costal cartilage all around the wall
    st_x, st_y = body.blob.boundary_point(-np.pi / 2, body.inset(-np.pi / 2) + t_ic * 0.4)
    ssz = 1.0 - 0.5 * lev
    s.bone(Blob(st_x + rng.normal(0, 2), st_y, (rng.uniform(12, 18) * ssz + 3,) * 2, (rng.uniform(4.5, 6.5),) * 2,
                wobble=random_wobble(rng, 0.05, 3)), rng.uniform(1.0, 1.6))
    ths = np.concatenate([rng.uniform(-1.25, 1.3, int(rng.integers(4, 7))),
                          np.pi - rng.uniform(-1.25, 1.3, int(rng.integers(4, 7)))])
    _ribs(s, body, ths, depth_frac=(1.0, 1.0), extra=t_ic * 0.5, cartilage_from=lambda th: math.sin(th) < -0.75)

    if liver_d is not None:
        for x, y, g in s.sample_inside(liver_d, 8.0, int(rng.integers(1, 3))):
            s.lesion(x, y, g.uniform(1.5, 6), g.choice([-1, 1]) * g.uniform(10, 30),
                     organ_alpha=s.c.alpha(liver_d), rng=g)


def render(canvas: Canvas, rng: np.random.Generator, texture_seq: np.random.SeedSequence, *,
           region: str, contrast: bool, table: bool) -> None:
    """Paint one axial slice of ``region`` ('abdomen' or 'thorax') onto ``canvas``.

    ``rng`` draws the anatomy (its draws never depend on the pixel grid) and
    ``texture_seq`` seeds the texture fields.
    """
    s = _Scene(canvas, rng, texture_seq, contrast)
    body = _Body(s, region)
    if table:
        _table(s, body)
    body.paint(s)
    if region == "abdomen":
        _abdomen(s, body)
    else:
        _thorax(s, body)
