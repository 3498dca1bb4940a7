"""Masking: structure (budget, sorted positions, whole words, no overlaps), statistics against an independent
per-sequence transcription of the original algorithm, the 80/10/10 split, and determinism per (seed, key, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from albert_jax.input.masking import (Masker, MaskingConfig, draw_ngram_lengths, ngram_cdf, num_to_predict,
                                      random_bits)
from albert_jax.input.records import SpecialIds

VOCAB = 2000
SPECIAL = SpecialIds()
SPECIALS = {SPECIAL.pad, SPECIAL.cls, SPECIAL.sep, SPECIAL.mask}


def z_ok(count: float, n: int, p: float, z: float = 4.5) -> bool:
    """Binomial tolerance: |count - n p| within z standard deviations."""
    return abs(count - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1e-9


def make_batch(rows: int, width: int, seed: int, word_start_rate: float = 0.7):
    """Pair-shaped sequences [CLS] A [SEP] B [SEP] of random lengths, and a word-start table."""
    rng = np.random.default_rng(seed)
    word_start = rng.random(VOCAB) < word_start_rate
    word_start[:5] = True
    ids = np.zeros((rows, width), np.int32)
    lengths = rng.integers(5, width + 1, rows)
    lengths[:3] = [2, 3, width]  # no candidate, one candidate, full
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(5, VOCAB, n)
        ids[b, 0] = SPECIAL.cls
        ids[b, n - 1] = SPECIAL.sep
        if n >= 5:
            ids[b, rng.integers(2, n - 2)] = SPECIAL.sep
    return ids, lengths, word_start


def reference_words(tokens: list[int], word_start: np.ndarray, whole_word: bool = True) -> list[list[int]]:
    """Word segmentation as documented: specials are not maskable and a word never spans one."""
    words: list[list[int]] = []
    after_special = True
    for i, t in enumerate(tokens):
        if t in SPECIALS:
            after_special = True
            continue
        if words and whole_word and not after_special and not word_start[t]:
            words[-1].append(i)
        else:
            words.append([i])
        after_special = False
    return words


def reference_mask(tokens: list[int], word_start: np.ndarray, config: MaskingConfig,
                   rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Transcription of the original create_masked_lm_predictions, with a working overlap check.

    Returns the sorted masked positions and the word length of every accepted span.
    """
    cand_indexes = reference_words(tokens, word_start, config.whole_word)
    budget = min(config.max_predictions_per_seq, max(1, int(round(len(tokens) * config.masked_lm_prob))))
    ngrams = np.arange(1, config.max_ngram + 1)
    ngram_indexes = [[cand_indexes[i:i + n] for n in ngrams] for i in range(len(cand_indexes))]
    rng.shuffle(ngram_indexes)
    masked: list[int] = []
    covered: set[int] = set()
    spans: list[int] = []
    for cand_index_set in ngram_indexes:
        if len(masked) >= budget:
            break
        n = int(rng.choice(ngrams, p=config.ngram_probs()))
        index_set = sum(cand_index_set[n - 1], [])
        n -= 1
        while len(masked) + len(index_set) > budget:
            if n == 0:
                break
            index_set = sum(cand_index_set[n - 1], [])
            n -= 1
        if len(masked) + len(index_set) > budget:
            continue
        if any(i in covered for i in index_set):
            continue
        covered.update(index_set)
        masked.extend(index_set)
        spans.append(len(cand_index_set[n]))
    return sorted(masked), spans


def test_num_to_predict_is_the_reference_formula():
    config = MaskingConfig(max_predictions_per_seq=20)
    lengths = np.arange(0, 600)
    expected = [min(20, max(1, int(round(n * 0.15)))) for n in lengths]
    assert num_to_predict(lengths, config).tolist() == expected


def test_structure_budget_sorted_positions_and_labels():
    ids, lengths, word_start = make_batch(400, 96, seed=1)
    config = MaskingConfig(max_predictions_per_seq=14)
    out = Masker(config, VOCAB, word_start, seed=3)(ids, lengths, np.arange(400), np.zeros(400))
    weights = out["masked_lm_weights"]
    assert out["input_ids"].dtype == out["masked_lm_positions"].dtype == out["masked_lm_ids"].dtype == np.int32
    assert weights.dtype == np.float32 and out["masked_lm_positions"].shape == (400, 14)
    fill = []
    for b in range(400):
        count = int(weights[b].sum())
        assert np.all(weights[b, :count] == 1) and np.all(weights[b, count:] == 0)
        positions = out["masked_lm_positions"][b, :count]
        maskable = sum(1 for t in ids[b, :lengths[b]] if t not in SPECIALS)
        budget = min(num_to_predict(lengths[b:b + 1], config)[0], maskable)
        assert count <= budget
        fill.append((count, budget))
        assert np.all(np.diff(positions) > 0)
        assert all(ids[b, p] not in SPECIALS and p < lengths[b] for p in positions)
        assert np.array_equal(out["masked_lm_ids"][b, :count], ids[b, positions])
        untouched = np.ones(96, bool)
        untouched[positions] = False
        assert np.array_equal(out["input_ids"][b, untouched], ids[b, untouched])
    assert fill[0] == (0, 0) and fill[1][0] == 1
    assert sum(c for c, _ in fill) >= 0.97 * sum(b for _, b in fill)


def test_whole_words_only_and_no_overlapping_spans():
    ids, lengths, word_start = make_batch(300, 128, seed=2, word_start_rate=0.5)
    out = Masker(MaskingConfig(), VOCAB, word_start, seed=0)(ids, lengths, np.arange(300), np.ones(300))
    for b in range(300):
        count = int(out["masked_lm_weights"][b].sum())
        chosen = set(out["masked_lm_positions"][b, :count].tolist())
        words = reference_words(ids[b, :lengths[b]].tolist(), word_start)
        masked_words = 0
        for word in words:
            inside = [i in chosen for i in word]
            assert all(inside) or not any(inside), "a word is partly masked"
            masked_words += all(inside)
        counts = out["ngram_counts"][b]
        # Every accepted span is counted once with its words: overlapping spans would double count.
        assert sum((n + 1) * c for n, c in enumerate(counts)) == masked_words


def test_ngram_draw_distribution():
    rng = np.random.default_rng(0)
    cdf = ngram_cdf(MaskingConfig().ngram_probs())
    u = rng.random(200_000)
    for n_max, probs in ((3, [6 / 11, 3 / 11, 2 / 11]), (2, [6 / 11, 5 / 11]), (1, [1.0])):
        n = draw_ngram_lengths(u, np.full(u.size, n_max), cdf)
        assert n.min() >= 1 and n.max() <= n_max
        for k, p in enumerate(probs, start=1):
            assert z_ok((n == k).sum(), u.size, p) if p < 1 else np.all(n == 1)
    assert np.all(draw_ngram_lengths(u[:10], np.zeros(10, int), cdf) == 0)


def test_matches_independent_transcription_statistically():
    """Span-length histogram and masked counts agree with the per-sequence original algorithm (chi-square)."""
    ids, lengths, word_start = make_batch(1500, 128, seed=4)
    config = MaskingConfig(max_predictions_per_seq=20)
    out = Masker(config, VOCAB, word_start, seed=11)(ids, lengths, np.arange(1500), np.zeros(1500))
    rng = np.random.default_rng(5)
    ref_spans = np.zeros(3)
    ref_masked = 0
    for b in range(1500):
        positions, spans = reference_mask(ids[b, :lengths[b]].tolist(), word_start, config, rng)
        ref_masked += len(positions)
        ref_spans += np.bincount(spans, minlength=4)[1:]
    ours = out["ngram_counts"].sum(0).astype(float)
    table = np.stack([ours, ref_spans])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 13.8, (ours, ref_spans)  # 2 degrees of freedom, p = 0.001
    assert abs(out["masked_lm_weights"].sum() - ref_masked) <= 0.01 * ref_masked
    # Both are clearly 1/n-shaped, with long spans thinned by budget shortening.
    frac = ours / ours.sum()
    assert frac[0] > 6 / 11 - 0.02 and frac[1] > 0.2 and frac[2] > 0.1


def test_mask_split_80_10_10_and_random_ids():
    ids, lengths, word_start = make_batch(2000, 128, seed=6)
    masker = Masker(MaskingConfig(), VOCAB, word_start, seed=1)
    out = masker(ids, lengths, np.arange(2000), np.zeros(2000))
    rows, slots = np.nonzero(out["masked_lm_weights"])
    shown = out["input_ids"][rows, out["masked_lm_positions"][rows, slots]]
    labels = out["masked_lm_ids"][rows, slots]
    n = rows.size
    assert n > 15_000
    is_mask = shown == SPECIAL.mask
    kept = shown == labels
    random = ~is_mask & ~kept
    same = 1 / masker.num_random_ids
    assert z_ok(is_mask.sum(), n, 0.8) and z_ok(kept.sum(), n, 0.1 + 0.1 * same)
    assert z_ok(random.sum(), n, 0.1 * (1 - same))
    assert shown[random].min() >= 5  # never <pad> <unk> [CLS] [SEP] [MASK]


def test_deterministic_per_seed_key_epoch_whatever_the_batch():
    ids, lengths, word_start = make_batch(64, 80, seed=7)
    masker = Masker(MaskingConfig(), VOCAB, word_start, seed=5)
    keys, epochs = np.arange(100, 164), np.full(64, 2)
    full = masker(ids, lengths, keys, epochs)
    order = np.random.default_rng(0).permutation(64)
    shuffled = masker(ids[order], lengths[order], keys[order], epochs[order])
    alone = masker(ids[10:11], lengths[10:11], keys[10:11], epochs[10:11])
    for key in full:
        assert np.array_equal(full[key][order], shuffled[key])
        assert np.array_equal(full[key][10:11], alone[key])
    other_epoch = masker(ids, lengths, keys, epochs + 1)
    other_seed = Masker(MaskingConfig(), VOCAB, word_start, seed=6)(ids, lengths, keys, epochs)
    assert not np.array_equal(full["masked_lm_positions"], other_epoch["masked_lm_positions"])
    assert not np.array_equal(full["masked_lm_positions"], other_seed["masked_lm_positions"])


def test_token_level_masking_ablation():
    ids, lengths, word_start = make_batch(300, 128, seed=8, word_start_rate=0.3)
    config = MaskingConfig(whole_word=False, max_ngram=1)
    out = Masker(config, VOCAB, None, seed=0)(ids, lengths, np.arange(300), np.zeros(300))
    assert out["ngram_counts"].shape == (300, 1)
    assert np.array_equal(out["ngram_counts"][:, 0], out["masked_lm_weights"].sum(1).astype(int))
    budget = np.minimum(num_to_predict(lengths, config), [sum(t not in SPECIALS for t in row[:n])
                                                            for row, n in zip(ids, lengths)])
    assert np.array_equal(out["masked_lm_weights"].sum(1), budget)  # single tokens always fill the budget
    partial = 0
    for b in range(300):
        chosen = set(out["masked_lm_positions"][b, :int(out["masked_lm_weights"][b].sum())].tolist())
        for word in reference_words(ids[b, :lengths[b]].tolist(), word_start):
            partial += 0 < sum(i in chosen for i in word) < len(word)
    assert partial > 0  # token-level masking does cut words


def test_spans_longer_than_the_budget_are_skipped():
    word_start = np.zeros(VOCAB, bool)
    word_start[10] = True
    ids = np.asarray([[SPECIAL.cls] + [10, 11, 11, 11] * 5 + [SPECIAL.sep]], np.int32)
    config = MaskingConfig(max_predictions_per_seq=3)
    out = Masker(config, VOCAB, word_start)(ids, [22], [0], [0])
    assert out["masked_lm_weights"].sum() == 0  # every word has 4 tokens > budget 3, as in the original


def test_empty_batch_and_random_bits():
    masker = Masker(MaskingConfig(), VOCAB, np.ones(VOCAB, bool))
    out = masker(np.zeros((0, 16), np.int32), np.zeros(0), np.zeros(0), np.zeros(0))
    assert out["masked_lm_positions"].shape == (0, 20)
    bits = random_bits(0, np.arange(1000), np.zeros(1000), 1, 64)
    u = (bits >> np.uint64(11)).astype(float) / 2**53
    assert abs(u.mean() - 0.5) < 0.005 and len(np.unique(bits)) == bits.size


def test_config_errors():
    with pytest.raises(ValueError, match="ngram_weights"):
        MaskingConfig(max_ngram=2, ngram_weights=(1.0,))
    with pytest.raises(ValueError, match="masked_lm_prob"):
        MaskingConfig(masked_lm_prob=0.0)
    with pytest.raises(ValueError, match="summing"):
        MaskingConfig(mask_token_prob=0.9, random_token_prob=0.2)
    with pytest.raises(ValueError, match="word_start"):
        Masker(MaskingConfig(), VOCAB, None)
    with pytest.raises(ValueError, match="entries"):
        Masker(MaskingConfig(), VOCAB, np.ones(10, bool))


def test_candidate_prefix_and_slow_path_agree(monkeypatch):
    """Rows needing more than the prepared prefix of candidates continue in the same random order."""
    import albert_jax.input.masking as masking

    ids, lengths, word_start = make_batch(200, 128, seed=9)
    config = MaskingConfig(masked_lm_prob=0.5, max_predictions_per_seq=60)
    reference = Masker(config, VOCAB, word_start, seed=2)(ids, lengths, np.arange(200), np.zeros(200))
    monkeypatch.setattr(masking, "_BLOCK", 3)
    small = Masker(config, VOCAB, word_start, seed=2)(ids, lengths, np.arange(200), np.zeros(200))
    for key in reference:
        assert np.array_equal(reference[key], small[key]), key
    assert reference["masked_lm_weights"].sum() > 0.95 * np.minimum(num_to_predict(lengths, config),
                                                                    lengths - 3).clip(0).sum()
