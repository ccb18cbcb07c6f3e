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

With a shared ``--storage`` (docs/hpo.md): the database driver is checked first (a plain ``postgresql://`` URL is
rewritten to the PostgreSQL driver that is installed), the study is created once, and each worker seeds its optuna
sampler with ``--seed`` plus a random worker number, so that workers given the same ``--seed`` do not draw the same
trials (``--same-sampler-seed`` or ``S2VG_SAME_SAMPLER_SEED=1``: every worker's sampler gets ``--seed``, as in rl-zoo3).
"""

import os
import runpy
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sb3_s2vg.presets import HYPERPARAMS_PATH, load_hyperparams  # noqa: F401 (load_hyperparams: used by benchmarks/)

SCRIPTS = ("train", "enjoy", "record_video", "record_training", "plot_train", "all_plots", "plot_from_file")


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
    hyperparams_opt.HYPERPARAMS_CONVERTER["s2vg"] = convert_s2vg_params  # type: ignore[assignment]


def _option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


class StorageError(RuntimeError):
    """An optuna storage that cannot be used: its database driver is missing, or the server refuses or cannot be reached."""


# SQLAlchemy's PostgreSQL drivers that optuna can use -> the pip package that provides each
POSTGRESQL_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}
POSTGRESQL_URL = "postgresql+psycopg://user:password@host:5432/db"
SAME_SAMPLER_SEED_ENV = "S2VG_SAME_SAMPLER_SEED"
# Errors of two workers creating the same tables, schema version or study at the same moment
RACE_MARKERS = ("already exists", "database is locked", "database table is locked", "duplicate key", "unique constraint")


def _hide_password(storage: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: show it without its credentials
        scheme, _, rest = storage.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[-1]}" if "@" in rest else storage


def _driver_import_error(drivername: str) -> ImportError | None:
    """The error importing the database module of SQLAlchemy's ``drivername`` (``"postgresql+psycopg"``), or ``None``."""
    from sqlalchemy.engine import make_url

    try:
        make_url(f"{drivername}://").get_dialect().import_dbapi()
    except ImportError as error:
        return error
    return None


def _missing_driver_message(storage: str, driver: str, error: ImportError) -> str:
    message = f"--storage {_hide_password(storage)}: SQLAlchemy's database driver {driver!r} cannot be imported ({error})."
    if driver in POSTGRESQL_DRIVERS:
        message += (
            f' Install it with pip install "{POSTGRESQL_DRIVERS[driver]}", or install sb3_s2vg\'s "hpo" extra'
            f' (pip install -e ".[hpo]" in its checkout, which brings psycopg 3) and use the URL form {POSTGRESQL_URL}.'
        )
    return message


def resolve_storage_url(storage: str) -> str:
    """
    Check that the database driver of an optuna storage URL is installed, before any worker starts a trial.
    A PostgreSQL URL without a driver (``postgresql://...``) means SQLAlchemy's default driver (psycopg 3 from
    SQLAlchemy 2.1 on, psycopg2 before); when that one is missing and the other is installed, the URL is rewritten
    to the installed one (``postgresql+psycopg://...`` or ``postgresql+psycopg2://...``) and a note says so.

    :param storage: The ``--storage`` URL (``sqlite:///study.db``, ``postgresql+psycopg://user:password@host:5432/db``)
    :return: The URL to use: ``storage`` itself, or the rewritten PostgreSQL URL
    :raises StorageError: The URL cannot be read, or its driver is missing (the message names the package to install)
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        url = make_url(storage)
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError as error:
        raise StorageError(
            f"--storage {_hide_password(storage)}: SQLAlchemy {sqlalchemy.__version__} does not know the database"
            f" {storage.split('://', 1)[0]!r} ({error}); the PostgreSQL URL form is {POSTGRESQL_URL} (SQLAlchemy >= 2.0)"
        ) from None
    except sqlalchemy.exc.ArgumentError as error:
        raise StorageError(f"--storage {storage!r} is not a database URL ({error}); e.g. sqlite:///study.db") from None
    import_error = _driver_import_error(url.drivername)
    if import_error is None:
        return storage
    if url.drivername == "postgresql":  # no driver named: try the other one
        for driver in POSTGRESQL_DRIVERS:
            if driver != dialect.driver and _driver_import_error(f"postgresql+{driver}") is None:
                resolved = f"postgresql+{driver}{storage[len('postgresql') :]}"
                print(
                    f"sb3_s2vg.zoo: note: SQLAlchemy's default PostgreSQL driver {dialect.driver!r} is not installed;"
                    f" using the installed {driver!r}: --storage {_hide_password(resolved)}",
                    file=sys.stderr,
                )
                return resolved
    raise StorageError(_missing_driver_message(storage, dialect.driver, import_error))


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_creation_race(error: BaseException) -> bool:
    """Whether ``error`` comes from another worker creating the same schema or study at the same moment."""
    import optuna
    import sqlalchemy

    for cause in _error_chain(error):
        if isinstance(cause, (sqlalchemy.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError)):
            return True
        if isinstance(cause, sqlalchemy.exc.SQLAlchemyError) and any(marker in str(cause).lower() for marker in RACE_MARKERS):
            return True
    return False


def _reason(error: BaseException) -> str:
    """The database's own words for ``error`` (the DBAPI error under SQLAlchemy's and optuna's wrappers)."""
    import sqlalchemy

    for cause in _error_chain(error):
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.orig is not None:
            return f"{type(cause).__name__}: {str(cause.orig).strip()}"
    return f"{type(error).__name__}: {str(error).strip()}"


def prepare_shared_study(storage: str, study_name: str, attempts: int = 10) -> None:
    """
    Create the optuna study in ``storage`` before rl-zoo3 does. Only the race of two workers creating the same
    database schema or study at the same moment (an integrity error, "already exists", SQLite's "database is
    locked") is retried; anything else fails at once: a missing driver, bad credentials, an unreachable server.

    :param storage: An optuna storage URL (``sqlite:///study.db``, ``postgresql+psycopg://user:password@host:5432/db``)
    :param study_name: The study that the workers share
    :param attempts: How many times to try while the race lasts
    :raises StorageError: With the database's message and what to check
    """
    import optuna

    for attempt in range(attempts):
        try:
            optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
            return
        except ImportError as error:  # optuna wraps SQLAlchemy's ModuleNotFoundError in an ImportError
            cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
            driver = storage.split("://", 1)[0].rpartition("+")[2]
            raise StorageError(_missing_driver_message(storage, driver, cause)) from error
        except Exception as error:
            if not _is_creation_race(error):
                check = (
                    "check that the directory of the database file exists and can be written"
                    if storage.startswith("sqlite")
                    else "check the host, port, database name, user name and password in the URL, and that the server"
                    " accepts connections from this machine"
                )
                raise StorageError(
                    f"--storage {_hide_password(storage)}: cannot open the optuna study {study_name!r}: {_reason(error)}"
                    f" ({check})"
                ) from error
            if attempt == attempts - 1:
                raise StorageError(
                    f"--storage {_hide_password(storage)}: the study {study_name!r} could not be created in {attempts}"
                    f" attempts while other workers created it: {_reason(error)}"
                ) from error
            time.sleep(0.5 + 0.5 * attempt)


def sampler_seed(seed: int, worker_number: int) -> int:
    """
    The seed of one worker's optuna sampler: ``--seed`` plus the worker's number, modulo 2³² (numpy's range).

    :param seed: rl-zoo3's ``--seed`` (drawn at random by rl-zoo3 when it is not given)
    :param worker_number: A number unique to the worker (random unless every worker is to use ``--seed``)
    :return: The sampler's seed
    """
    return (seed + worker_number) % 2**32


@contextmanager
def per_worker_sampler_seed(worker_number: int) -> Iterator[None]:
    """
    While active, rl-zoo3's ``-optimize`` seeds its optuna sampler with ``sampler_seed(--seed, worker_number)``
    instead of ``--seed``; everything else (environments, trials) keeps ``--seed``. rl-zoo3 builds the sampler in
    ``ExperimentManager._create_sampler`` from ``self.seed``: the wrapper lends it the sampler seed for that call.

    :param worker_number: This worker's number
    """
    from rl_zoo3.exp_manager import ExperimentManager

    create_sampler = ExperimentManager._create_sampler

    def _create_sampler(manager: Any, sampler_method: str) -> Any:
        seed = manager.seed
        manager.seed = sampler_seed(seed, worker_number)
        print(
            f"Sampler seed: {manager.seed} (--seed {seed} + worker number {worker_number}; --same-sampler-seed"
            f" or {SAME_SAMPLER_SEED_ENV}=1 seeds every worker's sampler with --seed)"
        )
        try:
            return create_sampler(manager, sampler_method)
        finally:
            manager.seed = seed

    ExperimentManager._create_sampler = _create_sampler  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        ExperimentManager._create_sampler = create_sampler  # type: ignore[method-assign]


def _replace_option(argv: list[str], name: str, value: str) -> list[str]:
    replaced = list(argv)
    for index, arg in enumerate(replaced):
        if arg == name and index + 1 < len(replaced):
            replaced[index + 1] = value
        elif arg.startswith(f"{name}="):
            replaced[index] = f"{name}={value}"
    return replaced


def _uses_s2vg(argv: list[str]) -> bool:
    return _option(argv, "--algo") == "s2vg"


def main(argv: list[str] | None = None) -> None:
    """
    ``python -m sb3_s2vg.zoo SCRIPT [rl-zoo3 arguments]``, SCRIPT one of ``SCRIPTS``; one argument of its own,
    ``--same-sampler-seed`` (``train -optimize`` with a shared ``--storage``: every worker's sampler gets ``--seed``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m sb3_s2vg.zoo {{{','.join(SCRIPTS)}}} [rl-zoo3 arguments]\n{__doc__}")
    script, arguments = argv[0], argv[1:]
    same_sampler_seed = "--same-sampler-seed" in arguments or os.environ.get(SAME_SAMPLER_SEED_ENV, "") not in ("", "0")
    arguments = [argument for argument in arguments if argument != "--same-sampler-seed"]
    if script == "train" and _uses_s2vg(arguments) and not {"-conf", "--conf-file"} & set(arguments):
        arguments += ["--conf-file", str(HYPERPARAMS_PATH)]
    storage, study_name = _option(arguments, "--storage"), _option(arguments, "--study-name")
    if storage and not storage.endswith(".log"):
        try:
            resolved = resolve_storage_url(storage)
            if resolved != storage:
                arguments = _replace_option(arguments, "--storage", resolved)
            if script == "train" and study_name:
                prepare_shared_study(resolved, study_name)
        except StorageError as error:
            raise SystemExit(f"sb3_s2vg.zoo: error: {error}") from None
    register()
    sys.argv = [f"rl_zoo3.{script}", *arguments]
    if script.startswith("record"):
        runpy.run_module(f"rl_zoo3.{script}", run_name="__main__")
        return
    if script == "train":
        from rl_zoo3.train import train

        optimize = bool({"-optimize", "--optimize-hyperparameters"} & set(arguments))
        if optimize and storage and not same_sampler_seed:
            with per_worker_sampler_seed(secrets.randbelow(2**32)):
                train()
        else:
            train()
    elif script == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    else:
        from rl_zoo3 import plots  # needs rl-zoo3's plotting extras (seaborn)

        getattr(plots, script)()


if __name__ == "__main__":
    main()
