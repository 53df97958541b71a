"""`distill ensemble`: train N members, evaluate their ensemble, collapse it into students.

    distill ensemble ensemble-mnist1d seeds=[0,1,2]
    distill ensemble ensemble-mnist1d seeds=[0] train.epochs=2 ensemble.train={epochs: 2} \\
        dataset.num_samples=500                                      # tiny CPU check
    distill ensemble ensemble-mnist1d ensemble.from=runs/ensemble-mnist1d/<id> \\
        ensemble.combine=[mean_logits]                               # new students, members reused

For each seed s (each a full repeat):
1. Members m = 0..N-1: architecture `ensemble.models` (or the model section), trained from
   labels with the train section plus `ensemble.train` overrides, weights and data order
   seeded by `model_seeds(s, "member", m)` (distill.training.seeds); checkpoints `member{m}-s{s}`. Same-architecture members are
   packed with torch.func where possible (see distill.training.jobs), else trained in turn.
   With `ensemble.from`, the members' best checkpoints of that earlier run are loaded
   instead (its train section applies; nothing is retrained or written there).
2. Ensemble evaluation on validation and test (ensembles.evaluate): every size k = 1..N
   (averaged over subsets of k members) under mean_probs and mean_logits.
3. Students: each architecture of `ensemble.students` (or the model section) distilled
   with the `distill` section from all N members, once per `ensemble.combine` entry
   (`distill.methods.objectives.make_objective`), seeded by s; checkpoints `student{j}-{combine}-s{s}`.
4. Baselines (`ensemble.baseline`, on by default): each student architecture trained from labels
   with the students' exact budget (the train section) and seeds (s: the students' initialisation
   and batches), stacked with the students of its architecture where they can; checkpoints
   `baseline{j}-s{s}`. A student "beats" something only against this, paired by seed: the mean
   member trained with the members' (other) budget is no fair baseline for it.

`summary.json` rows: role `member` (one per member), `ensemble` (one per size and
combination; `member` and `selected_epoch` null; extra keys `subsets`, `disagreement`,
`gain_over_mean_member`; its cost figures are those of its members summed, averaged over the
subsets), `student` (parent "ensemble(k=N, combine=...)", extra keys
`combine`, `student`, `gap_recovered` on test accuracy and `gap_recovered_val` on
validation accuracy), `baseline` (parent null, extra keys `student` (the index of the first
student of its architecture) and `arch`). Every trained model's row has `init_seed` and `data_seed`. Gap recovered = (student - mean member) / (ensemble - mean member),
where "ensemble" is the full ensemble under the student's combination; for per_teacher_kl
it is mean_probs, the distribution that minimises the sum of the per-teacher KLs.

`on_epoch` (Tune) receives every model's epoch reports, members' and students'; each report
says which model it is about (`role`, `seed`, `member` or `student`/`combine`) and its
epoch count (`epochs`); a Tune trial forwards only its target model's (see `tuning.target`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from distill import engine

from distill.methods import losses
from distill.config import Config, ModelConfig, TrainConfig, load_config
from distill.schema import from_dict, to_dict
from distill.export.cost import ensemble_row_cost, row_cost
from distill.training.experiment import data_on_device, prepare
from distill.teachers.fidelity import fidelity
from distill.errors import ConfigError, UserError
from distill.runs.checkpoints import check_state, load_best, load_checkpoint
from distill.training.evaluation import predict, use_channels_last
from distill.training.jobs import Job, arch_key, archs_for, fit_jobs
from distill.kinds.ensemble import KIND, unread_teacher_keys
from distill.models import check_name, create_model
from distill.models.parts import count_params
from distill.methods.objectives import CROSS_ENTROPY_INFO, loss_tags, make_objective
from distill.teachers.sources import describe_differences, split_differences, stand_in_student
from distill.training.seeds import model_seeds, seed_columns
from distill.runs.store import fit_summary, read_meta, summary_row

from .evaluate import COMBINES, gap_recovered, size_curve, subsets


# ---------------------------------------------------------------- what the config asks for


def member_archs(cfg: Config) -> list[ModelConfig]:
    """The architecture of each member: `ensemble.models` (one for all, or one each) or the model section."""
    return archs_for(cfg.ensemble.models, cfg.ensemble.members, cfg.model, "ensemble.models")


def student_archs(cfg: Config) -> list[ModelConfig]:
    sections = cfg.ensemble.students
    if not sections:
        return [cfg.model]
    return [from_dict(ModelConfig, s, prefix=f"ensemble.students[{i}].") for i, s in enumerate(sections)]


def member_train(cfg: Config) -> TrainConfig:
    """The train section with `ensemble.train` overrides: how members are trained."""
    return from_dict(TrainConfig, {**to_dict(cfg.train), **cfg.ensemble.train}, prefix="ensemble.train.")


def member_seed(seed: int, member: int) -> int:
    """Member m's init and data seed (`distill.training.seeds`, role member)."""
    return model_seeds(seed, "member", member).init


def arch_text(arch: ModelConfig) -> str:
    """A model section in a few words, e.g. 'cnn1d w32 d3': what tells two students of one name apart."""
    parts = [arch.name] + [f"{key[0]}{value}" for key, value in (("width", arch.width), ("depth", arch.depth))
                           if value is not None]
    return " ".join(parts)


def _names(archs: list[ModelConfig]) -> str:
    return "+".join(dict.fromkeys(a.name for a in archs))


# ---------------------------------------------------------------- members of an earlier run


@dataclasses.dataclass
class Earlier:
    """Members reused from an earlier run: their checkpoint folders and the train section they had."""

    path: Path
    train: TrainConfig
    dirs: dict[tuple[int, int], Path]  # (seed, member) -> checkpoint folder
    seeds: dict[tuple[int, int], dict]  # (seed, member) -> its init_seed and data_seed (None: not recorded)


def _config_of(path: Path) -> Config:
    if not (path / "config.yaml").is_file():
        raise UserError(f"ensemble.from: {path} is not a run directory (no config.yaml); give the folder of an "
                        f"earlier `distill ensemble` run")
    try:
        return load_config(path / "config.yaml")
    except ConfigError as err:
        raise UserError(f"ensemble.from: {path}/config.yaml no longer loads ({err})") from None
    except (OSError, ValueError) as err:  # not text (UnicodeDecodeError), unreadable
        raise UserError(f"ensemble.from: {path}/config.yaml cannot be read ({type(err).__name__}); give the "
                        f"folder of an intact `distill ensemble` run") from None


def find_earlier(cfg: Config, archs: list[ModelConfig], data, seeds: list[int]) -> Earlier:
    """Check that `ensemble.from` holds finished members that fit this config; one-line UserError if not."""
    path = Path(cfg.ensemble.from_).expanduser()
    if not path.is_dir():
        raise UserError(f"ensemble.from: {path} does not exist; give the folder of an earlier `distill ensemble` run")
    old = _config_of(path)
    meta = read_meta(path / "meta.json")  # a damaged one: a one-line UserError naming it
    kind = meta.get("kind")
    if kind != KIND.name:
        raise UserError(f"ensemble.from: {path} is a `distill {kind or '?'}` run, not a `distill ensemble` run")
    differ = split_differences(cfg.dataset, old.dataset)
    if differ:
        raise UserError(f"ensemble.from: {path} was trained on another data split "
                        f"({describe_differences(differ, cfg.dataset, old.dataset)}); the members must see the "
                        f"same data and validation split")
    old_archs = member_archs(old)
    if len(archs) > len(old_archs):
        raise UserError(f"ensemble.from: {path} has {len(old_archs)} members per seed but ensemble.members is "
                        f"{len(archs)}; ask for at most {len(old_archs)}")
    for m, (a, b) in enumerate(zip(archs, old_archs)):
        if arch_key(a) != arch_key(b):
            raise UserError(f"ensemble.from: member {m} of {path} is {to_dict(b)} but this config makes it "
                            f"{to_dict(a)}; set ensemble.models to the earlier run's architectures")
    old_train = member_train(old)
    source, hops = path, 0
    while _config_of(source).ensemble.from_ is not None and hops < 20:  # that run reused members too
        source, hops = Path(_config_of(source).ensemble.from_).expanduser(), hops + 1
    dirs = {}
    for seed in seeds:
        for m, arch in enumerate(archs):
            folder = source / "checkpoints" / f"member{m}-s{seed}"
            if not (folder / "best.pt").is_file() or not (folder / "last.pt").is_file():
                raise UserError(f"ensemble.from: {folder} holds no finished member (no best.pt/last.pt); run the "
                                f"earlier ensemble with seed {seed} to the end first, or drop seed {seed}")
            last = check_state(load_checkpoint(folder / "last.pt"), folder / "last.pt", count=1)
            if last.get("epoch") != old_train.epochs:
                raise UserError(f"ensemble.from: member {m} of seed {seed} in {source} stopped at epoch "
                                f"{last.get('epoch')} of {old_train.epochs}; finish that run first")
            model = create_model(arch, data.input_shape, data.num_classes)
            try:
                model.load_state_dict(load_best(folder / "best.pt")["model"])
            except (RuntimeError, KeyError, TypeError, ValueError) as err:
                reason = str(err).splitlines()[0]
                raise UserError(f"ensemble.from: {folder}/best.pt does not fit {arch.name} ({reason})") from None
            dirs[(seed, m)] = folder
    return Earlier(path=path, train=old_train, dirs=dirs, seeds=_earlier_seeds(source, dirs))


def _earlier_seeds(source: Path, dirs: dict) -> dict:
    """The seeds the reused members trained from, as the run that trained them recorded them."""
    try:
        rows = json.loads((source / "summary.json").read_text()).get("models", [])
    except (OSError, ValueError, AttributeError):
        rows = []
    found = {(r.get("seed"), r.get("member")): r for r in rows if isinstance(r, dict) and r.get("role") == "member"}
    return {key: {"init_seed": found.get(key, {}).get("init_seed"), "data_seed": found.get(key, {}).get("data_seed")}
            for key in dirs}


# ---------------------------------------------------------------- the run


def size_cost(member_rows: list[dict], size: int) -> dict:
    """The cost figures of an ensemble of `size` members: the sum of a subset's members
    (`ensemble_row_cost`), averaged over the subsets that `size_curve` averages."""
    costs = [ensemble_row_cost([member_rows[i] for i in subset]) for subset in subsets(len(member_rows), size)]
    keys = [key for key in costs[0] if all(key in c for c in costs)]
    numeric = [k for k in keys if all(isinstance(c[k], (int, float)) and not isinstance(c[k], bool) for c in costs)]
    means = {key: sum(c[key] for c in costs) / len(costs) for key in numeric}
    out = {key: round(value) if isinstance(costs[0][key], int) else value for key, value in means.items()}
    if "trusted" in keys:  # the timings' trust: every subset's, with the reasons of those that are not
        out["trusted"] = all(c["trusted"] for c in costs)
        out["untrusted_because"] = "; ".join(dict.fromkeys(c["untrusted_because"] for c in costs
                                                           if c.get("untrusted_because"))) or None
    return out


def baseline_jobs(cfg: Config, students: list[ModelConfig], seed: int) -> list[Job]:
    """With `ensemble.baseline`: each student architecture (the first student of each) trained from
    labels with the students' exact budget (the train section: epochs, schedule, optimizer,
    regularisation) and seeds (`model_seeds(seed, "baseline")` = the students' own: the same
    initialisation and batches), role `baseline`: what a student's gain is judged against."""
    if not cfg.ensemble.baseline:
        return []
    first = {}
    for j, arch in enumerate(students):
        first.setdefault(arch_key(arch), j)
    return [Job.seeded(model_seeds(seed, "baseline"), key=f"baseline{j}-s{seed}", arch=students[j],
                       tags={"role": "baseline", "name": students[j].name, "seed": seed, "parent": None,
                             **loss_tags(CROSS_ENTROPY_INFO)},
                       label=f"baseline {students[j].name} (labels) seed {seed}",
                       report={"role": "baseline", "student": j, "seed": seed, "epochs": cfg.train.epochs})
            for j in first.values()]


def _student_objective(cfg: Config, teachers: list[nn.Module], data, device, combine: str, seed: int,
                       arch: ModelConfig):
    return make_objective(cfg.distill, teachers, data, device, combine=combine, seed=seed,
                          student=stand_in_student(cfg, arch, data),
                          description=f"ensemble(k={len(teachers)}, combine={combine})",
                          epochs=cfg.train.epochs)


def _checked(cfg: Config, data, device) -> tuple:
    """(members' and students' architectures, the members' train section, the `ensemble.from` run or None),
    each model built once and the students' objectives checked on untrained members: before the run
    folder exists."""
    archs, students = member_archs(cfg), student_archs(cfg)
    for arch in archs + students:
        check_name(arch.name)
    train_m = member_train(cfg)
    engine.resolve_device(train_m.device)
    for arch in {arch_key(a): a for a in archs + students}.values():  # models that do not fit the data
        with torch.random.fork_rng(devices=[]):
            create_model(arch, data.input_shape, data.num_classes)
    earlier = find_earlier(cfg, archs, data, cfg.seed_list()) if cfg.ensemble.from_ is not None else None
    if cfg.ensemble.combine:  # the distillation objective's own checks (method, layers), on untrained members
        with torch.random.fork_rng(devices=[]):
            stand_ins = [create_model(a, data.input_shape, data.num_classes) for a in archs]
        for arch in students:
            for how in cfg.ensemble.combine:
                _student_objective(cfg, stand_ins, data, device, how, cfg.seed_list()[0], arch)
    return archs, students, train_m, earlier


def check(cfg: Config, loaded: Optional[dict] = None) -> None:
    """What `run` checks before it writes anything (the kind's preflight: distill tune, each configuration)."""
    unread_teacher_keys(cfg)
    _checked(cfg, *data_on_device(cfg, loaded))


def run(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
        on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Members -> ensemble evaluation -> students, once per seed; returns the run directory."""
    unread_teacher_keys(cfg)  # before anything loads: a teacher this kind does not read is an error
    setup = prepare(cfg, progress)
    data, device, seeds, show, say = setup.data, setup.device, setup.seeds, setup.show, setup.say
    archs, students, train_m, earlier = _checked(cfg, data, device)
    run_ = setup.open(KIND.name, out, run_dir, reused_from=str(earlier.path) if earlier else None)
    def body() -> dict:
        rows: list[dict] = []
        training_log: list[dict] = []
        loss_info = None
        for seed in seeds:
            # 1. members
            jobs = []
            for m, arch in enumerate(archs):
                tags = {"role": "member", "name": arch.name, "seed": seed, "member": m, "parent": None,
                        **loss_tags(CROSS_ENTROPY_INFO)}
                jobs.append(Job.seeded(model_seeds(seed, "member", m), key=f"member{m}-s{seed}", arch=arch,
                                       tags=tags, label=f"member {m} {arch.name} seed {seed}",
                                       report={"role": "member", "member": m, "seed": seed,
                                               "epochs": train_m.epochs}))
            if earlier is None:
                log = fit_jobs(jobs, data, train_m, run_, pack=cfg.ensemble.pack, device=device,
                               on_epoch=on_epoch, show=show, say=say)
                training_log += [{"seed": seed, "role": "member", **entry} for entry in log]
            else:
                for m, job in enumerate(jobs):  # finished checkpoints: engine.fit returns at once, trains nothing
                    job.model = create_model(job.arch, data.input_shape, data.num_classes)
                    job.result = engine.fit_one(job.model, data, earlier.train, seed=job.seed, tags=job.tags,
                                                checkpoint_dir=earlier.dirs[(seed, m)], emit=run_.emit,
                                                device=device)
                    job.row = fit_summary(job.result, job.tags, count_params(job.model),
                                          **earlier.seeds[(seed, m)], **row_cost(job.model, data, train_m, device))
                    say(f"{job.label}: reused from {earlier.dirs[(seed, m)]}")
            member_rows = [job.row for job in jobs]
            rows += member_rows
            members = [job.model.eval() for job in jobs]

            # 2. the ensemble: every size, every combination
            channels_last = use_channels_last(train_m, device, data.input_shape)
            logits = {split: torch.stack([predict(m, data, split, train_m.eval_batch_size,
                                                         train_m.precision, channels_last) for m in members])
                      for split in ("val", "test")}
            curve = size_curve(logits, data.y, COMBINES, params=[count_params(m) for m in members])
            name = _names(archs)
            for point in curve:
                rows.append(summary_row(role="ensemble", name=name, seed=seed,
                                        **{**point, **size_cost(member_rows, point["size"])}))
            full = {p["combine"]: p for p in curve if p["size"] == len(members)}
            for how in COMBINES:
                say(f"ensemble of {len(members)} {name} seed {seed} ({how}): val_acc {full[how]['val_acc']:.4f} "
                    f"test_acc {full[how]['test_acc']:.4f}")
            run_.write_summary(rows, "running", loss=loss_info)

            # 3. students: the ensemble collapsed into each student architecture, once per combination
            mean_member = {split: sum(r[f"{split}_acc"] for r in member_rows) / len(member_rows)
                           for split in ("val", "test")}
            student_jobs = []
            for j, arch in enumerate(students):
                for how in cfg.ensemble.combine:
                    objective, loss_info = _student_objective(cfg, members, data, device, how, seed, arch)
                    parent = f"ensemble(k={len(members)}, combine={how})"
                    tags = {"role": "student", "name": arch.name, "seed": seed, "parent": parent,
                            **loss_tags(loss_info)}
                    student_jobs.append(Job.seeded(
                        model_seeds(seed, "student"), key=f"student{j}-{how}-s{seed}", arch=arch, tags=tags,
                        objective=objective, label=f"student {arch.name} ({how}) seed {seed}",
                        report={"role": "student", "student": j, "combine": how, "seed": seed,
                                "epochs": cfg.train.epochs}))
            baselines = baseline_jobs(cfg, students, seed) if student_jobs else []
            if student_jobs:  # the baselines stacked with the students of their architecture where they can
                white_box = losses.LOSS_INFO[cfg.distill.method]["signal"] == "features"
                log = fit_jobs(student_jobs + baselines, data, cfg.train, run_,
                               pack=cfg.ensemble.pack and not white_box, device=device, on_epoch=on_epoch,
                               show=show, say=say)
                training_log += [{"seed": seed, "role": "student", **entry} for entry in log]
            for job in student_jobs:
                job.row.update(fidelity(job.model, job.objective, data, cfg.train))  # with the combined ensemble
                how = job.report["combine"]
                reference = full[how if how in COMBINES else "mean_probs"]
                rows.append({**job.row, "combine": how, "student": job.report["student"], "arch": arch_text(job.arch),
                             "gap_recovered": gap_recovered(job.row["test_acc"], mean_member["test"],
                                                            reference["test_acc"]),
                             "gap_recovered_val": gap_recovered(job.row["val_acc"], mean_member["val"],
                                                                reference["val_acc"])})
            for job in baselines:
                rows.append({**job.row, "student": job.report["student"], "arch": arch_text(job.arch)})
            run_.write_meta(training=training_log)
            run_.write_summary(rows, "running", loss=loss_info)
        return run_.write_summary(rows, "done", loss=loss_info)

    return setup.finish(run_, body)
