"""What a compiled (optimized, partitioned) HLO module does per step, read from its text: collectives and bytes.

XLA's `cost_analysis()` counts each while-loop body once, whatever its trip count, so for a scanned encoder it
reports roughly one layer of work. This module walks the module's call graph instead: a while body runs `trip
count` times (the constant its condition compares the counter with), a fusion once per call, and every
collective (all-gather, reduce-scatter, all-reduce, all-to-all, collective-permute, sync or async) is listed
with its bytes, its group size, how often it runs per step and whether it sits inside a loop. That is what
tells whether the FSDP all-gather of ALBERT's one shared layer runs once per step or once per layer.
`dots_outside_ynnpack` reads a CPU module the same way for which library runs its matrix products.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from typing import Iterable

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
NO_MEMORY_OPS = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "while", "conditional",
                 "call", "after-all", "partition-id", "replica-id", "opt-barrier"}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8\w*)\[([\d,]*)\]")


def type_bytes(type_text: str) -> float:
    """Bytes of an HLO type (an array or a tuple of arrays), layouts ignored."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(type_text):
        size = DTYPE_BYTES.get(dtype, 1)
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


@dataclasses.dataclass
class Instruction:
    name: str
    type_text: str
    opcode: str
    operands: list[str]
    args: str  # the text between the opcode's parentheses
    attrs: str


@dataclasses.dataclass
class Collective:
    """One collective of the step: kind, bytes it moves per device per run, group size, runs per step."""

    kind: str
    bytes: float  # data each device sends (ring algorithm) per run
    group_size: int
    runs_per_step: int
    in_loop: bool
    op_name: str  # the JAX op it came from (metadata), to say which parameter or activation

    @property
    def bytes_per_step(self) -> float:
        return self.bytes * self.runs_per_step


def _matching(text: str, start: int) -> int:
    """Index just past the parenthesis group opening at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _parse_instruction(line: str) -> Instruction | None:
    match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if not match:
        return None
    rest = line[match.end():]
    if rest.startswith("("):
        end = _matching(rest, 0)
        type_text, rest = rest[:end], rest[end:].lstrip()
    else:
        type_text, _, rest = rest.partition(" ")
    op_match = re.match(r"([\w\-]+)\(", rest)
    if not op_match:
        return None
    end = _matching(rest, op_match.end() - 1)
    args = rest[op_match.end():end - 1]
    operands = re.findall(r"%([\w.\-]+)", args)
    return Instruction(match.group(1), type_text, op_match.group(1), operands, args, rest[end:])


def parse_module(text: str) -> tuple[dict[str, list[Instruction]], str]:
    """{computation name: instructions} and the entry computation's name."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = "", None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            match = re.match(r"(ENTRY )?%([\w.\-]+)", line)
            if match:
                current = match.group(2)
                computations[current] = []
                entry = current if match.group(1) else entry
            continue
        if current is not None:
            instruction = _parse_instruction(line)
            if instruction:
                computations[current].append(instruction)
    return computations, entry


def _called(instruction: Instruction) -> list[tuple[str, str]]:
    """(role, computation) pairs an instruction calls: body / condition / calls / branch / apply."""
    out = []
    for role, name in re.findall(r"\b(body|condition|calls|to_apply|true_computation|false_computation)=%([\w.\-]+)",
                                 instruction.attrs):
        out.append((role, name))
    for group in re.findall(r"branch_computations=\{([^}]*)\}", instruction.attrs):
        out.extend(("branch", name) for name in re.findall(r"%([\w.\-]+)", group))
    return out


def dots_outside_ynnpack(text: str) -> list[Instruction]:
    """The dots of an XLA:CPU module that no YNNPACK fusion holds: those run on Eigen's slower GEMM.

    XLA:CPU hands a dot to YNNPACK by wrapping it in a custom fusion (`"kind":"__ynn_fusion"`); a dot in any
    other computation is executed by Eigen (albert_jax/gemm.py explains why that matters).
    """
    computations, _ = parse_module(text)
    ynnpack_bodies = {name for instructions in computations.values() for instruction in instructions
                      if instruction.opcode == "fusion" and "__ynn_fusion" in instruction.attrs
                      for role, name in _called(instruction) if role == "calls"}
    return [instruction for name, instructions in computations.items() if name not in ynnpack_bodies
            for instruction in instructions if instruction.opcode == "dot"]


def _trip_count(condition: list[Instruction]) -> int:
    """The constant a scan's loop condition compares its counter against (1 when it cannot tell)."""
    constants = {}
    for ins in condition:
        if ins.opcode == "constant" and re.fullmatch(r"-?\d+", ins.args.strip()):
            constants[ins.name] = int(ins.args.strip())
    for ins in condition:
        if ins.opcode == "compare":
            for operand in ins.operands:
                if operand in constants:
                    return max(constants[operand], 1)
    return 1


def _group_size(attrs: str) -> int:
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if mesh:
        sizes = dict(re.findall(r"'([\w]+)'=(\d+)", mesh.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([\w]+)'", mesh.group(2)) if a in sizes) or 1
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", attrs)
    if iota:
        return int(iota.group(2))
    explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", attrs)
    if explicit:
        return len([d for d in explicit.group(1).split(",") if d])
    pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", attrs)
    return 2 if pairs else 1


class ModuleStats:
    """Collectives and HBM bytes of one compiled module, with loop trip counts applied."""

    def __init__(self, text: str) -> None:
        self.computations, self.entry = parse_module(text)
        self.runs: dict[str, int] = defaultdict(int)  # computation -> runs per step
        self.in_loop: dict[str, bool] = {}
        self.fusion_bodies: set[str] = set()
        self._walk(self.entry, 1, False)

    def _walk(self, name: str, runs: int, in_loop: bool) -> None:
        self.runs[name] += runs
        self.in_loop[name] = self.in_loop.get(name, False) or in_loop
        for ins in self.computations.get(name, []):
            calls = _called(ins)
            if ins.opcode == "while":
                roles = dict(calls)
                trips = _trip_count(self.computations.get(roles.get("condition", ""), []))
                if "body" in roles:
                    self._walk(roles["body"], runs * trips, True)
                continue
            for role, callee in calls:
                if role == "to_apply":
                    continue
                if role == "calls" and ins.opcode == "fusion":
                    self.fusion_bodies.add(callee)
                self._walk(callee, runs, in_loop)

    def _is_async_done(self, computation: str) -> bool:
        instructions = self.computations.get(computation, [])
        return any(i.opcode == "custom-call" and "AsyncCollectiveDone" in i.attrs for i in instructions[-1:])

    def collectives(self) -> list[Collective]:
        out = []
        for name, instructions in self.computations.items():
            runs = self.runs.get(name, 0)
            if not runs or self._is_async_done(name):
                continue
            for ins in instructions:
                kind = next((c for c in COLLECTIVES if ins.opcode in (c, c + "-start")), None)
                if kind is None:
                    continue
                group = _group_size(ins.attrs)
                size = type_bytes(ins.type_text)
                if ins.opcode.endswith("-start") and ins.type_text.startswith("("):
                    size /= 2  # (operand, result) tuple of an async start
                share = (group - 1) / group if group > 1 else 0.0
                moved = {"all-gather": size * share, "reduce-scatter": size * group * share,
                         "all-reduce": 2 * size * share, "all-to-all": size * share,
                         "collective-permute": size}[kind]
                op_name = re.search(r'op_name="([^"]*)"', ins.attrs)
                out.append(Collective(kind, moved, group, runs, self.in_loop.get(name, False),
                                      op_name.group(1) if op_name else ""))
        return out

    def hbm_bytes(self) -> float:
        """Bytes read and written by every top-level (non-fused) instruction, times its runs per step."""
        total = 0.0
        for name, instructions in self.computations.items():
            runs = self.runs.get(name, 0)
            if not runs or name in self.fusion_bodies:
                continue
            shapes = {ins.name: ins.type_text for ins in instructions}
            for ins in instructions:
                if ins.opcode in NO_MEMORY_OPS:
                    continue
                moved = type_bytes(ins.type_text) + sum(type_bytes(shapes.get(o, "")) for o in ins.operands)
                total += moved * runs
        return total


def summarize(collectives: Iterable[Collective]) -> dict[str, dict[str, float]]:
    """Per kind: bytes per step, runs per step and how many of those runs are inside loops."""
    table: dict[str, dict[str, float]] = {}
    for c in collectives:
        row = table.setdefault(c.kind, {"bytes_per_step": 0.0, "runs_per_step": 0, "runs_in_loops": 0})
        row["bytes_per_step"] += c.bytes_per_step
        row["runs_per_step"] += c.runs_per_step
        row["runs_in_loops"] += c.runs_per_step if c.in_loop else 0
    return table
