"""TFDS builder `albert_text`: local text files as a TFDS dataset, one example per document.

Configs: `sentences` reads the original format (one sentence per line, blank line between documents);
`documents` reads one document per line and splits it into sentences with `corpus.split_sentences`. Either way the
example's `text` holds the document's sentences one per line, so read it back with
`TfdsCorpus(..., sentences="lines")`. Input files are the `*.txt` files under the manual dir (searched
recursively, sorted). Everything goes into the `train` split: corpus preparation decides train/eval per document.

Build (from the repository root; the `tfds build` CLI would need apache_beam, which is not installed):
  PYTHONPATH=. python data/albert_text/albert_text.py --manual_dir <dir of .txt> --data_dir <tfds dir> \
      [--config sentences|documents] [--file_format array_record|tfrecord]
Read it back like any TFDS dataset: `tfds.builder("albert_text/sentences", data_dir=<tfds dir>)`, which works
without importing this module (TFDS reads the prepared files' metadata).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os

import tensorflow_datasets as tfds

from albert_jax.input.corpus import CorpusStats, TextFiles


class AlbertText(tfds.core.GeneratorBasedBuilder):
    """Documents of local text files (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="sentences", description="one sentence per line, blank line between documents"),
        tfds.core.BuilderConfig(name="documents", description="one document per line, split into sentences"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the corpus as *.txt files (any depth) in the manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text corpus: one example per document, its sentences one per line.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        paths = sorted(glob.glob(os.path.join(manual_dir, "**", "*.txt"), recursive=True))
        if not paths:
            raise FileNotFoundError(f"no *.txt files under manual dir {manual_dir}; "
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"train": self._generate_examples(paths)}

    def _generate_examples(self, paths: list[str]):
        stats = CorpusStats()
        index = 0
        for document in TextFiles(tuple(paths), self.builder_config.name).documents(stats):
            sentences = document.sentences()
            if sentences:
                yield f"{index:012d}", {"text": "\n".join(sentences)}
                index += 1
            else:
                stats.blank_documents += 1
        logging.info("albert_text: %d documents from %d files; blank %d, invalid UTF-8 %d, long lines split %d",
                     index, stats.files, stats.blank_documents, stats.invalid_utf8, stats.long_lines_split)


def build(manual_dir: str, data_dir: str, config: str = "sentences",
          file_format: str = "array_record") -> tfds.core.DatasetBuilder:
    """Prepares `albert_text/<config>` from `manual_dir` into `data_dir`, as ArrayRecord (random access) unless
    another TFDS file format is asked for."""
    builder = AlbertText(config=config, data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="directory holding the *.txt corpus files")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write the prepared dataset into")
    parser.add_argument("--config", default="sentences", choices=["sentences", "documents"])
    parser.add_argument("--file_format", default="array_record", choices=["array_record", "tfrecord"])
    args = parser.parse_args()
    builder = build(args.manual_dir, args.data_dir, args.config, args.file_format)
    print(f"prepared {builder.info.full_name} in {builder.data_dir}: "
          f"{builder.info.splits['train'].num_examples} documents")


if __name__ == "__main__":
    main()
