"""Train S2VG on Hopper-v5 with the package's preset (``get_hyperparameters``: the paper's Table 2 column, the known
termination function, and the 5-member ensemble world model with 80 % imagined transitions that won the 30k
screening in benchmarks/README.md), with a progress bar and checkpoints (agent and replay buffer) every ``--checkpoint-every``
steps; ``--resume`` continues from the newest checkpoint in ``--log-dir``.

    python examples/train_hopper.py --timesteps 100000 --checkpoint-every 10000
    python examples/train_hopper.py --timesteps 100000 --checkpoint-every 10000 --resume   # after an interruption

A resumed run continues SB3's way (the agent with its optimizers, world-model normalisers and replay buffer); for
results identical bit for bit to an uninterrupted run see ``benchmarks/exact_checkpoints.py``.
"""

import argparse
import re
from pathlib import Path

import gymnasium as gym
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_s2vg import S2VG, get_hyperparameters

PREFIX = "s2vg"


def newest_checkpoint(log_dir: Path) -> tuple[Path, Path] | None:
    """The newest ``CheckpointCallback`` agent zip in ``log_dir`` and its replay buffer, or None."""
    steps = [int(m.group(1)) for f in log_dir.glob(f"{PREFIX}_*_steps.zip") if (m := re.search(r"_(\d+)_steps", f.name))]
    if not steps:
        return None
    step = max(steps)
    return log_dir / f"{PREFIX}_{step}_steps.zip", log_dir / f"{PREFIX}_replay_buffer_{step}_steps.pkl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--timesteps", type=int, default=100_000, help="Total env steps, a resumed run included")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--log-dir", default="logs/s2vg_hopper")
    parser.add_argument("--resume", action="store_true", help="Continue from the newest checkpoint in --log-dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    log_dir = Path(args.log_dir)

    env = Monitor(gym.make(args.env))
    checkpoint = newest_checkpoint(log_dir) if args.resume else None
    if checkpoint is not None:
        model = S2VG.load(checkpoint[0], env=env)
        model.load_replay_buffer(checkpoint[1])
        print(f"resumed from {checkpoint[0]} at step {model.num_timesteps}")
    else:
        if args.resume:
            print(f"no checkpoint in {log_dir}: starting afresh")
        model = S2VG("MlpPolicy", env, seed=args.seed, **get_hyperparameters(args.env))
    remaining = args.timesteps - model.num_timesteps
    callback = CheckpointCallback(args.checkpoint_every, str(log_dir), name_prefix=PREFIX, save_replay_buffer=True)
    if remaining > 0:
        model.learn(remaining, callback=callback, progress_bar=True, reset_num_timesteps=checkpoint is None)

    eval_env = Monitor(gym.make(args.env))
    eval_env.reset(seed=args.seed + 1000)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
    print(f"{args.env}: S2VG after {model.num_timesteps} steps, evaluation return {mean_return:.1f} +/- {std_return:.1f}")


if __name__ == "__main__":
    main()
