# SPDX-License-Identifier: Apache-2.0
"""Model caches per kind, and our models under ComfyUI's model manager (a stand-in here; the real one with
``COMFYUI_PATH``)."""

from __future__ import annotations

import gc
import sys
import types

import gen4d  # noqa: F401  (installs the host hooks)
import pytest
import torch
from comfy_host import needs_comfyui, run_check
from gen4d.backends import loading, memory
from gen4d.backends.inpaint import load_image_inpainter
from gen4d.backends.sd_guidance import load_sd_guidance
from gen4d.backends.tiny import build_tiny
from gen4d.backends.video_inpaint import load_video_inpainter
from gen4d.backends.zero123 import load_zero123
from gen4d.nodes import host


@pytest.fixture
def fresh_caches(monkeypatch):
    monkeypatch.setattr(loading, "_CACHES", {})
    monkeypatch.setattr(loading, "_owner", None)
    yield


COCO4D_KINDS = {"guidance_zero123": load_zero123, "guidance_sd": load_sd_guidance, "inpaint_sd": load_image_inpainter,
                "video_inpaint_wan_vace": load_video_inpainter}


def test_a_coco4d_graphs_models_do_not_evict_each_other(tmp_path, fresh_caches, one_thread):
    """Zero123, SD guidance, SD inpainting and VACE together: a second run finds every one loaded."""
    folders = {kind: build_tiny(kind, tmp_path) for kind in COCO4D_KINDS}
    first = {kind: load(folders[kind]) for kind, load in COCO4D_KINDS.items()}
    second = {kind: load(folders[kind]) for kind, load in COCO4D_KINDS.items()}
    assert all(second[k] is first[k] for k in COCO4D_KINDS), "a model was loaded again"
    assert {id(m) for m in loading.cached_models()} == {id(m) for m in first.values()}


def test_a_new_model_of_one_kind_replaces_only_that_kind(fresh_caches):
    made = []

    def make(name):
        made.append(name)
        return types.SimpleNamespace(name=name)

    a = loading.cached(("sd", "a"), lambda: make("a"))
    z = loading.cached(("zero123", "z"), lambda: make("z"))
    b = loading.cached(("sd", "b"), lambda: make("b"))
    assert loading.cached(("zero123", "z"), lambda: make("z2")) is z
    assert loading.cached(("sd", "b"), lambda: make("b2")) is b
    assert loading.cached(("sd", "a"), lambda: make("a2")) is not a    # the kind keeps its last load only
    assert made == ["a", "z", "b", "a2"]
    loading.clear_cache("sd")
    assert loading.cached_models() == [z]


def test_models_are_held_weakly_while_the_host_owns_them(fresh_caches):
    """Inside ComfyUI its node cache keeps the last run's handles: ours must not pin a model it dropped."""
    loading.set_cache_owner(lambda: True)
    model = loading.cached(("sd", "a"), lambda: torch.nn.Linear(4, 4))
    assert loading.cached(("sd", "a"), lambda: torch.nn.Linear(4, 4)) is model    # held by the caller: reused
    probe = __import__("weakref").ref(model)
    del model
    gc.collect()
    assert probe() is None and loading.cached_models() == []
    loading.set_cache_owner(lambda: False)
    kept = loading.cached(("sd", "b"), lambda: torch.nn.Linear(4, 4))
    probe = __import__("weakref").ref(kept)
    del kept
    gc.collect()
    assert probe() is not None, "outside ComfyUI the cache holds the model"


class _ReadOnlyDevice(torch.nn.Module):
    """Like diffusers' and transformers' models: ``device`` is a read-only property."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 8)
        self.register_buffer("table", torch.arange(6.0))

    @property
    def device(self):
        return self.net.weight.device


@pytest.fixture
def stand_in_manager(fake_comfy, monkeypatch):
    """ComfyUI's model manager as far as our registration relies on it: ModelPatcher writes ``.device`` on its
    model and sizes it from its state dict; load_models_gpu keeps one entry per patcher; unload_all_models moves
    every loaded model to its offload device and forgets it."""
    mm = sys.modules["comfy.model_management"]
    loaded: list = []

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            if getattr(model, "device", None) is None:
                model.device = offload_device
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            self.size = sum(t.numel() * t.element_size() for t in model.state_dict().values())

    def load_models_gpu(patchers):
        for p in patchers:
            p.model.to(p.load_device)
            p.model.device = p.load_device
            if p not in loaded:
                loaded.append(p)

    def unload_all_models():
        for p in loaded:
            p.model.to(p.offload_device)
            p.model.device = p.offload_device
        loaded.clear()

    patching = types.ModuleType("comfy.model_patcher")
    patching.ModelPatcher = ModelPatcher
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", patching)
    monkeypatch.setattr(sys.modules["comfy"], "model_patcher", patching, raising=False)
    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu, raising=False)
    monkeypatch.setattr(mm, "unload_all_models", unload_all_models, raising=False)
    monkeypatch.setattr(mm, "unet_offload_device", lambda: torch.device("cpu"), raising=False)
    return types.SimpleNamespace(loaded=loaded, mm=mm)


def test_our_modules_load_through_the_model_manager_and_unload_with_it(stand_in_manager):
    model, other = _ReadOnlyDevice(), torch.nn.Linear(3, 3)
    asked = memory.make_room([model, None, other], torch.device("cpu"))
    assert asked == 0   # already on the device
    patchers = list(stand_in_manager.loaded)
    assert [p.model.inner for p in patchers] == [model, other]
    assert patchers[0].size == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert memory.host_managed(model) and memory.host_managed(other)
    memory.make_room([model], "cpu")   # a second run: the same patcher, no second entry
    assert stand_in_manager.loaded == patchers
    stand_in_manager.mm.unload_all_models()  # ComfyUI's "Unload models"
    assert stand_in_manager.loaded == []
    memory.make_room([model], "cpu")
    assert stand_in_manager.loaded == patchers[:1], "reloaded through the same patcher after an unload"


def test_park_leaves_host_managed_modules_to_the_host(stand_in_manager, monkeypatch):
    moved = []
    managed, plain = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    memory.make_room([managed], "cpu")
    for m in (managed, plain):
        monkeypatch.setattr(m, "to", lambda *a, m=m, **k: moved.append(m))
    memory.park([managed, plain, None])
    assert moved == [plain]


def test_without_comfy_nothing_is_registered(monkeypatch):
    monkeypatch.setattr(memory, "_hook", None)
    layer = torch.nn.Linear(2, 2)
    assert host.load_with_comfy([layer], torch.device("cpu")) is False
    assert memory.make_room([layer], "cpu") == 0 and not memory.host_managed(layer)


@needs_comfyui("to check our models under ComfyUI's model manager")
def test_comfys_model_manager_loads_unloads_and_frees_our_models(tmp_path):
    r = run_check("comfy_memory_check.py", tmp_path, timeout=600)
    assert r["same_objects_on_second_load"] is True
    assert r["registered"] == r["modules"] > 0, r
    assert r["registered_after_second_run"] == r["modules"], "a second run added entries instead of reusing them"
    assert r["ours_loaded_after_unload"] == 0
    assert r["alive_after_node_cache_reset"] == 0 and r["cached_after_reset"] == 0
