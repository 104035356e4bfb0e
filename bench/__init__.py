"""scalebench: how Transformer training scales with size, devices, batch and parallel strategy."""
__version__ = "0.1.0"
