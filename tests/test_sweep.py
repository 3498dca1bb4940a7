"""The sweep tool: grid files and directories, printed commands, results collected from run directories in the
real on-disk format, the CSV / Markdown / PNG outputs, resume, and one real two-variant sweep through launch.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import stat
import sys
import textwrap

import matplotlib.image
import numpy as np
import pytest

from albert_jax.jobs import cli, sweep, sweep_grid, sweep_results, sweep_stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text: str) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip())
    return str(path)


def fake_run(workdir: str, steps: int, log_every: int, eval_every: int, final_mlm: float) -> None:
    """A run directory as train.py leaves it: metrics.jsonl, eval/eval.jsonl and eval/step_N.json."""
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step in range(log_every, steps + 1, log_every):
            speed = 100.0 if step == log_every else (10.0 if (step - log_every) % eval_every == 0 else 1000.0)
            f.write(json.dumps({"step": step, "loss": 10.0 - step / steps, "tokens_per_s": speed}) + "\n")
    for step in range(eval_every, steps + 1, eval_every):
        result = {"masked_lm_accuracy": final_mlm * step / steps, "masked_lm_loss": 8.0 - step / steps,
                  "sentence_order_accuracy": 0.6, "sentence_order_loss": 0.69, "examples": 64.0, "masked_tokens": 640.0}
        with open(os.path.join(workdir, "eval", "eval.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, **result}) + "\n")
        with open(os.path.join(workdir, "eval", f"step_{step}.json"), "w") as f:
            json.dump({"step": step, **result, "checkpoint": "x"}, f)


def test_grid_file_variants_bindings_and_paper_columns(tmp_path):
    grid_file = write(tmp_path / "grid.gin", """
        include 'base.gin'
        train.num_train_steps = %NUM_TRAIN_STEPS  # a reference outside SWEEP_* is fine
        SWEEP_TITLE = 'A grid'  # heading
        SWEEP_VARIANTS = {  # the variants
            'small': {'AlbertConfig.embedding_size': 16, 'AlbertConfig.sharing': 'all'},  # one
            'nsp': {'gin_files': ['objective/nsp.gin'], 'NUM_TRAIN_STEPS': 7},  # two
        }  # end
        SWEEP_PAPER = {'small': {'params': '12M', 'avg': 80.1}, 'nsp': {'NSP': '90.5'}}  # reference
        """)
    grid = sweep_grid.load_grid(grid_file)
    assert grid.title == "A grid" and [v.name for v in grid.variants] == ["small", "nsp"]
    small, nsp = grid.variants
    assert small.gin_files == (os.path.abspath(grid_file),)
    assert small.bindings == ("AlbertConfig.embedding_size=16", "AlbertConfig.sharing='all'")
    assert nsp.gin_files == (os.path.abspath(grid_file), "objective/nsp.gin") and nsp.bindings == ("NUM_TRAIN_STEPS=7",)
    assert grid.paper_columns == ["params", "avg", "NSP"] and dict(small.paper)["avg"] == "80.1"


def test_the_ablation_grids_load():
    expected = {"table3": 8, "table4": 8, "table5": 3}
    for table, count in expected.items():
        for scale in ("demo", "paper"):
            grid = sweep_grid.load_grid(f"ablations/{table}_{scale}.gin")
            assert len(grid.variants) == count and grid.variants[0].gin_files[0] == f"ablations/{table}_{scale}.gin"
            assert all(v.paper for v in grid.variants), (table, scale)


def test_grid_directory_one_variant_per_file(tmp_path):
    write(tmp_path / "grid" / "b_large.gin", "include 'base.gin'\nSWEEP_PAPER = {'params': '18M'}  # reference\n")
    write(tmp_path / "grid" / "a_base.gin", "include 'base.gin'\n")
    write(tmp_path / "grid" / "notes.txt", "not a variant\n")
    grid = sweep_grid.load_grid(str(tmp_path / "grid"))
    assert [v.name for v in grid.variants] == ["a_base", "b_large"]
    assert grid.variants[1].gin_files == (str(tmp_path / "grid" / "b_large.gin"),) and not grid.variants[1].bindings
    assert grid.variants[1].paper == (("params", "18M"),) and grid.variants[0].paper == ()


@pytest.mark.parametrize("text, message", [
    ("include 'base.gin'\n", "defines no SWEEP_VARIANTS"),
    ("SWEEP_VARIANTS = {'a b': {}}  # c\n", "not usable as a directory name"),
    ("SWEEP_VARIANTS = {'a': {'X.y': %Z}}  # c\n", "must hold plain values.*%Z"),
    ("SWEEP_VARIANTS = {'a': 3}  # c\n", r"SWEEP_VARIANTS\['a'\] must be a dict"),
    ("SWEEP_VARIANTS = {'a': {}}  # c\nSWEEP_PAPER = {'b': {}}  # c\n", "SWEEP_PAPER names variants"),
])
def test_grid_errors_name_the_fix(tmp_path, text, message):
    with pytest.raises(sweep_grid.SweepError, match=message):
        sweep_grid.load_grid(write(tmp_path / "bad.gin", text))


def test_missing_grid_and_unknown_variant(tmp_path, capsys):
    with pytest.raises(sweep_grid.SweepError, match="not found"):
        sweep_grid.load_grid(str(tmp_path / "nope.gin"))
    assert cli.main(["sweep", "ablations/table5_demo.gin", f"--out={tmp_path}", "--variants=sop,bogus"]) == 2
    assert "['bogus'] not in the grid" in capsys.readouterr().err


def test_print_commands_one_launch_per_variant(capsys):
    assert cli.main(["sweep", "ablations/table4_paper.gin", "--out=/runs/t4", "--print_commands",
                       "--gin.TRAIN_DIR='gs://b/train'", "--gin.EVAL_DIR='gs://b/eval'"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    grid = sweep_grid.load_grid("ablations/table4_paper.gin")
    assert len(lines) == 8
    for line, variant in zip(lines, grid.variants):
        words = shlex.split(line)
        assert words[:2] == ["python", "launch.py"]
        assert words[2:] == sweep_grid.launch_args(variant, f"/runs/t4/{variant.name}", (),
                                              ["TRAIN_DIR='gs://b/train'", "EVAL_DIR='gs://b/eval'"])
    assert "--gin.AlbertConfig.sharing='none'" in shlex.split(lines[3]) and "--workdir=/runs/t4/e128_not_shared" in lines[3]


def test_collect_writes_csv_markdown_and_plots(tmp_path):
    grid = sweep_grid.select(sweep_grid.load_grid("ablations/table4_demo.gin"), "e32_all_shared,e32_not_shared,e128_shared_ffn")
    grid = dataclasses.replace(grid, seeds=())  # one run per variant, in OUT/<variant>/
    out = str(tmp_path / "out")
    done_dir, partial_dir = os.path.join(out, "e32_all_shared"), os.path.join(out, "e32_not_shared")
    fake_run(done_dir, steps=600, log_every=10, eval_every=50, final_mlm=0.2)  # scale/ablation_demo: 600 steps
    fake_run(partial_dir, steps=100, log_every=10, eval_every=50, final_mlm=0.3)
    with open(os.path.join(done_dir, sweep_results.DONE_FILE), "w") as f:
        json.dump({"args": [], "seconds": 12.5}, f)
    rows = sweep_results.collect(grid, out, command="albert-jax sweep X")
    by_name = {r["variant"]: r for r in rows}
    assert [by_name[n]["status"] for n in ("e32_all_shared", "e32_not_shared", "e128_shared_ffn")] == \
        ["complete", "partial", "not run"]
    done = by_name["e32_all_shared"]
    assert done["eval_step"] == 600 and done["masked_lm_accuracy"] == pytest.approx(0.2)
    assert done["tokens_per_s"] == pytest.approx(1000.0)  # the first report and those after an eval left out
    assert done["params"] < by_name["e32_not_shared"]["params"] < by_name["e128_shared_ffn"]["params"]
    assert done["num_train_steps"] == 600 and done["steps_done"] == 600 and done["seconds"] == 12.5
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [v.name for v in grid.variants]
    assert table[0]["paper params"] == "11,683,584 (12M)" and table[2]["masked_lm_accuracy"] == ""
    assert float(table[1]["masked_lm_accuracy"]) == pytest.approx(0.3)
    markdown = open(os.path.join(out, "results.md")).read()
    assert markdown.startswith("# Table 4 at demo scale")
    assert "| e32_all_shared | 0.48M | 20.0 | 60.0 | 7.000 | 0.690 | 1,000 | 600 | 128 | all-shared |" in markdown
    assert "e32_not_shared (partial)" in markdown and "Reproduce: `albert-jax sweep X`" in markdown
    for name, size in (("loss_curves.png", (495, 1430)), ("params_vs_mlm.png", (495, 770))):
        image = matplotlib.image.imread(os.path.join(out, name))
        assert image.shape[:2] == size and np.ptp(image) > 0, name


FAKE_LAUNCH = """#!{python}
import json, os, sys
args = sys.argv[2:]
workdir = [a.split("=", 1)[1] for a in args if a.startswith("--workdir=")][0]
with open(os.environ["FAKE_LAUNCH_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({{"step": 10, "loss": 5.0, "tokens_per_s": 9.0}}) + "\\n")
with open(os.path.join(workdir, "eval", "step_10.json"), "w") as f:
    json.dump({{"step": 10, "masked_lm_accuracy": 0.5}}, f)
sys.exit(3 if os.environ["FAKE_LAUNCH_FAIL"] and workdir.endswith(os.environ["FAKE_LAUNCH_FAIL"]) else 0)
"""


def test_resume_skips_completed_and_retries_failed(tmp_path, monkeypatch):
    fake = write(tmp_path / "fake_python", FAKE_LAUNCH.format(python=sys.executable))
    os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)
    log = str(tmp_path / "launches.jsonl")
    monkeypatch.setenv("FAKE_LAUNCH_LOG", log)
    monkeypatch.setenv("FAKE_LAUNCH_FAIL", "/sop")
    grid = dataclasses.replace(sweep_grid.load_grid("ablations/table5_demo.gin"), seeds=(), cross_evals=())
    out = str(tmp_path / "out")
    lines: list[str] = []
    assert sweep.run_grid(grid, out, python=fake, write=lines.append) == ["sop"]
    assert len(sweep_results.read_jsonl(log)) == 3 and "FAILED (exit 3" in lines[-1] and "ETA 0m00s for 0 more" in lines[-1]
    assert "[1/3] none: done in" in lines[2] and "MLM acc 0.500" in lines[2] and "for 2 more" in lines[2]
    monkeypatch.setenv("FAKE_LAUNCH_FAIL", "")
    lines.clear()
    assert sweep.run_grid(grid, out, python=fake, write=lines.append) == []
    launched = sweep_results.read_jsonl(log)[3:]
    assert len(launched) == 1 and "--workdir=" + os.path.join(out, "sop") in launched[0]
    assert "3 variants, 1 to run" in lines[0] and "[1/3] none: already complete, skipped" in lines
    lines.clear()
    assert sweep.run_grid(grid, out, ["masking/token.gin"], python=fake, write=lines.append) == []
    assert "3 variants, 3 to run" in lines[0]  # a different command is not the completed run: it resumes
    assert [r["status"] for r in sweep_results.collect(grid, out)] == ["complete"] * 3


def test_paper_grids_count_the_reference_parameters():
    macros = ["TRAIN_DIR='/t'", "EVAL_DIR='/e'"]
    seen = set()
    for table in ("table3_paper", "table4_paper"):
        for variant in sweep_grid.load_grid(f"ablations/{table}.gin").variants:
            if variant.bindings in seen:
                continue
            seen.add(variant.bindings)
            info = sweep_grid.describe_variant(variant, extra_bindings=macros)
            want = int(dict(variant.paper)["params"].split(" ")[0].replace(",", ""))
            assert info["params"] == want, variant.name
            assert (info["num_train_steps"], info["global_batch_size"], info["max_seq_length"]) == (125000, 4096, 512)
    assert len(seen) == 12


SUBJECTS = ["the river", "a small dog", "my old teacher", "the red train", "every farmer", "the tall tower"]
VERBS = ["watched", "followed", "painted", "remembered", "carried", "visited"]
OBJECTS = ["the green hills", "a broken clock", "the morning market", "seven letters", "an empty boat"]


def tiny_text_grid(tmp_path, seed: int, sweep_macros: str) -> str:
    """A grid file over a tiny random-sentence corpus and a 4-step tiny model (seconds per run), with the given
    SWEEP_* lines (already indented like the rest of the file body)."""
    rng = np.random.default_rng(seed)
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w") as f:
        for _ in range(80):
            for _ in range(int(rng.integers(4, 8))):
                f.write(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} in "
                        f"{1900 + int(rng.integers(0, 99))}.\n")
            f.write("\n")
    return write(tmp_path / "tiny_grid.gin", f"""
        include 'base.gin'
        include 'models/tiny.gin'
        include 'objective/sop.gin'
        include 'masking/ngram3.gin'
        include 'optim/lamb.gin'
        include 'scale/tiny.gin'
        include 'mesh/data.gin'
        DataSpec.corpus = 'text'  # the corpus above
        DataSpec.text_files = ['{corpus}']  # c
        DataSpec.cache_dir = '{tmp_path / "cache"}'  # c
        DataSpec.vocab_size = 64  # c
        DataSpec.eval_fraction = 0.1  # c
        DataSpec.num_workers = 1  # c
        AlbertConfig.vocab_size = 128  # c
        AlbertConfig.hidden_size = 32  # c
        AlbertConfig.embedding_size = 16  # c
        AlbertConfig.intermediate_size = 64  # c
        AlbertConfig.num_hidden_layers = 2  # c
        NUM_TRAIN_STEPS = 4  # c
        train.log_every = 2  # c
        train.eval_every = 4  # c
        Evaluator.max_batches = 2  # c
        make_manager.save_every_steps = 4  # c
{sweep_macros}""")


def test_real_two_variant_sweep_through_launch(tmp_path, monkeypatch, capsys):
    grid_file = tiny_text_grid(tmp_path, 0, """
        SWEEP_VARIANTS = {'shared': {'AlbertConfig.sharing': 'all'}, 'unshared': {'AlbertConfig.sharing': 'none'}}  # c
        """)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    out = str(tmp_path / "out")
    code = cli.main(["sweep", grid_file, f"--out={out}"])
    printed = capsys.readouterr().out
    assert code == 0, printed + "".join(open(os.path.join(out, v, "launch.log")).read()[-2000:]
                                        for v in ("shared", "unshared"))
    assert "[2/2] unshared: done in" in printed and "grid elapsed" in printed
    with open(os.path.join(out, "results.csv")) as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert rows["shared"]["status"] == rows["unshared"]["status"] == "complete"
    assert int(rows["shared"]["params"]) < int(rows["unshared"]["params"])
    for row in rows.values():
        assert row["eval_step"] == "4" and 0.0 <= float(row["masked_lm_accuracy"]) <= 1.0
        assert float(row["tokens_per_s"]) > 0
    assert all(os.path.getsize(os.path.join(out, name)) > 10_000 for name in ("loss_curves.png", "params_vs_mlm.png"))
    assert cli.main(["sweep", grid_file, f"--out={out}"]) == 0
    assert printed.count("running") == 2 and capsys.readouterr().out.count("already complete, skipped") == 2


def test_describe_errors_name_the_missing_macro_and_the_bad_binding():
    variant = sweep_grid.load_grid("ablations/table4_paper.gin").variants[0]
    with pytest.raises(sweep_grid.SweepError, match=r"e128_all_shared.*TRAIN_DIR.*--gin\.TRAIN_DIR=VALUE"):
        sweep_grid.describe_variant(variant)
    bad = sweep_grid.Variant("bad", ("ablations/table4_demo.gin",), ("AlbertConfig.num_attention_heads=3",))
    with pytest.raises(sweep_grid.SweepError, match="(?s)'bad'.*hidden_size=128 is not divisible by num_attention_heads=3"):
        sweep_grid.describe_variant(bad)


def test_seed_statistics_by_hand():
    # Three seeds at 10%, 20%, 30%: mean 20, sample sd 10, t(0.975, 2 df) = 4.3027 (printed t tables), so the
    # 95% interval is 20 +- 4.3027 * 10 / sqrt(3) = 20 +- 24.84.
    summary = sweep_stats.summarize([0.1, 0.2, None, 0.3])
    assert summary.n == 3 and summary.mean == pytest.approx(0.2) and summary.sd == pytest.approx(0.1)
    assert summary.low == pytest.approx(0.2 - 0.2484, abs=1e-4) and summary.high == pytest.approx(0.2 + 0.2484, abs=1e-4)
    one = sweep_stats.summarize([0.5])
    assert (one.n, one.sd, one.low, one.high) == (1, 0.0, None, None)
    assert sweep_stats.summarize([None, ""]) is None
    steps, means, sds = sweep_stats.mean_curve([[(1, 1.0), (2, 3.0)], [(1, 3.0), (2, 5.0), (3, 9.0)]])
    assert steps == [1, 2] and means == [2.0, 4.0] and sds == pytest.approx([2 ** 0.5, 2 ** 0.5])


def test_seeds_and_cross_evals_in_grid_and_commands(tmp_path, capsys):
    table5_text = open(os.path.join(REPO, "experiments", "ablations", "table5_demo.gin")).read()
    assert "SWEEP_SEEDS = [1, 2, 3]" in table5_text
    grid_file = write(tmp_path / "grid.gin", table5_text.replace("SWEEP_SEEDS = [1, 2, 3]", "SWEEP_SEEDS = [3, 1]"))
    grid = sweep_grid.load_grid(grid_file)
    assert grid.seeds == (3, 1)
    table5 = sweep_grid.load_grid("ablations/table5_demo.gin")
    assert [c.name for c in table5.cross_evals] == ["NSP", "SOP"] and len(table5.seeds) >= 3
    assert cli.main(["sweep", grid_file, "--out=/runs/t5", "--print_commands", "--seeds=7,8", "--variants=nsp"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, seed in zip(lines, (7, 8)):
        train, *evals = [shlex.split(part) for part in line.split(" && ")]
        assert train[:2] == ["python", "launch.py"] and train[-2:] == [f"--gin.train.seed={seed}",
                                                                       f"--workdir=/runs/t5/nsp/seed_{seed}"]
        assert [e[:4] for e in evals] == [["python", "-m", "albert_jax", "eval"]] * 2
        nsp_eval = evals[0]
        assert f"--workdir=/runs/t5/nsp/seed_{seed}" in nsp_eval and "--no_fallback" in nsp_eval
        assert nsp_eval.index(f"--gin_file=/runs/t5/nsp/seed_{seed}/config.gin") < nsp_eval.index(
            "--gin_file=objective/nsp.gin")
        assert nsp_eval[-1] == f"--out_dir=/runs/t5/nsp/seed_{seed}/cross_eval/NSP"
    for bad, message in (("[1, 1]", "repeat a seed"), ("[1.5]", "non-negative integers"), ("['a']", "integers")):
        write(tmp_path / "bad.gin", table5_text.replace("SWEEP_SEEDS = [1, 2, 3]", f"SWEEP_SEEDS = {bad}"))
        with pytest.raises(sweep_grid.SweepError, match=message):
            sweep_grid.load_grid(str(tmp_path / "bad.gin"))
    assert cli.main(["sweep", grid_file, "--out=/runs/t5", "--print_commands", "--seeds=1,x"]) == 2


def test_collect_aggregates_seeds_and_cross_evals(tmp_path):
    grid = sweep_grid.select(sweep_grid.load_grid("ablations/table5_demo.gin"), "nsp,sop")
    grid = dataclasses.replace(grid, seeds=(1, 2, 3))
    out = str(tmp_path / "out")
    mlm = {"nsp": (0.10, 0.20, 0.30), "sop": (0.20, 0.20, 0.20)}
    for run in grid.runs(out):
        final = mlm[run.variant.name][run.seed - 1]
        fake_run(run.workdir, steps=400, log_every=10, eval_every=100, final_mlm=final)
        with open(os.path.join(run.workdir, sweep_results.DONE_FILE), "w") as f:
            json.dump({"args": [], "seconds": 1.0}, f)
        for cross_eval, accuracy in zip(grid.cross_evals, (0.9, 0.5 + 0.1 * run.seed)):
            target = sweep_grid.cross_eval_dir(run, cross_eval)
            os.makedirs(target)
            with open(os.path.join(target, "step_400.json"), "w") as f:
                json.dump({"step": 400, "masked_lm_accuracy": final, "sentence_order_accuracy": accuracy,
                           "eval_dir": f"/data/{cross_eval.name}"}, f)
    rows = sweep_results.collect(grid, out, command="albert-jax sweep X")
    assert [(r["variant"], r["seed"]) for r in rows] == [("nsp", 1), ("nsp", 2), ("nsp", 3), ("sop", 1), ("sop", 2),
                                                         ("sop", 3)]
    assert rows[1]["NSP sentence_order_accuracy"] == 0.9 and rows[1]["SOP sentence_order_accuracy"] == pytest.approx(0.7)
    assert rows[1]["SOP eval_dir"] == "/data/SOP"
    with open(os.path.join(out, "results.csv")) as f:
        assert len(list(csv.DictReader(f))) == 6
    text = open(os.path.join(out, "results.md")).read()
    nsp_row = next(line for line in text.splitlines() if line.startswith("| nsp | 3 |"))
    # MLM 10/20/30 -> 20.0 +- 10.0; SOP acc 60/70/80 -> 70.0 +- 10.0; NSP acc 90 every seed.
    assert "| 20.0 ± 10.0 |" in nsp_row and "| 90.0 ± 0.0 |" in nsp_row and "| 70.0 ± 10.0 |" in nsp_row
    assert "| sop | 3 |" in text and "[-4.8, 44.8]" in text  # 20 +- 24.84
    assert "| nsp | 2 | complete | 20.0 |" in text  # every seed listed
    assert "MLM acc on NSP data" in text and "SOP acc" in text and "± 1 sd" not in text
    os.remove(os.path.join(sweep_grid.cross_eval_dir(grid.runs(out)[0], grid.cross_evals[0]), "step_400.json"))
    with open(os.path.join(sweep_grid.cross_eval_dir(grid.runs(out)[0], grid.cross_evals[0]), "step_300.json"),
              "w") as f:
        json.dump({"step": 300, "masked_lm_accuracy": 0.5, "sentence_order_accuracy": 0.5}, f)
    stale = sweep_results.collect(grid, out)[0]
    assert stale["NSP sentence_order_accuracy"] is None  # an older checkpoint's evaluation is not the run's
    assert all(os.path.getsize(os.path.join(out, name)) > 10_000 for name in ("loss_curves.png", "params_vs_mlm.png"))


def test_real_sweep_with_seeds_and_cross_evaluation(tmp_path, monkeypatch, capsys):
    grid_file = tiny_text_grid(tmp_path, 1, """
        SWEEP_VARIANTS = {'sop': {}}  # c
        SWEEP_SEEDS = [1, 2]  # c
        SWEEP_CROSS_EVAL = {'NSP': {'gin_files': ['objective/nsp.gin']}, 'SOP': {'gin_files': ['objective/sop.gin']}}  # c
        """)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    out = str(tmp_path / "out")
    code = cli.main(["sweep", grid_file, f"--out={out}"])
    printed = capsys.readouterr().out
    logs = "".join(open(os.path.join(out, "sop", s, "launch.log")).read()[-3000:] for s in ("seed_1", "seed_2"))
    assert code == 0, printed + logs
    assert "2 runs (1 variants x 2 seeds)" in printed and "[2/2] sop/seed_2: cross-evaluation SOP at step 4" in printed
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["seed"], r["status"]) for r in rows] == [("sop", "1", "complete"), ("sop", "2", "complete")]
    for row in rows:
        # The SOP cross-evaluation reads the run's own held-out data with the run's last checkpoint: the same numbers
        # as the run's own evaluation, bit for bit (a different model or other data would not give them).
        assert row["SOP eval_step"] == row["eval_step"] == "4"
        assert row["SOP masked_lm_accuracy"] == row["masked_lm_accuracy"]
        assert row["SOP sentence_order_accuracy"] == row["sentence_order_accuracy"]
        assert row["NSP eval_dir"] != row["SOP eval_dir"] and 0.0 <= float(row["NSP sentence_order_accuracy"]) <= 1.0
    assert rows[0]["NSP eval_dir"] == rows[1]["NSP eval_dir"]  # the same NSP data for every model
    assert rows[0]["final_train_loss"] != rows[1]["final_train_loss"]  # the seeds are different runs
    own = json.load(open(os.path.join(out, "sop", "seed_1", "eval", "step_4.json")))
    assert own["eval_dir"] == rows[0]["SOP eval_dir"]  # the run's own record was not overwritten by the NSP one
    assert "| sop | 2 |" in open(os.path.join(out, "results.md")).read()
    assert cli.main(["sweep", grid_file, f"--out={out}"]) == 0
    again = capsys.readouterr().out
    assert again.count("already complete, skipped") == 2 and "cross-evaluation" not in again
