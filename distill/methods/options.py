"""The distill.* options the methods declare, as keys of the config: each declared once, with its
method's formula (`distill.methods.losses`), and read, checked and defaulted from here.

    checked_option("dkd_beta", 3)      # 3.0, or a one-line ConfigError (unknown key, type, range)
    option_default("jsd_beta")         # 0.5
"""

from __future__ import annotations

import dataclasses
import difflib

from distill.errors import ConfigError
from distill.methods import DistillConfig, Option
from distill.methods import losses
from distill.schema import _checked


def all_options() -> list[tuple[Option, list[str]]]:
    """Every distill.* option some method declares, with the methods that read it (first declared first)."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for method in losses.METHODS.values():
        for option in method.options:
            found.setdefault(option.key, (option, []))[1].append(method.name)
    return list(found.values())


def option_default(key: str):
    """The declared default of the distill.* option `key` (AttributeError if no method declares it)."""
    for option, _ in all_options():
        if option.key == key:
            return option.default
    raise AttributeError(f"no method declares the option distill.{key}")


def checked_option(key: str, value, prefix: str = "distill."):
    """`value` for the distill.* option `key`, converted and checked against its declaration (type,
    range) as a field of the config would be; ConfigError naming the key otherwise."""
    options = {option.key: option for option, _ in all_options()}
    if key not in options:
        allowed = [f.name for f in dataclasses.fields(DistillConfig)] + list(options)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{prefix}{key}: unknown key{hint}; allowed keys are {', '.join(allowed)} "
                          f"(each method's options: distill list methods)")
    option = options[key]
    return _checked(value, option.type, option.bounds, prefix + key)
