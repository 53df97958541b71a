"""results: finished run directories -> pandas tables with 95% CIs, seaborn plots, a report.

    import results
    df = results.load(["runs/"])                       # one row per evaluated model
    print(results.format_table(results.table(df, by=["role", "generation"])))
    results.report(["runs/"], "report")                # -> report/report.md, report/report.html
    results.report(["runs/a", "runs/b"], "report", compare=True)   # experiments side by side
    distill report runs/ --out report                  # the same from the shell

Reads files on disk only (config.yaml, meta.json, records.csv, summary.json); never
imports torch or the `distill` engine. Of `distill` it reads the registry of experiment
kinds (`distill.kinds`, torch-free): meta.json's kind names the View an experiment's page is
read by. `reproduce` runs the engine as a subprocess.
"""

from . import stats
from .load import NoRuns, find_runs, load, load_records
from .reproduction import ReproduceFailed, reproduce
from .comparing import comparisons
from .experiments import Experiment, split
from .reporting import report
from .stats import Comparison, compare, format_table, mean_ci, table

__all__ = ["Comparison", "Experiment", "NoRuns", "ReproduceFailed", "compare", "comparisons", "find_runs",
           "format_table", "load", "load_records", "mean_ci", "plots", "report",
           "reproduce", "split", "stats", "table"]


def __getattr__(name):
    # `results.plots` imports matplotlib and seaborn; load it on first use, not with the package
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
