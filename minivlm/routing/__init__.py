"""Task router: query text -> calibrated probabilities over vlm_client.protocol.TASKS.

Two routers share one interface (`forward(input_ids, attention_mask) -> logits`): the notebook's BiLSTM
(`lstm.py`) and a pretrained all-MiniLM-L6-v2 encoder with a small head (`minilm.py`). The MiniLM router also
has a multi-label scores head for compound queries (`multilabel.py`); the LSTM serves its probabilities as
scores. `tokenization.py` is the serving-side tokenizer and imports no torch, so this package file imports
nothing either.
"""

ROUTER_KINDS = ("lstm", "minilm")
