"""Teachers named by the config: run directories, checkpoints, predictions files, a teacher section.

    distill train mnist1d-kd seeds=[0,1,2,3,4]                          # teacher section: trained first
    distill train mnist1d-mlp distill.teacher=runs/cnn/abc              # a finished run directory
    distill train mnist1d-mlp distill.teacher='[runs/a/x, runs/b/y]' distill.combine=mean_logits
    distill train mnist1d-mlp distill.teacher=preds.npy                 # black-box: logits or probabilities
    distill train lm-pydoc distill.teacher=models/gpt2 dataset.text.tokenizer=models/gpt2   # pretrained, as it is

`teacher_objective(cfg, data, seed, device)` is what `distill train` calls for each seed: it
loads and checks every teacher (a path that does not exist, a checkpoint that does not fit
the model, a predictions file with the wrong rows or columns, a layer that does not exist
raise a one-line UserError/ConfigError) before any run directory is created, and returns
the objective, its loss_info, and the teacher section to train first (or None).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from distill.methods import losses
from distill.config import Config, DatasetConfig, ModelConfig, TrainConfig, load_config, read_yaml
from distill.schema import from_dict, to_dict
from distill.errors import ConfigError, UserError
from distill.methods.objectives import CROSS_ENTROPY_INFO, make_objective
from distill.training.seeds import Seeds, model_seeds
from distill.kinds.train import OTHER_SPLIT, UNKNOWN_SPLIT


@dataclasses.dataclass
class TeacherSection:
    """The `teacher:` section of one seed: a fresh teacher that `distill train` trains from labels first."""

    key: str                 # checkpoint key, e.g. teacher-s0
    model: nn.Module         # the module the objective reads (trained in place)
    model_cfg: ModelConfig
    train: TrainConfig
    seeds: Seeds             # its init and data seeds (distill.training.seeds: role teacher)


def teacher_train_config(cfg: Config) -> TrainConfig:
    """The student's train section with `teacher.train` overrides applied."""
    return from_dict(TrainConfig, {**to_dict(cfg.train), **cfg.teacher.train}, prefix="teacher.train.")


def new_model(model_cfg: ModelConfig, data, seed: int) -> nn.Module:
    from distill.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same weights as seed_everything(seed); create_model(...)
        return create_model(model_cfg, data.input_shape, data.num_classes)


def _mismatch(model: nn.Module, state: dict) -> Optional[str]:
    """None if `state` loads into `model`, else a short description of the first differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing weights (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of other shapes (e.g. {shapes[0]})")
    return "; ".join(parts) or None


def _model_cfg_of_run(run_dir: Path) -> Optional[ModelConfig]:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        data = read_yaml(config_path)
    except (OSError, ValueError) as err:  # not text (UnicodeDecodeError), unreadable
        raise UserError(f"distill.teacher: {config_path} cannot be read ({type(err).__name__}); give a run "
                        f"directory whose config.yaml is intact, or one of its checkpoint files") from None
    section = data.get("model") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return None
    try:
        return from_dict(ModelConfig, section, prefix=f"{config_path}: model.")
    except ConfigError:
        return None


def _pick_checkpoint(run_dir: Path, seed: int) -> Path:
    root = run_dir / "checkpoints"
    keys = sorted(p.name for p in root.iterdir() if (p / "best.pt").is_file() or (p / "last.pt").is_file()) \
        if root.is_dir() else []
    if not keys:
        raise UserError(f"distill.teacher: {run_dir} holds no checkpoints (expected {root}/<model>/best.pt); "
                        f"give a finished run directory or a checkpoint file")
    same_seed = [k for k in keys if k.endswith(f"-s{seed}")]
    if len(same_seed) > 1:  # e.g. teacher-s0 and student-s0: the trained-from-labels or student model
        for role in ("model", "student", "generation", "member", "teacher"):
            chosen = [k for k in same_seed if k.startswith(role)]
            if chosen:
                same_seed = chosen[:1]
                break
    if len(same_seed) >= 1:
        key = same_seed[0]
    elif len(keys) == 1:
        key = keys[0]
    else:
        raise UserError(f"distill.teacher: {run_dir} has no checkpoint for seed {seed} (it has {', '.join(keys)}); "
                        f"give one checkpoint, e.g. {root / keys[0] / 'best.pt'}")
    best = root / key / "best.pt"
    return best if best.is_file() else root / key / "last.pt"


#: dataset keys that do not decide which examples are training, validation or test examples
NOT_SPLIT = ("root", "download", "module", "augment", "shift")


def split_differences(ours: DatasetConfig, theirs: DatasetConfig) -> list[str]:
    """The dataset keys (e.g. `dataset.val_fraction`) on which two runs' data differ in which examples
    they train, select and test on: a model of the other run may have trained on this run's
    validation or test examples. The one check for `distill.teacher` runs and `ensemble.from`."""
    mine, other = to_dict(ours), to_dict(theirs)
    return [f"dataset.{key}" for key in mine if key not in NOT_SPLIT and mine[key] != other.get(key)]


def describe_differences(keys: list[str], ours: DatasetConfig, theirs: DatasetConfig) -> str:
    """'dataset.val_fraction 0.2 there, 0.1 here; dataset.split_seed 1 there, 0 here'."""
    mine, other = to_dict(ours), to_dict(theirs)
    return "; ".join(f"{key} {other.get(key.split('.', 1)[1])!r} there, {mine[key.split('.', 1)[1]]!r} here"
                     for key in keys)


def other_split(run_dir: Path, cfg: Config) -> Optional[str]:
    """How the teacher run in `run_dir` was trained on another data split than this config's (the
    keys and both values), or None when its split is this one's (or it has no config.yaml)."""
    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        theirs = load_config(run_dir / "config.yaml").dataset
    except (ConfigError, OSError, ValueError) as err:
        raise UserError(f"distill.teacher: {run_dir}/config.yaml no longer loads ({str(err).splitlines()[0] if str(err) else type(err).__name__}), so its data "
                        f"split cannot be checked; give a run whose config loads") from None
    keys = split_differences(cfg.dataset, theirs)
    return describe_differences(keys, cfg.dataset, theirs) if keys else None


def unfinished(run_dir: Path) -> Optional[str]:
    """Why the run in `run_dir` is not finished (meta.json's status and reason), or None when it is
    done or has no meta.json; a one-line UserError when its meta.json is damaged."""
    from distill.runs.store import read_meta

    meta = read_meta(run_dir / "meta.json")
    if not meta or meta.get("status") == "done":
        return None
    reason = f": {meta['reason']}" if meta.get("reason") else ""
    return f"its meta.json says {meta.get('status') or 'no status'}{reason}"


def load_teacher(path_text: str, cfg: Config, data, seed: int) -> tuple[nn.Module, str]:
    """A teacher from a run directory or a checkpoint file: (model, description).

    A run that did not finish (given as its folder or one of its checkpoints) is refused unless
    distill.teacher_unfinished=true; then it is used as it is, and the description, which the
    summary records as the student's parent, says so."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"distill.teacher: {path} does not exist; give a run directory, a checkpoint (.pt), "
                        f"a predictions file (.npy/.csv) or a Hugging Face model folder")
    if path.is_dir() and (path / "config.json").is_file() and not (path / "checkpoints").is_dir():
        return pretrained_teacher(path, data, seed)
    if path.is_dir():
        checkpoint, run_dir = _pick_checkpoint(path, seed), path
    else:
        checkpoint = path
        run_dir = path.parent.parent.parent if path.parent.parent.name == "checkpoints" else None
    why = unfinished(run_dir) if run_dir is not None else None
    if why is not None and not cfg.distill.teacher_unfinished:
        raise UserError(f"distill.teacher: the run {run_dir} did not finish ({why}); run its command again to "
                        f"finish it, or set distill.teacher_unfinished=true to use {checkpoint} as it is")
    split = other_split(run_dir, cfg) if run_dir is not None else None
    unknown = run_dir is None or not (run_dir / "config.yaml").is_file()  # nothing to check the split against
    if split is not None and not cfg.distill.teacher_other_split:
        raise UserError(f"distill.teacher: the run {run_dir} was trained on another data split ({split}), so it "
                        f"may have seen this run's validation or test examples; give a teacher trained on this "
                        f"split, or set distill.teacher_other_split=true to use it anyway")
    model_cfg = cfg.teacher.model or (run_dir and _model_cfg_of_run(run_dir)) or cfg.model
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise UserError(f"distill.teacher: {checkpoint} is not a readable torch checkpoint "
                        f"({type(err).__name__}); give a best.pt/last.pt of a run") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("models"), list) and len(state["models"]) == 1:
        state = state["models"][0]  # a last.pt: the training state of one model
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"distill.teacher: {checkpoint} holds no model weights; give a best.pt/last.pt of a run")
    model = new_model(model_cfg, data, seed)
    problem = _mismatch(model, state)
    if problem is not None:
        raise UserError(f"distill.teacher: checkpoint {checkpoint} does not fit model {model_cfg.name} "
                        f"({problem}); set teacher.model.name (and width/depth) to the teacher's architecture, "
                        f"or give another checkpoint")
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise UserError(f"distill.teacher: checkpoint {checkpoint} holds NaN or infinite weights ({broken}); "
                        f"give the checkpoint of a teacher that trained")
    model.load_state_dict(state)
    notes = []
    if why is not None:  # asked for (distill.teacher_unfinished): used, said and recorded
        print(f"distill: warning: teacher {checkpoint} is from a run that did not finish ({why})",
              file=sys.stderr, flush=True)
        notes.append(f"from an unfinished run: {why}")
    if split is not None:  # asked for (distill.teacher_other_split): used, said and recorded
        print(f"distill: warning: teacher {checkpoint} was trained on another data split ({split})",
              file=sys.stderr, flush=True)
        notes.append(f"{OTHER_SPLIT}: {split}")
    if unknown:  # a checkpoint copied out of its run: used, said and recorded
        print(f"distill: warning: teacher {checkpoint} is not in a run folder with its config.yaml, so its data "
              f"split cannot be checked; it may have trained on this run's validation or test examples",
              file=sys.stderr, flush=True)
        notes.append(f"a checkpoint outside a run folder: {UNKNOWN_SPLIT}")
    return model, f"{checkpoint} ({'; '.join(notes)})" if notes else str(checkpoint)


def pretrained_teacher(folder: Path, data, seed: int) -> tuple[nn.Module, str]:
    """A Hugging Face causal LM saved with save_pretrained, used as it is (nothing trains it): (model,
    description). Its weights must be there and its vocabulary the data's (models/hf.py checks both);
    its training data is not this run's to know, which the description says."""
    from distill.models.hf import pretrained_teacher_problems

    if data.text is None:
        raise UserError(f"distill.teacher: {folder} is a Hugging Face language model, but {data.name} is no text "
                        f"dataset; give it to a language-model run (dataset.name=pydoc or text)")
    problem, note = pretrained_teacher_problems(folder, data.text.tokenizer)
    if problem is not None:
        raise UserError(f"distill.teacher: {problem}")
    model = new_model(ModelConfig(name="hf_causal_lm", kwargs={"path": str(folder)}), data, seed).eval()
    notes = [f"a Hugging Face model used as it is: {UNKNOWN_SPLIT}"]
    if note is not None:
        print(f"distill: warning: teacher {note}", file=sys.stderr, flush=True)
        notes.append(note)
    return model, f"{folder} ({'; '.join(notes)})"


def read_predictions(path: Path, cfg: Config, data) -> tuple[torch.Tensor, str]:
    """Logits (N_train_split, C) for the train split from a .npy/.csv file of the original training set."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            try:
                array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError:  # a header row
                array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
    except Exception as err:  # noqa: BLE001 - not an array, not text, truncated, pickled: bad input all
        lines = str(err).strip().splitlines()
        raise UserError(f"distill.teacher: cannot read predictions from {path} ({type(err).__name__}: "
                        f"{lines[0][:120] if lines else 'no message'}); give a .npy array or a .csv of numbers, "
                        f"one row per training example") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        what = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise UserError(f"distill.teacher: {path} holds {what} values, not numbers; give logits or probabilities "
                        f"as floats, one row per training example")
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise UserError(f"distill.teacher: {path} holds an array of shape {array.shape}; give a 2-D array "
                        f"(one row per training example, one column per class)")
    rows, cols = array.shape
    name = cfg.dataset.name
    if cols != data.num_classes:
        raise UserError(f"distill.teacher: {path} has {cols} columns but {name} has {data.num_classes} classes; "
                        f"give one column per class (logits or probabilities)")
    n_train_set = data.size("train") + data.size("val")
    exact = cfg.dataset.train_subset is None
    needed = int(torch.cat([data.source_index["train"], data.source_index["val"]]).max()) + 1
    if (exact and rows != n_train_set) or rows < needed:
        raise UserError(f"distill.teacher: {path} has {rows} rows but the {name} training set has "
                        f"{n_train_set if exact else f'at least {needed}'} examples; give one row per "
                        f"training example (before the validation split, in the dataset's order)")
    if not np.isfinite(array).all():
        raise UserError(f"distill.teacher: {path} holds NaN or infinite values; give finite logits or probabilities")
    is_probs = bool((array >= 0).all() and (array <= 1).all() and np.allclose(array.sum(1), 1.0, atol=1e-3))
    values = torch.from_numpy(array).float()
    logits = values.clamp_min(1e-12).log() if is_probs else values
    index = data.source_index["train"].to("cpu")
    kind = "probabilities (used as log-probabilities)" if is_probs else "logits"
    return logits[index].to(data.x["train"].device), kind


def stand_in_student(cfg: Config, model_cfg: ModelConfig, data) -> Optional[nn.Module]:
    """A throwaway model of the student's architecture, for the white-box methods' layer checks
    (built without touching the global RNG, so the real student's weights do not depend on it)."""
    if losses.LOSS_INFO[cfg.distill.method]["signal"] != "features":
        return None
    return new_model(model_cfg, data, 0)


def teacher_objective(cfg: Config, data, seed: int, device):
    """(objective or None, loss_info, TeacherSection or None) for `distill train`.

    No teacher and no teacher section: a method that needs no teacher (tfkd_reg,
    label_smoothing) is applied, tfkd_self trains a copy of the model first, any other
    method means training from labels (None, CROSS_ENTROPY_INFO, None).
    """
    d = cfg.distill
    signal_kind = losses.LOSS_INFO[d.method]["signal"]
    student = stand_in_student(cfg, cfg.model, data)
    if d.teacher is None and d.teacher_other_split:
        raise ConfigError("distill.teacher_other_split: no distill.teacher run is given, so nothing reads it; "
                          "set distill.teacher_other_split=false")
    if d.teacher is None:
        teacher_cfg = cfg.teacher.model or (cfg.model if d.method == "tfkd_self" else None)
        if teacher_cfg is None and d.teacher_same_seed:
            raise ConfigError("distill.teacher_same_seed: there is no teacher section to seed; set "
                              "distill.teacher_same_seed=false")
        if teacher_cfg is None:
            if signal_kind == "none":
                return (*make_objective(d, [], data, device, seed=seed, epochs=cfg.train.epochs), None)
            if d.lm_chunk:
                raise ConfigError("distill.lm_chunk: no teacher is given (distill.teacher, teacher.model), so the "
                                  "models train from labels and nothing reads it; set distill.lm_chunk=0")
            return None, dict(CROSS_ENTROPY_INFO), None
        seeds = model_seeds(seed, "teacher", same_as_run=d.teacher_same_seed)
        section = TeacherSection(f"teacher-s{seed}", new_model(teacher_cfg, data, seeds.init), teacher_cfg,
                                 teacher_train_config(cfg), seeds)
        objective, info = make_objective(d, [section.model], data, device, seed=seed, student=student,
                                         description=section.key, epochs=cfg.train.epochs)
        return objective, info, section
    if signal_kind == "none":
        raise ConfigError(f"distill.method: {d.method} uses no teacher, but distill.teacher is set; "
                          f"set distill.teacher=null or pick a method that uses one (e.g. kd)")
    if d.teacher_same_seed:
        raise ConfigError("distill.teacher_same_seed: distill.teacher is given (trained already), so nothing reads "
                          "it; set distill.teacher_same_seed=false")
    paths = [p.strip() for p in d.teacher.split(",") if p.strip()]
    files = [p for p in paths if Path(p).suffix in (".npy", ".csv")]
    if files:
        if len(paths) > 1:
            raise UserError(f"distill.teacher: a predictions file ({files[0]}) must be the only teacher; "
                            f"combine several teachers' predictions into one file first")
        path = Path(paths[0]).expanduser()
        if not path.is_file():
            raise UserError(f"distill.teacher: {path} does not exist; give a predictions file (.npy/.csv), "
                            f"a run directory or a checkpoint")
        logits, kind = read_predictions(path, cfg, data)
        return (*make_objective(d, [], data, device, file_logits=logits, seed=seed, student=student,
                                description=f"{path} ({kind})", epochs=cfg.train.epochs), None)
    loaded = [load_teacher(p, cfg, data, seed) for p in paths]
    description = ", ".join(desc for _, desc in loaded)
    return (*make_objective(d, [m for m, _ in loaded], data, device, seed=seed, student=student,
                            description=description, epochs=cfg.train.epochs), None)
