"""Adaptation: losses registered by name (adversarial and Ω regularisers) and the trainer."""
from components.adaptation.losses import ADVERSARIAL, REGULARISERS, Outputs

__all__ = ["ADVERSARIAL", "REGULARISERS", "Outputs"]
