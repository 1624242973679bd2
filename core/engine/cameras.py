# SPDX-License-Identifier: Apache-2.0
"""Pinhole cameras and camera paths.

Public API:
    Cameras                     a batch of pinhole cameras (world-to-camera viewmats, pixel Ks, size, times)
    intrinsics_from_fov         pixel K from a vertical field of view
    intrinsics_from_focal       pixel K from focal lengths in pixels
    look_at                     world-to-camera matrices looking from eye to target
    orbit_poses                 cameras on a sphere around a centre, by elevation / azimuth / radius
    coco4d_outpaint_poses       CoCo4D App. A outpaint pose sets (loop 1, loop 2)
    coco4d_reference_cameras    CoCo4D's seen view held over a clip (identity, fovy 60)
    clip_cameras                cameras of a clip: given ones held / rescaled, or the CoCo4D seen view
    view_difference             how far cameras are from reference cameras (angle, offset, focal ratio)
    gaze_sphere                 the point the cameras look at and a radius that stays inside every view
    diffusion4d_orbit           Diffusion4D's 24-view orbit where view and time advance together (the
                                official render script's spacing and field of view by default)
    orbit_azimuth_steps         fractions of a turn of an orbit's views, per ORBIT_CONVENTIONS
    moge4d_path                 MoGe4D camera paths relative to the input image's camera
    keyframe_path               smooth interpolation through user keyframes

Design notes:
    Conventions follow gsplat: OpenCV camera axes (x right, y down, z forward), world-to-camera
    ``viewmats [C,4,4]`` and pixel intrinsics ``Ks [C,3,3]`` with the pixel centre at +0.5.
    The world shares the OpenCV handedness, so "up" is ``-y`` by default: a scene lifted from the
    depth of an input image (camera = identity) needs no change of axes, and the orbit pose
    (elevation 0, azimuth 0) looks along ``+z`` at its centre. Positive elevation raises the
    camera (it looks down); positive azimuth moves it towards ``+x`` (to the right).
    Angles are degrees at the public surface, times are normalised to ``[0, 1]``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "Cameras",
    "intrinsics_from_fov",
    "intrinsics_from_focal",
    "look_at",
    "orbit_poses",
    "coco4d_outpaint_poses",
    "coco4d_reference_cameras",
    "clip_cameras",
    "view_difference",
    "gaze_sphere",
    "diffusion4d_orbit",
    "DIFFUSION4D_FOVY_DEG",
    "ORBIT_CONVENTIONS",
    "orbit_azimuth_steps",
    "moge4d_path",
    "MOGE4D_PATHS",
    "keyframe_path",
    "DEFAULT_UP",
]

DEFAULT_UP = (0.0, -1.0, 0.0)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size.

    Args:
        viewmats: ``[C,4,4]`` world-to-camera matrices (OpenCV axes).
        Ks: ``[C,3,3]`` pixel intrinsics.
        width: image width in pixels.
        height: image height in pixels.
        times: ``[C]`` normalised time of each camera in ``[0, 1]`` (the scene time it sees).
        near: near clipping distance along the optical axis.
        far: far clipping distance.
    """

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int
    times: Tensor
    near: float = 0.01
    far: float = 1e10

    def __post_init__(self) -> None:
        vm, ks = self.viewmats, self.Ks
        if not isinstance(vm, Tensor) or vm.dim() != 3 or vm.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras: viewmats must be [C,4,4], got {_shape(vm)}")
        if not isinstance(ks, Tensor) or ks.shape != (vm.shape[0], 3, 3):
            raise ValueError(f"Cameras: Ks must be [{vm.shape[0]},3,3], got {_shape(ks)}")
        if not isinstance(self.times, Tensor) or self.times.shape != (vm.shape[0],):
            raise ValueError(f"Cameras: times must be [{vm.shape[0]}], got {_shape(self.times)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Cameras: width and height must be positive, got {self.width}x{self.height}")
        if not (0.0 < self.near < self.far):
            raise ValueError(f"Cameras: need 0 < near < far, got near={self.near}, far={self.far}")
        if not torch.isfinite(vm).all() or not torch.isfinite(ks).all():
            raise ValueError("Cameras: viewmats and Ks must be finite")
        if (ks[:, 0, 0] <= 0).any() or (ks[:, 1, 1] <= 0).any():
            raise ValueError("Cameras: focal lengths in Ks must be positive")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    @property
    def camtoworlds(self) -> Tensor:
        """``[C,4,4]`` camera-to-world matrices."""
        # inv_ex skips linalg.inv's singularity check, which waits for the device on every call; a camera
        # pose is never singular.
        return torch.linalg.inv_ex(self.viewmats).inverse

    @property
    def centers(self) -> Tensor:
        """``[C,3]`` camera centres in world space."""
        return self.camtoworlds[:, :3, 3]

    @property
    def fovy_deg(self) -> Tensor:
        """``[C]`` vertical field of view in degrees."""
        return torch.rad2deg(2.0 * torch.atan(0.5 * self.height / self.Ks[:, 1, 1]))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Cameras":
        """A copy on ``device``; ``non_blocking`` copies host tensors without waiting for the device's queue
        (safe for cameras made on the host, as a fit's sampled guidance views are)."""
        return self._derived(viewmats=self.viewmats.to(device, non_blocking=non_blocking),
                             Ks=self.Ks.to(device, non_blocking=non_blocking),
                             times=self.times.to(device, non_blocking=non_blocking))

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._derived(viewmats=self.viewmats[index], Ks=self.Ks[index], times=self.times[index])

    def _derived(self, **tensors: Tensor) -> "Cameras":
        """A subset or a moved copy of this validated set: shapes are checked, values are not read again,
        so indexing cameras on a GPU inside a fit loop never waits for the device."""
        vm = tensors["viewmats"]
        if vm.dim() != 3 or tensors["Ks"].shape != (vm.shape[0], 3, 3) or tensors["times"].shape != (vm.shape[0],):
            raise ValueError(f"Cameras: an index must pick whole cameras, got viewmats {tuple(vm.shape)}")
        out = object.__new__(Cameras)
        for f in fields(self):
            object.__setattr__(out, f.name, tensors.get(f.name, getattr(self, f.name)))
        return out

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras at another image size (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        ks = self.Ks.clone()
        ks[:, 0, :] *= sx
        ks[:, 1, :] *= sy
        return replace(self, Ks=ks, width=int(width), height=int(height))

    @staticmethod
    def cat(parts: Sequence["Cameras"]) -> "Cameras":
        """Concatenate camera batches of the same image size."""
        if not parts:
            raise ValueError("Cameras.cat: need at least one Cameras")
        first = parts[0]
        for p in parts[1:]:
            if (p.width, p.height) != (first.width, first.height):
                raise ValueError(
                    f"Cameras.cat: image sizes differ ({first.width}x{first.height} vs {p.width}x{p.height})"
                )
        return replace(
            first,
            viewmats=torch.cat([p.viewmats for p in parts]),
            Ks=torch.cat([p.Ks for p in parts]),
            times=torch.cat([p.times for p in parts]),
        )

    def to_dict(self) -> dict:
        """Plain tensors and numbers, for safetensors / JSON."""
        return {
            "viewmats": self.viewmats,
            "Ks": self.Ks,
            "times": self.times,
            "width": int(self.width),
            "height": int(self.height),
            "near": float(self.near),
            "far": float(self.far),
        }


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def intrinsics_from_fov(fovy_deg: float, width: int, height: int, fovx_deg: float | None = None) -> Tensor:
    """Pixel intrinsics ``[3,3]`` from a vertical field of view (square pixels unless ``fovx_deg``).

    The principal point sits at the image centre, ``(W/2, H/2)``, in gsplat's pixel convention
    where pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
    """
    if not (0.0 < fovy_deg < 180.0):
        raise ValueError(f"intrinsics_from_fov: fovy_deg must be in (0, 180), got {fovy_deg}")
    if fovx_deg is not None and not (0.0 < fovx_deg < 180.0):
        raise ValueError(f"intrinsics_from_fov: fovx_deg must be in (0, 180), got {fovx_deg}")
    if width <= 0 or height <= 0:
        raise ValueError(f"intrinsics_from_fov: width and height must be positive, got {width}x{height}")
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    fx = fy if fovx_deg is None else 0.5 * width / math.tan(math.radians(fovx_deg) / 2.0)
    return intrinsics_from_focal(fx, fy, width, height)


def intrinsics_from_focal(
    fx: float, fy: float, width: int, height: int, cx: float | None = None, cy: float | None = None
) -> Tensor:
    """Pixel intrinsics ``[3,3]`` from focal lengths in pixels (principal point defaults to the centre)."""
    if fx <= 0 or fy <= 0:
        raise ValueError(f"intrinsics_from_focal: focal lengths must be positive, got fx={fx}, fy={fy}")
    if width <= 0 or height <= 0:
        raise ValueError(f"intrinsics_from_focal: width and height must be positive, got {width}x{height}")
    cx = width / 2.0 if cx is None else cx
    cy = height / 2.0 if cy is None else cy
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def look_at(eye: Tensor, target: Tensor, up: Tensor | Sequence[float] = DEFAULT_UP) -> Tensor:
    """World-to-camera matrices ``[C,4,4]`` for cameras at ``eye [C,3]`` looking at ``target [C,3]``.

    The camera's ``-y`` axis is aligned with ``up`` as far as possible (OpenCV: y points down).

    Raises:
        ValueError: if eye equals target, or the view direction is parallel to ``up``.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32, device=eye.device)
    eye, target = torch.broadcast_tensors(eye.reshape(-1, 3), target.reshape(-1, 3))
    up_t = torch.as_tensor(up, dtype=torch.float32, device=eye.device).reshape(-1, 3).expand_as(eye)
    forward = target - eye
    dist = forward.norm(dim=-1, keepdim=True)
    if (dist < 1e-9).any():
        raise ValueError("look_at: eye and target coincide; the view direction is undefined")
    forward = forward / dist
    right = torch.cross(-up_t, forward, dim=-1)  # x = y × z with y = -up
    rnorm = right.norm(dim=-1, keepdim=True)
    if (rnorm < 1e-6 * up_t.norm(dim=-1, keepdim=True).clamp_min(1e-12)).any():
        raise ValueError("look_at: view direction is parallel to up; pass another up vector")
    right = right / rnorm
    down = torch.cross(forward, right, dim=-1)
    rot = torch.stack([right, down, forward], dim=-2)  # rows: camera axes in world coords
    viewmats = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    viewmats[:, :3, :3] = rot
    viewmats[:, :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    return viewmats


def _orbit_direction(elevation_deg: Tensor, azimuth_deg: Tensor) -> Tensor:
    """Unit vector from the orbit centre to the camera (the camera then looks along its negative)."""
    e = torch.deg2rad(elevation_deg)
    a = torch.deg2rad(azimuth_deg)
    # (0,0) sits behind the centre on -z; elevation lifts towards -y (up); azimuth swings to +x.
    return torch.stack([torch.cos(e) * torch.sin(a), -torch.sin(e), -torch.cos(e) * torch.cos(a)], dim=-1)


def _as_vector(values, n: int, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name}: expected 1 or {n} values, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: values must be finite")
    return t


def orbit_poses(
    elevations_deg,
    azimuths_deg,
    radius=2.0,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = DEFAULT_UP,
) -> Tensor:
    """World-to-camera matrices ``[C,4,4]`` on a sphere around ``center``, looking at it.

    ``radius`` may be 0: the camera then sits at ``center`` and only turns (a pure rotation, as
    for outpainting around a fixed viewpoint). Elevations beyond ±90° are rejected because the
    orbit frame flips there.
    """
    el = torch.as_tensor(elevations_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuths_deg, dtype=torch.float32).reshape(-1)
    n = max(el.numel(), az.numel())
    el, az = _as_vector(el, n, "orbit_poses: elevations_deg"), _as_vector(az, n, "orbit_poses: azimuths_deg")
    rad = _as_vector(radius, n, "orbit_poses: radius")
    if (el.abs() >= 90.0).any():
        raise ValueError("orbit_poses: elevations must lie strictly between -90 and 90 degrees")
    if (rad < 0).any():
        raise ValueError(f"orbit_poses: radius must be >= 0, got {rad.min().item()}")
    c = torch.as_tensor(center, dtype=torch.float32).reshape(1, 3)
    direction = _orbit_direction(el, az)
    eye = c + rad[:, None] * direction
    target = eye - direction  # one unit ahead along the view direction; works for radius 0 too
    return look_at(eye, target, up)


def _cameras(viewmats: Tensor, K: Tensor, width: int, height: int, times: Tensor, near: float, far: float) -> Cameras:
    c = viewmats.shape[0]
    return Cameras(viewmats, K.expand(c, 3, 3).clone(), int(width), int(height), times, near, far)


def _frame_times(num: int) -> Tensor:
    return torch.linspace(0.0, 1.0, num) if num > 1 else torch.zeros(num)


def coco4d_reference_cameras(width: int, height: int, num_frames: int, fovy_deg: float = 60.0,
                             viewmat: Tensor | None = None) -> Cameras:
    """CoCo4D's seen view held over ``num_frames`` times ``linspace(0, 1)`` (App. A: identity pose, fovy 60,
    visible range 0.1 to 10000)."""
    if num_frames < 1:
        raise ValueError(f"coco4d_reference_cameras: num_frames must be >= 1, got {num_frames}")
    vm = torch.eye(4) if viewmat is None else torch.as_tensor(viewmat, dtype=torch.float32).reshape(4, 4)
    K = intrinsics_from_fov(fovy_deg, width, height)
    return Cameras(vm.expand(num_frames, 4, 4).clone(), K.expand(num_frames, 3, 3).clone(), int(width), int(height),
                   _frame_times(num_frames), 0.1, 10000.0)


def clip_cameras(cameras: Cameras | None, num_frames: int, width: int, height: int, fovy_deg: float = 60.0,
                 who: str = "cameras") -> Cameras:
    """Cameras of a ``num_frames`` clip of ``width x height`` frames, on the CPU.

    ``None`` gives CoCo4D's reference view; one camera is held over the clip (times ``linspace(0, 1)``);
    cameras of another image size get rescaled intrinsics. ``who`` names the caller in errors.
    """
    if cameras is None:
        return coco4d_reference_cameras(width, height, num_frames, fovy_deg)
    if not isinstance(cameras, Cameras):
        raise TypeError(f"{who}: cameras must be Cameras (GEN4D_CAMERAS), got {type(cameras).__name__}")
    cams = cameras.to("cpu")
    if (cams.width, cams.height) != (width, height):
        logger.info("%s: cameras are %dx%d, frames %dx%d; intrinsics rescaled", who, cams.width, cams.height, width,
                    height)
        cams = cams.resized(width, height)
    if len(cams) == 1 and num_frames > 1:
        idx = torch.zeros(num_frames, dtype=torch.long)
        return Cameras(cams.viewmats[idx], cams.Ks[idx], cams.width, cams.height, _frame_times(num_frames),
                       cams.near, cams.far)
    if len(cams) != num_frames:
        raise ValueError(f"{who}: cameras hold {len(cams)} views for {num_frames} frames; expected 1 (held over the "
                         f"clip) or one per frame")
    return cams


def view_difference(cameras: Cameras, reference: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """How far each camera is from the reference camera of its time (image sizes may differ).

    Camera ``i`` at time ``t_i`` is compared with reference camera ``round(t_i (R-1))`` (or the only
    one when ``R = 1``): the sameness test for stages that may only reuse what was recorded at a view.

    Returns:
        ``(angle_deg [C], offset [C], focal_ratio [C])``: the rotation between the two camera frames
        in degrees, the distance between the centres relative to the reference centre's distance from
        the world origin (at least 1), and the largest relative difference of the intrinsics measured
        in image fractions (``fx/W``, ``fy/H``, ``cx/W``, ``cy/H``).
    """
    r = len(reference)
    idx = (cameras.times.detach().cpu().clamp(0, 1) * (r - 1)).round().long() if r > 1 \
        else torch.zeros(len(cameras), dtype=torch.long)
    va, vb = cameras.viewmats.detach().cpu().double(), reference.viewmats.detach().cpu().double()[idx]
    rel = va[:, :3, :3] @ vb[:, :3, :3].transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    ca, cb = torch.linalg.inv(va)[:, :3, 3], torch.linalg.inv(vb)[:, :3, 3]
    offset = (ca - cb).norm(dim=-1) / cb.norm(dim=-1).clamp_min(1.0)

    def fractions(cams: Cameras, index) -> Tensor:
        k = cams.Ks.detach().cpu().double()[index]
        return torch.stack([k[:, 0, 0] / cams.width, k[:, 1, 1] / cams.height, k[:, 0, 2] / cams.width,
                            k[:, 1, 2] / cams.height], dim=-1)

    fa, fb = fractions(cameras, slice(None)), fractions(reference, idx)
    focal = ((fa - fb).abs() / fb.abs().clamp_min(1e-9)).amax(-1)
    return angle.float(), offset.float(), focal.float()


COCO4D_LOOPS: dict[int, tuple[tuple[float, float], ...]] = {
    # (elevation, azimuth) in degrees, CoCo4D App. A.
    1: ((0.0, 30.0), (0.0, -30.0), (15.0, 0.0), (-15.0, 0.0)),
    2: ((15.0, 30.0), (15.0, -30.0), (-15.0, 30.0), (-15.0, -30.0)),
}


def gaze_sphere(cameras: Cameras, fill: float = 0.6) -> tuple[tuple[float, float, float], float]:
    """Where a set of posed cameras looks, and how large a sphere there stays in view (an init for posed frames).

    The centre is the least-squares point nearest to every optical axis (``sum_i (I - a_i a_i^T)`` solved
    against the camera centres); the radius is ``fill`` times the half-width the median camera sees at its
    distance from that point, across the narrower of its two fields of view.

    Raises:
        ValueError: the optical axes do not pin a point down (one camera, or all looking along one line),
            or the point lies behind the cameras.
    """
    c2w = cameras.camtoworlds.detach().cpu().double()
    origins, axes = c2w[:, :3, 3], c2w[:, :3, 2]  # OpenCV axes: camera z is the viewing direction
    proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]
    a, b = proj.sum(0), (proj @ origins[:, :, None]).sum(0)[:, 0]
    eig = torch.linalg.eigvalsh(a)
    if len(cameras) < 2 or eig[0] <= 1e-6 * max(float(eig[-1]), 1e-12):
        raise ValueError("gaze_sphere: the cameras' optical axes do not cross near one point (one camera, or all "
                         "looking along one line); give the sphere's radius (and the object's place) instead")
    center = torch.linalg.solve(a, b)
    depth = ((center - origins) * axes).sum(-1)
    if float(depth.median()) <= 0:
        raise ValueError("gaze_sphere: the point nearest to the cameras' optical axes lies behind them; give the "
                         "sphere's radius instead")
    half = torch.minimum(cameras.width / (2 * cameras.Ks[:, 0, 0]), cameras.height / (2 * cameras.Ks[:, 1, 1]))
    radius = float(fill * (origins - center).norm(dim=-1).median() * half.detach().cpu().double().median())
    return tuple(float(v) for v in center), radius


def coco4d_outpaint_poses(
    loop: int,
    width: int,
    height: int,
    radius: float = 0.0,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    fovy_deg: float = 60.0,
    near: float = 0.1,
    far: float = 10000.0,
    time: float = 0.0,
) -> Cameras:
    """CoCo4D App. A outpaint pose set of one loop (4 poses), fovy 60°, visible range 0.1–10000.

    The poses turn around ``center`` at ``radius`` relative to the reference view (elevation 0,
    azimuth 0). With the defaults (radius 0, centre at the origin) the reference camera is the
    identity and the outpaint cameras rotate in place, which suits a background lifted from the
    reference frame's depth.
    """
    if loop not in COCO4D_LOOPS:
        raise ValueError(f"coco4d_outpaint_poses: loop must be one of {sorted(COCO4D_LOOPS)}, got {loop}")
    el, az = zip(*COCO4D_LOOPS[loop])
    vm = orbit_poses(el, az, radius, center)
    if radius > 0:
        vm = _recentre_on_reference(vm, radius, center)
    return _cameras(vm, intrinsics_from_fov(fovy_deg, width, height), width, height,
                    torch.full((len(el),), float(time)), near, far)


def _recentre_on_reference(vm: Tensor, radius: float, center: Sequence[float]) -> Tensor:
    """Express orbit poses so that the (0°, 0°) pose is the identity camera."""
    ref = orbit_poses([0.0], [0.0], radius, center)[0]
    return vm @ torch.linalg.inv(ref)


DIFFUSION4D_FOVY_DEG = math.degrees(2.0 * math.atan(18.0 / 50.0))
"""Field of view of Diffusion4D's renders: Blender's default camera (50 mm lens, 36 mm sensor), 39.6°."""

ORBIT_CONVENTIONS = ("render_script", "open_loop")
"""How an orbit's ``T`` views are spaced: see :func:`diffusion4d_orbit`."""


def orbit_azimuth_steps(num_views: int, convention: str = "render_script") -> Tensor:
    """``[num_views]`` fractions of a turn of an orbit's views (azimuth = 360° x fraction).

    ``"render_script"``: ``i / (T-1)`` (first and last views at the same azimuth); ``"open_loop"``:
    ``i / T`` (the last view one step short of a full turn). One view gives ``[0]``.

    Raises:
        ValueError: unknown convention or ``num_views < 1``.
    """
    if convention not in ORBIT_CONVENTIONS:
        raise ValueError(f"orbit convention must be one of {ORBIT_CONVENTIONS}, got {convention!r}")
    if num_views < 1:
        raise ValueError(f"an orbit needs at least one view, got {num_views}")
    steps = torch.arange(num_views, dtype=torch.float32)
    if convention == "render_script":
        return steps / max(num_views - 1, 1)
    return steps / num_views


def diffusion4d_orbit(
    width: int = 256,
    height: int = 256,
    num_views: int = 24,
    elevation_deg: float = 0.0,
    radius: float = 2.0,
    fovy_deg: float = DIFFUSION4D_FOVY_DEG,
    start_azimuth_deg: float = 0.0,
    dynamic: bool = True,
    near: float = 0.01,
    far: float = 100.0,
    convention: str = "render_script",
) -> Cameras:
    """Diffusion4D orbit (§3.1, §4.1): ``num_views`` views at fixed elevation and distance, azimuth 0→360°.

    The default, ``convention="render_script"``, reproduces the frames of the official render script
    (``rendering/blender.py``, ``--mode_multi``), i.e. what a model trained on those renders
    generates: frame ``i`` of ``T`` has ``t_i = i / (T-1)``, the camera sits at azimuth ``360° t_i``
    (so the last frame returns to the first view) and, with ``dynamic``, sees the animation at
    ``t_i`` as well (the script renders Blender frame ``i`` there, so view and time advance
    together over the clip). Direction: the camera starts at the front (Blender ``-Y``, our ``-z``)
    and moves towards the front view's right (Blender ``+X``, our ``+x``), i.e. counter-clockwise
    seen from above, our positive azimuth. Blender's world maps onto ours by
    ``(X, Y, Z) -> (x, z, -y)`` (a rotation: Blender's up ``+Z`` is our ``-y``). Distance: the
    camera is ``radius`` from the centre along the view direction (the script's 2, ``--elevation``
    changes the height, not the distance). Elevation: ``elevation_deg`` is the angle above the
    horizon; the script's ``--elevation N`` (integer, used as the slope ``N/180`` of the view
    direction) is the angle ``atan(N/180)``, e.g. 9.5° for ``N = 30``; the paper and the script's
    default use 0. Its ``--azimuth f`` (a fraction of a turn) starts the orbit at ``-360° f``.
    Field of view: the script keeps Blender's default camera, 50 mm on a 36 mm sensor, 39.6°
    (:data:`DIFFUSION4D_FOVY_DEG`), not the 49.1° of Zero123's renders.

    ``convention="open_loop"`` spaces the views by ``360° / T`` instead (azimuth ``360 i / T``,
    no repeated view; times still ``i / (T-1)``), for orbit videos made that way.
    Without ``dynamic`` every view sees time 0 (the static 3D-aware orbit, the script's
    ``--mode_static``).

    Raises:
        ValueError: ``num_views < 1``, ``radius <= 0`` or an unknown convention.
    """
    if num_views < 1:
        raise ValueError(f"diffusion4d_orbit: num_views must be >= 1, got {num_views}")
    if radius <= 0:
        raise ValueError(f"diffusion4d_orbit: radius must be positive, got {radius}")
    if convention not in ORBIT_CONVENTIONS:
        raise ValueError(f"diffusion4d_orbit: convention must be one of {ORBIT_CONVENTIONS}, got {convention!r}")
    az = start_azimuth_deg + 360.0 * orbit_azimuth_steps(num_views, convention)
    vm = orbit_poses(torch.full((num_views,), float(elevation_deg)), az, radius)
    times = _frame_times(num_views) if dynamic else torch.zeros(num_views)
    return _cameras(vm, intrinsics_from_fov(fovy_deg, width, height), width, height, times, near, far)


MOGE4D_PATHS = (
    "static",
    "orbit",
    "rotate_left_30",
    "rotate_right_30",
    "forward_backward",
    "up_90",
    "down_90",
    "left_90",
    "right_90",
)


def moge4d_path(
    name: str,
    num_frames: int,
    width: int,
    height: int,
    pivot_depth: float = 1.0,
    fovy_deg: float = 60.0,
    K: Tensor | None = None,
    near: float = 0.01,
    far: float = 1e4,
) -> Cameras:
    """MoGe4D camera paths, relative to the input image's camera (the identity at frame 0).

    Every path starts at the input view and moves about a pivot ``pivot_depth`` ahead of it
    (typically the scene's median depth); frame ``i`` sees time ``i/(num_frames-1)``.

    - ``static``: the input camera for every frame.
    - ``orbit``: a full circle of viewing angles through the input view (15° across), looking
      at the pivot, back at the input view at the last frame.
    - ``rotate_left_30`` / ``rotate_right_30``: an arc of 30° about the pivot.
    - ``forward_backward``: dolly in to half the pivot depth and back.
    - ``up_90`` / ``down_90`` / ``left_90`` / ``right_90``: an arc of 90° about the pivot (up and
      down stop at 89° so the view never aligns with the up axis).
    """
    if name not in MOGE4D_PATHS:
        raise ValueError(f"moge4d_path: name must be one of {MOGE4D_PATHS}, got {name!r}")
    if num_frames < 1:
        raise ValueError(f"moge4d_path: num_frames must be >= 1, got {num_frames}")
    if pivot_depth <= 0:
        raise ValueError(f"moge4d_path: pivot_depth must be positive, got {pivot_depth}")
    s = _frame_times(num_frames)
    zero = torch.zeros(num_frames)
    el, az, dist = zero.clone(), zero.clone(), torch.full((num_frames,), float(pivot_depth))
    if name == "orbit":
        # A circle of 7.5° radius in (azimuth, elevation) through the input view: starts and ends there.
        phase = 2.0 * math.pi * s
        el, az = 7.5 * torch.sin(phase), 7.5 * (1.0 - torch.cos(phase))
    elif name.startswith("rotate_"):
        az = (-30.0 if name.endswith("left_30") else 30.0) * s
    elif name == "forward_backward":
        dist = pivot_depth * (1.0 - 0.5 * torch.sin(math.pi * s))
    elif name != "static":
        sign = {"up_90": (1, 0), "down_90": (-1, 0), "left_90": (0, -1), "right_90": (0, 1)}[name]
        el, az = sign[0] * 89.0 * s, sign[1] * 90.0 * s
    center = (0.0, 0.0, float(pivot_depth))
    direction = _orbit_direction(el, az)
    eye = torch.tensor(center)[None] + dist[:, None] * direction
    vm = look_at(eye, torch.tensor(center).expand_as(eye))
    K = intrinsics_from_fov(fovy_deg, width, height) if K is None else torch.as_tensor(K, dtype=torch.float32)
    return _cameras(vm, K, width, height, s, near, far)


def keyframe_path(
    keyframes: Sequence[dict],
    num_frames: int,
    width: int,
    height: int,
    fovy_deg: float = 60.0,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    near: float = 0.01,
    far: float = 1e4,
) -> Cameras:
    """A smooth orbit path through user keyframes.

    Each keyframe is a dict with ``t`` in ``[0,1]`` and any of ``elevation``, ``azimuth`` (degrees),
    ``radius`` and ``fovy`` (degrees); missing values carry over from the previous keyframe
    (defaults 0°, 0°, 2.0, ``fovy_deg``). Values between keyframes follow a monotone cubic
    (Fritsch–Carlson) so the path has no overshoot; frame ``i`` sees time ``i/(num_frames-1)``.
    """
    if num_frames < 1:
        raise ValueError(f"keyframe_path: num_frames must be >= 1, got {num_frames}")
    if not keyframes:
        raise ValueError("keyframe_path: need at least one keyframe")
    fields = ("elevation", "azimuth", "radius", "fovy")
    current = {"elevation": 0.0, "azimuth": 0.0, "radius": 2.0, "fovy": float(fovy_deg)}
    for i, kf in enumerate(keyframes):
        if not isinstance(kf, dict):
            raise ValueError(f"keyframe_path: keyframe {i} must be a dict, got {type(kf).__name__}")
        unknown = set(kf) - set(fields) - {"t"}
        if unknown:
            raise ValueError(f"keyframe_path: keyframe {i} has unknown keys {sorted(unknown)}; allowed: t, {fields}")
        for key, value in kf.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"keyframe_path: keyframe {i} key {key!r} must be a number, got {value!r}")
    rows = []
    for i, kf in enumerate(sorted(keyframes, key=lambda k: float(k.get("t", 0.0)))):
        t = float(kf.get("t", 0.0))
        if not (0.0 <= t <= 1.0):
            raise ValueError(f"keyframe_path: keyframe {i} has t={t}; t must lie in [0, 1]")
        current = {**current, **{k: float(kf[k]) for k in fields if k in kf}}
        rows.append([t] + [current[k] for k in fields])
    table = torch.tensor(rows, dtype=torch.float32)
    if (table[1:, 0] - table[:-1, 0] <= 0).any():
        raise ValueError("keyframe_path: keyframe times must be distinct")
    s = _frame_times(num_frames)
    values = _monotone_cubic(table[:, 0], table[:, 1:], s)
    el, az, rad, fov = values.unbind(-1)
    if (rad < 0).any() or (fov <= 0).any() or (fov >= 180).any():
        raise ValueError("keyframe_path: radius must be >= 0 and fovy in (0, 180)")
    vm = orbit_poses(el, az, rad, center)
    Ks = torch.stack([intrinsics_from_fov(float(f), width, height) for f in fov])
    return Cameras(vm, Ks, int(width), int(height), s, near, far)


def _monotone_cubic(x: Tensor, y: Tensor, xq: Tensor) -> Tensor:
    """Fritsch–Carlson monotone cubic interpolation of ``y [K,D]`` at ``xq [M]``; clamps outside."""
    if x.numel() == 1:
        return y.expand(xq.numel(), -1).clone()
    h = x[1:] - x[:-1]
    delta = (y[1:] - y[:-1]) / h[:, None]
    m = torch.zeros_like(y)
    m[0], m[-1] = delta[0], delta[-1]
    if x.numel() > 2:
        same_sign = (delta[:-1] * delta[1:]) > 0
        w1 = (2 * h[1:] + h[:-1])[:, None]
        w2 = (h[1:] + 2 * h[:-1])[:, None]
        harmonic = (w1 + w2) / (w1 / delta[:-1].where(same_sign, torch.ones_like(delta[:-1]))
                                + w2 / delta[1:].where(same_sign, torch.ones_like(delta[1:])))
        m[1:-1] = torch.where(same_sign, harmonic, torch.zeros_like(harmonic))
    xq = xq.clamp(float(x[0]), float(x[-1]))
    idx = torch.searchsorted(x.contiguous(), xq, right=True).clamp(1, x.numel() - 1) - 1
    t = ((xq - x[idx]) / h[idx])[:, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * y[idx] + h10 * h[idx, None] * m[idx] + h01 * y[idx + 1] + h11 * h[idx, None] * m[idx + 1]
