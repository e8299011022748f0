"""The embedded demo model, shipped as package data (`vkmtp.models`); see README.md here and vkmtp.demo_model."""
