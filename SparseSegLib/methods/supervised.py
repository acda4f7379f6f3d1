"""The two baselines every benchmark reports.

``sparse-only`` trains the network on the annotated voxels alone (the papers' "central slices only" /
FS-LCS): what you get without any propagation. ``full`` trains on every voxel's label: the upper
bound a sparse method tries to approach. Both use the same network and schedule as the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from ..case import Case
from ..errors import SparseSegError
from .base import MethodOptions, Reporter, RoundResult, register
from .common import RoundLoop, fit, new_segmenter, sparse_training_volume


def no_method_options(name: str, options: MethodOptions) -> None:
    """The baselines take no method options: say so instead of silently ignoring one."""
    if options.extra:
        raise SparseSegError(f"{name} takes no method options (got {', '.join(sorted(options.extra))})",
                             "Leave out --option / method_options for this method.")


@register("sparse-only")
class SparseOnly:
    summary = "network trained on the annotated voxels only (no propagation): the lower baseline"

    def check_options(self, options: MethodOptions) -> None:
        no_method_options(self.name, options)

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        no_method_options(self.name, options)
        segmenter = new_segmenter(cases, options, self.name)
        volumes = [sparse_training_volume(case, options.normalization) for case in cases]
        segmenter.training = fit(segmenter, volumes, options, reporter, self.name, validation)
        return segmenter

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """``options.rounds`` rounds of training the same network further, each streaming a prediction."""
        no_method_options(self.name, options)
        segmenter = new_segmenter(cases, options, self.name)
        yield from RoundLoop(self.name, segmenter, cases, options, reporter, should_stop).run(state)


@register("full")
class FullSupervision:
    summary = "network trained on the full label maps: the upper baseline (needs complete labels)"

    def check_options(self, options: MethodOptions) -> None:
        no_method_options(self.name, options)

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        no_method_options(self.name, options)
        full_cases = [replace(case, annotated=None) for case in cases]
        full_validation = [replace(case, annotated=None) for case in validation] if validation else None
        segmenter = new_segmenter(full_cases, options, self.name)
        volumes = [sparse_training_volume(case, options.normalization) for case in full_cases]
        segmenter.training = fit(segmenter, volumes, options, reporter, self.name, full_validation)
        return segmenter

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """As ``sparse-only``, on the full label maps."""
        no_method_options(self.name, options)
        full_cases = [replace(case, annotated=None) for case in cases]
        segmenter = new_segmenter(full_cases, options, self.name)
        yield from RoundLoop(self.name, segmenter, full_cases, options, reporter, should_stop).run(state)
