"""Masked-LM target selection: whole-word n-gram masking (ALBERT) and plain token masking, batched.

Per sequence of `n` real tokens (specials included, as in the original), the budget is
``num_to_predict = min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))`` (round half to even, like
Python's `round` in the original), capped by the number of maskable tokens. Maskable tokens are every real
token except [CLS], [SEP], <pad> and [MASK]. A word starts at a token whose `word_start` entry is True, or at the
first maskable token after a special one (so a word never spans a [SEP]). One candidate per word start, in a
uniformly random order; each candidate draws n in 1..max_ngram with p(n) proportional to `ngram_weights`
(1/n by default: 6/11, 3/11, 2/11), cut to the words that remain at the end of the sequence (as in the
original: the last word always gives a 1-word span). A candidate that would exceed the budget is shortened word
by word and skipped if even one word is too long; a candidate overlapping an accepted span is skipped (the
original's overlap test is a no-op; this one is not). Selection stops when the budget is reached or the
candidates run out. Each chosen token becomes [MASK] with probability 0.8, stays
itself with 0.1 and becomes a random id with 0.1 (drawn from the non-special ids unless configured
otherwise). Positions come out sorted.

Token-level masking (the BERT ablation) is the same procedure with `whole_word=False` (every token is its own
word) and `max_ngram=1`.

Randomness is a stateless counter-based generator (SplitMix64 finaliser over (seed, key, epoch, stream,
counter)): every draw for an example is a pure function of the seed, its key and its epoch, which lets a whole
batch be drawn in one NumPy call while staying independent of batch composition, worker count and restarts.
"""

from __future__ import annotations

import dataclasses

import gin
import numpy as np

from albert_jax.input.records import SpecialIds

_GOLDEN = 0x9E3779B97F4A7C15
_STREAM_WORDS = 1  # order and n-gram draws, one per word
_STREAM_PREDICTIONS = 2  # 80/10/10 decision and random id, one per prediction
_BLOCK = 32  # candidates prepared per row up front; more only for rows that need them


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixing map on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def random_bits(seed: int, keys: np.ndarray, epochs: np.ndarray, stream: int, count: int) -> np.ndarray:
    """[B, count] uint64 pseudo-random words, a pure function of (seed, keys[b], epochs[b], stream, column)."""
    with np.errstate(over="ignore"):
        row = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(_GOLDEN) + np.uint64(stream))
        row = mix64(row ^ np.asarray(keys, dtype=np.uint64))
        row = mix64(row ^ (np.asarray(epochs, dtype=np.uint64) * np.uint64(_GOLDEN)))
        counters = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]
        return mix64(row[:, None] + counters)


def _unit(bits: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the high 32 bits."""
    return (bits >> np.uint64(32)).astype(np.float64) * (1.0 / 4294967296.0)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Every knob of masked-LM target selection (defaults: the ALBERT recipe at length 512)."""

    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word: bool = True  # False: every token is its own "word" (token-level masking)
    max_ngram: int = 3  # 1 gives unigram masking
    ngram_weights: tuple[float, ...] | None = None  # unnormalised p(n) for n = 1..max_ngram; None: 1/n
    mask_token_prob: float = 0.8  # chosen token -> [MASK]
    random_token_prob: float = 0.1  # chosen token -> random id; the rest keep the original token
    random_token_excludes_special: bool = True  # random ids never <pad> <unk> [CLS] [SEP] [MASK]

    def __post_init__(self) -> None:
        errors = []
        if not 0.0 < self.masked_lm_prob <= 1.0:
            errors.append(f"masked_lm_prob={self.masked_lm_prob} must be in (0, 1]")
        if self.max_predictions_per_seq < 1:
            errors.append(f"max_predictions_per_seq={self.max_predictions_per_seq} must be >= 1")
        if self.max_ngram < 1:
            errors.append(f"max_ngram={self.max_ngram} must be >= 1")
        if self.ngram_weights is not None and (len(self.ngram_weights) != self.max_ngram
                                               or min(self.ngram_weights) < 0 or sum(self.ngram_weights) <= 0):
            errors.append(f"ngram_weights={self.ngram_weights} must be {self.max_ngram} non-negative numbers "
                          f"with a positive sum")
        if min(self.mask_token_prob, self.random_token_prob) < 0 or \
                self.mask_token_prob + self.random_token_prob > 1.0:
            errors.append(f"mask_token_prob={self.mask_token_prob} + random_token_prob="
                          f"{self.random_token_prob} must be probabilities summing to <= 1")
        if errors:
            raise ValueError("Invalid MaskingConfig:\n  " + "\n  ".join(errors))

    def ngram_probs(self) -> np.ndarray:
        """Normalised p(n) for n = 1..max_ngram."""
        weights = (np.asarray(self.ngram_weights, np.float64) if self.ngram_weights is not None
                   else 1.0 / np.arange(1, self.max_ngram + 1))
        return weights / weights.sum()


def num_to_predict(lengths: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """The reference budget min(max_predictions, max(1, round(n * prob))) per sequence of n real tokens."""
    wanted = np.rint(np.asarray(lengths, np.float64) * config.masked_lm_prob).astype(np.int64)
    return np.minimum(config.max_predictions_per_seq, np.maximum(1, wanted))


def ngram_cdf(probs: np.ndarray) -> np.ndarray:
    """Cumulative p(n) for n = 1..G (the last entry is 1)."""
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0
    return cdf


def draw_ngram_lengths(u: np.ndarray, n_max: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """n ~ p(n) from uniforms `u`, cut to `n_max` words (0 where n_max is 0)."""
    n = 1 + (u[..., None] >= cdf[:-1]).sum(-1)
    return np.minimum(n, n_max)


class Masker:
    """Draws masked-LM targets for a batch of sequences; stateless and deterministic per (seed, key, epoch).

    `word_start` is a boolean table over vocabulary ids (True where a piece begins a word); it is only
    needed for whole-word masking.
    """

    def __init__(self, config: MaskingConfig, vocab_size: int, word_start: np.ndarray | None = None,
                 special: SpecialIds = SpecialIds(), seed: int = 0):
        self.config = config
        self.vocab_size = int(vocab_size)
        self.special = special
        self.seed = int(seed)
        special_ids = [special.pad, special.cls, special.sep, special.mask]
        if max(special_ids + [special.unk]) >= vocab_size or min(special_ids + [special.unk]) < 0:
            raise ValueError(f"special ids {special} do not fit in vocab_size={vocab_size}")
        self._special_table = np.zeros(vocab_size, bool)
        self._special_table[special_ids] = True
        if config.whole_word:
            if word_start is None:
                raise ValueError("whole-word masking needs a word_start table (bool per vocabulary id); "
                                 "set MaskingConfig.whole_word=False for token-level masking")
            word_start = np.asarray(word_start, bool).reshape(-1)
            if word_start.size != vocab_size:
                raise ValueError(f"word_start has {word_start.size} entries, vocab_size is {vocab_size}")
            self._word_start = word_start
        else:
            self._word_start = np.ones(vocab_size, bool)
        excluded = self._special_table.copy()
        excluded[special.unk] = True
        self._random_ids = (np.flatnonzero(~excluded) if config.random_token_excludes_special
                            else np.arange(vocab_size)).astype(np.int64)
        if self._random_ids.size == 0:
            raise ValueError(f"no non-special ids to draw random replacements from (vocab_size={vocab_size})")
        self._cdf = ngram_cdf(config.ngram_probs())

    @property
    def num_random_ids(self) -> int:
        """How many ids a random replacement is drawn from (uniformly)."""
        return int(self._random_ids.size)

    def maskable_and_word_starts(self, input_ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray,
                                                                                            np.ndarray]:
        """[B, L] masks of the maskable tokens and of the tokens that start a word (see the module doc)."""
        ids = np.asarray(input_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids span [{ids.min()}, {ids.max()}], outside vocab_size={self.vocab_size}: "
                             f"the data was made with another vocabulary")
        cand = (np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]) & ~self._special_table[ids]
        starts = cand & self._word_start[ids]
        starts[:, :1] |= cand[:, :1]
        starts[:, 1:] |= cand[:, 1:] & ~cand[:, :-1]
        return cand, starts

    def __call__(self, input_ids: np.ndarray, lengths: np.ndarray, keys: np.ndarray, epochs: np.ndarray,
                 ) -> dict[str, np.ndarray]:
        """Masks a batch.

        Args:
          input_ids: [B, L] int32 unmasked ids (padding after `lengths`).
          lengths: [B] number of real tokens ([CLS] and [SEP] included).
          keys, epochs: [B] non-negative ints; all randomness of row b is a function of (seed, keys[b],
            epochs[b]).

        Returns:
          input_ids (masked copy), masked_lm_positions, masked_lm_ids [B, P] int32, masked_lm_weights [B, P]
          float32, and ngram_counts [B, max_ngram] int32 (accepted spans by their final length in words).
        """
        ids = np.asarray(input_ids)
        batch, width = ids.shape
        g = self.config.max_ngram
        lengths = np.asarray(lengths, np.int64)
        keys, epochs = np.asarray(keys), np.asarray(epochs)

        cand, starts = self.maskable_and_word_starts(ids, lengths)
        count = np.cumsum(cand, axis=1, dtype=np.int32)  # maskable tokens up to and including j
        n_cand = count[:, -1].astype(np.int64) if width else np.zeros(batch, np.int64)
        n_words = np.count_nonzero(starts, axis=1)
        budget = np.minimum(num_to_predict(lengths, self.config), n_cand)
        max_words = int(n_words.max(initial=0))

        # cum[b, w]: maskable tokens before word w (all of them for w >= n_words[b]); word w+..w+n-1 covers
        # candidate ranks cum[b, w] .. cum[b, w + n] - 1.
        cum = np.repeat(n_cand.astype(np.int32)[:, None], max_words + g + 1, axis=1)
        rows, cols = np.nonzero(starts)
        word_index = np.arange(rows.size) - np.repeat(np.cumsum(n_words) - n_words, n_words)
        cum[rows, word_index] = count[rows, cols] - 1

        words = np.arange(max_words, dtype=np.uint64)[None, :]
        bits = random_bits(self.seed, keys, epochs, _STREAM_WORDS, max_words)
        # Order keys: random high half, word index in the low half, so that keys are unique and any
        # selection algorithm yields the same order; absent words sort last.
        order_keys = np.where(words < n_words[:, None].astype(np.uint64),
                              (bits & np.uint64(0xFFFFFFFF00000000)) | words, np.uint64(0xFFFFFFFFFFFFFFFF))
        u = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
        prefix = min(max_words, _BLOCK)
        if prefix < max_words:
            first = np.argpartition(order_keys, prefix - 1, axis=1)[:, :prefix]
            first = np.take_along_axis(first, np.argsort(np.take_along_axis(order_keys, first, 1), 1), 1)
        else:
            first = np.argsort(order_keys, axis=1)
        context = _Rows(cum, u, n_words, self._cdf, order_keys)
        lists = context.candidates(first, np.arange(batch))

        ngram_counts = np.zeros((batch, g), np.int32)
        chosen_rows: list[int] = []
        chosen_ranks: list[int] = []
        for b in range(batch):
            if budget[b] <= 0:
                continue
            ranks = _select(int(budget[b]), int(n_words[b]), lists[0][b], lists[1][b], lists[2][b], g,
                            ngram_counts[b], context, b)
            chosen_rows.extend([b] * len(ranks))
            chosen_ranks.extend(ranks)
        rows = np.asarray(chosen_rows, np.int64)
        ranks = np.asarray(chosen_ranks, np.int64)
        # Position of candidate rank r in row b: first j with count[b, j] >= r + 1 (rows kept apart by offset).
        offsets = np.arange(batch, dtype=np.int64) * (width + 1)
        flat = (count + offsets[:, None]).reshape(-1)
        cols = np.searchsorted(flat, ranks + 1 + offsets[rows]) - rows * width
        return self._replace(ids, rows, cols, keys, epochs) | {"ngram_counts": ngram_counts}

    def _replace(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, keys: np.ndarray,
                 epochs: np.ndarray) -> dict[str, np.ndarray]:
        """Fixed-size targets for chosen (row, column) pairs (row-major, columns ascending) and 80/10/10."""
        config = self.config
        batch = ids.shape[0]
        width = config.max_predictions_per_seq
        per_row = np.bincount(rows, minlength=batch)
        slot = np.arange(rows.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        positions = np.zeros((batch, width), np.int32)
        labels = np.zeros((batch, width), np.int32)
        weights = np.zeros((batch, width), np.float32)
        originals = ids[rows, cols]
        positions[rows, slot] = cols
        labels[rows, slot] = originals
        weights[rows, slot] = 1.0

        bits = random_bits(self.seed, keys, epochs, _STREAM_PREDICTIONS, width)[rows, slot]
        u = _unit(bits)
        random_ids = self._random_ids[((bits & np.uint64(0xFFFFFFFF)) * np.uint64(self._random_ids.size))
                                      >> np.uint64(32)]
        replacement = np.where(u < config.mask_token_prob, self.special.mask,
                               np.where(u < config.mask_token_prob + config.random_token_prob, random_ids,
                                        originals))
        masked = ids.astype(np.int32, copy=True)
        masked[rows, cols] = replacement
        return {"input_ids": masked, "masked_lm_positions": positions, "masked_lm_ids": labels,
                "masked_lm_weights": weights}


class _Rows:
    """Per-candidate data (word, drawn n, span boundaries) for the greedy pass, as Python lists."""

    def __init__(self, cum: np.ndarray, u: np.ndarray, n_words: np.ndarray, cdf: np.ndarray,
                 order_keys: np.ndarray):
        self.cum, self.u, self.n_words, self.cdf, self.order_keys = cum, u, n_words, cdf, order_keys

    def candidates(self, words: np.ndarray, rows: np.ndarray) -> tuple[list, list, list]:
        """For [R, K] word indices of rows `rows`: words, n draws and the G+1 span boundaries per candidate."""
        g = self.cdf.size
        r = rows[:, None]
        n_max = np.clip(self.n_words[rows][:, None] - words, 0, g)
        n = draw_ngram_lengths(self.u[r, words], n_max, self.cdf)
        bounds = self.cum[r[..., None], words[..., None] + np.arange(g + 1)]  # [R, K, G+1]
        return words.tolist(), n.tolist(), bounds.reshape(len(rows), words.shape[1] * (g + 1)).tolist()

    def rest(self, row: int, begin: int) -> tuple[list, list, list]:
        """Candidates `begin`.. of one row in its full random order (the rare slow path)."""
        order = np.argsort(self.order_keys[row, :self.n_words[row]])[begin:]
        words, n, bounds = self.candidates(order[None, :], np.asarray([row]))
        return words[0], n[0], bounds[0]


def _select(budget: int, n_words: int, words: list, ngrams: list, bounds: list, g: int,
            counts: np.ndarray, context: _Rows, row: int) -> list[int]:
    """The sequential greedy pass of one sequence over its shuffled candidates; returns sorted chosen ranks.

    `covered` is a bitmask over words; `bounds[t * (g + 1) + k]` is the first candidate rank after the first
    k words of candidate t.
    """
    covered = 0
    used = 0
    spans: list[tuple[int, int]] = []
    stride = g + 1
    begin = 0
    while used < budget and begin < n_words:
        for t, (word, n) in enumerate(zip(words, ngrams)):
            base = t * stride
            start = bounds[base]
            while n and used + bounds[base + n] - start > budget:
                n -= 1
            if not n:
                continue
            span = ((1 << n) - 1) << word
            if covered & span:
                continue
            covered |= span
            used += bounds[base + n] - start
            counts[n - 1] += 1
            spans.append((start, bounds[base + n]))
            if used >= budget:
                break
        begin += len(words)
        if used < budget and begin < n_words:
            words, ngrams, bounds = context.rest(row, begin)
    spans.sort()
    return [rank for start, end in spans for rank in range(start, end)]
