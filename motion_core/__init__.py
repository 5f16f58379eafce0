"""Contracts shared by the engine (``motion_collage``) and the model adapter (``mdm_adapter``).

Both packages import this one; neither imports the other for its contracts.

- ``motion_core.spec``           :class:`DatasetSpec`: feature size, joints, fps, clip lengths
- ``motion_core.denoiser``       the piece- and sequence-denoiser protocols, :class:`PieceConditions`
- ``motion_core.normalization``  the model's and the evaluator's feature statistics (two types)
- ``motion_core.defaults``       default settings written once (guidance, overlap, steps, ...)
- ``motion_core.devices``        device and dtype names as users type them
- ``motion_core.openmp``         how idle OpenMP threads wait (set before torch is imported)
"""
