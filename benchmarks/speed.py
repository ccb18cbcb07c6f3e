"""
Speed of S2VG against SB3's SAC, measured in one process, interleaved, on the same machine:

(a) one SB3 SAC gradient step (``SAC.train(gradient_steps=K) / K``: replay sampling included),
(b) one S2VG actor-critic update (replay sampling, eq. 7, 8, 10-11 gradients, optimizer steps, Polyak) with its
    hand-derived gradients (the default), the same with autograd (``manual_gradients=False``), and one world-model
    update, with the same batch size and layer sizes,
(c) env steps per second of whole ``learn()`` runs of both at the paper's m.

It also counts the FLOPs of each update from the layer sizes (matrix products only: 2·batch·in·out per forward
product, as much again per input gradient and per weight gradient that autograd computes), measures the machine's
dense fp32 matmul rate in the same run, and reports which fraction of it each update achieves.

    python benchmarks/speed.py                       # HalfCheetah-v5, batch 256, 1 torch thread, CPU (+ CUDA if present)
    python benchmarks/speed.py --env Pendulum-v1 --rounds 5 --out benchmarks/results/speed
    python benchmarks/speed.py --clock cpu          # CPU time of this process: unaffected by other processes

``--clock wall`` (default) times with ``time.perf_counter``; ``--clock cpu`` with ``time.process_time``, the CPU
seconds this process used, which other processes sharing the cores do not inflate (CPU device only; the CUDA
timings stay wall-clock).

Prints a markdown table and writes it (and JSON) under ``--out``.
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_s2vg import S2VG

#: A clock in seconds: ``time.perf_counter`` (wall-clock) or ``time.process_time`` (this process's CPU time)
Clock = Callable[[], float]


def clock_for(device: th.device, clock_name: str) -> Clock:
    """The clock of the timings on ``device``: ``--clock cpu`` applies to the CPU only (CUDA work runs off the host)."""
    return time.process_time if device.type == "cpu" and clock_name == "cpu" else time.perf_counter


def linear_flops(dims: list[int], batch: int, forward: bool = True, weight_grads: bool = False, input_grads: str = "none") -> int:
    """
    FLOPs of the matrix products of one MLP with layer widths ``dims`` (input, hidden..., output).

    :param input_grads: ``"none"``, ``"hidden"`` (input gradients of every layer but the first: back-propagation
        into the weights only) or ``"all"`` (also into the network's input, e.g. into the actions)
    """
    layers = list(pairwise(dims))
    per_layer = [2 * batch * fan_in * fan_out for fan_in, fan_out in layers]
    total = sum(per_layer) if forward else 0
    if weight_grads:
        total += sum(per_layer)
    if input_grads == "hidden":
        total += sum(per_layer[1:])
    elif input_grads == "all":
        total += sum(per_layer)
    return total


def sac_step_flops(obs_dim: int, action_dim: int, hidden: list[int], batch: int) -> int:
    """SB3 SAC gradient step: what its ``train()`` computes (the actor loss also fills the critics' weight grads)."""
    actor = [obs_dim, *hidden, 2 * action_dim]
    q = [obs_dim + action_dim, *hidden, 1]
    flops = linear_flops(actor, batch)  # actor on s (with grad)
    flops += linear_flops(actor, batch)  # actor on s' (target, no grad)
    flops += 2 * linear_flops(q, batch)  # target critics
    flops += 2 * linear_flops(q, batch, weight_grads=True, input_grads="hidden")  # critic loss
    flops += 2 * linear_flops(q, batch, weight_grads=True, input_grads="all")  # actor loss through both critics
    flops += linear_flops(actor, batch, forward=False, weight_grads=True, input_grads="hidden")  # actor backward
    return flops


def s2vg_update_flops(obs_dim: int, action_dim: int, arch: dict[str, list[int]], batch: int) -> int:
    """One S2VG actor-critic update at H = 1 as implemented: no weight gradients for the model or V in eq. 11."""
    actor = [obs_dim, *arch["pi"], 2 * action_dim]
    q = [obs_dim + action_dim, *arch["qf"], 1]
    v = [obs_dim, *arch["vf"], 1]
    dynamics = [obs_dim + action_dim, *arch["dynamics"], 2 * obs_dim]
    reward = [obs_dim + action_dim, *arch["reward"], 2]
    flops = linear_flops(actor, batch)  # actor on s
    flops += linear_flops(v, batch)  # target V on s' (eq. 7)
    flops += 2 * linear_flops(q, batch, weight_grads=True, input_grads="hidden")  # eq. 7
    flops += 2 * linear_flops(q, batch)  # min Q(s, a~π) for eq. 8, no grad
    flops += linear_flops(v, batch, weight_grads=True, input_grads="hidden")  # eq. 8
    flops += linear_flops(dynamics, batch, input_grads="all") + linear_flops(reward, batch, input_grads="all")  # eq. 11
    flops += linear_flops(v, batch, input_grads="all")  # V(f(s, a)) in eq. 11
    flops += linear_flops(actor, batch, forward=False, weight_grads=True, input_grads="hidden")
    return flops


def world_model_update_flops(obs_dim: int, action_dim: int, arch: dict[str, list[int]], batch: int) -> int:
    dynamics = [obs_dim + action_dim, *arch["dynamics"], 2 * obs_dim]
    reward = [obs_dim + action_dim, *arch["reward"], 2]
    return sum(linear_flops(net, batch, weight_grads=True, input_grads="hidden") for net in (dynamics, reward))


def dense_matmul_rate(device: th.device, clock: Clock, size: int = 1024, repeats: int = 20) -> float:
    """Achieved fp32 FLOP/s of a square ``size``³ matrix product on ``device`` (the machine's dense rate)."""
    a, b = th.randn(size, size, device=device), th.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    start = clock()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (clock() - start)


def _sync(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize()


def _timed(function, repeats: int, device: th.device, clock: Clock) -> float:
    _sync(device)
    start = clock()
    function(repeats)
    _sync(device)
    return (clock() - start) / repeats


def measure_updates(
    env_id: str,
    device: th.device,
    clock: Clock,
    batch: int,
    hidden: list[int],
    rounds: int,
    repeats: int,
) -> dict[str, Any]:
    sac = SAC(
        "MlpPolicy", env_id, learning_starts=1000, batch_size=batch, policy_kwargs=dict(net_arch=hidden), device=device, seed=0
    )

    def make_s2vg(**kwargs: Any) -> S2VG:
        model = S2VG(
            "MlpPolicy", env_id, learning_starts=1000, batch_size=batch, model_batch_size=batch,
            policy_kwargs=dict(net_arch=hidden), device=device, seed=0, **kwargs,
        )  # fmt: skip
        model.learn(1001)  # fills the buffer
        return model

    def updates_of(model: S2VG) -> Callable[[int], None]:
        def actor_critic_updates(n: int) -> None:
            for _ in range(n):
                model._actor_critic_update(model.replay_buffer.sample(batch))
                model._update_value_target()

        return actor_critic_updates

    sac.learn(1001)
    s2vg = make_s2vg()

    def sac_steps(n: int) -> None:
        sac.train(gradient_steps=n, batch_size=batch)

    def model_updates(n: int) -> None:
        for _ in range(n):
            s2vg._train_world_model()

    functions = {
        "sac_step": sac_steps,
        "s2vg_update": updates_of(s2vg),
        "s2vg_autograd_update": updates_of(make_s2vg(manual_gradients=False)),
        "world_model_update": model_updates,
    }
    times: dict[str, list[float]] = {key: [] for key in functions}
    for function in functions.values():  # warm-up
        function(5)
    for _ in range(rounds):  # interleaved
        for key, function in functions.items():
            times[key].append(_timed(function, repeats, device, clock))
    medians = {key: statistics.median(values) for key, values in times.items()}

    obs_dim, action_dim = s2vg.world_model.obs_dim, s2vg.world_model.action_dim
    arch = s2vg.policy.resolved_net_arch
    flops = {
        "sac_step": sac_step_flops(obs_dim, action_dim, hidden, batch),
        "s2vg_update": s2vg_update_flops(obs_dim, action_dim, arch, batch),
        "world_model_update": world_model_update_flops(obs_dim, action_dim, arch, batch),
    }
    flops["s2vg_autograd_update"] = flops["s2vg_update"]
    return {"seconds": medians, "all_seconds": times, "flops": flops}


def measure_learn(env_id: str, device: th.device, clock: Clock, steps: int, s2vg_kwargs: dict[str, Any]) -> dict[str, float]:
    """Env steps per second of whole ``learn()`` runs (after ``learning_starts`` = 100 random steps)."""
    rates = {}
    for name, make in [
        ("sac", lambda: SAC("MlpPolicy", env_id, device=device, seed=0)),
        ("s2vg", lambda: S2VG("MlpPolicy", env_id, device=device, seed=0, **s2vg_kwargs)),
    ]:
        model = make()
        start = clock()
        model.learn(steps)
        rates[name] = steps / (clock() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--learn-envs", nargs="*", default=["Pendulum-v1", "HalfCheetah-v5"])
    parser.add_argument("--learn-steps", type=int, default=1500)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--out", default="benchmarks/results/speed")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="Clock of the CPU timings")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    from sb3_s2vg.zoo import load_hyperparams

    devices = [th.device(d) for d in args.devices if d == "cpu" or th.cuda.is_available()]
    results: dict[str, Any] = {
        "env": args.env, "batch_size": args.batch_size, "hidden": args.hidden, "threads": args.threads, "clock": args.clock
    }  # fmt: skip
    lines = []
    for device in devices:
        clock = clock_for(device, args.clock)
        rate = dense_matmul_rate(device, clock)
        updates = measure_updates(args.env, device, clock, args.batch_size, args.hidden, args.rounds, args.repeats)
        learn = {}
        for env_id in args.learn_envs:
            m = load_hyperparams(env_id).get("actor_critic_updates", 5)
            learn[env_id] = {"m": m, **measure_learn(env_id, device, clock, args.learn_steps, {"actor_critic_updates": m})}
        results[device.type] = {"dense_matmul_flops_per_s": rate, **updates, "learn_env_steps_per_s": learn}
        seconds, flops = updates["seconds"], updates["flops"]
        lines += [
            f"### {device.type}: {args.env}, batch {args.batch_size}, layers {args.hidden}, {args.threads} torch thread(s), "
            f"{'process CPU time' if clock is time.process_time else 'wall-clock'}",
            "",
            "| what | ms | × SAC step | GFLOP per call | GFLOP/s | fraction of dense matmul rate |",
            "|---|---|---|---|---|---|",
        ]
        labels = {
            "sac_step": "SB3 SAC gradient step",
            "s2vg_update": "S2VG actor-critic update (hand-derived gradients, the default)",
            "s2vg_autograd_update": "S2VG actor-critic update, autograd (manual_gradients=False)",
            "world_model_update": "S2VG world-model update",
        }
        for key, label in labels.items():
            if key not in seconds:
                continue
            achieved = flops[key] / seconds[key]
            lines.append(
                f"| {label} | {seconds[key] * 1e3:.2f} | {seconds[key] / seconds['sac_step']:.2f} | {flops[key] / 1e9:.3f} | "
                f"{achieved / 1e9:.1f} | {achieved / rate:.2f} |"
            )
        lines += ["", f"Dense fp32 matmul rate (1024³ product) measured in the same run: {rate / 1e9:.0f} GFLOP/s.", ""]
        lines += ["| env | m | SAC env steps/s | S2VG env steps/s | S2VG / SAC |", "|---|---|---|---|---|"]
        for env_id, rates in learn.items():
            lines.append(
                f"| {env_id} | {rates['m']} | {rates['sac']:.1f} | {rates['s2vg']:.1f} | {rates['s2vg'] / rates['sac']:.2f} |"
            )
        lines.append("")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(table + "\n")
    (out / "speed.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
