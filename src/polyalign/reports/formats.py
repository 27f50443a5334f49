"""The report's output formats: Markdown, self-contained HTML, tidy CSV and LaTeX.

Each renderer takes the title, header lines, tables and figures built by polyalign.reports.report
and only lays them out; no number is computed here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyalign.core.files import md_table

if TYPE_CHECKING:
    from polyalign.reports.run_data import Table


@dataclass
class ReportFigure:
    """A PNG for the report; `name` is its file stem when written next to md/latex output."""

    name: str
    title: str
    png: bytes


def render_md(title: str, lines: list[str], tables: list[Table], figures: list[ReportFigure], files_dir: str) -> str:
    out = [f"# {title}", "", *lines, ""]
    for t in tables:
        cells = [
            [f"**{t.cell(i, j)}**" if (i, j) in t.best else t.cell(i, j) for j in range(len(t.header))]
            for i in range(len(t.rows))
        ]
        out += [f"## {t.title}", "", *md_table(t.header, cells)]
        out += ["", t.note, ""] if t.note else [""]
    out += ["## Figures", ""] + [f"![{f.title}]({files_dir}/{f.name}.png)\n" for f in figures]
    return "\n".join(out)


def render_html(title: str, lines: list[str], tables: list[Table], figures: list[ReportFigure]) -> str:
    """One self-contained file: figures are inlined as base64 PNGs."""
    css = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#eef2f7}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;"
        "background:#e3f4e1}p.note{color:#555;font-size:90%}img{max-width:100%;border:1px solid #ddd}"
        "h2{margin-top:1.6em;border-bottom:1px solid #ddd}"
    )
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    out += [f"<p>{html.escape(line)}</p>" for line in lines]
    for t in tables:
        out.append(
            f"<h2>{html.escape(t.title)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
            + "</tr>"
        )
        for i in range(len(t.rows)):
            out.append(
                "<tr>"
                + "".join(
                    f"<td{' class=best' if (i, j) in t.best else ''}>{html.escape(t.cell(i, j))}</td>"
                    for j in range(len(t.header))
                )
                + "</tr>"
            )
        out.append("</table>" + (f"<p class=note>{html.escape(t.note)}</p>" if t.note else ""))
    out.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        out.append(
            f"<figure><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(f.title)}</figcaption></figure>"
        )
    return "\n".join(out + ["</body></html>"]) + "\n"


def render_csv(tables: list[Table]) -> str:
    """Tidy: one line per cell (table, row, column, value, best, row_index); row_index tells the
    rows of a table apart where their labels repeat (one comparison over many languages)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "title", "row", "column", "value", "best", "row_index"])
    for t in tables:
        for i, row in enumerate(t.rows):
            for j in range(1, len(t.header)):
                value = row[j]
                writer.writerow(
                    [
                        t.name,
                        t.title,
                        row[0],
                        t.header[j],
                        "" if value is None else f"{value:.6g}" if isinstance(value, float) else value,
                        int((i, j) in t.best),
                        i,
                    ]
                )
    return buffer.getvalue()


def _tex(text: str) -> str:
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "Δ": r"$\Delta$",
        "†": r"$\dagger$",
        "→": r"$\to$",
        "–": "--",
        "—": "---",
    }
    return "".join(table.get(ch, ch) for ch in str(text))


def render_latex(title: str, lines: list[str], tables: list[Table], figures: list[ReportFigure], files_dir: str) -> str:
    out = [
        r"\documentclass{article}",
        r"\usepackage[margin=2cm,landscape]{geometry}",
        r"\usepackage{graphicx}",
        r"\usepackage[utf8]{inputenc}",
        r"\begin{document}",
        rf"\section*{{{_tex(title)}}}",
        *[_tex(line) + r"\par" for line in lines],
    ]
    for t in tables:
        out += [
            r"\begin{table}[htbp]\centering\small",
            rf"\textbf{{{_tex(t.title)}}}\\[4pt]",
            r"\begin{tabular}{l" + "r" * (len(t.header) - 1) + "}",
            r"\hline",
            " & ".join(map(_tex, t.header)) + r" \\",
            r"\hline",
        ]
        for i in range(len(t.rows)):
            cells = [_tex(t.cell(i, j)) for j in range(len(t.header))]
            out.append(" & ".join(rf"\textbf{{{c}}}" if (i, j) in t.best else c for j, c in enumerate(cells)) + r" \\")
        out += [
            r"\hline",
            r"\end{tabular}",
            (r"\\[2pt]\footnotesize " + _tex(t.note)) if t.note else "",
            r"\end{table}",
        ]
    for f in figures:
        out += [
            r"\begin{figure}[htbp]\centering",
            r"\includegraphics[width=\linewidth,height=0.8\textheight,keepaspectratio]"
            + f"{{{files_dir}/{f.name}.png}}",
            rf"\caption{{{_tex(f.title)}}}",
            r"\end{figure}",
        ]
    return "\n".join(out + [r"\end{document}"]) + "\n"
