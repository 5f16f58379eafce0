"""The settings of an MDM checkpoint, read from the ``args.json`` stored beside it.

The release writes every training argument into ``args.json``; only a few matter for
inference. Old files lack the newer keys, so every key has the release's default, and keys we
do not know are kept (in ``extra``) but otherwise ignored. A few optional keys describe our own
default model (its width, depth and bag-of-words text encoder); official files never contain
them and get the official values.
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from motion_core.spec import DatasetSpec, get_spec

ARCHS = ("trans_enc", "trans_dec")
TEXT_ENCODERS = ("clip", "bert", "bow")
# Width of each text encoder's feature; "bow" has no fixed width (its file says).
TEXT_FEATURE_DIMS = {"clip": 512, "bert": 768}


_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def check_field_types(obj: Any, prefix: str = "") -> None:
    """Each dataclass field holds its annotated JSON type: bool, int (not bool), float (an int is
    fine; NaN and infinities are not) or str, or None where the annotation allows it.

    Fields of other types are not checked. Raises ValueError ``"<prefix>'name' must be ..."``.
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        hint, value = hints[f.name], getattr(obj, f.name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = typing.get_args(hint) if union else (hint,)
        kind = next((k for k in kinds if k in _KIND_WORDS), None)
        if kind is None or (value is None and type(None) in kinds):
            continue
        if kind is bool or kind is str:
            ok = isinstance(value, kind)
        else:
            ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        if not ok:
            also = " or null" if type(None) in kinds else ""
            raise ValueError(f"{prefix}{f.name!r} must be {_KIND_WORDS[kind]}{also}, got {value!r}")


def check_range(name: str, value: float, low: float, high: float = math.inf, low_open: bool = False,
                high_open: bool = False) -> None:
    """ValueError ``"<name> must be in [low, high], got value"`` unless low <= value <= high (open ends strict)."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if above and below:
        return
    if high == math.inf:
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value!r}")


@dataclass(frozen=True)
class MDMArgs:
    """Inference-relevant settings of one MDM model (official defaults for absent keys).

    ``text_feature_dim`` is ``None`` to mean "the encoder's usual width" (512 for CLIP, 768
    for DistilBERT); the bag-of-words encoder must state it. ``extra`` holds the keys of the
    JSON file we do not use, so that a round trip through :meth:`to_dict` loses nothing.
    """

    dataset: str = "humanml"
    arch: str = "trans_enc"
    emb_trans_dec: bool = False
    layers: int = 8
    latent_dim: int = 512
    cond_mask_prob: float = 0.1
    noise_schedule: str = "cosine"
    diffusion_steps: int = 1000
    sigma_small: bool = True
    text_encoder_type: str = "clip"
    pos_embed_max_len: int = 5000
    mask_frames: bool = False
    use_ema: bool = False
    context_len: int = 0
    pred_len: int = 0
    emb_policy: str = "add"
    # Keys of our own default model (official files never have them).
    ff_size: int = 1024
    num_heads: int = 4
    dropout: float = 0.1
    text_feature_dim: Optional[int] = None
    text_encoder_file: str = "text_encoder.safetensors"
    # The longest piece the collage gives the model (frames); None: the dataset's maximum clip length.
    max_piece_frames: Optional[int] = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_field_types(self, "args.json key ")
        name = self.text_encoder_file
        if not name or name != Path(name).name or name in (".", ".."):
            raise ValueError(f"text_encoder_file must be a file name beside the weights, got {name!r}")
        get_spec(self.dataset)  # raises on an unknown dataset
        if self.arch not in ARCHS:
            hint = " (the release defines it but never published a checkpoint)" if self.arch == "gru" else ""
            raise ValueError(f"unsupported arch {self.arch!r}{hint}; expected one of {list(ARCHS)}")
        if self.text_encoder_type not in TEXT_ENCODERS:
            raise ValueError(f"unknown text_encoder_type {self.text_encoder_type!r}; "
                             f"expected one of {list(TEXT_ENCODERS)}")
        if self.text_encoder_type == "bert" and self.arch != "trans_dec":
            raise ValueError(f"text_encoder_type 'bert' needs arch 'trans_dec' (its token sequence is the "
                             f"cross-attention memory), got arch {self.arch!r}")
        if self.text_encoder_type == "bow" and self.text_feature_dim is None:
            raise ValueError("text_encoder_type 'bow' needs 'text_feature_dim' in args.json (the width of the "
                             "bag-of-words feature)")
        if self.emb_policy != "add":
            raise ValueError(f"unsupported emb_policy {self.emb_policy!r}; only 'add' is implemented")
        if self.context_len or self.pred_len:
            raise ValueError(f"prefix-completion models (context_len={self.context_len}, "
                             f"pred_len={self.pred_len}) are not supported; use a text-to-motion checkpoint")
        if self.extra.get("unconstrained", False):
            raise ValueError("unconstrained (text-free) MDM models are not supported; use a text-conditioned one")
        for name in ("layers", "latent_dim", "ff_size", "num_heads", "diffusion_steps", "pos_embed_max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_piece_frames is not None and not 1 <= self.max_piece_frames <= self.spec.max_frames:
            raise ValueError(f"max_piece_frames must be in [1, {self.spec.max_frames}] (the {self.dataset} clip "
                             f"maximum), got {self.max_piece_frames}; remove the key to use the maximum")
        if self.latent_dim % self.num_heads:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.cond_mask_prob < 1.0:
            raise ValueError(f"cond_mask_prob must be in [0, 1), got {self.cond_mask_prob}")

    # ----------------------------------------------------------------- derived values
    @property
    def spec(self) -> DatasetSpec:
        """Constants of the dataset the model was trained on."""
        return get_spec(self.dataset)

    @property
    def piece_frames(self) -> int:
        """The longest piece to give the model: ``max_piece_frames``, else the dataset's maximum."""
        return self.spec.max_frames if self.max_piece_frames is None else int(self.max_piece_frames)

    @property
    def feature_dim(self) -> int:
        """Motion features per frame (263 for HumanML3D, 251 for KIT)."""
        return self.spec.feature_dim

    @property
    def text_dim(self) -> int:
        """Width of the text feature fed to ``embed_text``."""
        if self.text_feature_dim is not None:
            return int(self.text_feature_dim)
        return TEXT_FEATURE_DIMS[self.text_encoder_type]

    @property
    def guidance_enabled(self) -> bool:
        """Classifier-free guidance needs a model trained with text dropout."""
        return self.cond_mask_prob > 0

    # ----------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MDMArgs":
        """Build from a parsed ``args.json``; absent keys get defaults, unknown keys go to ``extra``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, path: str | Path) -> "MDMArgs":
        """Read an ``args.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"args.json not found at {path}; the release stores it next to the .pt file "
                                    f"(save/<model_name>/args.json): put it there")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); expected the args.json written by MDM training") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds a {type(values).__name__}, expected a JSON object of training arguments")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """All settings (known keys and ``extra``) as a JSON-ready dict."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(self.extra)
        return dict(sorted(out.items()))

    def to_json(self, path: str | Path) -> None:
        """Write the settings as a sorted ``args.json``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=4, sort_keys=True) + "\n")
