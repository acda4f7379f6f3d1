"""The method options of ``mean-teacher`` and ``ua-mt`` (``--option KEY=VALUE`` / job ``method_options``).

Defaults are the UA-MT reference code's (yulequan/UA-MT, ``train_LA_meanteacher_certainty_unlabel.py``) and the
seed's where the two differ only in the network (the seed's 3D U-Net, 16-32-64-128-256, dropout 0.3 at the
bottleneck; see :mod:`.network`) and the learning-rate schedule (the seed's poly decay). Iterations follow the
budget: ``paper`` is the reference's 6000, ``quick`` 200 for a first look on a CPU (a one-scan job: 600).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ...errors import SparseSegError

#: Iterations per budget (batch = ``labelled_batch`` + ``unlabelled_batch`` patches).
ITERATIONS = {"quick": 200, "paper": 6000}
#: A one-scan job's: its painted voxels are all it learns from, and the cohort's quick 200 left the student near-empty
#: (hippocampus dev scans, one slice painted: class-mean Dice 0.020 with 200, 0.283 with 600;
#: docs/results/interactive.md, "Thirty-third session").
JOB_ITERATIONS = {**ITERATIONS, "quick": 600}


@dataclass(frozen=True)
class MeanTeacherSettings:
    """Everything the two methods can be told; :meth:`parse` checks names and values."""

    #: Semi-supervised setting: this many training volumes keep their annotation, the others are used unlabelled
    #: (chosen with the training seed). None: the sparse setting, every volume keeps its (sparse) annotation.
    labelled: int | None = None
    #: Consistency weight at the end of the ramp (the reference's 0.1); 0 trains the student alone on the
    #: labelled voxels (the "labelled only" / fully supervised baselines on the same network and schedule).
    consistency: float = 0.1
    #: The ramp's length in "epochs" of iterations / 40 (reference: iteration // 150 over 40 of them at 6000).
    consistency_rampup: float = 40.0
    ema_decay: float = 0.99
    noise: float = 0.1  # teacher input noise sd, clamped to +-2 sd
    passes: int = 8  # UA-MT: stochastic teacher passes (T)
    threshold_start: float = 0.75  # UA-MT: entropy threshold ramps from this to threshold_end, times ln(C)
    threshold_end: float = 1.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"  # poly: (1 - it/max)^0.9 (seed); step: x0.1 every 2500/6000 of the run (UA-MT code)
    labelled_batch: int = 2
    unlabelled_batch: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: float = 0.3  # at the bottleneck (live in the teacher for Monte Carlo dropout)
    num_res_units: int = 0  # 0: plain double convolutions as the seed's UNet3D
    preprocessing: bool = True  # the seed's SimpleITK steps (:mod:`...engine.sitk_preprocessing`)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    margin: int = 4
    augment: bool = True  # random in-plane 90 degree turns and flips (MONAI)
    uncertainty_passes: int = 8  # teacher passes for a job round's uncertainty map
    #: 3: the seed's 3D U-Net on 3D patches. 2: a 2D U-Net on slices across array axis 0 (the labelled slices'
    #: axis), as the collaborative-learning paper's MT / UA-MT baselines (its Table 2) and cheap enough on a CPU to
    #: train to convergence; the student, teacher, losses and schedules are the same.
    dims: int = 3

    @classmethod
    def parse(cls, options: dict) -> MeanTeacherSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SparseSegError(f"unknown option(s) for mean-teacher / ua-mt: {', '.join(unknown)}",
                                 f"Known: {', '.join(sorted(known))}.")
        values = {}
        for key, value in options.items():
            default = getattr(cls, key)
            try:
                if key in ("channels", "clip_percentiles"):
                    items = value.split(",") if isinstance(value, str) else list(value)
                    values[key] = tuple((int if key == "channels" else float)(v) for v in items)
                elif key == "labelled":
                    values[key] = None if value is None else int(value)
                elif isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise ValueError("not true/false")
                    values[key] = value
                elif isinstance(default, int):
                    values[key] = int(value)
                elif isinstance(default, float):
                    values[key] = float(value)
                else:
                    values[key] = str(value)
            except (TypeError, ValueError) as error:
                raise SparseSegError(f"option {key}={value!r} is not valid ({error})",
                                     f"E.g. {key}={default if default is not None else 4}.") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        problems = []
        if self.labelled is not None and self.labelled < 1:
            problems.append("labelled must be at least 1")
        if self.consistency < 0 or self.ema_decay < 0 or self.ema_decay >= 1:
            problems.append("consistency >= 0 and 0 <= ema_decay < 1")
        if self.passes < 1 or self.uncertainty_passes < 1:
            problems.append("passes and uncertainty_passes must be at least 1")
        if self.lr_schedule not in ("poly", "step"):
            problems.append("lr_schedule must be poly or step")
        if self.labelled_batch < 1 or self.unlabelled_batch < 0:
            problems.append("labelled_batch >= 1 and unlabelled_batch >= 0")
        if self.dims not in (2, 3):
            problems.append("dims must be 2 or 3")
        if len(self.channels) < 2 or not 0 <= self.dropout < 1:
            problems.append("at least two channel levels and 0 <= dropout < 1")
        if problems:
            raise SparseSegError("invalid mean-teacher options: " + "; ".join(problems), "See the option list in "
                                 "SparseSegLib/methods/mean_teacher/settings.py.")

    @property
    def uses_teacher(self) -> bool:
        return self.consistency > 0

    def to_dict(self) -> dict:
        return asdict(self)


def run_settings(options) -> MeanTeacherSettings:
    """The method options, and where they name neither ``labelled_batch`` nor ``unlabelled_batch``, the run's
    ``batch_size`` (``--batch-size``, a job's parameter) split into labelled and unlabelled patches, the labelled
    half rounded up. Why: that is what the worker halves after running out of GPU memory; the method used to
    ignore it, so its retry ran the same batch again. ``options``: a :class:`~SparseSegLib.methods.base.MethodOptions`."""
    settings = MeanTeacherSettings.parse(options.extra)
    if not options.batch_size or {"labelled_batch", "unlabelled_batch"} & set(options.extra or {}):
        return settings
    labelled = max(1, (int(options.batch_size) + 1) // 2)
    return replace(settings, labelled_batch=labelled, unlabelled_batch=max(0, int(options.batch_size) - labelled))

