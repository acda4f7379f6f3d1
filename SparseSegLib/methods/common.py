"""Building blocks the methods share: network set-up, training volumes, validation, one fit."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..case import Case
from ..engine.device import select_device
from ..engine.model import Segmenter
from ..engine.networks import NetworkConfig, build_network, default_patch_size
from ..engine.preprocessing import normalize
from ..engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ..engine.trainer import TrainConfig, seed_everything, train_network
from ..errors import SparseSegError
from .base import MethodOptions, Reporter


def class_names_of(cases: list[Case]) -> dict[int, str]:
    """Class names of a cohort: the named classes, plus any label value present without a name."""
    names: dict[int, str] = {}
    for case in cases:
        names.update(case.class_names)
    largest = max([max(names, default=0)] + [case.num_classes - 1 for case in cases])
    return {value: names.get(value, f"Class {value}") for value in range(1, largest + 1)}


def new_segmenter(cases: list[Case], options: MethodOptions, method: str, network: NetworkConfig | None = None) -> Segmenter:
    """An untrained segmenter sized for ``cases`` (patch covers the largest volume up to a cap)."""
    seed_everything(options.seed)
    network_config = network or NetworkConfig.preset(options.network)
    largest = tuple(int(v) for v in np.max([case.image.shape for case in cases], axis=0))
    patch = tuple(options.patch_size) if options.patch_size else default_patch_size(largest, network_config)
    if len(patch) != network_config.dims or any(p % network_config.size_multiple for p in patch):
        raise SparseSegError(
            f"patch size {patch} does not fit a {network_config.dims}D network",
            f"Give {network_config.dims} sizes, each a multiple of {network_config.size_multiple}.",
        )
    names = class_names_of(cases)
    colors: dict[int, tuple] = {}
    for case in cases:
        colors.update(case.class_colors)
    return Segmenter(
        network=build_network(network_config, max(names, default=0) + 1),
        network_config=network_config,
        patch_size=patch,
        class_names=names,
        normalization=options.normalization,
        method=method,
        class_colors=colors,
    )


def sparse_training_volume(case: Case, normalization: str) -> TrainingVolume:
    """The case as a method may train on it: ground truth where annotated, unknown elsewhere."""
    return TrainingVolume(normalize(case.image, normalization), case.sparse_label(UNKNOWN))


def annotated_dice(segmenter: Segmenter, cases: list[Case], device) -> float:
    """Mean foreground Dice over the annotated voxels of ``cases`` (validation on sparse labels)."""
    scores = []
    for case in cases:
        predicted, _ = segmenter.predict(case.image, device)
        mask = np.ones(case.image.shape, bool) if case.annotated is None else case.annotated
        truth, guess = case.label[mask], predicted[mask]
        for value in range(1, segmenter.num_classes):
            denominator = np.count_nonzero(truth == value) + np.count_nonzero(guess == value)
            if denominator:
                scores.append(2.0 * np.count_nonzero((truth == value) & (guess == value)) / denominator)
    return float(np.mean(scores)) if scores else 0.0


def fit(
    segmenter: Segmenter,
    volumes: list[TrainingVolume],
    options: MethodOptions,
    reporter: Reporter,
    stage: str,
    validation: list[Case] | None = None,
    should_stop: Callable[[], bool] | None = None,
    iterations: int | None = None,
) -> dict:
    """Train ``segmenter`` on ``volumes``; returns a summary for the model's training record."""
    device = select_device(options.device)
    dims = segmenter.network_config.dims
    schedule = options.schedule(dims)
    config = TrainConfig(
        iterations=iterations or schedule["iterations"],
        batch_size=schedule["batch_size"],
        learning_rate=options.learning_rate,
    )
    sampler = PatchSampler(
        volumes,
        dims,
        segmenter.patch_size,
        context_slices=segmenter.network_config.context_slices,
        augment=options.augment,
        seed=options.seed,
    )
    validate = None
    if validation and options.validate_every:
        validate = lambda: annotated_dice(segmenter, validation, device)  # noqa: E731
    reporter.log(
        f"{stage}: {config.iterations} iterations, batch {config.batch_size}, patch {segmenter.patch_size}, "
        f"{sampler.labelled_voxels} labelled voxels, device {device.type}"
    )
    losses = train_network(
        segmenter.network,
        sampler,
        config,
        device,
        progress=lambda step, total, loss, sps: reporter.progress(stage, step, total, loss, sps),
        should_stop=should_stop,
        validate=validate,
        validate_every=options.validate_every,
    )
    segmenter.network.cpu()
    return {"stage": stage, "train": config.to_dict(), "final_loss": float(np.mean(losses[-25:]))}
