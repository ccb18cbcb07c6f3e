"""The main job: train S2VG on Pendulum-v1 with the paper's default settings, with a progress bar, then save,
load and evaluate it.

    python examples/train_pendulum.py [--timesteps 3000] [--seed 0]
"""

import argparse

import gymnasium as gym
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_s2vg import S2VG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--timesteps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-path", default="s2vg_pendulum")
    args = parser.parse_args()
    th.set_num_threads(1)  # these small networks run as fast on one thread

    model = S2VG("MlpPolicy", args.env, seed=args.seed, verbose=0)
    model.learn(args.timesteps, progress_bar=True)
    model.save(args.save_path)

    model = S2VG.load(args.save_path)
    eval_env = Monitor(gym.make(args.env))
    eval_env.reset(seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(
        f"{args.env}: S2VG after {args.timesteps} steps, evaluation return {mean_return:.1f} +/- {std_return:.1f} (10 episodes)"
    )
    print(f"saved to {args.save_path}.zip")


if __name__ == "__main__":
    main()
