"""
The paper's Figure 2c: bias of S2VG's value estimate during training on Pendulum-v1, for value-expansion horizons
H = 1, 2, 5.

Every ``--every`` env steps, 100 states are sampled from the replay buffer; the predicted V(s) is averaged over them
and compared with a Monte-Carlo estimate of the same soft value, E[Σ_t γ^t (r_t − α log π(a_t|s_t))], from 50
rollouts of the current stochastic policy from each state (``--mc-horizon`` steps; γ^400 ≈ 0.02). The rollouts run
on a batched NumPy copy of Pendulum-v1's dynamics, checked against gymnasium's environment at start-up.

    python benchmarks/value_bias.py --horizons 1 2 5 --seeds 0 1 --steps 5000 --every 500

Writes ``<out>/value_bias_H<h>_seed<k>.csv``, ``value_bias.md`` and ``value_bias.png``.
"""

import argparse
import csv
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_s2vg import S2VG


class BatchedPendulum:
    """Pendulum-v1's dynamics and reward for a batch of states (theta, theta_dot), in float64 as gymnasium's."""

    gravity, mass, length, dt, max_speed, max_torque = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0

    def __init__(self, theta: np.ndarray, theta_dot: np.ndarray):
        self.theta = theta.astype(np.float64)
        self.theta_dot = theta_dot.astype(np.float64)

    @classmethod
    def from_observations(cls, observations: np.ndarray) -> "BatchedPendulum":
        """:param observations: (batch, 3) = cos θ, sin θ, θ̇"""
        return cls(np.arctan2(observations[:, 1], observations[:, 0]), observations[:, 2])

    def observations(self) -> np.ndarray:
        return np.stack([np.cos(self.theta), np.sin(self.theta), self.theta_dot], axis=1).astype(np.float32)

    def step(self, torque: np.ndarray) -> np.ndarray:
        """:param torque: (batch,) in env units; :return: rewards (batch,)"""
        u = np.clip(torque, -self.max_torque, self.max_torque)
        normalized = ((self.theta + np.pi) % (2 * np.pi)) - np.pi
        costs = normalized**2 + 0.1 * self.theta_dot**2 + 0.001 * u**2
        acceleration = 3 * self.gravity / (2 * self.length) * np.sin(self.theta) + 3.0 / (self.mass * self.length**2) * u
        theta_dot = self.theta_dot + acceleration * self.dt
        self.theta_dot = np.clip(theta_dot, -self.max_speed, self.max_speed)
        self.theta = self.theta + self.theta_dot * self.dt
        return -costs


def check_against_gymnasium(steps: int = 50) -> None:
    """The batched copy reproduces gymnasium's Pendulum-v1 for random actions (raises otherwise)."""
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    batched = BatchedPendulum(np.array([env.state[0]]), np.array([env.state[1]]))
    for _ in range(steps):
        action = rng.uniform(-2, 2, size=1)
        _, reward, *_ = env.step(action.astype(np.float32))
        batched_reward = batched.step(action.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(batched_reward[0], reward, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose([batched.theta[0], batched.theta_dot[0]], env.state, rtol=1e-6, atol=1e-6)


@th.no_grad()
def value_bias(model: S2VG, n_states: int, n_rollouts: int, mc_horizon: int, rng: np.random.Generator) -> tuple[float, float]:
    """Mean predicted V over replay states and the Monte-Carlo soft value of the current policy from them."""
    buffer = model.replay_buffer
    indices = rng.integers(0, buffer.size(), size=n_states)
    states = buffer.observations[indices, 0].astype(np.float32)
    predicted = model.value_net(th.as_tensor(states, device=model.device)).mean().item()
    alpha = float(th.exp(model.log_ent_coef).item()) if model.log_ent_coef is not None else float(model.ent_coef_tensor)
    pendulum = BatchedPendulum.from_observations(np.repeat(states, n_rollouts, axis=0))
    returns = np.zeros(n_states * n_rollouts)
    discount = 1.0
    for _ in range(mc_horizon):
        obs = th.as_tensor(pendulum.observations(), device=model.device)
        actions, log_prob = model._sample_actions(obs)
        rewards = pendulum.step(2.0 * actions[:, 0].cpu().numpy().astype(np.float64))  # unscale [-1, 1] -> [-2, 2]
        returns += discount * (rewards - alpha * log_prob[:, 0].cpu().numpy())
        discount *= model.gamma
    return predicted, float(returns.mean())


def run(horizon: int, seed: int, steps: int, every: int, out: Path, n_states: int, n_rollouts: int, mc_horizon: int) -> Path:
    path = out / f"value_bias_H{horizon}_seed{seed}.csv"
    rows: list[tuple[int, float, float, float]] = []
    rng = np.random.default_rng(seed)

    class BiasCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % every == 0:
                predicted, monte_carlo = value_bias(self.model, n_states, n_rollouts, mc_horizon, rng)  # type: ignore[arg-type]
                rows.append((self.num_timesteps, predicted, monte_carlo, predicted - monte_carlo))
                print(f"H={horizon} seed {seed} step {self.num_timesteps}: V {predicted:.1f} MC {monte_carlo:.1f}", flush=True)
                with open(path, "w", newline="") as file:
                    writer = csv.writer(file)
                    writer.writerow(["step", "predicted_v", "monte_carlo_v", "bias"])
                    writer.writerows(rows)
            return True

    S2VG("MlpPolicy", "Pendulum-v1", horizon=horizon, seed=seed).learn(steps, callback=BiasCallback())
    return path


def summarize(out: Path, horizons: list[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| H | seeds | mean bias (V − MC) over the run | mean |bias| | bias at the end |", "|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for horizon in horizons:
        runs = [
            np.atleast_1d(np.genfromtxt(p, delimiter=",", names=True))
            for p in sorted(out.glob(f"value_bias_H{horizon}_seed*.csv"))
        ]
        if not runs:
            continue
        length = min(len(run) for run in runs)
        bias = np.array([run["bias"][:length] for run in runs])
        steps = runs[0]["step"][:length]
        ax.plot(steps, bias.mean(0), label=f"H = {horizon}")
        ax.fill_between(steps, bias.mean(0) - bias.std(0), bias.mean(0) + bias.std(0), alpha=0.2)
        final = f"{bias[:, -1].mean():.1f} ± {bias[:, -1].std():.1f}"
        lines.append(f"| {horizon} | {len(runs)} | {bias.mean():.1f} | {np.abs(bias).mean():.1f} | {final} |")
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("predicted V − Monte-Carlo value")
    ax.set_title("Pendulum-v1: value estimation bias")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "value_bias.png", dpi=100)
    table = "\n".join(lines)
    (out / "value_bias.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--rollouts", type=int, default=50)
    parser.add_argument("--mc-horizon", type=int, default=400)
    parser.add_argument("--out", default="benchmarks/results/Pendulum-v1/value_bias")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    th.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        check_against_gymnasium()
        for seed in args.seeds:
            for horizon in args.horizons:
                run(horizon, seed, args.steps, args.every, out, args.states, args.rollouts, args.mc_horizon)
    print(summarize(out, args.horizons))


if __name__ == "__main__":
    main()
