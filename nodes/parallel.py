# SPDX-License-Identifier: Apache-2.0
"""Gen4D_ParallelOptions: spread the Wan-based DiT stages over several local GPUs.

Public API:
    ParallelOptions   node ``Gen4D_ParallelOptions`` -> GEN4D_PARALLEL
                      (payload ``backends.sequence_parallel.ParallelOptions``)
    NODES

Design notes:
    Connected to the ``parallel`` input of Gen4D Trajectory DiT or Gen4D ViSM Render, the stage's
    sampling loop runs in one worker process per listed device, sequence-parallel (Ulysses) and,
    with guidance, with the two branches on two halves of the devices; the result comes back to
    the ComfyUI process. Unconnected (or one device), the stages run as before on one GPU.
"""

from __future__ import annotations

from ..backends.sequence_parallel import ParallelOptions as Options
from ..backends.sequence_parallel import parse_devices
from . import types as T
from .widgets import bool_in, str_in

__all__ = ["ParallelOptions", "NODES"]

_NODE = "Gen4D_ParallelOptions"


class ParallelOptions:
    DESCRIPTION = (
        "Runs the sampling of Gen4D Trajectory DiT and Gen4D ViSM Render (the 14B Wan-based transformers) on "
        "several GPUs of this machine: one worker process per GPU, each holding the weights once and its share of "
        "the video tokens (sequence parallelism with Ulysses all-to-all attention over NCCL). Connect it to the "
        "stage's 'parallel' input. Without it the stages use one GPU."
    )
    CATEGORY = f"{T.CATEGORY}/loaders"
    RETURN_TYPES = (T.PARALLEL,)
    RETURN_NAMES = ("parallel",)
    OUTPUT_TOOLTIPS = ("Devices for the 'parallel' input of Gen4D Trajectory DiT / Gen4D ViSM Render.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "devices": str_in("0,1", "GPU indices of this machine, comma-separated (e.g. 0,1 or 0,1,2,3); one "
                                  "worker each. The head count of the model (40 for Wan 14B) must divide by the "
                                  "number of Ulysses ranks. 'cpu,cpu' runs on the CPU (gloo; for testing)."),
                "cfg_parallel": bool_in(True, "With classifier-free guidance and an even number of devices, give "
                                        "the unconditional and conditional passes to two halves of the devices "
                                        "(less communication); off = every device runs both on its tokens."),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, devices=None):
        if devices is None:
            return True
        try:
            parse_devices(devices, f"{_NODE}.devices")
        except ValueError as exc:
            return str(exc)
        return True

    def build(self, devices, cfg_parallel=True):
        listed = parse_devices(devices, f"{_NODE}.devices")
        if not listed:
            raise ValueError(f"{_NODE}.devices: no device listed; give GPU indices such as 0,1")
        options = Options(listed, bool(cfg_parallel))
        options.check_available(f"{_NODE}.devices")
        return (options,)


NODES = {_NODE: (ParallelOptions, "Gen4D Parallel Options")}
