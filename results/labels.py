"""Names for model kinds and the rows a sweep is about; shared by plots, tables and reports.

Kept apart from `results.plots` so that loading, tables and reports can use them without
importing matplotlib.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

# left to right in plots: what is taught, then what learns, then what is combined
ROLE_ORDER = ["model", "teacher", "member", "generation", "student", "ensemble"]
T_KEY, ALPHA_KEY = "cfg.distill.temperature", "cfg.distill.alpha"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _int_text(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def model_label(row, experiment: bool = False) -> str:
    """'student mlp', 'generation 2', 'ensemble x3 mean_probs', 'member' (all members in one)."""
    role = str(row.get("role"))
    parts = [role]
    if role in ("student", "teacher", "model") and _present(row.get("name")):
        parts.append(str(row["name"]))  # an ensemble run may distill into several architectures
    if _present(row.get("generation")) and role != "member":
        parts = ["generation" if role == "generation" else f"{role} gen", _int_text(row["generation"])]
    if _present(row.get("size")):
        parts.append(f"x{_int_text(row['size'])}")
    if _present(row.get("combine")):
        parts.append(str(row["combine"]))
    label = " ".join(parts)
    if experiment and _present(row.get("experiment")):
        label = f"{row['experiment']}: {label}"
    return label


def sweep_columns(df: pd.DataFrame) -> Optional[tuple[str, str]]:
    """The (temperature, alpha) columns if the runs vary both, else None."""
    for t_key, a_key in ((T_KEY, ALPHA_KEY), ("temperature", "alpha")):
        if t_key in df.columns and a_key in df.columns \
                and df[t_key].nunique(dropna=True) > 1 and df[a_key].nunique(dropna=True) > 1:
            return t_key, a_key
    return None


def distilled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a T x alpha sweep is about: students, else the last generation, else all but teachers."""
    roles = set(df["role"].dropna())
    if "student" in roles:
        return df[df["role"] == "student"]
    if "generation" in roles:
        generations = df[df["role"] == "generation"]
        return generations[generations["generation"] == generations["generation"].max()]
    return df[df["role"] != "teacher"]
