"""Language-model methods: formulas and records that `distill.methods.losses` registers at its end
(kept apart so that file stays the list of the classic methods; this module imports no other method).

    distill train lm-pydoc-kd distill.method=gkd distill.gkd_lambda=0.5 distill.jsd_beta=0.5

**gkd** (Agarwal et al. 2024, generalized knowledge distillation; TRL's `GKDTrainer`): on-policy
distillation. With probability lambda (`distill.gkd_lambda`) a step's batch is the student's own
generations: the first `block + 1 - gkd_length` tokens of each training block are a prompt, the
student samples `gkd_length` tokens at `gkd_temperature` (no gradient), and the teacher scores those
sequences online; else the batch is the data, as for token-level KD. The loss is the generalised JSD
of the teacher's and the student's next-token distributions at T (`distill.temperature`, T^2 scaled
as kd; T = 1 is TRL's loss), averaged over the positions that predict a generated token (the
prompt is masked; on a data batch every position counts), and nothing else (mix `teacher_only`: no
label term, as in TRL). `distill.jsd_beta` = 0 is forward KL(p_t || p_s) (supervised KD, Hinton),
1 is reverse KL(p_s || p_t) (TRL's ends). The generation and the on-policy choice are the objective's
(`distill.training.lm_objectives.TokenLevel`), drawn from a generator seeded by the run's seed and
the step, so a resumed run draws the same tokens.
"""

from __future__ import annotations

from distill.methods import Option
from distill.methods.parts import cross_entropy, generalized_jsd, tempered_log_probs

#: (name, formula, the record's other fields), registered by distill.methods.losses
RECORDS: list[tuple] = []

#: the generalised JSD's beta, read by jsd and gkd (one declaration: one key, one range)
JSD_BETA = Option("jsd_beta", "beta", float, 0.5, {"ge": 0.0, "le": 1.0},
                  "the mixture weight beta of the generalised JSD (0.5: symmetric; 0: forward KL, 1: reverse KL)")


def record(name: str, **fields):
    """Add the method `name` (its formula, decorated) to RECORDS; `losses.register` makes it a method."""
    def add(fn):
        RECORDS.append((name, fn, fields))
        return fn
    return add


@record("gkd", reduction="batchmean", t2_scaling=True, mix="teacher_only",
        objective="distill.training.lm_objectives:TokenLevel",
        matches="the teacher's next-token distribution on the student's own samples (a share lambda of the "
                "steps) and on the data, generalised JSD",
        paper="Agarwal et al. 2024 (GKD, on-policy distillation)",
        options=(Option("gkd_lambda", "on_policy", float, 0.5, {"ge": 0.0, "le": 1.0},
                        "the share of steps whose batch is the student's own generations (else the data)",
                        to="policy"),
                 JSD_BETA,
                 Option("gkd_temperature", "temperature", float, 1.0, {"gt": 0.0},
                        "the student's sampling temperature when it generates", to="policy"),
                 Option("gkd_length", "length", int, 32, {"ge": 1},
                        "tokens the student generates after each prompt (the prompt: the rest of the block)",
                        to="policy")))
def gkd(student_logits, teacher_logits, targets, *, temperature: float, beta: float = 0.5) -> dict:
    """GKD's loss on the rows it is given: T^2 * JSD(beta)(p_t^T || p_s^T) (parts.generalized_jsd), batchmean;
    task = CE(y, s), logged only (on an on-policy batch y are the student's own samples)."""
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    return {"teacher": generalized_jsd(log_p, log_q, beta) * temperature**2,
            "task": cross_entropy(student_logits, targets)}
