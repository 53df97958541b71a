"""The registry of experiment kinds: what `distill <kind>`, `tune.kind`, `distill reproduce` and the report read.

    from distill import kinds
    kinds.names()                       # ['bornagain', 'ensemble', 'train', ...]
    kinds.get("bornagain").run_function()(cfg, "runs")

A kind is one module holding `KIND = Kind(...)`: its name and one-line help, its own config
section (a dataclass of `distill.schema.spec` fields, or none), the function that runs it
(named as "module:function" and imported only when a run starts, because that is where torch
is), the models a Tune sweep may choose on (`TuneTarget`), how its rows are named, and the
view the report reads it by (`View`). The kinds found are the modules of this package and the
modules named in the environment variable DISTILL_KINDS (comma-separated, importable: on
PYTHONPATH), which is how a kind outside this package joins without editing a file here; Ray
trials inherit the variable.

This package and every kind module in it import neither torch nor the training code, so that
the command line checks its input, and `results` reads a kind's view, before torch loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any, Callable, Optional

from distill.errors import UserError


@dataclasses.dataclass(frozen=True)
class TuneTarget:
    """One model of a kind's run that a sweep may choose on (`tune.target=<name>`).

    `fields(cfg)` names the epoch reports that are this model's (e.g. {"role": "generation",
    "generation": 3}; a tuple value means any of them): such a target is live, its epochs reach
    Tune as they come. `choose(rows, metric)` picks the target from one seed's summary rows once
    the run is done: for a target known only then (live=False), or for a live one that sent
    nothing (a chain that stopped early). A chosen model that trained has its epochs replayed
    from records.csv; one that did not (an ensemble) sends one report.
    """

    name: str
    description: str                                   # may use {fields} of fields(cfg)
    label: str                                         # target_model of every report, same templating
    fields: Callable[[Any], dict] = lambda cfg: {}
    live: bool = True
    choose: Optional[Callable[[list, str], Optional[dict]]] = None

    def text(self, template: str, cfg) -> str:
        return template.format(**self.fields(cfg))


@dataclasses.dataclass(frozen=True)
class View:
    """How the report reads a kind's runs (torch-free: `results` imports this).

    `layout` names the page the report builds: `train` (KD page against the same model from
    labels, or a labels-only page), `bornagain` (the generation table), `ensemble` (the size
    curve), or `models` (one table of every model of the run: any kind without a page of its
    own). `headline(rows)` returns the summary rows the index line is about, from a pandas
    frame of the run's rows; the default is every row of the last role the kind lists in
    `roles`, which is also the order of the page's tables."""

    title: str
    layout: str = "models"
    roles: tuple = ()
    headline: Optional[Callable[[Any], Any]] = None

    def headline_rows(self, rows):
        if self.headline is not None:
            return self.headline(rows)
        present = [r for r in self.roles if (rows["role"] == r).any()]
        return rows[rows["role"] == present[-1]] if present else rows


def default_label(row: dict) -> str:
    """A summary row's model in words: `teacher cnn1d`, `generation 1`, `member 3`, ..."""
    role = row.get("role")
    for key in ("generation", "member", "student"):
        if row.get(key) is not None and role in (key, "student"):
            return f"{role} {row[key]}" + (f" {row['combine']}" if role == "student" and row.get("combine") else "")
    if role == "teacher":
        return f"teacher {row.get('name')}"
    return str(role)


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str                                   # the subcommand, meta.json's kind, tune.kind
    help: str                                   # one line: `distill --help`, `distill list kinds`
    run: str                                    # "module:function": run(cfg, out, *, run_dir, on_epoch, progress)
    section: Optional[type] = None              # its config section, at the top level under `name`
    section_key: Optional[str] = None           # the section's key when not the kind's name
    check: Optional[Callable[[Any], None]] = None  # cross-key checks of the whole config (ConfigError)
    targets: tuple = ()                         # TuneTarget, the first is what `auto` means unless `auto` says
    auto: Optional[Callable[[Any], str]] = None  # tune.target=auto -> a target's name, from the config
    label: Callable[[dict], str] = default_label  # a summary row's model in words (sweep.json, reports)
    view: View = View("experiment")
    shares_teacher: bool = False                # its `teacher:` section can be trained once for a whole sweep
    preflight: Optional[str] = None             # "module:function": check(cfg, loaded) raises what `run` would
    #                                             about the input, writing nothing (distill tune: each configuration
    #                                             before Ray starts; `loaded` keeps datasets read between calls)
    order: int = 100                            # place in `distill --help` and `distill list kinds`

    @property
    def key(self) -> Optional[str]:
        return (self.section_key or self.name) if self.section is not None else None

    def run_function(self) -> Callable:
        """The function that runs this kind (imports the training code)."""
        return self._function(self.run)

    def preflight_function(self) -> Optional[Callable]:
        """The function that checks a configuration's input as `run` would, or None (checked in the trials)."""
        return self._function(self.preflight) if self.preflight else None

    def _function(self, path: str) -> Callable:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise UserError(f"kind {self.name} needs the module {module_name}, which cannot be imported ({err})") \
                from None
        function = getattr(module, attr, None)
        if not callable(function):
            raise UserError(f"kind {self.name}: {module_name}.{attr} is not a function in this installation")
        return function

    def target(self, name: str, cfg) -> TuneTarget:
        """The TuneTarget `tune.target=name` means for this config (`auto` resolved)."""
        if name == "auto":
            name = self.auto(cfg) if self.auto else self.targets[0].name
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def target_names(self) -> tuple:
        return ("auto",) + tuple(t.name for t in self.targets)


_FOUND: dict[str, Kind] = {}


def _modules() -> list[str]:
    own = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    extra = [m.strip() for m in os.environ.get("DISTILL_KINDS", "").split(",") if m.strip()]
    return own + extra


def registered() -> dict[str, Kind]:
    """name -> Kind, for every kind module found (imported once)."""
    if not _FOUND:
        found = {}
        for module_name in _modules():
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise UserError(f"DISTILL_KINDS names {module_name}, which cannot be imported ({err}); "
                                f"put it on PYTHONPATH or remove it from DISTILL_KINDS") from None
            kind = getattr(module, "KIND", None)
            if not isinstance(kind, Kind):
                raise UserError(f"{module_name} defines no KIND = distill.kinds.Kind(...); every kind module "
                                f"declares one")
            if kind.name in found:
                raise UserError(f"two kind modules declare the kind {kind.name!r} ({module_name} is the second)")
            found[kind.name] = kind
        _FOUND.update(sorted(found.items(), key=lambda item: (item[1].order, item[0])))
    return _FOUND


def names() -> list[str]:
    return list(registered())


def get(name: str) -> Kind:
    kinds = registered()
    if name not in kinds:
        raise UserError(f"unknown experiment kind {name!r}; the kinds are {', '.join(kinds)} (distill list kinds)")
    return kinds[name]


def sections() -> list[tuple[str, type]]:
    """(key, dataclass) of every kind's own config section, in registry order."""
    return [(kind.key, kind.section) for kind in registered().values() if kind.section is not None]


def describe() -> list[str]:
    """`distill list kinds`: one line per kind, with its section and the targets a sweep can choose."""
    lines = []
    for kind in registered().values():
        section = f"section {kind.key}; " if kind.key else ""
        lines.append(f"{kind.name}  {kind.help} ({section}tune.target: {', '.join(kind.target_names())})")
    return lines
