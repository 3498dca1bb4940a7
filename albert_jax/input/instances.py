"""Training instances from tokenized documents: ALBERT's pair creation, streaming over a random-access source.

For each document (a list of sentences of token ids, `documents.decode_document`) sentences are gathered into
chunks until a chunk reaches the target length: ``max_seq_length - 3``, or with probability `short_seq_prob` a
random length in [2, max]. The original draws that target once per document; here it is drawn again for every
chunk, so that about `short_seq_prob` of the *instances* are short whatever the document lengths. A chunk of k >= 2
sentences is cut after a random number of sentences into A and B; the instance is ``[CLS] A [SEP] B [SEP]``
(segment 0 up to the first [SEP], 1 after it), and an over-long pair is trimmed one token at a time from the
longer segment, at its front or back with probability 1/2 each (ties trim B, as in the original).

Sentence objectives (`InstanceConfig.sentence_objective`):
  sop   (default) with probability `negative_prob` A and B are swapped (label 1), else kept in order (label 0).
  nsp   with probability `negative_prob` B is replaced by text from a random other document (label 1); the
        unused sentences of the chunk go back to the document and start the next chunk, as in the original.
  none  the whole chunk is one segment, ``[CLS] chunk [SEP]``, label 0 (train with sentence loss weight 0).

A chunk holding a single sentence cannot be split; `single_segment_policy` decides (sop and nsp):
  reference      B from a random other document, label 1 -- the original's behaviour, a known quirk that makes
                 single-sentence chunks NSP-style negatives even under SOP.
  skip           drop the chunk (counted).
  keep_in_order  emit ``[CLS] A [SEP]`` alone, label 0.

Random other documents are read by index from the same random-access source (an ArrayRecord file, a list of
records...), never from an in-memory copy of the corpus. Bad input is counted, never fatal: undecodable records,
documents without any non-empty sentence, blank sentences (dropped) and single-sentence documents.

Every random choice for document d in copy ("dupe") c is drawn from ``Generator(Philox(key=(seed, d, c)))``, so
the instances of a document do not depend on which worker makes them or in which order.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import gin
import numpy as np

from albert_jax.input.documents import decode_document
from albert_jax.input.records import (KIND_IN_ORDER, KIND_NAMES, KIND_RANDOM_NEXT, KIND_SINGLE, KIND_SWAPPED,
                                      SpecialIds)

OBJECTIVES = ("sop", "nsp", "none")
SINGLE_SEGMENT_POLICIES = ("reference", "skip", "keep_in_order")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    """How documents become sentence pairs (defaults: the ALBERT recipe)."""

    max_seq_length: int = 512
    short_seq_prob: float = 0.1  # probability of a shorter random target length in [2, max_seq_length - 3]
    sentence_objective: str = "sop"  # sop | nsp | none
    single_segment_policy: str = "reference"  # reference | skip | keep_in_order
    negative_prob: float = 0.5  # P(label 1): swap for sop, random B for nsp
    random_document_tries: int = 10  # draws to find another non-empty document for a random B

    def __post_init__(self) -> None:
        errors = []
        if self.max_seq_length < 5:
            errors.append(f"max_seq_length={self.max_seq_length} must be >= 5 ([CLS] A [SEP] B [SEP])")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            errors.append(f"short_seq_prob={self.short_seq_prob} must be in [0, 1]")
        if self.sentence_objective not in OBJECTIVES:
            errors.append(f"sentence_objective={self.sentence_objective!r} is not one of {OBJECTIVES}")
        if self.single_segment_policy not in SINGLE_SEGMENT_POLICIES:
            errors.append(f"single_segment_policy={self.single_segment_policy!r} is not one of "
                          f"{SINGLE_SEGMENT_POLICIES}")
        if not 0.0 <= self.negative_prob <= 1.0:
            errors.append(f"negative_prob={self.negative_prob} must be in [0, 1]")
        if self.random_document_tries < 1:
            errors.append(f"random_document_tries={self.random_document_tries} must be >= 1")
        if errors:
            raise ValueError("Invalid InstanceConfig:\n  " + "\n  ".join(errors))


@dataclasses.dataclass
class InstanceCounts:
    """What instance creation met and made; summed over workers and reported by the command."""

    documents: int = 0
    corrupt_documents: int = 0  # records that do not decode
    empty_documents: int = 0  # no non-empty sentence
    blank_sentences: int = 0  # dropped
    single_sentence_documents: int = 0
    single_segment_chunks: int = 0
    skipped_chunks: int = 0  # single-segment chunks dropped (policy skip, or no other document for a random B)
    instances: int = 0
    kinds: list[int] = dataclasses.field(default_factory=lambda: [0] * len(KIND_NAMES))

    def merge(self, other: InstanceCounts) -> None:
        for field in dataclasses.fields(self):
            if field.name == "kinds":
                self.kinds = [a + b for a, b in zip(self.kinds, other.kinds)]
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["kinds"] = dict(zip(KIND_NAMES, self.kinds))
        return out


class Instance(NamedTuple):
    """One unmasked example: `tokens` is [CLS] A [SEP] (B [SEP]); `a_end` counts the segment-0 tokens."""

    tokens: np.ndarray
    a_end: int
    label: int
    kind: int


def clean_document(record: bytes, counts: InstanceCounts | None = None,
                   vocab_size: int | None = None) -> list[np.ndarray] | None:
    """Decodes a document record without its blank sentences; None (counted) when corrupt or empty.

    A record that does not decode, or holds ids outside [0, vocab_size), counts as corrupt.
    """
    try:
        sentences = decode_document(record)
        if vocab_size is not None and sentences:
            flat = np.concatenate(sentences)
            if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
                raise ValueError("token id outside the vocabulary")
    except ValueError:
        if counts is not None:
            counts.corrupt_documents += 1
        return None
    kept = [s for s in sentences if s.size]
    if counts is not None:
        counts.blank_sentences += len(sentences) - len(kept)
        if not kept:
            counts.empty_documents += 1
        elif len(kept) == 1:
            counts.single_sentence_documents += 1
    return kept or None


def trim_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator,
              ) -> tuple[np.ndarray, np.ndarray]:
    """The original's token-at-a-time truncation, in closed form.

    The original removes one token from the longer segment (B on ties) until the pair fits, each time from the
    front or the back with probability 1/2. That removes |la - lb| tokens from the longer one, then alternates
    B, A, B...; the front/back split of each segment's k removals is Binomial(k, 1/2).
    """
    la, lb = a.size, b.size
    excess = la + lb - max_tokens
    if excess <= 0:
        return a, b
    gap = abs(la - lb)
    if gap >= excess:
        cut_a, cut_b = (excess, 0) if la > lb else (0, excess)
    else:
        rest = excess - gap
        cut_a = (gap if la > lb else 0) + rest // 2
        cut_b = (gap if lb > la else 0) + rest - rest // 2
    front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)
    return a[front_a:la - (cut_a - front_a)], b[front_b:lb - (cut_b - front_b)]


def trim_single(a: np.ndarray, max_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Single-segment truncation with the same front/back coin per removed token."""
    cut = a.size - max_tokens
    if cut <= 0:
        return a
    front = rng.binomial(cut, 0.5)
    return a[front:a.size - (cut - front)]


class InstanceMaker:
    """Turns documents of a random-access record source into instances (see the module docstring)."""

    def __init__(self, source: Sequence[bytes], config: InstanceConfig, special: SpecialIds = SpecialIds(),
                 seed: int = 0, vocab_size: int | None = None):
        self.source = source
        self.vocab_size = vocab_size
        self.config = config
        self.special = special
        self.seed = int(seed)
        self._cls = np.asarray([special.cls], np.int32)
        self._sep = np.asarray([special.sep], np.int32)

    def rng(self, document_index: int, dupe: int) -> np.random.Generator:
        """The generator of every choice made for one document in one copy."""
        if not 0 <= dupe < 1 << 20 or document_index < 0:
            raise ValueError(f"document index {document_index} / dupe {dupe} out of range (dupe < 2**20)")
        key = np.asarray([self.seed % 2**64, (document_index << 20) | dupe], dtype=np.uint64)
        return np.random.Generator(np.random.Philox(key=key))

    def document_instances(self, document_index: int, dupe: int = 0,
                           counts: InstanceCounts | None = None) -> list[Instance]:
        """All instances of one document in copy `dupe`; bad documents give none (counted in `counts`)."""
        counts = counts if counts is not None else InstanceCounts()
        counts.documents += 1
        sentences = clean_document(self.source[document_index], counts, self.vocab_size)
        if sentences is None:
            return []
        rng = self.rng(document_index, dupe)
        out: list[Instance] = []
        chunk: list[np.ndarray] = []
        chunk_tokens = 0
        target = self._target_length(rng)
        i = 0
        while i < len(sentences):
            chunk.append(sentences[i])
            chunk_tokens += sentences[i].size
            if i == len(sentences) - 1 or chunk_tokens >= target:
                i -= self._emit(chunk, target, document_index, rng, out, counts)
                chunk, chunk_tokens = [], 0
                target = self._target_length(rng)
            i += 1
        for instance in out:
            counts.kinds[instance.kind] += 1
        counts.instances += len(out)
        return out

    def _target_length(self, rng: np.random.Generator) -> int:
        max_tokens = self.config.max_seq_length - 3
        if rng.random() < self.config.short_seq_prob:
            return int(rng.integers(2, max_tokens + 1))
        return max_tokens

    def _emit(self, chunk: list[np.ndarray], target: int, document_index: int, rng: np.random.Generator,
              out: list[Instance], counts: InstanceCounts) -> int:
        """Appends the instance of one chunk; returns how many sentences go back to the document."""
        config = self.config
        max_tokens = config.max_seq_length - 3
        if config.sentence_objective == "none":
            out.append(self._single(np.concatenate(chunk), rng))
            return 0
        if len(chunk) == 1:
            counts.single_segment_chunks += 1
            if config.single_segment_policy == "skip":
                counts.skipped_chunks += 1
            elif config.single_segment_policy == "keep_in_order":
                out.append(self._single(chunk[0], rng))
            else:
                b = self._random_segment(document_index, target - chunk[0].size, rng)
                if b is None:
                    counts.skipped_chunks += 1
                else:
                    out.append(self._pair(chunk[0], b, 1, KIND_RANDOM_NEXT, max_tokens, rng))
            return 0
        a_end = int(rng.integers(1, len(chunk)))
        a = np.concatenate(chunk[:a_end])
        if config.sentence_objective == "nsp" and rng.random() < config.negative_prob:
            b = self._random_segment(document_index, target - a.size, rng)
            if b is not None:
                out.append(self._pair(a, b, 1, KIND_RANDOM_NEXT, max_tokens, rng))
                return len(chunk) - a_end
        b = np.concatenate(chunk[a_end:])
        if config.sentence_objective == "sop" and rng.random() < config.negative_prob:
            out.append(self._pair(b, a, 1, KIND_SWAPPED, max_tokens, rng))
        else:
            out.append(self._pair(a, b, 0, KIND_IN_ORDER, max_tokens, rng))
        return 0

    def _pair(self, a: np.ndarray, b: np.ndarray, label: int, kind: int, max_tokens: int,
              rng: np.random.Generator) -> Instance:
        a, b = trim_pair(a, b, max_tokens, rng)
        tokens = np.concatenate([self._cls, a, self._sep, b, self._sep])
        return Instance(tokens, a.size + 2, label, kind)

    def _single(self, a: np.ndarray, rng: np.random.Generator) -> Instance:
        a = trim_single(a, self.config.max_seq_length - 2, rng)
        tokens = np.concatenate([self._cls, a, self._sep])
        return Instance(tokens, tokens.size, 0, KIND_SINGLE)

    def _random_segment(self, document_index: int, target: int, rng: np.random.Generator) -> np.ndarray | None:
        """Sentences from a random start in a random other non-empty document, until `target` tokens."""
        size = len(self.source)
        for _ in range(self.config.random_document_tries):
            other = int(rng.integers(size))
            if other == document_index:
                continue
            sentences = clean_document(self.source[other], vocab_size=self.vocab_size)
            if sentences is not None:
                break
        else:
            return None
        start = int(rng.integers(len(sentences)))
        taken: list[np.ndarray] = []
        total = 0
        for sentence in sentences[start:]:
            taken.append(sentence)
            total += sentence.size
            if total >= target:
                break
        return np.concatenate(taken)

