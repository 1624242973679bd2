# SPDX-License-Identifier: Apache-2.0
"""Backends ask ComfyUI's model manager for room before moving weights to an accelerator."""

from __future__ import annotations

import sys

import gen4d  # noqa: F401  (installs the host hook)
import torch
from gen4d.backends import memory
from gen4d.nodes import host


def test_make_room_asks_comfy_for_the_missing_bytes(fake_comfy, monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["comfy.model_management"], "free_memory",
                        lambda n, device: calls.append((n, device)), raising=False)
    layer = torch.nn.Linear(10, 10)  # 110 float32 parameters = 440 bytes
    asked = memory.make_room([layer, None], "cuda")
    assert asked == 440
    assert calls == [(int(440 * 1.2), torch.device("cuda"))]


def test_cpu_targets_and_missing_host_ask_nothing(fake_comfy, monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["comfy.model_management"], "free_memory",
                        lambda n, device: calls.append(n), raising=False)
    assert memory.make_room([torch.nn.Linear(4, 4)], "cpu") == 0
    monkeypatch.setattr(memory, "_hook", None)
    assert memory.make_room([torch.nn.Linear(4, 4)], "cuda") == 0
    assert calls == []


def test_the_pack_installs_the_comfy_hook():
    assert memory._hook is host.free_memory_for


def test_host_without_comfy_is_a_no_op():
    host.free_memory_for(1 << 20, torch.device("cuda"))  # no comfy modules: nothing to ask, no error
