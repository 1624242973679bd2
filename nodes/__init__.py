# SPDX-License-Identifier: Apache-2.0
"""ComfyUI nodes of the pack; each module exports NODES, a list of node classes."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
