"""Accuracy against sparsity, as a PNG, one line per evaluation JSON.

- Prefill (scripts/eval_smollm2.py, its "perplexity_4k" rows): the perplexity rise over SDPA (%)
  against the prefill tile sparsity.
- Decode (--decode; scripts/eval_decode.py, its "rows"): the mean KL(SDPA || blasst) of the
  teacher-forced decode steps (log scale) against the decode tile sparsity, with the top-1
  agreement at each point.
Needs matplotlib (not a dependency of the package).

  python3 scripts/plot_accuracy.py [--decode] OUT.png LABEL=FILE.json [LABEL=FILE.json ...]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    argv = sys.argv[1:]
    decode = bool(argv) and argv[0] == "--decode"
    argv = argv[1:] if decode else argv
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.exit(__doc__)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for arg in argv[1:]:
        label, path = arg.split("=", 1)
        data = json.load(open(path))
        if decode:
            rows = [r for r in data["rows"] if r["scale_factor"] is not None]
            pts = sorted((100 * r["decode_sparsity"], r["mean_kl"], r["top1_agreement"], r["scale_factor"])
                         for r in rows)
            notes = [f"a={a:g}, top-1 {100 * t:.1f}%" for _, _, t, a in pts]
        else:
            rows = [r for r in data["perplexity_4k"] if r["attention"] == "blasst"]
            pts = sorted((100 * r["sparsity"], 100 * r["rise"], None, r["scale_factor"]) for r in rows
                         if r["scale_factor"] is None or r["sparsity"] > 0.005)  # (a >= L is dense)
            notes = [f"a={a:g}" if a is not None else "" for *_, a in pts]
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        for i, (p, note) in enumerate(zip(pts, notes)):
            if note:
                ax.annotate(note, (p[0], p[1]), textcoords="offset points", xytext=(4, -10 if i % 2 else 5),
                            fontsize=7, color=line.get_color())
    if decode:
        ax.set_yscale("log")
        ax.set_xlabel("decode tile sparsity (%)")
        ax.set_ylabel("mean KL(SDPA || blasst) per decode step")
        ax.set_title("BLASST decode accuracy against sparsity (64 teacher-forced steps after 4,096 tokens)",
                     fontsize=9)
    else:
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_xlabel("prefill tile sparsity (%)")
        ax.set_ylabel("perplexity rise over SDPA (%)")
        ax.set_title("BLASST accuracy against sparsity (4,096 tokens of Pride and Prejudice)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[0])


if __name__ == "__main__":
    main()
