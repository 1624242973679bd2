# SPDX-License-Identifier: Apache-2.0
"""Tasks the sequence-parallel tests run inside spawned worker ranks (they must be importable by name).

Each task is called as ``task(session, *args, report)`` by ``backends.sequence_parallel.launch``.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

STEPS = 3
GUIDANCE = 6.0


def dit_inputs(dit, seed: int = 0):
    """Deterministic random inputs of the trajectory DiT's sampling loop (two guidance rows)."""
    c = dit.config
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 16, 2, 4, 6, generator=g), torch.randn(2, 512, c.text_dim, generator=g),
            torch.randn(1, 257, c.image_dim, generator=g), torch.randn(1, 48, 2, 4, 6, generator=g),
            torch.randn(1, 16, 4, 6, generator=g), None if dit.motion_extractor is None else
            torch.randn(1, c.motion_dim, 14, 14, generator=g))


def inpaint_inputs(transformer, seed: int = 0):
    """Deterministic random inputs of the Fun InP sampling loop (two guidance rows, a kept region)."""
    cfg = transformer.config
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 2, 4, 4, generator=g)
    known = torch.zeros(1, 1, 2, 4, 4, dtype=torch.bool)
    known[..., :2, :] = True
    return (latents, torch.randn(1, 20, 2, 4, 4, generator=g), torch.randn(2, 512, cfg.text_dim, generator=g),
            torch.randn(1, 257, cfg.image_dim, generator=g), known, torch.randn(1, 16, 2, 4, 4, generator=g))


def dit_latents(session, dit, seed: int = 0):
    from gen4d.backends.trajectory_dit import denoise_motion

    latents, text, clip, cond, ref, motion = dit_inputs(dit, seed)
    return denoise_motion(session, dit, latents, text, clip, cond, ref, motion, STEPS, 3.0, GUIDANCE, torch.float32,
                          device=torch.device("cpu")).cpu()


def inpaint_latents(session, transformer, seed: int = 0):
    from gen4d.backends.video_inpaint_fun import denoise_inpaint

    latents, cond, text, clip, known, clean = inpaint_inputs(transformer, seed)
    return denoise_inpaint(session, transformer, latents, cond, text, clip, 4, 5.0, 0, GUIDANCE, known, clean,
                           torch.float32, device=torch.device("cpu")).cpu()


def stage_calls(traj_model, inpainter, image, depth, frames, masks):
    """The two stages through their public calls (guided)."""
    tracks = traj_model_tracks(traj_model, image, depth)
    out = inpainter.inpaint(frames, masks, "a red car", "blue", 1.0, STEPS, GUIDANCE, seed=1)
    return tracks, out


def traj_model_tracks(traj_model, image, depth):
    from gen4d.backends.trajectory_dit import generate_tracks

    r = generate_tracks(traj_model, image, depth, "a red car", "night", num_frames=5, steps=STEPS,
                        guidance_scale=GUIDANCE, seed=7, device="cpu")
    return r.motion_maps, r.normalized, r.tracks.points


def _same_on_every_rank(x: torch.Tensor) -> bool:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return all(torch.equal(p, parts[0]) for p in parts)


def load_models(traj_folder, fun_folder):
    from gen4d.backends.trajectory_dit import load_trajectory_model
    from gen4d.backends.video_inpaint import load_video_inpainter

    inpainter = load_video_inpainter(fun_folder, torch.float32)
    inpainter.device = torch.device("cpu")
    return load_trajectory_model(traj_folder), inpainter


def both_stages(session, traj_folder, fun_folder, image, depth, frames, masks, report):
    """Each rank loads the models (as under torchrun) and runs both layouts (every rank Ulysses over
    both guidance rows; guidance rows split over two groups): the DiT loops on fixed inputs and the
    whole stages through their public calls. Every rank must end with the same result."""
    traj_model, inpainter = load_models(traj_folder, fun_folder)
    out = {}
    for cfg_parallel in (False, True):
        session.cfg_parallel = cfg_parallel
        dit = dit_latents(session, traj_model.dit)
        fun = inpaint_latents(session, inpainter.transformer)
        tracks, frames_out = stage_calls(traj_model, inpainter, image, depth, frames, masks)
        agree = all(_same_on_every_rank(x) for x in (dit, fun, *tracks, frames_out))
        out[cfg_parallel] = (dit, fun, tracks, frames_out, agree)
    return out


def _write_pid(pid_file: str, rank: int) -> None:
    with open(f"{pid_file}.{rank}.tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(f"{pid_file}.{rank}.tmp", f"{pid_file}.{rank}")


def sleep_in_a_collective(session, pid_file, report):
    """Every rank records its pid and waits (until the caller cancels)."""
    _write_pid(pid_file, session.rank)
    dist.barrier()
    time.sleep(600)


def fail_on_rank_one(session, pid_file, report):
    """Rank 1 fails; rank 0 waits in a collective for it (it would wait forever without the clean-up)."""
    _write_pid(pid_file, session.rank)
    if session.rank == 1:
        time.sleep(0.5)
        raise ValueError("rank one broke on purpose")
    dist.barrier()
    time.sleep(600)
