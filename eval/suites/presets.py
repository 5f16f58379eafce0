"""Protocol presets: the generation and scoring settings of each published table, in one place.

``python -m eval.benchmark --protocol NAME`` fills every setting the command line leaves unset
from the preset (a flag given explicitly wins, and the run then names the protocol as modified).
Each table header, ``results.json`` and ``run.log`` name the protocol.

===========  =====  ================================================================================
protocol     suite  reproduces / source
===========  =====  ================================================================================
mdm          single MDM (Tevet et al., ICLR 2023), HumanML3D text-to-motion table, as computed by the
                    release's ``eval/eval_humanml.py``: DDPM ancestral sampling over every trained step
                    of the checkpoint (``p_sample_loop``; 1000 steps for the paper models, 50 for the
                    50-step ones), guidance 2.5, batches of 32 (the release insists on 32 for
                    R-precision), 1024 captions per replication (``num_samples_limit`` 1000 -> 32
                    batches), lengths of the official evaluation crop, every caption padded to 196
                    frames and cropped afterwards (padding attended for models trained without a frame
                    mask, masked for ``mask_frames`` models: ``padding="checkpoint"``), diversity 300
                    pairs, MultiModality as the release's ``mm_short`` mode (``mm_num_samples`` 100 ->
                    100 // 32 + 1 = 4 batches = 128 captions, 30 generations each, 10 pairs), 20
                    replications (the release's ``wo_mm`` count; ``mm_short`` runs 5).
diffcollage  long   DiffCollage (Zhang et al., CVPR 2023) Table 3, long motions on HumanML3D: 24 s per
                    test caption, the same prompt on every node, DDIM 50 steps (eta 0) on the 1000-step
                    schedule, guidance 2.5, a random crop of the caption's clip length scored, batches of
                    32, 1024 captions, diversity 300 pairs, 20 replications.
flowmdm      compose FlowMDM (Barquero et al., CVPR 2024) Table 2, HumanML3D compositions, as computed by
                    its ``runners/eval.py --eval_mode final``: its scene file (``dataset/
                    humanml_test_set.json``: per scene ``text`` and ``lengths`` lists, read by
                    :mod:`eval.suites.flowmdm`; pass it with ``--scenes``), DDPM ancestral sampling
                    (``p_sample_loop``), guidance 2.5, transition window 60 frames, FlowMDM's jerk (3rd
                    difference, L1 over xyz, max over joints) with its real-data constant 0.033031363
                    (``GT_jerk`` in ``utils/metrics.py``), R-precision by its rule (distinct captions
                    per batch of 32, the last batch kept: ``r_precision="flowmdm"``), diversity 300
                    pairs (175 for the short scenes, 275 for the medium ones), 10 replications.
ours         any    this toolkit's faster defaults: DDIM 50 (eta 1), guidance 2.5, each clip at its own
                    length with padding masked, no MultiModality, 5 replications.
===========  =====  ================================================================================

Known differences that remain (stated in the README): the real reference takes one crop per test
clip (the release iterates its test loader, which also holds the captions' sub-clips), and FlowMDM
tags captions with spaCy (here the test split's own tokens of the matched caption).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from motion_core import defaults

FLOWMDM_REAL_JERK = 0.033031363       # FlowMDM utils/metrics.py, GT_jerk for HumanML3D
MDM_MM_BATCHES = 100 // 32 + 1        # eval_humanml mm_short: mm_num_samples // batch_size + 1
FLOWMDM_GROUP_DIVERSITY = {"short": 175, "medium": 275}   # runners/eval.py: groups with < 300 segments

# The benchmark's own settings a preset may set (command-line names).
BENCHMARK_SETTINGS = ("replications", "sampler", "steps", "eta", "guidance_param")
BENCHMARK_DEFAULTS = {"replications": 5, "sampler": defaults.SAMPLER, "steps": defaults.STEPS, "eta": defaults.ETA,
                      "guidance_param": defaults.GUIDANCE}


@dataclass(frozen=True)
class Preset:
    """One published protocol: the suite it runs (None: any), the benchmark's settings, the suite's
    settings, and where each value comes from."""

    name: str
    suite: Optional[str]
    source: str
    benchmark: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    required: Mapping[str, str] = field(default_factory=dict)     # setting -> what the user must give
    group_diversity: Mapping[str, int] = field(default_factory=dict)   # diversity pairs by scene group

    def values(self) -> dict[str, Any]:
        """Every setting the preset fixes (benchmark defaults included), by command-line name."""
        return {**BENCHMARK_DEFAULTS, **self.benchmark, **self.settings}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("mdm", "single",
           "MDM's HumanML3D table as its eval/eval_humanml.py computes it",
           {"replications": 20, "sampler": "ddpm", "steps": 1000, "eta": 0.0, "guidance_param": 2.5},
           {"samples_per_rep": 1024, "batch_size": 32, "r_precision_batch": 32, "diversity_pairs": 300,
            "lengths": "unit", "padding": "checkpoint", "mm_batches": MDM_MM_BATCHES, "mm_repeats": 30,
            "mm_pairs": 10}),
    Preset("diffcollage", "long",
           "DiffCollage Table 3 (24 s long motions on HumanML3D)",
           {"replications": 20, "sampler": "ddim", "steps": 50, "eta": 0.0, "guidance_param": 2.5},
           {"long_seconds": 24.0, "samples_per_rep": 1024, "batch_size": 32, "r_precision_batch": 32,
            "diversity_pairs": 300}),
    Preset("flowmdm", "compose",
           "FlowMDM Table 2 (HumanML3D compositions) as its runners/eval.py --eval_mode final computes it",
           {"replications": 10, "sampler": "ddpm", "steps": 1000, "eta": 0.0, "guidance_param": 2.5},
           {"transition_window": 60, "real_jerk": FLOWMDM_REAL_JERK, "diversity_pairs": 300,
            "r_precision_batch": 32, "r_precision": "flowmdm", "segments_per_scene": 32},
           {"scenes": "--scenes FILE: FlowMDM's scene file (dataset/humanml_test_set.json of its release, "
                      "a list of {\"text\": [...], \"lengths\": [...]} scenes)"},
           FLOWMDM_GROUP_DIVERSITY),
    Preset("ours", None, "this toolkit's defaults (faster; not a published table)"),
)}
DEFAULT_PROTOCOL = "ours"


def get_preset(name: str) -> Preset:
    """A preset by name; an unknown name lists the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; expected one of {list(PRESETS)}") from None


@dataclass(frozen=True)
class Resolved:
    """The settings of a run under a protocol: values by command-line name, the suite, and the
    preset values the command line replaced (``{name: (preset value, given value)}``)."""

    protocol: str
    suite: str
    values: dict[str, Any]
    modified: dict[str, tuple[Any, Any]]

    def label(self) -> str:
        """``mdm`` or ``mdm (modified: replications 5)``."""
        if not self.modified:
            return self.protocol
        changes = ", ".join(f"{k} {given}" for k, (_, given) in self.modified.items())
        return f"{self.protocol} (modified: {changes})"


def resolve(protocol: Optional[str], suite: Optional[str], given: Mapping[str, Any]) -> Resolved:
    """Fill the unset (None) values of ``given`` from the preset; ``suite`` None takes the preset's.

    A preset that runs one suite refuses another (ValueError naming both).
    """
    preset = get_preset(protocol or DEFAULT_PROTOCOL)
    if suite is None:
        if preset.suite is None:
            from .base import SUITES
            named = [p.name for p in PRESETS.values() if p.suite is not None]
            raise ValueError(f"protocol {preset.name!r} runs any suite; pass --suite (one of {list(SUITES)}) or a "
                             f"--protocol that names one ({named})")
        suite = preset.suite
    if preset.suite is not None and suite != preset.suite:
        raise ValueError(f"protocol {preset.name!r} is defined for the {preset.suite} suite, not {suite}; "
                         f"use --suite {preset.suite} or drop --protocol")
    values = dict(given)
    for key, what in preset.required.items():
        if values.get(key) is None:
            raise ValueError(f"protocol {preset.name!r} needs {what}")
    modified = {}
    fixed = preset.values()
    group = values.get("scene_group") or "all"
    if group in preset.group_diversity:
        fixed["diversity_pairs"] = preset.group_diversity[group]
    for key, value in fixed.items():
        if values.get(key) is None:
            values[key] = value
        elif preset.name != DEFAULT_PROTOCOL and values[key] != value:
            modified[key] = (value, values[key])
    return Resolved(preset.name, suite, values, modified)


def checkpoint_padding(model_path: str | Path) -> str:
    """``"masked"`` for a checkpoint trained with ``mask_frames`` (its attention hides padding),
    else ``"attended"`` (MDM's 2022 models): how the release's evaluation treats the padding."""
    from mdm_adapter.args import MDMArgs
    from mdm_adapter.load import resolve_checkpoint
    weights = resolve_checkpoint(model_path)
    return "masked" if MDMArgs.from_json(weights.parent / "args.json").mask_frames else "attended"
