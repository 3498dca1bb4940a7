"""Corpus sources and preparation: raw text -> sentences -> token ids -> ArrayRecord files of documents.

Sources (each yields documents as lists of raw sentences, streaming, never the whole corpus in memory):
- `TextFiles(paths, "sentences")`: the original format, one sentence per line and a blank line between documents.
- `TextFiles(paths, "documents")`: one document per line, split into sentences by `split_sentences`.
- `TfdsCorpus(name, data_dir, text_feature=...)`: any prepared TFDS dataset with a text feature (`wikipedia/...`,
  `c4/en`, or this project's `data/albert_text` builder); each line of the text is split by `split_sentences`
  (`sentences="rule"`) or taken as one sentence (`sentences="lines"`, right for `albert_text`).

Output of `prepare_corpus` (what instance creation and the loader read):
  <output_dir>/corpus.json                  metadata: vocab path, sha256 and size; per split its files and counts;
                                            the input problems met (see `CorpusStats`). Written last: its presence
                                            means the preparation completed.
  <output_dir>/train-00000.array_record     one `documents.encode_document` record per document (group_size 1,
  <output_dir>/eval-00000.array_record      for random access); further shards -00001, ... past `shard_bytes`.
A document goes to eval when a stable hash of its text falls below `eval_fraction` (`is_eval_document`), so the
splits never overlap, duplicates of a document land in the same split, and the assignment does not depend on
order, sharding or the number of processes.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
from typing import Callable, Iterable, Iterator, Sequence

from albert_jax.input.documents import encode_document
from albert_jax.input.tokenizer import Tokenizer

CORPUS_INFO = "corpus.json"
FORMAT_VERSION = "albert-jax-documents-v1"
SPLITS = ("train", "eval")
Advance = Callable[[int], None]

_OPENERS = "\"'([{\u2018\u201c\u00ab"
_BOUNDARY = re.compile(r"[.!?]+[\"')\]}\u2019\u201d\u00bb]*\s+")
_SHORT_DOTTED = re.compile(r"(?:[A-Za-z]{1,2}\.)*[A-Za-z]{1,2}")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc cf al fig figs eq no nos vol pp ed eds approx ca dept est inc ltd co "
    "corp jan feb mar apr jun jul aug sep sept oct nov dec gen col lt sgt capt rev hon".split())


class EmptyCorpusError(ValueError):
    """Preparation produced no documents for a split; the message says what was read and how to fix it."""


@dataclasses.dataclass
class CorpusStats:
    """Counts of what preparation read, kept, and repaired; reported at the end and stored in corpus.json."""

    files: int = 0
    empty_files: int = 0
    input_documents: int = 0
    blank_documents: int = 0
    single_sentence_documents: int = 0
    sentences: int = 0
    empty_sentences: int = 0
    invalid_utf8: int = 0
    long_lines_split: int = 0
    long_sentences_split: int = 0
    long_documents_split: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    documents: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def merge(self, other: CorpusStats) -> None:
        """Adds another set of counts (from a worker) to this one."""
        for field in dataclasses.fields(self):
            if field.name == "documents":
                for split, count in other.documents.items():
                    self.documents[split] += count
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def report(self) -> str:
        """Human-readable summary, one problem class per line, with what was done about it."""
        unk_rate = self.unk_tokens / max(self.tokens, 1)
        lines = [
            f"documents: {self.documents['train']} train, {self.documents['eval']} eval "
            f"({self.input_documents} read); sentences: {self.sentences}; tokens: {self.tokens}",
            f"files read: {self.files}, empty files skipped: {self.empty_files}",
            f"blank documents skipped (nothing left after normalization): {self.blank_documents}",
            f"one-sentence documents kept (instance creation decides): {self.single_sentence_documents}",
            f"empty sentences dropped (nothing left after normalization): {self.empty_sentences}",
            f"lines/documents with invalid UTF-8, decoded with U+FFFD: {self.invalid_utf8}",
            f"over-long input lines split: {self.long_lines_split}; "
            f"over-long sentences split at whitespace: {self.long_sentences_split}; "
            f"over-long documents split: {self.long_documents_split}",
            f"<unk> tokens: {self.unk_tokens} ({unk_rate:.3%})",
        ]
        if unk_rate > 0.005:
            lines.append("WARNING: over 0.5% <unk>: the vocabulary does not match this text; train one on it with "
                         "data/train_vocab.py")
        return "\n".join(lines)


def split_sentences(text: str) -> list[str]:
    """Splits a paragraph into sentences with a simple rule (no model, no language data).

    A sentence ends at ".", "!" or "?" (runs included, plus closing quotes or brackets) followed by whitespace and
    then, after any opening quotes or brackets, an uppercase letter or a digit. A "." does not end a sentence after
    a known abbreviation (Mr, Dr, etc, vs, months, ...), a single letter (an initial), or a short dotted
    abbreviation such as "e.g", "i.e", "U.S". Text without such boundaries is one sentence.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        following = match.end()
        while following < len(text) and text[following] in _OPENERS:
            following += 1
        if following >= len(text) or not (text[following].isupper() or text[following].isdigit()):
            continue
        if text[match.start()] == "." and _is_abbreviation(text[start:match.start()]):
            continue
        sentences.append(text[start:match.end()])
        start = match.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def _is_abbreviation(before_period: str) -> bool:
    word = before_period.rsplit(None, 1)[-1].lstrip(_OPENERS) if before_period.strip() else ""
    return (word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
            or ("." in word and _SHORT_DOTTED.fullmatch(word) is not None))


def split_long_sentence(sentence: str, max_chars: int) -> list[str]:
    """Cuts a sentence longer than `max_chars` at the last space before the limit (or at the limit)."""
    pieces = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    return pieces + [sentence] if sentence else pieces


@dataclasses.dataclass(frozen=True)
class RawDocument:
    """A document as read: `lines` are sentences, or paragraphs still to be split when `paragraphs` is True."""

    lines: tuple[str, ...]
    paragraphs: bool

    def sentences(self) -> list[str]:
        """The document's sentences, stripped, without empty ones."""
        if self.paragraphs:
            return [s for line in self.lines for s in split_sentences(line)]
        return [line.strip() for line in self.lines if line.strip()]


def _decode(raw: bytes, stats: CorpusStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8 += 1
        return raw.decode("utf-8", errors="replace")


def _utf8_boundary(chunk: bytes) -> int:
    """Where to cut `chunk` without splitting a UTF-8 character: before its last character if that is non-ASCII."""
    start = len(chunk) - 1
    while start > 0 and chunk[start] & 0xC0 == 0x80:
        start -= 1
    return start if chunk[start] >= 0xC0 and start > 0 else len(chunk)


def read_lines(path: str, stats: CorpusStats, advance: Advance = lambda n: None,
               max_line_bytes: int = 1 << 20) -> Iterator[str]:
    """Decoded lines of a file, reading at most ~2 * `max_line_bytes` at a time.

    A longer line is yielded in pieces cut at a space (or at a UTF-8 character boundary) and counted once in
    `long_lines_split`; invalid UTF-8 is decoded with U+FFFD and counted per line in `invalid_utf8`.
    """
    with open(path, "rb") as handle:
        carry, in_long_line = b"", False
        while True:
            part = handle.readline(max_line_bytes)
            advance(len(part))
            chunk, carry = carry + part, b""
            if not chunk:
                return
            if len(part) == max_line_bytes and not part.endswith(b"\n"):
                stats.long_lines_split += not in_long_line
                in_long_line = True
                cut = chunk.rfind(b" ", len(chunk) // 2) + 1 or _utf8_boundary(chunk)
                chunk, carry = chunk[:cut], chunk[cut:]
            else:
                in_long_line = False
            yield _decode(chunk, stats)


@dataclasses.dataclass(frozen=True)
class TextFiles:
    """Local text files: `fmt` "sentences" (one per line, blank line between documents) or "documents" (one per
    line). A line over `max_line_bytes` is cut into several (see `read_lines`); a document over
    `max_document_chars` is cut into several, so that no input holds more than that in memory."""

    paths: tuple[str, ...]
    fmt: str = "sentences"
    max_line_bytes: int = 1 << 20
    max_document_chars: int = 1 << 23

    def __post_init__(self) -> None:
        if self.fmt not in ("sentences", "documents"):
            raise ValueError(f"text format must be 'sentences' or 'documents', not {self.fmt!r}")
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing or not self.paths:
            raise FileNotFoundError(f"input text files not found: {missing or 'none given'}")

    def progress_total(self) -> tuple[int, str]:
        return sum(os.path.getsize(p) for p in self.paths), "B"

    def documents(self, stats: CorpusStats, advance: Advance = lambda n: None) -> Iterator[RawDocument]:
        for path in self.paths:
            stats.files += 1
            found = 0
            for document in self._file_documents(path, stats, advance):
                found += 1
                yield document
            stats.empty_files += found == 0

    def _file_documents(self, path: str, stats: CorpusStats, advance: Advance) -> Iterator[RawDocument]:
        lines = read_lines(path, stats, advance, self.max_line_bytes)
        if self.fmt == "documents":
            yield from (RawDocument((line,), paragraphs=True) for line in lines)
            return
        current: list[str] = []
        chars = 0
        for line in lines:
            if line.strip():
                current.append(line)
                chars += len(line)
            if current and (not line.strip() or chars > self.max_document_chars):
                stats.long_documents_split += chars > self.max_document_chars
                yield RawDocument(tuple(current), paragraphs=False)
                current, chars = [], 0
        if current:
            yield RawDocument(tuple(current), paragraphs=False)


@dataclasses.dataclass(frozen=True)
class TfdsCorpus:
    """A prepared TFDS dataset (catalog or local builder) read from `data_dir`; one example is one document."""

    name: str
    data_dir: str | None = None
    split: str = "train"
    text_feature: str = "text"
    sentences: str = "rule"

    def __post_init__(self) -> None:
        if self.sentences not in ("rule", "lines"):
            raise ValueError(f"TFDS sentence mode must be 'rule' or 'lines', not {self.sentences!r}")

    def _builder(self):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except Exception as error:
            raise FileNotFoundError(f"TFDS dataset {self.name!r} is not available in data_dir {self.data_dir!r} "
                                    f"({error}); prepare it first (e.g. `tfds build {self.name} --data_dir ...`)"
                                    ) from error
        if not builder.is_prepared():
            raise FileNotFoundError(f"TFDS dataset {self.name!r} is not prepared in {builder.data_dir}; prepare it "
                                    f"with `tfds build` or builder.download_and_prepare()")
        features = list(builder.info.features.keys())
        if self.text_feature not in features:
            raise ValueError(f"TFDS dataset {self.name!r} has no feature {self.text_feature!r}; its features are "
                             f"{features}: pass one of them as the text feature")
        return builder

    def progress_total(self) -> tuple[int, str]:
        return self._builder().info.splits[self.split].num_examples, "doc"

    def documents(self, stats: CorpusStats, advance: Advance = lambda n: None) -> Iterator[RawDocument]:
        import tensorflow_datasets as tfds

        builder = self._builder()
        stats.files += 1
        if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            source = builder.as_data_source(self.split)
            examples = (source[i] for i in range(len(source)))
        else:
            examples = tfds.as_numpy(builder.as_dataset(split=self.split, shuffle_files=False))
        for example in examples:
            advance(1)
            value = example[self.text_feature]
            text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
            stats.invalid_utf8 += "\ufffd" in text
            yield RawDocument(tuple(text.split("\n")), paragraphs=self.sentences == "rule")


def is_eval_document(sentences: Sequence[str], eval_fraction: float) -> bool:
    """Stable split assignment: True when the document's hash (blake2b of its sentences) is below the fraction."""
    digest = hashlib.blake2b("\n".join(sentences).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < eval_fraction


class DocumentProcessor:
    """Turns raw documents into (split, record) pairs: sentence split, hash split, normalize, tokenize, encode."""

    def __init__(self, vocab_path: str, eval_fraction: float, max_sentence_chars: int) -> None:
        self.tokenizer = Tokenizer(vocab_path)
        self.eval_fraction = eval_fraction
        self.max_sentence_chars = max_sentence_chars

    def __call__(self, raw_documents: Sequence[RawDocument]) -> tuple[list[tuple[str, bytes]], CorpusStats]:
        stats = CorpusStats()
        documents, flat = [], []
        for raw in raw_documents:
            sentences = raw.sentences()
            split = "eval" if is_eval_document(sentences, self.eval_fraction) else "train"
            pieces = []
            for sentence in sentences:
                cut = split_long_sentence(sentence, self.max_sentence_chars)
                stats.long_sentences_split += len(cut) > 1
                pieces.extend(cut)
            documents.append((split, len(pieces)))
            flat.extend(pieces)
        ids = iter(self.tokenizer.encode_batch(flat))
        records = []
        for split, count in documents:
            stats.input_documents += 1
            sentences = [next(ids) for _ in range(count)]
            stats.empty_sentences += sum(not s for s in sentences)
            sentences = [s for s in sentences if s]
            if not sentences:
                stats.blank_documents += 1
                continue
            stats.single_sentence_documents += len(sentences) == 1
            stats.sentences += len(sentences)
            stats.tokens += sum(len(s) for s in sentences)
            stats.unk_tokens += sum(s.count(self.tokenizer.unk_id) for s in sentences)
            stats.documents[split] += 1
            records.append((split, encode_document(sentences)))
        return records, stats


_WORKER: DocumentProcessor | None = None


def _init_worker(vocab_path: str, eval_fraction: float, max_sentence_chars: int) -> None:
    global _WORKER
    _WORKER = DocumentProcessor(vocab_path, eval_fraction, max_sentence_chars)


def _run_worker(raw_documents: Sequence[RawDocument]) -> tuple[list[tuple[str, bytes]], CorpusStats]:
    assert _WORKER is not None, "worker used before _init_worker"
    return _WORKER(raw_documents)


class _ShardWriter:
    """Writes records of one split into `<split>-NNNNN.array_record` files of about `shard_bytes` each."""

    def __init__(self, output_dir: str, split: str, shard_bytes: int) -> None:
        self.output_dir, self.split, self.shard_bytes = output_dir, split, shard_bytes
        self.files: list[str] = []
        self._writer, self._written = None, 0

    def write(self, record: bytes) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        if self._writer is None or self._written >= self.shard_bytes:
            self.close()
            name = f"{self.split}-{len(self.files):05d}.array_record"
            self._writer = ArrayRecordWriter(os.path.join(self.output_dir, name), "group_size:1")
            self.files.append(name)
            self._written = 0
        self._writer.write(record)
        self._written += len(record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _chunks(items: Iterable[RawDocument], max_documents: int, max_chars: int = 1 << 22
            ) -> Iterator[list[RawDocument]]:
    """Groups documents for the workers, at most `max_documents` or about `max_chars` characters per group."""
    chunk: list[RawDocument] = []
    chars = 0
    for item in items:
        chunk.append(item)
        chars += sum(len(line) for line in item.lines)
        if len(chunk) == max_documents or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _processed(chunks: Iterator[list[RawDocument]], init_args: tuple, workers: int
               ) -> Iterator[tuple[list[tuple[str, bytes]], CorpusStats]]:
    """Processes chunks in order, inline or on `workers` spawned processes with at most 2 chunks each in flight."""
    if workers <= 1:
        processor = DocumentProcessor(*init_args)
        yield from (processor(chunk) for chunk in chunks)
        return
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, init_args) as pool:
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_run_worker, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def prepare_corpus(source: TextFiles | TfdsCorpus, vocab_path: str, output_dir: str, *, eval_fraction: float = 0.01,
                   workers: int = 1, chunk_documents: int = 256, max_sentence_chars: int = 2000,
                   shard_bytes: int = 256 << 20, overwrite: bool = False, progress: bool = True) -> dict:
    """Tokenizes `source` into train/eval ArrayRecord files under `output_dir`; returns the corpus.json contents.

    Raises `VocabError` for a missing or non-ALBERT vocabulary, FileExistsError when `output_dir` already holds a
    prepared corpus and `overwrite` is False, and `EmptyCorpusError` when a split ends up without documents.
    """
    from tqdm import tqdm

    tokenizer = Tokenizer(vocab_path)
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), not {eval_fraction}")
    info_path = os.path.join(output_dir, CORPUS_INFO)
    if os.path.exists(info_path) and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a prepared corpus ({info_path}); pass overwrite=True "
                              f"(--overwrite) to replace it")
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):
        if name == CORPUS_INFO or name.endswith(".array_record"):
            os.remove(os.path.join(output_dir, name))
    stats = CorpusStats()
    writers = {split: _ShardWriter(output_dir, split, shard_bytes) for split in SPLITS}
    total, unit = source.progress_total()
    with tqdm(total=total, unit=unit, unit_scale=unit == "B", disable=not progress, desc="preparing") as bar:
        chunks = _chunks(source.documents(stats, bar.update), chunk_documents)
        for records, chunk_stats in _processed(chunks, (vocab_path, eval_fraction, max_sentence_chars), workers):
            stats.merge(chunk_stats)
            for split, record in records:
                writers[split].write(record)
            bar.set_postfix(docs=stats.input_documents, refresh=False)
    for writer in writers.values():
        writer.close()
    wanted = SPLITS if eval_fraction > 0 else ("train",)
    for split in wanted:
        if stats.documents[split] == 0:
            for name in writers["train"].files + writers["eval"].files:
                os.remove(os.path.join(output_dir, name))
            raise EmptyCorpusError(
                f"no {split} documents after preparing {source}:\n{stats.report()}\nCheck the input paths and "
                f"format" + (", or raise eval_fraction (or set it to 0 for no eval split)" if split == "eval" else ""))
    info = {
        "format": FORMAT_VERSION,
        "vocab": {"path": os.path.abspath(vocab_path), "sha256": tokenizer.sha256(),
                  "vocab_size": tokenizer.vocab_size},
        "source": repr(source),
        "eval_fraction": eval_fraction,
        "splits": {split: {"files": writers[split].files, "documents": stats.documents[split]}
                   for split in SPLITS},
        "stats": dataclasses.asdict(stats),
    }
    with open(info_path + ".tmp", "w") as handle:
        json.dump(info, handle, indent=1)
    os.replace(info_path + ".tmp", info_path)
    return info


def load_corpus_info(output_dir: str, tokenizer: Tokenizer | None = None) -> dict:
    """Reads corpus.json; with a tokenizer, raises ValueError unless the corpus was made with that vocabulary."""
    path = os.path.join(output_dir, CORPUS_INFO)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: prepare the corpus with data/prepare.py (or "
                                f"data/demo_corpus.py for the demo)")
    with open(path) as handle:
        info = json.load(handle)
    if info.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has format {info.get('format')!r}, expected {FORMAT_VERSION!r}; prepare it again")
    if tokenizer is not None and tokenizer.sha256() != info["vocab"]["sha256"]:
        raise ValueError(f"corpus {output_dir} was tokenized with {info['vocab']['path']} (sha256 "
                         f"{info['vocab']['sha256'][:12]}...), not with {tokenizer.path}; use that vocabulary or "
                         f"prepare the corpus again with data/prepare.py --vocab {tokenizer.path}")
    return info


def corpus_files(output_dir: str, split: str) -> list[str]:
    """Paths of a prepared split's ArrayRecord files, in order."""
    info = load_corpus_info(output_dir)
    return [os.path.join(output_dir, name) for name in info["splits"][split]["files"]]
