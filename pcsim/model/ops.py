"""The op kinds of SPEC section 4, named once for the engines that report them and the
counters that add them up."""

from __future__ import annotations

from enum import Enum

__all__ = ["Op", "KINDS"]


class Op(str, Enum):
    """One kind of counted work. Members compare equal to their names (``Op.SYN_EVENTS ==
    "syn_events"``), so counts keyed by them read back by name from JSON."""

    DENSE_MACS = "dense_macs"                        # n_post * n_pre per dense map, per sample
    SYN_EVENTS = "syn_events"                        # events sent (dense: every pre neuron)
    SYN_OPS_MAC = "syn_ops_mac"                      # fan-out summed over graded events
    SYN_OPS_AC = "syn_ops_ac"                        # the same for integer payloads
    NEURON_UPDATES = "neuron_updates"                # per neuron per step
    NEURON_UPDATES_ACTIVE = "neuron_updates_active"  # those that sent or received an event
    WEIGHT_GRAD_OPS = "weight_grad_ops"              # local-gradient MACs, per synapse per sample
    WEIGHT_WRITES = "weight_writes"                  # per plastic parameter per learning step
    PREC_UPDATES = "prec_updates"                    # per learned variance per learning step
    MEM_READ_BYTES = "mem_read_bytes"                # one weight read per synaptic op / update
    MEM_WRITE_BYTES = "mem_write_bytes"              # one state write per neuron / weight update

    def __str__(self) -> str:
        return self.value


#: Every kind's name, in SPEC order.
KINDS = tuple(op.value for op in Op)
