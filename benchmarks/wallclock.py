"""
Wall-clock to a return: how long S2VG (the run ``figures.FRONTIER_S2VG`` names on each task, built with the
settings it ran with: ``s2vg.yml`` and ``FRONTIER_S2VG_KWARGS``) takes to reach the return SAC reaches in 100k
(and 200k) env steps, against SAC's own time, with the env-step rates of all the algorithms measured in **one
process, interleaved, on one host**.

The learning curves (env steps) come from the CSV files of ``compare.py``; their training seconds come from
different invocations, possibly different hosts, so they are not used here. Instead this script builds each agent
exactly as ``compare.py`` does (seed 0), runs ``learning_starts`` plus a warm-up, and then times ``learn()`` in
chunks, the algorithms taking turns round by round, so that a host slowing down slows all of them alike. Each
configuration's cost per env step is constant over a run (its world-model updates, imagined rollouts and
gradient steps come at fixed rates per env step), so the rate of a short run stands for the whole run after its
``learning_starts``; the random warm-up steps before it make no updates and are counted as free (in the runs' CSV
files 5,000 of them took about 2 s). Evaluation is excluded, as in ``compare.py``'s training seconds.

    python benchmarks/wallclock.py                   # HalfCheetah-v5, Hopper-v5, Walker2d-v5; s2vg, sac, crossq
    python benchmarks/wallclock.py --reuse-rates     # the table again from grown curves, with the last timing's rates

Writes ``<results>/wallclock.md`` and ``wallclock.json``: the host's dense fp32 matmul rate measured in the same
run, env steps/s per algorithm and task, and per task: SAC's seed-mean return at 100k (200k) steps, the first
evaluation step at which S2VG's seed-mean return reaches it, and the two times at the measured rates. Run it on
an otherwise idle machine (one torch thread; nothing else on the cores).
"""

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from compare import algorithm_class, make_model, paper_s2vg_kwargs
from figures import FRONTIER_ENVS, FRONTIER_S2VG, FRONTIER_S2VG_KWARGS, returns_at, seed_csvs
from speed import dense_matmul_rate

#: The algorithms timed: S2VG with the task's frontier configuration, and the baselines with their defaults
ALGOS = ("s2vg", "sac", "crossq")
#: ``timed_runs`` entry of rates reused from a ``wallclock.json`` that did not record which S2VG run was timed
NOT_RECORDED = "(not recorded)"


def frontier_s2vg_kwargs(env_id: str) -> dict[str, Any]:
    """The constructor arguments of S2VG's frontier run on ``env_id``: its s2vg.yml entry and its --s2vg-kwargs."""
    return {**paper_s2vg_kwargs(env_id), **FRONTIER_S2VG_KWARGS[FRONTIER_S2VG[env_id]]}


def warmup_steps(algo: str, env_id: str) -> int:
    """The ``learning_starts`` of ``algo``'s runs on ``env_id``: env steps of random actions before the first update."""
    kwargs = frontier_s2vg_kwargs(env_id) if algo == "s2vg" else {}
    return int(kwargs.get("learning_starts", inspect.signature(algorithm_class(algo)).parameters["learning_starts"].default))


def learn_rates(env_id: str, algos: tuple[str, ...], chunks: dict[str, int], rounds: int, warmup: int) -> dict[str, float]:
    """
    Env steps per second of ``learn()`` for each algorithm on ``env_id``, timed in ``rounds`` interleaved rounds.

    :param chunks: Env steps per round for each algorithm (sized so that each takes a similar time)
    :param warmup: Env steps after ``learning_starts`` before timing (first updates, allocations)
    :return: Algorithm -> env steps per second (all timed steps over all timed seconds)
    """
    s2vg_kwargs = frontier_s2vg_kwargs(env_id)
    models = {algo: make_model(algo, env_id, 0, s2vg_kwargs) for algo in algos}
    for model in models.values():
        model.learn(model.learning_starts + warmup)
    seconds = dict.fromkeys(algos, 0.0)
    for _ in range(rounds):
        for algo, model in models.items():
            start = time.perf_counter()
            model.learn(chunks[algo], reset_num_timesteps=False)
            seconds[algo] += time.perf_counter() - start
    return {algo: chunks[algo] * rounds / seconds[algo] for algo in algos}


def seed_mean_curve(runs: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean return over the seeds that reached each step), on the steps every seed reached."""
    last = min(int(run["step"][-1]) for run in runs.values())
    steps = np.array(sorted({int(step) for run in runs.values() for step in run["step"] if step <= last}))
    means = np.array([np.mean(returns_at(list(runs.values()), step)) for step in steps])
    return steps, means


def time_to_returns(
    env_dir: Path, s2vg_name: str, rates: dict[str, float], sac_steps: tuple[int, ...], warmup: dict[str, int]
) -> list[dict[str, Any]]:
    """
    For each of ``sac_steps``: SAC's seed-mean return there, the first step at which S2VG's seed-mean return is at
    least as high, and both times at the measured ``rates`` (env steps/s).

    :param warmup: Algorithm -> its ``learning_starts``: the steps before it, random and without updates, cost nothing
        in the times (``warmup_steps``)
    """
    sac, s2vg = seed_csvs(env_dir, "sac"), seed_csvs(env_dir, s2vg_name)
    rows = []
    if not sac or not s2vg:
        return rows
    # the finished seeds only (a run still under way would cut the curve short): those that reached the longest's end
    end = max(int(run["step"][-1]) for run in s2vg.values())
    s2vg = {seed: run for seed, run in s2vg.items() if int(run["step"][-1]) == end}
    s2vg_steps, s2vg_means = seed_mean_curve(s2vg)
    for step in sac_steps:
        at = returns_at(list(sac.values()), step)
        if not at:
            continue
        target = float(np.mean(at))
        hits = np.flatnonzero(s2vg_means >= target)
        reached = int(s2vg_steps[hits[0]]) if hits.size else None
        rows.append(
            {
                "sac_steps": step,
                "sac_seeds": len(at),
                "sac_return": target,
                "sac_seconds": max(step - warmup["sac"], 0) / rates["sac"],
                "s2vg_seeds": len(s2vg),
                "s2vg_steps": reached,
                "s2vg_last_step": int(s2vg_steps[-1]),
                "s2vg_seconds": max(reached - warmup["s2vg"], 0) / rates["s2vg"] if reached is not None else None,
            }
        )
    return rows


def markdown(
    matmul: float,
    rates: dict[str, dict[str, float]],
    reach: dict[str, list[dict[str, Any]]],
    warmup: dict[str, dict[str, int]],
    timed_runs: dict[str, str],
) -> str:
    """
    The two tables of ``wallclock.md``.

    :param warmup: Task -> algorithm -> ``learning_starts`` (``warmup_steps``)
    :param timed_runs: Task -> the S2VG run whose configuration the rates were timed with (another run than today's
        ``FRONTIER_S2VG`` when the rates are reused after the frontier run changed; ``NOT_RECORDED`` for a
        ``wallclock.json`` written before the runs were recorded)
    """
    algos = list(next(iter(rates.values())))
    lines = [
        f"Dense fp32 matmul rate (1024³ product, one thread) measured in the same run: {matmul / 1e9:.0f} GFLOP/s.",
        "",
        "| task | S2VG configuration timed | " + " | ".join(f"{algo} env steps/s" for algo in algos) + " | S2VG / SAC |",
        "|---|---|" + "---|" * (len(algos) + 1),
    ]
    for env_id, env_rates in rates.items():
        cells = [f"{env_rates[algo]:.1f}" for algo in algos]
        lines.append(
            f"| {env_id} | {timed_runs[env_id]} | " + " | ".join(cells) + f" | {env_rates['s2vg'] / env_rates['sac']:.2f} |"
        )
    lines += [
        "",
        "| task | SAC's return at (seeds) | SAC's time there | S2VG reaches it at (seeds) | S2VG's time | S2VG / SAC |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, rows in reach.items():
        for row in rows:
            sac = f"{row['sac_return']:,.0f} at {row['sac_steps'] // 1000}k ({row['sac_seeds']})"
            if row["s2vg_steps"] is None:
                s2vg, seconds, ratio = f"not by {row['s2vg_last_step'] // 1000}k ({row['s2vg_seeds']})", "–", "–"
            else:
                s2vg = f"{row['s2vg_steps'] // 1000}k steps ({row['s2vg_seeds']})"
                seconds, ratio = f"{row['s2vg_seconds']:,.0f} s", f"{row['s2vg_seconds'] / row['sac_seconds']:.2f}×"
            lines.append(f"| {env_id} | {sac} | {row['sac_seconds']:,.0f} s | {s2vg} | {seconds} | {ratio} |")
    starts = "; ".join(f"{env_id} S2VG {warmup[env_id]['s2vg']:,}, SAC {warmup[env_id]['sac']:,}" for env_id in reach)
    lines += [
        "",
        "Seed-mean returns of the compare.py runs (evaluations every 5k steps; S2VG: the seeds that reached its longest run's "
        "last step, runs still under way left out), "
        "times = (env steps − learning_starts) / the rates above, the rates all measured in one invocation (the timing "
        "behind wallclock.json); the random warm-up steps before learning_starts make no updates and count as free "
        f"(learning_starts: {starts}); evaluation excluded.",
    ]
    for env_id, timed in timed_runs.items():
        if timed != FRONTIER_S2VG[env_id]:
            lines.append(
                f"\n{env_id}: S2VG's rate was timed with the configuration of {timed}, not of {FRONTIER_S2VG[env_id]} "
                "(today's frontier run, whose curves give the steps); its times hold as far as the two cost the same per "
                "env step after learning_starts."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(FRONTIER_ENVS), choices=FRONTIER_ENVS)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=50, help="Env steps after learning_starts before timing")
    parser.add_argument(
        "--chunk", nargs="+", default=["s2vg=300", "sac=1500", "crossq=150"], help="Env steps per round, algo=steps"
    )
    parser.add_argument("--sac-steps", nargs="+", type=int, default=[100_000, 200_000])
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument(
        "--reuse-rates",
        action="store_true",
        help="Time nothing: take the rates of the last timing (<results>/wallclock.json) and redo the table from the CSVs",
    )
    args = parser.parse_args()
    if "s2vg" not in args.algos or "sac" not in args.algos:
        parser.error("--algos must include s2vg and sac (the time to SAC's return compares the two)")
    results = Path(args.results)
    if args.reuse_rates:
        timed = json.loads((results / "wallclock.json").read_text())
        matmul, rates = timed["dense_matmul_flops_per_s"], {env_id: timed["rates"][env_id] for env_id in args.envs}
        chunks, rounds = timed["chunks"], timed["rounds"]
        timed_runs = {env_id: timed.get("timed_runs", {}).get(env_id, NOT_RECORDED) for env_id in args.envs}
    else:
        chunks = {algo: int(steps) for algo, _, steps in (item.partition("=") for item in args.chunk)}
        missing = [algo for algo in args.algos if algo not in chunks]
        if missing:
            parser.error(f"--chunk names no env steps for {missing}")
        th.set_num_threads(1)
        matmul, rates, rounds = dense_matmul_rate(th.device("cpu"), time.perf_counter), {}, args.rounds
        timed_runs = {env_id: FRONTIER_S2VG[env_id] for env_id in args.envs}
        for env_id in args.envs:
            rates[env_id] = learn_rates(env_id, tuple(args.algos), chunks, args.rounds, args.warmup)
            print(env_id, {algo: round(rate, 1) for algo, rate in rates[env_id].items()}, flush=True)
    warmup = {env_id: {algo: warmup_steps(algo, env_id) for algo in ("s2vg", "sac")} for env_id in args.envs}
    reach = {
        env_id: time_to_returns(results / env_id, FRONTIER_S2VG[env_id], rates[env_id], tuple(args.sac_steps), warmup[env_id])
        for env_id in args.envs
    }
    table = markdown(matmul, rates, reach, warmup, timed_runs)
    print(table)
    (results / "wallclock.md").write_text("## Wall-clock: S2VG to SAC's return, rates measured in one invocation\n\n" + table)
    payload = {
        "dense_matmul_flops_per_s": matmul,
        "rates": rates,
        "timed_runs": timed_runs,
        "warmup_steps": warmup,
        "reach": reach,
        "chunks": chunks,
        "rounds": rounds,
    }
    (results / "wallclock.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
