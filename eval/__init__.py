"""Evaluation foundations: the HumanML3D text-motion evaluator, its text pipeline, data and metrics.

- ``eval.evaluator``        Guo et al.'s matching networks (official ``finest.tar`` or our small one)
- ``eval.text_processing``  captions -> word vectors + POS one-hots (official rule, our fallback tagger)
- ``eval.data``             HumanML3D-layout folders -> (features, caption, tokens, length) items
- ``eval.metrics``          R-precision, MM-Dist, FID, diversity, multimodality, jerk, foot skating,
                            discontinuity (per-frame step), CIs
- ``eval.suites``           the benchmark suites, one module each (single, long, compose, loop)
- ``eval.benchmark``        ``python -m eval.benchmark --suite ...``: generate, cache, score, tables
- ``eval.train_evaluator``  ``python -m eval.train_evaluator --data DIR --out save/evaluator_bandai``

Submodules are imported on demand (``eval.metrics`` needs only numpy and scipy).
"""
