"""NumPy references: per-op oracles (vkmtp.ref.ops) and the whole-model forward (no device needed)."""
