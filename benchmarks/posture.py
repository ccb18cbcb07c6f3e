"""
Posture of a trained agent: why a seed stays low. On HalfCheetah, Hopper and Walker2d the second observation is the
torso's pitch angle (rad; ``rooty``); a cheetah that has flipped onto its back runs with it near ±π and is stuck in
a known local optimum of the task (about 1,000 to 2,000 return) that more training on the same data rarely leaves.
On Hopper and Walker2d a low return is a fall (a short episode) or a slow gait (a low forward velocity): the script
reports both.

This script loads agents saved by ``compare.py`` (its exact checkpoints' ``agent.zip``, any algorithm), runs
deterministic episodes, and reports per agent: the return, the episode length, the forward velocity (the env's
``info["x_velocity"]``), the mean and range of the pitch angle, and the fraction of steps with ``|pitch| > π/2``
("on its back").

    python benchmarks/posture.py --env HalfCheetah-v5 \\
        benchmarks/results/HalfCheetah-v5/checkpoints/s2vg-normin_seed{0,1,2}/agent.zip
"""

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from compare import algorithm_class, split_run_name

#: Environments whose observation index 1 is the torso's pitch angle (rad)
PITCH_INDEX = {"HalfCheetah-v5": 1, "Hopper-v5": 1, "Walker2d-v5": 1}


def posture(model: Any, env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """
    :param model: A trained SB3 agent (anything with ``predict``)
    :param env_id: One of ``PITCH_INDEX``
    :param episodes: Deterministic episodes to run
    :param seed: Seed of the first episode's reset (then ``seed + 1``, ...)
    :return: ``return`` and ``length`` (means over episodes), ``x_velocity`` (m/s, mean over all steps),
        ``pitch_mean``, ``pitch_min``, ``pitch_max`` (rad, over all steps) and ``on_back`` (fraction of steps with
        ``|pitch| > π/2``)
    """
    if env_id not in PITCH_INDEX:
        raise ValueError(f"env_id must be one of {sorted(PITCH_INDEX)}, got {env_id!r}")
    env = gym.make(env_id)
    returns, lengths, pitches, velocities = [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, steps, done = 0.0, 0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            pitches.append(float(obs[PITCH_INDEX[env_id]]))
            velocities.append(float(info["x_velocity"]))
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    pitch = np.asarray(pitches)
    return {
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
        "x_velocity": float(np.mean(velocities)),
        "pitch_mean": float(pitch.mean()),
        "pitch_min": float(pitch.min()),
        "pitch_max": float(pitch.max()),
        "on_back": float(np.mean(np.abs(pitch) > np.pi / 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", nargs="+", type=Path, help="agent.zip files written by compare.py's checkpoints")
    parser.add_argument("--env", required=True, choices=sorted(PITCH_INDEX))
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    print("| agent | return | episode length | forward velocity (m/s) | pitch mean (min, max) | on its back |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path in args.agents:
        run = path.parent.name  # <algo>[-<tag>]_seed<k>
        model = algorithm_class(split_run_name(run)[0]).load(path, device="cpu")
        result = posture(model, args.env, args.episodes, args.seed)
        print(
            f"| {run} | {result['return']:,.0f} | {result['length']:.0f} | {result['x_velocity']:.2f} "
            f"| {result['pitch_mean']:.2f} ({result['pitch_min']:.2f}, "
            f"{result['pitch_max']:.2f}) | {100 * result['on_back']:.0f} % |"
        )


if __name__ == "__main__":
    main()
