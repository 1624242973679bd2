# SPDX-License-Identifier: Apache-2.0
"""Every shipped workflow file passes the checker against the pack's nodes and the core-node table."""

from __future__ import annotations

import sys
from pathlib import Path

import gen4d
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_checker import check_workflow, load_workflow  # noqa: E402

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))


def test_there_are_workflows():
    assert WORKFLOWS, "workflows/ holds no workflow files"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_checker(path):
    assert check_workflow(load_workflow(path), gen4d.NODE_CLASS_MAPPINGS) == []
