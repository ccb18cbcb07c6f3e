"""
World-model quality of S2VG's model options, offline, on the replay buffer of a finished run: how well does each
variant, trained on the run's first ``--train-steps`` transitions, predict the next ``--eval-steps`` transitions the
run collected after them (the states its improving policy visits next), one step ahead and open-loop over
``--horizon`` steps along the real actions?

It answers in minutes what an RL run answers in hours for one question only: is a model accurate enough for the
policy gradient through ``policy_horizon`` model steps, or for imagined transitions (``imagined_ratio``)? It says
nothing about returns; an option that predicts better still has to win in ``compare.py``.

Every variant is built by S2VG's own constructor from the env's ``s2vg.yml`` settings updated with the variant's
keyword arguments (the same keywords a user passes: ``n_models``, ``model_loss``, ``model_learning_rate``,
``model_batch_size``, ``policy_kwargs`` with ``net_arch``'s ``dynamics`` / ``reward``, ``activation_fn``,
``layer_norm``, ...), so its world model, optimizer and loss are the ones S2VG would train. Two schedules:

- ``per-step`` (the paper's, S2VG's default): ``model_gradient_steps`` updates of ``model_batch_size`` transitions
  per env step after ``learning_starts``, here drawn uniformly from the first ``--train-steps`` transitions (a
  growing buffer in a real run); the normalisers see the training transitions once.
- ``fit`` (``model_train_freq``): one fit to convergence on a fixed held-out split (``fit_world_model``), as the
  last fit before step ``--train-steps`` would be (a real run's fits start from the previous fit's weights).

Errors, on start states from the evaluation window whose next ``--horizon`` steps stay in one episode, with the
model's mean prediction (``deterministic=True``; an ensemble predicts each sample with one random member, as an
imagined step does):

- ``1-step`` the next observation's squared error divided by the variance of the dynamics target, averaged over
  dimensions (1.0 is as good as predicting the average change), as ``WorldModel.prediction_errors``;
- ``k-step state`` the open-loop predicted observation after k steps against the real one, squared error divided by
  the training observations' variance, averaged over dimensions (1.0 is as good as predicting the average state);
- ``reward`` the root-mean-square error of the predicted reward, at the first step and at step k.

    python benchmarks/model_quality.py --env HalfCheetah-v5 \
        --buffer benchmarks/results/HalfCheetah-v5/checkpoints/s2vg-normin-ls5k_seed2 --train-steps 30000 \
        --variants "ens5=dict(n_models=5)" "nll=dict(model_loss='nll')"
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from compare import paper_s2vg_kwargs  # beside this script
from exact_checkpoints import read_replay_buffer_compact
from option_cost import merged, parse_variant
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import update_learning_rate

from sb3_s2vg import S2VG
from sb3_s2vg.model_training import fit_world_model, holdout_split, optimizer_step
from sb3_s2vg.world_model import WorldModel


def load_transitions(checkpoint_dir: Path) -> dict[str, np.ndarray]:
    """
    The filled part of a run's replay buffer (``exact_checkpoints.save_replay_buffer_compact``), one env.

    :return: ``observations``, ``next_observations`` (n, obs_dim), ``actions`` (n, action_dim), ``rewards``,
        ``dones``, ``timeouts`` (n,), in the order the run collected them
    """
    saved = read_replay_buffer_compact(checkpoint_dir / "replay_buffer.pkl.gz")
    if saved["full"]:
        raise ValueError(f"--buffer: the replay buffer in {checkpoint_dir} has wrapped around; its order is lost")
    arrays = saved["arrays"]
    if arrays["observations"].shape[1] != 1:
        raise ValueError(f"--buffer: the replay buffer in {checkpoint_dir} holds {arrays['observations'].shape[1]} envs, not 1")
    return {name: value[:, 0] for name, value in arrays.items() if isinstance(value, np.ndarray)}


def samples(data: dict[str, np.ndarray], rows: np.ndarray) -> ReplayBufferSamples:
    """Rows of the transitions as SB3's samples (observations flat, rewards and dones of shape (n, 1))."""

    def tensor(name: str) -> th.Tensor:
        return th.as_tensor(data[name][rows], dtype=th.float32)

    return ReplayBufferSamples(
        tensor("observations"),
        tensor("actions"),
        tensor("next_observations"),
        (tensor("dones") * (1 - tensor("timeouts"))).reshape(-1, 1),
        tensor("rewards").reshape(-1, 1),
    )


def rollout_starts(
    data: dict[str, np.ndarray], first: int, last: int, horizon: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` indices t in [first, last - horizon] whose transitions t .. t + horizon - 1 are one episode's."""
    ends = (data["dones"] > 0) | (data["timeouts"] > 0)
    candidates = [t for t in range(first, last - horizon + 1) if not ends[t : t + horizon - 1].any()]
    return rng.choice(candidates, size=min(n, len(candidates)), replace=False)


def train(model: S2VG, data: dict[str, np.ndarray], train_steps: int, schedule: str, rng: np.random.Generator) -> dict[str, Any]:
    """Train ``model``'s world model on the first ``train_steps`` transitions with ``schedule``."""
    world_model: WorldModel = model.policy.world_model
    # the rate S2VG's training sets from model_learning_rate at its start (the optimizer is built with another)
    update_learning_rate(world_model.optimizer, model.model_lr_schedule(1.0))
    everything = samples(data, np.arange(train_steps))
    world_model.update_normalizers(everything.observations, everything.next_observations, everything.rewards)
    world_model.train()
    start = time.process_time()
    if schedule == "per-step":
        updates = (train_steps - model.learning_starts) * model.model_gradient_steps
        for _ in range(updates):
            batch = samples(data, rng.integers(train_steps, size=model.model_batch_size))
            optimizer_step(world_model.optimizer, world_model.loss(*batch[:3], batch.rewards, batch.dones, model.model_loss))
        epochs = 0
    else:
        train_indices, holdout_indices = holdout_split(np.arange(train_steps), model.model_holdout_ratio, rng)
        fit = fit_world_model(
            world_model,
            world_model.optimizer,
            samples(data, train_indices),
            samples(data, holdout_indices),
            model.model_batch_size,
            model.model_loss,
            model.model_max_epochs,
            model.model_patience,
        )
        updates, epochs = fit.updates, fit.epochs
    world_model.eval()
    return {"updates": updates, "epochs": epochs, "cpu_seconds": time.process_time() - start}


@th.no_grad()
def errors(
    world_model: WorldModel, data: dict[str, np.ndarray], starts: np.ndarray, horizon: int, obs_var: th.Tensor
) -> dict[str, Any]:
    """One-step and open-loop errors from ``starts`` (see the module's docstring)."""
    first = samples(data, starts)
    one_step = world_model.prediction_errors(first.observations, first.actions, first.next_observations, first.rewards)
    observations = first.observations
    state_errors, reward_errors = [], []
    for k in range(horizon):
        step = samples(data, starts + k)
        prediction = world_model(observations, step.actions, deterministic=True)
        observations = prediction.next_observations
        state_errors.append(float(((observations - step.next_observations).square() / obs_var).mean()))
        reward_errors.append(float((prediction.rewards - step.rewards).square().mean().sqrt()))
    return {
        "one_step": float(one_step[1].mean()),
        "state": state_errors,
        "reward_rmse": reward_errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--buffer", required=True, help="A compare.py checkpoint directory with replay_buffer.pkl.gz")
    parser.add_argument("--train-steps", type=int, default=30000, help="Train on the run's first N transitions")
    parser.add_argument("--eval-steps", type=int, default=5000, help="Evaluate on the N transitions after them")
    parser.add_argument("--horizon", type=int, default=5, help="Open-loop steps")
    parser.add_argument("--starts", type=int, default=1000, help="Start states of the evaluation")
    parser.add_argument("--schedule", choices=["per-step", "fit"], default="per-step")
    parser.add_argument("--variants", nargs="*", default=[], help="name=dict(...) keyword arguments over s2vg.yml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="Write the table (.md) and the numbers (.json) under this path stem")
    args = parser.parse_args()
    th.set_num_threads(1)
    data = load_transitions(Path(args.buffer))
    n = len(data["rewards"])
    if not 0 < args.train_steps < n:
        raise ValueError(f"--train-steps must be between 1 and the buffer's {n - 1} transitions, got {args.train_steps}")
    last = min(n, args.train_steps + args.eval_steps)
    starts = rollout_starts(data, args.train_steps, last, args.horizon, args.starts, np.random.default_rng(args.seed))
    obs_var = th.as_tensor(data["observations"][: args.train_steps].var(axis=0), dtype=th.float32) + 1e-8

    base = paper_s2vg_kwargs(args.env)
    results: dict[str, Any] = {}
    descriptions = {"paper": "(none)", **dict(v.split("=", 1) for v in args.variants)}
    for name, update in [("paper", {}), *map(parse_variant, args.variants)]:
        th.manual_seed(args.seed)
        model = S2VG("MlpPolicy", args.env, seed=args.seed, device="cpu", **merged(base, update))
        trained = train(model, data, args.train_steps, args.schedule, np.random.default_rng(args.seed))
        results[name] = {**trained, **errors(model.policy.world_model, data, starts, args.horizon, obs_var)}
        print(name, json.dumps(results[name]), flush=True)

    k = args.horizon
    lines = [
        f"{args.env}, `{args.buffer}`: trained on its first {args.train_steps} transitions ({args.schedule}), evaluated "
        f"on {len(starts)} start states among the next {last - args.train_steps}; errors of the mean prediction.",
        "",
        f"| variant | updates | CPU s | 1-step (÷ target var) | state error at 1 / {k} steps (÷ obs var) "
        f"| reward RMSE at 1 / {k} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        state, reward = result["state"], result["reward_rmse"]
        lines.append(
            f"| {name} | {result['updates']} | {result['cpu_seconds']:.0f} | {result['one_step']:.3f} | "
            f"{state[0]:.4f} / {state[-1]:.3f} | {reward[0]:.3f} / {reward[-1]:.3f} |"
        )
    lines += ["", "Variants over s2vg.yml's entry:", ""] + [f"- {name}: `{text}`" for name, text in descriptions.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table + "\n")
        record = {"args": vars(args), "variants": descriptions, "results": results}
        out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
