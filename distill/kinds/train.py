"""`distill train`: one model per seed, from labels or from a teacher (the run is `distill.training.runner.train`).

    distill train mnist1d-kd seeds=[0,1,2]
"""

from __future__ import annotations

from distill.kinds import Kind, TuneTarget, View, default_label

#: what the parent of a student taught by a `distill.teacher` run of another data split says
#: (distill.teacher_other_split); the report's note looks for it
OTHER_SPLIT = "trained on another data split"
#: ... and of a teacher whose data split cannot be checked (a checkpoint outside a run folder, a pretrained
#: Hugging Face model)
UNKNOWN_SPLIT = "its training data is not known to this run"


def label(row: dict) -> str:
    """The trained model is `student` whether it learns from a teacher or from labels alone."""
    return "student" if row.get("role") in ("student", "model") else default_label(row)


KIND = Kind(
    name="train",
    help="train one model per seed, from labels or from a teacher",
    run="distill.training.runner:train",
    preflight="distill.training.runner:check",
    targets=(TuneTarget("student", "the student (the model, when it learns from labels), each epoch", "student",
                        fields=lambda cfg: {"role": ("student", "model")}),),
    label=label,
    shares_teacher=True,
    order=0,
    view=View("knowledge distillation", layout="train", roles=("teacher", "model", "student")),
)
