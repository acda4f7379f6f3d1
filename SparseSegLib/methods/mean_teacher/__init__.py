"""``mean-teacher`` and ``ua-mt``: a student trained on labelled voxels, a teacher (EMA of the student) whose
predictions on unlabelled voxels the student must match (Tarvainen & Valpola 2017; Yu et al., MICCAI 2019).

UA-MT keeps only the voxels where the teacher is certain: the entropy of its mean prediction over ``passes``
stochastic passes (dropout + input noise) must be below a threshold that rises from 0.75 ln 2 to ln 2.

Two settings through the same code (:mod:`.data`): semi-supervised (``labelled=N`` fully labelled volumes, the
rest unlabelled: the papers') and sparse (every volume's annotated slices or boxes labelled, the rest of every
volume unlabelled: SparseSeg's). The seed's SimpleITK preprocessing (:mod:`SparseSegLib.engine.sitk_preprocessing`)
is on by default (``preprocessing=false`` to compare). As a worker job the one scan's annotated voxels are the
labelled data and everything else the unlabelled, and each streamed round carries the teacher's uncertainty map.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from ...case import Case
from ...engine.device import select_device
from ...engine.postprocess import object_count
from ...engine.spacing import training_spacing
from ...engine.trainer import seed_everything
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter, RoundResult, register
from ..common import class_names_of
from .data import BatchSource, PreparedVolume, prepare, semi_supervised_split
from .network import build_student, network_config
from .predict import CroppingSegmenter, teacher_uncertainty
from .settings import ITERATIONS, JOB_ITERATIONS, MeanTeacherSettings, run_settings
from .training import MeanTeacherTrainer

STATE_FORMAT = 1
#: Rounds of a worker job that leaves the count to the method.
JOB_ROUNDS = 3
#: Largest default patch per axis (k, j, i): the reference's 112x112x80 crops ("paper"), 64^3 on a CPU ("quick").
PATCH_CAP = {"paper": (80, 112, 112), "quick": (64, 64, 64)}
#: Largest default in-plane patch of the 2D form (``dims=2``), either budget: the reference's in-plane crop; a
#: slice costs little, so the CPU budget keeps it too.
PATCH_CAP_2D = (112, 112)


def default_patch(volumes: list[PreparedVolume], options: MethodOptions, multiple: int, dims: int = 3) -> tuple[int, ...]:
    """The network's window: the options' patch, else the largest volume (in-plane for 2D) rounded up to
    ``multiple``, capped per axis by the budget. 3 sizes for the 3D network, 2 (in-plane) for the 2D one."""
    largest = np.max([v.image.shape for v in volumes], axis=0)[3 - dims:]
    whole = tuple(int(math.ceil(n / multiple) * multiple) for n in largest)
    if options.patch_size:
        patch = tuple(int(p) for p in options.patch_size)
    else:
        patch = patch_cap(options.budget, dims)
    if len(patch) != dims or any(p % multiple for p in patch):
        raise SparseSegError(f"patch size {patch} does not fit this {dims}D network",
                             f"Give {dims} sizes{' (in-plane)' if dims == 2 else ''}, each a multiple of {multiple}.")
    # A window larger than every prepared volume would only add padding (and memory): this also keeps the
    # out-of-memory retry, which halves the cap without seeing the volumes, from growing a small volume's patch.
    return tuple(min(w, max(multiple, p // multiple * multiple)) for w, p in zip(whole, patch))


def patch_cap(budget: str, dims: int) -> tuple[int, ...]:
    """The largest default window: 3 sizes (k, j, i) for the 3D network, 2 (in-plane) for the 2D form."""
    return tuple(PATCH_CAP[budget]) if dims == 3 else tuple(PATCH_CAP_2D)


class _MeanTeacherBase:
    """What both methods share; ``uncertainty_aware`` says which one a subclass is."""

    uncertainty_aware = False

    def check_options(self, options: MethodOptions) -> None:
        """The method's network is the seed's 3D U-Net, or its 2D form with ``dims=2``, whatever ``--network`` says
        (the bench's default is 2d, which would otherwise silently change the method)."""
        MeanTeacherSettings.parse(options.extra)

    def trained_network(self, options: MethodOptions) -> str:
        """``3d``, or ``2d`` with ``dims=2`` (the bench labels runs with it)."""
        return f"{MeanTeacherSettings.parse(options.extra).dims}d"

    def memory_settings(self, options: MethodOptions) -> tuple[int, tuple[int, ...], int]:
        """The patches per step (labelled + unlabelled), the window and the multiple its sizes keep, which the
        worker halves after running out of GPU memory (:func:`~SparseSegLib.worker.memory.reduce_memory`). The
        window is the options' or the cap for the method's own network (3 sizes, or 2 with ``dims=2``, whatever
        ``--network`` says): the prepared volumes are not known here, and :func:`default_patch` clips the halved
        window to them."""
        settings = run_settings(options)
        config = network_config(settings.channels, settings.num_res_units, settings.dims)
        patch = tuple(int(p) for p in options.patch_size) if options.patch_size else patch_cap(options.budget,
                                                                                               settings.dims)
        return settings.labelled_batch + settings.unlabelled_batch, patch, config.size_multiple

    def _setup(self, cases: list[Case], options: MethodOptions, reporter: Reporter):
        settings = run_settings(options)
        seed_everything(options.seed)
        seen = semi_supervised_split(cases, settings.labelled, options.seed)
        volumes = [prepare(case, settings, options.normalization) for case in seen]
        config = network_config(settings.channels, settings.num_res_units, settings.dims)
        patch = default_patch(volumes, options, config.size_multiple, settings.dims)
        names = class_names_of(cases)
        colors: dict[int, tuple] = {}
        for case in cases:
            colors.update(case.class_colors)
        segmenter = CroppingSegmenter(
            network=build_student(config, max(names, default=0) + 1, settings.dropout), network_config=config,
            patch_size=patch, class_names=names, normalization="sitk" if settings.preprocessing else options.normalization,
            method=self.name, class_colors=colors, margin=settings.margin,
            spacing=training_spacing(case.geometry.spacing_kji for case in cases))
        labelled = sum(int(np.any(v.target >= 0)) for v in volumes)
        complete = all(bool(np.all(v.target >= 0)) for v in volumes)
        setting = "semi-supervised" if settings.labelled else "fully labelled" if complete else "sparse"
        reporter.log(f"{self.name}: {labelled} of {len(volumes)} volumes with labels ({setting} setting), "
                     f"{settings.dims}D network, patch {patch}, "
                     f"preprocessing {'SimpleITK' if settings.preprocessing else options.normalization}")
        return settings, volumes, segmenter

    def _iterations(self, options: MethodOptions, table: dict[str, int] = ITERATIONS) -> int:
        """``--iterations``, else the ``table``'s for the budget (a cohort's :data:`ITERATIONS`, a job's
        :data:`JOB_ITERATIONS`)."""
        return int(options.iterations or table[options.budget])

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        """A cohort model: the student after the whole schedule (the reference keeps the last, not the best)."""
        settings, volumes, segmenter = self._setup(cases, options, reporter)
        iterations = self._iterations(options)
        device = select_device(options.device)
        trainer = MeanTeacherTrainer(segmenter.network, settings, iterations, segmenter.num_classes,
                                     self.uncertainty_aware, device)
        started = time.perf_counter()
        source = BatchSource(volumes, segmenter.patch_size, settings, options.seed)
        losses = trainer.run(source, iterations, reporter, self.name)
        segmenter.network.cpu().eval()
        segmenter.training = {"stage": self.name, "iterations": iterations, "settings": settings.to_dict(),
                              "final_loss": float(np.mean(losses[-25:])), "seconds": time.perf_counter() - started,
                              "history": trainer.history[-40:]}
        return segmenter

    # -- a worker job: one scan, rounds streamed --------------------------------------------------

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict):
        """Save model: the student of a job's newest round, built as the job built it (network, patch, crop)."""
        from ..base import SilentReporter

        _, _, segmenter = self._setup(cases, options, SilentReporter())
        try:
            segmenter.network.load_state_dict(state["network"])
        except (KeyError, RuntimeError) as error:
            raise SparseSegError(f"the checkpoint does not fit this job's {self.name} network ({str(error)[:160]})",
                                 "The job's options changed since the checkpoint was written; run the job again.") from None
        segmenter.network.cpu().eval()
        if state.get("objects"):
            # as the job's rounds, the largest parts only: on another scan there is no paint to anchor at, so as many
            # parts as the job's last result held (a left and a right structure stay two)
            segmenter = replace(segmenter, postprocess="lcc", objects=int(state["objects"]))
        return segmenter

    def planned_rounds(self, case: Case, options: MethodOptions, state: dict | None = None) -> int:
        return int(state.get("rounds", JOB_ROUNDS)) if state else JOB_ROUNDS

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """Rounds of training on the scans' annotated voxels (the rest unlabelled); each round predicts every scan
        with the student and maps the teacher's uncertainty (normalised entropy of ``uncertainty_passes``)."""
        settings, volumes, segmenter = self._setup(cases, options, reporter)
        if settings.labelled is not None:
            raise SparseSegError("labelled=N applies to a cohort, not to a job", "Leave out the labelled option.")
        rounds = int(options.rounds or JOB_ROUNDS)
        per_round = int(options.iterations_per_round or math.ceil(self._iterations(options, JOB_ITERATIONS) / rounds))
        device = select_device(options.device)
        trainer = MeanTeacherTrainer(segmenter.network, settings, per_round * rounds, segmenter.num_classes,
                                     self.uncertainty_aware, device)
        source = BatchSource(volumes, segmenter.patch_size, settings, options.seed)
        done = 0
        if state is not None:
            if int(state.get("format", 0)) != STATE_FORMAT or state.get("method") != self.name:
                raise SparseSegError(f"the checkpoint is from {state.get('method')!r}, not {self.name!r}",
                                     "Resume with the job that wrote it, or start again in a new folder.")
            trainer.load_state(state["trainer"])
            source.rng.bit_generator.state = json.loads(state["rng"][0])
            source.labelled.rng.bit_generator.state = json.loads(state["rng"][1])
            done = int(state["round"])
            per_round = resumed_iterations_per_round(options, state, trainer.step)
            # the schedules (learning rate, consistency ramp) stretch over the rounds added: a Continue's rounds train
            # (before, the budget was split over the longer stage anew, so every added round's target step lay
            # behind the checkpoint's and a Continue trained 0 iterations: the corrected slices changed nothing)
            trainer.iterations = trainer.step + per_round * (rounds - done)
        first_step = trainer.step
        # the streamed labels keep the parts holding painted object, as self-labelling's and propagate's do: the
        # student trained on one scan labels look-alike tissue all over it (hippocampus dev scans: 1-162 parts, merged
        # Dice 0.29-0.56 raw against 0.29-0.61 anchored on the thirty-third session's rounds); a saved model keeps
        # as many of the largest parts as the last round held (``objects`` in the round state)
        anchored = replace(segmenter, postprocess="lcc")
        painted = {case.case_id: case.sparse_label() > 0 for case in cases}
        for index in range(done + 1, rounds + 1):
            started = time.perf_counter()
            losses = trainer.run(source, first_step + per_round * (index - done), reporter,
                                 f"{self.name} round {index}/{rounds}", should_stop)
            labels, probabilities, uncertainty = {}, {}, {}
            for case in cases:
                probabilities[case.case_id] = segmenter.probabilities(case.image, device)
                labels[case.case_id] = anchored.labels(probabilities[case.case_id], anchor=painted[case.case_id])
                if trainer.teacher is not None:
                    uncertainty[case.case_id] = teacher_uncertainty(trainer.teacher, segmenter, case.image,
                                                                    settings.uncertainty_passes, settings.noise, device)
            last = trainer.history[-1] if trainer.history else {}
            metrics = {"iterations": per_round, "iterations_total": trainer.step,
                       "loss": float(np.mean(losses[-25:])) if losses else None,
                       "consistency_weight": last.get("weight"), "threshold": last.get("threshold"),
                       "certain": last.get("certain"), "seconds": round(time.perf_counter() - started, 3)}
            round_state = {"format": STATE_FORMAT, "method": self.name, "round": index, "rounds": rounds,
                           "iterations_per_round": per_round, "objects": object_count(list(labels.values())),
                           "network": {k: v.detach().cpu().clone() for k, v in segmenter.network.state_dict().items()},
                           "trainer": trainer.state(),
                           "rng": [json.dumps(source.rng.bit_generator.state),
                                   json.dumps(source.labelled.rng.bit_generator.state)]}
            yield RoundResult(index, rounds, labels, probabilities, uncertainty, metrics, round_state)


def resumed_iterations_per_round(options: MethodOptions, state: dict, step: int) -> int:
    """Iterations per round of a resumed job: the job's own setting, else the checkpoint's (older checkpoints: the
    steps so far over the rounds so far), so a stopped stage resumes exactly and a Continue trains as its Start did."""
    if options.iterations_per_round:
        return int(options.iterations_per_round)
    if state.get("iterations_per_round"):
        return int(state["iterations_per_round"])
    return max(1, step // max(1, int(state["round"])))


@register("mean-teacher")
class MeanTeacher(_MeanTeacherBase):
    summary = "U-Net student (3D; 2D with dims=2) + EMA teacher, consistency on unlabelled voxels (Mean Teacher)"
    uncertainty_aware = False


@register("ua-mt")
class UncertaintyAwareMeanTeacher(_MeanTeacherBase):
    summary = "Mean Teacher whose consistency keeps only voxels the teacher is certain of (UA-MT, MC dropout)"
    uncertainty_aware = True
