"""One split of a prepared TFDS dataset as numpy records, with the errors the fine-tuning readers share."""

from __future__ import annotations

from typing import Any, Iterator

from albert_jax.downstream.tasks import TaskError


def load_split(name: str, data_dir: str | None, split: str) -> Iterator[dict[str, Any]]:
    """Records of TFDS `name` split `split` under `data_dir`; nothing is downloaded (an unprepared dataset stops
    with how to prepare it)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError as error:  # what TFDS raises for a dataset that was never prepared
        raise TaskError(f"TFDS {name} is not prepared under {data_dir or 'the default data_dir'} "
                        f"({str(error).splitlines()[0][:200]}); nothing downloads here. Prepare it where there is "
                        f"network (`tfds build {name} --data_dir=DIR`), copy DIR here and set the task's data_dir, "
                        "or read local files (source = 'files')") from None
    except (KeyError, ValueError) as error:
        raise TaskError(f"TFDS {name} has no split {split!r} ({error}); it has "
                        f"{', '.join(builder.info.splits) or 'no splits recorded'}") from None
    return iter(tfds.as_numpy(dataset))
