"""Hardware profiles: energy per counted op kind, each number with its source and basis.

A profile is data only (``hw_profiles/<stem>.yaml``); no hardware constant lives in code.
Every kind in :data:`ENERGY_KINDS` must be present. A kind with no published figure has
``value: null`` and says why in ``note``; the energy report then lists it as missing
instead of pricing it at zero.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from pcsim.config.base import read_small_text, read_yaml, refuse_bool
from pcsim.units import parse_quantity

__all__ = ["ENERGY_KINDS", "ProfileError", "EnergyEntry", "HardwareProfile", "load_profile",
           "profiles_dir", "available_profiles", "PROFILES_ENV"]

#: Profile key -> the OpCounts kind it prices (``neuron_update_idle`` prices
#: ``neuron_updates - neuron_updates_active``).
ENERGY_KINDS = {
    "syn_op_mac": "syn_ops_mac",
    "syn_op_ac": "syn_ops_ac",
    "syn_event": "syn_events",
    "neuron_update_active": "neuron_updates_active",
    "neuron_update_idle": "neuron_updates_idle",
    "weight_grad_op": "weight_grad_ops",
    "weight_update": "weight_writes",
    "mem_read_byte": "mem_read_bytes",
    "mem_write_byte": "mem_write_bytes",
}

#: Environment variable naming the folder of profiles.
PROFILES_ENV = "PCSIM_HW_PROFILES"


class ProfileError(ValueError):
    """A malformed or incomplete profile; the message names the file and the key."""


def _maybe(unit):
    def parse(value):
        return None if value is None else parse_quantity(value, unit)
    return parse


class _Strict(BaseModel):
    # (an energy of inf or nan would price a run at nan J)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info: ValidationInfo):
        return refuse_bool(cls, value, info)


class EnergyEntry(_Strict):
    """One priced kind: ``value`` (J per op or per byte) or null, with its provenance."""

    value: Annotated[Optional[float], BeforeValidator(_maybe("J"))] = Field(..., ge=0)
    basis: Optional[Literal["measured", "simulated", "derived", "assumed"]] = None
    source: str = Field(min_length=3)
    note: Optional[str] = None

    @model_validator(mode="after")
    def _provenance(self):
        if self.value is not None and self.basis is None:
            raise ValueError("a value needs a basis: measured, simulated, derived or assumed")
        if self.value is None and not self.note:
            raise ValueError("a missing value (null) needs a note saying why")
        return self


class PowerEntry(_Strict):
    value: Annotated[Optional[float], BeforeValidator(_maybe("W"))] = Field(..., ge=0)
    basis: Optional[Literal["measured", "simulated", "derived", "assumed"]] = None
    source: str = Field(min_length=3)
    note: Optional[str] = None


class HardwareProfile(_Strict):
    """A platform's energy per op kind (SPEC section 4)."""

    name: str
    kind: Literal["neuromorphic", "digital_accelerator", "gpu", "cpu"]
    technology: str
    description: str
    energies: dict[str, EnergyEntry]
    static_power: PowerEntry
    stem: str = ""

    @model_validator(mode="after")
    def _complete(self):
        missing = sorted(set(ENERGY_KINDS) - set(self.energies))
        unknown = sorted(set(self.energies) - set(ENERGY_KINDS))
        if missing:
            raise ValueError(f"energies: missing kinds {missing} (write value: null with a "
                             "note where no figure is published)")
        if unknown:
            raise ValueError(f"energies: unknown kinds {unknown}; valid: {sorted(ENERGY_KINDS)}")
        return self


def profiles_dir(override: Optional[str] = None) -> Path:
    """The folder of profiles: ``override``, else ``$PCSIM_HW_PROFILES``, else the
    ``hw_profiles/`` folder beside the ``pcsim`` package (a source checkout)."""
    for candidate in (override, os.environ.get(PROFILES_ENV)):
        if candidate:
            return Path(candidate).expanduser()
    return Path(__file__).resolve().parents[2] / "hw_profiles"


def available_profiles(folder: Optional[str | Path] = None) -> list[str]:
    folder = Path(folder) if folder else profiles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(name_or_path: str | Path, folder: Optional[str | Path] = None) -> HardwareProfile:
    """Load ``hw_profiles/<name>.yaml`` (or a path) and validate it.

    Raises
    ------
    ProfileError
        Naming the file and every offending key.
    """
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        folder = Path(folder) if folder else profiles_dir()
        path = folder / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(f"{path}: no such hardware profile; available in {folder}: "
                               f"{available_profiles(folder)}")
    try:
        data = read_yaml(read_small_text(path))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    try:
        return HardwareProfile.model_validate({**data, "stem": path.stem})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else (
                "required key is missing" if err["type"] == "missing" else err["msg"])
            lines.append(f"{loc}: {msg}")
        raise ProfileError(f"{path}: invalid hardware profile:\n  " + "\n  ".join(lines)) from None
