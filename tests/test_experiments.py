"""The gin library: every experiment file parses, every binding carries its one-line comment, and
`launch.py --describe` reports the reference numbers without allocating the model."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import gin
import pytest

from albert_jax import gin_setup
from albert_jax.config import AlbertConfig
from albert_jax.describe import train_flops_per_token
from albert_jax.jobs import configurables

configurables.register_all()  # this file must pass alone, not only after other tests imported the jobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")
FILES = sorted(os.path.relpath(p, EXPERIMENTS) for p in glob.glob(os.path.join(EXPERIMENTS, "**", "*.gin"),
                                                                   recursive=True))
# Macros some files require from the user (placeholders here).
REQUIRED_MACROS = ["TEXT_FILES = ['/tmp/x.txt']", "TFDS_DATA_DIR = '/tmp/tfds'", "VOCAB = '/tmp/v.model'",
                   "DATA_CACHE = '/tmp/cache'", "TRAIN_DIR = '/tmp/train'", "EVAL_DIR = '/tmp/eval'", "SLICES = 1"]


def test_the_library_is_complete():
    for needed in ["demo.gin", "base.gin", "corpus/demo.gin", "corpus/text.gin", "corpus/wikipedia.gin",
                   "corpus/c4.gin", "objective/sop.gin", "objective/nsp.gin", "objective/none.gin",
                   "masking/ngram3.gin", "masking/token.gin", "optim/lamb.gin", "optim/adamw.gin", "scale/demo.gin",
                   "scale/tiny.gin", "scale/paper.gin", "mesh/fsdp.gin", "mesh/pod_multislice.gin"]:
        assert needed in FILES, needed


@pytest.mark.parametrize("name", FILES)
def test_every_binding_has_a_comment(name):
    for number, line in enumerate(open(os.path.join(EXPERIMENTS, name)), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("include "):
            continue
        assert re.search(r"\s#\s*\S", line), f"{name}:{number} binding without a comment: {line}"


@pytest.mark.parametrize("name", FILES)
def test_every_file_parses(name):
    try:
        gin_setup.parse([name], REQUIRED_MACROS)
        AlbertConfig()
    finally:
        gin.clear_config()


def test_later_bindings_win_and_bad_names_are_explained():
    try:
        gin_setup.parse(["models/albert_base.gin", "models/tiny.gin"], ["AlbertConfig.num_hidden_layers = 7"])
        config = AlbertConfig()
        assert (config.hidden_size, config.num_hidden_layers) == (128, 7)
        with pytest.raises(gin_setup.GinConfigError, match=r"embeding_size.*AlbertConfig\.embedding_size"):
            gin_setup.parse(["models/tiny.gin"], ["AlbertConfig.embeding_size = 3"])
        with pytest.raises(gin_setup.GinConfigError, match="not found"):
            gin_setup.parse(["models/no_such.gin"], [])
    finally:
        gin.clear_config()


def describe(preset: str) -> dict:
    out = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), f"--gin_file=models/{preset}.gin",
                          "--describe"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def reference_flops(layers: int, hidden: int, ffn: int, seq: int) -> float:
    """Reference section 6: 6 L (4 H^2 + 2 H FFN) + 12 L S H per token, heads excluded."""
    return 6 * layers * (4 * hidden**2 + 2 * hidden * ffn) + 12 * layers * seq * hidden


def test_describe_xxlarge_and_bert_large():
    xxlarge, bert_large = describe("albert_xxlarge"), describe("bert_large")
    assert (xxlarge["params"], xxlarge["params_with_heads"]) == (222_595_584, 223_158_450)
    assert (bert_large["params"], bert_large["params_with_heads"]) == (334_607_360, 335_691_058)
    assert sum(xxlarge["components"].values()) == xxlarge["params_with_heads"]
    for report, (layers, hidden, ffn) in ((xxlarge, (12, 4096, 16384)), (bert_large, (24, 1024, 4096))):
        body = reference_flops(layers, hidden, ffn, 512)
        assert body <= report["train_flops_per_token"] <= body * 1.02  # heads, projection: under 2%
    ratio = xxlarge["train_flops_per_token"] / bert_large["train_flops_per_token"]
    assert 7.2 < ratio < 7.6, ratio  # the reference: ~7.4x BERT-large per token


def test_flops_count_masked_positions_only_once():
    config = AlbertConfig()
    more = train_flops_per_token(config, 512, 40) - train_flops_per_token(config, 512, 20)
    per_prediction = 6 * (config.hidden_size * config.embedding_size + config.embedding_size * config.vocab_size)
    assert abs(more - 20 * per_prediction / 512) < 1.0
