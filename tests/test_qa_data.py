"""SQuAD / RACE readers, features and official metrics: hand-worked cases, round trips on the synthetic sets.

Expected metric values below are worked out by hand from the official definitions (comments show the sums).
"""

from __future__ import annotations

import json
from pathlib import Path

import gin
import numpy as np
import pytest

from albert_jax.downstream import families, qa_features, qa_metrics, race, squad, synthetic
from albert_jax.downstream.tasks import TaskError
from albert_jax.input.tokenizer import CLS_ID, SEP_ID, Tokenizer, normalize_text


pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture(scope="module")
def tokenizer(demo_corpus: dict) -> Tokenizer:
    return Tokenizer(demo_corpus["vocab"])


def test_normalization_and_scores_by_hand() -> None:
    assert qa_metrics.normalize_answer("  The Quick,  brown-fox!  ") == "quick brownfox"
    assert qa_metrics.normalize_answer("An apple a day") == "apple day"
    assert qa_metrics.normalize_answer("theory") == "theory"  # articles only as whole words
    # Articles only / punctuation only: both normalize to "", so exact match holds; v1.1 F1 is 0 (no shared
    # token), v2.0 F1 is 1 (both empty).
    assert qa_metrics.exact_match("the", "a") == 1.0 and qa_metrics.token_f1("the", "a") == 0.0
    assert qa_metrics.token_f1("...", "", version_2=True) == 1.0
    assert qa_metrics.token_f1("paris", "", version_2=True) == 0.0
    # "the broncos team" vs "Broncos": P = 1/2, R = 1 -> 2/3; vs "Denver Broncos": P = R = 1/2 -> 1/2.
    assert qa_metrics.token_f1("the broncos team", "Broncos") == pytest.approx(2 / 3)
    assert qa_metrics.token_f1("the broncos team", "Denver Broncos") == pytest.approx(1 / 2)
    # Repeated tokens count per occurrence: [x, x, y] vs [x, y, y] share one x and one y -> P = R = 2/3.
    assert qa_metrics.token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    # Max over golds: q1 EM 1 (second gold), F1 1; q2 EM 0, F1 max(2/3, 1/2).
    golds = {"q1": ["Broncos", "Denver Broncos"], "q2": ["Denver Broncos", "Broncos"]}
    result = qa_metrics.squad_v1(golds, {"q1": "denver broncos.", "q2": "the broncos team"})
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert qa_metrics.squad_v1(golds, {"q1": "Broncos"}) == {"exact_match": 50.0, "f1": 50.0}  # q2 unanswered


def test_squad_v2_metrics_and_best_threshold_by_hand() -> None:
    golds = {"q1": ["Paris"], "q2": [], "q3": [], "q4": ["blue sky"], "q5": ["the"]}
    # q5's only gold normalizes to "", so it counts as unanswerable (the official rule).
    predictions = {"q1": "paris", "q2": "", "q3": "London", "q4": "sky", "q5": ""}
    result = qa_metrics.squad_v2(golds, predictions)
    # exact: q1 1, q2 1, q3 0, q4 0, q5 1 -> 3/5; f1: q4 = 2 * 1 * 1/2 / (1 + 1/2) = 2/3 -> (3 + 2/3) / 5.
    assert result["exact"] == pytest.approx(60.0) and result["f1"] == pytest.approx(100 * (3 + 2 / 3) / 5)
    assert result["HasAns_total"] == 2 and result["HasAns_exact"] == 50.0
    assert result["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["NoAns_total"] == 3 and result["NoAns_exact"] == pytest.approx(200 / 3)
    # Sweep: answers everywhere, no-answer scores below. Start: all "no answer" = 3 correct (q2, q3, q5).
    answers = {"q1": "paris", "q2": "Rome", "q3": "London", "q4": "sky", "q5": "x"}
    odds = {"q1": 0.1, "q4": 0.3, "q3": 0.8, "q2": 0.9, "q5": 0.95}
    swept = qa_metrics.squad_v2(golds, predictions, odds, answers)
    # t=0.1: q1 answers (+1) -> 4; t=0.3: q4 (+0 exact, +2/3 F1); later ones lose 1 each.
    assert swept["best_exact"] == pytest.approx(80.0) and swept["best_exact_thresh"] == 0.1
    assert swept["best_f1"] == pytest.approx(100 * (4 + 2 / 3) / 5) and swept["best_f1_thresh"] == 0.3
    assert swept["exact"] == result["exact"]  # the sweep does not change the scores of `predictions`


def test_race_accuracy_by_hand() -> None:
    result = qa_metrics.race_accuracy([0, 1, 2, 3, 1], [0, 1, 0, 0, 1], ["middle", "middle", "high", "high", "high"])
    assert result["middle_accuracy"] == 1.0 and result["high_accuracy"] == pytest.approx(1 / 3)
    assert result["accuracy"] == pytest.approx(3 / 5) and result["high_questions"] == 3


def test_windows_and_max_context_by_hand() -> None:
    assert qa_features.windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert qa_features.windows(10, 4, 8) == [(0, 4), (4, 4), (8, 2)]  # the stride never skips a piece
    assert qa_features.windows(3, 4, 2) == [(0, 3)]
    spans = qa_features.windows(10, 4, 2)
    # Piece 3: in (0,4) at min(3, 0) = 0, in (2,4) at min(1, 2) = 1 -> window 1.
    owners = [[int(qa_features._max_context(spans, w)[p - spans[w][0]]) for w in range(4)
               if spans[w][0] <= p < spans[w][0] + spans[w][1]] for p in range(10)]
    assert [o.count(1) for o in owners] == [1] * 10
    assert qa_features._max_context(spans, 1).tolist() == [False, True, True, False]


def test_offsets_round_trip(tokenizer: Tokenizer, demo_corpus: dict) -> None:
    text = "Ünïcode  ``quoted'' 1,000,000 x, ﬁle  end."
    ids, spans = tokenizer.encode_with_offsets(text)
    assert ids == tokenizer.encode(text)
    assert [text[a:b + 1] for a, b in spans if text[a:b + 1].strip()][:1] == ["Ünïcode"]
    assert "1" in [text[a:b + 1] for a, b in spans] and "ﬁle" in [text[a:b + 1] for a, b in spans]
    paragraphs = Path(demo_corpus["text"]).read_text().split("\n\n")[:150]
    for paragraph in paragraphs:
        paragraph = paragraph.replace("\n", " ")
        ids, spans = tokenizer.encode_with_offsets(paragraph)
        assert ids == tokenizer.encode(paragraph)
        starts = [a for a, _ in spans]
        assert starts == sorted(starts) and all(a <= b for a, b in spans)
        for (a, b), token in zip(spans, ids):  # each piece's characters normalize to the piece's text
            piece = tokenizer.id_to_piece(token).replace("▁", "")
            if piece and token != tokenizer.unk_id:
                assert normalize_text(paragraph[a:b + 1]) == piece, (paragraph[a:b + 1], piece)


def test_synthetic_answers_recovered_from_pieces(tokenizer: Tokenizer, demo_corpus: dict, tmp_path: Path) -> None:
    """Every gold answer of the synthetic SQuAD set comes back exactly from its pieces, in a window that holds
    it; windows overlap by the stride; unanswerable questions point at [CLS]."""
    paths = synthetic.write_squad(demo_corpus["text"], tmp_path, train=300, dev=50, unanswerable=0.3,
                                  max_sentences=6)
    examples = squad.read_json(paths["train"])
    assert len(examples) == 300 and 50 < sum(e.is_impossible for e in examples) < 150
    features = qa_features.convert(examples, tokenizer, 64, 16, 24)
    assert len(features) > len(examples) + 50  # long paragraphs were split into windows
    recovered = set()
    for window in range(len(features)):
        example = examples[features.example_index[window]]
        ids = features.input_ids[window]
        offset = features.doc_offset[window]
        assert ids[0] == CLS_ID and ids[offset - 1] == SEP_ID and ids[features.lengths[window] - 1] == SEP_ID
        assert (features.segment_ids[window][:offset] == 0).all()
        assert features.p_mask[window][0] == 0 and (features.p_mask[window][1:offset] == 1).all()
        if features.is_impossible[window]:
            assert features.start_positions[window] == features.end_positions[window] == 0
            continue
        text = qa_features.span_text(example, features, window, features.start_positions[window],
                                     features.end_positions[window])
        assert text == example.answers[0][0]
        recovered.add(example.qas_id)
    assert recovered == {e.qas_id for e in examples if not e.is_impossible}


def test_answer_extraction_joins_windows(tokenizer: Tokenizer, demo_corpus: dict, tmp_path: Path) -> None:
    """Logits that single out the gold span in one window give the gold text; the null odds decide v2.0."""
    paths = synthetic.write_squad(demo_corpus["text"], tmp_path, train=60, dev=10, unanswerable=0.3, max_sentences=6)
    examples = squad.read_json(paths["train"])
    features = qa_features.convert(examples, tokenizer, 64, 16, 24)
    length = features.input_ids.shape[1]
    start = np.full((len(features), length), -5.0)
    end = np.full((len(features), length), -5.0)
    rows = np.arange(len(features))
    start[rows, features.start_positions] = 5.0
    end[rows, features.end_positions] = 5.0
    answers = qa_features.extract_answers(examples, features, {"start_logits": start, "end_logits": end}, 20, 30,
                                          True, 0.0)
    golds = squad.gold_answers(examples)
    assert qa_metrics.squad_v2(golds, answers.predictions) == pytest.approx(
        dict(exact=100.0, f1=100.0, total=60.0, HasAns_exact=100.0, HasAns_f1=100.0,
             HasAns_total=float(sum(1 for g in golds.values() if g)), NoAns_exact=100.0, NoAns_f1=100.0,
             NoAns_total=float(sum(1 for g in golds.values() if not g))))
    assert all(len(n) <= 20 and len({e["text"] for e in n}) == len(n) for n in answers.nbest.values())


def test_race_reader_and_features(tokenizer: Tokenizer, demo_corpus: dict, tmp_path: Path) -> None:
    paths = synthetic.write_race(demo_corpus["text"], tmp_path, train=40, dev=10, max_sentences=5)
    task = race.make_race_task(source="files", files=paths)
    examples = race.read_split(task, "train")
    assert len(examples) == 40 and {e.level for e in examples} == {"middle", "high"}
    features = race.convert(examples, tokenizer, 48, 16)
    assert features.input_ids.shape == (40, 4, 48)
    for row, example in enumerate(examples):
        option = example.options[example.label]
        assert race.join_option(example.question, option) in example.article  # the blank filled by the answer
        for choice in range(4):
            ending = tokenizer.encode(race.join_option(example.question, example.options[choice]))[-16:]
            tokens = features.input_ids[row, choice, :features.lengths[row, choice]].tolist()
            assert tokens[0] == CLS_ID and tokens[-len(ending) - 2:] == [SEP_ID, *ending, SEP_ID]
            assert tokens[1:-len(ending) - 2] == tokenizer.encode(example.article)[:48 - 3 - len(ending)]
            assert features.segment_ids[row, choice].sum() == len(ending) + 1
    all_txt = tmp_path / "lines" / "middle"
    all_txt.mkdir(parents=True)
    records = [json.loads(p.read_text()) for p in sorted((Path(paths["dev"]) / "middle").iterdir())]
    (all_txt / "all.txt").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = race.make_race_task(source="files", files={"dev": str(tmp_path / "lines")}, levels=("middle",))
    assert len(race.read_split(lines, "dev")) == len(records)


def test_bad_files_name_file_and_record(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(TaskError, match=r"bad.json: record data\[0\].paragraphs\[0\] has no field 'context'"):
        squad.read_json(bad)
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "short", "qas": [
        {"id": "x1", "question": "q?", "answers": [{"text": "short text", "answer_start": 3}]}]}]}]}))
    with pytest.raises(TaskError, match=r"qas\[0\] \(id x1\) has answer_start 3 outside its context"):
        squad.read_json(bad)
    bad.write_text("{not json")
    with pytest.raises(TaskError, match="bad.json is not JSON"):
        squad.read_json(bad)
    (tmp_path / "r" / "high").mkdir(parents=True)
    (tmp_path / "r" / "high" / "7.txt").write_text(json.dumps(
        {"id": "7", "article": "a", "questions": ["q"], "options": [["x", "y"]], "answers": ["A"]}))
    task = race.make_race_task(source="files", files={"train": str(tmp_path / "r")}, levels=("high",))
    with pytest.raises(TaskError, match=r"7.txt: question 0 needs 4 options and an answer A-D, has 2 options"):
        race.read_split(task, "train")
    with pytest.raises(TaskError, match="has no middle/ folder"):
        race.read_split(race.make_race_task(source="files", files={"train": str(tmp_path / "r")}), "train")
    with pytest.raises(TaskError, match="squad/v2.0 is not prepared under /nonexistent"):
        squad.read_split(squad.make_squad_task(version="v2.0", data_dir="/nonexistent"), "validation")
    with pytest.raises(TaskError, match="'original_v2' is the SQuAD v2.0 head"):
        squad.make_squad_task(version="v1.1", head="original_v2")


def test_tfds_squad_reader() -> None:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        examples = squad.read_split(squad.make_squad_task(version="v1.1"), "validation")
    assert len(examples) == 4 and all(isinstance(e.context, str) and e.answers for e in examples)


@pytest.mark.parametrize("name,family,head", [("squad_v1", "squad", "span"), ("squad_v2", "squad", "original_v2"),
                                              ("race", "race", None)])
def test_gin_files(name: str, family: str, head: str | None) -> None:
    """Each file parses (every binding names a real parameter) and builds its task with the original values."""
    from albert_jax import gin_setup

    gin_setup.parse([f"finetune/{name}.gin"], [])
    assert gin.query_parameter("finetune.family") == family
    task = families.make_family(family)
    assert task.task.source == "tfds"
    if family == "squad":
        assert (task.task.head, task.task.doc_stride, task.task.max_query_length) == (head, 128, 64)
        assert gin.query_parameter("finetune.batch_size") == 48
    else:
        assert task.task.levels == ("middle", "high") and gin.query_parameter("finetune.max_seq_length") == 512
    assert gin.query_parameter("finetune.num_train_steps") > gin.query_parameter("finetune.warmup_steps") > 0
