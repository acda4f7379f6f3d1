"""Self-labelling a cohort (``sparseseg train`` / ``bench``): one run, independent runs averaged, or runs that
label together, and optionally a 3D student.

A mixin of :class:`~.method.SelfLabelling`. The worker's one-volume job path is :mod:`.job`; a cohort differs in
holding out validation volumes, running the rounds until every training volume is labelled, and ensembles.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, replace

import numpy as np

from ...case import Case
from ...distributed.collectives import map_shared
from ...engine.device import select_device
from ...engine.model import Segmenter
from ...engine.networks import build_network
from ...engine.preprocessing import normalize
from ...engine.sampling import UNKNOWN, TrainingVolume
from ..base import MethodOptions, Reporter
from ..common import fit, network_snapshot, new_segmenter
from .fusion import average_runs
from .loop import SelfLabellingLoop
from .pseudo_labels import relabel_proposal
from .settings import Settings, labelling_alone

#: Cohorts at least this large give 15% of their volumes to validation when none are given (see ``train``).
HOLD_OUT_FROM = 10


class CohortTraining:
    """``train``: self-label a cohort (see :meth:`train`); needs ``name``, ``settings`` and ``build`` of the method."""

    name: str

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter,
              validation: list[Case] | None = None) -> Segmenter:
        """Self-label a cohort until every training volume is labelled; returns the final segmenter.

        With ``ensemble`` N, N independent runs (training seeds ``seed`` .. ``seed + N - 1``) are averaged into
        one model: one run may leak past a structure's end or lose it, and nothing it trains on shows which
        (docs/results/self-labelling.md, third exploration); then ``ensemble_passes`` let the average re-label every run.

        Without validation cases, a cohort of :data:`HOLD_OUT_FROM` or more volumes gives 15% of them (seeded) to
        validation, as the paper's 70/15/15 protocol does, so that ``sparseseg train`` stops early and keeps the
        best weights of each round on held-out annotation exactly as the benchmark does, rather than watching its
        own training loss.
        """
        settings = self.settings(options)
        if not validation and len(cases) >= HOLD_OUT_FROM:
            held = set(np.random.default_rng(options.seed).choice(len(cases), max(1, round(0.15 * len(cases))), replace=False))
            validation = [case for i, case in enumerate(cases) if i in held]
            cases = [case for i, case in enumerate(cases) if i not in held]
            reporter.log(f"{self.name}: {len(validation)} of {len(cases) + len(validation)} volumes held out for validation "
                         "(early stopping on their annotated slices)")
        runs = []
        if settings.co_labelling and settings.ensemble > 1:
            runs = self._train_together(cases, options, reporter, validation, settings)
        else:
            settings = labelling_alone(settings)
        for run in range(settings.ensemble if not runs else 0):
            run_options = replace(options, seed=options.seed + run)
            if settings.ensemble > 1:
                reporter.log(f"{self.name}: ensemble run {run + 1}/{settings.ensemble} (training seed {run_options.seed})")
            runs.append(self._train_once(cases, run_options, reporter, validation, settings))
        segmenter, rounds, _ = runs[0]
        snapshots = list(segmenter.round_snapshots)
        if len(runs) > 1:
            loops = [loop for _, _, loop in runs]
            segmenter = average_runs([seg for seg, _, _ in runs])
            # the curve: the first run round by round, then the averaged model (its gain over one run), after each pass
            snapshots.append(self._snapshot(segmenter, snapshots[-1]))
            for number in range(settings.ensemble_passes):
                if not all(lab.all() for loop in loops for lab in loop.labelled):
                    break  # a capped run (max_rounds) has no whole pseudo-labels to re-label
                teacher = copy.deepcopy(segmenter.network), segmenter.network_config
                for run, loop in enumerate(loops):
                    loop.total += 1
                    result = loop.fusion_round(loop.total, time.perf_counter(), teacher)
                    runs[run][1].append({**result.metrics, "ensemble_pass": number + 1})
                segmenter = average_runs([replace(seg, network=loop.final_network(), network_config=loop.final_config())
                                          for (seg, _, _), loop in zip(runs, loops)])
                snapshots.append(self._snapshot(segmenter, snapshots[-1]))
            rounds = [{**r, "ensemble_run": n + 1} for n, (_, run_rounds, _) in enumerate(runs) for r in run_rounds]
        if settings.student_3d:
            for snapshot in snapshots:  # the 2D rounds are fed as the 2D model is, the student its own way
                snapshot.setdefault("patch_size", segmenter.patch_size)
                snapshot.setdefault("normalization", segmenter.normalization)
            segmenter, student_summary = self._train_student(segmenter, cases, options, reporter, validation, settings)
            snapshots.append({**self._snapshot(segmenter, snapshots[-1]), "patch_size": segmenter.patch_size,
                              "normalization": segmenter.normalization})
            rounds = [*rounds, student_summary]
        segmenter.training = {"stage": self.name, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                               for k, v in asdict(settings).items()},
                              "train": {"iterations": int(sum(r["iterations"] for r in rounds)),
                                        "batch_size": settings.batch_size, "learning_rate": settings.learning_rate},
                              "rounds": rounds, "final_loss": rounds[-1]["loss"] if rounds else None}
        segmenter.round_snapshots = snapshots  # per-round weights for the benchmark's test curve (not saved)
        return segmenter

    def _train_student(self, teacher: Segmenter, cases: list[Case], options: MethodOptions, reporter: Reporter,
                       validation: list[Case] | None, settings: Settings) -> tuple[Segmenter, dict]:
        """A 3D U-Net trained on the final 2D model's pseudo-labels of every training volume (ground truth kept).

        The 2D networks decide slice by slice (even fused across three axes), each training volume's labels carrying
        its own chain's mistakes; a 3D network trained on all of them at once learns one shape from the cohort
        (confident voxels only: uncertain ones stay out of the loss). Measured: +0.008 / +0.012 Dice (docs/results/self-labelling.md).
        """
        started, device, volumes = time.perf_counter(), select_device(options.device), []
        # validated (best weights kept) as the bench validates the full 3D baseline: ten times over its schedule
        student_options = replace(options, network="3d", validate_every=max(1, options.schedule(3)["iterations"] // 10)
                                  if validation else 0)
        student = new_segmenter(cases, student_options, self.name)
        student = replace(student, network=build_network(student.network_config, teacher.num_classes),
                          class_names=teacher.class_names, class_colors=teacher.class_colors, postprocess=teacher.postprocess)
        # under torchrun each rank predicts its share of the volumes and all get every proposal
        proposals = map_shared(lambda case: relabel_proposal(teacher.predict(case.image, device)[1], settings), cases)
        for case, target in zip(cases, proposals):
            truth = case.sparse_label(UNKNOWN)
            if settings.classes == "merged":
                truth = np.where(truth > 0, 1, truth)
            known = truth != UNKNOWN
            target[known] = truth[known]  # ground truth is never overruled
            volumes.append(TrainingVolume(normalize(case.image, student.normalization), target.astype(np.int16)))
        merged = (lambda c: replace(c, label=(c.label > 0).astype(c.label.dtype))) if settings.classes == "merged" else (lambda c: c)
        reporter.log(f"{self.name}: training a 3D student on the pseudo-labels of {len(volumes)} volumes")
        summary = fit(student, volumes, student_options, reporter, f"{self.name} 3D student",
                      [merged(c) for c in validation] if validation else None)
        return student, {"student": "3d", "iterations": summary["train"]["iterations"], "loss": summary["final_loss"],
                         "seconds": round(time.perf_counter() - started, 3)}

    @staticmethod
    def _snapshot(segmenter: Segmenter, previous: dict) -> dict:
        """A round-curve entry for a model made after the rounds (an average, a student): the next round number."""
        return {"round": previous["round"] + 1, "labelled_fraction": previous["labelled_fraction"],
                "state": network_snapshot(segmenter.network), "config": segmenter.network_config}

    def _train_once(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None,
                    settings: Settings) -> tuple[Segmenter, list[dict], SelfLabellingLoop]:
        """One self-labelling run over the cohort: the trained segmenter (with its round snapshots), its round
        metrics, and the loop (its pseudo-labels, for the ensemble passes)."""
        segmenter = self.build(cases, options, settings)
        loop = SelfLabellingLoop(self.name, segmenter, cases, options, reporter, settings, validation=validation,
                                 stream=False, keep_state=False)
        reporter.log(f"{self.name}: {len(cases)} volumes, {loop.total} rounds, k {settings.k:g} "
                     f"({min(loop.step)}-{max(loop.step)} slice(s) per side per round), theta {settings.theta:g} "
                     f"({settings.threshold}), order {settings.order}, classes {settings.classes}")
        rounds = []
        for result in loop.run():
            rounds.append(result.metrics)
            reporter.log(f"{self.name} round {result.index}/{result.total}: {result.metrics['labelled_fraction']:.1%} of "
                         f"slices labelled, {result.metrics['epochs']} epochs, loss {result.metrics['loss']:.3f}, "
                         f"monitor {result.metrics['best']}")
        # a copy: the loop's own segmenter keeps the labelling network (an ensemble pass trains it on)
        trained = replace(segmenter, network=loop.final_network(), network_config=loop.final_config())
        trained.round_snapshots = loop.snapshots
        return trained, rounds, loop

    def _train_together(self, cases: list[Case], options: MethodOptions, reporter: Reporter,
                        validation: list[Case] | None, settings: Settings) -> list[tuple[Segmenter, list[dict], SelfLabellingLoop]]:
        """Co-labelling: the ``ensemble`` runs (training seeds seed, seed + 1, ...) go through the rounds side by side
        on one set of pseudo-labels, each slice decided by their averaged networks (and each re-labelling pass by
        their averaged fused models); each run trains its own networks on them. Returns what :meth:`_train_once`
        returns, per run."""
        segmenters = [self.build(cases, replace(options, seed=options.seed + run), settings) for run in range(settings.ensemble)]
        loops = [SelfLabellingLoop(self.name, segmenter, cases, replace(options, seed=options.seed + run), reporter, settings,
                                   validation=validation, stream=False, keep_state=False)
                 for run, segmenter in enumerate(segmenters)]
        loops[0].label_together_with(loops[1:])
        reporter.log(f"{self.name}: {len(cases)} volumes, {loops[0].total} rounds, {len(loops)} runs (training seeds "
                     f"{options.seed}-{options.seed + len(loops) - 1}) labelling together, k {settings.k:g}, theta "
                     f"{settings.theta:g} ({settings.threshold}), classes {settings.classes}")
        rounds: list[list[dict]] = [[] for _ in loops]
        for results in zip(*(loop.run() for loop in loops)):
            for run, result in enumerate(results):
                rounds[run].append(result.metrics)
            reporter.log(f"{self.name} round {results[0].index}/{results[0].total}: {results[0].metrics['labelled_fraction']:.1%} "
                         f"of slices labelled, monitor {', '.join(str(r.metrics['best']) for r in results)}")
        runs = []
        for segmenter, loop, run_rounds in zip(segmenters, loops, rounds):
            trained = replace(segmenter, network=loop.final_network(), network_config=loop.final_config())
            trained.round_snapshots = loop.snapshots
            runs.append((trained, run_rounds, loop))
        return runs
