"""Tokenizer tests: ids against transformers' AlbertTokenizer over the same .model file, vocab layout, word starts.

The vocabulary is trained here on text written for this test (no third-party text). transformers 5 only has the
`tokenizers`-backed AlbertTokenizer, built from the .model file in two ways, compared line by line:
- `AlbertTokenizer(vocab=<pieces and scores>, _spm_precompiled_charsmap=...)`, the class's own constructor: same
  normalization and segmentation as SentencePiece, but without the original digit-comma re-split. With that rule
  applied to its pieces (written out independently below) it must equal ours on every line.
- `AlbertTokenizer.from_pretrained(<dir with spiece.model>)`, the standard conversion: it also turns the
  user-defined symbols ( ) " - . – £ € into added tokens matched on the raw text, so the text between them gets its
  own "▁" prefix. Every line where it differs from ours is listed with one of the documented reasons.
One more documented difference holds for both: the original (and ours) collapses whitespace with Python's
str.split(), which counts U+000B and U+001C..U+001F as whitespace; transformers applies SentencePiece's nmt_nfkc
map first, which deletes those characters, so the words around them are joined.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from albert_jax.input.tokenizer import (CONTROL_SYMBOLS, SPECIAL_PIECES, USER_DEFINED_SYMBOLS, Tokenizer, VocabError,
                                        normalize_text, piece_starts_word, train_vocab)

TRAIN_TEXT = """\
The quick brown fox jumps over the lazy dog, and the dog does not mind at all.
In 2019, the team trained models on 1,000,000 sentences, then on 3,500,000 more.
Prices rose by 12,5 percent in one region and by 7,25 percent in another.
She counted 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and stopped at 11, 12, 13.
A café in Zürich serves crème brûlée, naïve tourists order a façade of coffee.
The résumé lists São Paulo, Kraków, Ångström units and the Noël market.
Words like "quoted text" and (parenthesized remarks) appear - often - in prose.
The well-known e.g. example costs £20 or €25, i.e. about 30 dollars.
Between 1990–2000 the population grew from 250,000 to 400,000 people.
Tabs\tand  double  spaces   should collapse into single spaces here.
``Old style quotes'' were common in typeset text from the last century.
Numbers such as 10,000, 20,000, 30,000 and 40,000 are grouped with commas.
The library opened at 9, closed at 5, and reopened on the 21st of May.
Many readers prefer long walks, quiet evenings, and good books by the sea.
Scientists measured 3,14 and 2,71 as approximate constants in the notes.
Every morning the baker sells 1,200 loaves, 300 cakes, and 45 pies.
The committee met on Monday, Tuesday, and Friday to discuss the budget.
Water boils at 100 degrees, freezes at 0, and is densest near 4 degrees.
Children learn to read, write, and count before they turn seven years old.
The river flows north for 1,500 kilometres before it reaches the ocean.
"""

SAMPLE_LINES = TRAIN_TEXT.splitlines() + [
    "",
    "   leading and trailing whitespace   ",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "carriage return\r and vertical\x0btab and form\x0cfeed",
    "unit\x1fseparator and record\x1eseparator",
    "Digits with commas: 1,2 12,34 123,456,789 and 7, 8,9.",
    "A number at the end 42,",
    "Mixed 12,abc and abc,12 and 3,.",
    "(Parenthesized start) and \"quoted start\"",
    "ligature \ufb01ne and roman \u216b and fullwidth \uff21\uff22\uff23",
    "ACCENTS: \u00c9COLE, \u00c5NGSTR\u00d6M, na\u00efve, co\u00f6perate",
    "Greek \u03a9\u03bc\u03ad\u03b3\u03b1 \u039f\u0394\u039f\u03a3 and Chinese \u4e2d\u6587 text",
    "Straße İstanbul Ǆemal",
    "emoji \U0001f600 and symbols \u00a9 \u2122 \u00b0C",
    "a--b ((c)) ..d.. \"\"e\"\" --- end",
    "the 1,000th visitor paid $1,000.50 on 2020-01-02, at 10:30",
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vocab")
    lines = TRAIN_TEXT.splitlines() * 3
    summary = train_vocab(lines, str(directory / "spm"), 220, num_threads=1)
    return summary["model"]


def _hf_from_proto(model_path):
    from sentencepiece import sentencepiece_model_pb2
    from transformers import AlbertTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_path, "rb") as handle:
        proto.ParseFromString(handle.read())
    return AlbertTokenizer(vocab=[(p.piece, p.score) for p in proto.pieces],
                           _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap)


def _hf_from_file(model_path, tmp_path):
    from transformers import AlbertTokenizer

    shutil.copy(model_path, tmp_path / "spiece.model")
    return AlbertTokenizer.from_pretrained(str(tmp_path))


def _original_digit_comma_rule(pieces, encode_pieces):
    """The original's re-split, written from its description: a piece ending in "<digit>," becomes the digits
    encoded again (losing a "▁" the piece did not have) followed by ","."""
    out = []
    for piece in pieces:
        if len(piece) > 1 and piece.endswith(",") and piece[-2].isdigit():
            sub = encode_pieces(piece[:-1].replace("▁", ""))
            if not piece.startswith("▁") and sub[0].startswith("▁"):
                sub = sub[1:] if sub[0] == "▁" else [sub[0][1:]] + sub[1:]
            out.extend(sub + [","])
        else:
            out.append(piece)
    return out


_DELETED_WHITESPACE = re.compile("[\x0b\x1c-\x1f]")
DELETED_WHITESPACE_REASON = "U+000B/U+001C..U+001F: whitespace to str.split(), deleted by nmt_nfkc in transformers"


def _has_digit_comma_piece(pieces):
    return any(len(p) > 1 and p.endswith(",") and p[-2].isdigit() for p in pieces)


_SYMBOLS = "".join(re.escape(s) for s in USER_DEFINED_SYMBOLS)
_USER_SYMBOL_PREFIX = re.compile(rf"(^|\s)[{_SYMBOLS}]|[{_SYMBOLS}][^\s{_SYMBOLS}]")


def test_matches_transformers_with_the_original_digit_comma_rule(model_path):
    ours = Tokenizer(model_path)
    reference = _hf_from_proto(model_path)
    undocumented, documented, resplit = [], [], []
    for line in SAMPLE_LINES:
        hf_pieces = reference.tokenize(line)
        expected = reference.convert_tokens_to_ids(_original_digit_comma_rule(hf_pieces, reference.tokenize))
        got = ours.encode(line)
        if got != expected:
            reason = DELETED_WHITESPACE_REASON if _DELETED_WHITESPACE.search(line) else "NO DOCUMENTED REASON"
            (documented if _DELETED_WHITESPACE.search(line) else undocumented).append(
                f"{line!r}: {reason}\n  ours: {ours.encode_pieces(line)}\n  reference: "
                f"{reference.convert_ids_to_tokens(expected)}")
        if _has_digit_comma_piece(hf_pieces):
            resplit.append(line)
    print("\n".join(["lines where transformers + digit-comma rule differs:"] + documented))
    assert not undocumented, "lines differing from transformers + digit-comma rule:\n" + "\n".join(undocumented)
    assert len(resplit) >= 5, f"the sample exercises the digit-comma rule on too few lines: {resplit}"


def test_differences_from_transformers_standard_conversion_are_all_documented(model_path, tmp_path):
    ours = Tokenizer(model_path)
    reference = _hf_from_file(model_path, tmp_path)
    undocumented, documented = [], []
    for line in SAMPLE_LINES:
        got = ours.encode(line)
        hf_pieces = reference.tokenize(line)
        if got == reference.convert_tokens_to_ids(hf_pieces):
            continue
        reasons = []
        if _has_digit_comma_piece(hf_pieces):
            reasons.append("transformers keeps pieces ending in '<digit>,' (no re-split)")
        if _USER_SYMBOL_PREFIX.search(normalize_text(line)):
            reasons.append("transformers splits user-defined symbols off the raw text ('▁' prefix per chunk)")
        if _DELETED_WHITESPACE.search(line):
            reasons.append(DELETED_WHITESPACE_REASON)
        entry = f"{line!r}: {'; '.join(reasons) or 'NO DOCUMENTED REASON'}\n  ours: {ours.encode_pieces(line)}" \
                f"\n  transformers: {hf_pieces}"
        (documented if reasons else undocumented).append(entry)
    print("\n".join(["lines where transformers' standard conversion differs:"] + documented))
    assert not undocumented, "differences without a documented reason:\n" + "\n".join(undocumented)
    assert documented, "expected the documented differences to show up on this sample"


def test_vocab_id_layout(model_path):
    tokenizer = Tokenizer(model_path)
    assert tokenizer.vocab_size == 220
    pieces = [tokenizer.id_to_piece(i) for i in range(13)]
    assert pieces == list(SPECIAL_PIECES + USER_DEFINED_SYMBOLS)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == \
        (0, 1, 2, 3, 4)
    assert [tokenizer.piece_to_id(p) for p in CONTROL_SYMBOLS] == [2, 3, 4]
    assert tokenizer.encode("[CLS] [MASK]") != [2, 4], "control symbols must not be produced from text"


def test_normalization():
    assert normalize_text("  Caf\u00e9\t\tNA\u00cfVE  ``hi'' ") == 'cafe naive "hi"'
    assert normalize_text("\ufb01 \u216b") == "fi xii"
    assert normalize_text("\u00c9cole", lower=False) == "Ecole"
    assert normalize_text("\u00e9", keep_accents=True) == "\u00e9"


def test_batch_encoding_equals_single(model_path):
    tokenizer = Tokenizer(model_path, num_threads=2)
    assert tokenizer.encode_batch(SAMPLE_LINES) == [tokenizer.encode(line) for line in SAMPLE_LINES]


def test_word_start_table(model_path):
    tokenizer = Tokenizer(model_path)
    table = tokenizer.word_start_table()
    assert table.dtype == np.bool_ and table.shape == (tokenizer.vocab_size,)
    for token_id in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(token_id)
        if token_id < 13 or piece.startswith("▁") or piece in (",", "'", ":"):
            assert table[token_id], piece
        elif piece.isalpha() and piece.isascii() or piece.isdigit():
            assert not table[token_id], piece


@pytest.mark.parametrize("piece, starts", [
    ("▁the", True), ("▁", True), ("the", False), ("s", False), ("99", False), (",", True), ("')", True),
    ("'s", False), ("\u00e9t\u00e9", False), ("\u4e2d", True), ("\u6587\u5b57", True), ("\u03c9\u03bc", True),
    ("ab\u4e2d", True), ("\u00a3", True)])
def test_piece_starts_word(piece, starts):
    assert piece_starts_word(piece) == starts


def test_missing_and_mismatched_vocab(tmp_path):
    with pytest.raises(VocabError, match=r"does not exist.*train_vocab\.py"):
        Tokenizer(tmp_path / "missing.model")
    (tmp_path / "garbage.model").write_bytes(b"not a model")
    with pytest.raises(VocabError, match="not a readable SentencePiece model"):
        Tokenizer(tmp_path / "garbage.model")
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(TRAIN_TEXT.splitlines() * 3),
                                   model_prefix=str(tmp_path / "plain"), vocab_size=120, minloglevel=2)
    with pytest.raises(VocabError, match=r"'<unk>' at id 0 where ALBERT needs '<pad>'"):
        Tokenizer(tmp_path / "plain.model")
