"""The two baselines every benchmark reports.

``sparse-only`` trains the network on the annotated voxels alone (the papers' "central slices only" /
FS-LCS): what you get without any propagation. ``full`` trains on every voxel's label: the upper
bound a sparse method tries to approach. Both use the same network and schedule as the methods.
"""

from __future__ import annotations

from dataclasses import replace

from ..case import Case
from .base import MethodOptions, Reporter, register
from .common import fit, new_segmenter, sparse_training_volume


@register("sparse-only")
class SparseOnly:
    summary = "network trained on the annotated voxels only (no propagation): the lower baseline"

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        segmenter = new_segmenter(cases, options, self.name)
        volumes = [sparse_training_volume(case, options.normalization) for case in cases]
        segmenter.training = fit(segmenter, volumes, options, reporter, self.name, validation)
        return segmenter


@register("full")
class FullSupervision:
    summary = "network trained on the full label maps: the upper baseline (needs complete labels)"

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        full_cases = [replace(case, annotated=None) for case in cases]
        full_validation = [replace(case, annotated=None) for case in validation] if validation else None
        segmenter = new_segmenter(full_cases, options, self.name)
        volumes = [sparse_training_volume(case, options.normalization) for case in full_cases]
        segmenter.training = fit(segmenter, volumes, options, reporter, self.name, full_validation)
        return segmenter
