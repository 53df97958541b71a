"""The one seed rule: which initialisation and which data order every model a run trains gets.

    from distill.training.seeds import model_seeds
    model_seeds(0, "student")            # Seeds(init=0, data=0)
    model_seeds(0, "teacher")            # Seeds(init=2000006, data=2000006): never the student's
    model_seeds(2, "member", 3)          # member 3 of run seed 2
    model_seeds(1, "generation", 2)      # born-again generation 2 of run seed 1

`init` seeds the model's weights (and the RNG its training starts from, `engine.new_model`), `data`
the order of its batches and its augmentation (`engine.epoch_seed`). Every summary row of a trained
model records both (`init_seed`, `data_seed`).

The rule, by role (`index` is the member, generation or peer):

- the models a run's claims are about, and the baselines they are compared with, start from the
  run seed s, both seeds: `model` and `student` (of `distill train`, an ensemble's students),
  `baseline` (an ensemble student's architecture from labels with the student's budget), `alone`
  (mutual learning's peer trained alone), `generation` 0. A student and its baseline of one seed,
  in one run or in two, thus share weights and batches and differ only in what they learn from:
  the comparison is paired by seed, with common random numbers.
- `generation` g >= 1 (born-again): s * 1009 + g * 7919, both seeds.
- `direct` (TAKD's direct baseline, `index` = the last generation): that generation's seeds, the
  pair it is compared with.
- `peer` k (mutual learning): the data seed is s for every peer (one batch for all, which the joint
  loss reads); the init is s for index 0 (the first peer of each architecture: the one its `alone`
  baseline pairs with), else s * 1009 + k * 7919.
- `member` m (ensemble): s * 1009 + m * 7919 + 1_000_003, both seeds.
- `teacher` (the teacher section of `distill train`, trained first from labels): s * 1009 + 2_000_006,
  both seeds, so a teacher of the student's own architecture (tfkd_self, same-architecture KD)
  never starts from the student's weights or sees its batches in its order, unless
  distill.teacher_same_seed=true asks for the run seed (the student's).

Within one run every model that is not one of the declared pairs above has an init seed and a
data seed of its own (tests/test_seeds.py checks seeds 0..49, indexes 0..49).
"""

from __future__ import annotations

from typing import NamedTuple

#: roles that start from the run seed itself
RUN_SEED_ROLES = ("model", "student", "baseline", "alone")
#: roles with a stream of their own: run seed * 1009 + index * 7919 + offset
STREAMS = {"generation": 0, "peer": 0, "member": 1_000_003, "teacher": 2_000_006}
ROLES = RUN_SEED_ROLES + tuple(STREAMS) + ("direct",)


class Seeds(NamedTuple):
    init: int   # weights (engine.new_model)
    data: int   # batch order and augmentation (engine.epoch_seed)


def model_seeds(seed: int, role: str, index: int = 0, *, same_as_run: bool = False) -> Seeds:
    """The (init, data) seeds of the model `role` number `index` of run seed `seed` (see the module
    docstring); `same_as_run` gives the run seed itself (distill.teacher_same_seed)."""
    if role not in ROLES:
        raise ValueError(f"model_seeds: unknown role {role!r}; one of {', '.join(ROLES)}")
    if role == "direct":
        return model_seeds(seed, "generation", index)
    if same_as_run or role in RUN_SEED_ROLES or (role in ("generation", "peer") and index == 0):
        return Seeds(seed, seed)
    derived = seed * 1009 + index * 7919 + STREAMS[role]
    return Seeds(derived, seed if role == "peer" else derived)


def seed_columns(seeds: Seeds) -> dict:
    """What a summary row records of them."""
    return {"init_seed": seeds.init, "data_seed": seeds.data}
