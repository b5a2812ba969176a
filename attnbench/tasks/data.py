"""Multi-query associative recall (MQAR) sequences: key-value pairs, then queries of earlier keys.

The layout of one sequence of `T` input tokens with `kv_pairs` pairs (the task of Arora et al. 2023, "Zoology"):

    k1 v1 k2 v2 ... kN vN | 0 0 k7 0 0 0 k2 0 ...
    \\___ the context ___/   \\__ the query region: every key once, at even offsets, the rest filler 0 __/

Keys are drawn without replacement from `[1, vocab/2)`, values without replacement from `[vocab/2, vocab)`, so
a value is never mistaken for a key and token 0 is only ever filler. The query region has `(T - 2N) / 2` slots
(its even offsets); each key is asked once, in a slot drawn without replacement with probability falling as a
power law in the slot's index (`power_a`, 0.01 as in Zoology: most queries come soon after the context, some
far). The label of a query position is the value bound to the key there (the model predicts the next token,
which the sequence never shows: the token after a query is filler); every other position is `IGNORE`.

So nothing at or before a query shows its answer except the pair that bound it: a causal model has to have
stored that pair. `tests/tasks/test_data.py` checks exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100  # the label of a position that is not a query (cross-entropy's default ignore_index)
FILLER = 0  # the token of every query-region position that holds no query


@dataclass(frozen=True)
class RecallData:
    """`inputs [N, T]` token ids and `labels [N, T]` (the value to recall at each query, `IGNORE` elsewhere)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


def check_layout(seq_len: int, kv_pairs: int, vocab: int) -> None:
    """Raise ValueError naming the argument when a sequence cannot hold the pairs and their queries."""
    if kv_pairs < 1:
        raise ValueError(f"kv_pairs must be at least 1, got {kv_pairs}")
    if seq_len < 4 * kv_pairs:
        raise ValueError(f"seq_len must be at least 4·kv_pairs = {4 * kv_pairs} (pairs, then a slot per query)")
    if vocab // 2 - 1 < kv_pairs:
        raise ValueError(f"vocab must be at least 2·(kv_pairs + 1) = {2 * (kv_pairs + 1)} (distinct keys)")
    if vocab - vocab // 2 < kv_pairs:
        raise ValueError(f"vocab must leave at least kv_pairs = {kv_pairs} value tokens")


def slot_probabilities(slots: int, power_a: float) -> np.ndarray:
    """P(slot k) ∝ a·k^(a-1) for k = 1..slots: a power law that favours the slots right after the context."""
    index = np.arange(1, slots + 1, dtype=np.float64)
    weights = power_a * index ** (power_a - 1.0)
    return weights / weights.sum()


def _ordered_sample(rng: np.random.Generator, scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the `k` largest `scores`, largest first. With iid uniform scores that is a
    uniformly random ordered k-subset; with log-weights plus Gumbel noise, sampling without replacement in
    proportion to the weights (the Gumbel top-k trick)."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


CHUNK = 4096  # sequences drawn at once: bounds the scratch of the draws to CHUNK × vocab/2 numbers


def recall_sequences(
    count: int, seq_len: int, kv_pairs: int, vocab: int, seed: int, power_a: float = 0.01
) -> RecallData:
    """`count` MQAR sequences of `seq_len` tokens with `kv_pairs` pairs each, reproducible from `seed`."""
    check_layout(seq_len, kv_pairs, vocab)
    rng = np.random.default_rng(seed)
    key_vocab = vocab // 2
    context = 2 * kv_pairs
    slots = (seq_len - context) // 2
    log_p = np.log(slot_probabilities(slots, power_a))
    inputs = np.full((count, seq_len), FILLER, dtype=np.int64)
    labels = np.full((count, seq_len), IGNORE, dtype=np.int64)
    for start in range(0, count, CHUNK):
        rows = np.arange(start, min(count, start + CHUNK))[:, None]
        n = len(rows)
        keys = _ordered_sample(rng, rng.random((n, key_vocab - 1)), kv_pairs) + 1
        values = _ordered_sample(rng, rng.random((n, vocab - key_vocab)), kv_pairs) + key_vocab
        chosen = _ordered_sample(rng, log_p + rng.gumbel(size=(n, slots)), kv_pairs)
        inputs[rows, np.arange(0, context, 2)] = keys
        inputs[rows, np.arange(1, context, 2)] = values
        query_positions = context + 2 * chosen  # key j of a sequence is asked at its query_positions[j]
        inputs[rows, query_positions] = keys
        labels[rows, query_positions] = values
    return RecallData(torch.from_numpy(inputs), torch.from_numpy(labels))
