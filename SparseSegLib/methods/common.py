"""Building blocks the methods share: network set-up, training volumes, validation, one fit."""

from __future__ import annotations

import json
from dataclasses import replace
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..case import Case
from ..engine.device import select_device
from ..engine.model import Segmenter
from ..engine.networks import NetworkConfig, build_network, default_patch_size
from ..engine.preprocessing import normalize
from ..engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ..engine.spacing import training_spacing
from ..engine.trainer import (TrainConfig, progress_interval, restore_torch_random_state, seed_everything,
                              torch_random_state, train_network)
from ..errors import SparseSegError
from ..metrics import foreground_dices
from .base import MethodOptions, Reporter, RoundResult


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
        spacing=training_spacing(case.geometry.spacing_kji for case in cases),
    )


def sparse_training_volume(case: Case, normalization: str) -> TrainingVolume:
    """The case as a method may train on it: ground truth where annotated, unknown elsewhere."""
    return TrainingVolume(normalize(case.image, normalization), case.sparse_label(UNKNOWN))


def annotated_dice(segmenter: Segmenter, cases: list[Case], device) -> float:
    """Mean foreground Dice over the annotated voxels of ``cases`` (validation on sparse labels)."""
    from ..distributed.collectives import map_shared

    def scores_of(case: Case) -> list[float]:
        predicted, _ = segmenter.predict(case.image, device)
        return foreground_dices(predicted, case.label, segmenter.num_classes, known=case.annotated)

    # under torchrun each rank scores its share and all get every score, so all take the same decisions from it
    scores = [score for per_case in map_shared(scores_of, cases) for score in per_case]
    return float(np.mean(scores)) if scores else 0.0


def patch_sampler(segmenter: Segmenter, volumes: list[TrainingVolume], options: MethodOptions, seed: int) -> PatchSampler:
    """The patch sampler every method trains with: the segmenter's network shape and patch, the options' augmentation."""
    from ..distributed.context import sampler_seed

    config = segmenter.network_config
    return PatchSampler(volumes, config.dims, segmenter.patch_size, context_slices=config.context_slices,
                        augment=options.augment, seed=sampler_seed(seed))


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
    """Train ``segmenter`` on ``volumes`` in one go; returns a summary for the model's training record."""
    schedule = options.schedule(segmenter.network_config.dims)
    iterations = iterations or schedule["iterations"]
    started = time.perf_counter()
    losses, config = train_round(segmenter, patch_sampler(segmenter, volumes, options, options.seed), options, reporter,
                                 stage, iterations, select_device(options.device), should_stop, validation)
    return {"stage": stage, "train": config.to_dict(), "final_loss": float(np.mean(losses[-25:])),
            "losses": [round(loss, 6) for loss in losses], "seconds": round(time.perf_counter() - started, 3)}


# --------------------------------------------------------------------------------------------------
# Rounds: one network trained round by round, a full-volume prediction streamed after each round

#: Version of the state dict :class:`RoundLoop` produces.
ROUND_STATE_FORMAT = 1


def network_snapshot(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``network``'s weights that later training cannot change."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


class RoundLoop:
    """Train one segmenter for ``options.rounds`` rounds; after each, predict every case whole.

    Round ``r``: (1) :meth:`training_volumes` gives the targets; (2) the network trains
    ``options.round_iterations(dims)`` more iterations on them (``train_network``, which polls
    ``should_stop`` each step); (3) every case is predicted in full; (4) a :class:`RoundResult` with
    :meth:`round_metrics` and a state snapshot is yielded.

    The baselines keep the sparse ground truth as the target of every round, so the rounds are
    snapshots of ever longer training. Gradual and self-labelling methods plug in by subclassing:

    * :meth:`training_volumes` ``(index, previous)`` returns new :class:`TrainingVolume` s for round
      ``index`` built from ``previous`` (the last :class:`RoundResult`: labels and probabilities per
      case), e.g. ground truth plus confident pseudo-labels of the slices next to the annotated ones;
      return None to keep training on the current volumes (and the same patch sampler stream). After
      a resume the loop rebuilds "the current volumes" with :meth:`resume_volumes` (default: the sparse
      ground truth) and restores the sampler's random stream.
    * :meth:`method_state` / :meth:`load_method_state`: the method's own resumable state (plain data
      and tensors only), saved with each round.
    * :meth:`round_metrics`: figures for the round's record (e.g. pseudo-labelled voxels).
    * ``needs_previous_on_resume = True`` when :meth:`training_volumes` needs ``previous`` after a
      resume; it is then rebuilt by predicting the cases with the restored network.

    Optimiser: ``train_network`` builds its own Adam and polynomial learning-rate decay per call, so
    every round is a warm restart of the optimiser over that round's iterations. The state therefore
    carries ``"optimizer": None``; resuming is still exact (CPU) because an uninterrupted run also starts
    each round with a fresh optimiser. The patch sampler's random stream and torch's RNG do carry over.
    """

    needs_previous_on_resume = False

    def __init__(self, name: str, segmenter: Segmenter, cases: list[Case], options: MethodOptions, reporter: Reporter,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.segmenter = segmenter
        self.cases = cases
        self.options = options
        self.reporter = reporter
        self.should_stop = should_stop
        self.device = select_device(options.device)
        self.sampler: PatchSampler | None = None
        self.last_loss: float | None = None
        self._sampler_rng: str | None = None

    # -- plug-in points -------------------------------------------------------------------------

    def training_volumes(self, index: int, previous: RoundResult | None) -> list[TrainingVolume] | None:
        """Targets for round ``index`` (None: keep the current ones); default: the sparse ground truth."""
        return self.ground_truth_volumes() if index == 1 else None

    def resume_volumes(self) -> list[TrainingVolume]:
        """After a resume, the volumes the last round trained on (when :meth:`training_volumes` keeps them)."""
        return self.ground_truth_volumes()

    def ground_truth_volumes(self) -> list[TrainingVolume]:
        return [sparse_training_volume(case, self.options.normalization) for case in self.cases]

    def method_state(self) -> dict:
        """The subclass's own resumable state (tensors and plain data)."""
        return {}

    def load_method_state(self, state: dict) -> None:
        """Restore what :meth:`method_state` returned."""

    def round_metrics(self, index: int, labels: dict[str, np.ndarray]) -> dict:
        """The method's figures for round ``index``."""
        return {}

    # -- the loop -------------------------------------------------------------------------------

    def new_sampler(self, volumes: list[TrainingVolume], index: int) -> PatchSampler:
        # Round 1 uses the options' seed as ``fit`` does; later new samplers get their own stream.
        seed = self.options.seed if index <= 1 else self.options.seed * 1000 + index
        return patch_sampler(self.segmenter, volumes, self.options, seed)

    def predict(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        labels, probabilities = {}, {}
        for case in self.cases:
            labels[case.case_id], probabilities[case.case_id] = self.segmenter.predict(case.image, self.device)
        return labels, probabilities

    def state(self, index: int) -> dict:
        return {
            "format": ROUND_STATE_FORMAT,
            "method": self.name,
            "round": index,
            "rounds": int(self.options.rounds),
            "network": network_snapshot(self.segmenter.network),
            "optimizer": None,  # train_network owns its optimiser (see the class doc)
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state) if self.sampler is not None else None,
            **torch_random_state(),
            "last_loss": self.last_loss,
            "method_state": self.method_state(),
        }

    def restore(self, state: dict) -> int:
        """Load a state from an earlier round; returns its round index."""
        if int(state.get("format", 0)) != ROUND_STATE_FORMAT or state.get("method") != self.name:
            raise SparseSegError(
                f"the checkpoint is from method {state.get('method')!r} (format {state.get('format')}), not {self.name!r}",
                "Resume with the job that wrote it, or start the job again in a new folder.",
            )
        try:
            self.segmenter.network.load_state_dict(state["network"])
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit this network ({str(error).splitlines()[0][:160]})",
                                 "The job's network settings changed since it was written; start again in a new folder.") from None
        restore_torch_random_state(state)
        self.last_loss = state.get("last_loss")
        self.load_method_state(state.get("method_state") or {})
        self._sampler_rng = state.get("sampler_rng")
        return int(state["round"])

    def run(self, state: dict | None = None) -> Iterator[RoundResult]:
        total = int(self.options.rounds)
        done = self.restore(state) if state is not None else 0
        dims = self.segmenter.network_config.dims
        iterations = self.options.round_iterations(dims)
        previous: RoundResult | None = None
        if done and self.needs_previous_on_resume and done < total:
            labels, probabilities = self.predict()
            previous = RoundResult(done, total, labels, probabilities)
        for index in range(done + 1, total + 1):
            started = time.perf_counter()
            volumes = self.training_volumes(index, previous)
            if volumes is not None:
                self.sampler = self.new_sampler(volumes, index)
            elif self.sampler is None:  # resumed: rebuild the sampler an uninterrupted run would still use
                self.sampler = self.new_sampler(self.resume_volumes(), index)
                if self._sampler_rng:
                    self.sampler.rng.bit_generator.state = json.loads(self._sampler_rng)
            stage = f"{self.name} round {index}/{total}"
            losses, _ = train_round(self.segmenter, self.sampler, self.options, self.reporter, stage, iterations,
                                 self.device, self.should_stop)
            self.last_loss = float(np.mean(losses[-25:])) if losses else None
            labels, probabilities = self.predict()
            metrics = {"iterations": iterations, "iterations_total": iterations * index, "loss": self.last_loss,
                       "batch_size": self.options.schedule(dims)["batch_size"],
                       "patch_size": list(self.segmenter.patch_size),
                       "seconds": round(time.perf_counter() - started, 3), **self.round_metrics(index, labels)}
            previous = RoundResult(index, total, labels, probabilities, metrics=metrics, state=self.state(index))
            yield previous


def train_round(
    segmenter: Segmenter,
    sampler: PatchSampler,
    options: MethodOptions,
    reporter: Reporter,
    stage: str,
    iterations: int,
    device,
    should_stop: Callable[[], bool] | None = None,
    validation: list[Case] | None = None,
) -> tuple[list[float], TrainConfig]:
    """Train ``iterations`` more steps on ``sampler`` (kept across rounds, so its stream continues).

    With ``validation`` cases and ``options.validate_every``, the best-validating weights are kept.
    Returns the per-step losses and the configuration that ran.
    """
    config = TrainConfig(
        iterations=iterations,
        batch_size=options.schedule(segmenter.network_config.dims)["batch_size"],
        learning_rate=options.learning_rate,
        log_every=progress_interval(iterations),
    )
    validate = None
    if validation and options.validate_every:
        validate = lambda: annotated_dice(segmenter, validation, device)  # noqa: E731
    reporter.log(f"{stage}: {config.iterations} iterations, batch {config.batch_size}, patch {segmenter.patch_size}, "
                 f"{sampler.labelled_voxels} labelled voxels, device {device.type}")
    from ..distributed.context import current

    if current() is not None:
        from ..distributed.training import describe_step

        reporter.log(f"{stage}: {describe_step(current(), config.batch_size, config.learning_rate)}")
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
    return losses, config


def across_axis(segmenter: Segmenter, axis: int, cases: list[Case], options: MethodOptions) -> Segmenter:
    """``segmenter`` whose 2D network runs across array ``axis`` (3D networks and axis 0: unchanged).

    The in-plane patch is sized from the moved volumes unless the options give one, and per-slice z-scoring
    follows the slices (``zscore-slice`` -> ``zscore-slice-AXIS``), as a job trained across that axis needs.
    """
    if segmenter.network_config.dims != 2 or axis == 0:
        return segmenter
    config = replace(segmenter.network_config, axes=(int(axis),), swap_in_plane=())
    patch = segmenter.patch_size
    if not options.patch_size:
        order = (axis,) + tuple(a for a in range(3) if a != axis)
        largest = tuple(int(max(c.image.shape[a] for c in cases)) for a in order)
        patch = default_patch_size(largest, config)
    normalization = f"zscore-slice-{axis}" if segmenter.normalization == "zscore-slice" else segmenter.normalization
    return replace(segmenter, network_config=config, patch_size=patch, normalization=normalization)
