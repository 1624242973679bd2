# SPDX-License-Identifier: Apache-2.0
"""Data formats at the pack's edges: ComfyUI IMAGE/MASK layouts, 3DGS PLY files, numbered scene
bundles, the viewer's compact 4D asset, and safe, atomic output paths.
"""
