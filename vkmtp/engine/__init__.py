"""Engines run the model for the CLI and the server: the Vulkan engine and the NumPy reference engine."""
