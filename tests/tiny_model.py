"""A tiny randomly initialised MDM in the default model's on-disk layout, for CLI/pipeline tests."""
from pathlib import Path

import numpy as np
import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.load import save_safetensors
from mdm_adapter.model import MDM
from mdm_adapter.text_bow import BagOfWordsEncoder

WORDS = ["person", "walks", "forward", "runs", "waves", "hand", "right", "left", "jumps", "bows"]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write model.safetensors, args.json, text_encoder.safetensors, Mean.npy, Std.npy; return the model path."""
    torch.manual_seed(seed)
    encoder = BagOfWordsEncoder(WORDS, torch.randn(len(WORDS), 4))
    args = MDMArgs(latent_dim=16, layers=1, ff_size=32, num_heads=2, text_encoder_type="bow",
                   text_feature_dim=encoder.feature_dim, mask_frames=True, diffusion_steps=100)
    net = MDM.from_args(args)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_safetensors(net, args, folder)
    encoder.save(folder / args.text_encoder_file)
    rng = np.random.default_rng(seed)
    np.save(folder / "Mean.npy", (rng.standard_normal(263) * 0.01).astype(np.float32))
    np.save(folder / "Std.npy", np.full(263, 0.05, dtype=np.float32))
    return path
