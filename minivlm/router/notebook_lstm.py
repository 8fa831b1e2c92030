"""Reproduce the notebook's router training, as a baseline: the BiLSTM on 32 hand-written queries.

The examples below are typical of the notebook's list (about ten per task). The hyper-parameters follow
a plain notebook recipe: Adam lr 1e-3, batch 8, cross-entropy, fixed epochs, no validation split.
"""
from __future__ import annotations

import torch

from minivlm.router.lstm import LSTMRouter
from minivlm.router.tokenization import QueryTokenizer
from vlm_client.protocol import TASKS

NOTEBOOK_EXAMPLES = (
    ("describe this image", "caption"), ("what is in this picture", "caption"),
    ("generate a caption", "caption"), ("caption this photo", "caption"),
    ("describe the scene", "caption"), ("what does this image show", "caption"),
    ("give me a description of the image", "caption"), ("summarize this picture", "caption"),
    ("tell me about this image", "caption"), ("write a caption for this", "caption"),
    ("detect all objects", "od"), ("find the objects in this image", "od"),
    ("list objects with bounding boxes", "od"), ("where are the objects", "od"),
    ("locate everything in the picture", "od"), ("draw boxes around objects", "od"),
    ("object detection", "od"), ("identify and localize all items", "od"),
    ("give me the coordinates of the objects", "od"), ("detect people and cars", "od"),
    ("what color is the car", "vqa"), ("how many people are there", "vqa"),
    ("is there a dog in the image", "vqa"), ("what is the man holding", "vqa"),
    ("is it raining", "vqa"), ("what is the woman wearing", "vqa"),
    ("how many cats are in the picture", "vqa"), ("is the dog happy", "vqa"),
    ("where is the cat sitting", "vqa"), ("what animal is this", "vqa"),
    ("are the lights on", "vqa"), ("what time of day is it", "vqa"),
)


def train_notebook_lstm(tokenizer: QueryTokenizer, *, epochs: int = 20, batch_size: int = 8, lr: float = 1e-3,
                        seed: int = 0) -> LSTMRouter:
    torch.manual_seed(seed)
    texts = [text for text, _ in NOTEBOOK_EXAMPLES]
    ids = torch.from_numpy(tokenizer(texts)[0])                                  # (32, 32)
    labels = torch.tensor([TASKS.index(task) for _, task in NOTEBOOK_EXAMPLES])
    model = LSTMRouter(tokenizer.vocab_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(texts)).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(ids[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()
