"""The MQAR generator: every label is the value bound to its key, nothing shows the answer early, and the pairs
and queries sit where the layout says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbench.tasks import data
from attnbench.tasks.data import FILLER, IGNORE, recall_sequences

# Awkward shapes: an odd query region, a vocabulary with no spare key, the smallest sequence that fits.
LAYOUTS = [(37, 5, 50), (64, 16, 34), (16, 4, 10), (130, 9, 1001)]


def check_sequences(batch: data.RecallData, seq_len: int, kv_pairs: int, vocab: int) -> None:
    """Every rule of the layout, sequence by sequence (raises AssertionError naming the sequence)."""
    inputs, labels = batch.inputs.numpy(), batch.labels.numpy()
    context, key_vocab = 2 * kv_pairs, vocab // 2
    assert inputs.shape == labels.shape == (len(batch), seq_len)
    for n, (tokens, answers) in enumerate(zip(inputs, labels, strict=True)):
        keys, values = tokens[0:context:2], tokens[1:context:2]
        assert len(set(keys)) == kv_pairs and ((keys >= 1) & (keys < key_vocab)).all(), n
        assert len(set(values)) == kv_pairs and ((values >= key_vocab) & (values < vocab)).all(), n
        bound = dict(zip(keys, values, strict=True))
        assert (answers[:context] == IGNORE).all(), f"sequence {n}: a label inside the context"
        asked = np.flatnonzero(answers != IGNORE)
        assert sorted(tokens[asked]) == sorted(keys), f"sequence {n}: every key is asked exactly once"
        assert ((asked - context) % 2 == 0).all(), f"sequence {n}: queries sit at even offsets of the query region"
        others = np.setdiff1d(np.arange(context, seq_len), asked)
        assert (tokens[others] == FILLER).all(), f"sequence {n}: the query region holds only queries and filler"
        for position in asked:
            label = answers[position]
            assert label == bound[tokens[position]], f"sequence {n}: the label is the value bound to the key"
            # What a causal model sees when it must answer: tokens 0..position. The answer occurs there only
            # once, as the value of the pair that bound it, never in the query region.
            seen = np.flatnonzero(tokens[: position + 1] == label)
            assert list(seen) == [2 * int(np.flatnonzero(keys == tokens[position])[0]) + 1], (n, position)


@pytest.mark.parametrize("seq_len,kv_pairs,vocab", LAYOUTS)
def test_every_label_is_the_value_bound_earlier_and_never_shown_before_its_query(seq_len, kv_pairs, vocab, seed):
    batch = recall_sequences(40, seq_len, kv_pairs, vocab, seed)
    check_sequences(batch, seq_len, kv_pairs, vocab)


def test_same_seed_same_sequences_other_seed_others(seed):
    first, again = recall_sequences(8, 64, 8, 100, seed), recall_sequences(8, 64, 8, 100, seed)
    other = recall_sequences(8, 64, 8, 100, seed + 1)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.inputs, other.inputs)


def test_queries_cluster_after_the_context_as_the_power_law_says(seed):
    """With power_a small, the first slots take most queries; with power_a = 1 every slot is as likely."""
    skewed = recall_sequences(400, 200, 4, 64, seed, power_a=0.01)
    even = recall_sequences(400, 200, 4, 64, seed, power_a=1.0)

    def mean_query_slot(batch):
        positions = (batch.labels != IGNORE).nonzero()[:, 1].float()
        return float(((positions - 8) / 2).mean())

    assert mean_query_slot(skewed) < 0.6 * mean_query_slot(even)
    assert data.slot_probabilities(96, 1.0) == pytest.approx(np.full(96, 1 / 96))


@pytest.mark.parametrize(
    "seq_len,kv_pairs,vocab,argument",
    [(15, 4, 64, "seq_len"), (64, 4, 9, "vocab"), (64, 0, 64, "kv_pairs")],
)
def test_a_layout_that_cannot_fit_names_its_argument(seq_len, kv_pairs, vocab, argument):
    with pytest.raises(ValueError, match=argument):
        recall_sequences(2, seq_len, kv_pairs, vocab, 0)


def _leaky(count, seq_len, kv_pairs, vocab, seed, power_a=0.01):
    """A planted bug: the token after each query shows its answer (what a careless shift of inputs and labels
    does)."""
    batch = recall_sequences(count, seq_len, kv_pairs, vocab, seed, power_a)
    asked = (batch.labels != IGNORE).nonzero()
    inputs = batch.inputs.clone()
    inputs[asked[:, 0], asked[:, 1] + 1] = batch.labels[asked[:, 0], asked[:, 1]]
    return data.RecallData(inputs, batch.labels)


def _wrong_binding(count, seq_len, kv_pairs, vocab, seed, power_a=0.01):
    """A planted bug: labels rotated by one pair, so each query's label is another key's value."""
    batch = recall_sequences(count, seq_len, kv_pairs, vocab, seed, power_a)
    values = batch.inputs[:, 1 : 2 * kv_pairs : 2]
    labels = batch.labels.clone()
    for row in range(count):
        for j, key in enumerate(batch.inputs[row, 0 : 2 * kv_pairs : 2]):
            where = (batch.inputs[row, 2 * kv_pairs :] == key).nonzero()[0, 0] + 2 * kv_pairs
            labels[row, where] = values[row, (j + 1) % kv_pairs]
    return data.RecallData(batch.inputs, labels)


@pytest.mark.parametrize("planted", [_leaky, _wrong_binding])
def test_the_checks_catch_a_planted_generator_bug(planted, seed):
    with pytest.raises(AssertionError):
        check_sequences(planted(20, 64, 8, 64, seed), 64, 8, 64)
