"""vkmtp's GLSL compute shaders, shipped as package data (`vkmtp.shaders`); vkmtp.device.compiler reads them."""
