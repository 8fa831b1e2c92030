"""The bench's full-size random-weight model, made to decode like a real one: every answer runs to its token
limit, and its tokens have text."""
from __future__ import annotations

import torch


@torch.no_grad()
def suppress_eos(language_model: torch.nn.Module, eos_token_id: int) -> None:
    """Zero EOS's output-embedding row: its logit is then exactly 0 while 49151 random logits compete, so
    greedy decoding never picks it (P(all others < 0) = 2**-49151). The served generator, transformers and the
    notebook loop then all run to their token limit with no code change in any of them."""
    language_model.get_output_embeddings().weight[eos_token_id].zero_()


def confine_to_tokenizer(language_model: torch.nn.Module, vocab_size: int) -> None:
    """Zero the output-embedding rows of ids the tokenizer does not have (the random full-size model has 49,152
    ids, its offline tokenizer 1,024): their logits are exactly 0 while ~1,000 random ones compete, so greedy
    decoding picks ids with text. Answers then decode to real text, and a streamed answer arrives token by token
    (a token without text sends nothing), so time to first token is measurable. Every step still multiplies
    the whole vocabulary: the work is unchanged."""
    with torch.no_grad():
        language_model.get_output_embeddings().weight[vocab_size:].zero_()
