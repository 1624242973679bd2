# SPDX-License-Identifier: Apache-2.0
"""Loading helpers the model backends share: folder and weight checks, load errors that name the part,
the cache of loaded models, and diffusers models loaded without ``accelerate``.

Public API:
    check_weights(folder, what)          validate the safetensors files of one component folder
    check_diffusers_folder(path, components, what)   a diffusers-layout folder: config files, then weights
    missing_config_files(path, components)   the ``<component>/<config file>`` entries a folder lacks
    holds_weights(component)             whether a component sub-folder holds weights (a scheduler does not)
    check_component_weights(path, components, what)   :func:`check_weights` of every component that holds weights
    read_folder_weights(folder)          the tensors of every ``.safetensors`` file of a folder
    load_component(what, component, fn)  ``fn()``, any failure re-raised as a ValueError naming the component
    cached(key, make)                    the per-kind caches of loaded models (the last load of each kind)
    set_cache_owner(fn)                  ``fn() -> bool``: True while a host owns model lifetimes (weak caches)
    cached_models(kind=None)             the models the caches hold now
    clear_cache(kind=None)               forget cached models (all kinds, or one)
    folder_key(path)                     cache key of a model folder: resolved path and file stamps
    file_stamps(path)                    ``(name, mtime, size)`` of ``model_index.json`` and every component file
    needs_manual_load(cls)               True when diffusers' ``from_pretrained`` cannot load ``cls`` here
    load_diffusers_model(cls, folder, dtype)   a diffusers model, built by hand where ``from_pretrained`` cannot

Design notes:
    The checks run before any weights are read, so a broken download fails with a message naming
    the folder and the file: every component's config file must exist, and every ``.safetensors``
    file must have a valid header and exactly the bytes it announces (catches truncated files).

    :func:`cached` keeps one cache per model kind (the key's first item: ``"zero123"``, ``"sd"``,
    ``"inpaint"``, ``"video_inpaint"``, ...), each holding the last load of that kind, so a graph that
    uses Zero123, SD guidance, SD inpainting and VACE together never evicts one with another and a
    second run of it reloads nothing. Keys are what the caller passes, usually
    ``(kind, *folder_key(path), dtype)``. When a host owns model lifetimes (inside ComfyUI: its node
    output cache keeps the handles of the last run, and "Free model and node cache" drops them), the
    caches hold their models weakly (:func:`set_cache_owner`), so a model the host let go is freed
    instead of being pinned here; outside ComfyUI they hold them.

    diffusers refuses to load a model class with ``_keep_in_fp32_modules`` (the Wan transformers)
    unless ``low_cpu_mem_usage`` is on, which needs ``accelerate``. Without ``accelerate``,
    :func:`load_diffusers_model` builds the model from its config, fills it from its safetensors
    files (every weight present, nothing extra) and casts it as ``from_pretrained`` would: floating
    tensors in ``dtype``, those of the fp32-kept modules in float32.
"""

from __future__ import annotations

import importlib.util
import json
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "check_weights",
    "check_diffusers_folder",
    "missing_config_files",
    "holds_weights",
    "check_component_weights",
    "read_folder_weights",
    "load_component",
    "cached",
    "set_cache_owner",
    "cached_models",
    "clear_cache",
    "folder_key",
    "file_stamps",
    "needs_manual_load",
    "load_diffusers_model",
]

# Config file of a component sub-folder where it is not ``config.json``.
_CONFIG_FILES = {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json",
                 "image_processor": "preprocessor_config.json", "feature_extractor": "preprocessor_config.json"}
_NO_WEIGHTS = ("scheduler", "tokenizer", "image_processor", "feature_extractor")
_PER_KIND = 1
_CACHES: dict[str, OrderedDict[tuple, object]] = {}
_owner: Callable[[], bool] | None = None


# --------------------------------------------------------------------------- folder checks


def check_weights(folder: Path, what: str) -> None:
    """Check a component folder holds readable weights: every ``.safetensors`` file must have a
    valid header and exactly the bytes it announces (catches truncated downloads).

    Raises:
        ValueError: naming the folder or file and what is wrong with it.
    """
    files = sorted(p for p in folder.glob("*.safetensors"))
    if not files:
        if any(folder.glob("*.bin")):
            return
        raise ValueError(f"{what}: no weights in {str(folder)!r} (expected a .safetensors file)")
    for path in files:
        size = path.stat().st_size
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    raise ValueError("shorter than the 8-byte header length")
                n = int.from_bytes(head, "little")
                if n <= 1 or 8 + n > size:
                    raise ValueError(f"header length {n} does not fit a file of {size} bytes")
                header = json.loads(handle.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            expected = 8 + n + (max(ends) if ends else 0)
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"{what}: corrupt safetensors file {str(path)!r}: {exc}") from None
        if expected != size:
            raise ValueError(f"{what}: corrupt or truncated safetensors file {str(path)!r}: header announces "
                             f"{expected} bytes, the file has {size}; download it again")


def missing_config_files(path: Path, components) -> list[str]:
    """``<component>/<config file>`` of every component whose config file is missing under ``path``."""
    files = [f"{c}/{_CONFIG_FILES.get(c, 'config.json')}" for c in components]
    return [f for f in files if not (path / f).is_file()]


def holds_weights(component: str) -> bool:
    """Whether a diffusers component sub-folder holds weights (schedulers, tokenizers, processors do not)."""
    return component not in _NO_WEIGHTS


def check_component_weights(path: Path, components, what: str) -> None:
    """:func:`check_weights` of every component sub-folder of ``path`` that holds weights."""
    for c in components:
        if holds_weights(c):
            check_weights(path / c, f"{what} {c}")


def check_diffusers_folder(path: Path, components: tuple[str, ...], what: str) -> None:
    """Check a diffusers-layout folder has every component's config file and readable weights.

    Raises:
        ValueError: not a folder, missing config files (all listed), or weights :func:`check_weights` rejects.
    """
    if not path.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is not a model folder")
    missing = missing_config_files(path, components)
    if missing:
        raise ValueError(f"{what}: model folder {str(path)!r} is missing {missing}; expected the diffusers layout "
                         f"with {list(components)}")
    check_component_weights(path, components, what)


# --------------------------------------------------------------------------- loading and caching


def read_folder_weights(folder: Path) -> dict[str, Tensor]:
    """The tensors of every ``.safetensors`` file in ``folder`` (in file-name order), on the CPU."""
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def load_component(what: str, component: str, fn: Callable):
    """``fn()``; any exception becomes a ValueError ``"{what}: could not load {component!r}: ..."``."""
    try:
        return fn()
    except Exception as exc:  # the libraries raise many types for unreadable files
        raise ValueError(f"{what}: could not load {component!r}: {type(exc).__name__}: {exc}") from exc


def set_cache_owner(fn: Callable[[], bool] | None) -> None:
    """``fn()`` says whether a host owns model lifetimes now; while it does, new entries are held weakly."""
    global _owner
    _owner = fn


class _Weak:
    __slots__ = ("ref",)

    def __init__(self, value):
        self.ref = weakref.ref(value)


def _alive(entry):
    return entry.ref() if isinstance(entry, _Weak) else entry


def cached(key: tuple, make: Callable):
    """The cached value of ``key``, made with ``make()`` on a miss; one cache per kind ``key[0]``.

    A kind keeps its last load only (the previous one of that kind drops out); other kinds are untouched.
    """
    cache = _CACHES.setdefault(str(key[0]), OrderedDict())
    if key in cache:
        value = _alive(cache[key])
        if value is not None:
            cache.move_to_end(key)
            return value
        del cache[key]
    value = make()
    weak = _owner is not None and _owner()
    try:
        cache[key] = _Weak(value) if weak else value
    except TypeError:  # not weakly referenceable: held
        cache[key] = value
    while len(cache) > _PER_KIND:
        cache.popitem(last=False)
    return value


def cached_models(kind: str | None = None) -> list:
    """The live models the caches hold (of one kind, or of all)."""
    kinds = [kind] if kind is not None else list(_CACHES)
    values = (_alive(e) for k in kinds for e in _CACHES.get(k, {}).values())
    return [v for v in values if v is not None]


def clear_cache(kind: str | None = None) -> None:
    """Forget the cached models of ``kind`` (or of every kind)."""
    if kind is None:
        _CACHES.clear()
    else:
        _CACHES.pop(kind, None)


def folder_key(path: Path) -> tuple:
    """``(resolved path, hash of the component files' modification times)``: changes when a file does."""
    stamps = tuple(sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.glob("*/*") if p.is_file()))
    return (str(path.resolve()), hash(stamps))


def file_stamps(path: Path) -> tuple:
    """``(name, mtime, size)`` of ``model_index.json`` and of every file in a component sub-folder."""
    files = [path / "model_index.json", *sorted(p for p in path.glob("*/*") if p.is_file())]
    return tuple((str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


# --------------------------------------------------------------------------- diffusers without accelerate


def needs_manual_load(cls) -> bool:
    """True when ``cls.from_pretrained`` would refuse to run here: the class keeps modules in float32
    (diffusers then demands ``low_cpu_mem_usage``, which needs ``accelerate``) and ``accelerate`` is missing."""
    return getattr(cls, "_keep_in_fp32_modules", None) is not None and importlib.util.find_spec("accelerate") is None


def load_diffusers_model(cls, folder: Path, dtype: torch.dtype):
    """``cls.from_pretrained(folder, dtype=dtype)``, or, where :func:`needs_manual_load`, the same model
    built from its config and filled from its safetensors files (in eval mode).

    Raises:
        ValueError: the weights do not match the config (missing or unexpected keys, listed).
    """
    if not needs_manual_load(cls):
        return cls.from_pretrained(folder, dtype=dtype)
    model = cls.from_config(cls.load_config(str(folder)))
    result = model.load_state_dict(read_folder_weights(folder), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{str(folder)!r}: weights do not match the config: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    # One rule for both former copies (video_generation, video_inpaint), diffusers' own
    # (``load_model_dict_into_meta``): a tensor stays float32 when a kept module's name is one of the
    # dotted parts of its name. The video_generation copy matched substrings, the video_inpaint copy
    # left buffers uncast; for the Wan transformers both give this result (their only buffers are the
    # rope tables, kept in float32 as "rope").
    keep = tuple(cls._keep_in_fp32_modules)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    return model.eval()
