"""particles: the finite-width engine of meanfield.

Pure JAX functions on pytrees (no I/O, no xarray): model specs and parametrisations, initial
laws sampled per neuron, the per-neuron kernel lifted with ``vmap`` and evaluated in
memory-bounded chunks, losses, and integrators in gradient-flow time.
"""

from meanfield.particles.init import init_particles
from meanfield.particles.integrators import (
    STATUS_NAMES,
    AdaptiveFlow,
    Euler,
    FixedStepState,
    FlowState,
    Heun,
    IController,
    OptaxSolver,
    StopRule,
    TimeIntegrator,
    default_band_eps,
)
from meanfield.particles.kernels import (
    Particles,
    Problem,
    chunk_layout,
    make_problem,
    matmul,
    network_output,
    neuron_output,
    neuron_velocity,
    residuals,
    risk,
    sample_sum,
    to_device,
    velocity,
)
from meanfield.particles.losses import is_classification, loss_derivative, loss_value
from meanfield.particles.model import (
    InitialLaw,
    ModelSpec,
    Parametrisation,
    TrainingData,
    regime_of,
)

__all__ = [
    "STATUS_NAMES", "AdaptiveFlow", "Euler", "FixedStepState", "FlowState", "Heun",
    "IController",
    "InitialLaw", "ModelSpec", "OptaxSolver", "Parametrisation", "Particles", "Problem",
    "StopRule", "TimeIntegrator", "TrainingData", "chunk_layout", "default_band_eps",
    "init_particles", "is_classification", "loss_derivative", "loss_value", "make_problem",
    "matmul", "network_output", "neuron_output", "neuron_velocity", "regime_of", "residuals",
    "risk", "sample_sum", "to_device", "velocity",
]
