"""A distillation method as one record: its formula, how its terms mix and reduce, the signal it
reads, the distill.* options it takes, its paper. The records are made in `distill.methods.losses`, one
decorator on each formula:

    @register("jsd", reduction="batchmean", t2_scaling=True, paper="Agarwal et al. 2024 (GKD)",
              matches="...", options=(Option("jsd_beta", "beta", float, 0.5, {"gt": 0.0, "lt": 1.0},
                                             "the mixture weight beta"),))
    def jsd(student_logits, teacher_logits, targets, *, temperature, beta): ...

An option names the distill.* key it reads and the keyword it is passed as, `to` one of: the
formula (`loss`), the mixer (`weights`: distill.methods.objectives.mix_weights), a learned temperature's
schedule (`temperature`: ctkd) or the white-box hooks (`layers`, read where signal is features).
The objective passes every option from the record, so a method reads what it declares and nothing
else, and `Method.check` refuses a key that the method does not declare. This module imports no
torch; the records live beside their formulas, in distill.methods.losses, a registry that config checks
with the datasets and models (`check_names`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from distill.errors import ConfigError
from distill.schema import Section, spec

#: distill.* keys every method accepts: what the teacher is and how it is read (teacher, combine,
#: standardize, top_k for language models), and T and alpha with their schedules, which each
#: method reads or not as its record says (`Method.keys`) but never refuses, so one base config
#: serves a sweep over methods
SHARED_KEYS = ("method", "teacher", "combine", "temperature", "temperature_end", "temperature_schedule",
               "alpha", "alpha_end", "alpha_schedule", "standardize", "top_k", "top_k_rest", "teacher_unfinished",
               "lm_chunk", "teacher_same_seed", "teacher_other_split")
#: not a combination of teachers of its own (distill.combine, ensemble.combine): the one line naming it gets
GEOMETRIC = ("geometric (the normalised geometric mean of the teachers' softmaxes) is mean_logits exactly: "
             "log softmax(z) is z less a per-example constant; write mean_logits")
MIXES = ("alpha", "teacher_only", "sum", "smoothing", "dkd", "dist", "wttm", "labels")
SIGNALS = ("logits", "features", "none")
TEMPERATURES = ("config", "learned", "none")
DESTINATIONS = ("loss", "weights", "temperature", "layers", "policy")
_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


@dataclass(frozen=True)
class Option:
    """One distill.* key a method reads, declared here and nowhere else: `type`, `default` and
    `bounds` (ge, gt, le, lt) are how the config checks and fills it (distill.methods.options)."""

    key: str          # the distill.* config key
    kwarg: str        # the keyword it is passed as
    type: Any
    default: Any
    bounds: dict
    meaning: str      # one line
    to: str = "loss"  # see DESTINATIONS and the module docstring

    def __post_init__(self):
        assert self.to in DESTINATIONS, self.to

    def describe(self) -> str:
        """`dkd_beta = 8.0 (>= 0): weight of NCKD`"""
        bounds = ", ".join(f"{_BOUND_WORDS[name]} {value:g}" for name, value in self.bounds.items())
        return f"{self.key} = {self.default!r}{f' ({bounds})' if bounds else ''}: {self.meaning}"


@dataclass(frozen=True)
class Method:
    """What `distill.method=NAME` trains with; calling it evaluates its formula (see distill.methods.losses)."""

    name: str
    formula: Callable[..., dict]  # (student_logits, teacher_logits, targets, *, temperature, **loss options)
    reduction: str                # of the teacher term: batchmean, mean, weighted_mean, weighted_sum
    t2_scaling: bool              # the teacher term is scaled by T^2
    matches: str                  # what the student is taught to match, for the listing
    paper: str
    mix: str = "alpha"            # how the objective weighs its terms: MIXES, see distill.methods.losses
    signal: str = "logits"        # what it reads of the teacher: SIGNALS
    options: tuple[Option, ...] = ()
    temperature: str = "config"   # T: distill.temperature (config), learned by the objective, or none
    combine_at_t1: bool = False   # an ensemble of teachers is combined at T = 1 (the formula tempers it)
    draws: bool = False           # the formula draws random numbers from a `generator` the objective seeds
    objective: Optional[str] = None  # "module:Class" of the objective that runs it instead of objectives.Distill
                                     # (gkd: on-policy generation), imported when one is built

    def __post_init__(self):
        assert self.mix in MIXES and self.signal in SIGNALS and self.temperature in TEMPERATURES, self

    def __call__(self, student_logits, teacher_logits, targets, **kwargs) -> dict:
        return self.formula(student_logits, teacher_logits, targets, **kwargs)

    @property
    def keys(self) -> tuple[str, ...]:
        """The distill.* keys it reads: temperature and alpha where it uses them, then its own options."""
        shared = ("temperature",) * (self.temperature == "config") + ("alpha",) * (self.mix == "alpha")
        return shared + tuple(option.key for option in self.options)

    @property
    def needs_epochs(self) -> bool:
        """DKD's warm-up and CTKD's curriculum count epochs: its objective needs train.epochs."""
        return self.mix == "dkd" or self.temperature == "learned"

    def values(self, cfg, to: str) -> dict:
        """{keyword: value in `cfg` (a DistillConfig)} of the options that go `to` (DESTINATIONS)."""
        return {option.kwarg: getattr(cfg, option.key) for option in self.options if option.to == to}

    def info(self) -> dict:
        """The fields every run records in its loss_info."""
        return {"method": self.name, "reduction": self.reduction, "t2_scaling": self.t2_scaling,
                "signal": self.signal, "mix": self.mix}

    def check(self, given: set[str]) -> None:
        """ConfigError (one line) if `given` holds a distill.* key this method does not read."""
        declared = {option.key for option in self.options}
        unread = sorted(key for key in given if key not in SHARED_KEYS and key not in declared)
        if unread:
            what, it = ("this option", "it") if len(unread) == 1 else ("these options", "them")
            raise ConfigError(f"{', '.join('distill.' + key for key in unread)}: method {self.name} does not read "
                              f"{what}; {self.name}'s options are {', '.join(self.keys) or 'none'}; remove {it} or "
                              f"set distill.method to one that reads {it} (`distill list methods`)")

    def describe(self) -> str:
        """One line for `distill list methods`: paper, what it matches, the shared keys it reads, its options."""
        shared = ", ".join(key for key in self.keys if key in SHARED_KEYS) or "none"
        options = "; ".join(option.describe() for option in self.options) or "none"
        return f"{self.name}: {self.paper}. Matches {self.matches}; keys (distill.*): {shared}; options: {options}"


def options_given(data: dict, distill) -> set[str]:
    """The distill.* keys a config's mapping `data` (its YAML with the overrides set) gives: the ones
    its distill section sets to a value other than the default (`distill`: the section as built),
    and the ones its `search:` sweeps. These are what `Method.check` holds against the method.

    Not counted: a key set to its default (the run is the same whether the method reads it or
    not, and a run directory written before a key was added still loads); everything when the
    search sweeps distill.method (the base config carries the options of each method it may run,
    and a narrowed grid such as a preset's quick run must still load; each trial then keeps only the
    options its method reads, `only_read`).
    """
    section = data.get("distill") or {}
    # a searched key that is no key of the section (a field, or an option some method declares) is the
    # search check's to name
    searched = {key for key in _searched(data.get("search") or {}) if hasattr(distill, key)}
    if "method" in searched:
        return set()
    default = type(distill)()
    return {key for key in section if getattr(distill, key) != getattr(default, key)} | searched


def check_searched_reads(data: dict, distill) -> None:
    """ConfigError (one line) if `search:` sweeps T or alpha (or their schedules) for a method that reads
    no T or mixes without alpha (gkd, ban, dkd, ...): every value would train the same model. (Set in the
    base config they are allowed, so one config serves a sweep over methods; the record says None.)"""
    from distill.methods.losses import METHODS

    method = METHODS.get(distill.method)
    searched = _searched(data.get("search") or {})
    if method is None or "method" in searched:
        return
    for key in sorted(searched):
        family = key.split("_")[0]
        if family in ("temperature", "alpha") and family not in method.keys:
            raise ConfigError(f"search.distill.{key}: method {method.name} does not read distill.{family}, so "
                              f"every value would train the same model; remove it from search:, or set "
                              f"distill.method to one that reads it (`distill list methods`)")


def only_read(section: dict, method: Method, defaults: dict) -> dict:
    """A distill section (a mapping) without the options `method` does not read (shared keys it
    does not read set back to `defaults`):
    a trial of a sweep over distill.method runs its method with that method's options only."""
    read = set(SHARED_KEYS) | set(method.keys)
    return {key: value if key in read else defaults[key] for key, value in section.items()
            if key in read or key in defaults}


def _searched(search: dict) -> set[str]:
    """The distill.* keys a `search:` section sweeps, written flat (`distill.alpha: {grid: ...}`) or
    nested (`search.distill.alpha=...` on the command line nests)."""
    nested = search.get("distill")
    flat = {key.split(".", 1)[1] for key in search if isinstance(key, str) and key.startswith("distill.")}
    return flat | set(nested if isinstance(nested, dict) else ())


# ---------------------------------------------------------------- the distill section of the config


@dataclass
class DistillConfig(Section):
    """The keys every method shares; each method's own options (dkd_beta, jsd_beta, layers, ...) are
    declared with its formula (distill.methods.losses, `distill list methods`) and live in `options`."""

    OPEN = True

    def __post_init__(self):
        object.__setattr__(self, "options", {})

    def __getattr__(self, name):  # a method's option (only names that are not fields get here)
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        if name in self.__dict__.get("options", {}):
            return self.options[name]
        from distill.methods.options import option_default

        return option_default(name)

    def __setattr__(self, name, value):
        if name.startswith("_") or name == "options" or name in {f.name for f in dataclasses.fields(self)}:
            return super().__setattr__(name, value)
        from distill.methods.options import checked_option

        self.options[name] = checked_option(name, value, self.__dict__.get("_prefix", "distill."))

    method: str = spec("kd", "loss: a name `distill list methods` prints (with each method's options and "
                       "paper), e.g. kd, ban, dkd, dist, jsd, fitnet")
    temperature: float = spec(4.0, "softmax temperature T of teacher and student (at the start of training)",
                              gt=0.0)
    temperature_end: Optional[float] = spec(None, "T at the end of training, null = constant T", gt=0.0)
    temperature_schedule: str = spec("linear", "how T goes from temperature to temperature_end over training",
                                     choices=["constant", "linear", "cosine"])
    alpha: float = spec(0.9, "weight of the distillation term; 1 - alpha weighs the label loss (at the start)",
                        ge=0.0, le=1.0)
    alpha_end: Optional[float] = spec(None, "alpha at the end of training, null = constant alpha", ge=0.0, le=1.0)
    alpha_schedule: str = spec("linear", "how alpha goes from alpha to alpha_end over training",
                               choices=["constant", "linear", "cosine"])
    teacher: Optional[str] = spec(None, "teacher: a run directory, a checkpoint, a .npy/.csv predictions file, "
                                  "a Hugging Face LM folder (used as it is), or several run dirs/checkpoints (an "
                                  "ensemble) as a list or separated by commas; null = train from labels (or the teacher "
                                  "section)", join=",")
    combine: str = spec("mean_probs", "ensemble teacher: average probabilities at T, average logits, or sum "
                        "one KL per teacher", choices=["mean_probs", "mean_logits", "per_teacher_kl"])
    standardize: bool = spec(False, "logit standardisation (Sun et al. 2024): z -> (z - mean) / std per example, "
                             "student and teacher, before the temperature softmax (any logit method)")
    top_k: int = spec(32, "language models: the teacher's cache keeps the k most likely next tokens per "
                      "position (memory bounded by k, not the vocabulary)", ge=1)
    top_k_rest: str = spec("drop", "language models: the mass outside the top k: drop (renormalise the top k) "
                           "or spread (uniformly over the other tokens)", choices=["drop", "spread"])
    lm_chunk: int = spec(0, "language models: the token-level loss computed this many positions at a time, fused "
                         "with the student's linear head (the same values and gradients, less memory); 0 = all at once",
                         ge=0)
    teacher_unfinished: bool = spec(False, "use a distill.teacher run (or its checkpoint) whose meta.json does not "
                                    "say done, as it is; the student's parent records that it was unfinished")
    teacher_same_seed: bool = spec(False, "the teacher section starts from the run seed, as the student does (the "
                                   "same initial weights for one architecture, the same batches in the same "
                                   "order); false = a seed of its own (distill.training.seeds)")
    teacher_other_split: bool = spec(False, "use a distill.teacher run (or its checkpoint) whose dataset section "
                                     "(split seed, validation fraction, subset, dataset) differs from the "
                                     "student's: it may have trained on the student's validation examples; "
                                     "recorded in the student's parent")


def _distill_init(generated):
    """DistillConfig(method="dkd", dkd_beta=2.0) from Python, as from YAML: a keyword that is no field is
    a method's option (checked as one)."""
    names = {f.name for f in dataclasses.fields(DistillConfig)}

    def __init__(self, **kwargs):
        generated(self, **{k: v for k, v in kwargs.items() if k in names})
        for key, value in {**kwargs.pop("options", {}), **kwargs}.items():
            if key not in names and not key.startswith("_"):
                setattr(self, key, value)
    return __init__


DistillConfig.__init__ = _distill_init(DistillConfig.__init__)
