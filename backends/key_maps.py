# SPDX-License-Identifier: Apache-2.0
"""Renaming a checkpoint's original tensor names to a transformers model's, from a table of rules.

Public API:
    KeyRule(original, ours, split=False)   one rule: names (or name prefixes) on either side
    plan_names(rules, shapes, what)        our name -> the pieces of original tensors that make it
    read_planned(path, plan, dtype)        our state dict, read from a single ``.safetensors`` file
    build_on_meta(factory)                 a model built with its parameters on the meta device
    load_planned(model, path, plan, dtype, what)   fill such a model from the file, exactly

Design notes:
    A rule pairs templates: ``"image_encoder.trunk.blocks.{i}.norm1."`` on the original side and
    ``"vision_encoder.backbone.blocks.{i}.layer_norm1."`` on ours; ``{name}`` placeholders stand for
    decimal indices and carry over. A template ending in ``.`` is a prefix (the rest of the name,
    e.g. ``weight``, carries over); any other template is a whole name. A rule with several original
    templates concatenates those tensors along dim 0 into one of ours; a rule with several of ours
    either splits the original tensor into equal parts along dim 0 (``split=True``, e.g. a fused
    ``qkv`` into ``q``/``k``/``v``) or copies it to each (a tensor the model keeps twice).

    A plan is computed from the file's header (names and shapes), so a file of another family is
    refused before any tensor is read: every original name must be claimed by a rule. Tensors are
    then read one at a time, converted to the load dtype while they are read
    (``backends.wan.SafetensorsReader``), into a model whose parameters sit on the meta device
    until they are assigned: loading costs the model's size in the load dtype and little more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .wan import SafetensorsReader, assign_weights, params_on_meta

__all__ = ["KeyRule", "plan_names", "read_planned", "build_on_meta", "load_planned", "template_regex"]

Piece = tuple[str, int | None, int | None]  # original name, first and end row along dim 0 (None: all of it)


@dataclass(frozen=True)
class KeyRule:
    """Original name templates -> our name templates (see the module notes)."""

    original: tuple[str, ...]
    ours: tuple[str, ...]
    split: bool = False

    def __post_init__(self):
        if len(self.original) > 1 and len(self.ours) > 1:
            raise ValueError("a KeyRule concatenates several originals into one name, or maps one original to several")


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def template_regex(template: str) -> re.Pattern:
    """The regular expression of a template: placeholders match decimal indices, a final ``.`` leaves
    the rest of the name to a ``rest`` group."""
    out, pos, seen = [], 0, set()
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>\\d+)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    if template.endswith("."):
        out.append(r"(?P<rest>.+)")
    return re.compile("".join(out) + r"\Z")


def _fill(template: str, groups: dict[str, str]) -> str:
    name = _PLACEHOLDER.sub(lambda m: groups[m.group(1)], template)
    return name + groups.get("rest", "") if template.endswith(".") else name


def plan_names(rules: list[KeyRule], shapes: dict[str, tuple[int, ...]], what: str) -> dict[str, list[Piece]]:
    """Our name -> the original pieces (name, first row, end row) concatenated along dim 0 to make it.

    Raises:
        ValueError: naming ``what`` and the original names no rule claims, or the pieces a rule needs
            that the file lacks, or a split whose tensor does not divide evenly.
    """
    compiled = [(rule, [template_regex(t) for t in rule.original]) for rule in rules]
    plan: dict[str, list[Piece]] = {}
    claimed: set[str] = set()
    unknown: list[str] = []
    for name in shapes:
        if name in claimed:
            continue
        for rule, patterns in compiled:
            hit = next(((i, m) for i, p in enumerate(patterns) if (m := p.match(name))), None)
            if hit is None:
                continue
            groups = {k: v for k, v in hit[1].groupdict().items() if v is not None}
            sources = [_fill(t, groups) for t in rule.original]
            absent = [s for s in sources if s not in shapes]
            if absent:
                raise ValueError(f"{what}: {name!r} comes with {absent} in this layout, which the file lacks")
            claimed.update(sources)
            targets = [_fill(t, groups) for t in rule.ours]
            if len(sources) > 1:
                plan[targets[0]] = [(s, None, None) for s in sources]
            elif rule.split:
                rows = shapes[name][0] if shapes[name] else 0
                if rows % len(targets):
                    raise ValueError(f"{what}: {name!r} of shape {tuple(shapes[name])} does not split into "
                                     f"{len(targets)} equal parts")
                step = rows // len(targets)
                for j, target in enumerate(targets):
                    plan[target] = [(name, j * step, (j + 1) * step)]
            else:
                for target in targets:
                    plan[target] = [(name, None, None)]
            break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{what}: {len(unknown)} tensor(s) of an unknown layout, e.g. {sorted(unknown)[:6]}")
    return plan


def read_planned(path: Path, plan: dict[str, list[Piece]], dtype: torch.dtype) -> dict[str, Tensor]:
    """Our state dict from a ``.safetensors`` file: each original tensor read once, straight into
    ``dtype`` (floating ones), then cut or joined as ``plan`` says (slices are views, no copies)."""
    needed = {name for pieces in plan.values() for name, _, _ in pieces}
    read: dict[str, Tensor] = {}
    with SafetensorsReader(path) as fh:
        for name in fh.keys():
            if name in needed:
                stored = fh.dtype(name)
                read[name] = fh.get(name, dtype if stored.is_floating_point else None)
    state: dict[str, Tensor] = {}
    for ours, pieces in plan.items():
        parts = [read[n] if a is None else read[n][a:b] for n, a, b in pieces]
        state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return state


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` with every parameter on the meta device (buffers, e.g. rotary tables, stay real)."""
    with params_on_meta():
        return factory()


def load_planned(model: nn.Module, path: Path, plan: dict[str, list[Piece]], dtype: torch.dtype,
                 what: str) -> nn.Module:
    """Fill a meta-parameter ``model`` from ``path`` through ``plan`` in ``dtype``: every parameter and
    persistent buffer must be given, with its shape, and nothing else (ValueError naming ``what``)."""
    try:
        state = read_planned(path, plan, dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read the weights: {exc}") from None
    assign_weights(model, state, dtype, what)
    return model
