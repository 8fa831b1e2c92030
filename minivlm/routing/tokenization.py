"""QueryTokenizer: query strings -> (input_ids, attention_mask) for the router graph.

Used inside the Triton `preprocess` and `query_preprocess` models, so it depends on the `tokenizers` library
only (no torch, no transformers at serving time). A saved folder holds `tokenizer.json` plus
`query_tokenizer.json` with the router kind, padding rules, the words it corrects slips of
(`spelling_words`, `spelling.py`; empty: none, as for the notebook's LSTM and folders saved before it existed)
and whether it drops the clauses that rule a task out (`drop_ruled_out`, `ruled_out.py`; false in folders saved
before it existed).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from minivlm.routing import ROUTER_KINDS
from minivlm.routing.ruled_out import drop_ruled_out
from minivlm.routing.spelling import SpellingCorrector

CONFIG_FILE = "query_tokenizer.json"
TOKENIZER_FILE = "tokenizer.json"
LSTM_MAX_LENGTH = 32      # the notebook pads/truncates every query to 32 LM tokens
MINILM_MAX_LENGTH = 64    # routing queries are short; 64 WordPiece tokens cover long ones


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str             # "lstm" or "minilm"
    max_length: int
    pad_id: int
    pad_token: str
    fixed_length: bool    # lstm: always max_length; minilm: pad to the longest query in the batch
    spelling_words: tuple[str, ...] = ()   # correct slips of these words before tokenizing; () = off
    drop_ruled_out: bool = False           # then drop clauses that rule a task out ("no caption, ...")

    def __post_init__(self):
        object.__setattr__(self, "spelling_words", tuple(self.spelling_words))   # a JSON list on load


class QueryTokenizer:
    def __init__(self, tokenizer: Tokenizer, spec: TokenizerSpec):
        if spec.kind not in ROUTER_KINDS:
            raise ValueError(f"unknown router kind {spec.kind!r}; expected one of {ROUTER_KINDS}")
        self.spec = spec
        self._tokenizer = tokenizer
        self._tokenizer.enable_truncation(spec.max_length)
        length = spec.max_length if spec.fixed_length else None
        self._tokenizer.enable_padding(pad_id=spec.pad_id, pad_token=spec.pad_token, length=length)
        self.corrector = (SpellingCorrector(spec.spelling_words, self._is_vocabulary_word)
                          if spec.spelling_words else None)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns input_ids and attention_mask, both int64 of shape (B, T)."""
        if isinstance(texts, str):
            raise TypeError("QueryTokenizer expects a list of strings, got a single str")
        texts = [self.corrector(t) for t in texts] if self.corrector else list(texts)
        if self.spec.drop_ruled_out:
            texts = [drop_ruled_out(t) for t in texts]
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), -1)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(texts), -1)
        return input_ids, attention_mask

    def _is_vocabulary_word(self, word: str) -> bool:
        return self._tokenizer.token_to_id(word) is not None

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(folder / TOKENIZER_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "QueryTokenizer":
        folder = Path(folder)
        for name in (CONFIG_FILE, TOKENIZER_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a QueryTokenizer folder: {name} is missing")
        spec = TokenizerSpec(**json.loads((folder / CONFIG_FILE).read_text()))
        return cls(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), spec)

    @classmethod
    def from_pretrained(cls, hf_folder: str | Path, kind: str, *,
                        spelling_words: tuple[str, ...] = (), drop_ruled_out: bool = False) -> "QueryTokenizer":
        """Build from a Hugging Face tokenizer folder (`save_pretrained` output), e.g. the notebook's
        `mini-vlm-routing/tokenizer/` for "lstm" or the MiniLM folder for "minilm"."""
        if (spelling_words or drop_ruled_out) and kind == "lstm":
            raise ValueError("the notebook's LSTM router tokenizes exactly as predict_task: no spelling correction "
                             "and no dropped clauses")
        from transformers import AutoTokenizer  # build time only; serving loads tokenizer.json directly

        hf = AutoTokenizer.from_pretrained(str(hf_folder))
        pad_id, pad_token = _pad_of(hf, kind)
        fixed = kind == "lstm"
        spec = TokenizerSpec(kind=kind, max_length=LSTM_MAX_LENGTH if fixed else MINILM_MAX_LENGTH,
                             pad_id=pad_id, pad_token=pad_token, fixed_length=fixed,
                             spelling_words=tuple(spelling_words), drop_ruled_out=drop_ruled_out)
        return cls(hf.backend_tokenizer, spec)


def _pad_of(hf_tokenizer, kind: str) -> tuple[int, str]:
    """The notebook sets pad = EOS on the LM tokenizer; fall back to EOS when no pad token is saved."""
    if hf_tokenizer.pad_token_id is not None:
        return hf_tokenizer.pad_token_id, hf_tokenizer.pad_token
    if hf_tokenizer.eos_token_id is not None:
        return hf_tokenizer.eos_token_id, hf_tokenizer.eos_token
    raise ValueError(f"the {kind} tokenizer has neither a pad nor an EOS token to pad with")
