"""Hardware profiles and energy estimates from op counts (no torch, no brian2)."""

from pcsim.energy.estimate import EnergyReport, estimate_energy
from pcsim.energy.profiles import (ENERGY_KINDS, HardwareProfile, ProfileError,
                                   available_profiles, load_profile, profiles_dir)

__all__ = ["ENERGY_KINDS", "EnergyReport", "HardwareProfile", "ProfileError",
           "available_profiles", "estimate_energy", "load_profile", "profiles_dir"]
