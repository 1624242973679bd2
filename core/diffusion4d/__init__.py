# SPDX-License-Identifier: Apache-2.0
"""Diffusion4D's additions to the engine: motion-magnitude conditioning (eqs. 1-2) and 3D-aware
classifier-free guidance (eq. 3) of the orbital video model. Its 4D construction is the engine's
coarse-to-fine fit.
"""
