# SPDX-License-Identifier: Apache-2.0
"""Call pack nodes the way ComfyUI does: widget defaults from INPUT_TYPES, overridden per call."""

from __future__ import annotations

import gen4d

NODES = gen4d.NODE_CLASS_MAPPINGS


def defaults(node_id: str) -> dict:
    """Widget defaults of a node, read from its INPUT_TYPES (sockets left out)."""
    out = {}
    for section in ("required", "optional"):
        for name, (_kind, opts) in NODES[node_id].INPUT_TYPES().get(section, {}).items():
            if "default" in opts:
                out[name] = opts["default"]
    return out


def run(node_id: str, **inputs):
    """Call a node's FUNCTION with its widget defaults overridden by ``inputs``; returns the result tuple."""
    cls = NODES[node_id]
    out = getattr(cls(), cls.FUNCTION)(**{**defaults(node_id), **inputs})
    return out["result"] if isinstance(out, dict) else out
