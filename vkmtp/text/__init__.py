"""Text: the GGUF byte-level BPE tokenizer, its metadata for model makers, and the Jinja chat template."""
