"""The model recorded on a device: weight placement, device state, the memory plan, the forward pass and the
engine's recorded steps (each replayed as one queue submission)."""
