"""The `distill` command: a thin layer over the Python functions of each package.

    distill train mnist1d-cnn seeds=[0,1,2]          # a preset name, or the path of a YAML file
    distill list models

Exit status: 0 done; 2 bad input (usage, config, missing data, a teacher that does not
fit), with one line on stderr and no traceback; 1 a run failed (the run's meta.json and
error.txt say why).
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import threading
import traceback

from distill import kinds
from distill.errors import UserError

EPILOG = "Overrides are key=value with YAML values, e.g. train.epochs=5 seeds=[0,1,2] distill.alpha=0.5."


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, exit status 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_run_command(sub, name: str, help: str, extra=None):
    p = sub.add_parser(name, help=help, description=help, epilog=EPILOG)
    p.add_argument("config", help="YAML config file, or a preset name (distill list presets)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", default="runs", help="folder for run directories (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    if extra:
        extra(p)
    return p


def _tune_args(p):
    p.add_argument("--address", default=None, help="join a running Ray cluster (e.g. 127.0.0.1:6379 or auto)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep with the same config")
    p.add_argument("--dry-run", action="store_true", help="print the trials, packs, models per pack and the "
                   "estimated cost in epochs; start nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="distill", description="Knowledge-distillation experiments: train, born-again chains, "
                    "ensemble collapse, Ray Tune searches, reports.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for kind in kinds.registered().values():  # one subcommand per experiment kind (distill.kinds)
        _add_run_command(sub, kind.name, kind.help)
    _add_run_command(sub, "tune", "search the config with Ray Tune trials", _tune_args)
    p = sub.add_parser("report", help="tables, plots and a comparison page from run directories")
    p.add_argument("runs", nargs="+", help="run directories (or folders holding them)")
    p.add_argument("--out", default="report", help="folder for the report (default: report)")
    p.add_argument("--compare", action="store_true", help="put the experiments side by side, paired by seed")
    p = sub.add_parser("demo", help="every kind of experiment, small, on CPU, then the report (a few minutes)")
    p.add_argument("--out", default="demo-runs", help="folder for the demo's runs (default: demo-runs)")
    p = sub.add_parser("reproduce", help="run a reproduction preset")
    p.add_argument("preset", nargs="?", help="preset name (see --list) or a YAML file with a preset: section")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, after the quick ones")
    p.add_argument("--list", action="store_true", help="every preset: command, what it needs, cost, source")
    p.add_argument("--quick", action="store_true", help="a small, fast version")
    p.add_argument("--out", default="runs", help="folder for run directories (default: runs)")
    p = sub.add_parser("list", help="name the registered kinds, models, datasets, methods, presets or config keys")
    p.add_argument("what", choices=["kinds", "models", "datasets", "methods", "presets", "keys"])
    p = sub.add_parser("export", help="save one model of a finished run with torch.export, and a JSON card")
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--model", required=True, metavar="ROLE[:SEED[:GEN]]", help="e.g. student:0, generation:0:2")
    p.add_argument("--out", required=True, help="the .pt2 file to write (the card goes beside it as .json)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 weight-only Linear layers")
    p.add_argument("--onnx", action="store_true", help="also write an .onnx file (needs the export extra)")
    p = sub.add_parser("generate", help="continue a prompt with a language model of a finished run")
    p.add_argument("run", help="a finished run directory of a language model")
    p.add_argument("--model", required=True, metavar="ROLE[:SEED[:GEN]]", help="e.g. student:0, generation:0:2")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=_number(int, 1), default=50, help="tokens to write (default: 50)")
    p.add_argument("--temperature", type=_number(float, 0), default=0.0,
                   help="0 = greedy (default), else sample from softmax(logits / T)")
    p.add_argument("--top-k", type=_number(int, 0), default=None,
                   help="sample from the k likeliest tokens (0 = all, the default; needs --temperature > 0)")
    p.add_argument("--seed", type=_number(int, 0), default=None,
                   help="seed of the sampling (default: 0; needs --temperature > 0)")
    return parser


def _number(kind, least):
    """An argparse type: a number of `kind` (int or float), at least `least`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'} "
                                             f">= {least}")
        return value
    return parse


def _load(args):
    """The command's config: file, keys, types and ranges checked before torch loads, then the
    names that live in registries (datasets, models, methods: these import torch)."""
    from distill.config import load_config

    return load_config(args.config, args.overrides)


def _list(what: str) -> None:
    if what == "kinds":
        names = kinds.describe()
    elif what == "models":
        from distill.models import list_models
        names = list_models()
    elif what == "datasets":
        from distill.data.registry import list_datasets
        names = list_datasets()
    elif what == "methods":
        from distill.methods.losses import list_methods
        names = list_methods()
    elif what == "presets":
        from distill.presets_config import preset_names
        names = preset_names()
    else:
        from distill.config import iter_keys
        names = [f"{key} = {default!r}  # {help}" for key, default, help in iter_keys()]
    print("\n".join(names))


def preset_lines() -> list[str]:
    """`distill reproduce --list`: per preset, its command and description, then what it needs,
    its cost, the source of its published figures and how its setting differs from the paper's."""
    from distill.config import load_config
    from distill.presets_config import preset_names

    lines = []
    for name in preset_names():
        cfg = load_config(name)
        if cfg.preset is None:
            continue
        p = cfg.preset
        lines += [f"{name}  ({p.command}) {p.description}",
                  f"    needs: {p.needs.device}; data: {p.needs.data or 'none (generated or bundled)'}",
                  f"    cost: {p.cost.epochs:,} epochs x {p.cost.examples:,} examples",
                  f"    source: {cfg.paper.source if cfg.paper else 'none'}"]
        lines += [f"    differences: {cfg.paper.differences}"] if cfg.paper and cfg.paper.differences else []
    return lines


def _reproduce(args):
    """Run a preset (its quick overrides first with --quick, then the command line's) and report on it.
    The preset and the overrides are checked before the report's libraries (pandas) load."""
    from distill.config import load_config
    from distill.presets_config import resolve_config_path

    path = resolve_config_path(args.preset)
    cfg = load_config(path, names=False)  # the preset's keys; its names are checked with the overrides below
    if cfg.preset is None:
        raise UserError(f"reproduce: {args.preset} has no preset: section naming its command; run it with "
                        f"distill {'|'.join(kinds.names())}|tune instead")
    overrides = (list(cfg.preset.quick) if args.quick else []) + list(args.overrides)
    load_config(path, overrides)  # bad overrides: one line and exit 2 before anything runs
    paper = cfg.paper.figures if cfg.paper else None
    import results

    return results.reproduce(path, cfg.preset.command, overrides, out=args.out, paper=paper,
                             paper_source=cfg.paper.source if cfg.paper else "")


def dispatch(args) -> None:
    import os

    # idle OpenMP threads sleep instead of spinning (a spinning thread on a shared machine takes the core
    # another process needs); read once, when torch loads, so set before it does (trials inherit it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def needs_gpu(cfg, name: str, quick: bool = False) -> None:  # a preset too slow on a CPU: not without a word
        if cfg.preset is None or cfg.preset.needs.device != "gpu" or cfg.train.device != "auto":
            return
        import torch

        if torch.cuda.is_available():
            return
        if quick:  # the quick version is seconds long on any machine: say where it runs
            args.overrides = [*args.overrides, "train.device=cpu"]
            return
        cost = f"{cfg.preset.cost.epochs:,} epochs x {cfg.preset.cost.examples:,} examples"
        raise UserError(f"{name} needs a GPU (preset.needs.device: gpu; the full run is {cost}) and torch "
                        f"finds none here; add train.device=cpu to train on the CPU anyway")

    if args.command == "list":
        return _list(args.what)
    if args.command == "export":
        from distill.export import export
        print(export(args.run, args.model, args.out, quantize=args.quantize, onnx=args.onnx))
        return
    if args.command == "generate":
        if not args.prompt:
            raise UserError("generate: --prompt is empty; give the text to continue")
        unread = [flag for flag, value in (("--top-k", args.top_k), ("--seed", args.seed)) if value is not None]
        if args.temperature == 0 and unread:
            raise UserError(f"generate: {unread[0]} shapes sampling, but --temperature 0 decodes greedily and "
                            f"nothing reads it; give --temperature > 0, or leave {unread[0]} out")
        from distill.export.lm import generate_text
        print(generate_text(args.run, args.model, args.prompt, args.max_new_tokens, args.temperature,
                            args.top_k or 0, args.seed or 0))
        return
    if args.command in kinds.names():
        cfg = _load(args)  # the config is checked before the kind's run imports torch
        if cfg.search:
            def leaves(d, prefix=""):  # search.distill.alpha={grid: ...} -> distill.alpha
                for key, value in d.items():
                    samplers = {"grid", "choice", "uniform", "loguniform", "randint"}
                    nested = isinstance(value, dict) and value and not samplers & set(value)
                    yield from leaves(value, f"{prefix}{key}.") if nested else [f"{prefix}{key}"]

            raise UserError(f"search: distill {args.command} does not search; run distill tune {args.config} to "
                            f"search {', '.join(leaves(cfg.search))}, or drop the section with search={{}}")
        needs_gpu(cfg, args.config)
        path = kinds.get(args.command).run_function()(cfg, args.out, progress=not args.quiet)
    elif args.command == "tune":
        cfg = _load(args)
        if args.dry_run:  # the plan only: no Ray, no torch
            from tuning.plan import dry_run
            print("\n".join(dry_run(cfg, args.out)))
            return
        needs_gpu(cfg, args.config)
        import tuning
        path = tuning.run(cfg, args.out, address=args.address, resume=args.resume, progress=not args.quiet)
    elif args.command == "reproduce":
        if args.list or not args.preset:
            print("\n".join(preset_lines()))
            return
        from distill.config import load_config
        needs_gpu(load_config(args.preset, args.overrides), args.preset, quick=args.quick)
        path = _reproduce(args)
    else:
        import results
        try:
            if args.command == "report":
                path = results.report(args.runs, args.out, compare=args.compare).with_name("report.html")
            else:
                path = demo(args.out)
        except results.NoRuns as err:  # no run folder there: bad input
            raise UserError(str(err)) from None
    print(path)


DEMO_SEEDS = ["seeds=[0,1,2]", "train.epochs=60"]  # the MNIST-1D presets, 3 seeds, shorter; an MLP epoch is ~15 ms
# KD against labels gets 5 seeds (the MLP is cheap) and T = 8, the sweep's better temperature for this student
DEMO_KD = ["seeds=[0,1,2,3,4]", "train.epochs=60"]


def command_function(command: str):
    """What `distill COMMAND` runs: an experiment kind's run, or the sweep (`tune`)."""
    if command == "tune":
        import tuning

        return tuning.run
    return kinds.get(command).run_function()


def demo(out: str):
    """The main job of `make demo`: every kind of experiment, small, on CPU, then the report.

    Each stage is a real run directory (resumable, read back by `results`), run by its preset's
    command: the MNIST-1D MLP from labels (the baseline every student is compared with), Hinton
    KD from a 1-D CNN teacher into the same MLP, a born-again chain of MLPs (seeds trained
    stacked), an ensemble of CNNs collapsed into a student, token-level KD between two tiny GPTs
    on Python's own documentation, a T x alpha sweep on Ray Tune, and the report.
    The runs are smaller than the presets' (fewer epochs, seeds and members); the README's
    numbers come from the full presets. Returns the path of report.html.
    """
    import time
    from pathlib import Path

    import results
    from distill.config import load_config

    started, out, runs = time.perf_counter(), Path(out), []
    stages = [
        ("MLP from labels", "mnist1d-mlp", DEMO_KD + ["name=demo-mlp"]),
        ("KD: CNN teacher -> the same MLP (T = 8)", "mnist1d-kd",
         DEMO_KD + ["name=demo-kd", "teacher.train.epochs=20", "distill.temperature=8"]),
        ("born-again chain (BAN, 2 generations, seeds stacked)", "ban-mnist1d",
         DEMO_SEEDS + ["name=demo-ban", "bornagain.generations=2"]),
        ("ensemble collapse: 3 CNN members -> a student of their architecture", "ensemble-mnist1d",
         DEMO_SEEDS + ["name=demo-ensemble", "ensemble.members=3", "ensemble.train.epochs=30",
                       "ensemble.combine=[mean_probs]", "ensemble.students=[{name: cnn1d, width: 32, depth: 3}]"]),
        ("language models: a tiny GPT teacher -> a smaller GPT student, token-level KD on Python's docs",
         "lm-pydoc-kd", ["name=demo-lm", "seeds=[0,1]", "train.epochs=2", "teacher.train.epochs=3",
                         "dataset.text.documents=24", "dataset.text.block=32", "model.width=32",
                         "teacher.model={name: gpt, width: 64, depth: 2, kwargs: {heads: 2}}"]),
        ("T x alpha sweep on Ray Tune (KD, 2 x 2 grid, 1 seed)", "tune-mnist1d-kd",
         ["name=demo-tune", "seeds=[0]", "train.epochs=60", "teacher.train.epochs=20",
          "search.distill.temperature={grid: [1, 8]}", "search.distill.alpha={grid: [0.5, 0.9]}"]),
    ]
    for i, (title, preset, overrides) in enumerate(stages, 1):
        print(f"\n=== {i}/{len(stages) + 1} {title}", file=sys.stderr, flush=True)
        cfg = load_config(preset, overrides)
        runs.append(command_function(cfg.preset.command)(cfg, out))
    print(f"\n=== {len(stages) + 1}/{len(stages) + 1} report", file=sys.stderr, flush=True)
    page = results.report(runs, out / "report").with_name("report.html")
    print(f"demo done in {time.perf_counter() - started:.0f} s; open the report: {page}", file=sys.stderr)
    return page


def signal_commands() -> list[str]:
    """The commands that turn SIGTERM into a clean stop here; `tune` handles its signals itself (tuning/)."""
    return kinds.names() + ["demo"]


def _stop_on_sigterm(signum, frame):
    """SIGTERM (SLURM, Kubernetes, kill) -> an exception where the program is, as Ctrl-C raises
    KeyboardInterrupt: the run is marked in meta.json, the command exits 143. A second SIGTERM
    kills at once."""
    from distill.errors import Interrupted

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Interrupted("SIGTERM")


def main(argv=None) -> int:
    previous = None
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        # key=value overrides may come after options too (`--out x seeds=[0]`)
        late = [r for r in rest if "=" in r and not r.startswith("-")]
        if late and hasattr(args, "overrides"):
            args.overrides += late
            rest = [r for r in rest if r not in late]
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command in signal_commands() and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
        dispatch(args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
    except UserError as err:
        print(f"distill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as errors.Interrupted
        name = getattr(err, "signal_name", "SIGINT")
        what = "terminated by SIGTERM" if name == "SIGTERM" else "interrupted"
        how = getattr(err, "how_to_resume", "run the same command again to resume from the last checkpoint")
        print(f"distill: {what}; {how}", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    except BrokenPipeError:  # the reader of our output went away (`distill tune X --dry-run | head`): quietly,
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and no second error at exit's flush
        return 141  # as a process killed by SIGPIPE
    except OSError as err:  # a full disk, a vanished folder: the run's error.txt has the traceback if writable
        fix = "free some space" if err.errno == errno.ENOSPC else "fix that"
        print(f"distill: run failed: {_first_line(err)}; {fix}, then run the same command again to resume",
              file=sys.stderr)
        return 1
    except Exception as err:  # a failed run: show where (but not for a diverged loss), then one line saying what
        if type(err).__name__ != "Diverged":  # engine.Diverged: the message says it all; error.txt has the rest
            traceback.print_exc()
        print(f"distill: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


if __name__ == "__main__":
    sys.exit(main())
