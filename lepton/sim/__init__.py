"""The trace-driven simulator: replays a pod trace on a node fleet under each policy.

See ``docs/simulation.md`` for the assumptions and their defaults.
"""

from .engine import SimConfig, SimResult, simulate
from .policies import ALL_POLICIES, PolicyName
from .trace import TraceNode, TracePod, load_nodes, load_pods

__all__ = [
    "ALL_POLICIES",
    "PolicyName",
    "SimConfig",
    "SimResult",
    "TraceNode",
    "TracePod",
    "load_nodes",
    "load_pods",
    "simulate",
]
