"""loraplus-sweep: find the learning rates and the ratio eta_B / eta_A for LoRA+."""

__version__ = "0.1.0"
