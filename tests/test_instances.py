"""Instance creation: layout, trimming against the original's token-at-a-time loop, SOP/NSP/none objectives,
single-segment policies, bad input, determinism across shards and workers, and the static/dynamic writers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from albert_jax.input.documents import encode_document
from albert_jax.input.instances import InstanceConfig, InstanceCounts, InstanceMaker, trim_pair
from albert_jax.input.masking import MaskingConfig
from albert_jax.input.records import (KIND_IN_ORDER, KIND_RANDOM_NEXT, KIND_SINGLE, KIND_SWAPPED, SpecialIds,
                                      decode_examples, decode_instances)
from albert_jax.input.write_instances import EmptyDatasetError, write_instances

SPECIAL = SpecialIds()
VOCAB = 60_000  # above the largest id of make_documents' unique tokens


class RandomAccessOnly:
    """A record source offering only len() and indexing: proves instance creation never iterates a corpus."""

    def __init__(self, records: list[bytes]):
        self._records = records
        self.reads = 0

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> bytes:
        self.reads += 1
        return self._records[index]


def make_documents(count: int, seed: int, max_sentences: int = 12, max_len: int = 40) -> list[list[np.ndarray]]:
    """Documents of unique token ids (every token occurs once in the corpus), so that any segment can be
    traced back to its document and position."""
    rng = np.random.default_rng(seed)
    docs, next_id = [], 5
    for _ in range(count):
        sentences = []
        for _ in range(int(rng.integers(1, max_sentences + 1))):
            n = int(rng.integers(1, max_len + 1))
            sentences.append(np.arange(next_id, next_id + n, dtype=np.int32))
            next_id += n
        docs.append(sentences)
    return docs


def split_instance(instance) -> tuple[np.ndarray, np.ndarray]:
    tokens, a_end = instance.tokens, instance.a_end
    assert tokens[0] == SPECIAL.cls and tokens[a_end - 1] == SPECIAL.sep and tokens[-1] == SPECIAL.sep
    return tokens[1:a_end - 1], tokens[a_end:-1]


def original_trim(la: int, lb: int, max_tokens: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The original truncate_seq_pair loop: returns (front_a, back_a, front_b, back_b) removals."""
    cuts = [0, 0, 0, 0]
    while la + lb > max_tokens:
        trim_a = la > lb
        front = rng.random() < 0.5
        cuts[(0 if trim_a else 2) + (0 if front else 1)] += 1
        if trim_a:
            la -= 1
        else:
            lb -= 1
    return tuple(cuts)


def test_trim_pair_matches_the_original_loop():
    rng = np.random.default_rng(0)
    for la in range(1, 30):
        for lb in range(1, 30):
            for max_tokens in (2, 7, 20, 40):
                a, b = trim_pair(np.arange(la), np.arange(100, 100 + lb), max_tokens, rng)
                cuts = original_trim(la, lb, max_tokens, rng)
                assert (a.size, b.size) == (la - cuts[0] - cuts[1], lb - cuts[2] - cuts[3])
                assert a.size >= 1 and b.size >= 1
                # Contiguous pieces of the originals.
                assert np.array_equal(a, np.arange(a[0], a[0] + a.size))
                assert np.array_equal(b, np.arange(b[0], b[0] + b.size))
    fronts = [trim_pair(np.arange(50), np.arange(1), 11, rng)[0][0] for _ in range(4000)]
    assert abs(np.mean(fronts) - 20) < 0.5  # Binomial(40, 1/2) tokens cut from the front


def check_layout(instances, docs, max_seq_length):
    """[CLS] A [SEP] B [SEP], lengths, and where A/B come from, for every kind."""
    flat = [np.concatenate(d) for d in docs]
    owner = {int(t): i for i, f in enumerate(flat) for t in f}
    for inst in instances:
        assert inst.tokens.size <= max_seq_length and inst.tokens.dtype == np.int32
        if inst.kind == KIND_SINGLE:
            assert inst.a_end == inst.tokens.size and inst.label == 0
            continue
        a, b = split_instance(inst)
        assert a.size >= 1 and b.size >= 1 and inst.tokens.size == a.size + b.size + 3
        for seg in (a, b):
            assert np.all(np.diff(seg) == 1), "a segment is a contiguous piece of one document"
        same_doc = owner[int(a[0])] == owner[int(b[0])]
        if inst.kind == KIND_IN_ORDER:
            assert inst.label == 0 and same_doc and a[-1] < b[0]
        elif inst.kind == KIND_SWAPPED:
            assert inst.label == 1 and same_doc and b[-1] < a[0]
        else:
            assert inst.kind == KIND_RANDOM_NEXT and inst.label == 1 and not same_doc


@pytest.mark.parametrize("objective", ["sop", "nsp"])
def test_pairs_layout_and_label_balance(objective):
    docs = make_documents(400, seed=1)
    source = RandomAccessOnly([encode_document(d) for d in docs])
    config = InstanceConfig(max_seq_length=64, sentence_objective=objective, single_segment_policy="skip")
    maker = InstanceMaker(source, config, seed=3)
    counts = InstanceCounts()
    instances = [i for d in range(len(docs)) for i in maker.document_instances(d, 0, counts)]
    check_layout(instances, docs, 64)
    negative = KIND_SWAPPED if objective == "sop" else KIND_RANDOM_NEXT
    kinds = np.bincount([i.kind for i in instances], minlength=4)
    decided = kinds[KIND_IN_ORDER] + kinds[negative]
    assert abs(kinds[negative] - decided / 2) <= 4.5 * np.sqrt(decided / 4)
    assert counts.instances == len(instances) and counts.kinds == kinds.tolist()
    assert counts.skipped_chunks == counts.single_segment_chunks > 0


def test_segments_cover_the_document_in_order_without_trimming():
    """SOP chunks (no trimming needed) reassemble the document's sentences exactly, in order."""
    docs = make_documents(50, seed=2, max_len=8)
    source = [encode_document(d) for d in docs]
    maker = InstanceMaker(source, InstanceConfig(max_seq_length=512, short_seq_prob=0.0,
                                                 single_segment_policy="keep_in_order"), seed=0)
    for d, doc in enumerate(docs):
        pieces = []
        for inst in maker.document_instances(d):
            a, b = split_instance(inst) if inst.kind != KIND_SINGLE else (inst.tokens[1:-1], np.zeros(0, int))
            pieces += [b, a] if inst.kind == KIND_SWAPPED else [a, b]
        assert np.array_equal(np.concatenate(pieces), np.concatenate(doc))


def test_single_segment_policies():
    docs = [[np.arange(10, 30)] for _ in range(30)]  # one sentence each
    source = [encode_document(d) for d in docs]
    for policy, kind, label in (("reference", KIND_RANDOM_NEXT, 1), ("keep_in_order", KIND_SINGLE, 0)):
        maker = InstanceMaker(source, InstanceConfig(max_seq_length=32, single_segment_policy=policy), seed=1)
        counts = InstanceCounts()
        out = maker.document_instances(0, 0, counts)
        assert len(out) == 1 and out[0].kind == kind and out[0].label == label
        assert counts.single_segment_chunks == 1 and counts.single_sentence_documents == 1
    single = InstanceMaker(source, InstanceConfig(max_seq_length=32, single_segment_policy="keep_in_order"))
    inst = single.document_instances(3)[0]
    assert inst.tokens.size == 22 and inst.a_end == 22  # [CLS] 20 tokens [SEP], all segment 0
    counts = InstanceCounts()
    skip = InstanceMaker(source, InstanceConfig(max_seq_length=32, single_segment_policy="skip"))
    assert skip.document_instances(0, 0, counts) == [] and counts.skipped_chunks == 1
    # 'reference' with no other usable document: skipped and counted, not an error.
    alone = InstanceMaker(source[:1], InstanceConfig(max_seq_length=32))
    counts = InstanceCounts()
    assert alone.document_instances(0, 0, counts) == [] and counts.skipped_chunks == 1


def test_objective_none_is_one_segment():
    docs = make_documents(40, seed=4)
    maker = InstanceMaker([encode_document(d) for d in docs], InstanceConfig(max_seq_length=48,
                                                                            sentence_objective="none"))
    out = [i for d in range(40) for i in maker.document_instances(d)]
    assert out and all(i.kind == KIND_SINGLE and i.label == 0 and i.a_end == i.tokens.size <= 48 for i in out)


def test_short_sequence_probability():
    """Every chunk but a document's last fills the target; with short_seq_prob p a fraction ~p of them gets a
    shorter random target (drawn per chunk)."""
    docs = make_documents(200, seed=5, max_sentences=200, max_len=10)
    source = [encode_document(d) for d in docs]

    def short_fraction(p: float) -> tuple[float, int]:
        maker = InstanceMaker(source, InstanceConfig(max_seq_length=128, short_seq_prob=p,
                                                     single_segment_policy="keep_in_order"), seed=2)
        lengths = [[i.tokens.size for i in maker.document_instances(d)][:-1] for d in range(200)]
        flat = np.concatenate(lengths)
        return float(np.mean(flat < 128)), flat.size

    assert short_fraction(0.0)[0] == 0.0
    assert short_fraction(1.0)[0] > 0.9
    fraction, n = short_fraction(0.1)
    assert n > 600 and 0.05 < fraction < 0.13, (n, fraction)


def test_bad_input_is_counted_not_fatal():
    good = make_documents(5, seed=6)
    records = [encode_document(d) for d in good] + [
        b"", b"\x01\x02\x03", encode_document([]), encode_document([[], []]),
        encode_document([[], np.arange(5, 9), []]), np.asarray([5, 1, 2], "<i4").tobytes(),
        encode_document([[7, 8, VOCAB + 3]])]
    maker = InstanceMaker(records, InstanceConfig(max_seq_length=64), seed=0, vocab_size=VOCAB)
    counts = InstanceCounts()
    for d in range(len(records)):
        maker.document_instances(d, 0, counts)
    assert counts.documents == len(records)
    assert counts.corrupt_documents == 4 and counts.empty_documents == 2
    assert counts.blank_sentences == 4 and counts.instances > 0


def test_writer_errors_on_empty_dataset(tmp_path):
    with pytest.raises(EmptyDatasetError, match="no instances"):
        write_instances([b"junk", encode_document([])], str(tmp_path / "out"), vocab_size=VOCAB,
                        instance_config=InstanceConfig(max_seq_length=32))
    with pytest.raises(EmptyDatasetError, match="no input"):
        write_instances([], str(tmp_path / "out"), vocab_size=VOCAB)
    with pytest.raises(FileNotFoundError):
        write_instances([str(tmp_path / "missing.array_record")], str(tmp_path / "out"), vocab_size=VOCAB)


def write_documents(path: str, docs: list[list[np.ndarray]]) -> str:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(path, "group_size:1")
    for doc in docs:
        writer.write(encode_document(doc))
    writer.close()
    return path


def read_all(directory: str, meta: dict) -> list[bytes]:
    import grain

    source = grain.sources.ArrayRecordDataSource([os.path.join(directory, f) for f in meta["files"]])
    return [source[i] for i in range(len(source))]


def test_writers_deterministic_across_shards_and_workers(tmp_path):
    docs = make_documents(120, seed=7)
    path = write_documents(str(tmp_path / "docs.array_record"), docs)
    word_start = np.random.default_rng(0).random(VOCAB) < 0.7
    common = dict(vocab_size=VOCAB, word_start=word_start, seed=9,
                  instance_config=InstanceConfig(max_seq_length=96), masking_config=MaskingConfig())
    one = write_instances([path], str(tmp_path / "one"), mode="static", dupe_factor=2, **common)
    three = write_instances([path], str(tmp_path / "three"), mode="static", dupe_factor=2, num_shards=3,
                            num_workers=2, **common)
    a, b = read_all(str(tmp_path / "one"), one), read_all(str(tmp_path / "three"), three)
    assert len(a) == one["num_records"] == three["num_records"] and sorted(a) == sorted(b)
    assert one["counts"]["documents"] == 120 and one["counts"]["instances"] == len(a)
    batch = decode_examples(a, 96, 20, 3)
    assert batch["valid"].all()
    assert np.all(batch["masked_lm_weights"].sum(1) <= 20) and batch["masked_lm_weights"].sum() > 0
    dynamic = write_instances([path], str(tmp_path / "dynamic"), mode="dynamic", **common)
    records = read_all(str(tmp_path / "dynamic"), dynamic)
    decoded = decode_instances(records, 96)
    assert decoded["valid"].all() and np.all(decoded["input_ids"][:, 0] == SPECIAL.cls)
    assert np.all((decoded["segment_ids"] <= decoded["input_mask"]))
    assert os.path.isfile(tmp_path / "dynamic" / "word_start.npy")
    # The static copy 0 holds exactly the dynamic instances, masked.
    static_ids = decode_examples(a, 96, 20, 3)
    restored = static_ids["input_ids"].copy()
    rows, slots = np.nonzero(static_ids["masked_lm_weights"])
    restored[rows, static_ids["masked_lm_positions"][rows, slots]] = static_ids["masked_lm_ids"][rows, slots]
    copy0 = {row.tobytes() for row in restored[:len(records)]}
    assert copy0 == {row.tobytes() for row in decoded["input_ids"]}
    # The second copy is cut (short targets, split points, swaps) and masked differently.
    copy1 = {row.tobytes() for row in restored[len(records):]}
    assert len(copy0 ^ copy1) > len(copy0) // 2


def test_config_validation():
    with pytest.raises(ValueError, match="sentence_objective"):
        InstanceConfig(sentence_objective="sbo")
    with pytest.raises(ValueError, match="single_segment_policy"):
        InstanceConfig(single_segment_policy="drop")
    with pytest.raises(ValueError, match="max_seq_length"):
        InstanceConfig(max_seq_length=4)


def test_command_line(tmp_path, clean_gin):
    from albert_jax.jobs import cli

    docs = write_documents(str(tmp_path / "docs.array_record"), make_documents(30, seed=8))
    table = tmp_path / "word_start.npy"
    np.save(table, np.ones(VOCAB, bool))
    assert cli.main(["data", "instances", "--input", docs, "--output_dir", str(tmp_path / "out"),
                     "--word_start", str(table), "--mode", "static", "--num_workers", "1", "--dupe_factor", "2",
                     "--writer_options", "group_size:1,uncompressed",
                     "--gin.InstanceConfig.max_seq_length=48", "--gin.MaskingConfig.max_predictions_per_seq=7"]) == 0
    with open(tmp_path / "out" / "meta.json") as f:
        meta = json.load(f)
    assert meta["mode"] == "static" and meta["max_seq_length"] == 48 and meta["dupe_factor"] == 2
    assert meta["masking_config"]["max_predictions_per_seq"] == 7
    assert os.path.isfile(tmp_path / "out" / "meta.json")
    with pytest.raises(ValueError, match="group_size"):
        write_instances([docs], str(tmp_path / "bad"), vocab_size=VOCAB, writer_options="group_size:10")
