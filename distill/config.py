"""Experiment config: dataclasses with defaults, loaded from YAML, overridden by `key=value`.

    from distill.config import load_config
    cfg = load_config("mnist1d-cnn", ["train.epochs=3", "seeds=[0,1]"])   # a preset, or a YAML path

Every key has a default and a one-line meaning (`distill list keys` prints them). Unknown
keys, wrong types and out-of-range values raise `ConfigError` naming the key and what is
allowed, before anything trains. Names that live in registries (datasets, models,
methods) are checked against the registry.

Presets are YAML files shipped inside the package (`distill/presets/`, found with
importlib.resources); `resolve_config_path` turns a preset name or a path into the file.
A preset describes itself in its optional `preset:` and `paper:` sections.

Sections are plain dataclasses (the field machinery is in `distill.schema`). A package that needs its own keys adds a field to
`Config` with a dataclass here, so that the whole tree is known and checked in one place.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from distill.errors import ConfigError
from distill import kinds
from distill.methods import DistillConfig
from distill.presets_config import PaperConfig, PresetConfig, resolve_config_path
from distill.schema import (Section, _hints, _yaml_key, _yaml_reason, from_dict, load_yaml, parse_override,
                            set_dotted, spec, to_dict)


@dataclass
class TextConfig(Section):
    """dataset.name=pydoc or text: a corpus split by document into fixed-length token blocks (distill/data/text.py)."""

    files: list[str] = spec([], "text: .txt files (one document each), .jsonl files (one document per line) or "
                            "folders of them")
    json_field: str = spec("text", "text: the field of a .jsonl line that holds the document")
    tokenizer: str = spec("byte", "byte (UTF-8 bytes, 256 tokens), char (the corpus's characters) or a folder "
                          "holding a Hugging Face tokenizer (needs transformers)")
    block: int = spec(64, "tokens per training block (the model's context)", ge=2)
    documents: Optional[int] = spec(None, "keep only the first this many documents, null = all", ge=3)
    test_fraction: float = spec(0.1, "share of the documents held out for test (val: dataset.val_fraction)",
                                gt=0.0, lt=1.0)
    seqkd_teacher: Optional[str] = spec(None, "sequence-level KD: a teacher checkpoint (best.pt) or run directory "
                                        "whose generations replace the training blocks; null = the text itself")
    seqkd_decode: str = spec("sample", "how the teacher generates: greedy, sample or beam",
                             choices=["greedy", "sample", "beam"])
    seqkd_temperature: float = spec(1.0, "sample: softmax temperature of the teacher's generation", gt=0.0)
    seqkd_top_k: int = spec(0, "sample: draw from the k most likely tokens only, 0 = all", ge=0)
    seqkd_beams: int = spec(4, "beam: beam width", ge=1)
    seqkd_prompt: int = spec(16, "tokens of each training block kept as the prompt; the teacher writes the rest",
                             ge=1)
    seqkd_seed: int = spec(0, "seed of the teacher's sampling", ge=0)


NUM_SAMPLES = 5000  # dataset.num_samples' default (mnist1d, fake)
#: the built-in datasets sized by their files, which read no dataset.num_samples (tests/test_own_data.py: all but 2)
FILE_SIZED = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "pydoc", "text", "image_folder",
              "arrays")


@dataclass
class DatasetConfig(Section):
    name: str = spec("mnist1d", "dataset: digits, mnist1d, fake, mnist, fashion_mnist, cifar10, cifar100, svhn, "
                     "pydoc (Python's docs), text (dataset.text.files), image_folder (root: class folders), arrays "
                     "(root: an .npz file), or one registered by dataset.module or a package (`distill list datasets`)")
    root: str = spec("data", "folder holding a torchvision dataset (never downloaded unless download=true); "
                     "image_folder: the folder of train/ and test/ (or of the class folders); arrays: the .npz file")
    module: Optional[str] = spec(None, "a module (on PYTHONPATH) that registers datasets (distill.data.registry), "
                                 "imported by every process that reads this config, Ray trials too")
    image_size: Optional[list[int]] = spec(None, "image_folder: [height, width] every image is resized to; "
                                           "null = every image must have the first one's size", ge=1)
    test_fraction: float = spec(0.2, "image_folder without train/ and test/: share of each class held out for "
                                "test (stratified, with split_seed)", gt=0.0, lt=1.0)
    download: bool = spec(False, "let torchvision download the dataset into root")
    val_fraction: float = spec(0.1, "share of the training set held out for model selection", gt=0.0, lt=1.0)
    split_seed: int = spec(0, "seed of the stratified train/validation split (fixed across run seeds)", ge=0)
    num_samples: Optional[int] = spec(NUM_SAMPLES, "mnist1d: examples generated (80% train, 20% test); fake: "
                                      "training examples; null for a dataset sized by its files", ge=20)
    train_subset: Optional[int] = spec(None, "keep only this many training examples (stratified), null = all", ge=10)
    augment: str = spec("auto", "batch augmentation on the device: auto (crop_flip for CIFAR, crop for SVHN, "
                        "none otherwise), none, crop_flip, crop, shift (1-D circular shift)",
                        choices=["auto", "none", "crop_flip", "crop", "shift"])
    shift: int = spec(4, "augment=shift: largest shift in samples", ge=0)
    fake_shape: list[int] = spec([3, 32, 32], "fake: shape of one example (C, H, W)")
    fake_classes: int = spec(10, "fake: number of classes", ge=2)
    text: TextConfig = field(default_factory=lambda: TextConfig())  # pydoc, text: token blocks (distill/data/text.py)

    def import_module(self) -> None:
        """Import `module` (its @register lines run); a one-line ConfigError when it cannot be imported."""
        import importlib

        try:
            self.module and importlib.import_module(self.module)
        except Exception as err:  # noqa: BLE001 - any failure of the user's module is bad input
            why = (str(err).strip().splitlines() or ["no message"])[0]
            raise ConfigError(f"dataset.module: cannot import {self.module} ({type(err).__name__}: {why})"
                              + ("; put its folder on PYTHONPATH" if isinstance(err, ImportError) else "")) from None


@dataclass
class ModelConfig(Section):
    name: str = spec("cnn1d", "model: a name `distill list models` prints, e.g. mlp, cnn1d, resnet20, wrn_28_10, "
                     "densenet_bc, gpt, hf_causal_lm, or any torchvision classifier")
    width: Optional[int] = spec(None, "mlp: hidden units; cnn1d/cnn2d: channels; null = the model's default", ge=1)
    depth: Optional[int] = spec(None, "mlp: hidden layers; cnn: conv layers; densenet_bc: depth; null = default", ge=1)
    growth_rate: int = spec(12, "densenet_bc: growth rate k", ge=1)
    dropout: float = spec(0.0, "dropout probability where the model has dropout", ge=0.0, lt=1.0)
    kwargs: dict = spec({}, "extra keyword arguments for the model's constructor")


@dataclass
class TrainConfig(Section):
    epochs: int = spec(30, "passes over the training set", ge=1)
    batch_size: int = spec(128, "examples per step", ge=1)
    lr: float = spec(0.01, "peak learning rate", gt=0.0)
    optimizer: str = spec("adamw", "sgd (momentum, nesterov), adam or adamw", choices=["sgd", "adam", "adamw"])
    momentum: float = spec(0.9, "sgd momentum", ge=0.0, lt=1.0)
    nesterov: bool = spec(True, "sgd: Nesterov momentum")
    weight_decay: float = spec(5e-4, "weight decay (decoupled for adamw)", ge=0.0)
    schedule: str = spec("onecycle", "learning-rate schedule", choices=["constant", "cosine", "step", "onecycle"])
    warmup_epochs: float = spec(0.0, "constant/cosine/step: linear warm-up length in epochs", ge=0.0)
    milestones: list[float] = spec([0.5, 0.75], "step: fractions of training where lr is multiplied by gamma")
    gamma: float = spec(0.1, "step: lr multiplier at each milestone", gt=0.0, le=1.0)
    pct_start: float = spec(0.25, "onecycle: share of training spent warming up", gt=0.0, lt=1.0)
    grad_clip: Optional[float] = spec(None, "clip the gradient norm to this value, null = off", gt=0.0)
    seed: int = spec(0, "seed used when `seeds` is not given", ge=0)
    device: str = spec("auto", "auto (cuda if available), cpu, cuda, cuda:N or mps")
    precision: str = spec("fp32", "fp32, or bf16 autocast (CUDA)", choices=["fp32", "bf16"])
    channels_last: Optional[bool] = spec(None, "channels_last memory format for image models: null = on CUDA "
                                         "only, true, false")
    compile: bool = spec(False, "wrap the model in torch.compile")
    threads: Optional[int] = spec(None, "torch CPU threads: null = auto (1 for a model whose training step is "
                                  "small, else by its work per step, up to the cores other work leaves free), "
                                  "0 = all CPUs this process may use, N = N", ge=0,
                                  words={"auto": None})
    deterministic: bool = spec(True, "deterministic algorithms: the same command gives the same numbers on CPU")
    eval_batch_size: int = spec(1024, "examples per evaluation batch", ge=1)
    select: str = spec("acc", "model selection: the epoch of the best validation accuracy, ties by lower NLL "
                       "(acc), or of the lowest validation NLL per example or token, ties by higher accuracy "
                       "(nll: language models, where perplexity is the figure)", choices=["acc", "nll"])
    checkpoint_seconds: float = spec(5.0, "write last.pt at most this often (and at the last epoch); "
                                     "0 = every epoch. A killed run resumes from it and replays exactly", ge=0.0)
    cost_budget: float = spec(0.05, "seconds of timed calls per figure when each trained model's cost (FLOPs, "
                              "latency, throughput, size) is measured once after training for summary.json; "
                              "0 = not measured", ge=0.0)


@dataclass
class TeacherConfig(Section):
    model: Optional[ModelConfig] = spec(None, "teacher architecture: trained first for each seed when "
                                        "distill.teacher is null; names the checkpoint's architecture otherwise; "
                                        "null = no teacher section")
    train: dict = spec({}, "overrides of the train section for the teacher, e.g. {epochs: 60, lr: 0.01}")

    def __post_init__(self):
        from_dict(TrainConfig, self.train, prefix="teacher.train.")  # unknown keys, types, ranges


@dataclass
class TuneConfig(Section):
    kind: str = spec("train", "what one trial runs: an experiment kind (`distill list kinds`)", choices=kinds.names())
    target: str = spec("auto", "the one model whose validation figures reach Tune: auto (the kind's first "
                       "target), or one of the kind's targets (`distill list kinds` names them)",
                       choices=sorted({t for k in kinds.registered().values() for t in k.target_names()}))
    scheduler: str = spec("fifo", "trial scheduler", choices=["fifo", "asha", "pbt"])
    num_samples: int = spec(1, "samples drawn from the random dimensions (grids are crossed with each)", ge=1)
    metric: str = spec("val_acc", "metric reported to Tune (validation only)", choices=["val_acc", "val_nll"])
    max_concurrent_trials: int = spec(0, "trials at once, 0 = as many as resources allow", ge=0)
    cpus_per_trial: float = spec(1.0, "CPUs per trial (torch threads are set to match)", gt=0.0)
    gpus_per_trial: float = spec(0.0, "GPUs per trial, fractions allowed", ge=0.0)
    max_failures: int = spec(0, "retries of a failed trial from its last checkpoint", ge=0)
    grace_period: int = spec(1, "asha: epochs before a trial can be stopped", ge=1)
    reduction_factor: float = spec(3.0, "asha: keep 1/reduction_factor at each rung", gt=1.0)
    reuse_actors: bool = spec(True, "reuse trial actors between trials")
    search_alg: str = spec("basic", "basic (grids crossed with random samples) or optuna (TPE; pip install optuna)",
                           choices=["basic", "optuna"])
    perturbation_interval: int = spec(2, "pbt: epochs between exploiting better trials and perturbing", ge=1)
    storage_path: Optional[str] = spec(None, "root of the experiment folders (shared storage when trials run on "
                                       "several machines); null = OUT/<name>")
    seeds: str = spec("stacked", "stacked: one trial trains all seeds of its configuration (stacked where the model "
                      "allows) and reports their mean; trials: one trial per (configuration, seed)",
                      choices=["stacked", "trials"])
    pack: int = spec(16, "the most configurations that differ only in keys the objective reads (distill.*) trained "
                     "as one stacked fit in one trial (fifo, basic search); 0 = off", ge=0)

@dataclass
class LogConfig(Section):
    """Mirrors of the run directory in TensorBoard, MLflow and W&B (distill/runs/tracking.py); not part of the run id."""

    tensorboard: bool = spec(False, "also write TensorBoard event files to <run dir>/tensorboard/<model>/ "
                             "(pip install 'distill-runner[track]')")
    mlflow: bool = spec(False, "also log config, per-epoch figures and summary to an MLflow run "
                        "(pip install 'distill-runner[track]')")
    mlflow_uri: Optional[str] = spec(None, "MLflow tracking URI, null = sqlite:///<run dir>/mlflow.db")
    mlflow_experiment: Optional[str] = spec(None, "MLflow experiment name, null = the config's name")
    wandb: bool = spec(False, "also log config, per-epoch figures and summary to a Weights & Biases run in "
                       "<run dir>/wandb/ (pip install 'distill-runner[track]')")
    wandb_mode: str = spec("offline", "W&B: offline (files only; upload later with `wandb sync <run dir>/wandb/"
                           "offline-run-*`) or online", choices=["offline", "online"])
    wandb_project: Optional[str] = spec(None, "W&B project, null = the config's name (entity: WANDB_ENTITY)")


@dataclass
class _Core(Section):
    """The sections every kind reads; `Config` adds each kind's own section after `teacher`."""

    name: str = spec("run", "experiment name: runs go to OUT/<name>/<run-id>/")
    run_id: Optional[str] = spec(None, "run folder name, null = a hash of the resolved config (so that the "
                                 "same command resumes the same run)")
    seeds: Optional[list[int]] = spec(None, "seeds, each a full repeat; null = [train.seed]")
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass
class _Rest(Section):
    tune: TuneConfig = field(default_factory=TuneConfig)
    log: LogConfig = field(default_factory=LogConfig)  # tracking mirrors (distill/runs/tracking.py)
    search: dict = spec({}, "Tune search space: config key -> {grid|choice|uniform|loguniform|randint: ...}")
    preset: Optional[PresetConfig] = spec(None, "how `distill reproduce` runs this file: command, description, "
                                          "quick, needs.device, needs.data, cost.epochs, cost.examples; "
                                          "not part of the run id")
    paper: Optional[PaperConfig] = spec(None, "published figures this config reproduces: source, figures, table, "
                                        "differences; not part of the run id")


def _seed_list(self) -> list[int]:
    return list(self.seeds) if self.seeds is not None else [self.train.seed]


def _make_config():
    """The whole config: the core sections, each registered kind's own section (`distill.kinds`),
    then tune, log, search, preset and paper (`distill list keys` lists them in this order)."""
    own = [(f.name, _hints(part)[f.name], f) for part in (_Core, _Rest) for f in dataclasses.fields(part)]
    core = len(dataclasses.fields(_Core))
    sections = [(key, cls, field(default_factory=cls)) for key, cls in kinds.sections()]
    cls = dataclasses.make_dataclass("Config", own[:core] + sections + own[core:], bases=(Section,),
                                     namespace={"seed_list": _seed_list, "__doc__": "The resolved config."})
    cls.__module__ = __name__
    return cls


Config = _make_config()


def iter_keys(cls=Config, prefix: str = ""):
    """(dotted key, default, help) for every leaf key, for `distill list keys`."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + _yaml_key(f)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from iter_keys(hints[f.name], key + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield key, default, f.metadata.get("help", "")
    if getattr(cls, "OPEN", False):  # distill: the options the methods declare
        from distill.methods.options import all_options

        for option, methods in all_options():
            yield prefix + option.key, option.default, f"{', '.join(methods)}: {option.meaning}"


# ---------------------------------------------------------------- loading


def read_yaml(path) -> dict:
    """The mapping in a YAML file, given as a path or a preset name (see `resolve_config_path`)."""
    path = resolve_config_path(path)
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_reason(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at the top, got {type(data).__name__}")
    return data


def build_config(data: dict, overrides: list[str] = (), names: bool = True) -> Config:
    """A mapping + `key=value` overrides -> checked `Config`; `names=False` leaves out the names that
    live in registries (datasets, models, methods), which import torch."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        set_dotted(data, path, value)
    cfg = from_dict(Config, data)
    validate(cfg)
    if names:
        check_names(cfg)
        from distill.methods.losses import check_options  # the methods' records, a registry too
        from distill.methods import check_searched_reads, options_given
        check_options(cfg.distill.method, options_given(data, cfg.distill))
        check_searched_reads(data, cfg.distill)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (), names: bool = True) -> Config:
    """YAML file or preset name (or defaults when None) + `key=value` overrides -> checked `Config`."""
    return build_config(read_yaml(path) if path is not None else {}, list(overrides), names)


def check_names(cfg: Config) -> None:
    """The names that live in registries (imported here: they import torch)."""
    from distill import data, models
    from distill.methods import losses, options

    if cfg.dataset.name not in data.DATASETS:
        raise ConfigError(f"dataset.name: unknown dataset {cfg.dataset.name!r}; choose one of "
                          f"{', '.join(data.DATASETS)}")
    models.check_name(cfg.model.name)  # raises ConfigError naming the allowed models
    if cfg.distill.method not in losses.METHODS:
        raise ConfigError(f"distill.method: unknown method {cfg.distill.method!r}; choose one of "
                          f"{', '.join(losses.METHODS)}")
    for key, value in list(cfg.distill.options.items()):  # each method's options: known, typed, in range
        cfg.distill.options[key] = options.checked_option(key, value)


def validate(cfg: Config) -> None:
    """Cross-key checks, torch-free (each kind's own among them). `dataset.module` is imported here,
    so that every process that builds a config (Ray trials too) has its datasets registered."""
    cfg.dataset.import_module()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.train.device):
        raise ConfigError(f"train.device: {cfg.train.device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if cfg.seeds is not None:
        if not cfg.seeds:
            raise ConfigError("seeds: the list is empty; give at least one seed, e.g. seeds=[0]")
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds: {cfg.seeds} repeats a seed; each seed must appear once")
        if any(s < 0 for s in cfg.seeds):
            raise ConfigError(f"seeds: {cfg.seeds} has a negative seed; seeds must be >= 0")
    if sorted(cfg.train.milestones) != list(cfg.train.milestones) or any(
            not 0 < m < 1 for m in cfg.train.milestones):
        raise ConfigError(f"train.milestones: {cfg.train.milestones} must be increasing fractions in (0, 1)")
    if cfg.run_id is not None and not re.fullmatch(r"[\w.-]+", cfg.run_id):
        raise ConfigError(f"run_id: {cfg.run_id!r} must be letters, digits, '.', '_' or '-'")
    if not re.fullmatch(r"[\w.-]+", cfg.name):
        raise ConfigError(f"name: {cfg.name!r} must be letters, digits, '.', '_' or '-'")
    _check_num_samples(cfg.dataset)
    for kind in kinds.registered().values():
        if kind.check is not None:
            kind.check(cfg)


def _check_num_samples(d: DatasetConfig) -> None:
    """mnist1d and fake read dataset.num_samples; a dataset sized by its files reads none: there the
    default (a preset's 5000 too: the run is the same) is set to null, any other number is an error."""
    if d.name in FILE_SIZED and d.num_samples not in (None, NUM_SAMPLES):
        raise ConfigError(f"dataset.num_samples: {d.name} reads every example of its files, so nothing reads "
                          f"num_samples={d.num_samples}; set dataset.num_samples=null (dataset.train_subset=N "
                          f"trains on N of them)")
    if d.name in FILE_SIZED:
        d.num_samples = None
    elif d.num_samples is None and d.name in ("mnist1d", "fake"):
        raise ConfigError(f"dataset.num_samples: {d.name} generates num_samples examples, so null is no size; "
                          f"give a number, e.g. dataset.num_samples={NUM_SAMPLES}")


def config_hash(cfg: Config) -> str:
    """Stable short hash of the resolved config: the default run id. The preset's description
    (`preset`, `paper`) and the tracking mirrors (`log`) are left out: editing them does not move a
    run to a new folder."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in ("preset", "paper", "log")}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
