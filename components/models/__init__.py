"""Models: backbones, bottleneck, classifiers, discriminators, gradient reversal."""
from components.models.network import Network, build_network

__all__ = ["Network", "build_network"]
