"""ensembles: train N teachers, evaluate their ensemble, collapse it into a student (issue 5).

    distill ensemble ensemble-mnist1d seeds=[0,1,2]

    import ensembles
    from distill import load_config
    run_dir = ensembles.run(load_config("ensemble-mnist1d", ["seeds=[0]"]))

`run` is in ensembles.experiment (what a run does, the summary rows, resume), the pure
evaluation functions in ensembles.evaluate, packed-or-sequential training in
distill.training.jobs (shared with the born-again chains). Config keys: the `ensemble` section (`distill list keys`).
"""

from .evaluate import COMBINES, combine_probs, disagreement, gap_recovered, size_curve, subsets
from .experiment import member_archs, member_seed, member_train, student_archs


def run(cfg, out="runs", **kwargs):
    """Members -> ensemble evaluation -> students, per seed (see ensembles.experiment.run); returns the run dir."""
    from .experiment import run as _run

    return _run(cfg, out, **kwargs)


__all__ = ["COMBINES", "combine_probs", "disagreement", "gap_recovered", "member_archs", "member_seed",
           "member_train", "run", "size_curve", "student_archs", "subsets"]
