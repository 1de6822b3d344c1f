"""Data: dataset builders, the manifest (the common language), split, validation, tensors."""
