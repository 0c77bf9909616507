"""A self-contained HTML report of one evaluation run: overall accuracy with its CI, the benchmark rows the
loader skipped (counts per reason code and the first rows with their reasons), per-group bars (matplotlib,
embedded as base64 PNG) with a table per group, parse failures, the scorer spread when present, and a
sample of wrong answers. Every value taken from a sample is HTML-escaped.

Plot text uses DejaVu Sans plus an installed CJK font when there is one (``CJK_FONTS``), so SLAKE's
Chinese group values draw; a category label the fonts cannot draw is shown as its row number ("#3"), the
group's HTML table giving the text."""

from __future__ import annotations

import base64
import functools
import html
import io
import warnings
from pathlib import Path
from typing import Any

MAX_WRONG = 25
MAX_BARS = 30
BASE_FONT = "DejaVu Sans"
# Name prefixes of CJK-capable font families, in order of preference.
CJK_FONTS = ("Noto Sans CJK", "Noto Serif CJK", "Source Han Sans", "Source Han Serif", "WenQuanYi", "AR PL")
GLYPH_WARNING = r"Glyph \d+ .*missing from font"


@functools.lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of an installed CJK-capable font matplotlib knows (first by ``CJK_FONTS`` order,
    then name), or None."""
    from matplotlib import font_manager

    names = sorted({f.name for f in font_manager.fontManager.ttflist})
    for prefix in CJK_FONTS:
        for name in names:
            if name.lower().startswith(prefix.lower()):
                return name
    return None


def plot_fonts() -> tuple[str, ...]:
    """Font families for plot text: the base font, then a CJK font as per-glyph fallback if installed."""
    cjk = cjk_font()
    return (BASE_FONT, cjk) if cjk else (BASE_FONT,)


@functools.lru_cache(maxsize=4)
def _codepoints(families: tuple[str, ...]) -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    points: set[int] = set()
    for fam in families:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=fam), fallback_to_default=False)
        except ValueError:
            continue
        points.update(FT2Font(path).get_charmap())
    return frozenset(points)


def drawable(text: str, families: tuple[str, ...] | None = None) -> bool:
    """Whether every character of ``text`` has a glyph in the plot fonts."""
    points = _codepoints(families or plot_fonts())
    return all(ord(ch) in points for ch in text)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * float(x):.2f}%"


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def group_rows(groups: dict[str, Any]) -> dict[str, list[tuple[str, float, int, list[float] | None]]]:
    """``{key: [(value, accuracy, n, ci95 or None), ...]}`` from a per-group summary, tolerating the
    common shapes (``{key: {value: {accuracy|acc|mean, n|count, ci95?}}}``)."""
    out: dict[str, list[tuple[str, float, int, list[float] | None]]] = {}
    for key in sorted(groups or {}):
        entries = groups[key]
        if not isinstance(entries, dict):
            continue
        rows = []
        for value in sorted(entries, key=str):
            st = entries[value]
            if not isinstance(st, dict):
                continue
            acc = next((st[k] for k in ("accuracy", "acc", "mean", "score") if st.get(k) is not None), None)
            n = next((st[k] for k in ("n", "count", "n_scored") if st.get(k) is not None), 0)
            if acc is None:
                continue
            ci = st.get("ci95") or st.get("ci")
            rows.append((str(value), float(acc), int(n), list(ci) if ci else None))
        if rows:
            out[key] = rows
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_label(index: int, value: str, n: int, families: tuple[str, ...] | None = None) -> str:
    """A bar's label: the value (cut to 40 characters) with its count, or "#index" when the plot fonts
    cannot draw the value (the group's HTML table lists it under that number)."""
    text = value[:40]
    return f"{text} (n={n})" if text and drawable(text, families) else f"#{index} (n={n})"


def _bar_plot(title: str, rows: list[tuple[str, float, int, list[float] | None]]) -> str:
    """Horizontal accuracy bars (first ``MAX_BARS`` rows, numbered from 1 as in the group table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fonts = plot_fonts()
    rows = rows[:MAX_BARS]
    labels = [plot_label(i + 1, r[0], r[2], fonts) for i, r in enumerate(rows)]
    accs = [100 * r[1] for r in rows]
    with warnings.catch_warnings(), matplotlib.rc_context({"font.family": list(fonts)}):
        warnings.filterwarnings("ignore", message=GLYPH_WARNING)
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
        ax.barh(range(len(rows)), accs, color="#4c72b0")
        for i, r in enumerate(rows):
            if r[3]:
                ax.plot([100 * r[3][0], 100 * r[3][1]], [i, i], color="black", linewidth=1)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(title if drawable(title, fonts) else "accuracy by group (see table)")
        data = _png(fig)
        plt.close(fig)
    return data


def _group_section(key: str, rows: list[tuple[str, float, int, list[float] | None]]) -> str:
    """Heading, bar plot and table (every value, HTML-escaped) of one group key; rows by size, then name."""
    rows = sorted(rows, key=lambda r: (-r[2], r[0]))
    table = _table(["#", key, "n", "accuracy", "95% CI"],
                   [[i + 1, r[0], r[2], _pct(r[1]), f"{_pct(r[3][0])} – {_pct(r[3][1])}" if r[3] else "n/a"]
                    for i, r in enumerate(rows)])
    return (f"<h2>By {_e(key)}</h2><img alt='accuracy by {_e(key)}' "
            f"src='data:image/png;base64,{_bar_plot(key, rows)}'>{table}")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
       "text-align:left;vertical-align:top;font-size:13px}pre{white-space:pre-wrap;margin:0}"
       ".big{font-size:28px;font-weight:bold}")


def _skipped_section(skipped: dict[str, Any]) -> str:
    """Rows the loader could not turn into items (count per reason code, the first examples with their
    reasons) and rows an option did not select; empty when there are none."""
    parts = []
    if skipped.get("n"):
        examples = skipped.get("examples") or []
        parts.append(f"<h2>Rows skipped while loading: {_e(skipped['n'])}</h2>")
        parts.append(_table(["reason code", "rows"], [[k, v] for k, v in (skipped.get("by_code") or {}).items()]))
        parts.append(f"<p>First {len(examples)} (all in {_e(skipped.get('file'))}):</p>")
        parts.append(_table(["id", "code", "reason"], [[r["id"], r["code"], r["reason"]] for r in examples]))
    if skipped.get("not_selected"):
        parts.append("<h2>Rows not selected by an option</h2>")
        parts.append(_table(["why", "rows"], [[k, v] for k, v in skipped["not_selected"].items()]))
    return "".join(parts)


def render(results: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    """The report as an HTML string."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>medvl eval: {_e(results.get('benchmark'))}"
             f"</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>{_e(results.get('benchmark'))} &mdash; {_e(results.get('model'))}</h1>")
    if results.get("description"):
        parts.append(f"<p>{_e(results['description'])}</p>")
    ci = results.get("ci95")
    ci_txt = f" (95% CI {_pct(ci[0])} &ndash; {_pct(ci[1])})" if ci else ""
    parts.append(f"<p class='big'>{_pct(results.get('accuracy'))}{ci_txt}</p>")
    parts.append(_table(["field", "value"], [
        ["split", results.get("split")], ["protocol", results.get("protocol")], ["scorer", results.get("scorer")],
        ["samples", results.get("n")], ["scored (gold known)", results.get("n_scored")],
        ["parse failures", f"{results.get('parse_failures', 0)} ({_pct(results.get('parse_failure_rate'))})"],
        ["rows skipped while loading (not scored)", (results.get("loader_skipped") or {}).get("n", 0)],
        ["missing answers", len(results.get("missing_ids") or [])],
        ["model errors", len(results.get("error_ids") or [])],
        ["medvl version", results.get("medvl_version")],
    ] + ([["submission file", results["submission"]]] if results.get("submission") else [])))
    spread = results.get("scorer_spread")
    if spread:
        parts.append("<h2>Same predictions, different scorers</h2>")
        rows = [[name, "n/a (all fallback)" if v.get("all_fallback") else _pct(v.get("accuracy")),
                 f"{_pct(v['ci95'][0])} – {_pct(v['ci95'][1])}" if v.get("ci95") else "n/a",
                 v.get("parse_failures"), v.get("fallback", 0)] for name, v in sorted(spread["scorers"].items())]
        parts.append(_table(["scorer", "accuracy", "95% CI", "parse failures",
                             "items scored by medvl (toolkit has no rule)"], rows))
        parts.append(f"<p>Spread (max &minus; min accuracy): {_pct(spread.get('spread'))}</p>")
    parts.append(_skipped_section(results.get("loader_skipped") or {}))
    for key, rows in group_rows(results.get("groups") or {}).items():
        parts.append(_group_section(key, rows))
    failures = [s for s in samples if s.get("unparsed") and not s.get("missing") and not s.get("error")]
    if failures:
        parts.append(f"<h2>Parse failures (first {min(MAX_WRONG, len(failures))} of {len(failures)})</h2>")
        parts.append(_table(["id", "response"], [[s["id"], s.get("response")] for s in failures[:MAX_WRONG]]))
    wrong = [s for s in samples if s.get("correct") is False and not s.get("unparsed")]
    if wrong:
        parts.append(f"<h2>Wrong answers (first {min(MAX_WRONG, len(wrong))} of {len(wrong)})</h2>")
        parts.append(_table(["id", "prompt", "response", "parsed", "gold"],
                            [[s["id"], s.get("prompt"), s.get("response"), s.get("parsed"),
                              s.get("gold_text") or s.get("answer")] for s in wrong[:MAX_WRONG]]))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: str | Path, results: dict[str, Any], samples: list[dict[str, Any]]) -> Path:
    """Write the report to ``path`` and return it."""
    p = Path(path)
    p.write_text(render(results, samples), encoding="utf-8")
    return p
