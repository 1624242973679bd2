# SPDX-License-Identifier: Apache-2.0
"""Static checks for ComfyUI UI-format workflow files, and conversion to API-format prompts.

A UI-format workflow is the JSON the ComfyUI frontend saves: top-level ``nodes``, ``links``,
``groups``, ``version`` (and ``extra``). Each node has ``id``, ``type``, ``mode``, ``inputs``
(``[{name, type, link, widget?}]``), ``outputs`` (``[{name, type, links}]``) and
``widgets_values``. A link is ``[id, origin_id, origin_slot, target_id, target_slot, type]``
(schema 0.4) or an object with those keys (schema 1).

How ``widgets_values`` maps onto a node's inputs (rules of the ComfyUI frontend):

* Widget inputs are the node's ``required`` then ``optional`` inputs, in declaration order,
  whose type is INT, FLOAT, STRING, BOOLEAN or a combo (a list of choices, or ``"COMBO"``),
  except those declared with ``forceInput`` (they are plain sockets and have no value).
  ``hidden`` inputs never appear.
* Every widget input takes exactly one slot **whether or not it is linked**: a widget that is
  driven by a link (a converted widget, shown in ``inputs`` with a ``"widget": {"name": ...}``
  entry) keeps its last value in ``widgets_values``; the link wins when the prompt is built.
* An INT input gets one extra value right after its own, the ``control_after_generate`` mode
  (``fixed``/``increment``/``decrement``/``randomize``), when its options say
  ``control_after_generate`` is truthy, or when the option is absent and the input is named
  ``seed`` or ``noise_seed``. ``control_after_generate: False`` turns it off for a seed.
* A combo with ``control_after_generate`` gets two extra values: the mode (which may also be
  ``increment-wrap``) and the ``control_filter_list`` string.
* A combo with ``image_upload``/``video_upload`` gets one extra value, the upload button's
  (``"image"``); ``audio_upload`` gets two (player and button).
* None of those extra values are sent to the server.

Frontend-only ("virtual") node types never reach the server: ``Note`` and ``MarkdownNote``
(``widgets_values == [text]``), ``Reroute`` (one ``*`` input, one output; passes its source
through) and ``PrimitiveNode`` (one output typed like the widget input it drives;
``widgets_values == [value, control...]``; its value is written into the target's input).
Nodes with ``mode`` 2 (muted) are left out of the prompt; ``mode`` 4 (bypassed) nodes are left
out and each of their outputs is fed from their first linked input of the same type.

Node definitions come from classic (V1) ComfyUI node classes (``INPUT_TYPES()``,
``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_NODE``), from ``/object_info`` entries
(``core_types``), and from :data:`CORE_NODE_TYPES`, a small hand-written table of common core
nodes in ``/object_info`` form.

A workflow whose ``extra.gen4d.runnable`` is true is meant to execute on a CPU-only ComfyUI
with no weights; :func:`is_runnable` reads that mark.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_MODES = ("fixed", "increment", "decrement", "randomize")
COMBO_CONTROL_MODES = CONTROL_MODES + ("increment-wrap",)
SEED_NAMES = ("seed", "noise_seed")
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
MODE_MUTED = 2
MODE_BYPASSED = 4
ANY = "*"

# A Gen4D model picker (nodes/placement.py model_in) and its placeholder when no model is present.
MODEL_KIND_KEY = "gen4d_model_kind"
DATASET_PICKER_KEY = "gen4d_dataset_picker"
NO_MODELS = "(no models found)"
# Extra frontend widget values that follow a combo with one of these options.
_UPLOAD_EXTRAS = {
    "image_upload": ("upload",),
    "video_upload": ("upload",),
    "audio_upload": ("player", "upload"),
}

_IMAGE_SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

#: Common core node types, in ``/object_info`` form, written from ComfyUI's node sources
#: (``nodes.py``, ``comfy_extras/nodes_images.py``, ``nodes_video.py``, ``nodes_mask.py``,
#: ``nodes_primitive.py``, ``nodes_preview_any.py``). File-list combos have no ``options``:
#: any file name is accepted.
CORE_NODE_TYPES: dict[str, dict] = {
    "LoadImage": {
        "input": {"required": {"image": ["COMBO", {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_name": ["IMAGE", "MASK"],
    },
    "LoadVideo": {
        "input": {"required": {"file": ["COMBO", {"video_upload": True}]}},
        "output": ["VIDEO"],
        "output_name": ["VIDEO"],
    },
    "SaveImage": {
        "input": {
            "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            "hidden": _IMAGE_SAVE_HIDDEN,
        },
        "output": [],
        "output_node": True,
    },
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE"]}, "hidden": _IMAGE_SAVE_HIDDEN},
        "output": [],
        "output_node": True,
    },
    "PreviewAny": {"input": {"required": {"source": [ANY, {}]}}, "output": [], "output_node": True},
    "ImageScale": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "upscale_method": [_UPSCALE_METHODS],
                "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
                "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
                "crop": [["disabled", "center"]],
            }
        },
        "output": ["IMAGE"],
    },
    "ImageScaleBy": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "upscale_method": [_UPSCALE_METHODS],
                "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}],
            }
        },
        "output": ["IMAGE"],
    },
    "ImageBatch": {"input": {"required": {"image1": ["IMAGE"], "image2": ["IMAGE"]}}, "output": ["IMAGE"]},
    "ImageFromBatch": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "batch_index": ["INT", {"default": 0, "min": 0, "max": 4095}],
                "length": ["INT", {"default": 1, "min": 1, "max": 4096}],
            }
        },
        "output": ["IMAGE"],
    },
    "RepeatImageBatch": {
        "input": {"required": {"image": ["IMAGE"], "amount": ["INT", {"default": 1, "min": 1, "max": 4096}]}},
        "output": ["IMAGE"],
    },
    "EmptyImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
                "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
                "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}],
            }
        },
        "output": ["IMAGE"],
    },
    "MaskToImage": {"input": {"required": {"mask": ["MASK"]}}, "output": ["IMAGE"]},
    "ImageToMask": {
        "input": {"required": {"image": ["IMAGE"], "channel": [["red", "green", "blue", "alpha"]]}},
        "output": ["MASK"],
    },
    "SaveAnimatedWEBP": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
                "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
                "lossless": ["BOOLEAN", {"default": True}],
                "quality": ["INT", {"default": 80, "min": 0, "max": 100}],
                "method": [["default", "fastest", "slowest"]],
            },
            "hidden": _IMAGE_SAVE_HIDDEN,
        },
        "output": [],
        "output_node": True,
    },
    "SaveAnimatedPNG": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
                "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
                "compress_level": ["INT", {"default": 4, "min": 0, "max": 9}],
            },
            "hidden": _IMAGE_SAVE_HIDDEN,
        },
        "output": [],
        "output_node": True,
    },
    "CreateVideo": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}],
            },
            "optional": {"audio": ["AUDIO"]},
        },
        "output": ["VIDEO"],
    },
    "GetVideoComponents": {
        "input": {"required": {"video": ["VIDEO"]}},
        "output": ["IMAGE", "AUDIO", "FLOAT"],
        "output_name": ["images", "audio", "fps"],
    },
    "SaveVideo": {
        "input": {
            "required": {
                "video": ["VIDEO"],
                "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                "format": ["COMBO", {"default": "auto", "options": ["auto", "mp4"]}],
                "codec": ["COMBO", {"default": "auto", "options": ["auto", "h264"]}],
            },
            "hidden": _IMAGE_SAVE_HIDDEN,
        },
        "output": [],
        "output_node": True,
    },
    "PrimitiveInt": {
        "input": {
            "required": {
                "value": ["INT", {"min": -(2**63) + 1, "max": 2**63 - 1, "control_after_generate": True}]
            }
        },
        "output": ["INT"],
    },
    "PrimitiveFloat": {
        "input": {"required": {"value": ["FLOAT", {"min": -(2**63) + 1, "max": 2**63 - 1}]}},
        "output": ["FLOAT"],
    },
    "PrimitiveString": {
        "input": {"required": {"value": ["STRING", {"multiline": False}]}},
        "output": ["STRING"],
    },
    "PrimitiveBoolean": {"input": {"required": {"value": ["BOOLEAN", {}]}}, "output": ["BOOLEAN"]},
}


# --------------------------------------------------------------------------- node specs


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node type."""

    name: str
    type: str
    opts: Mapping[str, Any]
    required: bool
    choices: tuple | None = None

    @property
    def is_widget(self) -> bool:
        """True when the frontend draws a widget (and reserves a ``widgets_values`` slot)."""
        return self.type in WIDGET_TYPES and not self.opts.get("forceInput", False)

    def extra_roles(self) -> tuple[str, ...]:
        """Roles of the frontend-only values that follow this widget's own value."""
        control = self.opts.get("control_after_generate")
        if self.type == "INT":
            if control is None:
                control = self.name in SEED_NAMES
            return ("control",) if control else ()
        if self.type != "COMBO":
            return ()
        roles: tuple[str, ...] = ("combo_control", "filter") if control else ()
        for key, extra in _UPLOAD_EXTRAS.items():
            if self.opts.get(key):
                roles += extra
        return roles


@dataclass(frozen=True)
class NodeSpec:
    """The definition of a node type, as far as workflow checks need it."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool = False

    def input(self, name: str) -> InputSpec | None:
        """The input called ``name``, or None."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def widget_slots(self) -> list[tuple[InputSpec, str]]:
        """``(input, role)`` for each ``widgets_values`` position; role ``"value"`` is the input's own."""
        slots: list[tuple[InputSpec, str]] = []
        for spec in self.inputs:
            if spec.is_widget:
                slots.append((spec, "value"))
                slots.extend((spec, role) for role in spec.extra_roles())
        return slots


def _parse_input(name: str, raw: Any, required: bool) -> InputSpec:
    """Parse one ``INPUT_TYPES`` entry (``(TYPE_or_list, {opts})``)."""
    if isinstance(raw, str):
        raw = (raw,)
    kind = raw[0]
    opts = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", opts, required, tuple(kind))
    if kind == "COMBO":
        options = opts.get("options")
        return InputSpec(name, "COMBO", opts, required, tuple(options) if options is not None else None)
    return InputSpec(name, str(kind), opts, required)


def _parse_inputs(
    sections: Mapping[str, Any], order: Mapping[str, list] | None = None
) -> tuple[InputSpec, ...]:
    """Required then optional inputs, in declaration (or ``input_order``) order; hidden ones dropped."""
    parsed = []
    for section in ("required", "optional"):
        entries = sections.get(section) or {}
        names = (order or {}).get(section) or list(entries)
        parsed.extend(_parse_input(n, entries[n], section == "required") for n in names if n in entries)
    return tuple(parsed)


def spec_from_class(name: str, cls: type) -> NodeSpec:
    """NodeSpec of a classic (V1) node class."""
    outputs = tuple(
        str(t) if not isinstance(t, (list, tuple)) else "COMBO" for t in getattr(cls, "RETURN_TYPES", ())
    )
    names = tuple(getattr(cls, "RETURN_NAMES", None) or outputs)
    return NodeSpec(
        name, _parse_inputs(cls.INPUT_TYPES()), outputs, names, bool(getattr(cls, "OUTPUT_NODE", False))
    )


def spec_from_object_info(name: str, entry: Mapping[str, Any]) -> NodeSpec:
    """NodeSpec of an ``/object_info`` entry (or a :data:`CORE_NODE_TYPES` one)."""
    outputs = tuple(str(t) if not isinstance(t, (list, tuple)) else "COMBO" for t in entry.get("output", ()))
    names = tuple(entry.get("output_name") or outputs)
    inputs = _parse_inputs(entry.get("input", {}), entry.get("input_order"))
    return NodeSpec(name, inputs, outputs, names, bool(entry.get("output_node", False)))


_MODEL = ["MODEL"]
_COND = ["CONDITIONING"]

#: Core model loaders, text/vision encoders and the Wan image-to-video sampling chain, in
#: ``/object_info`` form (``nodes.py``, ``comfy_extras/nodes_video_model.py``, ``nodes_wan.py``);
#: the native-model workflows load with them. Model-file combos carry no options.
CORE_MODEL_NODE_TYPES: dict[str, dict] = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": ["COMBO", {}]}},
        "output": ["MODEL", "CLIP", "VAE"],
    },
    "ImageOnlyCheckpointLoader": {
        "input": {"required": {"ckpt_name": ["COMBO", {}]}},
        "output": ["MODEL", "CLIP_VISION", "VAE"],
    },
    "UNETLoader": {
        "input": {
            "required": {
                "unet_name": ["COMBO", {}],
                "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]],
            }
        },
        "output": ["MODEL"],
    },
    "CLIPLoader": {
        "input": {
            "required": {"clip_name": ["COMBO", {}], "type": ["COMBO", {}]},
            "optional": {"device": [["default", "cpu"], {"advanced": True}]},
        },
        "output": ["CLIP"],
    },
    "VAELoader": {"input": {"required": {"vae_name": ["COMBO", {}]}}, "output": ["VAE"]},
    "CLIPVisionLoader": {"input": {"required": {"clip_name": ["COMBO", {}]}}, "output": ["CLIP_VISION"]},
    "CLIPVisionEncode": {
        "input": {"required": {"clip_vision": ["CLIP_VISION"], "image": ["IMAGE"], "crop": [["center", "none"]]}},
        "output": ["CLIP_VISION_OUTPUT"],
    },
    "LoraLoaderModelOnly": {
        "input": {
            "required": {
                "model": _MODEL,
                "lora_name": ["COMBO", {}],
                "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}],
            }
        },
        "output": ["MODEL"],
    },
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]}},
        "output": ["CONDITIONING"],
    },
    "WanImageToVideo": {
        "input": {
            "required": {
                "positive": _COND,
                "negative": _COND,
                "vae": ["VAE"],
                "width": ["INT", {"default": 832, "min": 16, "max": 16384, "step": 16}],
                "height": ["INT", {"default": 480, "min": 16, "max": 16384, "step": 16}],
                "length": ["INT", {"default": 81, "min": 1, "max": 16384, "step": 4}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            },
            "optional": {"clip_vision_output": ["CLIP_VISION_OUTPUT"], "start_image": ["IMAGE"]},
        },
        "output": ["CONDITIONING", "CONDITIONING", "LATENT"],
        "output_name": ["positive", "negative", "latent"],
    },
    "KSampler": {
        "input": {
            "required": {
                "model": _MODEL,
                "seed": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}],
                "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
                "sampler_name": ["COMBO", {}],
                "scheduler": ["COMBO", {}],
                "positive": _COND,
                "negative": _COND,
                "latent_image": ["LATENT"],
                "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
            }
        },
        "output": ["LATENT"],
    },
    "VAEDecode": {"input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}}, "output": ["IMAGE"]},
}
CORE_NODE_TYPES.update(CORE_MODEL_NODE_TYPES)

#: ``(node type, input)`` combos that list the user's model folders: a workflow names the file it was
#: made with, which a given installation may not have, so any file name is accepted (as for uploads),
#: also when a live server's ``/object_info`` lists the files it has.
MODEL_FILE_INPUTS = frozenset({
    ("CheckpointLoaderSimple", "ckpt_name"), ("ImageOnlyCheckpointLoader", "ckpt_name"),
    ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"),
    ("CLIPVisionLoader", "clip_name"), ("LoraLoaderModelOnly", "lora_name"),
})


def _model_files_open(spec: NodeSpec) -> NodeSpec:
    if not any((spec.name, i.name) in MODEL_FILE_INPUTS for i in spec.inputs):
        return spec
    inputs = tuple(replace(i, choices=None) if (spec.name, i.name) in MODEL_FILE_INPUTS else i for i in spec.inputs)
    return replace(spec, inputs=inputs)


def build_registry(
    node_classes: Mapping[str, type] | None, core_types: Mapping[str, Mapping] | None = None
) -> dict[str, NodeSpec]:
    """Specs by node type: the built-in core table, overridden by ``core_types``, then by the pack's classes."""
    registry = {n: spec_from_object_info(n, e) for n, e in CORE_NODE_TYPES.items()}
    registry.update({n: spec_from_object_info(n, e) for n, e in (core_types or {}).items()})
    registry = {n: _model_files_open(spec) for n, spec in registry.items()}
    registry.update({n: spec_from_class(n, c) for n, c in (node_classes or {}).items()})
    return registry


# --------------------------------------------------------------------------- workflow access


@dataclass(frozen=True)
class Link:
    """One UI-format link."""

    id: Any
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: str


def load_workflow(path: str | Path) -> dict:
    """Read a UI-format workflow JSON file."""
    with open(path, encoding="utf-8") as handle:
        workflow = json.load(handle)
    if not _is_ui_workflow(workflow):
        raise ValueError(f"{path}: not a UI-format workflow (expected an object with a 'nodes' list)")
    return workflow


def _is_ui_workflow(workflow: Any) -> bool:
    return isinstance(workflow, Mapping) and isinstance(workflow.get("nodes"), list)


def is_runnable(workflow: Mapping[str, Any]) -> bool:
    """True when the workflow is marked ``extra.gen4d.runnable`` (executes on CPU without weights)."""
    extra = workflow.get("extra") or {}
    return bool((extra.get("gen4d") or {}).get("runnable", False))


def parse_links(workflow: Mapping[str, Any]) -> tuple[list[Link], list[str]]:
    """Links of the workflow, and problems with their shape."""
    links, problems = [], []
    for raw in workflow.get("links") or []:
        if isinstance(raw, Mapping):
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            raw = [raw.get(k) for k in keys]
        if not isinstance(raw, (list, tuple)) or len(raw) < 6:
            problems.append(
                f"malformed link {raw!r}: expected [id, from_node, from_slot, to_node, to_slot, type]"
            )
            continue
        lid, oid, oslot, tid, tslot, ltype = raw[:6]
        if not isinstance(oslot, int) or not isinstance(tslot, int):
            problems.append(f"link {lid}: slots must be integers, got {oslot!r} and {tslot!r}")
            continue
        links.append(Link(lid, oid, oslot, tid, tslot, str(ltype)))
    return links, problems


def _label(node: Mapping[str, Any]) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


def types_match(a: str, b: str) -> bool:
    """ComfyUI's socket compatibility: equal, either is ``*``, or comma-separated unions overlap."""
    if a == b or ANY in (a, b):
        return True
    left = {t.strip() for t in str(a).split(",")}
    right = {t.strip() for t in str(b).split(",")}
    return bool(left & right)


# --------------------------------------------------------------------------- widget values


def map_widget_values(spec: NodeSpec, values: Any) -> tuple[list[tuple[InputSpec, str, Any]], list[str]]:
    """Assign ``widgets_values`` to widget slots: ``[(input, role, value)]`` and mapping problems."""
    slots = spec.widget_slots()
    if values is None:
        values = []
    if isinstance(values, Mapping):
        return [(s, r, values[s.name]) for s, r in slots if r == "value" and s.name in values], []
    if not isinstance(values, list):
        return [], [f"widgets_values must be a list, got {type(values).__name__}"]
    assigned = [(s, r, v) for (s, r), v in zip(slots, values)]
    problems = []
    if len(values) > len(slots):
        expected = [f"{s.name}" if r == "value" else f"{s.name}:{r}" for s, r in slots]
        problems.append(f"{len(values)} widgets_values but {len(slots)} widget slots {expected}")
    return assigned, problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_value(spec: InputSpec, value: Any) -> str | None:
    """Why ``value`` does not fit the widget input ``spec``, or None when it fits."""
    kind = spec.type
    if kind == "INT" and not _is_int(value):
        return f"{spec.name}: expected an integer, got {value!r}"
    if kind == "FLOAT" and not _is_number(value):
        return f"{spec.name}: expected a number, got {value!r}"
    if kind in ("INT", "FLOAT"):
        low, high = spec.opts.get("min"), spec.opts.get("max")
        if low is not None and value < low:
            return f"{spec.name}: {value!r} is below min {low}"
        if high is not None and value > high:
            return f"{spec.name}: {value!r} is above max {high}"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{spec.name}: expected true/false, got {value!r}"
    if kind == "STRING" and not isinstance(value, str):
        return f"{spec.name}: expected a string, got {value!r}"
    if kind == "COMBO" and any(spec.opts.get(k) for k in _UPLOAD_EXTRAS):
        # a file picker lists the user's input folder: a template names a file the user supplies
        return None if isinstance(value, str) and value else f"{spec.name}: expected a file name, got {value!r}"
    if kind == "COMBO" and spec.opts.get(MODEL_KIND_KEY):
        # a model picker lists the user's model folders: a workflow names the model it was made with, and the
        # frontend swaps in the first model found when that one is absent (web/gen4d_models.js)
        if not (isinstance(value, str) and value) or value == NO_MODELS:
            return f"{spec.name}: expected a model name, got {value!r}"
        return None
    if kind == "COMBO" and spec.opts.get(DATASET_PICKER_KEY):
        # a dataset picker lists the user's input folder: a workflow names a dataset the user supplies (or the
        # placeholder), and the frontend swaps in the first dataset found (web/gen4d_models.js)
        return None if isinstance(value, str) and value else f"{spec.name}: expected a dataset folder, got {value!r}"
    if kind == "COMBO" and spec.choices is not None and value not in spec.choices:
        shown = list(spec.choices) if len(spec.choices) <= 12 else f"{len(spec.choices)} options"
        return f"{spec.name}: {value!r} is not one of {shown}"
    if kind == "COMBO" and spec.choices is None and not isinstance(value, str):
        return f"{spec.name}: expected a string choice, got {value!r}"
    return None


def _check_extra_value(spec: InputSpec, role: str, value: Any) -> str | None:
    """Check a frontend-only value (control mode, filter list, upload button)."""
    if role == "control" and value not in CONTROL_MODES:
        return f"{spec.name}: control_after_generate {value!r} is not one of {list(CONTROL_MODES)}"
    if role == "combo_control" and value not in COMBO_CONTROL_MODES:
        return f"{spec.name}: control_after_generate {value!r} is not one of {list(COMBO_CONTROL_MODES)}"
    if role == "filter" and not isinstance(value, str):
        return f"{spec.name}: control_filter_list must be a string, got {value!r}"
    return None


# --------------------------------------------------------------------------- the checker


class _Graph:
    """Indexed view of a UI-format workflow."""

    def __init__(self, workflow: Mapping[str, Any], registry: Mapping[str, NodeSpec]):
        self.registry = registry
        self.problems: list[str] = []
        self.nodes: dict[Any, Mapping[str, Any]] = {}
        for node in workflow.get("nodes") or []:
            if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
                self.problems.append(f"malformed node {node!r}: needs 'id' and 'type'")
            elif node["id"] in self.nodes:
                self.problems.append(f"duplicate node id {node['id']}")
            else:
                self.nodes[node["id"]] = node
        links, link_problems = parse_links(workflow)
        self.problems += link_problems
        self.links: dict[Any, Link] = {}
        for link in links:
            if link.id in self.links:
                self.problems.append(f"duplicate link id {link.id}")
            self.links[link.id] = link

    def spec(self, node: Mapping[str, Any]) -> NodeSpec | None:
        return self.registry.get(node.get("type"))

    def is_known(self, node: Mapping[str, Any]) -> bool:
        return node.get("type") in VIRTUAL_TYPES or self.spec(node) is not None

    def input_slot(self, node: Mapping[str, Any], slot: int) -> Mapping[str, Any] | None:
        inputs = node.get("inputs") or []
        return inputs[slot] if 0 <= slot < len(inputs) else None

    def output_slot(self, node: Mapping[str, Any], slot: int) -> Mapping[str, Any] | None:
        outputs = node.get("outputs") or []
        return outputs[slot] if 0 <= slot < len(outputs) else None

    def linked_inputs(self, node: Mapping[str, Any]) -> set[str]:
        return {i.get("name") for i in node.get("inputs") or [] if i.get("link") is not None}

    def input_type(self, node: Mapping[str, Any], slot: int) -> str | None:
        """Declared type of the input socket at ``slot`` (``*`` for a Reroute)."""
        entry = self.input_slot(node, slot)
        if entry is None:
            return None
        spec = self.spec(node)
        declared = spec.input(entry.get("name")) if spec else None
        return declared.type if declared else str(entry.get("type", ANY))

    def output_type(self, node: Mapping[str, Any], slot: int, seen: frozenset = frozenset()) -> str:
        """Type produced at ``slot``: declared, or traced through Reroutes to their source."""
        if node.get("type") == "Reroute" and node.get("id") not in seen:
            source = self.source_of(node, 0)
            if source is not None:
                return self.output_type(source[0], source[1], seen | {node.get("id")})
        spec = self.spec(node)
        if spec is not None and node.get("type") not in VIRTUAL_TYPES and slot < len(spec.outputs):
            return spec.outputs[slot]
        entry = self.output_slot(node, slot)
        return str(entry.get("type", ANY)) if entry else ANY

    def source_of(self, node: Mapping[str, Any], slot: int) -> tuple[Mapping[str, Any], int] | None:
        """``(origin node, origin slot)`` feeding input ``slot``, or None."""
        entry = self.input_slot(node, slot)
        link = self.links.get(entry.get("link")) if entry else None
        origin = self.nodes.get(link.origin_id) if link else None
        return (origin, link.origin_slot) if origin is not None else None


def _check_node_slots(graph: _Graph, node: Mapping[str, Any], spec: NodeSpec) -> list[str]:
    """Saved input/output sockets agree with the node definition."""
    problems = []
    for entry in node.get("inputs") or []:
        declared = spec.input(entry.get("name"))
        if declared is None:
            problems.append(f"{_label(node)}: input {entry.get('name')!r} is not declared by the node type")
        elif "type" in entry and not types_match(str(entry["type"]), declared.type):
            problems.append(
                f"{_label(node)}: input {declared.name!r} saved as {entry['type']}, declared {declared.type}"
            )
    outputs = node.get("outputs") or []
    if len(outputs) != len(spec.outputs):
        problems.append(
            f"{_label(node)}: {len(outputs)} outputs saved, node type declares {len(spec.outputs)}"
        )
    for slot, (entry, declared) in enumerate(zip(outputs, spec.outputs)):
        if "type" in entry and not types_match(str(entry["type"]), declared):
            problems.append(f"{_label(node)}: output {slot} saved as {entry['type']}, declared {declared}")
    return problems


def _check_widgets(graph: _Graph, node: Mapping[str, Any], spec: NodeSpec) -> list[str]:
    """widgets_values map onto the widget inputs and every value fits its spec."""
    assigned, problems = map_widget_values(spec, node.get("widgets_values"))
    problems = [f"{_label(node)}: {p}" for p in problems]
    linked = graph.linked_inputs(node)
    for input_spec, role, value in assigned:
        if role == "value":
            problem = None if input_spec.name in linked else check_value(input_spec, value)
        else:
            problem = _check_extra_value(input_spec, role, value)
        if problem:
            problems.append(f"{_label(node)}: {problem}")
    return problems


def _check_required(graph: _Graph, node: Mapping[str, Any], spec: NodeSpec) -> list[str]:
    """Every required input is linked or has a widget value."""
    if node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
        return []
    assigned, _ = map_widget_values(spec, node.get("widgets_values"))
    have = graph.linked_inputs(node) | {s.name for s, role, _ in assigned if role == "value"}
    return [
        f"{_label(node)}: required input {s.name!r} ({s.type}) is neither linked nor given a value"
        for s in spec.inputs
        if s.required and s.name not in have
    ]


def _check_virtual(graph: _Graph, node: Mapping[str, Any]) -> list[str]:
    """Notes hold one string; a PrimitiveNode's value fits every widget it drives."""
    kind, values = node["type"], node.get("widgets_values") or []
    if kind in NOTE_TYPES:
        return (
            [] if all(isinstance(v, str) for v in values) else [f"{_label(node)}: note text must be a string"]
        )
    if kind != "PrimitiveNode":
        return []
    problems = []
    for link in graph.links.values():
        target = graph.nodes.get(link.target_id)
        entry = (
            graph.input_slot(target, link.target_slot) if target and link.origin_id == node["id"] else None
        )
        spec = graph.spec(target) if entry else None
        declared = spec.input(entry.get("name")) if spec else None
        if declared is None:
            continue
        if declared.type not in WIDGET_TYPES:
            problems.append(
                f"{_label(node)}: drives {_label(target)} input {declared.name!r}, which is not a widget"
            )
        elif not values:
            problems.append(f"{_label(node)}: has no value")
        elif problem := check_value(declared, values[0]):
            problems.append(f"{_label(node)} -> {_label(target)}: {problem}")
    return problems


def _check_link(graph: _Graph, link: Link) -> list[str]:
    """A link joins existing slots of existing nodes, both ends agree on it, and the types match."""
    where = f"link {link.id} ({link.origin_id}:{link.origin_slot} -> {link.target_id}:{link.target_slot})"
    origin, target = graph.nodes.get(link.origin_id), graph.nodes.get(link.target_id)
    if origin is None or target is None:
        missing = link.origin_id if origin is None else link.target_id
        return [f"{where}: dangling, node {missing} does not exist"]
    out_entry, in_entry = (
        graph.output_slot(origin, link.origin_slot),
        graph.input_slot(target, link.target_slot),
    )
    problems = []
    if out_entry is None:
        problems.append(f"{where}: {_label(origin)} has no output slot {link.origin_slot}")
    elif link.id not in (out_entry.get("links") or []):
        problems.append(f"{where}: not listed in {_label(origin)} output {link.origin_slot} links")
    if in_entry is None:
        problems.append(f"{where}: {_label(target)} has no input slot {link.target_slot}")
    elif in_entry.get("link") != link.id:
        problems.append(
            f"{where}: {_label(target)} input {in_entry.get('name')!r} points at link {in_entry.get('link')}"
        )
    if problems or not (graph.is_known(origin) and graph.is_known(target)):
        return problems  # unknown node types are reported once, by the node check
    out_type, in_type = (
        graph.output_type(origin, link.origin_slot),
        graph.input_type(target, link.target_slot),
    )
    if not types_match(out_type, in_type):
        problems.append(
            f"{where}: type mismatch, {_label(origin)} gives {out_type}, "
            f"{_label(target)} input {in_entry.get('name')!r} takes {in_type}"
        )
    elif not types_match(link.type, out_type):
        problems.append(f"{where}: link typed {link.type} but {_label(origin)} gives {out_type}")
    return problems


def _check_node_refs(graph: _Graph, node: Mapping[str, Any]) -> list[str]:
    """Link ids named by a node's sockets exist and point back at the node."""
    problems = []
    for slot, entry in enumerate(node.get("inputs") or []):
        lid = entry.get("link")
        link = graph.links.get(lid)
        if lid is not None and (link is None or link.target_id != node["id"] or link.target_slot != slot):
            problems.append(
                f"{_label(node)}: input {entry.get('name')!r} names link {lid}, which does not end there"
            )
    for slot, entry in enumerate(node.get("outputs") or []):
        for lid in entry.get("links") or []:
            link = graph.links.get(lid)
            if link is None or link.origin_id != node["id"] or link.origin_slot != slot:
                problems.append(f"{_label(node)}: output {slot} names link {lid}, which does not start there")
    return problems


def check_workflow(
    workflow: Mapping[str, Any],
    node_classes: Mapping[str, type],
    core_types: Mapping[str, Mapping] | None = None,
) -> list[str]:
    """Human-readable problems of a UI-format workflow; an empty list means it is consistent.

    ``node_classes`` are the pack's V1 classes (``NODE_CLASS_MAPPINGS``); ``core_types`` are extra
    ``/object_info`` entries (e.g. a live server's) that override :data:`CORE_NODE_TYPES`.
    """
    if not _is_ui_workflow(workflow):
        return ["not a UI-format workflow: expected an object with a 'nodes' list"]
    graph = _Graph(workflow, build_registry(node_classes, core_types))
    problems = list(graph.problems)
    has_output = False
    for node in graph.nodes.values():
        problems += _check_node_refs(graph, node)
        if node["type"] in VIRTUAL_TYPES:
            problems += _check_virtual(graph, node)
            continue
        spec = graph.spec(node)
        if spec is None:
            problems.append(f"{_label(node)}: unknown node type {node['type']!r}")
            continue
        has_output |= spec.output_node and node.get("mode") not in (MODE_MUTED, MODE_BYPASSED)
        problems += _check_node_slots(graph, node, spec)
        problems += _check_widgets(graph, node, spec)
        problems += _check_required(graph, node, spec)
    for link in graph.links.values():
        problems += _check_link(graph, link)
    if graph.nodes and not has_output:
        problems.append("workflow has no active output node (ComfyUI would reject the prompt)")
    return problems


def with_widget_values(
    workflow: Mapping[str, Any],
    values: Mapping[str, Any],
    node_classes: Mapping[str, type],
    core_types: Mapping[str, Mapping] | None = None,
) -> dict:
    """A copy of a UI-format ``workflow`` with ``{"<node id>.<input>": value}`` written into ``widgets_values``.

    Raises ValueError for an unknown node or input, or an input that is not a widget.
    """
    out = json.loads(json.dumps(workflow))
    registry = build_registry(node_classes, core_types)
    nodes = {str(n["id"]): n for n in out.get("nodes", [])}
    for key, value in values.items():
        node_id, _, name = str(key).partition(".")
        node = nodes.get(node_id)
        if node is None:
            raise ValueError(f"{key!r}: no node {node_id!r} in the workflow (nodes: {sorted(nodes)})")
        spec = registry.get(node["type"])
        slots = [i for i, (inp, role) in enumerate(spec.widget_slots() if spec else []) if inp.name == name
                 and role == "value"]
        if not slots:
            raise ValueError(f"{key!r}: {node['type']} has no widget input {name!r}")
        widgets = node.setdefault("widgets_values", [])
        if len(widgets) <= slots[0]:
            raise ValueError(f"{key!r}: node {node_id} stores only {len(widgets)} widget values")
        widgets[slots[0]] = value
    return out


# --------------------------------------------------------------------------- UI -> API


def _resolve(graph: _Graph, origin: Mapping[str, Any], slot: int, depth: int = 0) -> tuple[str, Any] | None:
    """What feeds a link from ``origin:slot``: ``("link", [id, slot])``, ``("value", v)`` or None."""
    if depth > len(graph.nodes):
        return None
    kind, mode = origin.get("type"), origin.get("mode")
    if kind == "PrimitiveNode":
        values = origin.get("widgets_values") or []
        return ("value", values[0]) if values else None
    if kind == "Reroute":
        source = graph.source_of(origin, 0)
        return _resolve(graph, *source, depth + 1) if source else None
    if mode == MODE_MUTED or kind in NOTE_TYPES:
        return None
    if mode == MODE_BYPASSED:
        source = _bypass_source(graph, origin, slot)
        return _resolve(graph, *source, depth + 1) if source else None
    return ("link", [str(origin["id"]), slot])


def _bypass_source(graph: _Graph, node: Mapping[str, Any], slot: int) -> tuple[Mapping[str, Any], int] | None:
    """The input a bypassed node passes through to output ``slot``: same index first, then same type."""
    wanted = graph.output_type(node, slot)
    inputs = node.get("inputs") or []
    order = ([slot] if slot < len(inputs) else []) + [i for i in range(len(inputs)) if i != slot]
    for index in order:
        source = graph.source_of(node, index)
        if source is not None and types_match(graph.input_type(node, index) or ANY, wanted):
            return source
    return None


def _api_inputs(graph: _Graph, node: Mapping[str, Any], spec: NodeSpec) -> dict[str, Any]:
    """API ``inputs`` of one node: widget values, then links (which win)."""
    assigned, _ = map_widget_values(spec, node.get("widgets_values"))
    inputs: dict[str, Any] = {s.name: v for s, role, v in assigned if role == "value"}
    for slot, entry in enumerate(node.get("inputs") or []):
        source = graph.source_of(node, slot)
        resolved = _resolve(graph, *source) if source else None
        if resolved is not None:
            inputs[entry["name"]] = resolved[1]
    return inputs


def ui_to_api(
    workflow: Mapping[str, Any],
    node_classes: Mapping[str, type],
    core_types: Mapping[str, Mapping] | None = None,
) -> dict[str, dict]:
    """API-format prompt ``{id: {class_type, inputs, _meta}}`` for POST /prompt, as the frontend builds it.

    Virtual nodes, muted and bypassed nodes are left out; links are resolved through them.
    Raises ValueError for a node type with no definition.
    """
    graph = _Graph(workflow, build_registry(node_classes, core_types))
    prompt: dict[str, dict] = {}
    for node in graph.nodes.values():
        kind = node["type"]
        if kind in VIRTUAL_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        spec = graph.spec(node)
        if spec is None:
            raise ValueError(f"{_label(node)}: unknown node type {kind!r}")
        prompt[str(node["id"])] = {
            "class_type": kind,
            "inputs": _api_inputs(graph, node, spec),
            "_meta": {"title": node.get("title") or kind},
        }
    return prompt
