# SPDX-License-Identifier: Apache-2.0
"""Low-memory placement: the mode ``place`` picks, and block streaming on tiny models (CPU)."""

from __future__ import annotations

import enum
import sys

import gen4d  # noqa: F401  (installs the host hooks)
import pytest
import torch
from gen4d.backends import memory
from gen4d.backends.trajectory_dit_modules import DiTConfig, TrajectoryDiT
from gen4d.nodes import host

VRAMState = enum.Enum("VRAMState", "DISABLED NO_VRAM LOW_VRAM NORMAL_VRAM HIGH_VRAM SHARED")


@pytest.fixture
def policy():
    yield memory.set_offload_policy
    memory.set_offload_policy("auto")


def _dit(layers: int = 3) -> TrajectoryDiT:
    torch.manual_seed(0)
    dit = TrajectoryDiT(DiTConfig(dim=32, ffn_dim=64, num_heads=4, num_layers=layers, text_dim=16, freq_dim=16,
                                  image_dim=32, motion_dim=8)).eval()
    for m in list(dit.attn_madanorms) + list(dit.ffn_madanorms):
        torch.nn.init.normal_(m.gate, std=0.5)
    return dit


def _dit_inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 16, generator=g),
            torch.randn(1, 5, 32, generator=g), torch.randn(1, 48, 2, 4, 4, generator=g),
            torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 8, 5, 5, generator=g))


def _umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    return UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=3, num_heads=2,
                                       relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                       tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0)).eval()


def _pointers(module):
    return {name: t.data_ptr() for name, t in [*module.named_parameters(), *module.named_buffers()]}


# ----------------------------------------------------------------- the mode decision


def test_mode_follows_comfy_vram_state(fake_comfy, monkeypatch):
    mm = sys.modules["comfy.model_management"]
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 40)
    dit = _dit()
    monkeypatch.setattr(mm, "vram_state", VRAMState.LOW_VRAM, raising=False)
    assert memory.placement_mode([dit], "cuda")[0] == "stream"
    monkeypatch.setattr(mm, "vram_state", VRAMState.NO_VRAM, raising=False)
    assert memory.placement_mode([dit], "cuda")[0] == "stream"
    monkeypatch.setattr(mm, "vram_state", VRAMState.NORMAL_VRAM, raising=False)
    assert memory.placement_mode([dit], "cuda")[0] == "host"  # ComfyUI's model manager loads it whole
    monkeypatch.setattr(mm, "vram_state", VRAMState.LOW_VRAM, raising=False)
    assert memory.placement_mode([dit], "cpu")[0] == "move"
    assert memory.placement_mode([torch.nn.Linear(4, 4)], "cuda")[0] == "host"  # nothing to stream


def test_mode_streams_what_does_not_fit(monkeypatch, policy):
    monkeypatch.setattr(memory, "_loader", None)
    monkeypatch.setattr(memory, "_hook", None)
    monkeypatch.setattr(memory, "_low_memory", None)
    dit = _dit()
    size = sum(t.numel() * t.element_size() for t in [*dit.parameters(), *dit.buffers()])
    monkeypatch.setattr(memory, "available_bytes", lambda device: size + memory.GIB + 1)
    assert memory.placement_mode([dit], "cuda")[0] == "move"
    monkeypatch.setattr(memory, "available_bytes", lambda device: size + memory.GIB - 1)
    mode, reason = memory.placement_mode([dit], "cuda")
    assert mode == "stream" and "GiB is free" in reason
    policy("full")
    assert memory.placement_mode([dit], "cuda")[0] == "move"
    policy("stream")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 40)
    assert memory.placement_mode([dit], "cuda")[0] == "stream"
    with pytest.raises(ValueError, match="policy"):
        policy("sometimes")


def test_host_low_vram_reads_comfys_state(fake_comfy, monkeypatch):
    mm = sys.modules["comfy.model_management"]
    for state, low in ((VRAMState.LOW_VRAM, True), (VRAMState.NO_VRAM, True), (VRAMState.NORMAL_VRAM, False),
                       (VRAMState.HIGH_VRAM, False)):
        monkeypatch.setattr(mm, "vram_state", state, raising=False)
        assert host.low_vram() is low
    assert memory._low_memory is host.low_vram
    assert memory._release is host.release_from_comfy


def test_release_from_comfy_unloads_our_patchers(fake_comfy, monkeypatch):
    mm = sys.modules["comfy.model_management"]
    ours, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    patcher = object()
    ours.__dict__["_gen4d_patcher"] = patcher
    unloaded = []

    class Loaded:
        def __init__(self, model):
            self.model = model

        def model_unload(self):
            unloaded.append(self.model)

    foreign = Loaded(object())
    monkeypatch.setattr(mm, "current_loaded_models", [foreign, Loaded(patcher)], raising=False)
    host.release_from_comfy([ours, other])
    assert unloaded == [patcher] and mm.current_loaded_models == [foreign]


# ----------------------------------------------------------------- streaming on the CPU


def test_streamed_dit_matches_plain_forward_and_loads_one_block_at_a_time(policy):
    dit = _dit()
    inputs = _dit_inputs()
    with torch.no_grad():
        plain = dit(*inputs)
    before = _pointers(dit)
    blocks = dit.wan.blocks
    seen = []

    def check(i):
        def hook(_module, _args):
            own = {n for n, _ in blocks[i].named_parameters()}
            for j, block in enumerate(blocks):
                moved = [p.data_ptr() != before[f"wan.blocks.{j}.{n}"] for n, p in block.named_parameters()]
                assert all(moved) if j == i else not any(moved), (i, j)
            seen.append((i, len(own)))
        return hook

    policy("stream")
    handles = [blocks[i].attn1.register_forward_pre_hook(check(i)) for i in range(len(blocks))]
    with memory.place([dit], "cpu") as placed:
        assert placed.mode == "stream" and memory.streaming(dit)
        assert all(len(b._forward_pre_hooks) >= 1 for b in blocks)
        with torch.no_grad():
            streamed = dit(*inputs)
    for h in handles:
        h.remove()
    assert [i for i, _ in seen] == [0, 1, 2]  # TrajectoryDiT reaches its blocks through streamed_blocks
    assert (streamed - plain).abs().max() <= 1e-6
    assert not memory.streaming(dit)
    assert all(len(b._forward_pre_hooks) == 0 and len(b._forward_hooks) == 0 for b in blocks)
    assert _pointers(dit) == before  # every tensor back in its CPU storage
    assert {t.device.type for t in dit.parameters()} == {"cpu"}


def test_streamed_transformers_encoder_uses_block_hooks(policy):
    model = _umt5()
    ids = torch.tensor([[5, 9, 3, 1, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
    lists = memory._block_lists(model)
    assert lists == [model.encoder.block]  # the nested stack, not a top-level list
    policy("stream")
    placed = memory.place([model], "cpu")
    with torch.no_grad():
        streamed = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert memory._streamers[model].loads == 3  # each of the three blocks copied in once
    memory.park([model])  # parking undoes the streaming as leaving the context does
    assert placed.mode == "stream" and not memory.streaming(model)
    assert all(len(b._forward_pre_hooks) == 0 for b in model.encoder.block)
    assert (streamed - plain).abs().max() <= 1e-6


def test_streaming_takes_host_managed_modules_back_from_the_host(monkeypatch, policy):
    dit = _dit(2)
    released = []
    monkeypatch.setattr(memory, "_release", released.extend)
    memory._managed.add(dit)
    policy("stream")
    with memory.place([dit, torch.nn.Linear(3, 3)], "cpu") as placed:
        assert placed.mode == "stream" and not memory.host_managed(dit)
    assert released == [dit]


def test_a_failed_placement_leaves_nothing_streamed(monkeypatch, policy):
    dit = _dit(2)
    before = _pointers(dit)

    def refuse(num_bytes, device):
        raise RuntimeError("no room")

    monkeypatch.setattr(memory, "_hook", refuse)
    monkeypatch.setattr(memory, "_loader", None)
    policy("stream")
    with pytest.raises(RuntimeError, match="no room"):
        memory.place([dit], "cuda")
    assert not memory.streaming(dit) and _pointers(dit) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the side-stream prefetch path)")
def test_cuda_streaming_matches_the_plain_forward(policy):
    torch.manual_seed(0)
    dit = TrajectoryDiT(DiTConfig(dim=256, ffn_dim=1024, num_heads=4, num_layers=8, text_dim=64, freq_dim=32,
                                  image_dim=64, motion_dim=8)).eval()
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(2, 16, 3, 8, 8, generator=g), torch.tensor([500.0, 20.0]),
              torch.randn(2, 7, 64, generator=g), torch.randn(2, 5, 64, generator=g),
              torch.randn(2, 48, 3, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g))
    cuda = [x.cuda() for x in inputs]
    with torch.no_grad():
        plain = dit.cuda()(*cuda)
        dit.cpu()
        policy("stream")
        with memory.place([dit], "cuda") as placed:
            assert placed.mode == "stream"
            assert all(p.device.type == "cpu" for p in dit.wan.blocks.parameters())
            outs = [dit(*cuda) for _ in range(3)]  # later passes run on prefetched blocks
    for out in outs:
        assert (out - plain).abs().max() <= 1e-5
    assert all(p.device.type == "cpu" for p in dit.parameters())
