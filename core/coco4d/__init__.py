# SPDX-License-Identifier: Apache-2.0
"""CoCo4D's stages: reference-video supervision and the screen-space trajectory (§3.1), SAM2 split
maths, the progressive background outpaint with eq. 7 and depth alignment (§3.2), and depth-aware
composition (§3.3, eqs. 8-10). Built on ``core.engine``.
"""
