"""acestep-batch: dataset-scale and online music generation with ACE-Step v1 on Ray."""

__version__ = "0.1.0"
