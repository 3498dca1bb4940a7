"""TensorBoard event files read back independently of the writer: TFRecord framing parsed here, the records
decoded with TensorFlow's own Event proto (the project writes them with tensorboardX)."""

from __future__ import annotations

import struct
from pathlib import Path


def scalars(directory: Path) -> dict[tuple[int, str], float]:
    """{(step, tag): value} of every scalar in the event files under `directory`."""
    from tensorflow.core.util import event_pb2

    values = {}
    for path in sorted(Path(directory).glob("events.out.tfevents*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # record: length (8), its CRC (4), data, its CRC (4)
            (length,) = struct.unpack("<Q", data[offset: offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 16 + length
            values.update({(event.step, v.tag): v.simple_value for v in event.summary.value})
    return values
