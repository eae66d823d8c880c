"""SI conventions: parse quantities written with units ("5 ms", "3.1 pJ") into SI floats.

Internal values are plain SI floats (seconds, joules, watts) with no unit suffix in
their names; units live only in YAML strings and docstrings.
"""

from __future__ import annotations

import math
import re

__all__ = ["UnitError", "parse_quantity", "format_quantity"]

#: SI prefixes accepted in front of a base unit.
_PREFIXES = {
    "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15,
}
#: Base units by physical dimension.
_BASE = {"s": "s", "J": "J", "W": "W", "Hz": "Hz", "B": "B"}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"^\s*(?P<num>{_NUMBER}|[-+]?inf)\s*(?P<unit>[A-Za-zµ]*)\s*$")


class UnitError(ValueError):
    """A quantity string that cannot be read, or has the wrong dimension."""


def parse_quantity(value: object, unit: str) -> float:
    """Parse a quantity into an SI float of dimension ``unit``.

    Parameters
    ----------
    value : str, int or float
        ``"5 ms"``, ``"3.1 pJ"``, ``"inf"``, or a bare number already in SI units.
    unit : str
        The expected base unit, one of ``s``, ``J``, ``W``, ``Hz``, ``B``.

    Returns
    -------
    float
        The value in SI units.

    Raises
    ------
    UnitError
        If the string cannot be parsed or its unit has the wrong dimension.

    Examples
    --------
    >>> parse_quantity("5 ms", "s")
    0.005
    >>> parse_quantity("3.1 pJ", "J")
    3.1e-12
    >>> parse_quantity("inf", "s")
    inf
    >>> parse_quantity(0.25, "s")
    0.25
    """
    if unit not in _BASE:
        raise UnitError(f"unknown base unit {unit!r}; expected one of {sorted(_BASE)}")
    if isinstance(value, bool):
        raise UnitError(f"expected a quantity in {unit}, got a boolean {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"expected a quantity such as '5 m{unit}', got {value!r}")
    match = _QUANTITY.match(value)
    if match is None:
        raise UnitError(f"cannot read {value!r} as a quantity; expected e.g. '5 m{unit}'")
    number = float(match["num"])
    suffix = match["unit"]
    if suffix == "":
        return number
    if suffix.endswith(unit):
        prefix = suffix[: -len(unit)]
        if prefix in _PREFIXES:
            return number * _PREFIXES[prefix]
    raise UnitError(f"{value!r} is not a quantity in {unit} (unit {suffix!r})")


def format_quantity(value: float, unit: str) -> str:
    """Write an SI float with a readable prefix, the inverse of :func:`parse_quantity`.

    Examples
    --------
    >>> format_quantity(0.005, "s")
    '5 ms'
    >>> format_quantity(float("inf"), "s")
    'inf'
    """
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return f"0 {unit}"
    for prefix, factor in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0),
                           ("m", 1e-3), ("u", 1e-6), ("n", 1e-9), ("p", 1e-12), ("f", 1e-15)):
        if abs(value) >= factor * (1 - 1e-12):
            return f"{value / factor:.12g} {prefix}{unit}"
    return f"{value:.12g} {unit}"
