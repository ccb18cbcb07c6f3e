"""
The paper's figures from the CSV files that ``compare.py`` writes (no training here):

- ``figure1.png``: S2VG against SAC (defaults) and SAC with gradient_steps = m, mean ± std over seeds of the
  deterministic evaluation return against env steps, one panel per environment (the paper's Figure 1);
- ``figure2a.png``: S2VG on Pendulum-v1 with value-expansion horizons H = 1, 2, 5 (runs tagged ``h2``, ``h5``;
  the untagged S2VG runs are H = 1), the paper's Figure 2a. Figure 2c comes from ``value_bias.py``.
- ``frontier_steps.png``, ``frontier_seconds.png`` and ``frontier.md``: S2VG with the configuration ``s2vg.yml``
  gives each task (``FRONTIER_S2VG``) beside CrossQ and SAC on HalfCheetah-v5, Hopper-v5 and Walker2d-v5, mean ± std
  over the seeds that reached each evaluation, against env steps and against training seconds; the table gives the
  return at 25k / 50k / 100k steps with the number of seeds behind each mean, seconds per 100k steps, env steps/s,
  and the target and the published frontier (DHMBPO, v4) for each task. Below it, per seed, how long S2VG takes
  to reach SAC's return at 100k and 200k steps (SAC's seed of the same number) against SAC's own time to those
  steps, with where the two ran (``CLOCK_NOTES``): seconds compare only on one host.

    python benchmarks/figures.py                     # reads and writes benchmarks/results/

A panel whose runs do not exist yet says so instead of being left out.
"""

import argparse
from pathlib import Path

import numpy as np
from compare import label, load_runs, plot_mean_std, read_curve

FIGURE1_ENVS = ["Pendulum-v1", "InvertedPendulum-v5", "HalfCheetah-v5", "Hopper-v5"]
FIGURE1_RUNS = ["s2vg", "sac", "sac_m"]
FIGURE2A_RUNS = {"s2vg": "H = 1", "s2vg-h2": "H = 2", "s2vg-h5": "H = 5"}
FRONTIER_ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
# S2VG's run on each task: the configuration s2vg.yml gives it. Runs keep
# the tag they were started under (a checkpoint is tied to it): HalfCheetah is the normin-ls5k preset (Table 2 with
# normalize_input and learning_starts=5000; the untagged runs are Table 2's), Hopper the img08-ens5 preset; on
# Walker2d the img08-ens5-learnedterm preset: the Hopper preset's options and a learned termination classifier
# over Walker2d's Table 2 settings (seeds 0, 1 and 2: 2,064, 3,428 and 1,150 at 100k; seed 0 with the known
# termination function: 1,114; Table 2's own settings on seed 0: 367), s2vg.yml's Walker2d entry since.
FRONTIER_S2VG = {
    "HalfCheetah-v5": "s2vg-normin-ls5k",
    "Hopper-v5": "s2vg-img08-ens5",
    "Walker2d-v5": "s2vg-img08-ens5-learnedterm",
}
# the --s2vg-kwargs each of those runs was started with, over the task's s2vg.yml settings (wallclock.py times them)
FRONTIER_S2VG_KWARGS: dict[str, dict] = {
    "s2vg-img08-ens5": {"imagined_ratio": 0.8, "n_models": 5},
    "s2vg-img08-ens5-learnedterm": {"imagined_ratio": 0.8, "n_models": 5, "termination_fn": None, "learn_termination": True},
    "s2vg-normin-ls5k": {
        "learning_starts": 5000,
        "policy_kwargs": {
            "net_arch": {"pi": [256, 256], "qf": [256, 256], "vf": [256, 256], "dynamics": [256, 128], "reward": [256, 128]},
            "normalize_input": True,
        },
    },
}
FRONTIER_BASELINES = ("crossq", "sac")
FRONTIER_STEPS = (25_000, 50_000, 100_000)
# the targets of the frontier issue and DHMBPO's published mean at 100k (v4, ../shared/reference/anchors.md)
FRONTIER_TARGETS = {"HalfCheetah-v5": 8000, "Hopper-v5": 3000, "Walker2d-v5": 4000}
DHMBPO_100K = {"HalfCheetah-v5": 9878, "Hopper-v5": 3399, "Walker2d-v5": 6457}
# where the S2VG and SAC runs of one seed ran (their training seconds compare only on one host): the git history of
# the CSV files and benchmarks/README.md
CLOCK_NOTES = {
    ("HalfCheetah-v5", 0): "S2VG in three sittings (0–30k, 30k–75k, 75k–100k), SAC ten days before: orientation only",
    ("HalfCheetah-v5", 1): "S2VG in three sittings (0–30k, 30k–70k, 70k–100k), SAC ten days before: orientation only",
    ("HalfCheetah-v5", 2): "S2VG in two sittings (0–20k, 20k–100k), SAC in another: orientation only",
    ("Hopper-v5", 0): "SAC a week before S2VG, whose rerun ran 0–10k and 10k–100k on different days: orientation only",
    ("Hopper-v5", 1): "run a week apart, hosts may differ: orientation only",
    ("Hopper-v5", 2): "side by side on one host (dense fp32 matmul 85 GFLOP/s), one core each",
    ("Walker2d-v5", 0): "SAC four days before S2VG, whose run ran in two sittings (0–45k, 45k–100k): orientation only",
    ("Walker2d-v5", 1): "SAC on another day than S2VG, whose run ran in two sittings (0–30k, 30k–100k): orientation only",
    ("Walker2d-v5", 2): "SAC another day; S2VG in three sittings (0–20k, 20k–25k, 25k–100k): orientation only",
}


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


def returns_at(seed_runs: list[np.ndarray], step: int) -> list[float]:
    """The evaluation return at ``step`` of each seed that got there."""
    return [float(run["return_mean"][run["step"] == step][0]) for run in seed_runs if np.any(run["step"] == step)]


def plot_partial_seeds(ax, seed_runs: list[np.ndarray], x_column: str, legend: str, color: str, until: int) -> None:
    """
    Mean ± std of the evaluation return over the seeds that reached each evaluation step (runs still under way
    count where they have data), against ``x_column`` averaged over the same seeds.

    :param seed_runs: One structured array (step, train_seconds, return_mean, ...) per seed
    :param x_column: ``"step"`` or ``"train_seconds"``
    :param color: The run's colour, the same in every panel
    :param until: The last env step drawn
    """
    steps = sorted({int(step) for run in seed_runs for step in run["step"] if step <= until})
    x, mean, std = [], [], []
    for step in steps:
        rows = [run[run["step"] == step][0] for run in seed_runs if np.any(run["step"] == step)]
        x.append(np.mean([row[x_column] for row in rows]))
        mean.append(np.mean([row["return_mean"] for row in rows]))
        std.append(np.std([row["return_mean"] for row in rows]))
    finished = sum(run["step"][-1] >= until for run in seed_runs)
    seeds = f"{len(seed_runs)} seed{'s' if len(seed_runs) > 1 else ''}, {finished} at {until // 1000}k"
    ax.plot(x, mean, color=color, label=f"{legend} ({seeds})")
    ax.fill_between(x, np.subtract(mean, std), np.add(mean, std), color=color, alpha=0.2)


def seed_csvs(env_dir: Path, name: str) -> dict[int, np.ndarray]:
    """The runs of ``name`` (``algo`` or ``algo-tag``) in ``env_dir`` by seed."""
    runs = {}
    for path in env_dir.glob(f"{name}_seed*.csv"):
        seed = path.stem.rsplit("_seed", 1)[1]
        if seed.isdigit():
            runs[int(seed)] = read_curve(path)
    return dict(sorted(runs.items()))


def first_reach(run: np.ndarray, threshold: float) -> tuple[int, float] | None:
    """(env step, training seconds) of the first evaluation of ``run`` whose return is at least ``threshold``."""
    hits = np.flatnonzero(run["return_mean"] >= threshold)
    return (int(run["step"][hits[0]]), float(run["train_seconds"][hits[0]])) if hits.size else None


def time_to_sac_return(results: Path, sac_steps: tuple[int, ...] = (100_000, 200_000)) -> list[str]:
    """
    Markdown rows: for each task and each seed that S2VG (``FRONTIER_S2VG``) and SAC both ran, SAC's return and
    training seconds at each of ``sac_steps``, and the env step and training seconds at which S2VG's evaluation
    first reached that return, with the ratio of the seconds (S2VG / SAC; below 1: S2VG is faster to it).
    """
    lines = []
    for env_id in FRONTIER_ENVS:
        s2vg, sac = seed_csvs(results / env_id, FRONTIER_S2VG[env_id]), seed_csvs(results / env_id, "sac")
        for seed in sorted(set(s2vg) & set(sac)):
            cells = [env_id, str(seed)]
            for step in sac_steps:
                at = sac[seed][sac[seed]["step"] == step]
                if not at.size:
                    cells += ["–", "–"]
                    continue
                target, seconds = float(at["return_mean"][0]), float(at["train_seconds"][0])
                cells.append(f"{target:,.0f} in {seconds:,.0f} s")
                reached = first_reach(s2vg[seed], target)
                if reached is None:
                    last = s2vg[seed][-1]
                    cells.append(f"not reached by {int(last['step']) // 1000}k ({last['train_seconds']:,.0f} s)")
                else:
                    cells.append(f"{reached[0] // 1000}k steps, {reached[1]:,.0f} s ({reached[1] / seconds:.2f}×)")
            cells.append(CLOCK_NOTES.get((env_id, seed), "not recorded: hosts may differ"))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def frontier(results: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    header = ["task", "run", "seeds"] + [f"return @{s // 1000}k (seeds)" for s in FRONTIER_STEPS]
    header += ["train seconds / 100k", "env steps/s", "target", "DHMBPO @100k (v4)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    figures = {column: plt.subplots(1, len(FRONTIER_ENVS), figsize=(15, 4.2)) for column in ("step", "train_seconds")}
    for index, env_id in enumerate(FRONTIER_ENVS):
        runs = load_runs(results / env_id, tags=[FRONTIER_S2VG[env_id].partition("-")[2]]) if (results / env_id).is_dir() else {}
        for color, name in zip(("C0", "C1", "C2"), (FRONTIER_S2VG[env_id], *FRONTIER_BASELINES)):
            if name not in runs:
                lines.append(f"| {env_id} | {label(name)} | 0 | " + " | ".join(["–"] * (len(header) - 3)) + " |")
                continue
            seed_runs = runs[name]
            cells = [env_id, label(name), str(len(seed_runs))]
            for step in FRONTIER_STEPS:
                values = returns_at(seed_runs, step)
                cells.append(f"{np.mean(values):,.0f} ± {np.std(values):,.0f} ({len(values)})" if values else "–")
            done = [run for run in seed_runs if np.any(run["step"] == FRONTIER_STEPS[-1])]
            seconds = [float(run["train_seconds"][run["step"] == FRONTIER_STEPS[-1]][0]) for run in done]
            cells.append(f"{np.mean(seconds):,.0f}" if seconds else "–")
            cells.append(f"{np.mean([run['step'][-1] / run['train_seconds'][-1] for run in seed_runs]):.1f}")
            is_s2vg = name == FRONTIER_S2VG[env_id]
            cells += [f"{FRONTIER_TARGETS[env_id]:,}", f"{DHMBPO_100K[env_id]:,}"] if is_s2vg else ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
            for column, (_, axes) in figures.items():
                plot_partial_seeds(axes[index], seed_runs, column, label(name), color, FRONTIER_STEPS[-1])
        for column, (_, axes) in figures.items():
            ax = axes[index]
            ax.axhline(DHMBPO_100K[env_id], color="gray", linestyle=":", linewidth=1, label="DHMBPO @100k (v4, published)")
            ax.set_title(env_id)
            ax.set_xlabel("environment steps" if column == "step" else "training seconds (wall clock)")
            ax.set_ylabel("deterministic evaluation return")
            ax.legend(fontsize=7)
    paths = []
    for column, (fig, _) in figures.items():
        fig.tight_layout()
        paths.append(results / f"frontier_{'steps' if column == 'step' else 'seconds'}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    note = (
        "Mean ± std over the seeds that reached each step (their number in brackets). Training seconds exclude "
        "evaluation; runs of different invocations may come from different hosts, so compare seconds only within "
        "one invocation (benchmarks/README.md).\n"
    )
    clock = [
        "## Wall-clock: S2VG to SAC's return at 100k and 200k steps",
        "",
        "| task | seed | SAC @100k | S2VG reaches it at | SAC @200k | S2VG reaches it at | where they ran |",
        "|---|---|---|---|---|---|---|",
        *time_to_sac_return(results),
        "",
        "Per seed: SAC's evaluation return at 100k (200k) steps and its training seconds to get there, against the first "
        "evaluation (every 5k steps) at which S2VG's return was at least as high, with the ratio of training seconds "
        "(S2VG / SAC); the last column says whether the two ran on one host. The same question with the env-step rates of "
        "S2VG, SAC and CrossQ timed in one process on one host: wallclock.md (benchmarks/wallclock.py).",
    ]
    paths.append(results / "frontier.md")
    text = "## S2VG, CrossQ and SAC at 100k steps\n\n" + "\n".join(lines) + "\n\n" + note + "\n" + "\n".join(clock) + "\n"
    paths[-1].write_text(text)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    for path in (figure1(Path(args.results)), figure2a(Path(args.results)), *frontier(Path(args.results))):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
