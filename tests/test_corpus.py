"""Corpus preparation tests: sentence rule, bad input (each case counted), splits, TFDS builder, demo corpus.

All data is generated here (random words); the demo corpus test runs only when `data/demo_corpus.py` has already
filled cache/demo.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys

import pytest
from array_record.python.array_record_module import ArrayRecordReader

from albert_jax.input.corpus import (CorpusStats, EmptyCorpusError, TextFiles, TfdsCorpus, corpus_files,
                                     is_eval_document, load_corpus_info, prepare_corpus, read_lines, split_sentences)
from albert_jax.input.documents import decode_document
from albert_jax.input.tokenizer import Tokenizer, VocabError, train_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "number group problem fact river stone garden letter window market music paper story water light").split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
    if rng.random() < 0.2:
        words.insert(1, f"{rng.randint(1, 99)},{rng.randint(100, 999)}")
    return " ".join(words).capitalize() + rng.choice(".!?")


def _documents(count: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[_sentence(rng) for _ in range(rng.randint(2, 6))] for _ in range(count)]


def _write_sentences_format(path, documents) -> str:
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> str:
    lines = [s for doc in _documents(200, seed=1) for s in doc]
    return train_vocab(lines, str(tmp_path_factory.mktemp("vocab") / "spm"), 150, num_threads=1)["model"]


def _read_split(output_dir: str, split: str) -> list[bytes]:
    records = []
    for path in corpus_files(output_dir, split):
        reader = ArrayRecordReader(path)
        records.extend(reader.read_all())
        reader.close()
    return records


def test_split_sentences_rule():
    text = ('Dr. Smith arrived at 5 p.m. on Monday. He said "Hello there!" Then he left? Yes. '
            'See e.g. the U.S. report, or J. R. Tolkien. Version 3.11 is out. 2020 was long. it stays one.')
    assert split_sentences(text) == [
        "Dr. Smith arrived at 5 p.m. on Monday.", 'He said "Hello there!"', "Then he left?", "Yes.",
        "See e.g. the U.S. report, or J. R. Tolkien.", "Version 3.11 is out.", "2020 was long. it stays one."]
    assert split_sentences("  ") == []
    assert split_sentences("See os.path.join. The end.") == ["See os.path.join.", "The end."]


def test_read_lines_splits_long_lines_on_character_boundaries(tmp_path):
    text = "short\n" + ("\u00e9t\u00e9 " * 100).strip() + "\n" + "x" * 300 + "\u00e9" * 40 + "\nend\n"
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    stats = CorpusStats()
    lines = list(read_lines(str(tmp_path / "long.txt"), stats, max_line_bytes=64))
    assert "".join(lines) == text, "pieces partition the text (no byte lost, no character cut in two)"
    assert stats.long_lines_split == 2 and stats.invalid_utf8 == 0
    assert all(len(line.encode()) <= 128 for line in lines) and len(lines) > 10
    assert lines[0] == "short\n" and lines[-1] == "end\n"


def test_bad_input_is_counted_and_reported(tmp_path, vocab, capsys):
    good = _documents(60, seed=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_sentences_format(inputs / "a.txt", good)
    (inputs / "empty.txt").write_bytes(b"")
    (inputs / "blank.txt").write_text("\n\n   \n\t\n")
    (inputs / "bad.txt").write_bytes(b"Broken \xff\xfe bytes here.\nAnd \xc3 more.\n\nA lone sentence.\n\n"
                                     b"\xcc\x81\xcc\x81\n\n")
    (inputs / "long.txt").write_text("Word " * 3000 + "\nShort tail.\n")
    paths = tuple(str(inputs / n) for n in ("a.txt", "empty.txt", "blank.txt", "bad.txt", "long.txt"))
    info = prepare_corpus(TextFiles(paths, max_line_bytes=4096), vocab, str(tmp_path / "out"),
                          eval_fraction=0.2, max_sentence_chars=1000)
    stats = info["stats"]
    assert stats["files"] == 5
    assert stats["empty_files"] == 2, "empty.txt and blank.txt hold no document"
    assert stats["invalid_utf8"] == 2, "two lines of bad.txt hold invalid UTF-8"
    assert stats["blank_documents"] == 1, "the combining-marks-only document normalizes to nothing"
    assert stats["empty_sentences"] == 1
    assert stats["long_lines_split"] == 1 and stats["long_sentences_split"] >= 1
    assert stats["single_sentence_documents"] == 1 + sum(len(d) == 1 for d in good), "'A lone sentence.'"
    assert stats["input_documents"] == len(good) + 4
    assert stats["documents"]["train"] + stats["documents"]["eval"] == len(good) + 3
    report = CorpusStats(**stats).report()
    for phrase in ("empty files skipped: 2", "invalid UTF-8, decoded with U+FFFD: 2", "blank documents", "split"):
        assert phrase in report
    tokenizer = Tokenizer(vocab)
    longest = max((decode_document(r) for r in _read_split(str(tmp_path / "out"), "train")),
                  key=lambda doc: max(len(s) for s in doc))
    assert max(len(s) for s in longest) < 1000, "over-long sentences were split"
    assert "\ufffd" not in tokenizer.decode(longest[0])


def test_splits_are_disjoint_stable_and_decode_to_the_text(tmp_path, vocab):
    documents = _documents(300, seed=3)
    documents.append(list(documents[0]))
    path = _write_sentences_format(tmp_path / "c.txt", documents)
    info = prepare_corpus(TextFiles((path,)), vocab, str(tmp_path / "out"), eval_fraction=0.1, progress=False)
    tokenizer = Tokenizer(vocab)
    expected = {"train": [], "eval": []}
    for doc in documents:
        split = "eval" if is_eval_document(doc, 0.1) else "train"
        expected[split].append([tokenizer.encode(s) for s in doc])
    for split in ("train", "eval"):
        got = [[s.tolist() for s in decode_document(r)] for r in _read_split(str(tmp_path / "out"), split)]
        assert got == expected[split]
        assert info["splits"][split]["documents"] == len(expected[split])
    assert 10 < len(expected["eval"]) < 60
    train_texts = {tuple(map(tuple, d)) for d in expected["train"]}
    assert not any(tuple(map(tuple, d)) in train_texts for d in expected["eval"]), "a document in both splits"
    assert load_corpus_info(str(tmp_path / "out"), tokenizer)["vocab"]["vocab_size"] == 150


def test_worker_processes_give_identical_output(tmp_path, vocab):
    path = _write_sentences_format(tmp_path / "c.txt", _documents(400, seed=4))
    for workers in (1, 2):
        prepare_corpus(TextFiles((path,)), vocab, str(tmp_path / f"w{workers}"), eval_fraction=0.1,
                       workers=workers, chunk_documents=32, progress=False)
    for split in ("train", "eval"):
        assert _read_split(str(tmp_path / "w1"), split) == _read_split(str(tmp_path / "w2"), split)


def test_empty_results_and_vocab_problems_are_clear_errors(tmp_path, vocab):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n\n")
    with pytest.raises(EmptyCorpusError, match="no train documents"):
        prepare_corpus(TextFiles((str(blank),)), vocab, str(tmp_path / "o1"), progress=False)
    one = _write_sentences_format(tmp_path / "one.txt", _documents(3, seed=5))
    with pytest.raises(EmptyCorpusError, match="raise eval_fraction"):
        prepare_corpus(TextFiles((one,)), vocab, str(tmp_path / "o2"), eval_fraction=0.001, progress=False)
    assert not os.path.exists(tmp_path / "o2" / "corpus.json")
    with pytest.raises(VocabError, match="does not exist"):
        prepare_corpus(TextFiles((one,)), str(tmp_path / "none.model"), str(tmp_path / "o3"), progress=False)
    prepare_corpus(TextFiles((one,)), vocab, str(tmp_path / "o4"), eval_fraction=0.0, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_corpus(TextFiles((one,)), vocab, str(tmp_path / "o4"), eval_fraction=0.0, progress=False)
    other = train_vocab([s for d in _documents(100, seed=6) for s in d], str(tmp_path / "other"), 140,
                        num_threads=1)["model"]
    with pytest.raises(ValueError, match="tokenized with"):
        load_corpus_info(str(tmp_path / "o4"), Tokenizer(other))


def test_unknown_heavy_text_warns_about_the_vocabulary(tmp_path, vocab):
    path = tmp_path / "greek.txt"
    path.write_text("\u0391\u03b8\u03ae\u03bd\u03b1 \u03ba\u03b1\u03b9 \u03a3\u03c0\u03ac\u03c1\u03c4\u03b7.\n"
                    "Time and river.\n")
    info = prepare_corpus(TextFiles((str(path),)), vocab, str(tmp_path / "out"), eval_fraction=0, progress=False)
    assert info["stats"]["unk_tokens"] > 0
    assert "WARNING: over 0.5% <unk>" in CorpusStats(**info["stats"]).report()


def test_commands_train_a_vocab_and_prepare(tmp_path):
    text = _write_sentences_format(tmp_path / "c.txt", _documents(200, seed=8))
    env = {**os.environ, "PYTHONPATH": REPO}
    run = [sys.executable, "-m", "albert_jax.jobs.data_vocab", "--input", str(tmp_path / "*.txt"),
           "--model_prefix", str(tmp_path / "v"), "--vocab_size", "140", "--num_threads", "1"]
    vocab_out = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout
    assert "vocabulary" in vocab_out and "140 pieces" in vocab_out
    run = [sys.executable, "-m", "albert_jax.jobs.data_prepare", "--input", text, "--vocab",
           str(tmp_path / "v.model"), "--output_dir", str(tmp_path / "out"), "--workers", "1"]
    prepare_out = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout
    assert "documents:" in prepare_out and "<unk> tokens" in prepare_out
    assert load_corpus_info(str(tmp_path / "out"), Tokenizer(str(tmp_path / "v.model")))
    again = subprocess.run(run, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def _albert_text_module():
    spec = importlib.util.spec_from_file_location("albert_text", os.path.join(REPO, "data/albert_text/albert_text.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tfds_builder_round_trip(tmp_path, vocab):
    documents = _documents(120, seed=7)
    sentences_dir, documents_dir = tmp_path / "sentences", tmp_path / "documents"
    (sentences_dir / "sub").mkdir(parents=True)
    documents_dir.mkdir()
    files = (_write_sentences_format(sentences_dir / "part1.txt", documents[:70]),
             _write_sentences_format(sentences_dir / "sub" / "part2.txt", documents[70:]))
    (documents_dir / "docs.txt").write_text("\n".join(" ".join(d) for d in documents) + "\n")
    module = _albert_text_module()
    tfds_dir = str(tmp_path / "tfds")
    for config, manual_dir, file_format, data_dir in (("sentences", sentences_dir, "array_record", tfds_dir),
                                                      ("documents", documents_dir, "array_record", tfds_dir),
                                                      ("sentences", sentences_dir, "tfrecord", tfds_dir + "_tfrecord")):
        builder = module.build(str(manual_dir), data_dir, config, file_format)
        assert builder.info.splits["train"].num_examples == 120
        assert builder.info.file_format.value == file_format
    prepare_corpus(TextFiles(files), vocab, str(tmp_path / "files"), eval_fraction=0.2, progress=False)
    expected = {split: sorted(_read_split(str(tmp_path / "files"), split)) for split in ("train", "eval")}
    assert expected["eval"], "the round trip should cover both splits"
    outputs = {
        "documents_format": TextFiles((str(documents_dir / "docs.txt"),), "documents"),
        "tfds_sentences": TfdsCorpus("albert_text/sentences", tfds_dir, sentences="lines"),
        "tfds_documents": TfdsCorpus("albert_text/documents", tfds_dir, sentences="lines"),
        "tfds_tfrecord": TfdsCorpus("albert_text/sentences", tfds_dir + "_tfrecord", sentences="lines"),
    }
    for name, source in outputs.items():
        prepare_corpus(source, vocab, str(tmp_path / name), eval_fraction=0.2, progress=False)
        for split in ("train", "eval"):
            assert sorted(_read_split(str(tmp_path / name), split)) == expected[split], (name, split)
    command = [sys.executable, "-m", "albert_jax.jobs.data_prepare", "--tfds_name", "albert_text/sentences",
               "--tfds_data_dir", tfds_dir, "--tfds_sentences", "lines", "--vocab", vocab, "--eval_fraction", "0.2",
               "--output_dir", str(tmp_path / "cli"), "--workers", "1"]
    subprocess.run(command, env={**os.environ, "PYTHONPATH": REPO}, check=True, capture_output=True)
    for split in ("train", "eval"):
        assert sorted(_read_split(str(tmp_path / "cli"), split)) == expected[split], "without the builder class"
    with pytest.raises(ValueError, match="no feature 'content'"):
        list(TfdsCorpus("albert_text/sentences", tfds_dir, text_feature="content").documents(CorpusStats()))
    with pytest.raises(FileNotFoundError, match="prepare it"):
        list(TfdsCorpus("albert_text/sentences", str(tmp_path / "elsewhere")).documents(CorpusStats()))


DEMO = os.path.join(REPO, "cache", "demo")


def test_demo_corpus(demo_corpus):
    corpus_dir = os.path.join(DEMO, "corpus8000")
    tokenizer = Tokenizer(os.path.join(DEMO, "vocab8000.model"))
    info = load_corpus_info(corpus_dir, tokenizer)
    assert info["splits"]["train"]["documents"] > 400 and info["splits"]["eval"]["documents"] > 10
    assert info["stats"]["tokens"] > 1_000_000 and info["stats"]["unk_tokens"] < info["stats"]["tokens"] * 0.001
    source = TextFiles((os.path.join(DEMO, "text", "python-docs.txt"),))
    documents = [d.sentences() for d in source.documents(CorpusStats())]
    held_out = [is_eval_document(d, info["eval_fraction"]) for d in documents]
    assert sum(held_out) == info["splits"]["eval"]["documents"]
    assert len(held_out) - sum(held_out) == info["splits"]["train"]["documents"]
    first_train = documents[held_out.index(False)]
    reader = ArrayRecordReader(corpus_files(corpus_dir, "train")[0])
    assert [s.tolist() for s in decode_document(reader.read([0])[0])] == tokenizer.encode_batch(first_train)
