"""
The paper's figures from the CSV files that ``compare.py`` writes (no training here):

- ``figure1.png``: S2VG against SAC (defaults) and SAC with gradient_steps = m, mean ± std over seeds of the
  deterministic evaluation return against env steps, one panel per environment (the paper's Figure 1);
- ``figure2a.png``: S2VG on Pendulum-v1 with value-expansion horizons H = 1, 2, 5 (runs tagged ``h2``, ``h5``;
  the untagged S2VG runs are H = 1), the paper's Figure 2a. Figure 2c comes from ``value_bias.py``.

    python benchmarks/figures.py                     # reads and writes benchmarks/results/

A panel whose runs do not exist yet says so instead of being left out.
"""

import argparse
from pathlib import Path

import numpy as np
from compare import label, load_runs, plot_mean_std

FIGURE1_ENVS = ["Pendulum-v1", "InvertedPendulum-v5", "HalfCheetah-v5", "Hopper-v5"]
FIGURE1_RUNS = ["s2vg", "sac", "sac_m"]
FIGURE2A_RUNS = {"s2vg": "H = 1", "s2vg-h2": "H = 2", "s2vg-h5": "H = 5"}


def plot_runs(ax, runs: dict[str, list[np.ndarray]], names: dict[str, str]) -> None:
    """
    Mean ± std over seeds of each run name in ``names`` that ``runs`` has, against env steps.

    :param runs: As returned by ``compare.load_runs``: name -> one structured array (step, return_mean, ...) per seed
    :param names: Run name -> legend label
    """
    for name, legend in names.items():
        if name in runs:
            plot_mean_std(ax, runs[name], "step", legend)


def figure1(results: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, env_id in zip(axes.flat, FIGURE1_ENVS):
        runs = load_runs(results / env_id) if (results / env_id).is_dir() else {}
        plot_runs(ax, runs, {name: label(name) for name in FIGURE1_RUNS})
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("S2VG against SAC (paper's Figure 1)")
    fig.tight_layout()
    path = results / "figure1.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure2a(results: Path) -> Path:
    import matplotlib.pyplot as plt

    env_dir = results / "Pendulum-v1"
    runs = load_runs(env_dir, tags=["h2", "h5"]) if env_dir.is_dir() else {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plot_runs(ax, runs, FIGURE2A_RUNS)
    ax.set_title("Pendulum-v1: value-expansion horizon (paper's Figure 2a)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    path = results / "figure2a.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    for path in (figure1(Path(args.results)), figure2a(Path(args.results))):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
