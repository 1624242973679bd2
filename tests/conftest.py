# SPDX-License-Identifier: Apache-2.0
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pack_loader import load_pack  # noqa: E402

load_pack()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
