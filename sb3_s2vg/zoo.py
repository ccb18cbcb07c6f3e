"""rl-zoo3 integration: S2VG's hyperparameter file and its loading outside the zoo."""

import importlib
from pathlib import Path
from typing import Any

import yaml
from torch import nn

HYPERPARAMS_PATH = Path(__file__).parent / "hyperparams" / "s2vg.yml"


def resolve_callable(path: str) -> Any:
    """Import ``"package.module.attribute"`` and return the attribute."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def load_hyperparams(env_id: str, path: Path | str = HYPERPARAMS_PATH) -> dict[str, Any]:
    """
    S2VG's constructor arguments for ``env_id`` from the rl-zoo file, with ``policy_kwargs`` evaluated and
    ``termination_fn`` imported; ``{}`` for an environment the file does not list.

    :param env_id: Gymnasium environment id, e.g. ``"HalfCheetah-v5"``
    :param path: The YAML file
    :return: Keyword arguments (``n_timesteps`` and ``policy`` included)
    """
    with open(path) as file:
        hyperparams = dict(yaml.safe_load(file).get(env_id, {}))
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"dict": dict, "nn": nn})
    if isinstance(hyperparams.get("termination_fn"), str):
        hyperparams["termination_fn"] = resolve_callable(hyperparams["termination_fn"])
    return hyperparams
