"""Adapter that turns a pretrained MDM checkpoint into a sigma-space piece denoiser.

Importing this package never imports ``transformers`` or CLIP: text towers load lazily.
"""
from .args import MDMArgs
from .model import MDM, drop_text, null_text

__all__ = ["MDM", "MDMArgs", "drop_text", "null_text"]
