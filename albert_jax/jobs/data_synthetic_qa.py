"""Writes a small synthetic SQuAD- or RACE-format set from a text corpus (the demo corpus by default).

No SQuAD or RACE data is reachable offline; these sets, in the official formats, let the readers, features,
heads, metrics and the fine-tuning job be tried end to end (`downstream/synthetic.py` says how they are made).
Prints the written paths as JSON: SQuAD {"train": FILE, "dev": FILE}, RACE {"train": DIR, "dev": DIR}, the
values `make_squad_task.files` / `make_race_task.files` take; and, on stderr, the dev set's trivial baselines
under the official metrics (`downstream/qa_baselines.py`), the floor a fine-tuned reader must clear.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from albert_jax.downstream import qa_baselines, race, squad, synthetic
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "synthetic-qa", *sys.argv[1:]]))

DEMO_TEXT = "cache/demo/text/python-docs.txt"
EPILOG = flags.examples(
    "albert-jax data synthetic-qa squad --out cache/qa/squad_v1",
    "albert-jax data synthetic-qa squad --v2 --out cache/qa/squad_v2",
    "albert-jax data synthetic-qa race --out cache/qa/race")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("squad", "race"), help="SQuAD JSON files or RACE article directories")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--text", default=DEMO_TEXT,
                        help="corpus: one sentence per line, a blank line between documents (default: the demo "
                             "corpus, which `albert-jax data demo` prepares)")
    parser.add_argument("--train", type=int, default=2000, help="train questions")
    parser.add_argument("--dev", type=int, default=300, help="dev questions")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (same seed, same set)")
    parser.add_argument("--v2", action="store_true", help="squad: one third unanswerable questions (v2.0 format)")
    parser.add_argument("--min_sentences", type=int, default=None,
                        help="sentences per paragraph, at least (default: the builder's, 2)")
    parser.add_argument("--max_sentences", type=int, default=None,
                        help="sentences per paragraph, at most (default: the builder's, SQuAD 4, RACE 5)")


def run(args: argparse.Namespace) -> int:
    """`albert-jax data synthetic-qa`: writes the set and prints its paths."""
    if not Path(args.text).is_file():
        raise FileNotFoundError(f"no corpus text at {args.text}: give --text=FILE (one sentence per line, blank "
                                "lines between documents), or run `albert-jax data demo` to prepare the demo corpus.")
    shape = {name: value for name, value in (("min_sentences", args.min_sentences),
                                             ("max_sentences", args.max_sentences)) if value is not None}
    if args.kind == "squad":
        paths = synthetic.write_squad(args.text, args.out, args.train, args.dev, args.seed,
                                      1 / 3 if args.v2 else 0.0, **shape)
    else:
        paths = synthetic.write_race(args.text, args.out, args.train, args.dev, args.seed, **shape)
    print(json.dumps(paths))
    if args.kind == "squad":
        baselines = qa_baselines.squad_baselines(squad.read_json(paths["dev"]))
    else:
        task = race.make_race_task(source="files", files={"dev": paths["dev"]})
        baselines = qa_baselines.race_baselines(race.read_split(task, "dev"))
    for name, scores in baselines.items():
        shown = ", ".join(f"{key} {value:.1f}" for key, value in scores.items() if not key.endswith(("total", "thresh")))
        print(f"dev baseline, {name}: {shown}", file=sys.stderr)
    return 0
