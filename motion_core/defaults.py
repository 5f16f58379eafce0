"""Default settings of the toolkit, each written once.

Every command, suite and benchmark reads its defaults from here (or, for a method's own options,
from the method's options dataclass), so a default never differs between two entry points.
"""
from __future__ import annotations

GUIDANCE = 2.5            # classifier-free guidance scale (MDM's release default)
SAMPLER = "ddim"          # sampler name (motion_collage.samplers)
STEPS = 50                # sampling steps for samplers that take a step count
ETA = 1.0                 # DDIM eta (0: deterministic); 1 by measurement, see README "Sampler default"
OVERLAP_SECONDS = 1.0     # overlap between neighbouring pieces (collage, average; DoubleTake's handshake)
SEGMENT_SECONDS = 4.0     # duration of a segment given without one
METHOD = "collage"        # generation method (motion_collage.methods)
DTYPE = "fp32"            # compute dtype
