"""The status line under the module's progress bar: one whole sentence per state, so translators see sentences.

Kept apart from :class:`~.session.Session` (which only gathers the figures) so the wording lives in one small
file; its texts go through the translation hook under this file's context (:mod:`.text`).
"""

from __future__ import annotations

from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls


def progress_line(status: str, done: int, planned: int, event: dict | None, pending: bool) -> tuple[float, str]:
    """``(fraction 0..1 of the planned rounds, one line: round, step, ETA)`` of a started job.

    ``done``: the newest imported round; ``event``: the worker's last progress event (round, step, total, eta_s);
    ``pending``: rounds written but not imported yet (a finished job is finished only once they are in).
    """
    planned = max(1, planned)
    if status == "finished" and not pending:
        return 1.0, _("finished: {done} round(s)").format(done=done)
    if status in ("cancelled", "error", "accepted"):  # one whole sentence each, for the translators
        return done / planned, (_("cancelled: {done} of {planned} round(s) imported") if status == "cancelled"
                                else _("error: {done} of {planned} round(s) imported") if status == "error"
                                else _("accepted: {done} of {planned} round(s) imported")).format(done=done, planned=planned)
    if not event:
        return done / planned, _("starting ({done} of {planned} round(s))").format(done=done, planned=planned)
    round_index = int(event.get("round") or done + 1)
    step, total = int(event.get("step") or 0), max(1, int(event.get("total") or 1))
    fraction = min(1.0, ((round_index - 1) + step / total) / planned)
    eta = event.get("eta_s")
    if not isinstance(eta, (int, float)):
        return fraction, _("round {round}/{rounds}, step {step}/{total}").format(round=round_index, rounds=planned,
                                                                                  step=step, total=total)
    return fraction, _("round {round}/{rounds}, step {step}/{total}, ETA {minutes}:{seconds} for this round").format(
        round=round_index, rounds=planned, step=step, total=total, minutes=int(eta) // 60, seconds=f"{int(eta) % 60:02d}")
