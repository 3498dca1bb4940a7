"""Small synthetic SQuAD- and RACE-format sets built from a text corpus (the demo corpus), for tests and demos.

No SQuAD or RACE data is reachable offline, so these sets check that the readers, features, heads and metrics
learn end to end. The corpus is a text file with one sentence per line and a blank line between documents
(`input/demo_corpus.py` writes one). A paragraph is `min_sentences`-`max_sentences` (default 2-4, RACE 2-5) consecutive sentences of one
document.

SQuAD: a question is one sentence of the paragraph with 1-2 consecutive plain words (letters and digits,
whitespace on both sides, not a stop word) replaced by "what"; the answer is that span of the paragraph.
Unanswerable questions (v2.0) take the sentence from another document, so its text is not in the paragraph.
RACE: the article is a paragraph; a question is one of its sentences with a span replaced by "_"; the options are that span and three spans of the same word count drawn
from other documents whose words do not occur in the article; the level is 'middle' for paragraphs of at most
three sentences, else 'high'. Documents are split between train and dev (every `dev_every`-th goes to dev).
`albert-jax data synthetic-qa` writes them.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Sequence

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9]{2,}")
_WORD = re.compile(r"\S+")
STOP_WORDS = frozenset("the and for with that this are from was were you your can not but all any has have use "
                       "used which when will into its also may more one".split())


def read_documents(text_path: str | Path, min_words: int = 6, max_words: int = 30) -> list[list[str]]:
    """Documents as lists of sentences of `min_words`..`max_words` words (others dropped)."""
    documents = []
    for block in Path(text_path).read_text(encoding="utf-8").split("\n\n"):
        sentences = [s.strip() for s in block.splitlines() if min_words <= len(s.split()) <= max_words]
        if len(sentences) >= 2:
            documents.append(sentences)
    if not documents:
        raise ValueError(f"{text_path} has no documents of two or more usable sentences")
    return documents


def _spans(sentence: str, words: int) -> list[tuple[int, int]]:
    """Character spans of `words` consecutive plain, non-stop words separated by single spaces."""
    tokens = [(m.start(), m.end()) for m in _WORD.finditer(sentence)]
    found = []
    for i in range(len(tokens) - words + 1):
        group = tokens[i:i + words]
        texts = [sentence[a:b] for a, b in group]
        if all(_PLAIN.fullmatch(t) and t.lower() not in STOP_WORDS for t in texts) and all(
                group[j + 1][0] == group[j][1] + 1 for j in range(words - 1)):
            found.append((group[0][0], group[-1][1]))
    return found


def _paragraph(rng: random.Random, document: list[str], max_sentences: int,
               min_sentences: int = 2) -> tuple[list[str], str]:
    count = rng.randint(min(min_sentences, len(document)), min(max_sentences, len(document)))
    start = rng.randint(0, len(document) - count)
    sentences = document[start:start + count]
    return sentences, " ".join(sentences)


def _blank(rng: random.Random, sentence: str) -> tuple[int, int] | None:
    words = rng.choice((1, 1, 2))
    spans = _spans(sentence, words) or _spans(sentence, 1)
    return rng.choice(spans) if spans else None


def squad_set(documents: Sequence[list[str]], questions: int, seed: int, unanswerable: float = 0.0,
              max_sentences: int = 4, name: str = "synthetic", min_sentences: int = 2) -> dict:
    """An official-format SQuAD dict (v2.0 fields when `unanswerable` > 0) of `questions` questions."""
    rng = random.Random(seed)
    articles: list[dict] = []
    made = 0
    while made < questions:
        doc_index = rng.randrange(len(documents))
        sentences, context = _paragraph(rng, documents[doc_index], max_sentences, min_sentences)
        impossible = rng.random() < unanswerable
        source = rng.choice(documents[rng.randrange(len(documents))]) if impossible else rng.choice(sentences)
        if impossible and source in context:
            continue
        span = _blank(rng, source)
        if span is None:
            continue
        answer = source[span[0]:span[1]]
        qa = {"id": f"{name}-{made}", "question": source[:span[0]] + "what" + source[span[1]:]}
        if impossible:
            qa.update(answers=[], is_impossible=True)
        else:
            qa["answers"] = [{"text": answer, "answer_start": context.index(source) + span[0]}]
            if unanswerable > 0:
                qa["is_impossible"] = False
        articles.append({"title": f"document {doc_index}", "paragraphs": [{"context": context, "qas": [qa]}]})
        made += 1
    return {"version": "v2.0" if unanswerable > 0 else "1.1", "data": articles}


def race_articles(documents: Sequence[list[str]], questions: int, seed: int, max_sentences: int = 5,
                  name: str = "synthetic", min_sentences: int = 2) -> list[dict]:
    """RACE-format article records (one question each) with a 'level' key."""
    rng = random.Random(seed)
    records: list[dict] = []
    while len(records) < questions:
        sentences, article = _paragraph(rng, documents[rng.randrange(len(documents))], max_sentences,
                                        min_sentences)
        sentence = rng.choice(sentences)
        span = None if "_" in sentence else _blank(rng, sentence)  # the option fills every "_" of the question
        if span is None:
            continue
        answer = sentence[span[0]:span[1]]
        present = {w.lower() for w in _WORD.findall(article)}
        distractors: list[str] = []
        for _ in range(200):
            if len(distractors) == 3:
                break
            other = rng.choice(documents[rng.randrange(len(documents))])
            candidates = _spans(other, len(answer.split()))
            if not candidates:
                continue
            a, b = rng.choice(candidates)
            text = other[a:b]
            if text not in distractors and text != answer and not {w.lower() for w in text.split()} & present:
                distractors.append(text)
        if len(distractors) < 3:
            continue
        label = rng.randrange(4)
        options = distractors[:label] + [answer] + distractors[label:]
        records.append({"id": f"{name}-{len(records)}", "article": article,
                        "questions": [sentence[:span[0]] + "_" + sentence[span[1]:]], "options": [options],
                        "answers": ["ABCD"[label]], "level": "middle" if len(sentences) <= 3 else "high"})
    return records


def _split(documents: Sequence[list[str]], dev_every: int) -> tuple[list[list[str]], list[list[str]]]:
    return ([d for i, d in enumerate(documents) if i % dev_every], [d for i, d in enumerate(documents)
                                                                   if i % dev_every == 0])


def write_squad(text_path: str | Path, out_dir: str | Path, train: int = 2000, dev: int = 300, seed: int = 0,
                unanswerable: float = 0.0, max_sentences: int = 4, dev_every: int = 10,
                min_sentences: int = 2) -> dict[str, str]:
    """train.json and dev.json in `out_dir`; returns split -> path."""
    train_docs, dev_docs = _split(read_documents(text_path), dev_every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, docs, count, offset in (("train", train_docs, train, 0), ("dev", dev_docs, dev, 1)):
        data = squad_set(docs, count, seed * 2 + offset, unanswerable, max_sentences, name=split,
                         min_sentences=min_sentences)
        paths[split] = str(out / f"{split}.json")
        Path(paths[split]).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return paths


def write_race(text_path: str | Path, out_dir: str | Path, train: int = 2000, dev: int = 300, seed: int = 0,
               max_sentences: int = 5, dev_every: int = 10, min_sentences: int = 2) -> dict[str, str]:
    """`out_dir`/{train,dev}/{middle,high}/<id>.txt, one JSON article per file; returns split -> directory."""
    train_docs, dev_docs = _split(read_documents(text_path), dev_every)
    paths = {}
    for split, docs, count, offset in (("train", train_docs, train, 0), ("dev", dev_docs, dev, 1)):
        root = Path(out_dir) / split
        for level in ("middle", "high"):
            (root / level).mkdir(parents=True, exist_ok=True)
        for record in race_articles(docs, count, seed * 2 + offset, max_sentences, name=split,
                                    min_sentences=min_sentences):
            level = record.pop("level")
            (root / level / f"{record['id']}.txt").write_text(json.dumps(record) + "\n", encoding="utf-8")
        paths[split] = str(root)
    return paths
