"""genwb: a workbench for training, sampling and evaluating generative image models."""
__version__ = "0.1.0"
