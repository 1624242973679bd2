# SPDX-License-Identifier: Apache-2.0
"""Generated bad and edge inputs for every node of the pack, and the outcome class of each call.

One table of cases per socket type and widget type (:data:`SOCKET_CASES`, :data:`WIDGET_CASES`) is
applied to every input of every node in ``NODE_CLASS_MAPPINGS`` (:func:`node_cases`), on top of a
working baseline call built from a small synthetic world (:class:`Context`). A node added to the pack
is covered without touching this file.

Outcome classes (:func:`classify`):
    clear       ValueError/TypeError whose message names the fuzzed input
    handled     returned outputs that are valid (IMAGE/MASK float, finite, 0..1 except depth); for a bad
                input only when a warning naming the input was logged
    obscure     any other exception (a trace from deep inside torch, KeyError, a message naming nothing)
    silent      a bad input accepted without a word, or outputs that are not valid
    hang        no answer within the case's time limit

The harness reaches the pack only through node calls and the payloads nodes return, so it runs
unchanged on older layouts of the pack.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import signal
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

GOOD = ("clear", "handled")
CLASSES = ("clear", "handled", "obscure", "silent", "hang")
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")


# --------------------------------------------------------------------------- the pack, as ComfyUI sees it


def pack():
    import gen4d

    return gen4d


def input_specs(cls) -> list[tuple[str, str, Any, dict]]:
    """``(section, name, kind, options)`` of every declared input (kind: a type name or a combo list)."""
    out = []
    for section in ("required", "optional"):
        for name, entry in cls.INPUT_TYPES().get(section, {}).items():
            out.append((section, name, entry[0], entry[1] if len(entry) > 1 else {}))
    return out


def call(node_id: str, inputs: dict):
    cls = pack().NODE_CLASS_MAPPINGS[node_id]
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    return tuple(out.get("result", ())) if isinstance(out, dict) else out


# --------------------------------------------------------------------------- the baseline world


class Context:
    """Valid payloads of every socket type, from a 3-frame 32x32 synthetic world (plus tiny models)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.values: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        cams = call("Gen4D_CameraPath", {"preset": "diffusion4d_orbit", "num_frames": 3, "width": 32, "height": 32})[0]
        world = call("Gen4D_SyntheticWorld", {"world": "object", "width": 32, "height": 32, "num_frames": 3,
                                              "seed": 0, "twin_points": 200, "fps": 8.0, "supersample": 1,
                                              "depth_mode": "metric", "cameras": cams})
        names = pack().NODE_CLASS_MAPPINGS["Gen4D_SyntheticWorld"].RETURN_TYPES
        for kind, value in zip(names, world):
            self.values.setdefault(kind, value)
        self.values["IMAGE"], self.values["MASK"], self.values["GEN4D_CAMERAS"] = world[0], world[1], world[3]
        self.depth_image = world[2]
        scene = self.values.get("GEN4D_SCENE")
        # Compose's background: the twin records the object's own orbit views, and composing the object onto itself
        # from those views leaves no background pixel; without recorded views it is placed by the seen-view fallback
        self.background_scene = None if scene is None else type(scene)(
            [dataclasses.replace(part, reference_cameras=None) for part in scene.parts], scene.num_frames, scene.fps)
        self._try("GEN4D_GAUSSIANS", lambda: call("Gen4D_StaticGaussians", self._cheap(
            "Gen4D_StaticGaussians", {"images": world[0][:1]}))[0])
        self._try("GEN4D_FIT_OPTIONS", lambda: call("Gen4D_FitOptions", {"preset": "coco4d_foreground"})[0])
        self._try("GEN4D_TRAJECTORY_MODEL", self._trajectory)
        self._try("GEN4D_ORBITAL_MODEL", self._orbital)
        self.guidances: dict[str, Any] = {}
        self._try("tiny guidance models", self._guidances)
        self.scene = scene
        self.overrides: dict[str, dict] = {}
        self._works: dict[str, bool] = {}
        self._try("saved scene", self._saved_scene)

    def _saved_scene(self):
        call("Gen4D_SaveScene", {"filename_prefix": "fuzz/base", "write_ply_frames": False, "num_frames": 0,
                                 "scene": self.values["GEN4D_SCENE"]})
        listed = pack().NODE_CLASS_MAPPINGS["Gen4D_LoadScene"].INPUT_TYPES()["required"]["file"][0]
        self.overrides["Gen4D_LoadScene"] = {"file": listed[0]}
        return listed[0]

    def _try(self, kind: str, build: Callable) -> None:
        try:
            self.values[kind] = build()
        except Exception as exc:  # a payload this version cannot build: its nodes are reported as skipped
            self.missing[kind] = f"{type(exc).__name__}: {exc}"

    def _trajectory(self):
        from gen4d.backends.tiny import build_tiny

        folder = build_tiny("trajectory", self.root / "trajectory", seed=1)
        return call("Gen4D_TrajectoryModelLoader", {"model": str(folder), "device": "cpu", "dtype": "fp32"})[0]

    def _orbital(self):
        import os

        from gen4d.backends import orbital
        from gen4d.backends.tiny import build_tiny

        models = self.root / "models"
        build_tiny("orbital", models / "gen4d" / "diffusion4d", seed=0)
        os.environ["GEN4D_MODELS_DIR"] = str(models)
        if hasattr(orbital, "clear_cache"):
            orbital.clear_cache()
        return call("Gen4D_OrbitalModelLoader", {"model": "orbital-tiny", "device": "cpu", "dtype": "fp32",
                                                 "offload": "after_use"})[0]

    def _guidances(self):
        """Zero123 and SD guidance loaded from tiny random weights through their loader nodes."""
        from gen4d.backends.tiny import build_tiny

        models = self.root / "models"
        build_tiny("guidance_zero123", models / "gen4d" / "zero123", seed=0)
        build_tiny("guidance_sd", models / "diffusers", seed=0)
        common = {"device": "cpu", "dtype": "fp32", "seed": 0, "guidance_scale": 5.0}
        self.guidances["zero123"] = call("Gen4D_Zero123GuidanceLoader", {
            **common, "model": "guidance_zero123-tiny", "condition_image": self.values["IMAGE"][:1],
            "condition_elevation": 0.0, "condition_azimuth": 0.0, "condition_radius": 2.5})[0]
        self.guidances["sd"] = call("Gen4D_SDGuidanceLoader", {**common, "model": "guidance_sd-tiny",
                                                               "prompt": "a cat", "negative_prompt": ""})[0]
        return self.guidances

    def _cheap(self, node_id: str, given: dict) -> dict:
        return {**baseline_widgets(node_id), **given}

    def baseline_works(self, node_id: str, seconds: float = 60.0) -> bool:
        if node_id not in self._works:
            base = self.baseline(node_id)
            self._works[node_id] = base is not None and classify(node_id, "", base, False, seconds).klass == "handled"
        return self._works[node_id]

    def baseline(self, node_id: str) -> dict | None:
        """A call of ``node_id`` that should work, or None when this context cannot feed it."""
        cls = pack().NODE_CLASS_MAPPINGS[node_id]
        inputs = baseline_widgets(node_id)
        for section, name, kind, _opts in input_specs(cls):
            if isinstance(kind, str) and kind not in WIDGETS:
                wanted = section == "required" or (node_id, name) in OPTIONAL_FEEDS
                if not wanted:
                    continue
                value = self.values.get(kind)
                if value is None:
                    return None
                if kind == "IMAGE" and "depth" in name:
                    value = self.depth_image
                if (node_id, name) == ("Gen4D_Compose", "background"):
                    value = self.background_scene
                inputs[name] = value
        return {**inputs, **OVERRIDES.get(node_id, {}), **self.overrides.get(node_id, {})}


# Optional sockets a node needs to do anything (it refuses clearly without them).
OPTIONAL_FEEDS = {("Gen4D_Render", "scene"), ("Gen4D_Render", "cameras"), ("Gen4D_TrajectoryDiT", "depth_model"),
                  ("Gen4D_OrbitalVideoDiffusion", "image"), ("Gen4D_Preview4D", "scene"), ("Gen4D_SaveScene", "scene"),
                  ("Gen4D_ViSMRender", "scene"), ("Gen4D_I2VReference", "image")}

# Widget values that keep a baseline call small (every other INT widget runs at its minimum).
OVERRIDES = {
    "Gen4D_OrbitalVideoDiffusion": {"size": 32, "num_frames": 4, "steps": 1, "prompt": "a cat"},
    "Gen4D_TrajectoryDiT": {"width": 32, "height": 32, "num_frames": 5, "steps": 1, "prompt": "a cat"},
    "Gen4D_Compose": {"depth_input_size": 28},
    "Gen4D_ProgressiveOutpaint": {"lift_size": 32},
    "Gen4D_Depth": {"input_size": 28},
    "Gen4D_SaveScene": {"filename_prefix": "fuzz/scene"},
    "Gen4D_SaveTracks": {"filename_prefix": "fuzz/tracks"},
    "Gen4D_SAM2Split": {"points": "[[16, 16]]"},
    "Gen4D_ParallelOptions": {"devices": "cpu,cpu"},  # no GPU needed to build the options
}


def baseline_widgets(node_id: str) -> dict:
    """Every widget at its default, INT widgets at their minimum (the cheapest call)."""
    cls = pack().NODE_CLASS_MAPPINGS[node_id]
    out = {}
    for _section, name, kind, opts in input_specs(cls):
        if isinstance(kind, (list, tuple)):
            out[name] = opts.get("default", kind[0] if kind else None)
        elif kind == "INT" and "min" in opts and "seed" not in name:
            out[name] = int(opts["min"])
        elif kind in WIDGETS and "default" in opts:
            out[name] = opts["default"]
    return out


# --------------------------------------------------------------------------- case tables


@dataclass(frozen=True)
class Case:
    label: str
    make: Callable[[Any, dict], Any]   # (baseline value, input options) -> fuzzed value
    bad: bool                          # True: only a clear error (or a logged warning) is right
    long: bool = False                 # only in the long run
    paired: bool = False               # bad only where the node takes frames this input must match


def _with(obj, **fields):
    """A shallow copy of a (frozen) dataclass payload with some fields replaced, checks bypassed."""
    new = copy.copy(obj)
    for k, v in fields.items():
        object.__setattr__(new, k, v)
    return new


def _nan_at(t: torch.Tensor, value=float("nan")) -> torch.Tensor:
    t = t.detach().clone()
    t.view(-1)[0] = value
    return t


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x4 = x if x.dim() == 4 else x[..., None]
    y = torch.nn.functional.interpolate(x4.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
    y = y.permute(0, 2, 3, 1).contiguous()
    return y if x.dim() == 4 else y[..., 0]


IMAGE_CASES = [
    Case("uint8 0..255", lambda x, o: (x * 255).round().to(torch.uint8), True),
    Case("float 0..255", lambda x, o: x * 255, True),
    Case("negative", lambda x, o: x - 1.0, True),
    Case("bool", lambda x, o: x > 0.5, True),
    Case("NaN pixel", lambda x, o: _nan_at(x), True),
    Case("inf pixel", lambda x, o: _nan_at(x, float("inf")), True, long=True),
    Case("rank 3 [H,W,C]", lambda x, o: x[0], True),
    Case("one channel", lambda x, o: x[..., :1], True),
    Case("channels first", lambda x, o: x.permute(0, 3, 1, 2).contiguous(), True, long=True),
    Case("empty batch", lambda x, o: x[:0], True),
    Case("nested list", lambda x, o: x.tolist(), True, long=True),
    Case("string", lambda x, o: "image.png", True),
    Case("RGBA", lambda x, o: torch.cat([x, torch.ones_like(x[..., :1])], -1), False),
    Case("float64", lambda x, o: x.double(), False, long=True),
    Case("float16", lambda x, o: x.half(), False, long=True),
    Case("requires grad", lambda x, o: x.clone().requires_grad_(True), False),
    Case("non-contiguous", lambda x, o: x.transpose(1, 2).contiguous().transpose(1, 2), False, long=True),
    Case("single frame", lambda x, o: x[:1], False, long=True),
    Case("odd size 17x33", lambda x, o: _resize(x, 17, 33), False, long=True),
]

MASK_CASES = [
    Case("float 0..255", lambda m, o: m * 255, True),
    Case("uint8 0..255", lambda m, o: (m * 255).to(torch.uint8), True),
    Case("negative", lambda m, o: m - 1.0, True, long=True),
    Case("bool", lambda m, o: m > 0.5, True),
    Case("NaN", lambda m, o: _nan_at(m), True),
    Case("rank 4 [B,H,W,3]", lambda m, o: m[..., None].expand(*m.shape, 3).contiguous(), True, long=True),
    Case("size mismatch", lambda m, o: m[:, :16, :], True),
    Case("count mismatch", lambda m, o: torch.cat([m, m[:1]]), True, paired=True),
    Case("string", lambda m, o: "mask.png", True, long=True),
    Case("all zero", lambda m, o: torch.zeros_like(m), False),
    Case("all one", lambda m, o: torch.ones_like(m), False, long=True),
    Case("single mask", lambda m, o: m[:1], False, long=True),
    Case("[H,W]", lambda m, o: m[0], False, long=True),
]


def _cam_times(c, value):
    return _with(c, times=torch.full_like(c.times, value))


CAMERA_CASES = [
    Case("NaN viewmat", lambda c, o: _with(c, viewmats=_nan_at(c.viewmats)), True),
    Case("inf focal", lambda c, o: _with(c, Ks=_nan_at(c.Ks, float("inf"))), True, long=True),
    Case("times 2.0", lambda c, o: _cam_times(c, 2.0), True),
    Case("times -1", lambda c, o: _cam_times(c, -1.0), True, long=True),
    Case("times NaN", lambda c, o: _cam_times(c, float("nan")), True, long=True),
    Case("count mismatch", lambda c, o: c[:2], True, paired=True),
    Case("a tensor", lambda c, o: c.viewmats, True),
    Case("single camera", lambda c, o: c[:1], False, long=True),
]


def _nan_gaussians(g):
    return g.map(lambda t: _nan_at(t) if t.dim() == 2 and t.shape[-1] == 3 else t)


PAYLOAD_CASES = [
    Case("string", lambda v, o: "payload", True),
    Case("a tensor", lambda v, o: torch.zeros(3), True, long=True),
    Case("a dict", lambda v, o: {}, True, long=True),
]

GAUSSIAN_CASES = PAYLOAD_CASES + [Case("NaN means", lambda g, o: _nan_gaussians(g), True)]


def _step_up(o):
    return o.get("step", 1) if isinstance(o.get("step", 1), (int, float)) and o.get("step", 1) > 0 else 1


INT_CASES = [
    Case("below min", lambda v, o: int(o["min"]) - 1 if "min" in o else None, True),
    Case("above max", lambda v, o: int(o["max"]) + 1 if "max" in o else None, True, long=True),
    Case("float", lambda v, o: float(v) + 0.5, True, long=True),
    Case("string", lambda v, o: str(v), True),
    Case("next step", lambda v, o: min(int(v) + int(_step_up(o)), int(o.get("max", v + 1))), False, long=True),
]

FLOAT_CASES = [
    Case("NaN", lambda v, o: float("nan"), True),
    Case("inf", lambda v, o: float("inf"), True, long=True),
    Case("below min", lambda v, o: float(o["min"]) - 1.0 if "min" in o else None, True, long=True),
    Case("above max", lambda v, o: float(o["max"]) * 2 + 1.0 if "max" in o else None, True, long=True),
    Case("at min", lambda v, o: float(o["min"]) if "min" in o else None, False, long=True),
    Case("string", lambda v, o: "1.0", True, long=True),
]

STRING_CASES = [
    Case("not text", lambda v, o: 5, True, long=True),
    Case("10k characters", lambda v, o: "x" * 10000, False, long=True),
    Case("unicode and NUL", lambda v, o: "日本語 \u0000 ü", False),
    Case("empty", lambda v, o: "", False, long=True),
]

BOOL_CASES = [
    Case("string yes", lambda v, o: "yes", True),
    Case("flipped", lambda v, o: not v, False, long=True),
]

COMBO_CASES = [
    Case("not an option", lambda v, o: "no-such-option", True),
    Case("path traversal", lambda v, o: "../../../etc/passwd", True, long=True),
    Case("absolute path", lambda v, o: "/etc/passwd", True, long=True),
]

SOCKET_CASES = {"IMAGE": IMAGE_CASES, "MASK": MASK_CASES, "GEN4D_CAMERAS": CAMERA_CASES,
                "GEN4D_GAUSSIANS": GAUSSIAN_CASES}
WIDGET_CASES = {"INT": INT_CASES, "FLOAT": FLOAT_CASES, "STRING": STRING_CASES, "BOOLEAN": BOOL_CASES,
                "COMBO": COMBO_CASES}


def cases_for(kind) -> list[Case]:
    if isinstance(kind, (list, tuple)):
        return COMBO_CASES
    if kind in SOCKET_CASES:
        return SOCKET_CASES[kind]
    if kind in WIDGET_CASES:
        return WIDGET_CASES[kind]
    return PAYLOAD_CASES


@dataclass(frozen=True)
class NodeCase:
    node: str
    input: str
    kind: str
    case: Case

    @property
    def id(self) -> str:
        return f"{self.node}.{self.input}[{self.case.label}]"


def node_cases(long: bool = False, per_input: int = 2) -> list[NodeCase]:
    """Every (node, input, case); the fast selection keeps ``per_input`` cases per input, picked by a
    stable hash so each input sees a different slice of its table and the selection never changes."""
    out = []
    for node_id, cls in sorted(pack().NODE_CLASS_MAPPINGS.items()):
        for _section, name, kind, _opts in input_specs(cls):
            table = cases_for(kind)
            kname = "COMBO" if isinstance(kind, (list, tuple)) else kind
            if not long:
                fast = [c for c in table if not c.long]
                start = zlib.crc32(f"{node_id}.{name}".encode()) % max(len(fast), 1)
                table = (fast[start:] + fast[:start])[:per_input]
            out += [NodeCase(node_id, name, kname, c) for c in table]
    return out


# --------------------------------------------------------------------------- outcome


@dataclass
class Outcome:
    klass: str
    detail: str = ""
    warnings: list[str] = field(default_factory=list)


class _Timeout(BaseException):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`_Timeout` in the main thread after ``seconds`` (no-op elsewhere)."""
    try:
        old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(_Timeout()))
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def output_problem(node_id: str, result) -> str | None:
    """Why the outputs of ``node_id`` are not valid ComfyUI values, or None."""
    cls = pack().NODE_CLASS_MAPPINGS[node_id]
    if not isinstance(result, tuple) or len(result) != len(cls.RETURN_TYPES):
        return f"returned {type(result).__name__} of length {len(result) if hasattr(result, '__len__') else '?'}"
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    for kind, name, value in zip(cls.RETURN_TYPES, names, result):
        if kind not in ("IMAGE", "MASK"):
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return f"output {name} is not a float tensor"
        if not bool(torch.isfinite(value).all()):
            return f"output {name} holds NaN or inf"
        if "depth" not in name and value.numel() and (float(value.min()) < -1e-3 or float(value.max()) > 1 + 1e-3):
            return f"output {name} has values in {float(value.min()):.3g}..{float(value.max()):.3g}"
    return None


def classify(node_id: str, name: str, inputs: dict, bad: bool, seconds: float = 60.0) -> Outcome:
    handler = _Warnings()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with time_limit(seconds):
            result = call(node_id, inputs)
    except _Timeout:
        return Outcome("hang", f"no answer in {seconds:g} s")
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if _names(msg, name):
            return Outcome("clear", msg[:300])
        return Outcome("obscure", f"{type(exc).__name__} not naming {name!r}: {msg[:300]}")
    except Exception as exc:
        return Outcome("obscure", f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        root.removeHandler(handler)
    problem = output_problem(node_id, result)
    if problem:
        return Outcome("silent", problem)
    warned = [m for m in handler.messages if _names(m, name)]
    if bad and not warned:
        return Outcome("silent", f"accepted without an error or a warning naming {name!r}")
    return Outcome("handled", "", warned)


def _names(message: str, name: str) -> bool:
    words = {name, name.replace("_", " "), name.removesuffix("s")} - {""}
    return any(w in message for w in words)


def run_case(ctx: Context, nc: NodeCase, seconds: float = 60.0) -> Outcome | None:
    """The outcome of one case, or None when it does not apply (no baseline, no such value)."""
    base = ctx.baseline(nc.node)
    if base is None:
        return None
    if not nc.case.bad and not ctx.baseline_works(nc.node, seconds):
        return None  # an edge case says nothing where the plain call already refuses
    cls = pack().NODE_CLASS_MAPPINGS[nc.node]
    opts = next(o for _s, n, _k, o in input_specs(cls) if n == nc.input)
    current = base.get(nc.input)
    if current is None and nc.kind not in WIDGETS and nc.kind != "COMBO":
        current = ctx.values.get(nc.kind)
        if current is None:
            return None
    try:
        value = nc.case.make(current, opts)
    except Exception:
        return None
    if value is None:
        return None
    bad = nc.case.bad
    if nc.case.paired:
        others = [n for _s, n, k, _o in input_specs(cls) if k in ("IMAGE", "MASK") and n != nc.input and n in base]
        bad = bool(others)
    if not bad and not ctx.baseline_works(nc.node, seconds):
        return None
    return classify(nc.node, nc.input, {**base, nc.input: value}, bad, seconds)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


__all__ = ["Case", "NodeCase", "Context", "Outcome", "node_cases", "run_case", "classify", "call", "CLASSES", "GOOD",
           "time_limit", "output_problem", "baseline_widgets", "dataclasses"]
