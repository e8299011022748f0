// Per-token records of a step, read by kernels from the step-params buffer (a replayed sequence cannot change
// push constants, so everything that varies per step lives in device memory).
// One record = 4 uint words: { token_id, pos, seq, flags }
//   token_id: vocabulary id of the token (embedding row)
//   pos:      its position in its sequence (RoPE angle; KV row within the sequence)
//   seq:      the sequence slot it belongs to (KV rows seq * n_ctx + pos; GDN/conv state slot seq)
//   flags:    bit 0 = "output row" (logits wanted), other bits reserved
// Tokens of one sequence are contiguous and in position order within a step.
#ifndef VKMTP_TOKENS_GLSL
#define VKMTP_TOKENS_GLSL
#define TOK_WORDS 4u
#define TOK_ID(t) ((t) * TOK_WORDS + 0u)
#define TOK_POS(t) ((t) * TOK_WORDS + 1u)
#define TOK_SEQ(t) ((t) * TOK_WORDS + 2u)
#define TOK_FLAGS(t) ((t) * TOK_WORDS + 3u)
#endif
