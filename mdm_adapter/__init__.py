"""Adapter that turns a pretrained MDM checkpoint into a sigma-space piece denoiser.

``mdm_adapter.load(path)`` reads an official ``.pt`` (or our ``.safetensors``) with the
``args.json`` beside it and returns a :class:`LoadedModel` whose ``denoiser`` implements the
piece-denoiser contract of :mod:`motion_core.denoiser`.

Importing this package never imports ``transformers`` or CLIP code: text towers load lazily.
"""
from .args import MDMArgs
from .load import LoadedModel, load, save_safetensors
from .model import MDM, drop_text, null_text
from .piece_denoiser import MDMPieceDenoiser
from .schedules import DiscreteSchedule
from .text_encoders import ClipTextEncoder, DistilBertTextEncoder, TextEncoder

__all__ = ["MDM", "MDMArgs", "LoadedModel", "load", "save_safetensors", "drop_text", "null_text",
           "MDMPieceDenoiser", "DiscreteSchedule", "ClipTextEncoder", "DistilBertTextEncoder", "TextEncoder"]
