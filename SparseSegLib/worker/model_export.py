"""``python -m SparseSegLib.worker.model_export JOBDIR MODEL_DIR``: a job's newest checkpoint as a model folder.

Runs in the worker's Python (it imports torch, so it lives on the worker's side of the package, never under
``session/``), started by the Slicer module's "Save model". The
network is rebuilt exactly as the worker built it for the job (same network preset, patch size and
classes; a method with its own network, self-labelling, rebuilds it with ``segmenter_from_state``,
axis-fusion members and the painted axis included), the checkpoint's weights are loaded
(``weights_only=True``) and the folder is written with
:meth:`~SparseSegLib.engine.model.Segmenter.save`, so ``sparseseg predict`` and "Load model" read it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import SparseSegError


def export_model(job_directory: str | Path, model_directory: str | Path) -> Path:
    """Write :func:`job_segmenter` of ``job_directory`` as a model folder; returns the folder."""
    return job_segmenter(job_directory).save(model_directory)


def job_segmenter(job_directory: str | Path):
    """The :class:`~SparseSegLib.engine.model.Segmenter` of a job's newest complete round, in memory (what Save
    model writes and ``sparseseg predict --model JOBDIR`` applies)."""
    import torch

    from ..jobs import layout
    from ..jobs.schema import read_job
    from ..methods import get_method
    from ..methods.base import MethodOptions
    from ..methods.common import new_segmenter
    from .inputs import read_job_case

    job_directory = Path(job_directory)
    spec = read_job(job_directory)
    done = layout.last_complete_round(job_directory)
    checkpoint = layout.checkpoints(job_directory).get(done)
    if not done or checkpoint is None:
        raise SparseSegError(f"{job_directory} has no complete round with a checkpoint", "Wait for a round to finish.")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = payload.get("state") or {}
    if "network" not in state:
        raise SparseSegError(f"the checkpoint {checkpoint} holds no network weights", "Save the model from another job.")
    case, _ = read_job_case(spec)
    parameters = spec.parameters
    adjustments = payload.get("adjustments") or {}
    patch = adjustments.get("patch_size") or parameters["patch_size"]
    options = MethodOptions(network=parameters["network"], budget=parameters["budget"], device="cpu", seed=spec.seed,
                            patch_size=tuple(patch) if patch else None, normalization=parameters["normalization"],
                            rounds=spec.rounds, extra=dict(parameters.get("method_options") or {}))
    method = get_method(spec.method)
    if hasattr(method, "segmenter_from_state"):  # a method with its own network (self-labelling)
        segmenter = method.segmenter_from_state([case], options, state)
    else:
        segmenter = new_segmenter([case], options, spec.method)
        try:
            segmenter.network.load_state_dict(state["network"])
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit a {parameters['network']} network of this job "
                                 f"({str(error).splitlines()[0][:160]})",
                                 "This method uses its own network; apply its rounds instead of a saved model.") from None
    segmenter.training = {"job": str(job_directory), "round": done, "method": spec.method,
                          "rounds": spec.rounds, "parameters": {k: v for k, v in parameters.items() if k != "method_options"}}
    return segmenter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.worker.model_export",
                                     description="Write a job's newest checkpoint as a SparseSeg model folder.")
    parser.add_argument("job", type=Path)
    parser.add_argument("model", type=Path)
    args = parser.parse_args(argv)
    try:
        path = export_model(args.job, args.model)
    except SparseSegError as error:
        print(f"sparseseg: error: {error.one_line()}", file=sys.stderr)
        return 2
    print(f"model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
