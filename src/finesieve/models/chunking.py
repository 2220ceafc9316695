"""Long documents (resumes) as windows of tokens: what lets a 256-token encoder read a 1,200-token text.

    windows = token_windows(tokenizer, texts, max_length=256, max_chunks=8, overlap=32)
    windows[0]            # the first text's windows: lists of token ids, special tokens included
    batches = ChunkedBatches(windows, targets, tokenizer.pad_token_id)   # training rows are documents

A text is tokenised whole, cut into windows of `max_length` tokens (special tokens included) that overlap by
`overlap` tokens, and, when it has more than `max_chunks` windows, `max_chunks` of them are kept spread evenly
from the first to the last, so the end of a long resume (its earliest jobs, its education) is read as well as its
start. The classifier pools each window to one vector as it pools a message, and averages a document's window
vectors before the head (`TextClassifier.forward(..., doc_index=...)`), so a document is one row of the loss and
one row of the scores however many windows it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finesieve.models.training_loop import Batches

Windows = list[list[int]]  # one document: its windows, each a list of token ids


def token_windows(tokenizer, texts: Sequence[str], max_length: int, max_chunks: int, overlap: int) -> list[Windows]:
    """Each text's windows of at most `max_length` tokens (with the tokenizer's special tokens), overlapping by
    `overlap`, at most `max_chunks` of them spread evenly over the text. The tokenizer cuts them itself
    (`return_overflowing_tokens` with `stride`), so every window carries the special tokens a message would."""
    body = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if body <= overlap:
        raise ValueError(
            f"max_length {max_length} leaves {body} tokens per window, not more than the overlap {overlap}: raise "
            "max_length or lower chunk_overlap"
        )
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_length, stride=overlap, return_overflowing_tokens=True
    )
    out: list[Windows] = [[] for _ in texts]
    for ids, doc in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"]):
        out[doc].append(list(ids))
    for d, windows in enumerate(out):
        if len(windows) > max_chunks:
            picks = np.unique(np.linspace(0, len(windows) - 1, max_chunks).round().astype(int))
            out[d] = [windows[i] for i in picks]
    return out


def collate_windows(docs: Sequence[Windows], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids (C, L), mask (C, L), doc_index (C,)): every window of `docs` as one right-padded batch, and which
    document (0 .. len(docs) - 1) each window belongs to."""
    windows = [w for doc in docs for w in doc]
    longest = max(len(w) for w in windows)
    ids = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), longest), dtype=torch.long)
    for r, w in enumerate(windows):
        ids[r, : len(w)] = torch.tensor(w, dtype=torch.long)
        mask[r, : len(w)] = 1
    doc_index = torch.tensor([d for d, doc in enumerate(docs) for _ in doc], dtype=torch.long)
    return ids, mask, doc_index


@dataclass
class ChunkedBatches(Batches):
    """Training data of long documents (`BatchSource`): a row is a document, its inputs every window it has,
    with the window -> document index the classifier averages over. Bucketed by window count, so a batch of
    short resumes is not padded to a long one's windows."""

    input_ids: list[Windows]  # type: ignore[assignment]  # per document, its windows

    def collate(self, rows: np.ndarray, device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        ids, mask, doc_index = collate_windows([self.input_ids[i] for i in rows], self.pad_id)
        targets = torch.as_tensor(self.targets[rows])
        return (ids.to(device), mask.to(device), doc_index.to(device)), targets.to(device)
