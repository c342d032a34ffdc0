"""Classic Swarm's scheduler (filters, strategies, placement expressions), pure and in-process."""

from .model import ContainerInfo, NodeInfo, SchedulingError
from .placement import build_request, parse_placement, with_image_affinity
from .scheduler import Scheduler

__all__ = [
    "ContainerInfo",
    "NodeInfo",
    "Scheduler",
    "SchedulingError",
    "build_request",
    "parse_placement",
    "with_image_affinity",
]
