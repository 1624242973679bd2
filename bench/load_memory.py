# SPDX-License-Identifier: Apache-2.0
"""Peak host memory while loading Wan weights: a mid-size random Wan2.1-Fun InP transformer (release
naming, safetensors shards) read into bf16, and a random UMT5 encoder in ComfyUI's single-file layout;
with ``--single-file``, a random Wan2.1-Fun InP transformer of a real size (``--size 14B``) written as
one ComfyUI-style file (original names; bf16, fp16, fp8 or fp8 "scaled") and loaded into bf16.

Each load runs in a fresh process; the figure is the process's peak resident set
(``VmHWM``) minus its resident set just before the load, next to the model's size in its load dtype.
``--code DIR`` loads with the pack found in ``DIR`` (e.g. an export of an older commit) to compare.

    python bench/load_memory.py --layers 12 --file-dtype float32
    python bench/load_memory.py --single-file --size 14B --file-dtype bfloat16 --work /scratch
    python bench/load_memory.py --single-file --size 14B --file-dtype fp8_scaled
    git archive <commit> | tar -x -C /tmp/old && python bench/load_memory.py --code /tmp/old
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _peak_mib() -> float:
    """This process's peak resident set (``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent)."""
    return _status_mib("VmHWM")


def write_transformer(folder: Path, layers: int, dim: int, ffn: int, file_dtype: str, shards: int) -> None:
    """A random Wan2.1-Fun InP transformer (36 input channels) in the release naming, ``shards`` files."""
    import torch
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    sys.path.insert(0, str(HERE))
    from pack_loader import load_pack

    load_pack()
    from gen4d.backends.tiny.wan import our_to_official

    heads = dim // 128
    with torch.device("meta"):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=ffn, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=dim)
    cfg = {"dim": dim, "num_heads": heads, "ffn_dim": ffn, "num_layers": layers, "in_dim": 36, "out_dim": 16,
           "text_len": 512, "text_dim": 4096, "freq_dim": 256, "eps": 1e-6}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "Wan2.1_VAE.pth").write_bytes(b"")  # marks the InP base folder; not read here
    names = list(model.state_dict())
    dtype = getattr(torch, file_dtype)
    g = torch.Generator().manual_seed(0)
    per = -(-len(names) // shards)
    for i in range(shards):
        part = {our_to_official("wan." + k): (torch.randn(model.state_dict()[k].shape, generator=g) * 0.02).to(dtype)
                for k in names[i * per:(i + 1) * per]}
        save_file(part, str(folder / f"diffusion_pytorch_model-{i:05d}-of-{shards:05d}.safetensors"))
        del part


SIZES = {  # Wan2.1 transformer sizes: (layers, dim, ffn); heads are 128 wide
    "1.3B": (30, 1536, 8960),
    "14B": (40, 5120, 13824),
}
_ST_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float8_e4m3fn": "F8_E4M3"}


def write_single_file(path: Path, layers: int, dim: int, ffn: int, file_dtype: str) -> int:
    """A random Wan2.1-Fun InP transformer as one safetensors file in the original Wan names (ComfyUI's
    ``models/diffusion_models`` layout), written tensor by tensor (never the whole model in memory).
    ``file_dtype`` ``fp8_scaled``: fp8 e4m3fn block weights with a ``scale_weight`` each and the
    ``scaled_fp8`` marker, as ComfyUI's scaled files. Returns the file's size in bytes."""
    import torch
    from diffusers import WanTransformer3DModel

    sys.path.insert(0, str(HERE))
    from pack_loader import load_pack

    load_pack()
    from gen4d.backends.tiny.wan import our_to_official

    with torch.device("meta"):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=dim // 128, attention_head_dim=128, in_channels=36,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=ffn, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=dim)
    scaled = file_dtype == "fp8_scaled"
    plan = []  # (name, shape, dtype name)
    for k, t in model.state_dict().items():
        name, shape = our_to_official("wan." + k), tuple(t.shape)
        fp8 = file_dtype.startswith("fp8") or file_dtype == "float8_e4m3fn"
        if fp8 and name.startswith("blocks.") and len(shape) == 2:
            plan.append((name, shape, "float8_e4m3fn"))
            if scaled:
                plan.append((name[: -len("weight")] + "scale_weight", (1,), "float32"))
        else:
            plan.append((name, shape, "bfloat16" if fp8 else file_dtype))
    if scaled:
        plan.append(("scaled_fp8", (0,), "float8_e4m3fn"))
    header, offset = {}, 0
    for name, shape, dt in plan:
        n = math.prod(shape) * getattr(torch, dt).itemsize
        header[name] = {"dtype": _ST_NAMES[dt], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(0)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for name, shape, dt in plan:
            if name.endswith("scale_weight"):
                t = torch.full(shape, 0.02 / 16)
            elif dt == "float8_e4m3fn":
                t = (torch.randn(shape, generator=g) * (16.0 if scaled else 0.02)).to(torch.float8_e4m3fn)
            else:
                t = (torch.randn(shape, generator=g) * 0.02).to(getattr(torch, dt))
            fh.write(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return 8 + len(blob) + offset


def write_umt5(path: Path, layers: int, d_model: int, d_ff: int, vocab: int, file_dtype: str) -> None:
    """A random UMT5 encoder in ComfyUI's single-file layout (transformers names, ``shared.weight`` only)."""
    import torch
    from safetensors.torch import save_file

    heads, dkv = d_model // 64, 64
    shapes = {"shared.weight": (vocab, d_model), "encoder.final_layer_norm.weight": (d_model,)}
    for i in range(layers):
        b = f"encoder.block.{i}.layer."
        for p in "qkv":
            shapes[b + f"0.SelfAttention.{p}.weight"] = (heads * dkv, d_model)
        shapes[b + "0.SelfAttention.o.weight"] = (d_model, heads * dkv)
        shapes[b + "0.SelfAttention.relative_attention_bias.weight"] = (32, heads)
        shapes[b + "0.layer_norm.weight"] = (d_model,)
        shapes[b + "1.DenseReluDense.wi_0.weight"] = (d_ff, d_model)
        shapes[b + "1.DenseReluDense.wi_1.weight"] = (d_ff, d_model)
        shapes[b + "1.DenseReluDense.wo.weight"] = (d_model, d_ff)
        shapes[b + "1.layer_norm.weight"] = (d_model,)
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, file_dtype)
    save_file({k: (torch.randn(s, generator=g) * 0.02).to(dtype) for k, s in shapes.items()}, str(path))


def measure(code: Path, what: str, path: Path, tokenizer: Path | None) -> dict:
    """Load in this process (called in a fresh one): RSS before, peak during, model size."""
    import torch

    sys.path.insert(0, str(code))
    from pack_loader import load_pack

    load_pack()
    import gen4d.backends.video_inpaint_fun as fun
    import gen4d.backends.wan as wan

    torch.set_num_threads(1)
    # the libraries the loaders import, imported first so that their memory is not counted as loading
    from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: F401
    from transformers import AutoTokenizer, UMT5EncoderModel  # noqa: F401

    before = _rss_mib()
    if what == "single":
        layout = fun.FunInpLayout(path.parent, path.parent, (path,), path, path, path, None, None)
        model, _ = fun._load_transformer(layout, torch.bfloat16)
    elif what == "transformer":
        shards = tuple(sorted(path.glob("diffusion_pytorch_model*.safetensors")))
        layout = fun.FunInpLayout(path, path, shards, path / "Wan2.1_VAE.pth", path, path, None, None)
        model, _ = fun._load_transformer(layout, torch.bfloat16)
    else:
        _, model = wan.load_umt5(path, tokenizer, torch.bfloat16)
    peak = _peak_mib()
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    size = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
    dtypes = sorted({str(t.dtype) for t in tensors.values()})
    bf16 = sum(t.numel() * 2 for t in tensors.values()) / 2**20
    return {"what": what, "bf16_mib": round(bf16), "peak_over_bf16_mib": round(peak - before - bf16),
            "within_bf16_plus_2gib": bool(peak - before <= bf16 + 2048),
            "code": str(code), "rss_before_mib": round(before), "peak_mib": round(peak),
            "load_peak_over_before_mib": round(peak - before), "model_mib": round(size), "dtypes": dtypes,
            "file_mib": round(sum(p.stat().st_size for p in ([path] if path.is_file() else path.glob("*"))) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=HERE, help="pack checkout to load with (default: this one)")
    ap.add_argument("--layers", type=int, default=12, help="transformer blocks (Wan 1.3B has 30)")
    ap.add_argument("--dim", type=int, default=1536, help="transformer width (Wan 1.3B: 1536)")
    ap.add_argument("--ffn", type=int, default=8960, help="transformer FFN width (Wan 1.3B: 8960)")
    ap.add_argument("--shards", type=int, default=2, help="safetensors shards of the transformer")
    ap.add_argument("--file-dtype", default="float32",
                    choices=["float32", "bfloat16", "float16", "float8_e4m3fn", "fp8_scaled"],
                    help="dtype of the random files (the fp8 ones only with --single-file)")
    ap.add_argument("--umt5-layers", type=int, default=6, help="UMT5 blocks (0: skip; umt5-xxl has 24)")
    ap.add_argument("--work", type=Path, default=None, help="where the random files go (default: a temp folder)")
    ap.add_argument("--single-file", action="store_true",
                    help="measure one ComfyUI-style transformer file of --size instead (see the notes)")
    ap.add_argument("--size", default="14B", help=f"with --single-file: {' or '.join(SIZES)}, or 'custom' "
                                                   "(--layers / --dim / --ffn)")
    ap.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        what, path, tok = args._measure
        print(json.dumps(measure(args.code, what, Path(path), Path(tok) if tok != "-" else None)))
        return
    if args.file_dtype.startswith(("float8", "fp8")) and not args.single_file:
        ap.error("fp8 file dtypes need --single-file")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        if args.single_file:
            layers, dim, ffn = SIZES.get(args.size, (args.layers, args.dim, args.ffn))
            if args.size not in SIZES and args.size != "custom":
                ap.error(f"--size must be one of {list(SIZES)} or custom, got {args.size!r}")
            path = tmp / f"wan2.1_fun_inp_{args.size}_{args.file_dtype}.safetensors"
            size = write_single_file(path, layers, dim, ffn, args.file_dtype)
            print(json.dumps({"wrote": str(path.name), "file_mib": round(size / 2**20)}), flush=True)
            _run(args.code, "single", path, "-")
            return
        jobs = []
        (tmp / "transformer").mkdir()
        write_transformer(tmp / "transformer", args.layers, args.dim, args.ffn, args.file_dtype, args.shards)
        jobs.append(("transformer", tmp / "transformer", "-"))
        if args.umt5_layers:
            sys.path.insert(0, str(HERE))
            from pack_loader import load_pack

            load_pack()
            from gen4d.backends.tiny.wan import write_tiny_t5_tokenizer

            write_tiny_t5_tokenizer(tmp / "tok")
            write_umt5(tmp / "umt5.safetensors", args.umt5_layers, 4096, 10240, 32000, args.file_dtype)
            jobs.append(("umt5", tmp / "umt5.safetensors", str(tmp / "tok")))
        for what, path, tok in jobs:
            _run(args.code, what, path, tok)


def _run(code: Path, what: str, path: Path, tok: str) -> None:
    """Measure one load in a fresh process and print its JSON line."""
    cmd = [sys.executable, __file__, "--code", str(code), "--_measure", what, str(path), tok]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        print(json.dumps({"what": what, "code": str(code), "error": out.stderr.strip().splitlines()[-1]}))
    else:
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
