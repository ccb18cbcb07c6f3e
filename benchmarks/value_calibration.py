"""
Value calibration of a trained S2VG agent: do its critics predict what its policy gets? Where a seed stays low, this
tells a critic that misjudges the task from an actor that does not follow a critic that judges it well.

The script loads S2VG agents saved by ``compare.py`` (its exact checkpoints' ``agent.zip``), runs episodes with the
stochastic policy (the policy that V and Q estimate, eq. 8), and compares, at every step t, V(s_t) and
min_j Q_j(s_t, a_t) with the realised discounted soft return

    G_t = Σ_k γ^k (r_{t+k} − α log π(a_{t+k} | s_{t+k}))

over the rest of the episode: exact after a termination, closed with γ V(s_T) at a time-limit truncation. Reported
per agent: the episodes' mean return and length and the fraction that terminated, the per-step means of α log π and
of the soft reward r − α log π (where it is negative, ending the episode tends to be worth more than living: the
terminal state's value is 0), the mean of V and of G over all steps, V − G (mean), min Q − (G + α log π)
(mean; Q's target has no entropy term at its own step), the correlation of V with G over steps, V against G 50
and 10 steps before a termination (does V see a fall coming?), and the agent's world-model done probability d̂(s_t, a_t)
(its learned classifier, or its termination function on the model's mean predicted next state) at the real
terminations and elsewhere (does the model end imagined episodes where the real ones end? These transitions are new
to it). min Q is over all the critics (``min_q_subset`` is not applied).

    python benchmarks/value_calibration.py --env Walker2d-v5 --episodes 3 \\
        benchmarks/results/Walker2d-v5/checkpoints/s2vg-img08-ens5_seed0/agent.zip
"""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_s2vg.policies import min_over_critics

if TYPE_CHECKING:
    from sb3_s2vg import S2VG

#: Steps before a termination at which V and G are compared
BEFORE_END = (50, 10)


def discounted_soft_returns(rewards: np.ndarray, log_probs: np.ndarray, alpha: float, gamma: float, tail: float) -> np.ndarray:
    """
    G_t = Σ_{k<T-t} γ^k (r_{t+k} − α log π_{t+k}) + γ^{T-t} ``tail`` for every step t of one episode.

    :param rewards: Rewards r_t, shape (T,)
    :param log_probs: log π(a_t | s_t) of the actions taken, shape (T,)
    :param alpha: Entropy coefficient α
    :param gamma: Discount γ
    :param tail: Value after the last step: 0 after a termination, V(s_T) after a truncation
    :return: G, shape (T,)
    """
    soft = np.asarray(rewards, dtype=np.float64) - alpha * np.asarray(log_probs, dtype=np.float64)
    returns = np.empty_like(soft)
    running = float(tail)
    for t in range(len(soft) - 1, -1, -1):
        running = soft[t] + gamma * running
        returns[t] = running
    return returns


class Episode(NamedTuple):
    """One episode of the stochastic policy, per step t (arrays of shape (T,))."""

    values: np.ndarray  #: V(s_t)
    min_q: np.ndarray  #: min_j Q_j(s_t, a_t) over all the critics
    rewards: np.ndarray  #: r_t
    log_probs: np.ndarray  #: log π(a_t | s_t)
    returns: np.ndarray  #: G_t, the realised discounted soft return from s_t (``discounted_soft_returns``)
    terminated: bool  #: whether the episode ended in a termination (else a time-limit truncation)
    alpha: float  #: the agent's entropy coefficient α
    done_probs: np.ndarray  #: the world model's done probability d̂(s_t, a_t) (``done_probabilities``), NaN without one


def run_episode(model: "S2VG", env: gym.Env, seed: int) -> Episode:
    """
    One episode of ``model``'s stochastic policy with V, min Q and the realised soft return at every step.

    :param model: A trained S2VG agent (its α: the learned one with ``ent_coef="auto"``, else the constant)
    :param env: The environment (not vectorised)
    :param seed: Seed of the reset
    """
    alpha = float(model._current_ent_coef())
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, log_probs, min_q = [], [], [], [], []
    done, terminated = False, False
    while not done:
        obs_tensor = model.policy.obs_to_tensor(obs)[0]
        with th.no_grad():
            action, log_prob = model.actor.action_log_prob(obs_tensor)
            min_q.append(float(min_over_critics(model.critic.stacked(obs_tensor, action))))
        observations.append(obs)
        actions.append(action)
        log_probs.append(float(log_prob))
        obs, reward, terminated, truncated, _ = env.step(model.policy.unscale_action(action.cpu().numpy()[0]))
        rewards.append(float(reward))
        done = terminated or truncated
    obs_batch = model.policy.obs_to_tensor(np.asarray(observations))[0]
    with th.no_grad():
        values = model.value_net(obs_batch).flatten().cpu().numpy()
        tail = 0.0 if terminated else float(model.value_net(model.policy.obs_to_tensor(obs)[0]))
    returns = discounted_soft_returns(np.asarray(rewards), np.asarray(log_probs), alpha, model.gamma, tail)
    done_probs = done_probabilities(model, obs_batch, th.cat(actions))
    return Episode(
        values, np.asarray(min_q), np.asarray(rewards), np.asarray(log_probs), returns, bool(terminated), alpha, done_probs
    )


def done_probabilities(model: "S2VG", observations: PyTorchObs, actions: th.Tensor) -> np.ndarray:
    """
    The world model's done probability d̂(s_t, a_t) of each transition, as an imagined step decides it: the learned
    classifier, or the termination function (which takes precedence) on the model's mean predicted next state. Drawn
    on a fork of torch's random stream (an ensemble picks a member per sample), so the episodes do not change.

    :param model: A trained S2VG agent
    :param observations: Shape (T, obs_dim)
    :param actions: The policy's actions in [-1, 1], shape (T, action_dim)
    :return: Shape (T,), all NaN when the world model has no termination model
    """
    with th.no_grad(), th.random.fork_rng():
        dones = model.world_model(observations, actions, deterministic=True).dones
    return np.full(len(actions), np.nan) if dones is None else dones.flatten().cpu().numpy().astype(np.float64)


def value_calibration(model: "S2VG", env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """
    V and min Q of ``model`` against the realised soft returns of its stochastic policy over ``episodes`` episodes.

    :param model: A trained S2VG agent
    :param env_id: Gymnasium environment id
    :param episodes: Episodes to run with the stochastic policy
    :param seed: Seed of the first episode's reset (then ``seed + 1``, ...) and of the policy's noise
    :return: ``return``, ``length`` (means over episodes), ``terminated`` (fraction of episodes), ``alpha_log_pi``
        and ``soft_reward`` (means over all steps of α log π(a_t | s_t) and of r_t − α log π(a_t | s_t)), ``v``, ``g``
        (means over all steps), ``v_minus_g`` (mean over steps of V(s_t) − G_t), ``q_minus_g`` (of min Q(s_t, a_t)
        minus its realised target G_t + α log π(a_t | s_t): Q's target has no entropy term at t), ``corr``
        (correlation of V with G over steps), and for each n in ``BEFORE_END``, ``v_before_<n>`` and
        ``g_before_<n>``: means over the terminated episodes at n steps before their end (NaN where none terminated
        or lasted that long), ``done_prob_terminal`` (mean d̂ at the terminations) and ``done_prob_other`` (at every
        other step) (NaN without a termination model; ``done_prob_terminal`` also where no episode terminated)
    """
    th.manual_seed(seed)
    env = gym.make(env_id)
    runs = [run_episode(model, env, seed + episode) for episode in range(episodes)]
    env.close()
    v, g = np.concatenate([run.values for run in runs]), np.concatenate([run.returns for run in runs])
    alpha_log_pi = np.concatenate([run.alpha * run.log_probs for run in runs])
    q_errors = np.concatenate([run.min_q - (run.returns + run.alpha * run.log_probs) for run in runs])
    result = {
        "return": float(np.mean([run.rewards.sum() for run in runs])),
        "length": float(np.mean([len(run.rewards) for run in runs])),
        "terminated": float(np.mean([run.terminated for run in runs])),
        "alpha_log_pi": float(alpha_log_pi.mean()),
        "soft_reward": float((np.concatenate([run.rewards for run in runs]) - alpha_log_pi).mean()),
        "v": float(v.mean()),
        "g": float(g.mean()),
        "v_minus_g": float((v - g).mean()),
        "q_minus_g": float(q_errors.mean()),
        "corr": float(np.corrcoef(v, g)[0, 1]) if v.std() > 0 and g.std() > 0 else float("nan"),
    }
    terminal = [run.done_probs[-1] for run in runs if run.terminated]
    other = np.concatenate([run.done_probs[:-1] if run.terminated else run.done_probs for run in runs])
    result["done_prob_terminal"] = float(np.mean(terminal)) if terminal else float("nan")
    result["done_prob_other"] = float(np.mean(other)) if len(other) else float("nan")
    for n in BEFORE_END:
        ends = [(run.values[-n], run.returns[-n]) for run in runs if run.terminated and len(run.rewards) >= n]
        result[f"v_before_{n}"] = float(np.mean([end[0] for end in ends])) if ends else float("nan")
        result[f"g_before_{n}"] = float(np.mean([end[1] for end in ends])) if ends else float("nan")
    return result


def main() -> None:
    from sb3_s2vg import S2VG

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", nargs="+", type=Path, help="S2VG agent.zip files written by compare.py's checkpoints")
    parser.add_argument("--env", required=True)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    th.set_num_threads(1)
    before = " | ".join(f"V / G {n} steps before a termination" for n in BEFORE_END)
    columns = "α log π | r − α log π | V | G | V − G | min Q − (G + α log π) | corr(V, G)"
    print(f"| agent | return | length (terminated) | {columns} | {before} | d̂ at the terminations / elsewhere |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * (len(BEFORE_END) + 1))
    for path in args.agents:
        model = S2VG.load(path, device="cpu")
        r = value_calibration(model, args.env, args.episodes, args.seed)
        cells = " | ".join(f"{r[f'v_before_{n}']:,.1f} / {r[f'g_before_{n}']:,.1f}" for n in BEFORE_END)
        print(
            f"| {path.parent.name} | {r['return']:,.0f} | {r['length']:.0f} ({100 * r['terminated']:.0f} %) "
            f"| {r['alpha_log_pi']:+.2f} | {r['soft_reward']:+.2f} | {r['v']:,.1f} | {r['g']:,.1f} "
            f"| {r['v_minus_g']:+,.1f} | {r['q_minus_g']:+,.1f} | {r['corr']:.2f} | {cells} "
            f"| {r['done_prob_terminal']:.3f} / {r['done_prob_other']:.4f} |"
        )


if __name__ == "__main__":
    main()
