# SPDX-License-Identifier: Apache-2.0
"""Sequence parallelism for the Wan-based DiT stages over several processes (``torch.distributed``).

Public API:
    ParallelOptions           the GEN4D_PARALLEL payload: local devices + whether CFG branches split
    parse_devices(text, what) "0,1" / "cuda:0,cuda:2" / "cpu,cpu" -> device strings (ValueError naming the input)
    Session                   this process's place in a group of ranks (rank, world size, device)
    Layout                    how one sampling call spreads over the group: CFG groups x Ulysses degree
    init_from_env()           the session of a ``torchrun`` process (None when not launched that way)
    active_session()          the session sampling calls use (torchrun's, or a worker's), or None
    launch(devices, fn, args, ...)   run ``fn(session, *args)`` on one spawned worker per device; rank 0's result
    split_tokens / gather_tokens     a rank's share of a token sequence, and the whole sequence back
    token_range(n, layout)           the global token range ``[a, b)`` this rank holds
    attention_parallel(module, layout)   Ulysses all-to-all in every Wan self-attention of ``module``
    wan_context_parallel(model, layout)  the same, plus diffusers' token split / gather hooks on a Wan transformer
    guided_velocity(predict, branches, scale, layout)   classifier-free guidance, branches split over CFG groups

Design notes:
    The engine is diffusers' context parallelism (``ContextParallelConfig`` / ``ParallelConfig``,
    the Ulysses attention of its attention dispatcher, and the ``_cp_plan`` split / gather hooks of
    ``WanTransformer3DModel``) over ``torch.distributed`` process groups: NCCL on CUDA, gloo on the
    CPU (gloo implements ``all_to_all_single``, which Ulysses attention needs, so the same code runs
    in CPU tests). Tokens are split across the ranks of a Ulysses group right after patch
    embedding; every block runs on the rank's own tokens except self-attention, where an
    all-to-all swaps "all heads of my tokens" for "my heads of all tokens" and back; cross-attention
    (text and CLIP tokens, identical on every rank) stays local; the outputs are gathered after
    the final projection. Each rank holds the weights once and the activations of its own tokens.

    diffusers' ``ModelMixin.enable_parallelism`` derives the device from ``torch.accelerator``
    (a CPU-only build has none) and cannot be undone; the glue here builds the device mesh itself
    (``init_device_mesh`` on this rank's device type), calls ``ParallelConfig.setup`` and applies /
    removes the same hooks around each sampling call, so a model can be used sharded and unsharded.

    Layout of a call: with classifier-free guidance and ``cfg_parallel`` on an even world size, the
    ranks form two groups (unconditional, conditional) of ``world / 2`` ranks each; each group runs
    its branch with Ulysses over its ranks and the two velocities are exchanged (all-gather)
    before the guidance sum, so every rank keeps the same latents. Otherwise all ranks run both
    branches with Ulysses over the whole world. The Ulysses degree must divide the head count; the
    token count should divide too, else diffusers' "Ulysses anything" mode (uneven splits) is used,
    which needs CUDA.

    Workers (``launch``): ``torch.multiprocessing.start_processes`` (spawn), one daemon process per
    device, each seeing only its own GPU (``CUDA_VISIBLE_DEVICES``), rendezvous on a free local TCP
    port. Arguments travel through shared memory (a CPU-resident model is shared, not copied).
    Rank 0 sends progress and its result through a queue; the caller polls it, forwards progress,
    and stops every worker when the user cancels. When any rank fails, torch's process context
    terminates the others and the call raises a RuntimeError naming the failed rank, its device and
    its error; no worker outlives the call.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = [
    "ParallelOptions",
    "parse_devices",
    "Session",
    "Layout",
    "init_from_env",
    "active_session",
    "launch",
    "split_tokens",
    "gather_tokens",
    "token_range",
    "attention_parallel",
    "wan_context_parallel",
    "guided_velocity",
]

logger = logging.getLogger(__name__)

_TIMEOUT_S = 1800.0


# --------------------------------------------------------------------------- options


def parse_devices(text: str, what: str = "devices") -> tuple[str, ...]:
    """Parse a device list: ``"0,1"`` (CUDA indices), ``"cuda:0, cuda:2"`` or ``"cpu,cpu"`` (gloo, for tests).

    Returns:
        device strings, e.g. ``("cuda:0", "cuda:1")``; ``()`` for an empty text (one device, the default).

    Raises:
        ValueError: naming the input, for an unknown entry, a CUDA device listed twice or a mix of CPU and CUDA.
    """
    out = []
    for raw in str(text).replace(";", ",").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.isdigit():
            item = f"cuda:{int(item)}"
        if item == "cpu" or (item.startswith("cuda:") and item[5:].isdigit()):
            out.append(item)
        else:
            raise ValueError(f"{what}: {raw.strip()!r} is not a device; expected CUDA indices like '0,1', "
                             f"'cuda:0,cuda:1', or 'cpu,cpu'")
    cuda = [d for d in out if d != "cpu"]
    if len(set(cuda)) != len(cuda):
        raise ValueError(f"{what}: a GPU is listed twice in {text!r}; list each GPU once")
    if cuda and len(cuda) != len(out):
        raise ValueError(f"{what}: {text!r} mixes cpu and CUDA devices; use one kind")
    return tuple(out)


@dataclass(frozen=True)
class ParallelOptions:
    """How a DiT stage spreads over local devices (the GEN4D_PARALLEL payload).

    Attributes:
        devices: one worker process per entry (``"cuda:i"``, or ``"cpu"`` for gloo on the CPU); fewer
            than two entries = no workers (the stage runs as usual).
        cfg_parallel: with guidance, give the unconditional and conditional branches to two halves of
            the workers (needs an even count); else every worker runs both with Ulysses.
        timeout_s: how long a collective may wait for a rank before the call fails.
    """

    devices: tuple[str, ...] = ()
    cfg_parallel: bool = True
    timeout_s: float = _TIMEOUT_S

    def __post_init__(self):
        object.__setattr__(self, "devices", parse_devices(",".join(self.devices), "ParallelOptions.devices"))

    @property
    def enabled(self) -> bool:
        return len(self.devices) > 1

    def check_available(self, what: str) -> None:
        """Raises ValueError when a listed GPU is not on this machine."""
        cuda = [int(d[5:]) for d in self.devices if d.startswith("cuda:")]
        if not cuda:
            return
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        missing = [i for i in cuda if i >= count]
        if missing:
            raise ValueError(f"{what}: devices {','.join(self.devices)} name GPU {missing[0]}, but this machine has "
                             f"{count} GPU(s) (indices 0..{count - 1})" if count else
                             f"{what}: devices {','.join(self.devices)} name GPUs, but CUDA is not available here")


# --------------------------------------------------------------------------- sessions and layouts


@dataclass
class Layout:
    """One sampling call's spread: ``cfg`` groups (1 or 2) x ``sp`` Ulysses ranks each."""

    cfg: int
    sp: int
    cfg_rank: int
    sp_rank: int
    cfg_group: Any = None
    sp_group: Any = None
    mesh: Any = None
    _configs: dict = field(default_factory=dict, repr=False)

    def context_parallel_config(self, tokens: int, heads: int, device: torch.device):
        """diffusers' ``ParallelConfig`` for this layout's Ulysses groups (None when ``sp == 1``); cached."""
        if self.sp == 1:
            return None
        key = (int(tokens) % self.sp == 0, int(heads), str(device))
        if key not in self._configs:
            self._configs[key] = self._make_config(int(tokens), int(heads), device)
        return self._configs[key]

    def _make_config(self, tokens: int, heads: int, device: torch.device):
        try:
            from diffusers import ContextParallelConfig, ParallelConfig
        except ImportError as exc:  # older diffusers
            raise RuntimeError("sequence parallelism needs a diffusers release with context parallelism "
                               "(ContextParallelConfig; tested with 0.42)") from exc
        if heads % self.sp:
            raise ValueError(f"sequence parallelism: {heads} attention heads cannot be split over {self.sp} ranks; "
                             f"use a rank count that divides {heads}")
        uneven = tokens % self.sp != 0
        if uneven and device.type != "cuda":
            raise ValueError(f"sequence parallelism: {tokens} tokens do not split evenly over {self.sp} ranks, "
                             f"which needs CUDA (diffusers' Ulysses-anything mode); use a size or rank count that "
                             f"divides it")
        cp = ContextParallelConfig(ulysses_degree=self.sp, mesh=self.mesh["ring", "ulysses"],
                                   ulysses_anything=uneven)
        config = ParallelConfig(context_parallel_config=cp)
        config.setup(torch.distributed.get_rank(), torch.distributed.get_world_size(), device,
                     mesh=self.mesh["ring", "ulysses"])
        return config


@dataclass
class Session:
    """This process in a group of ranks that split each DiT sampling call.

    Attributes:
        rank, world: ``torch.distributed`` rank and world size.
        device: this rank's compute device.
        cfg_parallel: whether guided calls split their two branches over two halves of the ranks.
    """

    rank: int
    world: int
    device: torch.device
    cfg_parallel: bool = True
    _layouts: dict = field(default_factory=dict, repr=False)

    def layout(self, branches: int) -> Layout:
        """The layout of a call with ``branches`` (1, or 2 with guidance) rows per step.

        Every rank must ask for the same layouts in the same order (new ones create process groups).
        """
        cfg = 2 if branches == 2 and self.cfg_parallel and self.world % 2 == 0 else 1
        sp = self.world // cfg
        if (cfg, sp) not in self._layouts:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.device.type, (cfg, 1, sp), mesh_dim_names=("cfg", "ring", "ulysses"))
            self._layouts[(cfg, sp)] = Layout(cfg, sp, self.rank // sp, self.rank % sp, mesh["cfg"].get_group(),
                                              mesh["ulysses"].get_group(), mesh)
        return self._layouts[(cfg, sp)]


_SESSION: Session | None = None


def active_session() -> Session | None:
    """The session DiT sampling calls of this process use, or None (single process)."""
    return _SESSION


def _set_session(session: Session | None) -> None:
    global _SESSION
    _SESSION = session


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(cfg_parallel: bool = True) -> Session | None:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``).

    CUDA: NCCL, one GPU per local rank; CPU: gloo. Returns the session (also made active), or None
    when ``WORLD_SIZE`` is unset or 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(_backend(device), rank=rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=_TIMEOUT_S))
    session = Session(rank, world, device, cfg_parallel)
    _set_session(session)
    logger.info("rank %d of %d on %s: DiT stages run sequence-parallel", rank, world, device)
    return session


# --------------------------------------------------------------------------- token sharding


def token_range(n: int, layout: Layout | None) -> tuple[int, int]:
    """The global token range ``[a, b)`` this rank holds of ``n`` tokens (``tensor_split`` order)."""
    if layout is None or layout.sp == 1:
        return 0, n
    base, extra = divmod(n, layout.sp)
    a = layout.sp_rank * base + min(layout.sp_rank, extra)
    return a, a + base + (1 if layout.sp_rank < extra else 0)


def split_tokens(x: Tensor, layout: Layout | None, dim: int = 1) -> Tensor:
    """This rank's share of ``x`` along ``dim`` (the whole of ``x`` without a layout)."""
    if layout is None or layout.sp == 1:
        return x
    a, b = token_range(x.shape[dim], layout)
    return x.narrow(dim, a, b - a)


def gather_tokens(x: Tensor, layout: Layout | None, total: int, dim: int = 1) -> Tensor:
    """The whole sequence of ``total`` tokens from every rank's share ``x`` (every rank gets it)."""
    if layout is None or layout.sp == 1:
        return x
    parts = []
    for r in range(layout.sp):
        a, b = token_range(total, Layout(layout.cfg, layout.sp, layout.cfg_rank, r))
        shape = list(x.shape)
        shape[dim] = b - a
        parts.append(torch.empty(shape, dtype=x.dtype, device=x.device))
    torch.distributed.all_gather(parts, x.contiguous(), group=layout.sp_group)
    return torch.cat(parts, dim=dim)


def _attention_processors(module: torch.nn.Module) -> list:
    procs = []
    for m in module.modules():
        proc = getattr(m, "processor", None)
        if proc is not None and hasattr(proc, "_parallel_config") and proc not in procs:
            procs.append(proc)
    return procs


@contextlib.contextmanager
def attention_parallel(module: torch.nn.Module, layout: Layout | None, tokens: int, heads: int,
                       device: torch.device):
    """Within the block, every Wan attention processor of ``module`` runs Ulysses over ``layout``'s group
    (self-attention; diffusers' Wan processor keeps cross-attention local). Restores them afterwards."""
    config = None if layout is None else layout.context_parallel_config(tokens, heads, device)
    if config is None:
        yield None
        return
    procs = _attention_processors(module)
    if not procs:
        raise ValueError(f"sequence parallelism: {type(module).__name__} has no diffusers attention processor "
                         "with context-parallel support")
    previous = [p._parallel_config for p in procs]
    for p in procs:
        p._parallel_config = config
    try:
        yield config
    finally:
        for p, old in zip(procs, previous):
            p._parallel_config = old


def _wan_plan(model) -> dict:
    plan = dict(getattr(type(model), "_cp_plan", None) or {})
    plan.pop("", None)  # the per-token timestep split of Wan 2.2 TI2V; Wan 2.1 takes one timestep per sample
    if not {"rope", "proj_out"} <= set(plan):
        raise RuntimeError(f"sequence parallelism: this diffusers' {type(model).__name__} has no context-parallel "
                           f"plan (_cp_plan); tested with diffusers 0.42")
    return plan


@contextlib.contextmanager
def wan_context_parallel(model: torch.nn.Module, layout: Layout | None, tokens: int, device: torch.device):
    """A diffusers ``WanTransformer3DModel`` runs sharded over ``layout`` within the block: its own
    context-parallel plan splits RoPE and the block input by token and gathers after ``proj_out``."""
    heads = int(model.config.num_attention_heads)
    with attention_parallel(model, layout, tokens, heads, device) as config:
        if config is None:
            yield
            return
        from diffusers.hooks.context_parallel import apply_context_parallel, remove_context_parallel

        plan = _wan_plan(model)
        apply_context_parallel(model, config.context_parallel_config, plan)
        try:
            yield
        finally:
            remove_context_parallel(model, plan)


def guided_velocity(predict: Callable[[slice], Tensor], branches: int, scale: float,
                    layout: Layout | None) -> Tensor:
    """Classifier-free guidance ``v_u + scale (v_c - v_u)`` (row 0 unconditional, row 1 conditional).

    ``predict(rows)`` runs the model on the batch rows ``rows``. With two CFG groups each group
    predicts its own row and the rows are exchanged, so every rank returns the same velocity.
    """
    if branches == 1:
        return predict(slice(0, 1)).float()
    if layout is None or layout.cfg == 1:
        v_u, v_c = predict(slice(0, 2)).float().chunk(2)
    else:
        mine = predict(slice(layout.cfg_rank, layout.cfg_rank + 1)).float().contiguous()
        rows = [torch.empty_like(mine) for _ in range(2)]
        torch.distributed.all_gather(rows, mine, group=layout.cfg_group)
        v_u, v_c = rows
    return v_u + float(scale) * (v_c - v_u)


# --------------------------------------------------------------------------- worker processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Report:
    """Rank 0's progress callback inside a worker: forwards ``(step, total)`` to the caller."""

    def __init__(self, channel):
        self.channel = channel

    def __call__(self, step, total=None, preview=None):
        self.channel.put(("progress", int(step), None if total is None else int(total)))


def _worker(index: int, devices: tuple[str, ...], port: int, cfg_parallel: bool, timeout_s: float, threads: int,
            fn: Callable, args: tuple, channel) -> None:
    device = torch.device(devices[index])
    if device.type == "cpu":  # the caller's threads shared out: ranks on one CPU do not oversubscribe it
        torch.set_num_threads(threads)
    if device.type == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device.index)
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(_backend(device), init_method=f"tcp://127.0.0.1:{port}", rank=index,
                                         world_size=len(devices), timeout=datetime.timedelta(seconds=timeout_s))
    try:
        session = Session(index, len(devices), device, cfg_parallel)
        _set_session(session)
        report = _Report(channel) if index == 0 else None
        try:
            result = fn(session, *args, report)
        except Exception as exc:  # tell the caller first: the other ranks then fail on the lost peer
            channel.put(("error", index, time.time(), f"{type(exc).__name__}: {exc}"))
            raise
        if index == 0:
            channel.put(("result", _to_plain(result)))
    finally:
        _set_session(None)
        torch.distributed.destroy_process_group()


def _to_plain(value):
    """Tensors as numpy arrays (sent by value: a worker may exit before the caller reads its message)."""
    if isinstance(value, Tensor):
        return ("tensor", value.detach().cpu().contiguous().numpy())
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_plain(v) for v in value)
    return value


def _from_plain(value):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "tensor":
        return torch.from_numpy(value[1])
    if isinstance(value, dict):
        return {k: _from_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_from_plain(v) for v in value)
    return value


def _raise_open_file_limit() -> None:
    """Each shared tensor holds a file descriptor while it is handed to the workers: allow as many as permitted."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ImportError, ValueError, OSError):
        pass


def launch(options: ParallelOptions, fn: Callable, args: tuple, what: str, callback: Callable | None = None,
           should_stop: Callable[[], bool] | None = None):
    """Run ``fn(session, *args, report)`` in one spawned worker per device of ``options``; return rank 0's result.

    ``fn`` must be a module-level function (spawned workers import it); ``report`` is a progress
    callback on rank 0 and None elsewhere. Tensors in ``args`` are shared with the workers.

    Raises:
        RuntimeError: a worker failed (naming its rank, device and error); every other worker is stopped.
        InterruptedError: ``should_stop`` returned True; every worker is stopped.
    """
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    devices = options.devices
    options.check_available(what)
    _raise_open_file_limit()
    channel = mp.get_context("spawn").SimpleQueue()
    port = _free_port()
    logger.info("%s: %d workers on %s", what, len(devices), ",".join(devices))
    threads = max(1, torch.get_num_threads() // len(devices))
    task = (_worker, (devices, port, options.cfg_parallel, float(options.timeout_s), threads, fn, tuple(args)))
    # one pickle per worker: a shared tensor's handle can be claimed once
    tasks = tuple(bytes(ForkingPickler.dumps(task)) for _ in devices)
    with _spawnable() as entry:
        ctx = mp.start_processes(entry, args=(__name__.split(".")[0], tasks, channel), nprocs=len(devices),
                                 join=False, daemon=True, start_method="spawn")
    state = {"result": None, "have": False, "errors": []}

    def drain() -> None:
        while not channel.empty():
            kind, *payload = channel.get()
            if kind == "progress" and callback is not None:
                callback(payload[0], payload[1], None)
            elif kind == "result":
                state["result"], state["have"] = _from_plain(payload[0]), True
            elif kind == "error":
                state["errors"].append(tuple(payload))

    try:
        while True:
            drain()
            if should_stop is not None and should_stop():
                raise InterruptedError(f"{what}: interrupted")
            try:
                done = ctx.join(timeout=0.1)
            except ProcessException as exc:
                drain()
                raise RuntimeError(_failure(what, devices, exc, state["errors"])) from exc
            if done:
                break
        drain()
    finally:
        _stop(ctx)
    result, have = state["result"], state["have"]
    if not have:
        raise RuntimeError(f"{what}: parallel sampling on {','.join(devices)} ended without a result from rank 0")
    return result


def _failure(what: str, devices: tuple[str, ...], exc: Exception, errors: list) -> str:
    """The message of a failed parallel call: the rank that failed first (the others then lose their peer)."""
    if errors:
        index, _, message = min(errors, key=lambda e: e[1])
    else:
        index = getattr(exc, "error_index", None)
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        message = lines[-1] if lines else type(exc).__name__
    where = f"rank {index} ({devices[index]})" if index is not None else "a worker"
    return f"{what}: parallel sampling on {','.join(devices)} failed on {where}: {message}"


@contextlib.contextmanager
def _spawnable():
    """While workers start: the pack's root is importable (its ``pack_loader.run_spawned`` is the workers'
    entry, which imports the pack under this process's package name), and the main script is hidden so
    the workers do not run it again (ComfyUI's ``main.py`` would start a second ComfyUI). Yields the entry."""
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    added = root not in sys.path
    if added:
        sys.path.append(root)
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if main is not None and hasattr(main, k)}
    try:
        entry = importlib.import_module("pack_loader").run_spawned
        if main is not None:
            main.__spec__ = None
            if hasattr(main, "__file__"):
                del main.__file__
        yield entry
    finally:
        for k, v in saved.items():
            setattr(main, k, v)
        if added and root in sys.path:
            sys.path.remove(root)


def _stop(ctx) -> None:
    """Terminate (then kill) every worker still alive, and reap them all."""
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()

