"""Train S2VG with an EvalCallback and plot its learning curve to a PNG (needs matplotlib: pip install -e .[plots]).

python examples/learning_curve.py --env Pendulum-v1 --timesteps 4000 --out pendulum_curve.png
"""

import argparse
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_s2vg import S2VG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--timesteps", type=int, default=4000)
    parser.add_argument("--eval-freq", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="s2vg_learning_curve.png")
    args = parser.parse_args()
    th.set_num_threads(1)

    log_dir = tempfile.mkdtemp()
    eval_env = make_vec_env(args.env, seed=args.seed + 1000)
    callback = EvalCallback(eval_env, eval_freq=args.eval_freq, n_eval_episodes=5, log_path=log_dir, verbose=0)
    S2VG("MlpPolicy", args.env, seed=args.seed).learn(args.timesteps, callback=callback, progress_bar=True)

    data = np.load(f"{log_dir}/evaluations.npz")
    returns = data["results"]
    plt.figure(figsize=(6, 4))
    plt.plot(data["timesteps"], returns.mean(axis=1), marker="o", label="S2VG")
    plt.fill_between(data["timesteps"], returns.min(axis=1), returns.max(axis=1), alpha=0.2)
    plt.xlabel("environment steps")
    plt.ylabel("evaluation return (deterministic)")
    plt.title(f"S2VG on {args.env}")
    plt.legend()
    plt.tight_layout()
    plt.savefig(args.out, dpi=100)
    print(f"learning curve written to {args.out}")


if __name__ == "__main__":
    main()
