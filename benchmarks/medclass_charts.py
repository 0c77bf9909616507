"""Charts, plots, tables, diagrams and text blocks rendered with matplotlib: the figures PubMedVision's
image filter removes. ``render_chart(kind, rng)`` draws one figure with random data, style, size and
labels and returns it as uint8 RGB."""

from __future__ import annotations

import numpy as np

WORDS = ["patients", "control", "treatment", "age", "dose", "score", "survival", "time (months)", "risk",
         "expression", "log2 fold change", "baseline", "follow-up", "cohort", "group", "sensitivity",
         "response", "mortality", "incidence", "biomarker", "p-value", "week", "mg/kg", "HbA1c", "BMI"]
STYLES = ["default", "ggplot", "bmh", "classic", "fivethirtyeight", "grayscale", "seaborn-v0_8-whitegrid",
          "seaborn-v0_8-darkgrid", "seaborn-v0_8-paper", "seaborn-v0_8-ticks", "tableau-colorblind10",
          "Solarize_Light2", "dark_background"]
KINDS = ["bar", "line", "scatter", "box", "pie", "histogram", "heatmap", "kaplan_meier", "roc", "forest",
         "table", "flowchart", "text_block", "errorbar_multi", "schematic"]


def _w(rng: np.random.Generator, n: int = 1) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)).capitalize()


def _draw(kind: str, fig, rng: np.random.Generator) -> None:  # noqa: C901 - one branch per chart kind
    ax = fig.add_subplot(111)
    k = int(rng.integers(2, 7))
    if kind == "bar":
        x = np.arange(k)
        m = int(rng.integers(1, 4))
        for j in range(m):
            ax.bar(x + j * 0.8 / m, rng.uniform(1, 10, k), 0.8 / m, yerr=rng.uniform(0, 1, k) if rng.random() < 0.5
                   else None, label=_w(rng))
        ax.set_xticks(x, [_w(rng) for _ in range(k)], rotation=int(rng.choice([0, 30, 45])))
    elif kind == "line":
        t = np.linspace(0, 10, 50)
        for _ in range(int(rng.integers(1, 5))):
            ax.plot(t, np.cumsum(rng.normal(0, 1, 50)), marker=rng.choice(["", "o", "s", "^"]), label=_w(rng))
    elif kind == "scatter":
        n = int(rng.integers(20, 300))
        x = rng.normal(0, 1, n)
        ax.scatter(x, 0.7 * x + rng.normal(0, 1, n), s=rng.uniform(5, 40), c=rng.uniform(0, 1, n)
                   if rng.random() < 0.4 else None, alpha=0.8)
        if rng.random() < 0.5:
            ax.plot([-3, 3], [-2.1, 2.1], "r--")
    elif kind == "box":
        ax.boxplot([rng.normal(rng.uniform(0, 5), rng.uniform(0.5, 2), 40) for _ in range(k)])
    elif kind == "pie":
        ax.pie(rng.uniform(1, 5, k), labels=[_w(rng) for _ in range(k)], autopct="%1.0f%%")
    elif kind == "histogram":
        ax.hist(rng.normal(0, 1, 500), bins=int(rng.integers(10, 40)), alpha=0.8)
        if rng.random() < 0.5:
            ax.hist(rng.normal(1, 1, 500), bins=25, alpha=0.6)
    elif kind == "heatmap":
        n = int(rng.integers(5, 30))
        im = ax.imshow(rng.normal(0, 1, (n, int(rng.integers(5, 30)))),
                       cmap=str(rng.choice(["viridis", "RdBu_r", "coolwarm", "magma", "YlOrRd"])), aspect="auto")
        fig.colorbar(im, ax=ax)
    elif kind == "kaplan_meier":
        for _ in range(int(rng.integers(1, 4))):
            t = np.sort(rng.exponential(rng.uniform(10, 40), 60))
            ax.step(np.r_[0, t], np.r_[1, 1 - np.arange(1, 61) / 60 * rng.uniform(0.5, 1)], where="post")
        ax.set_ylim(0, 1.05)
        ax.text(0.6, 0.8, f"log-rank p = {rng.uniform(0.001, 0.2):.3f}", transform=ax.transAxes)
    elif kind == "roc":
        for _ in range(int(rng.integers(1, 4))):
            a = rng.uniform(0.3, 3)
            f = np.linspace(0, 1, 100)
            ax.plot(f, f ** (1 / (1 + a)), label=f"AUC = {rng.uniform(0.6, 0.97):.2f}")
        ax.plot([0, 1], [0, 1], "k--")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("Sensitivity")
    elif kind == "forest":
        n = int(rng.integers(4, 14))
        est = rng.normal(0, 0.5, n)
        err = rng.uniform(0.1, 0.6, n)
        ax.errorbar(est, np.arange(n), xerr=err, fmt="s", color="k", capsize=2)
        ax.axvline(0, color="gray", ls="--")
        ax.set_yticks(np.arange(n), [f"Study {i + 1}" for i in range(n)])
        ax.set_xlabel("log odds ratio")
    elif kind == "table":
        ax.axis("off")
        rows, cols = int(rng.integers(3, 12)), int(rng.integers(2, 6))
        cells = [[f"{rng.uniform(0, 100):.1f}" for _ in range(cols)] for _ in range(rows)]
        tb = ax.table(cellText=cells, colLabels=[_w(rng) for _ in range(cols)],
                      rowLabels=[_w(rng) for _ in range(rows)], loc="center")
        tb.scale(1, rng.uniform(1.0, 1.6))
    elif kind == "flowchart":
        ax.axis("off")
        n = int(rng.integers(3, 7))
        for i in range(n):
            y = 1 - (i + 0.5) / n
            ax.text(0.5, y, f"{_w(rng, 2)}\n(n = {int(rng.integers(10, 2000))})", ha="center", va="center",
                    bbox={"boxstyle": "round", "fc": str(rng.choice(["white", "lightblue", "lightyellow"]))})
            if i < n - 1:
                ax.annotate("", xy=(0.5, y - 0.6 / n), xytext=(0.5, y - 0.4 / n),
                            arrowprops={"arrowstyle": "->"})
            if rng.random() < 0.4:
                ax.text(0.85, y - 0.5 / n, f"Excluded\n(n = {int(rng.integers(1, 99))})", ha="center",
                        bbox={"boxstyle": "square", "fc": "white"})
    elif kind == "text_block":
        ax.axis("off")
        lines = [" ".join(_w(rng, int(rng.integers(3, 8))).split()) for _ in range(int(rng.integers(4, 16)))]
        ax.text(0.02, 0.98, "\n".join(lines), va="top", ha="left", fontsize=float(rng.uniform(7, 13)),
                family=str(rng.choice(["serif", "sans-serif", "monospace"])))
    elif kind == "schematic":  # graphical-abstract style drawing: coloured shapes, gradients, arrows, labels
        from matplotlib import patches
        ax.axis("off")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if rng.random() < 0.4:
            ax.imshow(np.linspace(0, 1, 64)[None, :] * np.ones((8, 1)), extent=(0, 1, 0, 1), aspect="auto",
                      cmap=str(rng.choice(["Blues", "Oranges", "Greens", "Purples", "spring"])), alpha=0.5)
        for _ in range(int(rng.integers(3, 12))):
            x, y, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.15)
            colour = rng.uniform(0, 1, 3)
            shape = int(rng.integers(3))
            if shape == 0:
                ax.add_patch(patches.Circle((x, y), r, fc=colour, ec="k" if rng.random() < 0.5 else colour))
            elif shape == 1:
                ax.add_patch(patches.FancyBboxPatch((x - r, y - r / 2), 2 * r, r, boxstyle="round,pad=0.01",
                                                    fc=colour, ec="k"))
            else:
                ax.add_patch(patches.RegularPolygon((x, y), int(rng.integers(3, 7)), radius=r, fc=colour))
            if rng.random() < 0.5:
                ax.annotate("", xy=(rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)), xytext=(x, y),
                            arrowprops={"arrowstyle": "-|>", "color": "k", "lw": 1.5})
            if rng.random() < 0.5:
                ax.text(x, y, _w(rng), ha="center", va="center", fontsize=float(rng.uniform(6, 11)))
    elif kind == "errorbar_multi":
        x = np.arange(k)
        for _ in range(int(rng.integers(1, 4))):
            ax.errorbar(x, rng.uniform(0, 10, k), yerr=rng.uniform(0.2, 2, k), capsize=3, marker="o")
    else:
        raise ValueError(f"unknown chart kind {kind!r}")
    if kind not in ("table", "flowchart", "text_block", "pie", "schematic"):
        ax.set_title(_w(rng, 2) if rng.random() < 0.6 else "")
        if rng.random() < 0.8 and kind not in ("roc",):
            ax.set_xlabel(_w(rng))
            ax.set_ylabel(_w(rng))
        if rng.random() < 0.3 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def render_chart(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One freshly rendered figure of ``kind`` (see ``KINDS``) as uint8 HxWx3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    style = STYLES[int(rng.integers(len(STYLES)))]
    with plt.style.context(style):
        fig = plt.figure(figsize=(rng.uniform(2.5, 7), rng.uniform(2.2, 5.5)), dpi=float(rng.uniform(60, 130)))
        try:
            _draw(kind, fig, rng)
            fig.canvas.draw()
            return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
        finally:
            plt.close(fig)
