"""What is simulated, backend-neutral: equations, activations, network, analytic costs.

Importing this package loads neither torch nor brian2.
"""

from pcsim.model.activations import ACTIVATIONS, Activation, get_activation
from pcsim.model.costs import DenseCost, bp_train_cost, feedforward_cost, pc_train_cost
from pcsim.model.network import Layer, Network, Projection

__all__ = ["ACTIVATIONS", "Activation", "DenseCost", "Layer", "Network", "Projection",
           "bp_train_cost", "feedforward_cost", "get_activation", "pc_train_cost"]
