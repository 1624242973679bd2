# SPDX-License-Identifier: Apache-2.0
"""Every node, every input, the generated bad and edge cases: a clear error naming the input, or valid output.

The fast selection (a few cases per input) runs in ``make test``; the whole table runs with
``-m fuzz_long`` (``make test-fuzz``). File and folder inputs live in test_fuzz_files.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as F  # noqa: E402

FILE_INPUTS = {"filename_prefix", "file", "folder", "path", "local_folder"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(long: bool):
    fast = {nc.id for nc in F.node_cases(long=False)}
    cases = [nc for nc in F.node_cases(long=long) if nc.input not in FILE_INPUTS]
    if long:
        cases = [nc for nc in cases if nc.id not in fast]
    return [pytest.param(nc, id=nc.id) for nc in cases]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_OUTPUT_DIR", str(root / "output"))
        mp.setenv("GEN4D_INPUT_DIR", str(root / "input"))
        yield F.Context(root)


def _check(ctx, nc):
    out = F.run_case(ctx, nc, seconds=60.0)
    if out is None:
        pytest.skip("case does not apply to this input")
    assert out.klass in F.GOOD, f"{out.klass}: {out.detail}"


@pytest.mark.parametrize("nc", _params(long=False))
def test_fast(ctx, nc):
    _check(ctx, nc)


@pytest.mark.fuzz_long
@pytest.mark.parametrize("nc", _params(long=True))
def test_long(ctx, nc):
    _check(ctx, nc)


def test_every_node_and_input_is_covered():
    import gen4d

    covered = {(nc.node, nc.input) for nc in F.node_cases(long=False)}
    for node_id, cls in gen4d.NODE_CLASS_MAPPINGS.items():
        for _s, name, _k, _o in F.input_specs(cls):
            assert (node_id, name) in covered, f"{node_id}.{name} has no generated case"


def test_baselines_run(ctx):
    """The plain call each case perturbs works (else the cases would measure the baseline, not the input)."""
    import gen4d

    broken = [n for n in gen4d.NODE_CLASS_MAPPINGS if ctx.baseline(n) is not None and not n.endswith("Loader")
              and n not in {"Gen4D_LoadPosedFrames", "Gen4D_ProgressiveOutpaint"} and not ctx.baseline_works(n)]
    assert not broken


def test_classifier_bites(ctx, monkeypatch):
    """A node that swallows anything is caught: silent for a bad IMAGE, obscure for a deep crash."""
    import gen4d

    class Swallow:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE", {})}}

        def run(self, images):
            return (images.float() if hasattr(images, "float") else images,)

    class Crash(Swallow):
        def run(self, images):
            return (images[..., :3].float().reshape(-1, 7, 7, 3),)

    monkeypatch.setitem(gen4d.NODE_CLASS_MAPPINGS, "Fuzz_Swallow", Swallow)
    monkeypatch.setitem(gen4d.NODE_CLASS_MAPPINGS, "Fuzz_Crash", Crash)
    x = ctx.values["IMAGE"]
    assert F.classify("Fuzz_Swallow", "images", {"images": x * 255}, bad=True).klass == "silent"
    assert F.classify("Fuzz_Swallow", "images", {"images": x}, bad=False).klass == "handled"
    assert F.classify("Fuzz_Crash", "images", {"images": x}, bad=False).klass == "obscure"
