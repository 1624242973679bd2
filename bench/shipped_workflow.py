# SPDX-License-Identifier: Apache-2.0
"""The inputs a shipped example workflow gives its nodes, for benches that run its settings."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"
DIFFUSION4D = EXAMPLES / "Diffusion4D.json"
POSED_FRAMES = EXAMPLES / "PosedFrames4D.json"
# The workflows whose fit stages the posed-frames benches can run, by the name their options take.
FIT_WORKFLOWS = {"posed_frames": POSED_FRAMES, "diffusion4d": DIFFUSION4D}


def _prompt(workflow: Path, node_classes) -> dict:
    """The workflow in API form (``workflow_checker`` converts it; needs ``tools/`` on ``sys.path``)."""
    from workflow_checker import load_workflow, ui_to_api

    return ui_to_api(load_workflow(workflow), node_classes)


def node_inputs(workflow: Path, class_types: tuple[str, ...], node_classes) -> dict[str, dict]:
    """``class_type -> inputs`` (widget values and links, API form) of the named nodes in ``workflow``.

    ``node_classes`` is the pack's NODE_CLASS_MAPPINGS, which say how widget values map onto inputs.
    Needs ``tools/`` on ``sys.path`` (the workflow checker converts the file).
    """
    prompt = _prompt(workflow, node_classes)
    return {entry["class_type"]: entry["inputs"] for entry in prompt.values() if entry["class_type"] in class_types}


def linked_input(workflow: Path, class_type: str, name: str, node_classes):
    """The value the named node's linked input ``name`` receives: the source node run with its widget values.

    Only for sources fed by widgets alone (the fit options nodes); None when the input is not linked.
    """
    prompt = _prompt(workflow, node_classes)
    entry = next(e for e in prompt.values() if e["class_type"] == class_type)
    link = entry["inputs"].get(name)
    if not isinstance(link, list):
        return None
    source = prompt[str(link[0])]
    if any(isinstance(v, list) for v in source["inputs"].values()):
        raise ValueError(f"{workflow.name}: {class_type}.{name} comes from {source['class_type']}, which has linked "
                         "inputs of its own; only widget-fed sources can be run here")
    cls = node_classes[source["class_type"]]
    out = getattr(cls(), cls.FUNCTION)(**source["inputs"])
    return (out["result"] if isinstance(out, dict) else out)[int(link[1])]
