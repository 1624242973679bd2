# SPDX-License-Identifier: Apache-2.0
import os
import sys
import types
from pathlib import Path

import pytest
import torch

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))
# tools/ holds the workflow checker and the headless runner the tests drive
sys.path.insert(0, str(CHECKOUT / "tools"))
from pack_loader import load_pack  # noqa: E402

load_pack()

# Under pytest-xdist every worker would otherwise run torch on all cores, oversubscribing them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


class _CheckoutIsAFolder:
    """Collect the checkout root as a plain folder, never as a Python package.

    The root holds ComfyUI's ``__init__.py``, so pytest would otherwise import it under the folder's
    own name, which fails for the names users clone into (``ComfyUI-Gen4D``, ``gen4d.v2``). The
    tests reach the pack as ``gen4d`` through ``load_pack`` whatever the folder is called.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if Path(path).resolve() == CHECKOUT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    # Registered as a plugin, not a conftest hook: conftest hooks only see paths below tests/.
    config.pluginmanager.register(_CheckoutIsAFolder(), "gen4d-checkout-folder")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread: on two shared cores the default oversubscribes them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def guidance_models_dir(tmp_path_factory):
    """A models folder holding the tiny random-weight Zero123 and Stable Diffusion guidance models, in their
    real layouts, with GEN4D_MODELS_DIR pointing at it for the module."""
    from gen4d.backends.tiny import build_tiny

    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN4D_MODELS_DIR", str(root))
        build_tiny("guidance_zero123", root / "gen4d" / "zero123", seed=0)
        build_tiny("guidance_sd", root / "diffusers", seed=0)
        yield root


class Interrupted(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    """Fake ``comfy``, ``comfy.utils``, ``comfy.model_management`` and ``folder_paths`` modules.

    The ProgressBar records ``(value, total, preview)`` updates; ``state.interrupt_after = k`` raises
    the interrupt flag once k updates were recorded, and the next interrupt check raises
    :class:`Interrupted`.
    """
    state = types.SimpleNamespace(interrupted=False, updates=[], totals=[], interrupt_after=None,
                                  output=tmp_path / "comfy_output", input=tmp_path / "comfy_input",
                                  temp=tmp_path / "comfy_temp", Interrupted=Interrupted)
    for folder in (state.output, state.input, state.temp):
        folder.mkdir()

    class ProgressBar:
        def __init__(self, total, node_id=None):
            state.totals.append(total)

        def update_absolute(self, value, total=None, preview=None):
            state.updates.append((value, total, preview))
            if state.interrupt_after is not None and len(state.updates) >= state.interrupt_after:
                state.interrupted = True

    def throw_exception_if_processing_interrupted():
        if state.interrupted:
            state.interrupted = False
            raise Interrupted("Processing interrupted")

    mm = types.ModuleType("comfy.model_management")
    mm.processing_interrupted = lambda: state.interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda force=False: None
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.utils, comfy.model_management = utils, mm
    fp = types.ModuleType("folder_paths")
    fp.get_output_directory = lambda: str(state.output)
    fp.get_input_directory = lambda: str(state.input)
    fp.get_temp_directory = lambda: str(state.temp)
    for name, module in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm),
                         ("folder_paths", fp)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("GEN4D_OUTPUT_DIR", str(tmp_path / "env_output"))
    # Every step reaches the bar, so tests count them (test_host_progress.py checks the rate limit).
    from gen4d.nodes import host

    monkeypatch.setattr(host, "PROGRESS_INTERVAL_S", 0.0)
    return state
