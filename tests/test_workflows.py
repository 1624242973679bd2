# SPDX-License-Identifier: Apache-2.0
"""Every shipped workflow file passes the checker against the pack's nodes and the core-node table."""

from __future__ import annotations

import sys
from pathlib import Path

import gen4d
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_checker import check_workflow, load_workflow  # noqa: E402

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "example_workflows").glob("*.json"))


def test_there_are_workflows():
    assert WORKFLOWS, "example_workflows/ holds no workflow files"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_checker(path):
    assert check_workflow(load_workflow(path), gen4d.NODE_CLASS_MAPPINGS) == []


def _links_into(workflow: dict, node_id: int) -> dict[str, tuple[str, str]]:
    """Input name of node ``node_id`` -> (type of the source node, name of its output)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    out = {}
    for _, src, src_slot, dst, dst_slot, _ in workflow["links"]:
        if dst == node_id:
            source = nodes[src]
            out[nodes[dst]["inputs"][dst_slot]["name"]] = (source["type"], source["outputs"][src_slot]["name"])
    return out


def test_coco4d_workflow_feeds_zero123_both_fits_and_the_fits_view():
    """CoCo4D §3.1: Zero123 SDS in the static fit (eq. 2) and per timestamp in the motion stage (eq. 4),
    conditioned on the view the fits see (the same frames, centred with the same masks)."""
    workflow = load_workflow(WORKFLOWS[0].parent / "CoCo4D.json")
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node["id"])
    (loader,) = by_type["Gen4D_Zero123GuidanceLoader"]
    feeds = _links_into(workflow, loader)
    for fit in ("Gen4D_StaticGaussians", "Gen4D_DeformationFit"):
        (fit_id,) = by_type[fit]
        into_fit = _links_into(workflow, fit_id)
        assert into_fit.get("guidance") == ("Gen4D_Zero123GuidanceLoader", "guidance"), f"{fit}: {into_fit}"
        assert feeds["condition_image"] == into_fit["images"], f"{fit} fits other frames than Zero123 sees"
        assert feeds.get("condition_masks") == into_fit["masks"], f"{fit} centres with other masks: {feeds}"
