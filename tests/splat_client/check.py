# SPDX-License-Identifier: Apache-2.0
"""Open Save Scene's PLY, SPZ and glTF frames with independent tools and compare with our own figures.

Run by ``make test-splat-client`` (which installs the tools from npm into tests/splat_client/node_modules):

* PlayCanvas ``splat-transform`` reads every PLY and SPZ frame (``--stats json``): splat count and the
  range of positions, scales and opacities must match the scene at that frame (SPZ within its
  stated quantisation).
* glTF-Transform (``read_glb.mjs``) reads every .glb frame: count, the extension, POSITION/SCALE/OPACITY
  ranges must match.
* The other way round: splat-transform converts our PLY frame to .glb and to SPZ v3, and our readers
  must give back the same Gaussians (its .glb holds the data turned to glTF's +Y-up frame; ours reads
  it back into our frame, SH signs included).

Prints one line per check and a summary; exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from pack_loader import load_pack  # noqa: E402

load_pack()
from gen4d.core.engine.gaussians import Gaussians  # noqa: E402
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart  # noqa: E402
from gen4d.core.formats import manifest as mf  # noqa: E402
from gen4d.core.formats.gltf_splat import load_glb  # noqa: E402
from gen4d.core.formats.spz import SPZ_PRECISION, load_spz  # noqa: E402
from gen4d.nodes import host  # noqa: E402
from gen4d.nodes.scene_io import SaveScene  # noqa: E402

CLI = HERE / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
FAILURES: list[str] = []


def report(ok: bool, text: str) -> None:
    print(("ok   " if ok else "FAIL ") + text)
    if not ok:
        FAILURES.append(text)


def scene_under_test(n: int = 4000, frames: int = 3) -> Scene4D:
    g = torch.Generator().manual_seed(17)
    base = Gaussians(torch.randn(n, 3, generator=g) * torch.tensor([1.5, 0.8, 2.0]) + torch.tensor([0.0, -0.5, 4.0]),
                     torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g) * 0.4 - 4.0,
                     torch.randn(n, generator=g) * 2.0, torch.rand(n, 16, 3, generator=g) * 1.6 - 0.8)
    drift = torch.linspace(0, 1, frames)[:, None, None] * torch.tensor([0.6, 0.0, -0.3])
    return Scene4D([ScenePart("obj", base, KeyframeMotion(base.means[None] + drift))], frames, 8.0)


def st_stats(path: Path) -> dict:
    out = subprocess.run(["node", str(CLI), "-q", str(path), "--stats", "json", "null"], check=True,
                         capture_output=True, text=True)
    doc = json.loads(out.stdout)
    lod = doc["stats"][0]
    cols = lod["columns"]
    get = lambda name, what: lod["data"][what][cols.index(name)]  # noqa: E731
    return {"count": doc["numGaussians"],
            "min": [get(c, "min") for c in ("x", "y", "z")], "max": [get(c, "max") for c in ("x", "y", "z")],
            "scale": (min(get(f"scale_{i}", "min") for i in range(3)), max(get(f"scale_{i}", "max") for i in range(3))),
            "opacity": (get("opacity", "min"), get("opacity", "max")), "sh_bands": doc["shBands"]}


def close(a, b, tol) -> bool:
    return all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


def ours(g: Gaussians) -> dict:
    s = g.scales
    return {"count": len(g), "min": g.means.min(0).values.tolist(), "max": g.means.max(0).values.tolist(),
            "scale": (float(s.min()), float(s.max())), "opacity": (float(g.opacities.min()), float(g.opacities.max()))}


def main() -> int:
    if not CLI.is_file():
        print(f"splat-transform is not installed ({CLI}); run `make test-splat-client`")
        return 2
    run = subprocess.run(["node", str(CLI), "--version"], capture_output=True, text=True)
    version = (run.stdout.strip() or run.stderr.strip()).splitlines()[-1]
    print(f"independent tools: splat-transform {version}, @gltf-transform/core "
          f"{json.loads((HERE / 'node_modules/@gltf-transform/core/package.json').read_text())['version']}")
    scene = scene_under_test()
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(tmp)
        host_dir = host.output_directory
        host.output_directory = lambda: out_root
        try:
            rel = SaveScene().save("client/scene", True, 0, "ply+spz+glb", scene=scene)["result"][0]
        finally:
            host.output_directory = host_dir
        manifest_path = out_root / (rel[: -len(".gen4d.safetensors")] + ".frames.json")
        doc = mf.read_manifest(manifest_path)
        print(f"saved {doc['num_frames']} frames x {len(doc['frames'][0]['files'])} formats; "
              f"manifest {manifest_path.name}")
        glbs = []
        for frame in doc["frames"]:
            truth = ours(scene.at(frame["t"]))
            files = {fmt: manifest_path.parent / p for fmt, p in frame["files"].items()}
            for fmt in ("ply", "spz"):
                st = st_stats(files[fmt])
                bits_tol = 2.0 ** -12 if fmt == "spz" else 0.0
                pos_tol = 1e-5 + bits_tol + 1e-6 * max(map(abs, truth["min"] + truth["max"]))
                scale_tol = truth["scale"][1] * (0.032 if fmt == "spz" else 1e-5)
                op_tol = SPZ_PRECISION["opacities"] + 1e-5 if fmt == "spz" else 1e-5
                ok = (st["count"] == truth["count"] and close(st["min"], truth["min"], pos_tol)
                      and close(st["max"], truth["max"], pos_tol) and close(st["scale"], truth["scale"], scale_tol)
                      and close(st["opacity"], truth["opacity"], op_tol) and st["sh_bands"] == 3)
                report(ok, f"frame {frame['index']} {fmt}: splat-transform reads {st['count']} splats "
                           f"(ours {truth['count']}), bounds {fmt_box(st)} vs ours {fmt_box(truth)}, "
                           f"max bound error {box_err(st, truth):.2e}, SH bands {st['sh_bands']}")
            glbs.append((frame, truth, files["glb"]))
        lines = subprocess.run(["node", str(HERE / "read_glb.mjs"), *[str(f) for _, _, f in glbs]], check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()
        for (frame, truth, _), line in zip(glbs, lines):
            got = json.loads(line)
            attrs = got["primitives"][0]["attributes"]
            pos = attrs["POSITION"]
            gl = {"count": pos["count"], "min": pos["min"], "max": pos["max"],
                  "scale": (min(attrs["KHR_gaussian_splatting:SCALE"]["min"]),
                            max(attrs["KHR_gaussian_splatting:SCALE"]["max"])),
                  "opacity": (attrs["KHR_gaussian_splatting:OPACITY"]["min"][0],
                              attrs["KHR_gaussian_splatting:OPACITY"]["max"][0])}
            sh = sum(1 for a in attrs if ":SH_DEGREE_" in a)
            ok = ("KHR_gaussian_splatting" in got["extensionsUsed"] and got["primitives"][0]["mode"] == 0
                  and gl["count"] == truth["count"] and close(gl["min"], truth["min"], 1e-6)
                  and close(gl["max"], truth["max"], 1e-6) and close(gl["scale"], truth["scale"], 1e-6)
                  and close(gl["opacity"], truth["opacity"], 1e-6) and sh == 16)
            report(ok, f"frame {frame['index']} glb: glTF-Transform reads {gl['count']} splats "
                       f"(ours {truth['count']}), {sh} SH attributes, bounds {fmt_box(gl)}, "
                       f"max bound error {box_err(gl, truth):.2e}, "
                       f"node rotation {got['nodeRotation']}")
        # the other way: the independent tool writes, our readers read
        first = manifest_path.parent / doc["frames"][0]["files"]["ply"]
        truth = scene.at(0.0)
        st_glb, st_spz = out_root / "st.glb", out_root / "st.spz"
        for target, extra in ((st_glb, []), (st_spz, ["--spz-version", "3"])):
            subprocess.run(["node", str(CLI), "-q", "-w", str(first), *extra, str(target)], check=True,
                           capture_output=True)
        g = load_glb(st_glb)
        errs = field_errors(g, truth)
        report(len(g) == len(truth) and max(errs.values()) < 1e-4,
               f"splat-transform's .glb of our PLY, read by our reader: {len(g)} splats, max errors "
               + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        g = load_spz(st_spz)
        errs = field_errors(g, truth)
        # its SPZ writer quantises SH bands 1 / 2-3 to 5 / 4 bits (steps of 1/16, 1/8) and picks its own fraction bits
        limits = {"means": 2.0 ** -11, "log_scales": SPZ_PRECISION["log_scales"] + 1e-4, "opacities":
                  SPZ_PRECISION["opacities"] + 1e-4, "sh_dc": SPZ_PRECISION["sh_dc"] + 1e-4, "sh_rest": 1.0 / 8,
                  "quats": SPZ_PRECISION["quats_v3"] + 1e-4}
        report(len(g) == len(truth) and all(errs[k] <= limits[k] for k in limits),
               f"splat-transform's SPZ v3 of our PLY, read by our reader: {len(g)} splats, max errors "
               + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    print(f"{len(FAILURES)} failures")
    return 1 if FAILURES else 0


def field_errors(g: Gaussians, truth: Gaussians) -> dict:
    qa, qb = g.rotations, truth.rotations
    sign = torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    e = lambda a, b: float((a - b).abs().max())  # noqa: E731
    return {"means": e(g.means, truth.means), "log_scales": e(g.log_scales, truth.log_scales),
            "opacities": e(g.opacities, truth.opacities), "sh_dc": e(g.sh[:, 0], truth.sh[:, 0]),
            "sh_rest": e(g.sh[:, 1:], truth.sh[:, 1:]), "quats": e(qa * sign, qb)}


def fmt_box(d: dict) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in d["min"]) + "]..[" + ", ".join(f"{v:.4f}" for v in d["max"]) + "]"


def box_err(a: dict, b: dict) -> float:
    return max(abs(float(x) - float(y)) for x, y in zip(a["min"] + a["max"], b["min"] + b["max"]))


if __name__ == "__main__":
    sys.exit(main())
