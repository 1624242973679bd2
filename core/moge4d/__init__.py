# SPDX-License-Identifier: Apache-2.0
"""MoGe4D's stages: 4D-STraG building blocks (depth lifting, depth-guided motion normalisation,
MAdaNorm), the GEN4D_TRACKS payload, and 4D-ViSM rendering with hole masks. Built on ``core.engine``.
"""
