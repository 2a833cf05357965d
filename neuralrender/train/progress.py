"""Progress bars with ETA (rich on a TTY; a line every ~10% otherwise) and the end-of-run summary table."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int = 0, desc: str = "", quiet: bool = False):
        self.total, self.start, self.desc = total, start, desc
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.postfix = ""
        self.t0 = time.time()
        self.last_print = start
        self._bar = None
        if not quiet and self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[post]}"), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(desc, total=total, completed=start, post="")

    def set_postfix(self, values: dict[str, float]) -> None:
        self.postfix = " ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:4])
        if self._bar is not None:
            self._bar.update(self._task, post=self.postfix)

    def update(self, step: int) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step)
            return
        every = max(1, self.total // 10)
        if step - self.last_print >= every or step == self.total:
            self.last_print = step
            done = step - self.start
            rate = done / max(time.time() - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            print(f"[{self.desc}] step {step}/{self.total}  {rate:.2f} it/s  eta {eta:.0f}s  {self.postfix}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def print_summary(summary: dict, note: str = "") -> None:
    rows = [("method", summary["method"]), ("run", summary["run_dir"]), ("steps", str(summary["steps"]))]
    if summary.get("resumed_from") is not None:
        rows.append(("resumed from", str(summary["resumed_from"])))
    rows.append(("time", f"{summary['seconds']:.1f} s ({summary['steps_per_s']:.2f} steps/s)"))
    rows += [(f"train {k}", f"{v:.4g}") for k, v in summary["train"].items()]
    rows += [(f"eval {k}", f"{v:.4g}") for k, v in summary["eval"].items()]
    if summary.get("renders"):
        rows.append(("renders", "\n".join(summary["renders"][:4])))
    if note:
        rows.append(("note", note))
    print_table("run summary", rows)
