"""A tiny synthetic HumanML3D-layout dataset and a tiny random evaluator, for the benchmark tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eval.data import write_folder
from eval.evaluator import Evaluator, EvaluatorConfig
from eval.text_processing import RuleBasedTagger, WordVectors
from motion_core.normalization import EvaluatorStats

CAPTIONS = [
    ("a person walks forward", "a/DET person/NOUN walk/VERB forward/ADV"),
    ("a person runs", "a/DET person/NOUN run/VERB"),
    ("a person waves the right hand", "a/DET person/NOUN wave/VERB the/DET right/ADJ hand/NOUN"),
    ("a person jumps", "a/DET person/NOUN jump/VERB"),
    ("a person bows", "a/DET person/NOUN bow/VERB"),
]
WORDS = "sos eos unk a person walk forward run wave the right hand jump bow".split()


def build_dataset(root: Path, test_clips: int = 40, seed: int = 0) -> Path:
    """Clips of 40..130 frames with small random features; ``test_clips`` in the test split."""
    rng = np.random.default_rng(seed)
    motions, texts, splits = {}, {}, {"train": [], "val": [], "test": []}
    for n in range(test_clips + 6):
        frames = int(rng.integers(40, 131))
        k = n % len(CAPTIONS)
        m = 0.02 * rng.normal(size=(frames, 263))
        m[:, 3] += 0.9                                          # root height
        m[:, 20 * k: 20 * k + 20] += 0.05 * np.sin(0.3 * (k + 1) * np.arange(frames))[:, None]
        clip_id = f"{n:06d}"
        motions[clip_id] = m
        texts[clip_id] = [f"{c}#{t}#0.0#0.0" for c, t in (CAPTIONS[k], CAPTIONS[(k + 1) % len(CAPTIONS)])]
        splits["test" if n < test_clips else ("train" if n % 2 else "val")].append(clip_id)
    return write_folder(root, motions, texts, splits, np.zeros(263), np.full(263, 0.05))


def build_evaluator(folder: Path, data: Path, seed: int = 0) -> Path:
    """A random small evaluator saved in our format, its config naming ``data`` as training data."""
    torch.manual_seed(seed)
    config = EvaluatorConfig(word_dim=6, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12,
                             embed_dim=5, tagger="rule")
    vectors = WordVectors.from_words(WORDS, np.random.default_rng(seed).normal(size=(len(WORDS), 6)))
    model = Evaluator(config, vectors, RuleBasedTagger(vectors.index.keys()),
                      EvaluatorStats(np.zeros(263), np.full(263, 0.05))).eval()
    model.save(folder, {"training": {"data": str(data)}})
    return folder
