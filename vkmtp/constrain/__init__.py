"""Constrained decoding: grammars (GBNF, JSON schema, tool calls) and logit bias shaping a sequence's logits."""
