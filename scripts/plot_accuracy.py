"""Accuracy against sparsity: the perplexity rise over SDPA (percent) against the prefill tile sparsity,
one line per evaluation JSON of scripts/eval_smollm2.py (its "perplexity_4k" rows), written as a PNG.
Needs matplotlib (not a dependency of the package).

  python3 scripts/plot_accuracy.py OUT.png LABEL=FILE.json [LABEL=FILE.json ...]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for arg in sys.argv[2:]:
        label, path = arg.split("=", 1)
        rows = [r for r in json.load(open(path))["perplexity_4k"] if r["attention"] == "blasst"]
        rows.sort(key=lambda r: r["sparsity"])
        xs = [100 * r["sparsity"] for r in rows]
        ys = [100 * r["rise"] for r in rows]
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        for i, (r, x, y) in enumerate(zip(rows, xs, ys)):
            if r["scale_factor"] is not None and r["sparsity"] > 0.005:  # (a scale factor >= L is dense)
                ax.annotate(f"a={r['scale_factor']:g}", (x, y), textcoords="offset points",
                            xytext=(4, -10 if i % 2 else 5), fontsize=7, color=line.get_color())
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xlabel("prefill tile sparsity (%)")
    ax.set_ylabel("perplexity rise over SDPA (%)")
    ax.set_title("BLASST accuracy against sparsity (4,096 tokens of Pride and Prejudice)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1])


if __name__ == "__main__":
    main()
