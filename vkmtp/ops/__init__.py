"""One thin wrapper per shader: picks the variant, computes the dispatch grid, records it (vkmtp.device)."""
