"""
Cost per env step of S2VG's options, side by side with S2VG's configuration from ``s2vg.yml`` and SB3's SAC, in one
process, interleaved: env steps per second of ``learn()`` on one torch thread, after the warm-up of random steps.

Every variant is built once (the env's ``s2vg.yml`` settings updated with the variant's keyword arguments), then
``--rounds`` times in turn each variant learns ``--steps`` more steps; the median rate of the rounds is reported,
with the ratios to ``paper`` (the YAML's settings) and to SAC, and the machine's dense fp32 matmul rate measured in
the same run (hosts differ: compare only within one invocation).

    python benchmarks/option_cost.py --env HalfCheetah-v5 --variants "hpi3=dict(policy_horizon=3)" \
        "ens5=dict(n_models=5)" --clock cpu

``--clock cpu`` times with the process's CPU time, which other processes sharing the cores do not inflate.
"""

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch as th
from compare import paper_s2vg_kwargs  # beside this script
from speed import clock_for, dense_matmul_rate
from stable_baselines3 import SAC
from torch import nn

from sb3_s2vg import S2VG


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"name=dict(...)"`` -> (name, keyword arguments)."""
    name, _, expression = text.partition("=")
    return name, eval(expression, {"dict": dict, "nn": nn})


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``update``; ``policy_kwargs`` are merged key by key, not replaced."""
    kwargs = {**base, **update}
    if "policy_kwargs" in update:
        kwargs["policy_kwargs"] = {**base.get("policy_kwargs", {}), **update["policy_kwargs"]}
    return kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--variants", nargs="*", default=[], help="name=dict(...) keyword arguments over s2vg.yml")
    parser.add_argument("--steps", type=int, default=100, help="Env steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--out", default="benchmarks/results/speed/options")
    args = parser.parse_args()
    th.set_num_threads(1)
    device = th.device("cpu")
    clock = clock_for(device, args.clock)

    base = paper_s2vg_kwargs(args.env)
    warm_up = base.get("learning_starts", 100)
    models: dict[str, Any] = {"sac": SAC("MlpPolicy", args.env, seed=0, learning_starts=warm_up)}
    for name, update in [("paper", {}), *map(parse_variant, args.variants)]:
        models[name] = S2VG("MlpPolicy", args.env, seed=0, **merged(base, update))
    for model in models.values():
        model.learn(warm_up + 10)  # the random warm-up and the first updates, untimed
    matmul_rate = dense_matmul_rate(device, clock)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = clock()
            model.learn(args.steps, reset_num_timesteps=False)
            rates[name].append(args.steps / (clock() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}

    lines = [
        f"## {args.env}: env steps per second of learn(), one torch thread ({args.clock} clock, median of {args.rounds} "
        f"rounds of {args.steps} steps)",
        "",
        f"Dense fp32 matmul (1024³) in the same run: {matmul_rate / 1e9:.0f} GFLOP/s.",
        "",
        "| variant | keyword arguments over s2vg.yml | env steps/s | × paper | × SAC |",
        "|---|---|---|---|---|",
    ]
    descriptions = {"sac": "SB3 SAC, defaults", "paper": "(none)", **dict(v.split("=", 1) for v in args.variants)}
    for name, rate in medians.items():
        lines.append(
            f"| {name} | `{descriptions[name]}` | {rate:.1f} | {rate / medians['paper']:.2f} | {rate / medians['sac']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.env}.md").write_text(table + "\n")
    (out / f"{args.env}.json").write_text(
        json.dumps({"matmul_gflops": matmul_rate / 1e9, "rates": rates, "variants": descriptions}, indent=1)
    )


if __name__ == "__main__":
    main()
