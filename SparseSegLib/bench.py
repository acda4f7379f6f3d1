"""The benchmark harness: split a real data set, simulate sparse annotation, train each method, score
the test part, and write ``results.json``, ``report.md`` and plots.

Every number it prints comes from :mod:`SparseSegLib.metrics` on held-out cases; the paper's figures
for the same data set are put next to ours by :mod:`SparseSegLib.report`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .annotation import annotate_case, check_annotation, parse_annotation_spec
from .case import Case
from .cohort_spacing import at_common_spacing, common_in_plane_spacing
from .dataset import Dataset, kfold_cases, load_dataset, split_cases
from .errors import SparseSegError
from .io import write_image
from .methods import MethodOptions, get_method
from .metrics import case_metrics, summarize
from .progress import TerminalReporter, format_duration


@dataclass
class BenchConfig:
    """One benchmark: which data, which annotation, which methods on which networks."""

    dataset: Path
    annotation: str
    methods: list[str]
    out: Path
    networks: list[str] = field(default_factory=lambda: ["2d"])
    budget: str = "quick"
    folds: int = 0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    device: str = "auto"
    max_cases: int | None = None
    iterations: int | None = None
    save_predictions: bool = True
    #: an earlier results.json on the same split: its runs that this benchmark does not run are reported too
    reuse_runs: Path | None = None
    #: method options (``--option KEY=VALUE``) given to every method; they become part of the run names
    options: dict = field(default_factory=dict)
    #: training seed (None: ``seed``); the split and the simulated annotation always follow ``seed``
    train_seed: int | None = None
    #: which part is scored: ``test`` (reported results) or ``val`` (choosing a method's settings without looking
    #: at the test part; the val volumes are then not given to training as validation cases)
    evaluate: str = "test"
    #: the channel of multi-channel images (an index or a dataset.json modality name; None: the dataset's default)
    channel: str | None = None
    #: ``common``: training (and validation) scans moved in plane to the training scans' median spacing where they
    #: differ (:mod:`.cohort_spacing`); ``native``: as they are. Scored scans are always predicted on their own grid.
    spacing: str = "common"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["dataset"], data["out"] = str(self.dataset), str(self.out)
        data["reuse_runs"] = str(self.reuse_runs) if self.reuse_runs else None
        return data


#: the split parts ``--evaluate`` can score
EVALUATED_PARTS = ("test", "val")


def run_name(method: str, network: str, options: dict | None = None) -> str:
    """How a run is labelled in tables: ``sparse-only (2D)``, ``self-labelling [fuse_axes=true] (2D)``; the network
    is the one the method trains (``trained_network``, for methods that do not follow ``--networks``)."""
    trained = getattr(get_method(method), "trained_network", None)
    network = trained(MethodOptions(network=network, extra=dict(options or {}))) if trained else network
    settings = f" [{', '.join(f'{k}={_option_text(v)}' for k, v in sorted(options.items()))}]" if options else ""
    return f"{method}{settings} ({network.upper()})"


def _option_text(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _parts(dataset: Dataset, config: BenchConfig) -> list[dict[str, list[str]]]:
    ids = [ref.case_id for ref in dataset.cases]
    if config.max_cases:
        ids = [ids[i] for i in sorted(np.random.default_rng(config.seed).permutation(len(ids))[: config.max_cases])]
    if config.folds:
        return kfold_cases(ids, config.folds, config.seed)
    return [split_cases(ids, config.split, config.seed)]


def run_benchmark(config: BenchConfig, reporter: TerminalReporter | None = None) -> dict:
    """Run every method x network on every fold and write the results; returns ``results.json``'s content."""
    from .report import write_plots, write_report, write_results  # matplotlib only when a report is written

    from .distributed.collectives import map_shared
    from .distributed.context import check_method, check_volumes, current
    from .methods.base import SilentReporter

    context = current()  # under torchrun: rank 0 reports and writes, test prediction is split across the ranks
    main = context is None or context.is_main
    reporter = (reporter or TerminalReporter()) if main else SilentReporter()
    for method in config.methods:
        check_method(method)
    if parse_annotation_spec(config.annotation).kind == "painted":
        raise SparseSegError("a benchmark scores against full reference labels, and painted label maps hold only "
                             "painted slices", "Train on painted label maps with `sparseseg train --annotation painted`; "
                             "benchmark with full labels and a simulated annotation (e.g. central-slice).")
    if config.evaluate not in EVALUATED_PARTS:
        raise SparseSegError(f"unknown part to evaluate {config.evaluate!r}", f"Use one of: {', '.join(EVALUATED_PARTS)}.")
    if config.evaluate == "val" and (config.folds or config.split[1] <= 0):
        raise SparseSegError("--evaluate val needs a split with a validation part",
                             "Give --split with a val fraction above 0 (e.g. 0.7,0.15,0.15), not --folds.")
    for method in config.methods:  # unknown names and options fail before any training starts
        for network in config.networks:
            get_method(method).check_options(MethodOptions(network=network, budget=config.budget, extra=dict(config.options)))
    dataset = load_dataset(config.dataset, config.channel)
    folds = _parts(dataset, config)
    if main:
        config.out.mkdir(parents=True, exist_ok=True)
    reporter.log(f"benchmark on {dataset.name}: {len(dataset.cases)} cases, annotation {config.annotation}, "
                 f"{len(folds)} fold(s), runs: {', '.join(run_name(m, n, config.options) for m in config.methods for n in config.networks)}")
    if note := dataset.channel_note():
        reporter.log(f"note: {note}")
    started = time.perf_counter()
    cache: dict[str, Case] = {}

    def load(case_id: str) -> Case:
        if case_id not in cache:
            ref = next(r for r in dataset.cases if r.case_id == case_id)
            cache[case_id] = dataset.load(ref)
        return cache[case_id]

    runs: dict[str, dict] = {}
    for fold_index, part in enumerate(folds):
        train = [annotate_case(load(c), config.annotation, config.seed) for c in part["train"]]
        val = [annotate_case(load(c), config.annotation, config.seed) for c in part["val"]]
        test = [load(c) for c in part[config.evaluate]]  # the scored part: the test volumes, or the val volumes
        if config.evaluate == "val":
            val = []  # scored on their full labels: no checkpoint selection on them
        if config.spacing == "common" and (target := common_in_plane_spacing(train)) is not None:
            train, val = at_common_spacing(train, reporter.log, target), at_common_spacing(val, None, target)
        check_volumes(len(train))
        stats = [check_annotation(case.label, case.annotated) for case in train]
        reporter.log(f"fold {fold_index + 1}/{len(folds)}: {len(train)} train / {len(part['val'])} val / {len(part['test'])} "
                     f"test cases, scoring the {config.evaluate} part; "
                     f"annotated {np.mean([s['fraction'] for s in stats]):.1%} of training voxels on average")
        for method in config.methods:
            for network in config.networks:
                name = run_name(method, network, config.options)
                run = runs.setdefault(name, {"method": method, "network": network, "cases": {}, "folds": []})
                options = MethodOptions(network=network, budget=config.budget, device=config.device,
                                        seed=(config.seed if config.train_seed is None else config.train_seed) + fold_index,
                                        iterations=config.iterations,
                                        extra=dict(config.options))
                options.validate_every = max(1, options.schedule(2 if network == "2d" else 3)["iterations"] // 10) if val else 0
                tick = time.perf_counter()
                segmenter = get_method(method).train(train, options, reporter, validation=val or None)
                train_seconds = time.perf_counter() - tick
                tick = time.perf_counter()

                def score(case: Case) -> tuple[np.ndarray, dict]:
                    predicted, _ = segmenter.predict(case.image, config.device if config.device != "auto" else _auto(),
                                                      case.geometry.spacing_kji)
                    return predicted, case_metrics(predicted, case.label, case.geometry.spacing_kji, dataset.class_names)

                for case, (predicted, metrics) in zip(test, map_shared(score, test)):  # split across ranks, gathered
                    run["cases"][case.case_id] = metrics
                    if config.save_predictions and main:
                        folder = config.out / "predictions" / f"{method}-{network}"
                        write_image(predicted, case.geometry, folder / f"{case.case_id}.nii.gz")
                predict_seconds = time.perf_counter() - tick
                if not main:
                    continue  # the per-round curve and the reports are rank 0's
                from .round_curves import round_test_curve  # per-round test Dice of round-based methods

                curve = round_test_curve(segmenter, test, config.device if config.device != "auto" else _auto(),
                                         dataset.class_names, _headline_group(dataset))
                run["folds"].append({"fold": fold_index, "train_seconds": train_seconds,
                                     "predict_seconds_per_case": predict_seconds / max(1, len(test)),
                                     "training": segmenter.training, "round_curve": curve})
                merged = summarize([run["cases"][c.case_id] for c in test]).get(_headline_group(dataset), {})
                reporter.log(f"{name}: trained in {format_duration(train_seconds)}, {config.evaluate} Dice "
                             f"{merged.get('dice', {}).get('mean', float('nan')):.3f} +- {merged.get('dice', {}).get('sd', float('nan')):.3f}")

    if not main:
        return {}
    for run in runs.values():
        run["summary"] = summarize(list(run["cases"].values()))
        run["train_seconds"] = float(sum(f["train_seconds"] for f in run["folds"]))
    results = {
        "sparseseg_version": __version__,
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "classes": dataset.class_names, "cases": len(dataset.cases)},
        "folds": folds,
        "headline_group": _headline_group(dataset),
        "runs": runs,
        "wall_seconds": time.perf_counter() - started,
        "environment": _environment(config.device),
    }
    if config.reuse_runs:
        from .round_curves import reuse_runs

        reused = reuse_runs(results, config.reuse_runs, reporter.log)
        reporter.log(f"reused runs from {config.reuse_runs}: {', '.join(reused) or 'none'}")
    write_results(results, config.out / "results.json")
    write_report(results, config.out / "report.md")
    write_plots(results, config.out)
    from .round_curves import append_round_report, write_round_curves

    write_round_curves(results, config.out)
    append_round_report(results, config.out / "report.md")
    reporter.log(f"wrote {config.out / 'results.json'}, {config.out / 'report.md'} and plots in "
                 f"{format_duration(results['wall_seconds'])}")
    return results


def _headline_group(dataset: Dataset) -> str:
    """The label the headline figures score: merged foreground for multi-class data, else the class."""
    if len(dataset.class_names) >= 2:
        return "merged"
    return next(iter(dataset.class_names.values()), "mean")


def _auto() -> str:
    from .engine.device import select_device

    return str(select_device("auto"))


def _environment(device: str) -> dict:
    import torch

    from .engine.device import describe_device, select_device

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": describe_device(select_device(device)),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def parse_methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SparseSegError("no method given", "E.g. --methods sparse-only,full.")
    return names
