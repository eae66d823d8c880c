"""The experiment configuration: frozen, validated models, one per YAML section.

Validation is pydantic's (a well-kept library; STYLE.md suggests frozen dataclasses,
and pydantic's frozen models with ``extra="forbid"`` are that plus the error
messages). Keys equal the argument names used in code. Times are written with units
in YAML (``tau_x: 10 ms``) and held here as SI floats (seconds).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from pcsim.config.base import Seconds
from pcsim.config.base import Section as _Section
from pcsim.config.network import (ACTIVATIONS, LayerConfig, NetworkConfig, PrecisionConfig,
                                  ProjectionConfig)

__all__ = [
    "ACTIVATIONS", "ProjectionConfig", "PrecisionConfig", "LayerConfig", "NetworkConfig", "DynamicsConfig", "LearningConfig",
    "DataConfig", "RunConfig", "EventsConfig", "TracesConfig", "ExperimentConfig",
]

#: The most Euler steps per batch a config may ask for (a guard against hangs: 1e9 steps
#: is accepted by the types and would run for days).
MAX_STEPS = 1_000_000
#: events.crossover's default: the share of senders below which a tick's events are
#: applied by their columns alone (calibrated by benchmarks/event_speed.py, README)
SPARSE_CROSSOVER = 0.05
#: events.sparse_min_macs's default: below it finding the events costs more than the
#: dense product saves (a 784 x 512 product of one sample runs dense here)
SPARSE_MIN_MACS = 500_000


class DynamicsConfig(_Section):
    """Fast activity and slow synapse timescales, and the Euler step (SPEC section 2)."""

    tau_x: Seconds = Field(10e-3, gt=0, description="value-neuron time constant")
    tau_eps: Seconds = Field(0.0, ge=0, description="error-neuron time constant; 0 = instantaneous")
    tau_w: Seconds = Field(math.inf, gt=0, description="synapse time constant; inf = frozen")
    dt: Seconds = Field(1e-3, gt=0, description="Euler step")
    n_steps: Optional[int] = Field(None, ge=0, description="inference steps T per batch")
    duration: Optional[Seconds] = Field(None, ge=0, description="simulated time per batch")
    stop_tol: Optional[float] = Field(
        None, gt=0, lt=1, description="convergence-based stopping: end a batch's inference "
        "once one step lowers the batch-mean E by less than stop_tol * E (at most T steps)")

    @model_validator(mode="after")
    def _steps_or_duration(self):
        if self.n_steps is not None and self.duration is not None:
            raise ValueError("give either n_steps or duration, not both")
        if self.duration is not None and not math.isfinite(self.duration):
            raise ValueError("duration must be finite")
        if self.steps > MAX_STEPS:
            raise ValueError(f"{self.steps:.3g} Euler steps per batch (n_steps, or duration / "
                             f"dt) is more than pcsim runs ({MAX_STEPS:,}): lower "
                             "dynamics.n_steps or dynamics.duration, or raise dynamics.dt")
        # forward Euler of tau dv/dt = -v + ... is stable only for dt / tau < 2 (each step
        # multiplies the distance to the equilibrium by 1 - dt / tau)
        if self.dt / self.tau_x >= 2:
            raise ValueError(f"dt / tau_x = {self.dt / self.tau_x:g} is outside the stable range "
                             "of forward Euler (< 2; each step overshoots the value neurons' "
                             "equilibrium by more than it corrects and activity diverges): "
                             "lower dynamics.dt or raise dynamics.tau_x (dt / tau_x <= 0.1 "
                             "is accurate)")
        if self.tau_eps > 0 and self.dt / self.tau_eps >= 2:
            raise ValueError(f"dt / tau_eps = {self.dt / self.tau_eps:g} is outside the stable "
                             "range of forward Euler (< 2): lower dynamics.dt, raise "
                             "dynamics.tau_eps, or set tau_eps: 0 (errors at their fixed point)")
        return self

    @property
    def steps(self) -> int:
        """Number of Euler steps T per batch (``n_steps``, or ``duration / dt`` rounded)."""
        if self.n_steps is not None:
            return self.n_steps
        if self.duration is not None:
            return int(round(self.duration / self.dt))
        return 20

    @property
    def eta_x(self) -> float:
        """The discrete inference rate ``dt / tau_x`` (SPEC 2.3)."""
        return self.dt / self.tau_x


class LearningConfig(_Section):
    """How weights learn: the PC local rule or the backprop baseline."""

    rule: Literal["pc", "bp"] = "pc"
    optimizer: Literal["sgd", "adam", "adamw", "none"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate eta_w")
    lr_schedule: Literal["constant", "cosine", "warmup_cosine"] = Field(
        "constant", description="cosine: anneal lr to 0 over the epochs, stepped per epoch; "
        "warmup_cosine: rise linearly over warmup_epochs first")
    warmup_epochs: int = Field(0, ge=0, description="warmup_cosine: epochs of linear warmup")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="lambda in SPEC 2.2 (decoupled for adamw)")
    batch_size: int = Field(64, gt=0)
    epochs: int = Field(1, ge=0, le=100_000)
    seed: int = Field(0, ge=0)


class DataAugmentConfig(_Section):
    """``data.augment``: random augmentation of training batches (off by default; test
    batches are never augmented). Drawn per (learning.seed, epoch, batch), so a resumed
    run redraws the same augmentation (``pcsim.data.augment_generator``)."""

    crop_padding: int = Field(
        0, ge=0, description="random crop: pad each side by this many black pixels "
        "and crop back to the image size at a uniform random offset (torchvision's "
        "RandomCrop(size, padding=p)); 0 = off")
    hflip: bool = Field(False, description="mirror each training image left-right with "
                        "probability 1/2 (after the crop)")


class DataConfig(_Section):
    """The data set and where it lives."""

    dataset: Literal["mnist", "fashion_mnist", "cifar10", "cifar100"] = "mnist"
    root: Optional[str] = Field(
        None, description="data root; the --data-root flag overrides it; without either, "
        "$PCSIM_DATA, else ~/.cache/pcsim/data")
    normalize: bool = Field(True, description="standardise each channel by the training "
                            "set's per-channel mean/std")
    augment: DataAugmentConfig = Field(
        default_factory=DataAugmentConfig, description="training-batch augmentation: "
        "{crop_padding: p, hflip: true|false}")
    download: bool = Field(True, description="let torchvision fetch missing files")
    limit_train: Optional[int] = Field(None, gt=0, description="use only the first N training images")
    limit_test: Optional[int] = Field(None, gt=0, description="use only the first N test images")
    target: Literal["label", "image"] = Field(
        "label", description="what the top layer learns: the one-hot label (classification) "
        "or the image itself (reconstruction: a generative PC decoder, or a BP autoencoder)")


class RunConfig(_Section):
    """Where and how the run executes."""

    backend: Literal["torch", "brian2"] = "torch"
    brian2_target: Literal["numpy", "cython"] = Field(
        "numpy", description="brian2 code generation (cython compiles once, ~25-70 s)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["float32", "float64"] = "float32"
    out: str = Field("runs", description="folder that holds run folders")
    name: Optional[str] = Field(None, min_length=1, max_length=200, pattern=r"^[^/\x00]+$",
                                description="run folder name (no '/'); default: config stem + time")
    progress: bool = True
    threads: Optional[int] = Field(None, gt=0, le=1024, description="torch CPU threads")
    compile: bool = Field(False, description="torch.compile the training step: PC's fast "
                          "cycle, BP's loss (forward and backward), and for both the "
                          "optimizer's update (a one-off compile, then fused steps)")
    dist_timeout: float = Field(
        300.0, gt=0, description="seconds a process waits for the others (torchrun) before "
        "it stops with an error")
    checkpoint_every: Optional[int] = Field(
        None, gt=0, description="also checkpoint every N training batches (resumable)")
    count_ops: bool = Field(
        True, description="count ops (SPEC 4) in the last epoch and its evaluation, for the "
        "energy report; counting never runs when off")


class EventsConfig(_Section):
    """Event-driven (sigma-delta) execution of the transmitted signals (SPEC section 3).

    ``theta`` is one threshold for every population, or a mapping from population names
    (``value_l<l>``, ``error_l<l>``) or the kinds ``value`` / ``error`` to thresholds; a
    population not named falls back to its kind, then to ``default`` (0).

    ``execution`` says how a receiver applies a tick's events: ``sparse`` by the columns
    of the neurons (a kernel's channels) that sent, ``dense`` by the product of the
    mostly-zero payload, ``auto`` sparse when at most ``crossover`` of its senders sent.
    The three give the same numbers and the same counts; only wall time differs.
    """

    enabled: bool = False
    theta: Union[float, dict[str, float]] = 0.0
    payload: Literal["graded", "integer"] = "graded"
    execution: Literal["auto", "sparse", "dense"] = Field(
        "auto", description="apply a tick's events by the senders' columns alone (sparse), "
        "by the dense product of the payload, or by density against crossover (auto)")
    crossover: float = Field(
        SPARSE_CROSSOVER, gt=0, le=1,
        description="auto: sparse when at most this share of a link's senders sent")
    sparse_min_macs: int = Field(
        SPARSE_MIN_MACS, ge=0, description="auto: a link evaluation of fewer dense MACs "
        "(rows x n_post x n_pre) runs dense without looking for its events")
    carry: bool = Field(
        False, description="receivers keep what they hold from one batch to the next (a "
        "stream: only changes are sent); off, every batch starts from zero")

    @model_validator(mode="after")
    def _check_theta(self):
        values = self.theta.values() if isinstance(self.theta, dict) else [self.theta]
        if any(v < 0 or not math.isfinite(v) for v in values):
            raise ValueError("theta must be finite and >= 0")
        if isinstance(self.theta, dict):
            for key in self.theta:
                if key not in ("value", "error", "default") and not re.fullmatch(
                        r"(value|error)_l\d+", key):
                    raise ValueError(f"theta key {key!r}: expected 'value', 'error', "
                                     "'default' or a population name like value_l1, error_l2")
        if self.payload == "integer" and min(values, default=0.0) <= 0:
            raise ValueError("payload 'integer' sends trunc(delta / theta): every theta must be > 0")
        return self

    def theta_for(self, population: str) -> float:
        """Return the threshold of ``population`` (``value_l0``, ``error_l2``, ...)."""
        if not isinstance(self.theta, dict):
            return float(self.theta)
        kind = population.split("_")[0]
        for key in (population, kind, "default"):
            if key in self.theta:
                return float(self.theta[key])
        return 0.0


class TracesConfig(_Section):
    """What to record into the run's HDF5 trace file (SPEC section 5).

    Recorded samples run the inference of a training cycle (input and label clamped,
    feedforward start, ``n_steps`` Euler steps) with the weights of the epoch, apart
    from training, so an unrecorded run is never slowed.
    """

    enabled: bool = False
    split: Literal["test", "train"] = "test"
    samples: Union[Annotated[int, Field(gt=0)], list[Annotated[int, Field(ge=0)]]] = Field(
        8, description="the first N samples of the split, or a list of indices")
    populations: list[str] = Field(default_factory=lambda: ["value", "error"],
                                   description="kinds (value, error) or names (value_l1)")
    layers: Optional[list[Annotated[int, Field(ge=0)]]] = None
    every: int = Field(1, gt=0, description="record every k-th step (frames)")
    epochs: Optional[list[Annotated[int, Field(gt=0)]]] = Field(
        None, description="epochs after which to record; default: the last")
    batch_size: int = Field(100, gt=0, description="samples recorded at once (memory bound)")
    file: str = Field("traces.h5", pattern=r"^[^/]+\.h5$")

    @model_validator(mode="after")
    def _check(self):
        for name in self.populations:
            if name not in ("value", "error") and not re.fullmatch(r"(value|error)_l\d+", name):
                raise ValueError(f"populations: {name!r} is not 'value', 'error' or a "
                                 "population name like value_l1")
        return self


class ExperimentConfig(_Section):
    """One experiment: ``network``, ``dynamics``, ``learning``, ``data``, ``run``."""

    network: NetworkConfig
    dynamics: DynamicsConfig = DynamicsConfig()
    learning: LearningConfig = LearningConfig()
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig()
    events: EventsConfig = EventsConfig()
    traces: TracesConfig = TracesConfig()
    hw_profiles: Optional[list[str]] = Field(
        None, description="profile stems in hw_profiles/ for the energy report; None = all")

    @model_validator(mode="after")
    def _consistent(self):
        if self.network.mode == "generative":
            if self.data.target != "image":
                raise ValueError("network.mode 'generative' clamps the data to the top layer: "
                                 "set data.target: image")
        elif self.data.target == "image" and self.learning.rule == "pc":
            raise ValueError("data.target 'image' with learning.rule 'pc' needs network.mode "
                             "'generative' (a PC autoencoder is only the decoder)")
        if self.learning.rule == "bp" and self.learning.optimizer == "none":
            raise ValueError("learning.optimizer 'none' needs rule 'pc' with a finite tau_w")
        if (self.learning.optimizer == "none" and math.isinf(self.dynamics.tau_w)):
            raise ValueError("learning.optimizer 'none' with tau_w = inf never changes a weight")
        eta = self.dynamics.dt / self.dynamics.tau_x
        for l, layer in enumerate(self.network.layers[1:], start=1):
            if layer.precision is None and eta * layer.prec >= 2:
                raise ValueError(
                    f"network.layers.{l}.prec = {layer.prec:g} with dt / tau_x = {eta:g}: a value "
                    f"neuron's Euler step on its own error, prec * dt / tau_x = "
                    f"{eta * layer.prec:g}, must stay below 2 or inference diverges; lower "
                    "dynamics.dt or this layer's prec")
        # what a backend or rule cannot execute (brian2: events, float32, bp; bp: traces,
        # events) is declared by its trainer and refused by pcsim.training.check_trainer
        return self
