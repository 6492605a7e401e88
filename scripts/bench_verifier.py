#!/usr/bin/env python
"""How trustworthy is `mpiforge verify`? Every oracle file of every task (C/C++ and mpi4py) must
pass, and mutants of every main (C/C++) oracle (dropped/duplicated collectives, wrong root or op,
off-by-one splits, receive-before-send deadlocks, results only valid on rank 0, forgotten
remainders) should be killed.

One mpiexec job at a time, each with a small wall-clock limit (--timeout for oracles, a shorter
--mutant-timeout for mutants, which mostly deadlock); oracles are checked at every
rank count of --ranks on --oracle-inputs generated tests, each mutant on --mutant-inputs tests
per rank count and only until its first failing run.

    python scripts/bench_verifier.py --quick                 # 3 tasks, under a minute
    python scripts/bench_verifier.py --json verifier.json    # every task, a few minutes
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mpiforge.codegen.mutants import mutate
from mpiforge.codegen.mutation import score_task, summarize
from mpiforge.codegen.sandbox import Limits
from mpiforge.codegen.tasks import get_task, load_tasks

QUICK_TASKS = ("array_sum", "game_of_life", "power_iteration")


def _table(scores, summary: dict) -> Table:
    table = Table(title="verifier vs oracles and their mutants")
    for col in ("task", "category", "oracles", "mutants", "killed", "score"):
        table.add_column(col, justify="right" if col in ("mutants", "killed", "score") else "left")
    for s in scores:
        n = len(s.mutants)
        oracles = ", ".join(f"{name.split('.')[-1]} {v}" for name, v in s.oracles.items())  # e.g. "c pass, py pass"
        table.add_row(s.task, s.category, oracles, str(n), str(s.killed), f"{s.killed / n:.2f}" if n else "-")
    m = summary["mutants"]
    table.add_row("[bold]total", "", f"{summary['oracles']['passed']}/{summary['oracles']['total']} pass",
                  str(m["total"]), str(m["killed"]), f"{summary['mutation_score'] or 0:.3f}", end_section=True)
    return table


@click.command()
@click.option("--quick", is_flag=True, help=f"Only {', '.join(QUICK_TASKS)}.")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@click.option("--ranks", default="1,2,3,4", show_default=True, help="Rank counts the oracles must pass at.")
@click.option("--oracle-inputs", default=3, show_default=True, help="Generated tests per rank count for oracles.")
@click.option("--mutant-inputs", default=2, show_default=True, help="Generated tests per rank count for mutants.")
@click.option("--timeout", default=10.0, show_default=True, help="Wall-clock seconds per oracle run (deadlock limit).")
@click.option("--mutant-timeout", default=5.0, show_default=True,
              help="Wall-clock seconds per mutant run (a correct run takes well under a second).")
@click.option("--no-mutants", is_flag=True, help="Only check the oracles.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures here.")
@click.option("-v", "--verbose", is_flag=True, help="Log surviving mutants.")
def main(quick: bool, tasks: tuple[str, ...], ranks: str, oracle_inputs: int, mutant_inputs: int, timeout: float,
         mutant_timeout: float, no_mutants: bool, json_path: Path | None, verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    chosen = [get_task(t) for t in (tasks or (QUICK_TASKS if quick else load_tasks()))]
    rank_counts = tuple(int(r) for r in ranks.split(","))
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(timeout * 3))
    mutant_limits = Limits(wall_seconds=mutant_timeout, cpu_seconds=int(mutant_timeout * 3))
    steps = sum(len(t.oracles) + (0 if no_mutants else len(mutate(t.oracle.read_text()))) for t in chosen)
    start = time.monotonic()
    scores = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("verifier", total=steps)
        for task in chosen:
            scores.append(score_task(task, rank_counts, oracle_inputs, mutant_inputs, limits, mutant_limits,
                                     with_mutants=not no_mutants,
                                     progress=lambda label: progress.update(bar, advance=1, description=label)))
    summary = summarize(scores)
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["settings"] = {"ranks": list(rank_counts), "oracle_inputs": oracle_inputs,
                           "mutant_inputs": mutant_inputs, "timeout_s": timeout,
                           "mutant_timeout_s": mutant_timeout}
    console = Console()
    console.print(_table(scores, summary))
    console.print(f"mutants killed by verdict: {summary['mutants']['by_verdict']}; "
                  f"survivors by operator: {summary['mutants']['survived_by_operator']}; {summary['seconds']:.0f} s")
    console.print(_targets(summary))
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


def _targets(summary: dict) -> Table:
    """The issue's targets against this run. A swapped send/receive that is killed at all must be
    killed as a timeout: such a mutant deadlocks, and the verdict has to say so."""
    oracles, mutants = summary["oracles"], summary["mutants"]
    swapped = mutants["verdicts_by_operator"].get("swap_send_recv", {})
    killed_swaps = {v: c for v, c in swapped.items() if v != "pass"}
    rows = [("every oracle passes", f"{oracles['passed']}/{oracles['total']}", oracles["passed"] == oracles["total"]),
            ("mutation score >= 0.95", f"{summary['mutation_score']}", (summary["mutation_score"] or 0) >= 0.95),
            ("deadlocking mutants reported as timeouts", ", ".join(f"{v} {c}" for v, c in sorted(killed_swaps.items()))
             or "none killed", set(killed_swaps) <= {"timeout"})]
    table = Table(title="targets")
    for column in ("target", "measured", ""):
        table.add_column(column)
    for name, measured, met in rows:
        table.add_row(name, measured, "met" if met else "[red]MISSED[/red]")
    return table


if __name__ == "__main__":
    main()
