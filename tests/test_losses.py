"""Each distillation loss against a plain, obviously-correct reference (values and gradients).

    .venv/bin/python -m pytest tests/test_losses.py -q
"""

import math

import pytest
import torch

from distill.methods import losses
from distill.methods.losses import LOSS_INFO, METHODS, list_methods
from distill.methods.objectives import mix, mix_weights, value_at
from distill.teachers.signals import teacher_views

B, C = 6, 5


def softmax_rows(z, T=1.0):
    """Plain softmax, one row at a time, with Python's math."""
    out = []
    for row in z.tolist():
        m = max(row)
        e = [math.exp((v - m) / T) for v in row]
        out.append([v / sum(e) for v in e])
    return torch.tensor(out, dtype=torch.float64)


def ref_kl(p, q):
    """sum_c p log(p / q) per row, averaged over rows (0 log 0 = 0)."""
    return sum(sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr) if pi > 0)
               for pr, qr in zip(p.tolist(), q.tolist())) / len(p)


def ref_ce(probs_student, labels):
    return sum(-math.log(row[y]) for row, y in zip(probs_student.tolist(), labels.tolist())) / len(labels)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, C, (B,), generator=g)
    return student, teacher, targets


def L(method, student, teacher, targets, *, alpha=1.0, smoothing=0.0, **kw):
    """A method's terms and its loss through the one mixer, keyed as the tests read them."""
    terms = METHODS[method](student, teacher, targets, **kw)
    loss = mix(terms, mix_weights(LOSS_INFO[method]["mix"], alpha, smoothing))
    return {"loss": loss, "kd_loss": terms["teacher"], "task_loss": terms["task"]}


def grad_of(fn, student):
    """d fn / d student; zeros where fn does not depend on it (a term the mixer weighs 0 is left out)."""
    s = student.clone().requires_grad_(True)
    out = fn(s)
    if not out.requires_grad:
        return torch.zeros_like(student)
    out.backward()
    return s.grad


def test_registry_and_listing():
    expected = {"kd", "ban", "ban_l", "cwtm", "dkpp", "tfkd_self", "tfkd_reg", "label_smoothing",
                "fitnet", "attention", "rkd"}
    assert expected <= set(METHODS)
    for name in expected:
        assert {"method", "reduction", "t2_scaling", "signal", "mix"} <= set(LOSS_INFO[name])
    assert LOSS_INFO["kd"]["reduction"] == "batchmean" and LOSS_INFO["kd"]["t2_scaling"] is True
    lines = list_methods()
    assert any(line.startswith("kd: Hinton") for line in lines)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_kd_matches_reference(batch, T, alpha):
    s, t, y = batch
    out = L("kd", s, t, y, temperature=T, alpha=alpha)
    kl = ref_kl(softmax_rows(t, T), softmax_rows(s, T))
    ce = ref_ce(softmax_rows(s), y)
    assert out["kd_loss"].item() == pytest.approx(T**2 * kl, rel=1e-10)  # T^2 scaling on, batchmean
    assert out["task_loss"].item() == pytest.approx(ce, rel=1e-10)
    assert out["loss"].item() == pytest.approx(alpha * T**2 * kl + (1 - alpha) * ce, rel=1e-10)
    # gradient: (alpha * T * (p_s^T - p_t^T) + (1 - alpha) * (p_s - onehot)) / B
    onehot = torch.nn.functional.one_hot(y, C).double()
    expected = (alpha * T * (softmax_rows(s, T) - softmax_rows(t, T))
                + (1 - alpha) * (softmax_rows(s) - onehot)) / B
    got = grad_of(lambda z: L("kd", z, t, y, temperature=T, alpha=alpha)["loss"], s)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-12)


def test_combine_modes_match_their_definitions(batch):
    s, t, y = batch
    z = torch.stack([t, 2 * t.flip(1), -t])
    T = 2.0
    mean_probs = sum(softmax_rows(zk, T) for zk in z) / 3
    (view,) = teacher_views(z, T, "mean_probs")
    torch.testing.assert_close(torch.softmax(view / T, 1), mean_probs)
    (view,) = teacher_views(z, T, "mean_logits")
    torch.testing.assert_close(torch.softmax(view / T, 1), softmax_rows(z.mean(0), T))
    views = teacher_views(z, T, "per_teacher_kl")
    assert len(views) == 3 and all(torch.equal(v, zk) for v, zk in zip(views, z))


def test_ban_and_ban_l(batch):
    s, t, y = batch
    T = 2.0
    kl = ref_kl(softmax_rows(t, T), softmax_rows(s, T))
    ce = ref_ce(softmax_rows(s), y)
    for alpha in (0.0, 0.5, 1.0):  # alpha is ignored by both
        assert L("ban", s, t, y, temperature=T, alpha=alpha)["loss"].item() == pytest.approx(T**2 * kl)
        assert L("ban_l", s, t, y, temperature=T, alpha=alpha)["loss"].item() == pytest.approx(T**2 * kl + ce)
    g = grad_of(lambda z: L("ban", z, t, y, temperature=T)["loss"], s)
    torch.testing.assert_close(g, T * (softmax_rows(s, T) - softmax_rows(t, T)) / B)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_cwtm_matches_reference(batch, alpha):
    s, t, y = batch
    T = 1.0
    p_t = softmax_rows(t, T)
    assert (p_t.argmax(1) != y).any()  # the teacher is wrong somewhere: its class is not the target
    conf = p_t.max(1).values.tolist()
    p_s = softmax_rows(s)
    term = sum(c / sum(conf) * -math.log(p_s[i, y[i]].item()) for i, c in enumerate(conf))
    ce = ref_ce(p_s, y)
    out = L("cwtm", s, t, y, temperature=T, alpha=alpha)
    assert out["loss"].item() == pytest.approx(alpha * term + (1 - alpha) * ce, rel=1e-10)
    # gradient of the weighted CE with the labels: w_i * (p_s,i - onehot(y_i)) (weights are constants)
    w = torch.tensor(conf, dtype=torch.float64) / sum(conf)
    onehot = torch.nn.functional.one_hot(y, C)
    expected = alpha * w[:, None] * (p_s - onehot) + (1 - alpha) * (p_s - onehot) / B
    got = grad_of(lambda z: L("cwtm", z, t, y, temperature=T, alpha=alpha)["loss"], s)
    torch.testing.assert_close(got, expected)


def test_dkpp_permutation_keeps_argmax_and_values(batch):
    _, t, _ = batch
    p = torch.softmax(t, 1)
    g = torch.Generator().manual_seed(3)
    permuted = losses.permute_non_argmax(p, g)
    assert torch.equal(permuted.argmax(1), p.argmax(1))
    torch.testing.assert_close(permuted.max(1).values, p.max(1).values)
    torch.testing.assert_close(permuted.sort(1).values, p.sort(1).values)  # the same values, moved
    assert not torch.equal(permuted, p)
    again = losses.permute_non_argmax(p, torch.Generator().manual_seed(3))
    assert torch.equal(permuted, again)  # deterministic given the generator


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_dkpp_matches_reference(batch, alpha):
    s, t, y = batch
    T = 3.0
    permuted = losses.permute_non_argmax(softmax_rows(t, T), torch.Generator().manual_seed(5))
    expected = alpha * T**2 * ref_kl(permuted, softmax_rows(s, T)) + (1 - alpha) * ref_ce(softmax_rows(s), y)
    out = L("dkpp", s, t, y, temperature=T, alpha=alpha, generator=torch.Generator().manual_seed(5))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9)
    got = grad_of(lambda z: L("dkpp", z, t, y, temperature=T, alpha=alpha,
                                        generator=torch.Generator().manual_seed(5))["loss"], s)
    onehot = torch.nn.functional.one_hot(y, C).double()
    torch.testing.assert_close(got, (alpha * T * (softmax_rows(s, T) - permuted)
                                     + (1 - alpha) * (softmax_rows(s) - onehot)) / B)


def test_tfkd_self_is_kd_over_the_classes_times_the_multiplier(batch):
    s, t, y = batch
    a = L("tfkd_self", s, t, y, temperature=3.0, alpha=0.7, multiplier=50.0)
    b = L("kd", s, t, y, temperature=3.0, alpha=0.7)
    torch.testing.assert_close(a["kd_loss"], b["kd_loss"] * 50.0 / C)
    torch.testing.assert_close(a["task_loss"], b["task_loss"])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_tfkd_reg_matches_reference(batch, alpha):
    s, _, y = batch
    T, a, m = 4.0, 0.9, 3.0
    u = torch.full((B, C), (1 - a) / (C - 1), dtype=torch.float64)
    u[torch.arange(B), y] = a
    p_v = softmax_rows(u, T)  # the probabilities themselves over T, as the authors' code softens them
    expected = alpha * m * ref_kl(p_v, softmax_rows(s)) / C + (1 - alpha) * ref_ce(softmax_rows(s), y)
    out = L("tfkd_reg", s, None, y, temperature=T, alpha=alpha, correct_prob=a, multiplier=m)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    got = grad_of(lambda z: L("tfkd_reg", z, None, y, temperature=T, alpha=alpha, correct_prob=a,
                              multiplier=m)["loss"], s)
    onehot = torch.nn.functional.one_hot(y, C).double()
    torch.testing.assert_close(got, (alpha * m / C * (softmax_rows(s) - p_v)
                                     + (1 - alpha) * (softmax_rows(s) - onehot)) / B, rtol=1e-5, atol=1e-7)


def test_label_smoothing_matches_torch_and_reference(batch):
    s, _, y = batch
    eps = 0.2
    out = L("label_smoothing", s, None, y, smoothing=eps)
    target = torch.full((B, C), eps / C, dtype=torch.float64)
    target[torch.arange(B), y] += 1 - eps
    p_s = softmax_rows(s)
    expected = -(target * p_s.log()).sum(1).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-10)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(s, y, label_smoothing=eps))
    got = grad_of(lambda z: L("label_smoothing", z, None, y, smoothing=eps)["loss"], s)
    torch.testing.assert_close(got, (p_s - target) / B)


def _features():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    t = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    return s, t


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_fitnet_matches_reference(batch, alpha):
    sl, _, y = batch
    fs, ft = _features()
    sl = sl[:4]
    y = y[:4]
    mse = sum((a - b) ** 2 for a, b in zip(fs.flatten().tolist(), ft.flatten().tolist())) / fs.numel()
    out = L("fitnet", sl, None, y, alpha=alpha, student_features=[fs], teacher_features=[ft], weight=2.0)
    assert out["loss"].item() == pytest.approx(alpha * 2.0 * mse + (1 - alpha) * ref_ce(softmax_rows(sl), y))
    g = grad_of(lambda f: L("fitnet", sl, None, y, alpha=alpha, student_features=[f], teacher_features=[ft],
                                        weight=2.0)["loss"], fs)
    torch.testing.assert_close(g, alpha * 2.0 * 2 * (fs - ft) / fs.numel())


def test_attention_matches_reference(batch):
    sl, _, y = batch
    fs, ft = _features()
    sl, y = sl[:4], y[:4]

    def at(f):  # per example: mean over channels of f^2, then divided by its L2 norm
        rows = []
        for example in f:
            q = [sum(example[c, j].item() ** 2 for c in range(f.shape[1])) / f.shape[1] for j in range(f.shape[2])]
            norm = math.sqrt(sum(v * v for v in q))
            rows.append([v / norm for v in q])
        return rows

    a_s, a_t = at(fs), at(ft)
    expected = sum((x - z) ** 2 for rs, rt in zip(a_s, a_t) for x, z in zip(rs, rt)) / (4 * 6)
    out = L("attention", sl, None, y, alpha=1.0, student_features=[fs], teacher_features=[ft])
    assert out["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert torch.autograd.gradcheck(
        lambda f: L("attention", sl, None, y, alpha=0.5, student_features=[f], teacher_features=[ft])["loss"],
        (fs.clone().requires_grad_(True),))


def test_rkd_matches_reference(batch):
    sl, _, y = batch
    fs, ft = _features()
    sl, y = sl[:4], y[:4]
    es, et = fs.flatten(1), ft.flatten(1)
    n = es.shape[0]

    def distances(e):
        d = [[(e[i] - e[j]).norm().item() for j in range(n)] for i in range(n)]
        mean = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [d[i][j] / mean for i in range(n) for j in range(n)]

    def angles(e):
        out = []
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = u.norm().item(), v.norm().item()
                    out.append(0.0 if nu == 0 or nv == 0 else (u @ v).item() / (nu * nv))
        return out

    def huber(a, b):
        return sum(0.5 * (x - z) ** 2 if abs(x - z) < 1 else abs(x - z) - 0.5 for x, z in zip(a, b)) / len(a)

    expected = huber(distances(es), distances(et)) + 2 * huber(angles(es), angles(et))
    out = L("rkd", sl, None, y, alpha=1.0, student_features=[fs], teacher_features=[ft])
    assert out["loss"].item() == pytest.approx(expected, rel=1e-8)
    assert torch.autograd.gradcheck(
        lambda f: L("rkd", sl, None, y, alpha=1.0, student_features=[f], teacher_features=[ft])["loss"],
        (fs.clone().requires_grad_(True),))


def test_schedules():
    assert value_at("constant", 4.0, 1.0, 0.5) == 4.0
    assert value_at("linear", 4.0, None, 0.5) == 4.0  # no end: constant
    assert value_at("linear", 4.0, 1.0, 0.0) == 4.0
    assert value_at("linear", 4.0, 1.0, 0.5) == pytest.approx(2.5)
    assert value_at("cosine", 4.0, 1.0, 0.0) == pytest.approx(4.0)
    assert value_at("cosine", 4.0, 1.0, 0.5) == pytest.approx(2.5)
    assert value_at("cosine", 4.0, 1.0, 1.0) == pytest.approx(1.0)
    assert value_at("cosine", 0.9, 0.1, 0.25) == pytest.approx(0.1 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)


# ---------------------------------------------------------------- kd as a logit gradient (the training loop's path)


def F_ce(z, y):
    return torch.nn.functional.cross_entropy(z, y)




def test_cross_entropy_fused_kernel_equals_the_formula(batch):
    """(B, C) takes torch's fused F.cross_entropy; any leading shape takes the written-out formula."""
    s, _, y = batch
    fused = losses.cross_entropy(s, y)
    written = losses.cross_entropy(s[None], y[None])[0]
    torch.testing.assert_close(fused, written)
    torch.testing.assert_close(fused.item(), ref_ce(softmax_rows(s), y))
    torch.testing.assert_close(grad_of(lambda z: losses.cross_entropy(z, y), s),
                               grad_of(lambda z: losses.cross_entropy(z[None], y[None])[0], s))


def test_cross_entropy_of_stacked_models_is_each_models_own(batch):
    """K models' (K, B, C) batches: one mean per model, equal to each model's own (B, C) loss."""
    s, t, y = batch
    logits, targets = torch.stack([s, t, -s]), torch.stack([y, y.flip(0), y])
    stacked = losses.cross_entropy(logits, targets)
    torch.testing.assert_close(stacked, torch.stack([losses.cross_entropy(z, u) for z, u in zip(logits, targets)]))
    torch.testing.assert_close(stacked, losses.cross_entropy(logits[None], targets[None])[0])
