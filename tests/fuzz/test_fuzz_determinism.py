# SPDX-License-Identifier: Apache-2.0
"""Same seed, same output: every node with a ``seed`` input, run twice in one process on its baseline call."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as F  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _seeded_nodes():
    import gen4d

    return sorted(n for n, c in gen4d.NODE_CLASS_MAPPINGS.items() if any(s[1] == "seed" for s in F.input_specs(c)))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_seed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_OUTPUT_DIR", str(root / "output"))
        yield F.Context(root)


def _tensors(value, out: list):
    """Every tensor reachable from a node output (payload dataclasses and plain attributes, two levels deep)."""
    if isinstance(value, torch.Tensor):
        out.append(value.detach().float().cpu())
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, out)
    elif hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
        for v in vars(value).values():
            if isinstance(v, (torch.Tensor, list, tuple)) or hasattr(v, "means"):
                _tensors(v, out)
    if hasattr(value, "means") and isinstance(value.means, torch.Tensor):
        out.append(value.means.detach().float().cpu())
    return out


def _same_twice(node_id, inputs):
    first = _tensors(F.call(node_id, inputs), [])
    torch.manual_seed(12345)  # global state must not matter either
    second = _tensors(F.call(node_id, inputs), [])
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.shape == b.shape and torch.equal(a, b), f"{node_id}: max difference {(a - b).abs().max():.3g}"


@pytest.mark.parametrize("node_id", _seeded_nodes())
def test_same_seed_twice_in_one_process(ctx, node_id):
    if not ctx.baseline_works(node_id):
        pytest.skip("no working baseline call for this node here")
    _same_twice(node_id, ctx.baseline(node_id))


@pytest.mark.parametrize("guidance", ["oracle", "zero123", "sd"])
@pytest.mark.parametrize("node_id", ["Gen4D_StaticGaussians", "Gen4D_DeformationFit"])
def test_same_seed_twice_with_guidance(ctx, node_id, guidance):
    handle = ctx.values["GEN4D_GUIDANCE_MODEL"] if guidance == "oracle" else ctx.guidances.get(guidance)
    if handle is None:
        pytest.skip(f"no {guidance} guidance here: {ctx.missing.get('tiny guidance models')}")
    inputs = {**ctx.baseline(node_id), "guidance": handle, "sds_weight": 1.0, "iterations": 3}
    _same_twice(node_id, inputs)
