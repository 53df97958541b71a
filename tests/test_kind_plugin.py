"""A new experiment kind is one module: written here into a temporary folder, it runs through
`distill <kind>`, `distill tune` with `tune.kind=<kind>` and `distill report`, with no file of
the project changed (the module joins through DISTILL_KINDS and PYTHONPATH, as a user's would).

    pytest tests/test_kind_plugin.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOY = '''
"""A toy kind: each seed trains the model from labels at train.lr and again at toy.factor x train.lr."""

import dataclasses
from dataclasses import dataclass

from distill.kinds import Kind, TuneTarget, View
from distill.schema import Section, spec


@dataclass
class ToyConfig(Section):
    factor: float = spec(0.1, "the second model's learning rate as a share of train.lr", gt=0.0, le=1.0)


def run(cfg, out="runs", *, run_dir=None, on_epoch=None, progress=True):
    from distill.training.experiment import prepare
    from distill.training.jobs import Job, fit_jobs
    from distill.methods.objectives import CROSS_ENTROPY_INFO, loss_tags

    setup = prepare(cfg, progress)
    run = setup.open(KIND.name, out, run_dir)

    def jobs(role):
        return [Job(key=f"{role}-s{seed}", arch=cfg.model, seed=seed, label=f"{role} seed {seed}",
                    tags={"role": role, "name": cfg.model.name, "seed": seed, "parent": None,
                          **loss_tags(CROSS_ENTROPY_INFO)},
                    report={"role": role, "seed": seed, "epochs": cfg.train.epochs}) for seed in setup.seeds]

    def body():
        rows = []
        slow_train = dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.toy.factor)
        for role, train in (("model", cfg.train), ("slow", slow_train)):
            group = jobs(role)
            fit_jobs(group, setup.data, train, run, pack=True, device=setup.device, on_epoch=on_epoch,
                     show=setup.show, say=setup.say)
            rows += [job.row for job in group]
            run.write_summary(rows, "running")
        return run.write_summary(rows, "done")

    return setup.finish(run, body)


KIND = Kind(
    name="toy",
    help="the model at two learning rates",
    run="toykind:run",
    section=ToyConfig,
    targets=(TuneTarget("slow", "the model at the lower learning rate, each epoch", "slow",
                        fields=lambda cfg: {"role": "slow"}),),
    view=View("two learning rates", roles=("model", "slow")),
)
'''

CONFIG = """
name: toy-run
seeds: [0, 1]
dataset: {name: mnist1d, num_samples: 400}
model: {name: mlp, width: 16, depth: 1}
train: {epochs: 2, threads: 1, cost_budget: 0, checkpoint_seconds: 0}
toy: {factor: 0.5}
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    (root / "toykind.py").write_text(textwrap.dedent(TOY))
    (root / "toy.yaml").write_text(CONFIG)
    env = {**os.environ, "DISTILL_KINDS": "toykind",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return root, env


def distill(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_a_kind_written_as_one_module_runs_sweeps_and_reports(plugin):
    root, env = plugin
    listed = distill(env, "list", "kinds")
    assert listed.returncode == 0 and "toy  the model at two learning rates" in listed.stdout
    assert "toy.factor" in distill(env, "list", "keys").stdout

    bad = distill(env, "toy", root / "toy.yaml", "toy.factor=3")  # its own section is checked like any other
    assert bad.returncode == 2 and "toy.factor: 3.0 is out of range" in bad.stderr and "Traceback" not in bad.stderr

    done = distill(env, "toy", root / "toy.yaml", "--out", root / "runs", "--quiet")
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "meta.json").read_text())["kind"] == "toy"
    rows = json.loads((run_dir / "summary.json").read_text())["models"]
    assert sorted((r["role"], r["seed"]) for r in rows) == [("model", 0), ("model", 1), ("slow", 0), ("slow", 1)]

    swept = distill(env, "tune", root / "toy.yaml", "tune.kind=toy", "seeds=[0]", "tune.cpus_per_trial=1",
                    "search.toy.factor={grid: [0.1, 0.5]}", "--out", root / "sweeps", "--quiet")
    assert swept.returncode == 0, swept.stderr
    sweep = json.loads((Path(swept.stdout.strip().splitlines()[-1]) / "sweep.json").read_text())
    assert sweep["kind"] == "toy" and len(sweep["trials"]) == 2
    assert all(t["status"] == "done" and t["target_model"] == "slow" for t in sweep["trials"])

    reported = distill(env, "report", run_dir, swept.stdout.strip().splitlines()[-1], "--out", root / "report")
    assert reported.returncode == 0, reported.stderr
    page = (root / "report" / "report.md").read_text()
    assert "two learning rates" in page and "slow" in page


def test_without_the_module_the_kind_is_unknown(plugin):
    root, env = plugin
    plain = {k: v for k, v in env.items() if k != "DISTILL_KINDS"}
    answer = distill(plain, "toy", root / "toy.yaml")
    assert answer.returncode == 2 and "invalid choice: 'toy'" in answer.stderr
