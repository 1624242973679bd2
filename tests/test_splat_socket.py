# SPDX-License-Identifier: Apache-2.0
"""Gen4D_ToSplat / Gen4D_FromSplat against a stand-in of ComfyUI core's SPLAT payload class.

The ComfyUI release installed here predates the SPLAT type, so ``comfy_api.latest`` is faked with
a stand-in that keeps the documented constructor and attributes (positions (B,N,3) world, scales
(B,N,3) linear, rotations (B,N,4) wxyz normalised, opacities (B,N,1) in [0,1], sh (B,N,K,3),
counts (B,) or None) and checks what it is given the way the core nodes rely on it.
"""

from __future__ import annotations

import sys
import types

import gen4d
import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.engine.scene import KeyframeMotion, Scene4D, ScenePart
from gen4d.core.formats.splat_batch import FrameSequenceMotion, frames_to_scene
from gen4d.nodes import splat as splat_nodes


class StandInSplat:
    """The documented ``Types.SPLAT`` of ComfyUI core (comfy_api/latest/_util/geometry_types.py)."""

    def __init__(self, positions, scales, rotations, opacities, sh, counts=None):
        b, n = positions.shape[:2]
        assert positions.shape == (b, n, 3) and scales.shape == (b, n, 3) and rotations.shape == (b, n, 4)
        assert opacities.shape == (b, n, 1) and sh.dim() == 4 and sh.shape[:2] == (b, n) and sh.shape[3] == 3
        assert counts is None or (counts.shape == (b,) and not counts.is_floating_point())
        for i in range(b):  # what the core renderer and writers assume of the real rows
            m = int(counts[i]) if counts is not None else n
            assert (scales[i, :m] > 0).all(), "scales are linear standard deviations"
            assert ((opacities[i, :m] >= 0) & (opacities[i, :m] <= 1)).all(), "opacities are activated"
            assert torch.allclose(rotations[i, :m].norm(dim=-1), torch.ones(m), atol=1e-5), "rotations unit wxyz"
        self.positions, self.scales, self.rotations, self.opacities, self.sh, self.counts = (
            positions, scales, rotations, opacities, sh, counts)

    def _comfy_cache_tensors(self):
        return self.positions, self.scales, self.rotations, self.opacities, self.sh, self.counts


@pytest.fixture
def host_with_splat(monkeypatch):
    api = types.ModuleType("comfy_api.latest")
    api.Types = type("Types", (), {"SPLAT": StandInSplat})
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.latest", api)
    return api


def gaussians(n=30, degree=1, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g) * 0.3 - 3, torch.randn(n, generator=g),
                     torch.randn(n, k, 3, generator=g) * 0.3)


def moving_scene(frames=5, n=30) -> Scene4D:
    g = gaussians(n)
    means = g.means[None] + torch.linspace(0, 1, frames)[:, None, None] * torch.tensor([1.0, 0.0, -0.5])
    return Scene4D([ScenePart("obj", g, KeyframeMotion(means))], frames, 10.0)


def test_nodes_are_registered_only_where_the_host_has_the_socket(host_with_splat, monkeypatch):
    assert set(splat_nodes.available_nodes()) == {"Gen4D_ToSplat", "Gen4D_FromSplat"}
    monkeypatch.setattr(host_with_splat, "Types", type("Types", (), {}))
    assert splat_nodes.available_nodes() == {}


def test_without_comfyui_the_pack_leaves_the_nodes_out():
    # the test process has no comfy_api: the pack imported without the two nodes
    if "comfy_api.latest" not in sys.modules:
        assert "Gen4D_ToSplat" not in gen4d.NODE_CLASS_MAPPINGS


def test_to_splat_bakes_one_item_per_frame_in_splat_units(host_with_splat):
    scene = moving_scene()
    (out,) = splat_nodes.ToSplat().convert(0, "", scene=scene)
    assert isinstance(out, StandInSplat) and out.positions.shape == (5, 30, 3) and out.counts is None
    for i, t in enumerate(scene.frame_times().tolist()):
        truth = scene.at(t)
        assert torch.allclose(out.positions[i], truth.means)
        assert torch.allclose(out.scales[i], truth.log_scales.exp())
        assert torch.allclose(out.opacities[i, :, 0], torch.sigmoid(truth.logit_opacities))
        assert torch.allclose(out.rotations[i], torch.nn.functional.normalize(truth.quats, dim=-1))
        assert torch.equal(out.sh[i], truth.sh)
    (two,) = splat_nodes.ToSplat().convert(0, "1, 0", scene=scene)
    assert torch.allclose(two.positions[0], scene.at(1.0).means)
    assert torch.allclose(two.positions[1], scene.at(0.0).means)
    (one,) = splat_nodes.ToSplat().convert(0, "", gaussians=gaussians())
    assert one.positions.shape[0] == 1
    with pytest.raises(ValueError, match="times"):
        splat_nodes.ToSplat().convert(0, "0, 1.5", scene=scene)
    with pytest.raises(ValueError, match="connect a scene"):
        splat_nodes.ToSplat().convert(0, "")


def test_round_trip_scene_to_splat_and_back_is_exact_at_the_frames(host_with_splat):
    scene = moving_scene()
    (out,) = splat_nodes.ToSplat().convert(0, "", scene=scene)
    result = splat_nodes.FromSplat().convert(out, 10.0, 2)["result"]
    back, item = result
    assert back.num_frames == 5 and isinstance(back.parts[0].motion, KeyframeMotion)
    for t in scene.frame_times().tolist():
        a, b = scene.at(t), back.at(t)
        assert torch.allclose(a.means, b.means) and torch.allclose(a.log_scales, b.log_scales, atol=1e-5)
        assert torch.allclose(a.opacities, b.opacities, atol=1e-6) and torch.equal(a.sh, b.sh)
    assert torch.allclose(item.means, scene.at(0.5).means)


def test_per_frame_scales_and_opacities_become_a_frame_sequence_motion(tmp_path):
    frames = [gaussians(seed=0)]
    frames.append(Gaussians(frames[0].means + 1, frames[0].quats, frames[0].log_scales + 0.5,
                            frames[0].logit_opacities - 1, frames[0].sh))
    scene = frames_to_scene(frames, 8.0)
    assert isinstance(scene.parts[0].motion, FrameSequenceMotion)
    assert torch.allclose(scene.at(1.0).log_scales, frames[1].log_scales)
    mid = scene.at(0.5)
    assert torch.allclose(mid.means, frames[0].means + 0.5) and torch.allclose(mid.log_scales,
                                                                                 frames[0].log_scales + 0.25)
    path = scene.save(tmp_path / "s.gen4d.safetensors")
    again = Scene4D.load(path)
    assert torch.allclose(again.at(1.0).logit_opacities, frames[1].logit_opacities)


def test_ragged_batches_keep_counts_and_give_items(host_with_splat):
    small, big = gaussians(10, seed=1), gaussians(25, seed=2)
    (out,) = splat_nodes.ToSplat().convert(0, "", gaussians=small)
    from gen4d.core.formats.splat_batch import gaussians_to_batch

    batch = gaussians_to_batch([small, big])
    assert batch.counts.tolist() == [10, 25] and batch.positions.shape == (2, 25, 3)
    payload = StandInSplat(*[batch.tensors()[k] for k in ("positions", "scales", "rotations", "opacities", "sh",
                                                          "counts")])
    res = splat_nodes.FromSplat().convert(payload, 24.0, 0)
    scene, item = res["result"]
    assert len(item) == 10 and torch.allclose(item.means, small.means)
    assert scene.num_frames == 1 and res["ui"]["text"], "a ragged batch says why the scene is one item"
    assert out.positions.shape == (1, 10, 3)


def payload(**over):
    b, n = 2, 6
    base = dict(positions=torch.zeros(b, n, 3), scales=torch.full((b, n, 3), 0.1),
                rotations=torch.tensor([1.0, 0, 0, 0]).expand(b, n, 4).clone(), opacities=torch.full((b, n, 1), 0.5),
                sh=torch.zeros(b, n, 4, 3), counts=None)
    base.update(over)
    return types.SimpleNamespace(**base)


@pytest.mark.parametrize("over, message", [
    (dict(counts=torch.tensor([6, 9])), "outside 0..6"),
    (dict(counts=torch.tensor([6])), "one per batch item"),
    (dict(scales=torch.full((3, 6, 3), 0.1)), "to match positions"),
    (dict(positions=torch.zeros(2, 6, 3).index_fill_(1, torch.tensor([2]), float("nan"))), "NaN"),
    (dict(sh=torch.zeros(2, 6, 5, 3)), "K=5"),
    (dict(sh=torch.zeros(2, 6, 25, 3)), "degree 4"),
    (dict(scales=torch.zeros(2, 6, 3)), "positive"),
    (dict(opacities=torch.full((2, 6, 1), 2.0)), r"\[0, 1\]"),
    (dict(rotations=torch.zeros(2, 6, 4)), "zero-length"),
    (dict(sh=None), "no 'sh' tensor"),
])
def test_bad_splat_payloads_are_clear_errors(over, message):
    with pytest.raises(ValueError, match=message) as err:
        splat_nodes.FromSplat().convert(payload(**over), 24.0, 0)
    assert "Gen4D_FromSplat" in str(err.value)


def test_nan_in_padding_rows_is_ignored():
    p = payload(counts=torch.tensor([4, 6]))
    p.positions[0, 5] = float("nan")
    scene, item = splat_nodes.FromSplat().convert(p, 24.0, 0)["result"]
    assert len(item) == 4


def test_item_out_of_range():
    with pytest.raises(ValueError, match="item 5"):
        splat_nodes.FromSplat().convert(payload(), 24.0, 5)


@pytest.mark.parametrize("node_id", ["Gen4D_ToSplat", "Gen4D_FromSplat"])
def test_node_contract_holds_for_the_splat_nodes(node_id, host_with_splat, monkeypatch):
    import test_node_contract as contract

    nodes = splat_nodes.available_nodes()
    monkeypatch.setitem(gen4d.NODE_CLASS_MAPPINGS, node_id, nodes[node_id][0])
    monkeypatch.setitem(gen4d.NODE_DISPLAY_NAME_MAPPINGS, node_id, nodes[node_id][1])
    for check in (contract.test_id_and_display_name, contract.test_class_attributes, contract.test_input_sections,
                  contract.test_every_input_has_a_tooltip_and_a_sane_default, contract.test_socket_types_are_declared,
                  contract.test_function_accepts_every_input, contract.test_validate_and_is_changed_signatures):
        check(node_id)
