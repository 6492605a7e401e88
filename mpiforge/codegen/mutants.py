"""Source-level mutants of MPI programs: the classic parallel bugs, planted on purpose.

Each operator finds every place it applies in a C/C++ source and yields one mutant per place.
A verifier is as good as the share of mutants it kills (the mutation score): a mutant that
still passes every generated test shows a bug the tests would let through.

Operators: ``drop_collective``, ``duplicate_collective``, ``wrong_root``, ``wrong_op``,
``split_off_by_one``, ``range_end_off_by_one``, ``swap_send_recv``, ``rank0_only_result``,
``missing_remainder``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["OPERATORS", "Call", "Mutant", "find_calls", "mutate"]

COLLECTIVES = ("Bcast", "Reduce", "Allreduce", "Scatter", "Scatterv", "Gather", "Gatherv", "Allgather",
               "Allgatherv", "Scan", "Exscan", "Alltoall", "Alltoallv", "Reduce_scatter", "Barrier")
# argument index of the root in rooted collectives
ROOT_ARG = {"Bcast": 3, "Reduce": 5, "Scatter": 6, "Scatterv": 7, "Gather": 6, "Gatherv": 7}
OP_SWAP = {"SUM": "MAX", "MAX": "MIN", "MIN": "MAX", "PROD": "SUM", "LAND": "LOR", "LOR": "LAND",
           "BAND": "BOR", "BOR": "BAND", "MAXLOC": "MINLOC", "MINLOC": "MAXLOC"}


@dataclass(frozen=True)
class Mutant:
    """One mutated program."""

    operator: str
    line: int  # 1-based line of the mutation in the original source
    description: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.operator}@{self.line}"


@dataclass(frozen=True)
class Call:
    """An ``MPI_Name(args)`` call found in a source: its span, arguments and statement end."""

    name: str  # without the MPI_ prefix
    start: int
    end: int  # just after the closing parenthesis
    stmt_end: int  # just after the ';' ending the statement, or -1 when the call is inside an expression
    args: tuple[str, ...]


def _split_args(text: str) -> list[str]:
    args, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    args.append("".join(cur).strip())
    return args


def find_calls(source: str, names: tuple[str, ...] | None = None) -> Iterator[Call]:
    """Every ``MPI_<name>(...)`` call (of ``names`` if given), in order."""
    for m in re.finditer(r"\bMPI_([A-Z][A-Za-z_]*)\s*\(", source):
        if names is not None and m.group(1) not in names:
            continue
        depth, i = 1, m.end()
        while i < len(source) and depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        if depth:
            continue
        after = re.match(r"\s*;", source[i:])
        args = tuple(_split_args(source[m.end():i - 1]))
        yield Call(m.group(1), m.start(), i, i + after.end() if after else -1, args)


def _line(source: str, pos: int) -> int:
    return source.count("\n", 0, pos) + 1


def _call_text(name: str, args: list[str] | tuple[str, ...]) -> str:
    return f"MPI_{name}({', '.join(args)})"


# An edit: (start, end, replacement, description). Every operator yields its edits.
Edit = tuple[int, int, str, str]


def drop_collective(src: str) -> Iterator[Edit]:
    for c in find_calls(src, COLLECTIVES):
        if c.stmt_end > 0:
            yield c.start, c.stmt_end, "/* mutant: collective dropped */;", f"MPI_{c.name} dropped"


def duplicate_collective(src: str) -> Iterator[Edit]:
    """A sum or product reduced a second time (``MPI_Allreduce``/``MPI_Scan``, then again in
    place on the result). Repeating any other collective right after itself recomputes the
    same values from unchanged inputs: such a mutant is equivalent (no test can kill it), so
    it is not planted."""
    for c in find_calls(src, ("Allreduce", "Scan")):
        if c.stmt_end > 0 and len(c.args) == 6 and re.search(r"\bMPI_(SUM|PROD)\b", c.args[4]):
            again = _call_text(c.name, ["MPI_IN_PLACE", *c.args[1:]])
            yield c.start, c.stmt_end, f"{src[c.start:c.stmt_end]} {again};", f"MPI_{c.name} result reduced again"


def wrong_root(src: str) -> Iterator[Edit]:
    for c in find_calls(src, tuple(ROOT_ARG)):
        k = ROOT_ARG[c.name]
        if len(c.args) <= k + 1:
            continue
        args = list(c.args)
        comm = args[k + 1]
        # a GNU statement expression (gcc and g++): the rank before the intended root
        args[k] = (f"({{ int mutant_np_; MPI_Comm_size({comm}, &mutant_np_); "
                   f"(({args[k]}) + mutant_np_ - 1) % mutant_np_; }})")
        yield c.start, c.end, _call_text(c.name, args), f"MPI_{c.name} root {c.args[k]} -> another rank"


def wrong_op(src: str) -> Iterator[Edit]:
    for m in re.finditer(r"\bMPI([_.])(" + "|".join(OP_SWAP) + r")\b", src):
        new = f"MPI{m.group(1)}{OP_SWAP[m.group(2)]}"
        yield m.start(), m.end(), new, f"{m.group(0)} -> {new}"


def split_off_by_one(src: str) -> Iterator[Edit]:
    """``r < n % size`` -> ``r <= n % size``: one rank too many gets an extra element."""
    for m in re.finditer(r"<(?!=)(\s*[A-Za-z_][\w.]*\s*%\s*[A-Za-z_][\w.]*)", src):
        yield m.start(), m.end(), "<=" + m.group(1), f"'<{m.group(1)}' -> '<={m.group(1)}'"


def range_end_off_by_one(src: str) -> Iterator[Edit]:
    """A loop over this rank's range stops one element early (``i < hi`` -> ``i < hi - 1``)."""
    for m in re.finditer(r"for\s*\([^;]*;\s*\w+\s*<\s*(hi|end|cnt|local_n|nlocal|counts?\[\w+\])\s*[;&]", src):
        bound = m.group(1)
        yield m.start(1), m.end(1), f"({bound} - 1)", f"loop bound {bound} -> {bound} - 1"


def swap_send_recv(src: str) -> Iterator[Edit]:
    """Receive before sending: adjacent Send/Recv swapped, or a Sendrecv split into Recv then Send."""
    p2p = list(find_calls(src, ("Send", "Recv", "Ssend", "Isend", "Irecv")))
    for a, b in zip(p2p, p2p[1:]):
        between = src[a.stmt_end:b.start] if a.stmt_end > 0 else "x"
        if b.stmt_end > 0 and not between.strip() and {a.name, b.name} in ({"Send", "Recv"}, {"Ssend", "Recv"}):
            first, second = src[a.start:a.stmt_end], src[b.start:b.stmt_end]
            yield a.start, b.stmt_end, second + between + first, f"MPI_{a.name}/MPI_{b.name} order swapped"
    for c in find_calls(src, ("Sendrecv",)):
        if len(c.args) == 12:
            s = c.args
            recv = _call_text("Recv", [s[5], s[6], s[7], s[8], s[9], s[10], s[11]])
            send = _call_text("Send", [s[0], s[1], s[2], s[3], s[4], s[10]])
            yield c.start, c.end, f"{recv}; {send}", "MPI_Sendrecv -> MPI_Recv then MPI_Send"


def rank0_only_result(src: str) -> Iterator[Edit]:
    """All-collectives become rooted ones: only rank 0 holds the result the others go on using."""
    for c in find_calls(src, ("Allreduce", "Allgather", "Allgatherv")):
        args = list(c.args)
        rooted = {"Allreduce": "Reduce", "Allgather": "Gather", "Allgatherv": "Gatherv"}[c.name]
        yield c.start, c.end, _call_text(rooted, args[:-1] + ["0", args[-1]]), f"MPI_{c.name} -> MPI_{rooted} to rank 0"


def missing_remainder(src: str) -> Iterator[Edit]:
    """``n % size`` -> ``0``: the elements left over by an uneven split are forgotten."""
    for m in re.finditer(r"(?<![)\w\]])([A-Za-z_]\w*)\s*%\s*([A-Za-z_]\w*)\b", src):
        yield m.start(), m.end(), "0", f"'{m.group(0)}' -> 0"


OPERATORS: dict[str, Callable[[str], Iterator[Edit]]] = {
    f.__name__: f for f in (drop_collective, duplicate_collective, wrong_root, wrong_op, split_off_by_one,
                            range_end_off_by_one, swap_send_recv, rank0_only_result, missing_remainder)
}


def mutate(source: str, operators: list[str] | None = None) -> list[Mutant]:
    """Every mutant of ``source`` (one per operator and site), without duplicates or no-ops."""
    seen = {source}
    mutants = []
    for name in operators or list(OPERATORS):
        if name not in OPERATORS:
            raise ValueError(f"unknown mutation operator {name!r}; known: {', '.join(OPERATORS)}")
        for start, end, text, what in OPERATORS[name](source):
            new = source[:start] + text + source[end:]
            if new not in seen:
                seen.add(new)
                mutants.append(Mutant(name, _line(source, start), what, new))
    return mutants
