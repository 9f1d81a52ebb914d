"""Ray-cast scenes for the 3D step, closer to a depth camera on a robot than a floor with
boxes: a camera 0.8-1.6 m up, tilted 20-35 degrees down over a floor with walls; boxes
(turned about the vertical, so some faces are grazing), spheres, upright cylinders and
boxes with a thin pole on top, at 0.6-6 m, some occluding others, some cut by the image
border. Then what a stereo camera and a segmenter do to them: noise growing with
distance (sigma = 1.5 mm * z^2 by default), 1 mm quantisation, clumped invalid pixels,
flying pixels along depth edges, and masks 0-3 px too wide, eroded, blocky from a
quarter-resolution grid, or bleeding onto the object behind.

Truth is the visible surface of each object in the clean render (the pixels it really
covers): the box of those points in the optical frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ovseg_ros.depth import DepthNoise, Intrinsics

HEIGHT, WIDTH = 480, 640
K = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5)
MASK_ERRORS = ("exact", "wide1", "wide2", "wide3", "eroded2", "blocky", "bleed_behind")


@dataclass
class Shape:
    kind: str  # box | sphere | cylinder
    center: np.ndarray  # world frame: x right, y up (floor at 0), z forward; a box's or cylinder's base centre
    size: np.ndarray  # box: x, y, z extents; sphere: radius in [0]; cylinder: radius, height
    yaw: float = 0.0  # boxes: turn about the vertical, radians


@dataclass
class Scene:
    depth: np.ndarray  # clean, metres, NaN where no surface
    labels: np.ndarray  # objects 1..n, floor n + 1, walls n + 2, nothing 0
    num_objects: int
    camera_height: float
    tilt_deg: float
    grazing: np.ndarray  # surface seen at more than GRAZING_DEG from its normal
    shapes: list[list[Shape]] = field(default_factory=list)


GRAZING_DEG = 80.0  # stereo matching fails on surfaces seen more obliquely; they have no depth


def camera_rays(camera_height: float, tilt_deg: float, k: Intrinsics = K):
    """World-frame origin and per-pixel ray directions scaled so the optical-frame z
    component is 1: a hit at ray parameter t has depth t."""
    vs, us = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    xc, yc = (us - k.cx) / k.fx, (vs - k.cy) / k.fy
    tilt = np.radians(tilt_deg)
    forward = np.array([0.0, -np.sin(tilt), np.cos(tilt)])  # optical z in the world
    down = np.array([0.0, -np.cos(tilt), -np.sin(tilt)])  # optical y in the world
    rays = xc[..., None] * np.array([1.0, 0.0, 0.0]) + yc[..., None] * down + forward
    return np.array([0.0, camera_height, 0.0]), rays


# Each hit function: (ray parameter of the first hit, inf for none; the surface's normal
# there, world frame, any length): the normal is the shape's own, so grazing surfaces are
# told apart exactly, slivers one pixel wide included.

def _hit_box(origin, rays, shape: Shape):
    c, s = np.cos(-shape.yaw), np.sin(-shape.yaw)  # into the box's frame
    rotate = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    centre = shape.center + np.array([0.0, shape.size[1] / 2, 0.0])
    o = rotate @ (origin - centre)
    d = rays @ rotate.T
    half = shape.size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / d
        t0, t1 = (-half - o) * inverse, (half - o) * inverse
    entry = np.where(np.isnan(t0), -np.inf, np.minimum(t0, t1))
    near = entry.max(axis=-1)
    far = np.nanmin(np.maximum(t0, t1), axis=-1)
    face = entry.argmax(axis=-1)  # the slab entered last is the face hit
    normal = np.zeros(rays.shape)
    np.put_along_axis(normal, face[..., None], -np.sign(np.take_along_axis(d, face[..., None], -1)), -1)
    return np.where((far >= near) & (near > 0), near, np.inf), normal @ rotate


def _hit_sphere(origin, rays, shape: Shape):
    radius = shape.size[0]
    centre = shape.center + np.array([0.0, radius, 0.0])
    oc = origin - centre
    a = np.einsum("...i,...i", rays, rays)
    b = 2 * rays @ oc
    disc = b * b - 4 * a * (oc @ oc - radius * radius)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    hit = np.where((disc >= 0) & (t > 0), t, np.inf)
    return hit, oc + np.nan_to_num(t, nan=0.0)[..., None] * rays


def _hit_cylinder(origin, rays, shape: Shape):
    radius, height = shape.size[0], shape.size[1]
    ox, oz = origin[0] - shape.center[0], origin[2] - shape.center[2]
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    disc = b * b - 4 * a * (ox * ox + oz * oz - radius * radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        side = (-b - np.sqrt(disc)) / (2 * a)
        y = origin[1] + side * dy
        side = np.where((disc >= 0) & (side > 0) & (y >= shape.center[1]) & (y <= shape.center[1] + height), side, np.inf)
        cap = (shape.center[1] + height - origin[1]) / dy  # the top disc
        px, pz = ox + cap * dx, oz + cap * dz
        cap = np.where((cap > 0) & (px * px + pz * pz <= radius * radius), cap, np.inf)
    on_side = side <= cap
    t = np.where(np.isfinite(side), side, 0.0)
    side_normal = np.stack([ox + t * dx, np.zeros_like(t), oz + t * dz], axis=-1)
    normal = np.where(on_side[..., None], side_normal, np.array([0.0, 1.0, 0.0]))
    return np.minimum(side, cap), normal


HITS = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


def render(objects: list[list[Shape]], camera_height: float, tilt_deg: float, back_wall: float, side_wall: float) -> Scene:
    """Objects (each a list of shapes with one id) over a floor, a back wall and two side
    walls; the pixels whose surface is seen at more than GRAZING_DEG from its normal are
    marked grazing (from the shapes' own normals)."""
    origin, rays = camera_rays(camera_height, tilt_deg)
    n = len(objects)
    depth = np.full((HEIGHT, WIDTH), np.inf)
    labels = np.zeros((HEIGHT, WIDTH), np.int64)
    normals = np.zeros(rays.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(rays[..., 1] < 0, -camera_height / rays[..., 1], np.inf)
        back = np.where(rays[..., 2] > 0, back_wall / rays[..., 2], np.inf)
        sides = np.where(rays[..., 0] != 0, side_wall / np.abs(rays[..., 0]), np.inf)
    surfaces = [(floor, np.array([0.0, 1.0, 0.0]), n + 1), (back, np.array([0.0, 0.0, 1.0]), n + 2),
                (sides, np.array([1.0, 0.0, 0.0]), n + 2)]
    for i, shapes in enumerate(objects):
        hits = [HITS[s.kind](origin, rays, s) for s in shapes]
        t = np.min([h[0] for h in hits], axis=0)
        normal = hits[0][1]
        for other_t, other_normal in hits[1:]:
            normal = np.where((other_t <= t)[..., None], other_normal, normal)
        surfaces.append((t, normal, i + 1))
    for t, normal, label in surfaces:
        closer = t < depth
        depth[closer], labels[closer] = t[closer], label
        normals[closer] = np.broadcast_to(normal, rays.shape)[closer]
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.abs(np.einsum("...i,...i", normals, rays)) / (np.linalg.norm(normals, axis=-1) * np.linalg.norm(rays, axis=-1))
    grazing = np.isfinite(depth) & (np.degrees(np.arccos(np.clip(np.nan_to_num(cosine, nan=1.0), 0, 1))) > GRAZING_DEG)
    depth[~np.isfinite(depth)] = np.nan
    labels[np.isnan(depth)] = 0
    return Scene(depth.astype(np.float32), labels, n, camera_height, tilt_deg, grazing, objects)


def random_scene(seed: int) -> Scene:
    """8-11 objects on the floor in view (some at the border), no two overlapping."""
    rng = np.random.default_rng(seed)
    camera_height, tilt = rng.uniform(0.8, 1.6), rng.uniform(20, 35)
    objects, footprints = [], []
    tries = 0
    while len(objects) < rng.integers(8, 12) and tries < 500:
        tries += 1
        forward = rng.uniform(0.9, 6.0)
        lateral = rng.uniform(-0.75, 0.75) * forward * 0.62 + 0.1 * rng.normal()  # the view is about 62% of z wide
        kind = rng.choice(["box", "box", "sphere", "cylinder", "pole"])
        if kind == "box":
            size = np.array([rng.uniform(0.15, 0.9), rng.uniform(0.15, 1.1), rng.uniform(0.15, 0.9)])
            shapes = [Shape("box", np.array([lateral, 0.0, forward]), size, rng.uniform(0, np.pi / 2))]
            reach = np.hypot(size[0], size[2]) / 2
        elif kind == "sphere":
            radius = rng.uniform(0.05, 0.35)
            shapes, reach = [Shape("sphere", np.array([lateral, 0.0, forward]), np.array([radius]))], radius
        elif kind == "cylinder":
            radius = rng.uniform(0.04, 0.3)
            shapes = [Shape("cylinder", np.array([lateral, 0.0, forward]), np.array([radius, rng.uniform(0.3, 1.5)]))]
            reach = radius
        else:  # a crate with a thin pole on top: the pole is 3-7 px wide
            size = np.array([rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.6)])
            pole = np.array([rng.uniform(0.015, 0.025), rng.uniform(0.4, 0.9)])
            shapes = [Shape("box", np.array([lateral, 0.0, forward]), size, rng.uniform(0, np.pi / 2)),
                      Shape("cylinder", np.array([lateral, size[1], forward]), pole)]
            reach = np.hypot(size[0], size[2]) / 2
        if any(np.hypot(lateral - x, forward - z) < reach + r + 0.05 for x, z, r in footprints):
            continue
        footprints.append((lateral, forward, reach))
        objects.append(shapes)
    return render(objects, camera_height, tilt, back_wall=rng.uniform(6.5, 9.0), side_wall=rng.uniform(2.5, 4.0))


def degrade(scene: Scene, rng: np.random.Generator, noise: DepthNoise = DepthNoise()) -> np.ndarray:
    """A stereo camera's depth of the scene: flying pixels on both sides of depth edges
    (half of the pixels there take a depth between theirs and the other side's),
    Gaussian noise with the noise model's sigma(z), clumped holes (about 4% of the
    image in blobs) plus 1% single invalid pixels, no depth on grazing surfaces,
    quantisation."""
    depth, grazing = scene.depth, scene.grazing
    z = depth.astype(np.float64)
    filled = np.where(np.isfinite(z), z, 0.0)
    out = z.copy()
    for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
        other = np.roll(filled, shift, axis=axis)
        wrapped = [slice(None), slice(None)]
        wrapped[axis] = 0 if shift == 1 else -1
        other[tuple(wrapped)] = 0  # no neighbour across the image border
        edge = (np.abs(other - filled) > np.maximum(0.05, 0.03 * filled)) & (other > 0) & (filled > 0)
        edge &= rng.random(z.shape) < 0.5
        mix = rng.uniform(0.1, 0.9, z.shape)
        out = np.where(edge, mix * filled + (1 - mix) * other, out)
    sigma = noise.sigma(np.nan_to_num(out, nan=1.0))
    out = out + rng.normal(0.0, 1.0, z.shape) * sigma
    coarse = rng.random((HEIGHT // 8 + 1, WIDTH // 8 + 1)) < 0.05
    blobs = cv2.resize(coarse.astype(np.uint8), None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)[:HEIGHT, :WIDTH]
    blobs = cv2.erode(blobs, np.ones((3, 3), np.uint8), iterations=int(rng.integers(0, 3))).astype(bool)
    out[blobs | (rng.random(z.shape) < 0.01) | grazing] = np.nan
    out = np.round(out / noise.quantum) * noise.quantum
    out[~(out > 0)] = np.nan
    return out.astype(np.float32)


def segmenter_masks(scene: Scene, mode: str) -> np.ndarray:
    """Panoptic ids as a segmenter would give them with the given mask error; objects
    are painted far to near, so a nearer object's wider mask covers the one behind."""
    labels = scene.labels
    out = labels.copy()
    kernel = np.ones((3, 3), np.uint8)
    order = sorted(range(1, scene.num_objects + 1), key=lambda i: -np.nanmedian(scene.depth[labels == i]) if (labels == i).any() else 0)
    objects = (labels >= 1) & (labels <= scene.num_objects)
    for i in order:
        mask = (labels == i).astype(np.uint8)
        if not mask.any():
            continue
        if mode.startswith("wide"):
            grown = cv2.dilate(mask, kernel, iterations=int(mode[4:])).astype(bool)
        elif mode == "eroded2":
            out[(labels == i) & ~cv2.erode(mask, kernel, iterations=2).astype(bool)] = 0
            continue
        elif mode == "blocky":  # thresholded at a quarter resolution, upsampled by nearest
            small = cv2.resize(mask.astype(np.float32), (WIDTH // 4, HEIGHT // 4), interpolation=cv2.INTER_AREA) >= 0.5
            grown = cv2.resize(small.astype(np.uint8), (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST).astype(bool)
            out[(out == i) & ~grown] = 0
        elif mode == "bleed_behind":  # 3 px onto the objects behind, 1 px elsewhere
            wide = cv2.dilate(mask, kernel, iterations=3).astype(bool)
            grown = cv2.dilate(mask, kernel).astype(bool) | (wide & objects & (labels != i))
        else:
            grown = mask.astype(bool)
        out[grown] = i
    return out


def visible_truth(scene: Scene, depth: np.ndarray | None = None, k: Intrinsics = K):
    """Per object [n, 3] centre and size of its visible surface where the camera has
    depth (the pixels it covers, less those seen at more than GRAZING_DEG from their
    normal and, given the camera's `depth`, those without a value there: no method can
    measure what falls in a hole), at the clean render's depth; and that pixel count."""
    n = scene.num_objects
    centre, size, pixels = np.full((n, 3), np.nan), np.full((n, 3), np.nan), np.zeros(n, int)
    measured = ~scene.grazing if depth is None else ~scene.grazing & np.isfinite(depth)
    for i in range(1, n + 1):
        vs, us = np.nonzero((scene.labels == i) & measured)
        if vs.size == 0:
            continue
        z = scene.depth[vs, us].astype(np.float64)
        xyz = np.stack([(us - k.cx) * z / k.fx, (vs - k.cy) * z / k.fy, z], axis=1)
        low, high = xyz.min(0), xyz.max(0)
        centre[i - 1], size[i - 1], pixels[i - 1] = (low + high) / 2, high - low, vs.size
    return centre, size, pixels


def tolerances(z: np.ndarray, noise: DepthNoise = DepthNoise()):
    """The claim per object at depth z: centre within max(2 cm, 1% z), each size within
    max(3 cm, 2% z); along the optical axis both plus 3 sigma of the noise there. [n, 3] each."""
    z = np.asarray(z, np.float64)
    centre = np.repeat(np.maximum(0.02, 0.01 * z)[:, None], 3, axis=1)
    size = np.repeat(np.maximum(0.03, 0.02 * z)[:, None], 3, axis=1)
    centre[:, 2] += 3 * noise.sigma(z)
    size[:, 2] += 3 * noise.sigma(z)
    return centre, size


@dataclass
class Case:
    """One object of one scene under one mask error: errors against the visible surface."""

    scene: int
    mask_error: str
    kind: str
    z: float
    centre_error: np.ndarray  # [3] metres, absolute
    size_error: np.ndarray  # [3] metres, absolute
    within: bool  # centre and every size within the claim

    @property
    def ratio(self) -> float:
        """The worst error as a share of its tolerance (<= 1: within)."""
        c, s = tolerances(np.array([self.z]))
        return float(max((self.centre_error / c[0]).max(), (self.size_error / s[0]).max()))


def evaluate(measure, scenes: range = range(15), mask_errors=MASK_ERRORS, min_pixels: int = 40) -> list[Case]:
    """measure(panoptic, depth, intrinsics, num_segments) -> SegmentGeometry, run on every
    scene under every mask error (depth noise drawn per scene and mask error); objects
    with fewer than `min_pixels` visible pixels with depth are left out (a segmenter
    would not find them)."""
    cases = []
    for index in scenes:
        scene = random_scene(index)
        for mask_error in mask_errors:
            rng = np.random.default_rng(1000 * index + MASK_ERRORS.index(mask_error))
            depth = degrade(scene, rng)
            geometry = measure(segmenter_masks(scene, mask_error), depth, K, scene.num_objects + 2)
            centre, size, pixels = visible_truth(scene, depth)
            for i in np.flatnonzero(pixels >= min_pixels):
                c_tol, s_tol = tolerances(centre[i : i + 1, 2])
                centre_error = np.abs(geometry.center[i] - centre[i])
                size_error = np.abs(geometry.size[i] - size[i])
                within = bool(np.all(centre_error <= c_tol[0]) and np.all(size_error <= s_tol[0]))
                kind = scene.shapes[i][0].kind + ("+pole" if len(scene.shapes[i]) > 1 else "")
                cases.append(Case(index, mask_error, kind, float(centre[i, 2]), centre_error, size_error, within))
    return cases


DISTANCE_BANDS = ((0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, 7.0))


def tables(cases: list[Case]) -> dict:
    """Share within the claim per scene and mask error, per distance band and mask error,
    and the p90 / worst errors per mask error (cm)."""
    errors = sorted({c.mask_error for c in cases}, key=MASK_ERRORS.index)
    by_scene = {s: {e: [c.within for c in cases if c.scene == s and c.mask_error == e] for e in errors}
                for s in sorted({c.scene for c in cases})}
    by_band = {f"{lo:.1f}-{hi:.1f} m": {e: [c.within for c in cases if lo <= c.z < hi and c.mask_error == e] for e in errors}
               for lo, hi in DISTANCE_BANDS}
    worst = {}
    for e in errors:
        centre = np.array([c.centre_error.max() for c in cases if c.mask_error == e])
        size = np.array([c.size_error.max() for c in cases if c.mask_error == e])
        worst[e] = {"p90_centre_cm": 100 * float(np.percentile(centre, 90)), "p90_size_cm": 100 * float(np.percentile(size, 90)),
                    "worst_centre_cm": 100 * float(centre.max()), "worst_size_cm": 100 * float(size.max())}
    return {"mask_errors": errors, "by_scene": by_scene, "by_band": by_band, "errors": worst}


def format_tables(t: dict) -> str:
    """The tables as text: 'within/objects' per cell."""
    errors = t["mask_errors"]
    head = f"{'':12s}" + "".join(f"{e:>14s}" for e in errors)
    lines = ["objects within the claim, per scene and mask error", head]
    for name, rows in (("scene", t["by_scene"]), ("band", t["by_band"])):
        if name == "band":
            lines += ["", "per distance band and mask error", head]
        for key, cells in rows.items():
            label = f"scene {key}" if name == "scene" else key
            lines.append(f"{label:12s}" + "".join(f"{sum(v):>8d}/{len(v):<5d}" for v in cells.values()))
    lines += ["", f"{'':12s}" + "".join(f"{e:>14s}" for e in errors)]
    for metric in ("p90_centre_cm", "p90_size_cm", "worst_centre_cm", "worst_size_cm"):
        lines.append(f"{metric:16s}" + "".join(f"{t['errors'][e][metric]:>14.1f}" for e in errors)[4:])
    return "\n".join(lines)
