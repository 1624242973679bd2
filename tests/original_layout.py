# SPDX-License-Identifier: Apache-2.0
"""Test helper: a transformers state dict written back into a checkpoint's original naming, by inverting
the name rules (``backends.key_maps.KeyRule``) a single-file loader reads with."""

from __future__ import annotations

import torch
from gen4d.backends.key_maps import KeyRule, template_regex


def _fill(template: str, groups: dict[str, str]) -> str:
    name = template
    for key, value in groups.items():
        if key != "rest":
            name = name.replace("{" + key + "}", value)
    return name + groups.get("rest", "") if template.endswith(".") else name


def to_original(rules: list[KeyRule], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original name -> tensor for every tensor of ``state`` (our names). A split is joined back in rule
    order, a concatenation cut into equal parts, a copy kept once (and checked equal). Every name of
    ``state`` must be claimed by a rule (AssertionError naming those that are not)."""
    compiled = [(rule, [template_regex(t) for t in rule.ours]) for rule in rules]
    parts: dict[str, dict[int, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    unclaimed = []
    for name, tensor in state.items():
        for rule, patterns in compiled:
            hit = next(((j, m) for j, p in enumerate(patterns) if (m := p.match(name))), None)
            if hit is None:
                continue
            j, m = hit
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            sources = [_fill(t, groups) for t in rule.original]
            if len(sources) > 1:  # one of ours made of several originals: cut it back
                for src, piece in zip(sources, tensor.chunk(len(sources), dim=0)):
                    out[src] = piece.clone()
            elif rule.split:
                parts.setdefault(sources[0], {})[j] = tensor
                if len(parts[sources[0]]) == len(rule.ours):
                    out[sources[0]] = torch.cat([parts[sources[0]][i] for i in range(len(rule.ours))], dim=0)
            else:
                if sources[0] in out and not tensor.is_meta:
                    assert torch.equal(out[sources[0]], tensor), f"copies of {sources[0]} differ"
                out[sources[0]] = tensor.clone()
            break
        else:
            unclaimed.append(name)
    assert not unclaimed, f"no rule gives these names: {unclaimed[:8]}"
    return out
