"""The modern logit methods (dkd, dist, wttm, ctkd, reverse_kl, jsd, skew_kl, tvd, standardize)
against plain references written with Python's math, one example and one class at a time,
and on their limiting cases.

    .venv/bin/python -m pytest tests/test_logit_methods.py -q
"""

import math

import pytest
import torch

from distill.methods import losses, options
from distill.methods.losses import LOSS_INFO, METHODS
from distill.methods.objectives import ctkd_reversal, ctkd_temperature
from tests.test_losses import batch  # noqa: F401 (the same random batch fixture)

B, C = 6, 5
NEW = ("dkd", "dist", "wttm", "ctkd", "reverse_kl", "jsd", "skew_kl", "tvd")


def probs(row, T=1.0):
    m = max(row)
    e = [math.exp((v - m) / T) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def ce(student, targets):
    return sum(-math.log(probs(row)[y]) for row, y in zip(student.tolist(), targets.tolist())) / len(targets)


def rows(student, teacher, T):
    return [(probs(s, T), probs(t, T)) for s, t in zip(student.tolist(), teacher.tolist())]


def close(value, reference, tol=1e-9):
    value = float(torch.as_tensor(value).detach())
    assert abs(value - float(reference)) < tol, (value, reference)


def test_registered_with_their_mix_kinds():
    for name in NEW:
        assert name in METHODS and LOSS_INFO[name]["signal"] == "logits"
    assert LOSS_INFO["dkd"]["mix"] == "dkd" and LOSS_INFO["dist"]["mix"] == "dist"
    assert LOSS_INFO["wttm"]["mix"] == "wttm" and LOSS_INFO["ctkd"]["mix"] == "alpha"


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_reverse_kl_tvd_match_reference(batch, T):
    s, t, y = batch
    pairs = rows(s, t, T)
    out = METHODS["reverse_kl"](s, t, y, temperature=T)
    close(out["teacher"], T**2 * sum(kl(q, p) for q, p in pairs) / B)
    close(out["task"], ce(s, y))
    out = METHODS["tvd"](s, t, y, temperature=T)
    close(out["teacher"], T**2 * sum(0.5 * sum(abs(a - b) for a, b in zip(q, p)) for q, p in pairs) / B)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_reference(batch, beta):
    s, t, y = batch
    total = 0.0
    for q, p in rows(s, t, 2.0):
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
        total += beta * kl(p, m) + (1 - beta) * kl(q, m)
    close(METHODS["jsd"](s, t, y, temperature=2.0, beta=beta)["teacher"], 4.0 * total / B)


def test_jsd_limits(batch):
    s, t, y = batch
    half = METHODS["jsd"](s, t, y, temperature=1.0, beta=0.5)["teacher"]
    assert 0 < half <= math.log(2)
    close(half, METHODS["jsd"](t, s, y, temperature=1.0, beta=0.5)["teacher"], 1e-12)  # symmetric at 1/2
    forward = METHODS["kd"](s, t, y, temperature=1.0)["teacher"]
    reverse = METHODS["reverse_kl"](s, t, y, temperature=1.0)["teacher"]
    close(METHODS["jsd"](s, t, y, temperature=1.0, beta=1e-6)["teacher"] / 1e-6, forward, 1e-3)
    close(METHODS["jsd"](s, t, y, temperature=1.0, beta=1 - 1e-6)["teacher"] / 1e-6, reverse, 1e-3)


@pytest.mark.parametrize("reverse", [False, True])
def test_skew_kl_matches_reference(batch, reverse):
    s, t, y = batch
    lam, total = 0.1, 0.0
    for q, p in rows(s, t, 2.0):
        a, b = (q, p) if reverse else (p, q)
        total += kl(a, [lam * u + (1 - lam) * v for u, v in zip(a, b)])
    close(METHODS["skew_kl"](s, t, y, temperature=2.0, skew=lam, reverse=reverse)["teacher"], 4.0 * total / B)
    plain = METHODS["reverse_kl" if reverse else "kd"](s, t, y, temperature=2.0)["teacher"]
    close(METHODS["skew_kl"](s, t, y, temperature=2.0, skew=0.0, reverse=reverse)["teacher"], plain, 1e-12)


def test_dkd_matches_reference_and_decomposes_kd(batch):
    s, t, y = batch
    T = 4.0
    tckd = nckd = 0.0
    for (q, p), label in zip(rows(s, t, T), y.tolist()):
        tckd += kl([p[label], 1 - p[label]], [q[label], 1 - q[label]])
        p_hat = [v / (1 - p[label]) for c, v in enumerate(p) if c != label]
        q_hat = [v / (1 - q[label]) for c, v in enumerate(q) if c != label]
        nckd += kl(p_hat, q_hat)
    out = METHODS["dkd"](s, t, y, temperature=T)
    close(out["tckd"], T**2 * tckd / B, 1e-8)
    close(out["nckd"], T**2 * nckd / B, 1e-8)
    close(out["task"], ce(s, y))
    for i in range(B):  # the paper's identity, per example: KD = TCKD + (1 - p_t,y) NCKD
        one = METHODS["dkd"](s[i:i + 1], t[i:i + 1], y[i:i + 1], temperature=T)
        p_ty = torch.softmax(t[i] / T, -1)[y[i]]
        kd = METHODS["kd"](s[i:i + 1], t[i:i + 1], y[i:i + 1], temperature=T)["teacher"]
        close(one["tckd"] + (1 - p_ty) * one["nckd"], float(kd), 1e-8)


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((u - ma) * (v - mb) for u, v in zip(a, b))
    return cov / math.sqrt(sum((u - ma) ** 2 for u in a) * sum((v - mb) ** 2 for v in b))


def test_dist_matches_reference(batch):
    s, t, y = batch
    T = 4.0
    pairs = rows(s, t, T)
    inter = sum(1 - pearson(q, p) for q, p in pairs) / B
    columns = [([q[c] for q, _ in pairs], [p[c] for _, p in pairs]) for c in range(C)]
    intra = sum(1 - pearson(qc, pc) for qc, pc in columns) / C
    out = METHODS["dist"](s, t, y, temperature=T)
    close(out["inter"], T**2 * inter, 1e-8)
    close(out["intra"], T**2 * intra, 1e-8)


def test_wttm_matches_reference(batch):
    s, t, y = batch
    T = 2.5
    total = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        p = probs(trow)
        powered = [v ** (1 / T) for v in p]
        u = sum(powered)
        total += u * kl([v / u for v in powered], probs(srow))  # the student has no temperature
    close(METHODS["wttm"](s, t, y, temperature=T)["teacher"], total / B, 1e-8)
    close(METHODS["wttm"](s, t, y, temperature=1.0)["teacher"],  # T = 1: U = 1, plain KL at T = 1
          float(METHODS["kd"](s, t, y, temperature=1.0)["teacher"]), 1e-10)


@pytest.mark.parametrize("method", ["dkd", "dist", "reverse_kl", "jsd", "skew_kl", "tvd", "ctkd"])
def test_zero_teacher_terms_when_student_equals_teacher(batch, method):
    _, t, y = batch
    out = METHODS[method](t.clone(), t, y, temperature=3.0)
    for name, value in out.items():
        if name != "task":
            assert abs(float(value)) < 1e-9, (name, float(value))


def test_wttm_at_its_minimum_when_the_student_matches_the_transformed_teacher(batch):
    _, t, y = batch
    T = 3.0
    out = METHODS["wttm"](t / T, t, y, temperature=T)  # softmax(t / T) is the transformed teacher
    assert abs(float(out["teacher"])) < 1e-9


def test_gradients_reach_the_student_and_are_finite(batch):
    s, t, y = batch
    for method in NEW:
        x = s.clone().requires_grad_(True)
        out = METHODS[method](x, t, y, temperature=4.0)
        sum(v for k, v in out.items() if k != "task").backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, method


def test_ctkd_gradient_reversal_and_curriculum(batch):
    s, t, y = batch
    theta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    T = ctkd_temperature(theta, 0.7)
    close(T, 1 + 20 / (1 + math.exp(-0.3)), 1e-12)
    METHODS["ctkd"](s, t, y, temperature=T)["teacher"].backward()
    reversed_grad = theta.grad.clone()
    theta.grad = None
    plain_t = 1 + 20 * torch.sigmoid(theta)
    METHODS["kd"](s, t, y, temperature=plain_t)["teacher"].backward()
    close(reversed_grad, -0.7 * float(theta.grad), 1e-10)   # the student's gradient, reversed and scaled
    values = [ctkd_reversal(n, 10, 1.0) for n in range(0, 13)]
    assert values[0] == pytest.approx(0.0) and values[10] == pytest.approx(1.0) and values[12] == 1.0
    assert values[5] == pytest.approx(0.5) and all(a <= b for a, b in zip(values, values[1:]))


def test_standardize_matches_reference():
    z = torch.tensor([[1.0, 2.0, 4.0], [0.0, -3.0, 3.0]], dtype=torch.float64)
    for row, out in zip(z.tolist(), losses.standardize(z).tolist()):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))
        assert out == pytest.approx([(v - mean) / (std + 1e-7) for v in row])
    shifted = losses.standardize(3 * z + 5)  # invariant to the teacher's scale and shift
    torch.testing.assert_close(shifted, losses.standardize(z))


def test_leading_dimensions_are_kept(batch):
    s, t, y = batch
    for method in NEW:
        stacked = METHODS[method](torch.stack([s, t]), torch.stack([t, t]), torch.stack([y, y]), temperature=2.0)
        single = METHODS[method](s, t, y, temperature=2.0)
        for name, value in single.items():
            torch.testing.assert_close(stacked[name][0], value)


def test_labels_is_cross_entropy_and_ignores_the_teacher(batch):
    s, t, y = batch
    out = METHODS["labels"](s, t, y, temperature=4.0)
    assert set(out) == {"task"}
    close(out["task"], ce(s, y))
    close(METHODS["labels"](s, None, y)["task"], ce(s, y))


def test_every_method_lists_what_it_matches_its_keys_and_its_paper(capsys):
    from distill.cli import main
    from distill.methods import DistillConfig
    from distill.methods.objectives import loss_info

    fields = set(DistillConfig.__dataclass_fields__) | {option.key for option, _ in options.all_options()}
    for name, method in METHODS.items():
        assert method.matches and method.paper, name
        assert set(method.keys) <= fields, (name, set(method.keys) - fields)
        info = loss_info(DistillConfig(method=name), None, None, 1, None)  # a method's own keys are recorded
        assert {option.key for option in method.options} <= set(info), name
    assert [option.key for option in METHODS["dkd"].options] == ["dkd_alpha", "dkd_beta", "dkd_warmup_epochs"]
    assert "temperature" not in METHODS["ctkd"].keys  # its T is learned
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(METHODS)
    dkd = next(line for line in lines if line.startswith("dkd: "))
    assert "Zhao et al. 2022" in dkd and "non-target" in dkd and "dkd_beta" in dkd
    assert all(line.count("Matches") == 1 and "keys (distill.*):" in line for line in lines)
