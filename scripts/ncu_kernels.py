"""Sums an ncu --csv --print-units base report per kernel launch: time, DRAM bytes and rate, and
how evenly the SMs were busy; then the launches' total. Used by scripts/gpu-check.sh
(decode-bytes, decode-profile). Needs the metrics gpu__time_duration.sum, dram__bytes_read.sum,
dram__bytes_write.sum, sm__cycles_active.{avg,max,min} and gpc__cycles_elapsed.max.

  python3 scripts/ncu_kernels.py REPORT.csv"""
import csv
import sys


def main(path):
    rows = list(csv.reader(line for line in open(path) if line.startswith('"') and line.count(",") > 10))
    if not rows:
        sys.exit(f"{path}: no ncu rows")
    head, data = rows[0], rows[1:]
    ix = {k: head.index(k) for k in ("ID", "Kernel Name", "Grid Size", "Metric Name", "Metric Value")}
    kern = {}
    for r in data:
        k = kern.setdefault(r[ix["ID"]], {"name": r[ix["Kernel Name"]].split("<")[0].split("(")[0],
                                           "grid": r[ix["Grid Size"]]})
        k[r[ix["Metric Name"]]] = float(r[ix["Metric Value"]].replace(",", ""))
    total_t = total_rd = 0.0
    for i, k in sorted(kern.items(), key=lambda x: int(x[0])):
        t = k["gpu__time_duration.sum"] * 1e-9
        rd = k["dram__bytes_read.sum"]
        total_t += t
        total_rd += rd
        print(f"launch {i} {k['name'][:60]} grid {k['grid']}: {t * 1e6:.1f} us, DRAM read {rd / 1e9:.4f} GB "
              f"({rd / t / 1e12:.2f} TB/s), write {k['dram__bytes_write.sum'] / 1e6:.2f} MB, SM busy avg/max "
              f"{k['sm__cycles_active.avg'] / k['sm__cycles_active.max']:.3f}, min/max "
              f"{k['sm__cycles_active.min'] / k['sm__cycles_active.max']:.3f}, max busy/elapsed "
              f"{k['sm__cycles_active.max'] / k['gpc__cycles_elapsed.max']:.3f}")
    print(f"total of {len(kern)} launches: {total_t * 1e6:.1f} us, DRAM read {total_rd / 1e9:.4f} GB")


if __name__ == "__main__":
    main(sys.argv[1])
