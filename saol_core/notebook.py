"""What every parameterized notebook does first: refuse parameters it does not have (papermill only warns
about them) and read override parameters in any of the forms a user passes them."""
from __future__ import annotations

import shlex
from typing import Any

from .config import ConfigError, format_value


def check_parameters(namespace: dict[str, Any], names: set[str]) -> None:
    """Raise ConfigError if ``namespace`` (a notebook's globals) holds an UPPER_CASE name that is not one
    of the notebook's parameters ``names``: a misspelled ``papermill -p`` would otherwise run on defaults."""
    unknown = sorted(k for k in namespace if k.isupper() and k not in names and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}; this notebook's parameters: {sorted(names)}")


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
