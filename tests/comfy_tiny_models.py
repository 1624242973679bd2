# SPDX-License-Identifier: Apache-2.0
"""ComfyUI's own model objects at tiny sizes, shared by the checks that run inside a ComfyUI interpreter
(tests/comfy_native_check.py, tests/comfy_native_graph_check.py). Import it after ComfyUI's ``args``
are set (``comfy`` is imported inside the functions).
"""

import torch


def init_normal(module, std=0.05):
    for p in module.parameters():
        torch.nn.init.normal_(p, std=std)
    return module


def plain_init(module):
    """ComfyUI's layers skip weight init (weights come from files): fill them (norm gains 1, biases 0)."""
    for name, p in module.named_parameters():
        if name.endswith("gamma"):
            torch.nn.init.ones_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=(2.0 / max(p[0].numel(), 1)) ** 0.5)
    return module


def patcher(model):
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def tiny_unet_config(in_channels):
    """An SD-style UNet config ComfyUI's model configs accept, 32 channels wide, CLIP-L context."""
    return {"in_channels": in_channels, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1],
            "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
            "transformer_depth_middle": 1, "context_dim": 768, "image_size": 32,
            "use_linear_in_transformer": False, "adm_in_channels": None, "use_temporal_attention": False,
            "use_spatial_transformer": True, "legacy": False, "num_head_channels": -1, "num_heads": 1}


def tiny_sd_vae(seed=None):
    """ComfyUI's ``VAE`` around a tiny SD first-stage model with random weights."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    if seed is not None:
        torch.manual_seed(seed)
    state = init_normal(AutoencoderKL(ddconfig=ddconfig, embed_dim=4), 0.1).state_dict()
    return comfy.sd.VAE(sd=state, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
