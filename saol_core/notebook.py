"""What every parameterized notebook does first: work from the project root, refuse parameters it does not
have (papermill only warns about them) or of the wrong type, and read override parameters in any of the
forms a user passes them."""
from __future__ import annotations

import os
import shlex
import types
from pathlib import Path
from typing import Any

from .config import ConfigError, format_value


_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}  # what IPython puts in every namespace


def check_parameters(namespace: dict[str, Any], parameters: dict[str, type | tuple[type, ...]]) -> None:
    """Raise ConfigError if ``namespace`` (a notebook's globals, after its imports) holds a value that is not
    one of the notebook's ``parameters`` (a papermill ``-p epochs 1`` in any case, which papermill only
    warns about, would otherwise run on the defaults), or a parameter of the wrong type (``-p RESUME
    maybe``). Modules, functions and classes are the notebook's imports; ``_`` names are the kernel's."""
    unknown = sorted(k for k, v in namespace.items() if k not in parameters and not k.startswith("_")
                     and k not in _KERNEL_NAMES and not isinstance(v, (type, types.ModuleType))
                     and not callable(v))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}; this notebook's parameters: "
                          f"{sorted(parameters)} (upper case, as in its parameters cell)")
    for name, kinds in parameters.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = namespace.get(name)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"notebook parameter {name}={value!r} must be "
                              f"{' or '.join('None' if k is type(None) else k.__name__ for k in kinds)}")


def setup(namespace: dict[str, Any], parameters: dict[str, type | tuple[type, ...]]) -> None:
    """The first thing a parameterized notebook does after its imports: work from the project root (a
    notebook opened in ``notebooks/`` starts there, and its paths are the project's), then
    :func:`check_parameters`."""
    here = Path.cwd()
    if here.name == "notebooks" and (here.parent / "saol_core").is_dir():
        os.chdir(here.parent)
    check_parameters(namespace, parameters)


def as_overrides(value: dict | list | str | None) -> list[str]:
    """Overrides as ``section.key=value`` strings from a mapping ``{"train.epochs": 2}`` (the form a
    parameters cell and ``papermill -y`` use), a list of such strings, or one string of them separated
    by spaces (``papermill -p OVERRIDES "train.epochs=1 optim.lr=0.05"``)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={format_value(v)}" for k, v in value.items()]
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"overrides must be a mapping, a list of key=value strings or one such string, got {value!r}")
