"""ALBERT's SentencePiece tokenizer: the original recipe's text normalization, piece encoding and id layout.

The original pipeline (google-research/albert, also transformers' ALBERT tokenizer) normalizes text before
SentencePiece sees it: surrounding whitespace stripped and inner runs collapsed to one space, LaTeX-style quotes
(`` and '') turned into ", accents stripped (NFKD, combining marks dropped) and the text lowercased. SentencePiece
then applies the model's own normalizer (nmt_nfkc by default) and segments the text. Finally a piece ending in
"<digit>," is re-split into the digits (encoded again on their own) and a separate "," piece, so that numbers such
as "1,000" do not produce pieces that glue a comma to a digit.

Vocabularies made by `data/train_vocab.py` have the original id layout: <pad>=0, <unk>=1, [CLS]=2, [SEP]=3,
[MASK]=4, followed by the user-defined symbols ( ) " - . – £ € and the learned pieces.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import unicodedata
from typing import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_PIECES = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
CONTROL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
USER_DEFINED_SYMBOLS = ("(", ")", '"', "-", ".", "–", "£", "€")
WORD_BOUNDARY = "▁"

_DIGIT_COMMA = re.compile(r"\d,")
_MAKE_VOCAB_HINT = ("make one with `python data/train_vocab.py --input <text files> --model_prefix <path> "
                    "--vocab_size <n>` (or `python data/demo_corpus.py` for the demo corpus)")


class VocabError(ValueError):
    """A vocabulary file is missing, unreadable, or does not have ALBERT's id layout."""


def normalize_text(text: str, *, lower: bool = True, keep_accents: bool = False) -> str:
    """Applies the original ALBERT preprocessing to one piece of text (a sentence, usually).

    Whitespace: stripped at both ends, inner runs (any Unicode whitespace) collapsed to one space. Quotes: `` and ''
    become ". Accents: NFKD decomposition, then every character with a nonzero combining class is dropped (so "é"
    becomes "e" and "ﬁ" becomes "fi"). Case: lowercased after accent stripping, as in the original.
    """
    text = " ".join(text.split())
    text = text.replace("``", '"').replace("''", '"')
    if not keep_accents and not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        if not text.isascii():
            text = "".join(c for c in text if not unicodedata.combining(c))
    return text.lower() if lower else text


def normalize_with_offsets(text: str, *, lower: bool = True,
                           keep_accents: bool = False) -> tuple[str, list[int], list[int]]:
    """`normalize_text(text)` and, for each of its characters, the first and last index of the characters of
    `text` it comes from (a collapsed whitespace run, a `` pair, a character NFKD splits into several)."""
    chars: list[tuple[str, int, int]] = []
    for index, char in enumerate(text):
        if char.isspace():
            if chars and chars[-1][0] == " " and chars[-1][2] == index - 1:
                chars[-1] = (" ", chars[-1][1], index)
            elif chars:
                chars.append((" ", index, index))
        else:
            chars.append((char, index, index))
    if chars and chars[-1][0] == " ":
        chars.pop()
    for pair in ("``", "''"):
        merged: list[tuple[str, int, int]] = []
        for char in chars:
            if merged and char[0] == pair[0] and merged[-1][0] == pair[0] and merged[-1][2] < char[1] and \
                    merged[-1][1] == merged[-1][2]:
                merged[-1] = ('"', merged[-1][1], char[2])
            else:
                merged.append(char)
        chars = merged
    if not keep_accents and not text.isascii():
        chars = [(part, first, last) for char, first, last in chars
                 for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part)]
    if lower:
        chars = [(part, first, last) for char, first, last in chars for part in char.lower()]
    normalized = "".join(char for char, _, _ in chars)
    expected = normalize_text(text, lower=lower, keep_accents=keep_accents)
    if normalized != expected:  # context-dependent rules (final sigma) keep the length: positions still hold
        if len(normalized) != len(expected):
            raise ValueError(f"cannot align the normalized text with the original: {text[:80]!r}")
        normalized = expected
    return normalized, [first for _, first, _ in chars], [last for _, _, last in chars]


def _is_latin_letter(char: str) -> bool:
    return char.isascii() or unicodedata.name(char, "").startswith("LATIN")


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


class Tokenizer:
    """A SentencePiece model file plus ALBERT's normalization, digit-comma rule and special ids.

    Encoding many sentences at once (`encode_batch`) runs SentencePiece on `num_threads` threads; normalization
    runs in Python, so for large corpora the preparation command also spreads documents over processes.
    """

    def __init__(self, model_path: str | os.PathLike, *, lower: bool = True, keep_accents: bool = False,
                 num_threads: int = 1) -> None:
        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise VocabError(f"SentencePiece vocabulary {path!r} does not exist; {_MAKE_VOCAB_HINT}")
        self._processor = spm.SentencePieceProcessor()
        try:
            self._processor.Load(path)
        except (OSError, RuntimeError) as error:
            raise VocabError(f"{path!r} is not a readable SentencePiece model ({error}); {_MAKE_VOCAB_HINT}") from None
        for expected_id, piece in enumerate(SPECIAL_PIECES):
            found = self._processor.id_to_piece(expected_id) if expected_id < self.vocab_size else None
            if found != piece:
                raise VocabError(f"vocabulary {path!r} has {found!r} at id {expected_id} where ALBERT needs {piece!r} "
                                 f"(layout <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4); {_MAKE_VOCAB_HINT}")
        self.path = path
        self.lower = lower
        self.keep_accents = keep_accents
        self.num_threads = num_threads
        self._comma_id = self._processor.piece_to_id(",")
        self._resplit_cache: dict[int, list[int]] = {}

    pad_id, unk_id, cls_id, sep_id, mask_id = PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special pieces included."""
        return self._processor.get_piece_size()

    def sha256(self) -> str:
        """Hex digest of the model file, recorded with prepared data to detect a mismatched vocabulary later.

        The file includes the path prefix it was trained to, so the same vocabulary retrained under another name
        gets another digest (a conservative mismatch); copying or moving the file keeps it.
        """
        with open(self.path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    def id_to_piece(self, token_id: int) -> str:
        return self._processor.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        """Id of an exact piece, or `unk_id` when the vocabulary lacks it."""
        return self._processor.piece_to_id(piece)

    def normalize(self, text: str) -> str:
        """The text SentencePiece is given; see `normalize_text`."""
        return normalize_text(text, lower=self.lower, keep_accents=self.keep_accents)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without [CLS]/[SEP]."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (SentencePiece runs on `num_threads` threads)."""
        normalized = [self.normalize(text) for text in texts]
        ids = self._processor.encode(normalized, num_threads=self.num_threads)
        for index, text in enumerate(normalized):
            if _DIGIT_COMMA.search(text):
                ids[index] = self._resplit_digit_commas(ids[index])
        return ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` and, per id, the span (first, last index, inclusive) of the characters of `text` it
        covers; a piece's leading word-boundary space is not part of its span (a bare "▁" keeps its space).

        SentencePiece reports byte offsets into the normalized text; `normalize_with_offsets` maps those back to
        `text`. A digit-comma piece re-split by the original rule gives its digits and its "," their own spans.
        """
        normalized, firsts, lasts = normalize_with_offsets(text, lower=self.lower, keep_accents=self.keep_accents)
        char_of_byte = np.repeat(np.arange(len(normalized) + 1),
                                 [len(c.encode("utf-8")) for c in normalized] + [1])
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for piece in self._processor.encode(normalized, return_type="proto").pieces:
            begin, end = int(char_of_byte[piece.begin]), int(char_of_byte[piece.end])
            while begin < end - 1 and normalized[begin] == " ":
                begin += 1
            text_piece = piece.piece
            if len(text_piece) > 1 and text_piece[-1] == "," and text_piece[-2].isdigit():
                sub_ids = self._resplit(piece.id, text_piece)
                cursor = begin
                for sub_id in sub_ids[:-1]:
                    width = max(1, len(self.id_to_piece(sub_id).replace(WORD_BOUNDARY, "")))
                    stop = min(cursor + width, end - 1)
                    ids.append(sub_id)
                    spans.append((firsts[cursor], lasts[max(cursor, stop - 1)]))
                    cursor = stop
                ids.append(sub_ids[-1])
                spans.append((firsts[end - 1], lasts[end - 1]))
                continue
            ids.append(piece.id)
            spans.append((firsts[begin], lasts[max(begin, end - 1)]))
        return ids, spans

    def encode_pieces(self, text: str) -> list[str]:
        """The pieces of `encode(text)`, for inspection."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids (normalized text: lowercase, without accents)."""
        return self._processor.decode([int(i) for i in ids])

    def _resplit_digit_commas(self, ids: list[int]) -> list[int]:
        """Applies the original rule to every piece that ends in "<digit>,", keeping other ids as they are."""
        out: list[int] = []
        for token_id in ids:
            piece = self._processor.id_to_piece(token_id)
            if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                out.extend(self._resplit(token_id, piece))
            else:
                out.append(token_id)
        return out

    def _resplit(self, token_id: int, piece: str) -> list[int]:
        """The digits of `piece` encoded on their own, then ",": "▁1," -> "▁1" ","; "0," -> "0" ",".

        The digits are encoded as fresh text, which gives a leading "▁". If the original piece did not start a
        word, that "▁" is removed again: dropped if it is a piece of its own, else stripped from the first piece
        (looked up as a piece; the original maps it to <unk> when the vocabulary lacks it).
        """
        cached = self._resplit_cache.get(token_id)
        if cached is None:
            sub = self._processor.encode(piece[:-1].replace(WORD_BOUNDARY, ""), out_type=str)
            if not piece.startswith(WORD_BOUNDARY) and sub and sub[0].startswith(WORD_BOUNDARY):
                sub = sub[1:] if sub[0] == WORD_BOUNDARY else [sub[0][1:]] + sub[1:]
            cached = [self._processor.piece_to_id(p) for p in sub] + [self._comma_id]
            self._resplit_cache[token_id] = cached
        return cached

    def word_start_table(self) -> np.ndarray:
        """Boolean array over ids: True where a piece begins a word, for whole-word masking.

        Special pieces (control, unknown, unused, user-defined: <pad> <unk> [CLS] [SEP] [MASK] ( ) " - . – £ €)
        begin a word; every other piece is classified by `piece_starts_word`.
        """
        processor = self._processor
        return np.array([processor.is_control(i) or processor.is_unknown(i) or processor.is_unused(i)
                         or processor.id_to_piece(i) in USER_DEFINED_SYMBOLS
                         or piece_starts_word(processor.id_to_piece(i)) for i in range(self.vocab_size)], dtype=bool)


def piece_starts_word(piece: str) -> bool:
    """Whether a (non-special) piece begins a word.

    True when it starts with "▁"; when all its characters are punctuation or symbols (Unicode categories P* and
    S*, e.g. "," or "'"); or when it contains a character that is neither a Latin letter, a digit nor
    punctuation (CJK, Greek, ...: such text counts one piece per word, as the original does for "foreign
    characters"). Deliberate difference from the original generator: it compares characters against a-z only, so
    a digit continuation such as "99" in "▁19" "99" counts as a word start there; here digits belong to the word
    they continue.
    """
    if piece.startswith(WORD_BOUNDARY) or all(_is_punctuation(c) for c in piece):
        return True
    return any(not (_is_latin_letter(c) or c.isdigit() or _is_punctuation(c)) for c in piece)

# Characters that UTF-8 text does not contain: U+FFFD (what an invalid UTF-8 byte is read as) and C0/C1 controls
# other than tab and line breaks.
_SUSPICIOUS = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _training_hint(message: str, counts: dict[str, int]) -> str:
    """What a failed vocabulary training most likely means, from the text's characters and SentencePiece's words."""
    total, suspicious = counts["raw_characters"], counts["suspicious"]
    if total and suspicious / total > 0.01:
        return (f"The text looks binary or mis-encoded: {suspicious:,} of its {total:,} characters "
                f"({100 * suspicious / total:.1f}%) are invalid UTF-8 or control characters. Check that the text "
                f"files are UTF-8 text (not an archive, a record file or another encoding).")
    if "required_chars" in message:
        return ("The text has more distinct characters than vocab_size leaves room for: raise --vocab_size or "
                "lower character_coverage.")
    return "A vocab_size too large for the text fails this way: use a smaller --vocab_size or more text."


def train_vocab(sentences: Iterable[str], model_prefix: str, vocab_size: int, *, input_sentence_size: int = 2_000_000,
                character_coverage: float = 0.99995, num_threads: int | None = None, seed: int = 12345,
                lower: bool = True, keep_accents: bool = False) -> dict:
    """Trains a SentencePiece unigram vocabulary with the original ALBERT recipe; writes `<model_prefix>.model`.

    The text is normalized exactly as `Tokenizer` will normalize it (see `normalize_text`), then streamed to the
    trainer, which keeps a uniform random sample of `input_sentence_size` sentences (reservoir sampling, so memory
    is bounded by the sample, not by the corpus). Ids: <pad>=0, <unk>=1, control [CLS] [SEP] [MASK] = 2..4,
    user-defined ( ) " - . – £ € = 5..12, no BOS/EOS. Returns a summary dict.
    """
    counts = {"sentences": 0, "characters": 0, "raw_characters": 0, "suspicious": 0}

    def normalized() -> Iterator[str]:
        for sentence in sentences:
            counts["raw_characters"] += len(sentence)
            counts["suspicious"] += len(_SUSPICIOUS.findall(sentence))
            text = normalize_text(sentence, lower=lower, keep_accents=keep_accents)
            if text:
                counts["sentences"] += 1
                counts["characters"] += len(text)
                yield text

    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.set_random_generator_seed(seed)
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=normalized(), model_prefix=model_prefix, vocab_size=vocab_size, model_type="unigram",
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
            control_symbols=list(CONTROL_SYMBOLS), user_defined_symbols=list(USER_DEFINED_SYMBOLS),
            character_coverage=character_coverage, input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True, max_sentence_length=1 << 16, num_threads=num_threads or os.cpu_count(),
            minloglevel=2)
    except RuntimeError as error:
        message = str(error).rstrip(".")
        raise ValueError(f"SentencePiece training failed on {counts['sentences']} sentences: {message}. "
                         f"{_training_hint(message, counts)}") from None
    model_path = model_prefix + ".model"
    Tokenizer(model_path)
    return {"model": model_path, "vocab_size": vocab_size, "sentences": counts["sentences"],
            "characters": counts["characters"], "sampled_sentences": min(counts["sentences"], input_sentence_size),
            "seconds": time.perf_counter() - start}
