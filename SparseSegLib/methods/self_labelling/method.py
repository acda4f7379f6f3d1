"""The registered self-labelling methods: ``self-labelling``, ``self-labelling-faithful``, ``self-labelling-random``.

One class and its presets (:mod:`.presets`); cohort training (:mod:`.cohort`) and the worker job (:mod:`.job`) are
its two entry points. Configurations that were method names once (v1-v6, the ablations) are option sets of these
(:data:`~.presets.RETIRED_NAMES`), not registry entries: a user chooses a method, not a version of one.
"""

from __future__ import annotations

import numpy as np

from ...case import Case
from ...engine.model import Segmenter
from ...engine.networks import NetworkConfig, build_network, default_patch_size
from ...engine.spacing import training_spacing
from ...engine.trainer import seed_everything
from ...errors import SparseSegError
from ..base import MethodOptions, register
from ..common import class_names_of
from .cohort import CohortTraining
from .job import JobRounds
from .presets import FAITHFUL, IMPROVED, RANDOM
from .settings import Settings, labelling_alone, resolve_settings


@register("self-labelling")
class SelfLabelling(CohortTraining, JobRounds):
    """Incremental 2D self-labelling with our improved settings; ``preset`` selects the settings of a variant."""

    preset: dict = IMPROVED
    summary = ("incremental 2D self-labelling, our improved default (multi-class, Dice+CE, 2.5D, refreshed pseudo-labels "
               "weighted by distance, registered onto each new slice from its neighbour, uncertain pixels ignored, "
               "three-axis fusion re-labelling the pseudo-labels, largest component + hole filling; for cohorts two runs "
               "labelling together; epochs three times the budget's)")

    def settings(self, options: MethodOptions) -> Settings:
        """The preset, the budget's schedule, then the options (``--option``, a job's ``method_options``)."""
        return resolve_settings(self.preset, options)

    def job_settings(self, options: MethodOptions) -> Settings:
        """What a worker job runs with: one run, nothing labels with it (see :func:`labelling_alone`)."""
        return labelling_alone(self.settings(options))

    def check_options(self, options: MethodOptions) -> None:
        """Unknown or bad options fail here, before any data loads."""
        self.settings(options)

    def build(self, cases: list[Case], options: MethodOptions, settings: Settings) -> Segmenter:
        """A fresh segmenter with the paper's plain 2D U-Net (seeded), classes merged or native as ``settings`` say."""
        seed_everything(options.seed)
        if options.network.lower() != "2d":
            raise SparseSegError("self-labelling trains a 2D network", "Use --network 2d.")
        config = NetworkConfig(dims=2, channels=tuple(settings.channels), num_res_units=0, dropout=settings.dropout,
                               norm="none", context_slices=settings.context, arch="plain")
        largest = tuple(int(v) for v in np.max([case.image.shape for case in cases], axis=0))
        patch = tuple(options.patch_size) if options.patch_size else default_patch_size(largest, config)
        names = class_names_of(cases)
        colors: dict[int, tuple] = {}
        for case in cases:
            colors.update(case.class_colors)
        if settings.classes == "merged":
            names = {1: " + ".join(names.values()) if names else "Foreground"}
            colors = {1: colors[min(colors)]} if colors else {}
        return Segmenter(network=build_network(config, max(names, default=0) + 1), network_config=config,
                         patch_size=patch, class_names=names, normalization=settings.normalization, method=self.name,
                         class_colors=colors, postprocess=settings.postprocess,
                         spacing=training_spacing(case.geometry.spacing_kji for case in cases))


@register("self-labelling-faithful")
class SelfLabellingFaithful(SelfLabelling):
    preset = FAITHFUL
    summary = "incremental 2D self-labelling as in Anderson et al. 2025 (binary, frozen pseudo-labels)"


@register("self-labelling-random")
class SelfLabellingRandom(SelfLabelling):
    preset = RANDOM
    summary = "faithful self-labelling adding random slices (paper's random expansion)"
