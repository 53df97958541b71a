"""The papers' formulas and recipes, against independent transcriptions (issue #22).

Each reference here is written from the paper or the authors' code, not from distill's formulas:
plain numpy loops for CWTM (Furlanello et al. 2018, eq. 10), a line-by-line transcription of
the Tf-KD authors' `loss_kd_regularization` and `loss_kd_self` (yuanli2333/Teacher-free-Knowledge-
Distillation, my_loss_function.py), and the hyperparameters of mdistiller's DKD configs and of
the Tf-KD params.json files, copied as published.

    .venv/bin/python -m pytest tests/test_paper_recipes.py -q
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.config import load_config
from distill.methods.losses import LOSS_INFO, METHODS
from distill.methods.objectives import mix, mix_weights

# the transcriptions keep the authors' KLDivLoss "mean" (batch and classes), which torch warns about
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")


def loss_of(method, student, teacher, targets, *, alpha, **kw):
    """The method's loss through the one mixer, as training computes it."""
    terms = METHODS[method](student, teacher, targets, **kw)
    return mix(terms, mix_weights(LOSS_INFO[method]["mix"], alpha))


# ---------------------------------------------------------------- CWTM (Furlanello et al. 2018, eq. 10)


def cwtm_reference(student, teacher, labels, alpha):
    """sum_i [max_c p_t(c|x_i) / sum_j max_c p_t(c|x_j)] * (-log q(y_i|x_i)), mixed with the mean CE.

    The target is the ground-truth label; the teacher's confidence (its max) weighs the examples."""
    def softmax(row):
        e = np.exp(row - row.max())
        return e / e.sum()

    confidence = [softmax(t).max() for t in teacher]
    nll = [-np.log(softmax(s)[y]) for s, y in zip(student, labels)]
    weighted = sum(c / sum(confidence) * n for c, n in zip(confidence, nll))
    return alpha * weighted + (1 - alpha) * sum(nll) / len(nll)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_cwtm_trains_on_the_labels_weighted_by_teacher_max(alpha):
    rng = np.random.default_rng(0)
    student = rng.normal(size=(6, 5)) * 2
    labels = np.array([0, 1, 2, 3, 4, 0])
    teacher = rng.normal(size=(6, 5))
    wrong = [(y + 1) % 5 for y in labels]
    for i in (0, 2, 3):  # the teacher is confidently wrong on three examples
        teacher[i, wrong[i]] += 6.0
    assert (teacher.argmax(1) != labels).sum() >= 3
    s, t, y = (torch.tensor(student), torch.tensor(teacher), torch.tensor(labels))
    got = loss_of("cwtm", s, t, y, alpha=alpha, temperature=1.0)
    assert got.item() == pytest.approx(cwtm_reference(student, teacher, labels, alpha), rel=1e-10)
    # the gradient: alpha * w_i (q_i - onehot(y_i)) + (1 - alpha) (q_i - onehot(y_i)) / B, the labels' direction
    z = s.clone().requires_grad_(True)
    loss_of("cwtm", z, t, y, alpha=alpha, temperature=1.0).backward()
    q = torch.softmax(s, 1)
    conf = torch.softmax(t, 1).max(1).values
    expected = (alpha * conf / conf.sum() + (1 - alpha) / 6)[:, None] * (q - F.one_hot(y, 5).double())
    torch.testing.assert_close(z.grad, expected)


def test_ban_densenet_preset_runs_cwtm_and_dkpp_without_a_label_term():
    """The paper's CWTM and DKPP (eq. 10, 11) have no separate label term: alpha = 1 when the preset's
    control columns are run with distill.method=cwtm or dkpp (ban and ban_l ignore alpha)."""
    for method in ("cwtm", "dkpp"):
        cfg = load_config("ban-cifar100-densenet", [f"distill.method={method}"])
        assert cfg.distill.alpha == 1.0 and cfg.distill.temperature == 1.0


# ---------------------------------------------------------------- Tf-KD (Yuan et al. 2020), the authors' code


def their_loss_kd_regularization(outputs, labels, params):
    """my_loss_function.py, loss_kd_regularization, transcribed (`.cuda()` dropped; nn.KLDivLoss()'s
    default reduction in their torch 1.2 is the element-wise mean, written out here)."""
    alpha = params.reg_alpha
    T = params.reg_temperature
    correct_prob = 0.99    # the probability for correct class in u(k)
    loss_CE = F.cross_entropy(outputs, labels)
    K = outputs.size(1)

    teacher_soft = torch.ones_like(outputs)
    teacher_soft = teacher_soft * (1 - correct_prob) / (K - 1)  # p^d(k)
    for i in range(outputs.shape[0]):
        teacher_soft[i, labels[i]] = correct_prob
    loss_soft_regu = nn.KLDivLoss(reduction="mean")(F.log_softmax(outputs, dim=1),
                                                    F.softmax(teacher_soft / T, dim=1)) * params.multiplier

    KD_loss = (1. - alpha) * loss_CE + alpha * loss_soft_regu
    return KD_loss


def their_loss_kd_self(outputs, labels, teacher_outputs, params):
    """my_loss_function.py, loss_kd_self, transcribed (same KLDivLoss reduction)."""
    alpha = params.alpha
    T = params.temperature

    loss_CE = F.cross_entropy(outputs, labels)
    D_KL = nn.KLDivLoss(reduction="mean")(F.log_softmax(outputs / T, dim=1),
                                          F.softmax(teacher_outputs / T, dim=1)) * (T * T) * params.multiplier
    KD_loss = (1. - alpha) * loss_CE + alpha * D_KL
    return KD_loss


def _batch(dtype, classes=100, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, classes, generator=g, dtype=dtype) * 3,
            torch.randn(n, classes, generator=g, dtype=dtype) * 3,
            torch.randint(0, classes, (n,), generator=g))


# their CIFAR-100 params.json files (experiments/base_experiments/base_*/params.json, --regularization)
REG_PARAMS = {"resnet18": {"reg_temperature": 20, "reg_alpha": 0.1, "multiplier": 100.0},
              "mobilenet_v2": {"reg_temperature": 40, "reg_alpha": 0.95, "multiplier": 1.0},
              "shufflenet_v2": {"reg_temperature": 10, "reg_alpha": 0.95, "multiplier": 1.0}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model", sorted(REG_PARAMS))
def test_tfkd_reg_is_the_authors_loss_kd_regularization(model, dtype):
    student, _, labels = _batch(dtype)
    params = SimpleNamespace(**REG_PARAMS[model])
    theirs = their_loss_kd_regularization(student, labels, params)
    ours = loss_of("tfkd_reg", student, None, labels, alpha=params.reg_alpha, temperature=params.reg_temperature,
                   multiplier=params.multiplier)  # correct_prob: the default, their hard-coded 0.99
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    z, w = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    their_loss_kd_regularization(z, labels, params).backward()
    loss_of("tfkd_reg", w, None, labels, alpha=params.reg_alpha, temperature=params.reg_temperature,
            multiplier=params.multiplier).backward()
    torch.testing.assert_close(w.grad, z.grad, rtol=1e-5, atol=1e-7)


# experiments/kd_experiments/*_distill/*_self_teacher/params.json (CIFAR-100, --self_training)
SELF_PARAMS = {"resnet18": {"alpha": 0.95, "temperature": 6, "multiplier": 50.0},
               "mobilenet_v2": {"alpha": 0.95, "temperature": 20, "multiplier": 1.0},
               "shufflenet_v2": {"alpha": 0.95, "temperature": 20, "multiplier": 1.0}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model", sorted(SELF_PARAMS))
def test_tfkd_self_is_the_authors_loss_kd_self(model, dtype):
    student, teacher, labels = _batch(dtype, seed=1)
    params = SimpleNamespace(**SELF_PARAMS[model])
    theirs = their_loss_kd_self(student, labels, teacher, params)
    ours = loss_of("tfkd_self", student, teacher, labels, alpha=params.alpha, temperature=params.temperature,
                   multiplier=params.multiplier)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_tfkd_preset_uses_the_authors_resnet18_self_training_recipe():
    """resnet18_self_teacher/params.json and their training code (main.py, train_kd.py): SGD lr 0.1,
    momentum 0.9, weight decay 5e-4, batch 128, 200 epochs, x0.2 at epochs 60, 120, 160, one warm-up epoch."""
    cfg = load_config("tfkd-cifar100")
    d, tr = cfg.distill, cfg.train
    assert (d.method, d.alpha, d.temperature, d.tfkd_multiplier) == ("tfkd_self", 0.95, 6.0, 50.0)
    assert (tr.optimizer, tr.lr, tr.momentum, tr.nesterov, tr.weight_decay, tr.batch_size, tr.epochs) == \
        ("sgd", 0.1, 0.9, False, 5e-4, 128, 200)
    assert tr.schedule == "step" and [m * tr.epochs for m in tr.milestones] == [60, 120, 160] and tr.gamma == 0.2
    assert tr.warmup_epochs == 1.0
    assert "multiplier" in cfg.paper.differences


# ---------------------------------------------------------------- DKD presets (mdistiller)


# megvii-research/mdistiller: mdistiller/engine/cfg.py (CFG.DKD, CFG.SOLVER) with
# configs/cifar100/dkd/res56_res20.yaml (DKD.BETA 2.0) and res32x4_res8x4.yaml (the default BETA 8.0)
MDISTILLER = {"ce_weight": 1.0, "alpha": 1.0, "t": 4.0, "warmup": 20, "batch_size": 64, "epochs": 240, "lr": 0.05,
              "decay_stages": [150, 180, 210], "decay_rate": 0.1, "weight_decay": 0.0005, "momentum": 0.9}
DKD_BETA = {"logits-cifar100-r56-r20": 2.0, "logits-cifar100-r32x4-r8x4": 8.0}


@pytest.mark.parametrize("preset", sorted(DKD_BETA))
def test_logit_presets_run_dkd_with_mdistillers_setting(preset):
    cfg = load_config(preset, ["distill.method=dkd"])
    d, tr, m = cfg.distill, cfg.train, MDISTILLER
    assert d.dkd_beta == DKD_BETA[preset]
    assert (d.dkd_alpha, d.temperature, d.dkd_warmup_epochs) == (m["alpha"], m["t"], m["warmup"])
    assert mix_weights("dkd", d.alpha, epoch=40, tckd=1.0, nckd=1.0, warmup_epochs=20.0)["task"] == m["ce_weight"]
    assert (tr.batch_size, tr.epochs, tr.lr, tr.weight_decay, tr.momentum, tr.nesterov, tr.optimizer) == \
        (m["batch_size"], m["epochs"], m["lr"], m["weight_decay"], m["momentum"], False, "sgd")
    assert tr.schedule == "step" and tr.gamma == m["decay_rate"]
    assert [m_ * tr.epochs for m_ in tr.milestones] == m["decay_stages"]


# ---------------------------------------------------------------- kd, dkd, attention, rkd: mdistiller's functions
# (audits of formulas this change leaves alone: they pass before and after it)


def mdistiller_kd_loss(logits_student, logits_teacher, temperature):
    """mdistiller/distillers/KD.py, kd_loss, transcribed."""
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def mdistiller_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    """mdistiller/distillers/DKD.py, dkd_loss with _get_gt_mask, _get_other_mask and cat_mask, transcribed
    (size_average=False is reduction="sum")."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.reshape(-1).unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.reshape(-1).unsqueeze(1), 0).bool()

    def cat_mask(t, mask1, mask2):
        return torch.cat([(t * mask1).sum(dim=1, keepdims=True), (t * mask2).sum(1, keepdims=True)], dim=1)

    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1), gt_mask, other_mask)
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1), gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = (F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
                 * (temperature**2) / target.shape[0])
    return alpha * tckd_loss + beta * nckd_loss


def test_kd_is_mdistillers_kd_with_its_weights():
    student, teacher, labels = _batch(torch.float64, seed=2)
    theirs = 0.1 * F.cross_entropy(student, labels) + 0.9 * mdistiller_kd_loss(student, teacher, 4.0)  # CFG.KD
    ours = loss_of("kd", student, teacher, labels, alpha=0.9, temperature=4.0)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("epoch", [1, 7, 20, 100])
def test_dkd_is_mdistillers_dkd_with_its_warmup(epoch):
    student, teacher, labels = _batch(torch.float64, seed=3)
    beta = 2.0
    theirs = (1.0 * F.cross_entropy(student, labels)  # DKD.forward_train: CE_WEIGHT 1, min(epoch / WARMUP, 1)
              + min(epoch / 20, 1.0) * mdistiller_dkd_loss(student, teacher, labels, 1.0, beta, 4.0))
    terms = METHODS["dkd"](student, teacher, labels, temperature=4.0)
    ours = mix(terms, mix_weights("dkd", 1.0, epoch=epoch, tckd=1.0, nckd=beta, warmup_epochs=20.0))
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_attention_and_rkd_are_mdistillers_at_and_rkd():
    g = torch.Generator().manual_seed(4)
    f_s = [torch.randn(8, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(8, 6, 3, 3, generator=g,
                                                                                 dtype=torch.float64)]
    f_t = [torch.randn(8, 7, 5, 5, generator=g, dtype=torch.float64), torch.randn(8, 2, 3, 3, generator=g,
                                                                                 dtype=torch.float64)]
    logits, labels = torch.zeros(8, 3, dtype=torch.float64), torch.zeros(8, dtype=torch.long)

    def at(feat):  # mdistiller/distillers/AT.py, single_stage_at_loss's _at (p = 2), same spatial size
        return F.normalize(feat.pow(2).mean(1).reshape(feat.size(0), -1))

    theirs = sum((at(s) - at(t)).pow(2).mean() for s, t in zip(f_s, f_t))
    ours = METHODS["attention"](logits, None, labels, student_features=f_s, teacher_features=f_t)["teacher"]
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)

    def pdist(e, eps=1e-12):  # mdistiller/distillers/RKD.py, _pdist (squared=False)
        res = (e.pow(2).sum(1).unsqueeze(1) + e.pow(2).sum(1).unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
        res = res.clone()
        res[range(len(e)), range(len(e))] = 0
        return res

    def rkd_loss(f_s, f_t, distance_weight=25, angle_weight=50):  # rkd_loss, transcribed
        stu, tea = f_s.view(f_s.shape[0], -1), f_t.view(f_t.shape[0], -1)
        t_d = pdist(tea)
        t_d = t_d / t_d[t_d > 0].mean()
        d = pdist(stu)
        d = d / d[d > 0].mean()
        loss_d = F.smooth_l1_loss(d, t_d)
        norm_td = F.normalize(tea.unsqueeze(0) - tea.unsqueeze(1), p=2, dim=2)
        norm_sd = F.normalize(stu.unsqueeze(0) - stu.unsqueeze(1), p=2, dim=2)
        loss_a = F.smooth_l1_loss(torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1),
                                  torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1))
        return distance_weight * loss_d + angle_weight * loss_a

    pooled_s, pooled_t = [f.mean((2, 3)) for f in f_s[:1]], [f.mean((2, 3)) for f in f_t[:1]]
    theirs = rkd_loss(pooled_s[0], pooled_t[0])
    ours = METHODS["rkd"](logits, None, labels, student_features=pooled_s, teacher_features=pooled_t,
                          weight=25.0)["teacher"]
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-8)


# ---------------------------------------------------------------- dist, wttm, ctkd, logit standardisation:
# the authors' code (audits of formulas this change leaves alone: they pass before and after it)


def test_dist_is_the_authors_dist_with_their_cifar_weights():
    """hunto/image_classification_sota lib/models/losses/dist_kd.py DIST (tau 4, kd `dist_t4`) with
    configs/strategies/distill/dist_cifar.yaml: ori_loss_weight 1, kd_loss_weight 2."""
    def pearson(a, b, eps=1e-8):
        a, b = a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    def inter_class_relation(y_s, y_t):
        return 1 - pearson(y_s, y_t).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))

    student, teacher, labels = _batch(torch.float64, seed=5)
    tau = 4.0
    y_s, y_t = (student / tau).softmax(dim=1), (teacher / tau).softmax(dim=1)
    dist = tau**2 * inter_class_relation(y_s, y_t) + tau**2 * intra_class_relation(y_s, y_t)
    theirs = 1.0 * F.cross_entropy(student, labels) + 2.0 * dist
    terms = METHODS["dist"](student, teacher, labels, temperature=tau)
    ours = mix(terms, mix_weights("dist", 0.0, inter=2.0, intra=2.0))
    # theirs adds 1e-8 to the product of the norms, ours only bounds it below by 1e-8 (exact Pearson,
    # zero at a perfect match): the two differ by about 3e-8 relative here
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-7)


def test_wttm_is_the_authors_wttm():
    """zkxufo/TTM distiller_zoo/wttm.py WTTM(l) with train_student.py's loss gamma * CE + beta * WTTM (-r 1)."""
    student, teacher, labels = _batch(torch.float64, seed=6)
    T, beta = 4.0, 1.5
    p_s = F.log_softmax(student, dim=1)
    p_t = torch.pow(torch.softmax(teacher, dim=1), 1 / T)
    norm = torch.sum(p_t, dim=1)
    p_t = p_t / norm.unsqueeze(1)
    wttm = torch.mean(norm * torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=1))
    theirs = 1.0 * F.cross_entropy(student, labels) + beta * wttm
    terms = METHODS["wttm"](student, teacher, labels, temperature=T)
    ours = mix(terms, mix_weights("wttm", 0.0, teacher=beta))
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_ctkd_temperature_and_curriculum_are_the_authors():
    """zhengli97/CTKD: T = t_start + t_end * sigmoid(global_T) (helper/loops.py; 1 and 20, global_T starting
    at 1, models/temp_global.py), the gradient multiplied by CosineDecay(0, -1, loops).get_value(epoch)
    (train_student.py, epochs from 1): a reversal of strength (1 - cos(pi * epoch / loops)) / 2."""
    from distill.methods.objectives import CTKD_THETA0, ctkd_reversal, ctkd_temperature

    def cosine_decay(i, max_value=0.0, min_value=-1.0, loops=10):
        i = min(max(i, 0), loops)
        value = (np.cos(i * np.pi / loops) + 1.0) * 0.5
        return value * (max_value - min_value) + min_value

    for epoch in (1, 3, 5, 10, 40):
        theirs = cosine_decay(epoch)
        assert ctkd_reversal(epoch, loops=10.0, lambda_max=1.0) == pytest.approx(-theirs, abs=1e-12)
        theta = torch.tensor(CTKD_THETA0, dtype=torch.float64, requires_grad=True)
        temperature = ctkd_temperature(theta, -theirs)
        assert temperature.item() == pytest.approx(1.0 + 20.0 * torch.sigmoid(torch.tensor(1.0)).item())
        temperature.backward()
        s = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
        plain = 20.0 * s * (1 - s)
        assert theta.grad.item() == pytest.approx(theirs * plain.item(), abs=1e-12)  # their GRL: grad * value


def test_logit_standardisation_is_the_authors_normalize():
    """sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py normalize and kd_loss(logit_stand=True)."""
    def normalize(logit):
        mean = logit.mean(dim=-1, keepdims=True)
        stdv = logit.std(dim=-1, keepdims=True)
        return (logit - mean) / (1e-7 + stdv)

    student, teacher, labels = _batch(torch.float64, seed=7)
    from distill.methods.losses import standardize

    T = 2.0  # their --base-temp 2
    log_pred_student = F.log_softmax(normalize(student) / T, dim=1)
    pred_teacher = F.softmax(normalize(teacher) / T, dim=1)
    theirs = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean() * T**2
    ours = METHODS["kd"](standardize(student), standardize(teacher), labels, temperature=T)["teacher"]
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-9)
