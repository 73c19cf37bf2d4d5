"""Plots the CSV of the burst harness (t_seconds, active_clients, replicas,
sessions) as replicas and load over time.

python3 benches/plot_burst.py burst.csv docs/burst.png   (needs matplotlib)
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["t_seconds"]) for r in rows]
fig, load = plt.subplots(figsize=(9, 4))
load.plot(t, [int(r["active_clients"]) for r in rows], label="clients (load)", color="tab:gray", linestyle="--")
load.plot(t, [int(r["sessions"]) for r in rows], label="open sessions (proxy)", color="tab:blue", alpha=0.6)
load.set_xlabel("seconds")
load.set_ylabel("clients / sessions")
replicas = load.twinx()
replicas.step(t, [int(r["replicas"]) for r in rows], where="post", label="computes (replicas)", color="tab:red")
replicas.set_ylabel("computes")
replicas.set_ylim(0, 5)
lines = load.get_legend_handles_labels()[0] + replicas.get_legend_handles_labels()[0]
labels = load.get_legend_handles_labels()[1] + replicas.get_legend_handles_labels()[1]
load.legend(lines, labels, loc="upper right")
plt.title("ebb local: 3 -> 30 -> 3 clients (target 8 sessions per compute, max 4)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
