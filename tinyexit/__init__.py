"""tinyexit: early-exit tiny neural networks for microcontrollers, from training to firmware."""

__version__ = "0.1.0"
