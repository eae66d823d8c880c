"""What every config section shares: times with units, and the frozen, strict section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from pcsim.units import parse_quantity

__all__ = ["Seconds", "Section"]


def _seconds(value):
    return parse_quantity(value, "s")


#: A time in seconds, written in YAML as "10 ms", "inf" or a bare number of seconds.
Seconds = Annotated[float, BeforeValidator(_seconds)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
