# SPDX-License-Identifier: Apache-2.0
"""Import this checkout as the package ``gen4d``, the way ComfyUI imports a custom-node folder.

Used by tests, benchmarks and command-line tools, which run from the repository root where the
pack's relative imports need a parent package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "gen4d"


def load_pack(name: str = PACKAGE):
    """Return the pack imported as ``name`` (idempotent)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_spawned(index: int, name: str, tasks: tuple, *plain) -> None:
    """Entry of a worker process spawned by ``backends.sequence_parallel.launch``.

    A spawned process starts from nothing: the pack is imported under the parent's package name
    first, then the task (pickled with ``multiprocessing.reduction.ForkingPickler``, so its tensors
    are shared, not copied) is unpickled and run as ``fn(index, *args, *plain)``.
    """
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the tensor reductions before unpickling)

    load_pack(name)
    fn, args = ForkingPickler.loads(tasks[index])
    fn(index, *args, *plain)
