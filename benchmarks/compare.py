"""
Side-by-side learning benchmark: S2VG against SB3's SAC (defaults, and with gradient_steps = m, the same number
of gradient updates per env step as S2VG's actor-critic updates), optionally sb3-contrib's TQC and CrossQ, on the
same environment, seeds and budget, in one invocation.

Every ``--eval-every`` env steps the deterministic policy is evaluated on a separate environment. Each run writes
``<out>/<env>/<algo>_seed<k>.csv`` (step, train_seconds, mean return, std return, cpu_seconds); the summary step aggregates
all runs found under ``<out>/<env>`` into ``summary.md``, ``summary.json``, ``curves_steps.png`` and
``curves_seconds.png``.

    python benchmarks/compare.py --env Pendulum-v1 --hyperparams defaults --algos s2vg sac sac_m --seeds 0 1 2 \
        --steps 5000 --eval-every 250 --threshold -200 --report-steps 1000 2000 3000 5000

Long runs: ``--checkpoint-every N`` writes an exact checkpoint (agent, replay buffer, env and random states) every N
steps under ``<out>/<env>/checkpoints/``, the last one at the run's last step when N divides ``--steps``; the same
command with ``--resume`` continues every unfinished run from its checkpoint, and with a larger ``--steps`` extends a
finished one, with results identical to an uninterrupted run (``exact_checkpoints.py``, ``tests/test_resume.py``).

Training seconds (wall clock) and CPU seconds (the run's process CPU time, which other processes on the machine do
not inflate) exclude evaluation. One torch thread per run; ``--workers`` runs that many runs in parallel
(timings of parallel runs share the machine: compare algorithms only within one invocation).
"""

import argparse
import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ALGOS = ("s2vg", "sac", "sac_m", "tqc", "crossq")
LABELS = {
    "s2vg": "S2VG",
    "sac": "SAC (defaults)",
    "sac_m": "SAC (gradient_steps = m)",
    "tqc": "TQC",
    "crossq": "CrossQ",
}


def paper_s2vg_kwargs(env_id: str) -> dict[str, Any]:
    """S2VG's hyperparameters for ``env_id`` from the package's rl-zoo file, or the constructor defaults."""
    from sb3_s2vg.zoo import load_hyperparams

    hyperparams = load_hyperparams(env_id)
    hyperparams.pop("n_timesteps", None)
    hyperparams.pop("policy", None)
    return hyperparams


def make_env(env_id: str):
    """The training environment of every run: one Monitor-wrapped env in a DummyVecEnv (exact checkpoints need it)."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: Monitor(gym.make(env_id))])


def algorithm_class(algo: str):
    if algo == "s2vg":
        from sb3_s2vg import S2VG

        return S2VG
    if algo in ("sac", "sac_m"):
        from stable_baselines3 import SAC

        return SAC
    if algo == "tqc":
        from sb3_contrib import TQC

        return TQC
    if algo == "crossq":
        from sb3_contrib import CrossQ

        return CrossQ
    raise ValueError(f"Unknown algo {algo!r}, expected one of {ALGOS}")


def make_model(algo: str, env_id: str, seed: int, s2vg_kwargs: dict[str, Any], baseline_kwargs: dict[str, Any] | None = None):
    """Build the agent of one run: S2VG with ``s2vg_kwargs``, the baselines with their defaults and ``baseline_kwargs``."""
    kwargs: dict[str, Any] = dict(seed=seed)
    if algo == "s2vg":
        kwargs.update(s2vg_kwargs)
    else:
        kwargs.update(baseline_kwargs or {})
    if algo == "sac_m":
        kwargs["gradient_steps"] = s2vg_kwargs.get("actor_critic_updates", 5)
    return algorithm_class(algo)("MlpPolicy", make_env(env_id), **kwargs)


def run_one(
    algo: str,
    env_id: str,
    seed: int,
    steps: int,
    eval_every: int,
    eval_episodes: int,
    out_dir: str,
    s2vg_kwargs: dict,
    checkpoint_every: int = 0,
    resume: bool = False,
    tag: str = "",
    baseline_kwargs: dict[str, Any] | None = None,
) -> str:
    """
    Train one agent, evaluating every ``eval_every`` steps, checkpointing every ``checkpoint_every`` steps (exactly:
    a resumed run gives the same results as an uninterrupted one); returns the CSV path.
    """
    import gymnasium as gym
    import torch as th
    from exact_checkpoints import load_checkpoint, save_checkpoint  # beside this script
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    th.set_num_threads(1)
    name = f"{algo}-{tag}_seed{seed}" if tag else f"{algo}_seed{seed}"
    path = Path(out_dir) / f"{name}.csv"
    checkpoint_dir = Path(out_dir) / "checkpoints" / name
    done = 0
    if resume and path.exists():
        done = int(read_curve(path)["step"].max())
        if done >= steps:
            # a finished run whose last checkpoint may not be kept (only its CSV, or an earlier checkpoint, is
            # committed): resuming would recompute steps the CSV already holds
            print(f"{env_id} {name}: {path} already reaches step {done}; nothing to run", flush=True)
            return str(path)
    eval_env = Monitor(gym.make(env_id))
    rows: list[tuple[float, ...]] = []
    train_seconds = cpu_seconds = 0.0
    if resume and (checkpoint_dir / "state.pkl").exists():
        model, extra = load_checkpoint(checkpoint_dir, algorithm_class(algo), make_env(env_id), eval_env)
        rows, train_seconds = extra["rows"], extra["train_seconds"]
        cpu_seconds = extra.get("cpu_seconds", float("nan"))
        print(f"{env_id} {name}: resumed at step {model.num_timesteps}", flush=True)
        if done > model.num_timesteps:
            print(
                f"{env_id} {name}: warning: the checkpoint (step {model.num_timesteps}) is behind {path} (step {done});"
                f" steps {model.num_timesteps}-{done} are recomputed and their rows rewritten",
                flush=True,
            )
    else:
        eval_env.reset(seed=10_000 + seed)
        model = make_model(algo, env_id, seed, s2vg_kwargs, baseline_kwargs)

    class EvalCheckpointCallback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.train_seconds = train_seconds
            self.cpu_seconds = cpu_seconds
            self.last = time.perf_counter()
            self.last_cpu = time.process_time()
            self.checkpoint_pending = False

        def _pause_clocks(self) -> None:
            self.train_seconds += time.perf_counter() - self.last
            self.cpu_seconds += time.process_time() - self.last_cpu

        def _restart_clocks(self) -> None:
            self.last = time.perf_counter()
            self.last_cpu = time.process_time()

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                self._pause_clocks()
                mean, std = evaluate_policy(self.model, eval_env, n_eval_episodes=eval_episodes, deterministic=True)
                rows.append((self.num_timesteps, self.train_seconds, float(mean), float(std), self.cpu_seconds))
                with open(path, "w", newline="") as file:
                    writer = csv.writer(file)
                    writer.writerow(["step", "train_seconds", "return_mean", "return_std", "cpu_seconds"])
                    writer.writerows(rows)
                print(f"{env_id} {name}: step {self.num_timesteps} return {mean:.1f} ({self.train_seconds:.0f} s)", flush=True)
                self._restart_clocks()
            if checkpoint_every and self.num_timesteps % checkpoint_every == 0:
                self.checkpoint_pending = True
            return True

        def _save_pending_checkpoint(self) -> None:
            if self.checkpoint_pending:
                self._pause_clocks()
                extra = {"rows": rows, "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds}
                save_checkpoint(checkpoint_dir, self.model, eval_env, extra=extra)  # type: ignore[arg-type]
                self.checkpoint_pending = False
                self._restart_clocks()

        def _on_rollout_start(self) -> None:
            # The checkpoint waits until this step's transition is stored and its gradient steps are done: there the
            # agent is in the state it has between two learn() calls, from which a resumed run continues exactly
            self._save_pending_checkpoint()

        def _on_training_end(self) -> None:
            # the last step's checkpoint (the same state): the same command with a larger --steps extends the run
            self._save_pending_checkpoint()

    remaining = steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=EvalCheckpointCallback(), reset_num_timesteps=model.num_timesteps == 0)
    return str(path)


def split_run_name(run_name: str) -> tuple[str, str]:
    """
    :param run_name: A run's name as ``run_one`` writes it, ``<algo>[-<tag>]_seed<k>``, or without ``_seed<k>``
    :return: ``(algo, tag)``, the tag ``""`` for an untagged run
    """
    algo, _, tag = run_name.rsplit("_seed", 1)[0].partition("-")
    return algo, tag


def label(run_name: str) -> str:
    """``s2vg`` -> "S2VG", ``s2vg-nodelta`` -> "S2VG [nodelta]"."""
    algo, tag = split_run_name(run_name)
    return LABELS.get(algo, algo) + (f" [{tag}]" if tag else "")


def read_curve(path: Path) -> np.ndarray:
    """One run's CSV as a structured array (step, train_seconds, return_mean, ...), one row even for one evaluation."""
    return np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True))


def load_runs(env_dir: Path, tags: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Runs by name (algo, or algo-tag), only the untagged ones unless ``tags`` lists tags to include."""
    runs: dict[str, list[np.ndarray]] = {}
    for path in sorted(env_dir.glob("*_seed*.csv")):
        name = path.name.rsplit("_seed", 1)[0]
        algo, tag = split_run_name(name)
        if algo in ALGOS and (not tag or (tags is not None and tag in tags)):
            runs.setdefault(name, []).append(read_curve(path))
    return dict(sorted(runs.items(), key=lambda item: (ALGOS.index(split_run_name(item[0])[0]), item[0])))


def first_crossing(data: np.ndarray, threshold: float, column: str) -> float:
    above = np.nonzero(data["return_mean"] >= threshold)[0]
    return float(data[column][above[0]]) if len(above) else float("nan")


def seeds_note(counted: int, seeds: int) -> str:
    """The suffix " (k/n seeds)" of a summary cell that holds some but not all of a run's seeds; empty otherwise."""
    return f" ({counted}/{seeds} seeds)" if 0 < counted < seeds else ""


def summarize(
    env_id: str,
    env_dir: Path,
    threshold: float | None,
    report_steps: list[int],
    tags: list[str] | None = None,
    until: int | None = None,
    name: str | None = None,
) -> str:
    """
    Aggregate the runs under ``env_dir`` into a markdown table, a JSON file and two PNG plots
    (``summary[_tags].md``, ``summary[_tags].json``, ``curves_steps[_tags].png``, ``curves_seconds[_tags].png``).

    :param until: Only the evaluations up to this env step (runs that went further are cut there)
    :param name: The files' suffix instead of the tags (``summary_<name>.md``, ...)
    """
    runs = load_runs(env_dir, tags)
    if until is not None:
        runs = {algo: [run[run["step"] <= until] for run in seed_runs] for algo, seed_runs in runs.items()}
    suffix = "_" + name if name else ("_" + "_".join(tags) if tags else "")
    summary: dict[str, Any] = {"env": env_id, "threshold": threshold, "algos": {}}
    header = ["algo", "seeds"] + [f"return @{s}" for s in report_steps]
    if threshold is not None:
        header += [f"steps to {threshold:g}", f"seconds to {threshold:g}"]
    header += ["env steps/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo, seed_runs in runs.items():
        entry: dict[str, Any] = {"seeds": len(seed_runs)}
        cells = [label(algo), str(len(seed_runs))]
        for step in report_steps:
            values = [run["return_mean"][run["step"] == step][0] for run in seed_runs if np.any(run["step"] == step)]
            entry[f"return@{step}"] = values
            # a seed still running is left out of the cell, and the cell says how many seeds it holds
            text = f"{np.mean(values):.0f} ± {np.std(values):.0f}" if values else "–"
            cells.append(text + seeds_note(len(values), len(seed_runs)))
        if threshold is not None:
            steps_to = [first_crossing(run, threshold, "step") for run in seed_runs]
            seconds_to = [first_crossing(run, threshold, "train_seconds") for run in seed_runs]
            entry["steps_to_threshold"], entry["seconds_to_threshold"] = steps_to, seconds_to
            for values in (steps_to, seconds_to):
                reached = [v for v in values if np.isfinite(v)]
                text = f"{np.mean(reached):.0f} ± {np.std(reached):.0f}" if reached else "not reached"
                cells.append(text + seeds_note(len(reached), len(values)))
        speed = [run["step"][-1] / run["train_seconds"][-1] for run in seed_runs]
        entry["env_steps_per_second"] = speed
        cells.append(f"{np.mean(speed):.1f}")
        summary["algos"][algo] = entry
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (env_dir / f"summary{suffix}.md").write_text(f"## {env_id}\n\n{table}\n")
    (env_dir / f"summary{suffix}.json").write_text(json.dumps(summary, indent=1))
    plot_curves(env_id, runs, env_dir, threshold, suffix)
    return table


def plot_mean_std(ax: Any, seed_runs: list[np.ndarray], x_column: str, legend: str) -> None:
    """
    One curve: the mean ± std over seeds of the evaluation return, cut to the shortest seed.

    :param ax: Matplotlib axes
    :param seed_runs: One structured array (step, train_seconds, return_mean, ...) per seed
    :param x_column: ``"step"`` or ``"train_seconds"`` (averaged over seeds)
    :param legend: Label; the number of seeds is appended
    """
    length = min(len(run) for run in seed_runs)
    x = np.mean([run[x_column][:length] for run in seed_runs], axis=0)
    returns = np.array([run["return_mean"][:length] for run in seed_runs])
    mean, std = returns.mean(0), returns.std(0)
    ax.plot(x, mean, label=f"{legend} ({len(seed_runs)} seed{'s' if len(seed_runs) > 1 else ''})")
    ax.fill_between(x, mean - std, mean + std, alpha=0.2)


def plot_curves(env_id: str, runs: dict[str, list[np.ndarray]], env_dir: Path, threshold: float | None, suffix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for column, xlabel, name in [
        ("step", "environment steps", f"curves_steps{suffix}.png"),
        ("train_seconds", "training seconds (wall clock)", f"curves_seconds{suffix}.png"),
    ]:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for algo, seed_runs in runs.items():
            plot_mean_std(ax, seed_runs, column, label(algo))
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("deterministic evaluation return")
        ax.set_title(env_id)
        ax.legend()
        fig.tight_layout()
        fig.savefig(env_dir / name, dpi=100)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--algos", nargs="+", default=["s2vg", "sac", "sac_m"], choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--report-steps", nargs="*", type=int, default=[])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--hyperparams",
        choices=["zoo", "defaults"],
        default="zoo",
        help="S2VG's settings: the package's rl-zoo file (Table 2 per environment) or the constructor defaults",
    )
    parser.add_argument("--s2vg-kwargs", default="{}", help="Python dict literal that overrides the zoo hyperparameters")
    parser.add_argument(
        "--baseline-kwargs", default="{}", help="Python dict literal of constructor arguments for every baseline (SAC, ...)"
    )
    parser.add_argument("--summary-only", action="store_true", help="Only aggregate the CSV files already written")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="Exact checkpoint every N env steps (0: never)")
    parser.add_argument("--resume", action="store_true", help="Continue each run from its last checkpoint, if any")
    parser.add_argument("--tag", default="", help="Name variant runs (e.g. ablations): files <algo>-<tag>_seed<k>.csv")
    parser.add_argument("--include-tags", nargs="*", default=None, help="Tagged runs to include in the summary")
    parser.add_argument("--until", type=int, default=None, help="Summarise the evaluations up to this env step only")
    parser.add_argument("--summary-name", default=None, help="Suffix of the summary files instead of the tags")
    args = parser.parse_args()

    env_dir = Path(args.out) / args.env
    env_dir.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        base = paper_s2vg_kwargs(args.env) if args.hyperparams == "zoo" else {}
        s2vg_kwargs = {**base, **eval(args.s2vg_kwargs)}
        baseline_kwargs = eval(args.baseline_kwargs)
        print(f"S2VG hyperparameters: {s2vg_kwargs}")
        jobs = [(algo, seed) for seed in args.seeds for algo in args.algos]
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [
                pool.submit(
                    run_one,
                    algo,
                    args.env,
                    seed,
                    args.steps,
                    args.eval_every,
                    args.eval_episodes,
                    str(env_dir),
                    s2vg_kwargs,
                    args.checkpoint_every,
                    args.resume,
                    args.tag,
                    baseline_kwargs,
                )
                for algo, seed in jobs
            ]
            for future in futures:
                future.result()
    tags = args.include_tags if args.include_tags is not None else ([args.tag] if args.tag else None)
    print(summarize(args.env, env_dir, args.threshold, args.report_steps, tags, args.until, args.summary_name))


if __name__ == "__main__":
    main()
