"""`distill mutual`: deep mutual learning (Zhang et al., CVPR 2018), the run of the kind
`distill.kinds.mutual` (the loss and the rows are described there).

    distill mutual mutual-mnist1d seeds=[0,1,2]
    distill mutual mutual-mnist1d train.epochs=2 dataset.num_samples=400 "seeds=[0]"   # tiny

The K peers of one seed are one `engine.fit`: every peer gets the seed's data order and
augmentation (one data seed, so the same batches), each its own initialisation (`peer_seeds`),
and one `Mutual` objective, `joint`, reads the K peers' logits of the batch (K, B, C) and gives
each peer its loss. Peers of one architecture train stacked when `replicas.can_stack` allows
(`replicas.Stacked`, BatchNorm statistics and dropout masks per peer); any others side by side (`SideBySide`: each peer run as itself, all in
the same steps). The `alone` baseline is trained by `fit_jobs` (its seeds stacked when the model
allows). A run killed anywhere resumes from its checkpoints with the numbers of one that never
stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from distill import engine
from distill.config import Config, ModelConfig
from distill.methods import DistillConfig
from distill.errors import UserError
from distill.export.cost import ensemble_row_cost, row_cost
from distill.kinds.mutual import KIND, problem
from distill.methods.objectives import CROSS_ENTROPY_INFO, Objective, loss_tags, value_at
from distill.methods.parts import cross_entropy, kl_logs, tempered_log_softmax
from distill.models import create_model
from distill.models.parts import count_params
from distill.runs.store import fit_summary, summary_row
from distill.teachers.signals import combine_log_probs
from distill.training.evaluation import predict
from distill.training.experiment import data_on_device, prepare
from distill.training.jobs import Job, arch_key, archs_for, fit_jobs
from distill.training.metrics import probs_metrics
from distill.training.replicas import Modules, can_stack, make_replicas
from distill.training.seeds import Seeds, model_seeds, seed_columns


# ---------------------------------------------------------------- the loss


def peer_terms(logits: torch.Tensor, targets: torch.Tensor, temperature) -> dict:
    """Deep mutual learning's terms of K peers' logits (K, B, C) of one batch, one value per peer:
    task = CE(y, z_k); peers = T^2 * 1/(K-1) * sum_{l != k} KL(p_l^T || p_k^T), the p_l detached."""
    count = logits.shape[0]
    log_p = tempered_log_softmax(logits, temperature)
    kl = kl_logs(log_p.detach()[:, None], log_p[None, :])  # kl[l, k] = KL(p_l || p_k): (K, K)
    others = 1.0 - torch.eye(count, device=logits.device, dtype=kl.dtype)
    return {"task": cross_entropy(logits, targets), "peers": temperature**2 * (kl * others).sum(0) / (count - 1)}


class Mutual(Objective):
    """The peers' objective: `peer_terms` weighed task 1, peers alpha (T and alpha with their schedules)."""

    stackable = True
    joint = True

    def __init__(self, cfg: DistillConfig):
        super().__init__()
        self.cfg = cfg

    def terms(self, batch, logits, features, progress):
        c = self.cfg
        temperature = value_at(c.temperature_schedule, c.temperature, c.temperature_end, progress)
        return peer_terms(logits.float(), batch.y, temperature)

    def weights(self, progress):
        c = self.cfg
        return {"task": 1.0, "peers": value_at(c.alpha_schedule, c.alpha, c.alpha_end, progress)}


def loss_info(cfg: DistillConfig, count: int) -> dict:
    """What the peers were trained with, as summary.json's `loss` records it."""
    return {"method": "mutual", "reduction": "batchmean", "t2_scaling": True, "paper": "Zhang et al. 2018",
            "formula": "CE(y, z_k) + alpha * T^2 * mean_{l != k} KL(p_l^T || p_k^T), p_l detached",
            "update": "simultaneous", "peers": count, "temperature": cfg.temperature,
            "temperature_end": cfg.temperature_end, "alpha": cfg.alpha, "alpha_end": cfg.alpha_end,
            "teacher": "the other peers"}


# ---------------------------------------------------------------- peers side by side


class SideBySide:
    """K models that cannot stack (different architectures, `replicas.can_stack`), each run as
    itself, all in the same step: the replicas interface of `distill.training.replicas`."""

    def __init__(self, models: list, compile: bool = False, channels_last: bool = False):
        self.models = models
        self.parts = [Modules(m, compile, channels_last) for m in models]

    def parameters(self) -> list[torch.Tensor]:
        return [p for part in self.parts for p in part.parameters()]

    def train(self, mode: bool = True) -> None:
        for part in self.parts:
            part.train(mode)

    def forward(self, xs: torch.Tensor, layers=()) -> tuple[torch.Tensor, list]:
        return torch.cat([part.forward(xs[k:k + 1])[0] for k, part in enumerate(self.parts)]), [[] for _ in self.parts]

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part.eval_logits(x) for part in self.parts])

    def state_dict(self, k: int) -> dict:
        return self.parts[k].state_dict(0)

    def load_state_dict(self, k: int, state: dict) -> None:
        self.parts[k].load_state_dict(0, state)

    def clip_(self, max_norm: float) -> None:
        for part in self.parts:
            part.clip_(max_norm)


# ---------------------------------------------------------------- what the config asks for


def peer_archs(cfg: Config) -> list[ModelConfig]:
    """Each peer's architecture: `mutual.models` (one for all, or one each) or the model section."""
    return archs_for(cfg.mutual.models, cfg.mutual.peers, cfg.model, "mutual.models")


def first_of_arch(archs: list[ModelConfig]) -> dict[str, int]:
    """architecture key -> the index of its first peer."""
    found: dict[str, int] = {}
    for k, arch in enumerate(archs):
        found.setdefault(arch_key(arch), k)
    return found


def peer_seeds(seed: int, k: int, archs: list[ModelConfig]) -> Seeds:
    """Peer k's seeds (`distill.training.seeds`): the run seed's data order for every peer; the run
    seed's initialisation for the first peer of each architecture (as its `alone` baseline), one of
    its own for every other."""
    return model_seeds(seed, "peer", 0 if first_of_arch(archs)[arch_key(archs[k])] == k else k)


# ---------------------------------------------------------------- the run


def _checked(cfg: Config, data) -> list[ModelConfig]:
    """The peers' architectures, each built once before the run folder exists."""
    archs = peer_archs(cfg)
    with torch.random.fork_rng(devices=[]):
        for k in first_of_arch(archs).values():
            create_model(archs[k], data.input_shape, data.num_classes)
    return archs


def check(cfg: Config, loaded: Optional[dict] = None) -> None:
    """What `run` checks before it writes anything (the kind's preflight: distill tune, each configuration)."""
    if problem(cfg):
        raise UserError(problem(cfg))
    _checked(cfg, data_on_device(cfg, loaded)[0])


def run(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
        on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Train the peers of every seed, then the `alone` baselines; returns the run directory.

    `on_epoch` receives each epoch's report with `role` (peer or alone), `member` (the peer),
    `seed` and `epochs` added.
    """
    if problem(cfg):  # before anything loads
        raise UserError(problem(cfg))
    setup = prepare(cfg, progress)
    data, device, seeds, show = setup.data, setup.device, setup.seeds, setup.show
    archs = _checked(cfg, data)
    info = loss_info(cfg.distill, len(archs))
    run = setup.open(KIND.name, out, run_dir)

    def fit_peers(seed: int) -> list[dict]:
        own = [peer_seeds(seed, k, archs) for k in range(len(archs))]
        models = [engine.new_model(arch, data, own[k].init) for k, arch in enumerate(archs)]
        objective = Mutual(cfg.distill)
        ok, why = can_stack(models, [objective], device=device) if cfg.mutual.pack else (False, "mutual.pack=false")
        packing["peers"] = f"{'stacked' if ok else 'side by side'}: {why}"
        setup.say(f"peers of seed {seed}: {packing['peers']}")
        tags = [{"role": "peer", "name": arch.name, "seed": seed, "member": k, "parent": _others(k, len(archs)),
                 **loss_tags(info)} for k, arch in enumerate(archs)]
        show.start(f"peers seed {seed} ({len(archs)} together)", cfg.train.epochs)

        def report(r: dict) -> None:
            if r["model"] == len(archs) - 1:
                show.epoch(r)
            if on_epoch:
                on_epoch({**{key: v for key, v in r.items() if key != "model"}, "role": "peer",
                          "member": r["model"], "epochs": cfg.train.epochs})

        results = engine.fit(models, data, cfg.train, seeds=[s.data for s in own],
                             objectives=[objective] * len(archs),
                             tags=tags, model_dirs=[run.checkpoint_dir(f"peer{k}-s{seed}", arch)
                                                    for k, arch in enumerate(archs)],
                             on_epoch=report, emit=run.emit, device=device,
                             replicas_of=make_replicas if ok else SideBySide)
        rows = []
        for model, result, tag, pair in zip(models, results, tags, own):
            rows.append(fit_summary(result, tag, count_params(model), **seed_columns(pair),
                                    **row_cost(model, data, cfg.train, device)))
            show.label = f"peer {tag['member']} seed {seed}"
            show.done(rows[-1])
        return rows + [ensemble_row(cfg, data, [m.eval() for m in models], seed, rows)]

    def alone_jobs() -> list[Job]:
        return [Job.seeded(model_seeds(seed, "alone"), key=f"alone{k}-s{seed}", arch=archs[k],
                           label=f"{archs[k].name} alone seed {seed}",
                           tags={"role": "alone", "name": archs[k].name, "seed": seed, "parent": None,
                                 **loss_tags(CROSS_ENTROPY_INFO)},
                           report={"role": "alone", "seed": seed, "epochs": cfg.train.epochs})
                for k in first_of_arch(archs).values() for seed in seeds]

    packing: dict[str, str] = {}

    def body() -> dict:
        peer_rows: list[dict] = []
        for seed in seeds:
            peer_rows += fit_peers(seed)
            run.write_summary(peer_rows, "running", loss=info, packing=packing)
        alone: list[dict] = []
        if cfg.mutual.alone:
            jobs = alone_jobs()
            for entry in fit_jobs(jobs, data, cfg.train, run, pack=cfg.mutual.pack, device=device,
                                  on_epoch=on_epoch, show=show, say=setup.say):
                how = "packed" if entry["packed"] else "one after another"
                packing[f"alone {entry['architecture']}"] = f"{how}: {entry['why']}"
            alone = [job.row for job in jobs]
        return run.write_summary(alone + peer_rows, "done", loss=info, packing=packing)

    return setup.finish(run, body)


def _others(k: int, count: int) -> str:
    return ", ".join(f"peer {other}" for other in range(count) if other != k)


@torch.inference_mode()
def ensemble_row(cfg: Config, data, models: list, seed: int, peer_rows: list[dict]) -> dict:
    """The peers' ensemble of one seed (mean probabilities), on validation and test; its cost is
    the sum of the peers'."""
    metrics = {}
    for split in ("val", "test"):
        logits = torch.stack([predict(m, data, split, cfg.train.eval_batch_size, cfg.train.precision)
                              for m in models])
        metrics[split] = probs_metrics(combine_log_probs(logits, "mean_probs").exp(), data.y[split])
    names = list(dict.fromkeys(row["name"] for row in peer_rows))
    return summary_row(role="ensemble", name="+".join(names), seed=seed, size=len(models), combine="mean_probs",
                       parent="the peers", val_acc=metrics["val"]["acc"], val_nll=metrics["val"]["nll"],
                       test_acc=metrics["test"]["acc"], test_nll=metrics["test"]["nll"],
                       test_ece=metrics["test"]["ece"], test_acc_last=None,
                       **{"params": sum(row["params"] for row in peer_rows), **ensemble_row_cost(peer_rows)})
