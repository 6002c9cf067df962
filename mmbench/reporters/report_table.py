"""The report as rich tables for the terminal: the same text as the markdown, in columns."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from mmbench.analysis.ledger import CacheTradeoff
from mmbench.analysis.report import Report, Section
from mmbench.reporters import fidelity_report, models_report
from mmbench.reporters.markdown import (
    EXTRAPOLATED_MARK,
    HEAP_COLUMNS,
    HEAP_GAP_NOTE,
    SUMMARY_COLUMNS,
    SYSTEM_COLUMNS,
    fixed_text,
    footnotes,
    ledger_header,
    ledger_note,
    ledger_rows,
    measured_line,
    row_cells,
    section_has_ledger,
    section_heading,
    summary_cells,
    summary_note,
    system_cells,
    system_note,
    table_header,
    title,
    tradeoff_header,
    tradeoff_heading,
    tradeoff_note,
    tradeoff_rows,
)


def _cell(text: str, extrapolated: bool) -> Text:
    # Text, not markup: figures and causes may hold brackets that rich would read as tags.
    if extrapolated and text != "-":
        return Text(text, style="italic") + Text(EXTRAPOLATED_MARK)
    return Text(text)


def _head(report: Report) -> Table:
    # A borderless grid, so that the title lines are as wide as the terminal, not as the first table.
    grid = Table.grid()
    grid.add_column()
    grid.add_row(Text(title(report), style="bold"))
    if report.description:
        grid.add_row(Text(report.description))
    grid.add_row(Text(fixed_text(report)))
    return grid


def _pr_table(report: Report, section: Section) -> Table:
    table = Table(title=section_heading(report, section), header_style="bold", title_justify="left")
    for name in table_header(section):
        table.add_column(name, justify="right", no_wrap=True)
    for row in section.rows:
        k = Text(f"{row.rollouts}{EXTRAPOLATED_MARK}" if row.extrapolated else str(row.rollouts))
        table.add_row(k, *(_cell(t, x) for t, x in row_cells(row, section)))
    notes = footnotes(report, section)
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def _summary_table(report: Report, section: Section, last: bool) -> Table:
    with_heap = report.has_heap_peak
    suffix = f" ({section.title})" if section.params else ""
    table = Table(title=f"Per mode{suffix}", header_style="bold", title_justify="left")
    for name in (*SUMMARY_COLUMNS, *(HEAP_COLUMNS if with_heap else ())):
        # A range may go to a second line in a narrow terminal, but is never cut.
        table.add_column(
            name,
            justify="left" if name == "mode" else "right",
            no_wrap=name == "mode",
            overflow="fold",
        )
    for s in section.summaries:
        table.add_row(*(Text(c) for c in summary_cells(s, with_heap)))
    if last:
        notes = [summary_note(report), *([HEAP_GAP_NOTE] if with_heap else []), measured_line(report)]
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def _system_table(report: Report, section: Section, last: bool) -> Table | None:
    if not any(s.system_total is not None for s in section.summaries):
        return None
    suffix = f" ({section.title})" if section.params else ""
    table = Table(title=f"Memory, bytes and time per mode{suffix}", header_style="bold", title_justify="left")
    for name in SYSTEM_COLUMNS:
        # The mode is never folded ("ephemeral+hash-only" over three lines); the figures may be.
        table.add_column(
            name, justify="left" if name == "mode" else "right", no_wrap=name == "mode", overflow="fold"
        )
    for s in section.summaries:
        table.add_row(*(Text(c) for c in system_cells(s, section)))
    if last:
        table.caption = system_note(report)
        table.caption_justify = "left"
    return table


def per_mode_table(report: Report) -> Table | None:
    """The "Memory, bytes and time per mode" table, where the report is one comparison of modes (a
    single section of two or more): what a sweep ends with. None otherwise (`mmbench report` shows
    every section's)."""
    if len(report.sections) != 1 or len(report.sections[0].modes) < 2:
        return None
    return _system_table(report, report.sections[0], last=True)


def _ledger_table(section: Section, last: bool) -> Table | None:
    if not section_has_ledger(section):
        return None
    suffix = f" ({section.title})" if section.params else ""
    table = Table(title=f"Ledger at the largest K{suffix}", header_style="bold", title_justify="left")
    for i, name in enumerate(ledger_header(section)):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for row in ledger_rows(section):
        table.add_row(*(Text(c) for c in row))
    if last:
        table.caption = ledger_note()
        table.caption_justify = "left"
    return table


def _tradeoff_table(trade: CacheTradeoff) -> Table:
    table = Table(title=tradeoff_heading(trade), header_style="bold", title_justify="left")
    for name in tradeoff_header(trade):
        table.add_column(name, justify="right", overflow="fold")
    for row in tradeoff_rows(trade):
        table.add_row(*(Text(c) for c in row))
    table.caption = tradeoff_note(trade)
    table.caption_justify = "left"
    return table


def report_tables(report: Report) -> list[Table]:
    """The title lines, then per section the pull request's table and the per-mode summary (with
    the system total and the ledger where the results have them), then the engine-cache trade-off;
    notes in the captions."""
    tables = [_head(report)]
    n = len(report.sections)
    for i, section in enumerate(report.sections):
        tables.append(_pr_table(report, section))
        last = i == n - 1
        tables.append(_summary_table(report, section, last=last))
        extra = (_system_table(report, section, last), _ledger_table(section, last))
        tables += [t for t in extra if t is not None]
    tables += [_tradeoff_table(trade) for trade in report.cache_tradeoffs]
    if report.fidelity:
        tables.append(_fidelity_table(report))
    if report.models:
        tables.append(_models_table(report))
    return tables


def _models_table(report: Report) -> Table:
    table = Table(title=models_report.HEADING, header_style="bold", title_justify="left")
    for i, name in enumerate(models_report.HEADER):
        table.add_column(name, justify="left" if i < 2 else "right", overflow="fold")
    for row in models_report.rows(report.models):
        table.add_row(*(Text(c) for c in row))
    table.caption = models_report.NOTE
    table.caption_justify = "left"
    return table


def _fidelity_table(report: Report) -> Table:
    table = Table(title=fidelity_report.HEADING, header_style="bold", title_justify="left")
    for i, name in enumerate(fidelity_report.HEADER):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in fidelity_report.rows(report.fidelity):
        table.add_row(*(Text(c) for c in row))
    table.caption = fidelity_report.NOTE
    table.caption_justify = "left"
    return table
