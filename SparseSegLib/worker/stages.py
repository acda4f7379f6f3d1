"""How many rounds a job runs when it leaves the count to the method (the module's Rounds "auto", job.json
``"rounds": null``): one press of Start or Continue is a *stage*.

A fresh job runs the method's own plan (:func:`~SparseSegLib.methods.base.planned_rounds`: e.g. self-labelling
until every slice is labelled). A resumed job must tell two things apart, and only the paint can: a run that was
stopped or crashed part way (same paint) goes on to the end of its stage, while a Continue (new or changed paint,
:mod:`SparseSegLib.jobs.continuation`) starts a new stage after the last round. Each checkpoint therefore records the
stage it belongs to, ``{"paint": digest, "last_round": N, "planned": M}`` (:func:`stage_record`).

A method may end its stage before the planned rounds (``gradual`` once its regions cover the volume): the record
keeps both, so a resume with the same paint runs nothing more, with a fixed count too, while new paint trains again.
Methods that plan their stages themselves (``plans_stages = True``: ``propagate``, ``collaborative``) get the state
and decide; the others run :data:`CONTINUE_ROUNDS` more rounds on a Continue, as a job with a fixed count does.
Before this, a Continue with Rounds "auto" ran nothing at all for those methods (the worker found the stage's
rounds done) and the corrected slices were silently ignored.
"""

from __future__ import annotations

from ..jobs.schema import DEFAULT_MORE_ROUNDS

#: Rounds a Continue runs with Rounds "auto" when the method does not plan stages itself: the same number a job
#: with a fixed count adds (the module's continueRounds default).
CONTINUE_ROUNDS = DEFAULT_MORE_ROUNDS


def stage_record(paint: str, last_round: int, planned: int) -> dict:
    """What a checkpoint stores about its stage: the paint's digest, the stage's last round as the method gave it and
    the rounds the worker had planned (more than ``last_round`` when the method ended the stage early, as ``gradual``
    does once its regions cover the volume)."""
    return {"paint": paint, "last_round": int(last_round), "planned": int(planned)}


def stage_rounds(method, case, options, state: dict | None, done: int, stage: dict | None, paint: str) -> int:
    """The last round of this run's stage (``done`` or less: nothing left to run).

    ``state``/``done``: the checkpoint resumed from (None/0 for a fresh job); ``stage``: that checkpoint's
    :func:`stage_record` (None in checkpoints written before stages were recorded); ``paint``: this run's digest.
    A stage the method ended early stays ended for the same paint, whatever the count; with ``options.rounds``
    None (Rounds "auto") the rules of the module doc apply, else the count is the job's."""
    from ..methods.base import planned_rounds

    same_paint = stage is not None and stage.get("paint") == paint
    if same_paint and done >= int(stage["last_round"]) and int(stage["last_round"]) < int(stage.get("planned", 0)):
        return done
    if options.rounds is not None or state is None or getattr(method, "plans_stages", False) or stage is None:
        return planned_rounds(method, case, options, state)
    return int(stage["last_round"]) if same_paint else int(done) + CONTINUE_ROUNDS
