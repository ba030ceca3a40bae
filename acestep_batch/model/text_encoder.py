"""Prompt encoder: the UMT5 encoder of `umt5-base/` (transformers) plus its fast tokenizer.

ERG-tag (spec 5.3) is a second pass with the query projections of encoder blocks 8 and 9 scaled
by 0.01. Upstream uses forward hooks; here the hooks live only for the duration of one call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import UMT5EncoderModel

TEXT_MAX_LENGTH = 256
ERG_TAG_BLOCKS = (8, 9)
ERG_SCALE = 0.01


def load_prompt_tokenizer(folder: str | os.PathLike, max_length: int = TEXT_MAX_LENGTH) -> Tokenizer:
    """The `tokenizer.json` of the UMT5 folder; its post-processor appends `</s>` like the T5 fast
    tokenizer, and truncation keeps at most `max_length` ids including that EOS."""
    tokenizer = Tokenizer.from_file(os.path.join(os.fspath(folder), "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, masks: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as (B, L) ids and mask, padded on the right.

    `masks` gives each row's own mask (the lyric front end masks its empty-lyrics token);
    by default every real token is 1.
    """
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = torch.tensor(masks[index], dtype=torch.long) if masks is not None else 1
    return ids, mask


class PromptEncoder(nn.Module):
    def __init__(self, model: UMT5EncoderModel, tokenizer: Tokenizer, pad_id: int = 0) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    def tokenize(self, prompts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and attention mask (B, L); prompts are used verbatim."""
        ids, mask = right_pad([self.tokenizer.encode(prompt).ids for prompt in prompts], self.pad_id)
        return ids.to(device), mask.to(device)

    @contextlib.contextmanager
    def _erg_tag(self) -> Iterator[None]:
        def scale_output(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
            return output.mul_(ERG_SCALE)

        handles = [
            self.model.encoder.block[index].layer[0].SelfAttention.q.register_forward_hook(scale_output)
            for index in ERG_TAG_BLOCKS
            if index < len(self.model.encoder.block)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor, erg_tag: bool = False) -> torch.Tensor:
        """last_hidden_state (B, L, d_model) in the model dtype."""
        context = self._erg_tag() if erg_tag else contextlib.nullcontext()
        with context:
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state
