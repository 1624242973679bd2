# SPDX-License-Identifier: Apache-2.0
"""Derive the native-model workflows from the folder-loader ones.

Usage:
    python tools/make_native_workflows.py            # writes example_workflows/CoCo4D_native.json, MoGe4D_native.json
    python tools/make_native_workflows.py --check    # exits 1 when a shipped file differs from its derivation

tools/build_workflows.py builds the twins with the other workflows: it calls ``derive`` here, then lays the
graph out like every other file (the ComfyUI loaders, prompt and image encoders in the first groups, each
native adaptor where the folder loader it stands in for stood); both scripts write the same files.

``CoCo4D_native.json`` and ``MoGe4D_native.json`` are ``CoCo4D.json`` and ``MoGe4D.json`` with the
model-providing nodes swapped for ComfyUI's own: core loaders (UNETLoader, CLIPLoader, VAELoader,
CLIPVisionLoader, CheckpointLoaderSimple, ImageOnlyCheckpointLoader, LoraLoaderModelOnly for the
4D-ViSM LoRA), CLIPTextEncode for the prompts, the core Wan image-to-video chain for the reference
video, and the pack's native adaptor nodes where a stage takes a Gen4D model handle. Every other
node keeps its id, type, title, position and widget values, and every link between those nodes is
kept, so the two files differ only in where the models come from. Stages with no core counterpart
(SAM2, depth, the trajectory DiT) keep the pack's loaders.

Prompts move from the stage widgets (which the native handles do not read) into CLIPTextEncode
nodes; widget values shared by name between a folder loader and its adaptor (Zero123's seen view,
guidance scales, seeds) are carried over; the ViSM LoRA strength comes from ViSM Render's
``lora_strength``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from workflow_builder import Graph  # noqa: E402

from pack_loader import load_pack  # noqa: E402

#: Model files the native workflows name (ComfyUI's repackaged single-file releases; users pick their own).
FILES = {
    "wan_i2v": "wan2.1_i2v_480p_14B_bf16.safetensors",
    "wan_vace": "wan2.1_vace_14B_fp16.safetensors",
    "wan_fun_inp": "wan2.1_fun_inp_v1.1_14B_bf16.safetensors",
    "vism_lora": "moge4d_4d_vism_lora.safetensors",
    "umt5": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "wan_vae": "wan_2.1_vae.safetensors",
    "clip_vision_h": "clip_vision_h.safetensors",
    "sd_inpaint": "512-inpainting-ema.safetensors",
    "sd21": "v2-1_512-ema-pruned.safetensors",
    "zero123": "stable_zero123.ckpt",
}

#: The pack's folder loaders a native path replaces, and the nodes that stand in for them.
REPLACED = ("Gen4D_VideoModelLoader", "Gen4D_I2VReference", "Gen4D_InpaintModelLoader",
            "Gen4D_VideoInpaintModelLoader", "Gen4D_Zero123GuidanceLoader", "Gen4D_SDGuidanceLoader")
ADAPTORS = ("Gen4D_NativeVideoInpaintModel", "Gen4D_NativeInpaintModel", "Gen4D_NativeZero123Guidance",
            "Gen4D_NativeSDGuidance")
#: Loaders kept on both paths: ComfyUI 0.3.64 has no SAM2, depth or trajectory-DiT nodes.
KEPT_LOADERS = ("Gen4D_SAM2Loader", "Gen4D_DepthLoader", "Gen4D_TrajectoryModelLoader")

_TEXT_H = 150
_GAP = 30


@dataclass
class _Column:
    x: int
    y: int
    width: int = 340
    ids: list = field(default_factory=list)

    def place(self, g: Graph, kind: str, box_height: int, title: str | None = None, **widgets) -> int:
        node = g.add(kind, (self.x, self.y), (self.width, box_height), title=title, **widgets)
        self.y += box_height + _GAP
        self.ids.append(node)
        return node


class _Native:
    """One source workflow being turned into its native twin."""

    def __init__(self, source: Path, classes):
        self.g = Graph.load(source, classes)
        self.source_nodes = {n["id"]: json.loads(json.dumps(n)) for n in self.g.nodes}
        self.source_links = [list(link) for link in self.g.links]
        left = min(n["pos"][0] for n in self.g.nodes if n["type"] != "MarkdownNote")
        top = min(n["pos"][1] for n in self.g.nodes if n["type"] != "MarkdownNote")
        self.loaders = _Column(left - 1240, top)
        self.encoders = _Column(left - 860, top, width=380)
        self.chain = _Column(left - 440, top, width=360)
        #: source node id -> the node that took its place (an adaptor, or the reference video's decoder)
        self.stand_ins: dict[int, int] = {}

    def of_type(self, kind: str) -> list[int]:
        return [i for i, n in self.source_nodes.items() if n["type"] == kind]

    def widgets(self, node_id: int) -> dict:
        node = self.source_nodes[node_id]
        slots = self.g.registry[node["type"]].widget_slots()
        return {inp.name: value for (inp, role), value in zip(slots, node["widgets_values"]) if role == "value"}

    def feeds(self, node_id: int, output: str | None = None) -> list[tuple[int, str]]:
        """``(target node, input name)`` of each link out of ``node_id`` (``output`` only, if given)."""
        node = self.source_nodes[node_id]
        out = []
        for _, src, slot, dst, dst_slot, _ in self.source_links:
            if src == node_id and (output is None or node["outputs"][slot]["name"] == output):
                out.append((dst, self.source_nodes[dst]["inputs"][dst_slot]["name"]))
        return out

    def sources(self, node_id: int) -> dict[str, tuple[int, str]]:
        """Input name -> ``(source node, output name)`` of the links into ``node_id``."""
        out = {}
        for _, src, slot, dst, dst_slot, _ in self.source_links:
            if dst == node_id:
                out[self.source_nodes[dst]["inputs"][dst_slot]["name"]] = (
                    src, self.source_nodes[src]["outputs"][slot]["name"])
        return out

    def adaptor(self, old: int, kind: str, **widgets) -> int:
        """``kind`` where the folder loader ``old`` stood, with its shared widget values and input links."""
        spec = self.g.registry[kind]
        names = {i.name for i in spec.inputs}
        carried = {k: v for k, v in self.widgets(old).items() if k in names and spec.input(k).is_widget}
        node = self.source_nodes[old]
        rows = max(sum(not i.is_widget for i in spec.inputs), len(spec.outputs))
        size = (node["size"][0], max(node["size"][1], 46 + 24 * rows + 28 * len(spec.widget_slots())))
        new = self.g.add(kind, node["pos"], size, **{**carried, **widgets})
        self.stand_ins[old] = new
        for name, (src, output) in self.sources(old).items():
            if name in names and src in {n["id"] for n in self.g.nodes}:
                self.g.link(src, output, new, name)
        for dst, name in self.feeds(old):
            self.g.link(new, self.g.registry[kind].output_names[0], dst, name)
        return new

    def text(self, clip: int, text: str, title: str) -> int:
        node = self.encoders.place(self.g, "CLIPTextEncode", _TEXT_H, title=title, text=text)
        self.g.link(clip, "CLIP", node, "clip")
        return node

    def wire(self, src: int, output: str, dst: int, *inputs: str) -> None:
        for name in inputs:
            self.g.link(src, output, dst, name)


def _wan_text_and_vae(n: _Native) -> tuple[int, int]:
    clip = n.loaders.place(n.g, "CLIPLoader", 130, title="umt5 text encoder (Wan)", clip_name=FILES["umt5"],
                           type="wan", device="default")
    vae = n.loaders.place(n.g, "VAELoader", 80, title="Wan 2.1 VAE", vae_name=FILES["wan_vae"])
    return clip, vae


def _clip_vision_of_image(n: _Native, image: tuple[int, str]) -> int:
    loader = n.loaders.place(n.g, "CLIPVisionLoader", 80, title="CLIP vision H", clip_name=FILES["clip_vision_h"])
    encode = n.encoders.place(n.g, "CLIPVisionEncode", 100, crop="none")
    n.g.link(loader, "CLIP_VISION", encode, "clip_vision")
    n.g.link(*image, encode, "image")
    return encode


@dataclass
class Derived:
    """A native twin and where its new nodes belong: the core loaders, the prompt and image encoders, the
    core sampling chain, and which node stands in for each removed folder-loader node."""

    graph: Graph
    loaders: list[int]
    encoders: list[int]
    chain: list[int]
    stand_ins: dict[int, int]


def coco4d(classes) -> Derived:
    """``CoCo4D_native.json`` from ``CoCo4D.json``."""
    n = _Native(REPO / "example_workflows" / "CoCo4D.json", classes)
    g = n.g
    (reference,) = n.of_type("Gen4D_I2VReference")
    (outpaint,) = n.of_type("Gen4D_ProgressiveOutpaint")
    ref = n.widgets(reference)
    image = n.sources(reference)["image"]
    clip, vae = _wan_text_and_vae(n)

    # reference video: core Wan 2.1 image-to-video, same prompt, length, steps, guidance and seed
    unet = n.loaders.place(g, "UNETLoader", 100, title="Wan 2.1 I2V", unet_name=FILES["wan_i2v"],
                           weight_dtype="default")
    vision = _clip_vision_of_image(n, image)
    positive = n.text(clip, ref["prompt"], "Reference video prompt")
    negative = n.text(clip, ref["negative_prompt"], "Reference video negative prompt")
    i2v = n.chain.place(g, "WanImageToVideo", 210, width=ref["width"] or 832, height=ref["height"] or 480,
                        length=ref["num_frames"] or 81, batch_size=1)
    n.wire(positive, "CONDITIONING", i2v, "positive")
    n.wire(negative, "CONDITIONING", i2v, "negative")
    n.wire(vae, "VAE", i2v, "vae")
    n.wire(vision, "CLIP_VISION_OUTPUT", i2v, "clip_vision_output")
    g.link(*image, i2v, "start_image")
    sampler = n.chain.place(g, "KSampler", 270, title="Reference video sampler", seed=ref["seed"],
                            steps=ref["steps"], cfg=ref["guidance_scale"], sampler_name="uni_pc",
                            scheduler="simple", denoise=1.0)
    n.wire(unet, "MODEL", sampler, "model")
    n.wire(i2v, "positive", sampler, "positive")
    n.wire(i2v, "negative", sampler, "negative")
    n.wire(i2v, "latent", sampler, "latent_image")
    decode = g.add("VAEDecode", n.source_nodes[reference]["pos"], (220, 50), title="Reference video")
    n.stand_ins[reference] = decode
    n.wire(sampler, "LATENT", decode, "samples")
    n.wire(vae, "VAE", decode, "vae")
    for dst, name in n.feeds(reference, "frames"):
        g.link(decode, "IMAGE", dst, name)

    # video inpainting: Wan 2.1 VACE with the outpaint prompt
    out = n.widgets(outpaint)
    (old,) = n.of_type("Gen4D_VideoInpaintModelLoader")
    vace = n.loaders.place(g, "UNETLoader", 100, title="Wan 2.1 VACE", unet_name=FILES["wan_vace"],
                           weight_dtype="default")
    video = n.adaptor(old, "Gen4D_NativeVideoInpaintModel")
    n.wire(vace, "MODEL", video, "model")
    n.wire(vae, "VAE", video, "vae")
    n.wire(n.text(clip, out["prompt"], "Outpaint prompt (Wan)"), "CONDITIONING", video, "positive")
    n.wire(n.text(clip, out["negative_prompt"], "Outpaint negative prompt (Wan)"), "CONDITIONING", video,
           "negative")

    # image inpainting: an SD 2 inpainting checkpoint with the outpaint prompt
    (old,) = n.of_type("Gen4D_InpaintModelLoader")
    ckpt = n.loaders.place(g, "CheckpointLoaderSimple", 100, title="SD 2 inpainting", ckpt_name=FILES["sd_inpaint"])
    inpaint = n.adaptor(old, "Gen4D_NativeInpaintModel")
    n.wire(ckpt, "MODEL", inpaint, "model")
    n.wire(ckpt, "VAE", inpaint, "vae")
    n.wire(n.text(ckpt, out["prompt"], "Outpaint prompt (SD)"), "CONDITIONING", inpaint, "positive")
    n.wire(n.text(ckpt, out["negative_prompt"], "Outpaint negative prompt (SD)"), "CONDITIONING", inpaint,
           "negative")

    # background SDS: SD 2.1 with the SD guidance loader's prompts
    (old,) = n.of_type("Gen4D_SDGuidanceLoader")
    sd = n.widgets(old)
    ckpt = n.loaders.place(g, "CheckpointLoaderSimple", 100, title="SD 2.1 (SDS)", ckpt_name=FILES["sd21"])
    guidance = n.adaptor(old, "Gen4D_NativeSDGuidance")
    n.wire(ckpt, "MODEL", guidance, "model")
    n.wire(ckpt, "VAE", guidance, "vae")
    n.wire(n.text(ckpt, sd["prompt"], "Background SDS prompt"), "CONDITIONING", guidance, "positive")
    n.wire(n.text(ckpt, sd["negative_prompt"], "Background SDS negative prompt"), "CONDITIONING", guidance,
           "negative")

    # foreground SDS: Stable Zero123 (its checkpoint holds MODEL, CLIP_VISION and VAE)
    (old,) = n.of_type("Gen4D_Zero123GuidanceLoader")
    ckpt = n.loaders.place(g, "ImageOnlyCheckpointLoader", 100, title="Stable Zero123", ckpt_name=FILES["zero123"])
    zero123 = n.adaptor(old, "Gen4D_NativeZero123Guidance")
    n.wire(ckpt, "MODEL", zero123, "model")
    n.wire(ckpt, "CLIP_VISION", zero123, "clip_vision")
    n.wire(ckpt, "VAE", zero123, "vae")

    for old in n.of_type("Gen4D_VideoModelLoader") + [reference]:
        g.remove(old)
    for kind in ("Gen4D_InpaintModelLoader", "Gen4D_VideoInpaintModelLoader", "Gen4D_Zero123GuidanceLoader",
                 "Gen4D_SDGuidanceLoader"):
        g.remove(n.of_type(kind)[0])
    return _finish(n, COCO4D_NOTE)


def moge4d(classes) -> Derived:
    """``MoGe4D_native.json`` from ``MoGe4D.json``."""
    n = _Native(REPO / "example_workflows" / "MoGe4D.json", classes)
    g = n.g
    (vism,) = n.of_type("Gen4D_ViSMRender")
    (old,) = n.of_type("Gen4D_VideoInpaintModelLoader")
    (dit,) = n.of_type("Gen4D_TrajectoryDiT")
    v = n.widgets(vism)
    clip, vae = _wan_text_and_vae(n)
    unet = n.loaders.place(g, "UNETLoader", 100, title="Wan2.1-Fun InP (4D-ViSM base)",
                           unet_name=FILES["wan_fun_inp"], weight_dtype="default")
    lora = n.loaders.place(g, "LoraLoaderModelOnly", 110, title="4D-ViSM LoRA", lora_name=FILES["vism_lora"],
                           strength_model=v["lora_strength"])
    n.wire(unet, "MODEL", lora, "model")
    vision = _clip_vision_of_image(n, n.sources(dit)["image"])
    video = n.adaptor(old, "Gen4D_NativeVideoInpaintModel")
    n.wire(lora, "MODEL", video, "model")
    n.wire(vae, "VAE", video, "vae")
    n.wire(vision, "CLIP_VISION_OUTPUT", video, "clip_vision_output")
    n.wire(n.text(clip, v["prompt"], "ViSM prompt"), "CONDITIONING", video, "positive")
    n.wire(n.text(clip, v["negative_prompt"], "ViSM negative prompt"), "CONDITIONING", video, "negative")
    g.remove(old)
    return _finish(n, MOGE4D_NOTE)


def _finish(n: _Native, note: str) -> Derived:
    g = n.g
    notes = [node["id"] for node in g.nodes if node["type"] == "MarkdownNote"]
    for node_id in notes:
        g._node(node_id)["widgets_values"] = [note]
    return Derived(g, list(n.loaders.ids), list(n.encoders.ids), list(n.chain.ids), dict(n.stand_ins))


COCO4D_NOTE = "\n".join([
    '# CoCo4D with the models ComfyUI already has',
    '',
    "The same graph as `CoCo4D.json`: only the models come from ComfyUI's own loaders (loaders in group 1, "
    'prompts and image encoders in group 2, the reference video in group 3).',
    '',
    '1. **Reference video**: core Wan 2.1 image-to-video (UNETLoader + umt5 CLIPLoader type `wan` + Wan '
    'VAE + CLIP vision H → WanImageToVideo → KSampler → VAE Decode). Any other video source can feed SAM2'
    ' Split instead.',
    '2. **Zero123 SDS**: `stable_zero123.ckpt` in `models/checkpoints` through Image Only Checkpoint '
    'Loader → Gen4D Zero123 Guidance (native MODEL).',
    '3. **Background**: an SD 2 inpainting checkpoint, SD 2.1 for SDS and Wan 2.1 VACE '
    '(`models/diffusion_models`) through the native adaptor nodes; their prompts are the CLIPTextEncode '
    "nodes (the stage's prompt widgets are not read on this path).",
    '4. SAM2 and depth have no core nodes: their Gen4D loaders stay (`models/sam2`, '
    '`models/gen4d/depth`).',
    '',
    'LoRAs, fp8 / GGUF loaders and model patches on the MODEL wires take effect: sampling runs through '
    "ComfyUI's samplers and model management.",
])

MOGE4D_NOTE = "\n".join([
    '# MoGe4D with the models ComfyUI already has',
    '',
    "The same graph as `MoGe4D.json`: only the ViSM video inpainter comes from ComfyUI's own loaders "
    '(loaders in group 1, prompts and image encoder in group 2).',
    '',
    '- **4D-ViSM**: Wan2.1-Fun-V1.1-14B InP as one file in `models/diffusion_models` (UNETLoader) + the '
    "MoGe4D 4D-ViSM LoRA in `models/loras` (LoraLoaderModelOnly; its strength replaces ViSM Render's "
    '`lora_strength`) + Wan 2.1 VAE + umt5 (CLIPLoader type `wan`) + CLIP vision H of the input image → '
    "Gen4D Video Inpaint Model (native MODEL). The prompt is the CLIPTextEncode node's.",
    '- **Depth** and the **trajectory DiT** have no core nodes: their Gen4D loaders stay '
    '(`models/gen4d/depth`, `models/gen4d/moge4d`).',
])


BUILDERS = {"CoCo4D_native.json": coco4d, "MoGe4D_native.json": moge4d}
#: twin name (file stem) -> the folder-loader workflow it is derived from
SOURCES = {Path(name).stem: Path(name).stem.removesuffix("_native") for name in BUILDERS}


def derive(stem: str, classes) -> Derived:
    """The twin ``<stem>.json`` derived from today's source file, before layout."""
    return BUILDERS[stem + ".json"](classes)


def derived() -> dict[str, dict]:
    """File name -> the twin as shipped: derived from its source file, laid out by tools/build_workflows.py."""
    from build_workflows import build

    classes = load_pack().NODE_CLASS_MAPPINGS
    return {name: build(REPO / "example_workflows" / name, classes) for name in BUILDERS}


def _text(workflow: dict) -> str:
    return json.dumps(workflow, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, workflow in derived().items():
        path = REPO / "example_workflows" / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != _text(workflow):
                stale.append(name)
        else:
            path.write_text(_text(workflow), encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python tools/make_native_workflows.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
