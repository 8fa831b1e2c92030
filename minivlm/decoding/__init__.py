"""Decoding: `sampling` (next token, stop rule), `llama_decoder` (the fast KV-cached decoder), `generate`
(decode a fixed batch to the end; the notebook's reference), `batch` (continuous and static batches)."""
