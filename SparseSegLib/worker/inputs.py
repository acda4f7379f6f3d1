"""Reading a job's inputs as the worker and Save model both need them."""

from __future__ import annotations

from ..jobs.schema import JobSpec


def read_job_case(spec: JobSpec):
    """The job's case (image, annotation, annotated mask as the region says, class names and colours) and a
    description of the region; shared by the worker and Save model, which must see the same annotated mask."""
    from ..case import Case
    from ..io import read_annotation, read_image, read_label
    from ..jobs.regions import annotated_mask

    image, geometry = read_image(spec.image)
    label, names, colors = read_annotation(spec.annotation, geometry)
    mask = read_label(spec.region["mask"], geometry) if spec.region["kind"] == "mask" else None
    annotated, description = annotated_mask(spec.region, label, geometry, mask)
    case = Case(spec.case_id, image, geometry, label, annotated, {**names, **spec.class_names()},
                {**colors, **spec.class_colors()})
    return case, description
