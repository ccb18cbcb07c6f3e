"""
rl-zoo3 integration: S2VG registered as ``--algo s2vg``, its hyperparameter file (``hyperparams/s2vg.yml``, the
default config for S2VG), an optuna sampler for ``-optimize``, and a command line that runs rl-zoo3's own scripts:

    python -m sb3_s2vg.zoo train --algo s2vg --env Pendulum-v1
    python -m sb3_s2vg.zoo enjoy --algo s2vg --env Pendulum-v1 -f logs/ --no-render -n 1000
    python -m sb3_s2vg.zoo record_video --algo s2vg --env Pendulum-v1 -f logs/ -n 200
    python -m sb3_s2vg.zoo train --algo s2vg --env Pendulum-v1 -optimize --n-trials 20 \\
        --storage sqlite:///s2vg_study.db --study-name s2vg_pendulum      # run this in several processes

(``s2vg-zoo`` is the same command.) rl-zoo3 fixes its ``--algo`` choices when it builds its parser, so S2VG is
registered before any of its scripts runs.
"""

import runpy
import sys
from pathlib import Path
from typing import Any

import yaml
from torch import nn

HYPERPARAMS_PATH = Path(__file__).parent / "hyperparams" / "s2vg.yml"
SCRIPTS = ("train", "enjoy", "record_video", "record_training", "plot_train", "all_plots", "plot_from_file")


def load_hyperparams(env_id: str, path: Path | str = HYPERPARAMS_PATH) -> dict[str, Any]:
    """
    S2VG's constructor arguments for ``env_id`` from the rl-zoo file, with ``policy_kwargs`` evaluated
    (``termination_fn`` stays an import path, which ``S2VG`` resolves); ``{}`` for an environment the file does not list.

    :param env_id: Gymnasium environment id, e.g. ``"HalfCheetah-v5"``
    :param path: The YAML file
    :return: Keyword arguments (``n_timesteps`` and ``policy`` included)
    """
    with open(path) as file:
        hyperparams = dict(yaml.safe_load(file).get(env_id, {}))
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"dict": dict, "nn": nn})
    return hyperparams


def sample_s2vg_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Optuna sampler of S2VG's hyperparameters for rl-zoo3's ``-optimize``: the three learning rates, α, m, the
    model's size and loss, and SAC's usual discount, batch size and Polyak coefficient.

    :param trial: The optuna trial
    :return: Keyword arguments of ``S2VG``
    """
    params = {
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 2e-3, log=True),
        "value_learning_rate": trial.suggest_float("value_learning_rate", 1e-5, 2e-3, log=True),
        "model_learning_rate": trial.suggest_float("model_learning_rate", 1e-5, 2e-3, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 0.01, 1.0, log=True),
        "actor_critic_updates": trial.suggest_int("actor_critic_updates", 1, 5),
        "batch_size_pow": trial.suggest_int("batch_size_pow", 6, 9),
        "tau": trial.suggest_float("tau", 0.001, 0.08, log=True),
        "model_net_arch": trial.suggest_categorical("model_net_arch", ["small", "medium", "big"]),
        "model_loss": trial.suggest_categorical("model_loss", ["mse", "nll"]),
    }
    return convert_s2vg_params(params)


def convert_s2vg_params(sampled: dict[str, Any]) -> dict[str, Any]:
    """Turn the values ``sample_s2vg_params`` suggests (or a stored trial's) into ``S2VG`` keyword arguments."""
    hyperparams = {
        key: value for key, value in sampled.items() if key not in ("one_minus_gamma", "batch_size_pow", "model_net_arch")
    }
    hyperparams["gamma"] = 1 - sampled["one_minus_gamma"]
    hyperparams["batch_size"] = hyperparams["model_batch_size"] = 2 ** sampled["batch_size_pow"]
    model_arch = {"small": [32, 16], "medium": [256, 128], "big": [256, 256]}[sampled["model_net_arch"]]
    hyperparams["policy_kwargs"] = dict(net_arch=dict(dynamics=model_arch, reward=model_arch))
    return hyperparams


def register() -> None:
    """Make rl-zoo3 know S2VG: ``--algo s2vg`` in every script, and its optuna sampler."""
    from rl_zoo3 import hyperparams_opt, utils

    from sb3_s2vg import S2VG

    utils.ALGOS["s2vg"] = S2VG
    hyperparams_opt.HYPERPARAMS_SAMPLER["s2vg"] = sample_s2vg_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["s2vg"] = convert_s2vg_params


def _option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def prepare_shared_study(storage: str, study_name: str, attempts: int = 10) -> None:
    """
    Create the optuna study in ``storage`` before rl-zoo3 does, retrying while another worker creates the same
    database schema at the same moment (two processes starting together on one SQLite file race there).

    :param storage: An optuna storage URL (``sqlite:///study.db``, ``postgresql://user:password@host/db``)
    :param study_name: The study that the workers share
    :param attempts: How many times to try
    """
    import time

    import optuna

    for attempt in range(attempts):
        try:
            optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
            return
        except Exception:  # sqlalchemy's IntegrityError / OperationalError while another worker creates the tables
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + 0.5 * attempt)


def _uses_s2vg(argv: list[str]) -> bool:
    return _option(argv, "--algo") == "s2vg"


def main(argv: list[str] | None = None) -> None:
    """``python -m sb3_s2vg.zoo SCRIPT [rl-zoo3 arguments]``, SCRIPT one of ``SCRIPTS``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m sb3_s2vg.zoo {{{','.join(SCRIPTS)}}} [rl-zoo3 arguments]\n{__doc__}")
    script, arguments = argv[0], argv[1:]
    if script == "train" and _uses_s2vg(arguments) and not {"-conf", "--conf-file"} & set(arguments):
        arguments += ["--conf-file", str(HYPERPARAMS_PATH)]
    storage, study_name = _option(arguments, "--storage"), _option(arguments, "--study-name")
    if script == "train" and storage and study_name and not storage.endswith(".log"):
        prepare_shared_study(storage, study_name)
    register()
    sys.argv = [f"rl_zoo3.{script}", *arguments]
    if script.startswith("record"):
        runpy.run_module(f"rl_zoo3.{script}", run_name="__main__")
        return
    if script == "train":
        from rl_zoo3.train import train

        train()
    elif script == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    else:
        from rl_zoo3 import plots  # needs rl-zoo3's plotting extras (seaborn)

        getattr(plots, script)()


if __name__ == "__main__":
    main()
