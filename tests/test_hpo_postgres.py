"""
Distributed hyperparameter search (docs/hpo.md): two ``python -m sb3_s2vg.zoo train -optimize`` workers at once
on a real PostgreSQL server started for the test, and the storage checks before a worker starts (driver, credentials,
the race of workers creating one study, per-worker sampler seeds).

The server's binaries come from ``bash tests/install_postgresql.sh``; without them the server tests are skipped,
and fail when the environment variable ``CI`` is set (CI must run them).
"""

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from sb3_s2vg import zoo

pytest.importorskip("rl_zoo3")

USER, PASSWORD, DATABASE = "optuna", "s2vg-test-password", "optuna"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this test (bash tests/install_postgresql.sh, pip install -e '.[tests]')")
    pytest.skip(reason)


def _postgresql_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL server here (Debian: /usr/lib/postgresql/<version>/bin), or None."""

    def version(initdb: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(initdb).parent.parent.name))

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    host: str
    port: int
    socket_dir: str

    def url(self, password: str = PASSWORD, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{USER}:{password}@{self.host}:{self.port}/{DATABASE}"


@pytest.fixture(scope="module")
def postgresql() -> Iterator[Server]:
    """
    A PostgreSQL server of its own: a data directory in a new temporary directory (removed afterwards), listening on
    a free port of 127.0.0.1 and on a socket in that directory, with a user and a database ``optuna`` owned by it
    (password authentication over TCP). initdb and postgres refuse to run as root: as root they run as ``postgres``.
    """
    try:
        import psycopg
    except ImportError:
        _unavailable('psycopg (PostgreSQL driver) is not installed: pip install "psycopg[binary]"')
    bin_dir = _postgresql_bin()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH")
    as_user: list[str] = []
    directory = tempfile.mkdtemp(prefix="sb3_s2vg_pg_")
    try:
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                _unavailable("running as root and there is no unprivileged 'postgres' user to run PostgreSQL as")
            os.chown(directory, account.pw_uid, account.pw_gid)
            as_user = (
                ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else ["su", "postgres", "-s", "/bin/sh", "-c"]
            )
        data, log = f"{directory}/data", f"{directory}/server.log"
        port = _free_port()

        def run(*command: str) -> None:
            if as_user[:1] == ["su"]:
                command = (shlex.join(command),)
            subprocess.run([*as_user, *command], check=True, capture_output=True, text=True, timeout=120)

        run(f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=md5", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off"
        run(f"{bin_dir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")
        try:
            with psycopg.connect(host=directory, port=port, user="postgres", dbname="postgres", autocommit=True) as admin:
                admin.execute(f"CREATE USER {USER} PASSWORD '{PASSWORD}'")
                admin.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
            yield Server("127.0.0.1", port, directory)
        finally:
            run(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")  # a throwaway server
    except subprocess.CalledProcessError as error:
        pytest.fail(f"PostgreSQL: {shlex.join(error.cmd)} failed: {error.stderr}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _worker_command(storage: str, log_folder: Path, n_trials: int) -> list[str]:
    # Each trial is seconds: 150 env steps (50 gradient steps after S2VG's 100 warm-up steps), one evaluation of
    # one Pendulum episode
    return [
        sys.executable, "-m", "sb3_s2vg.zoo", "train", "--algo", "s2vg", "--env", "Pendulum-v1", "-optimize",
        "--n-trials", str(n_trials), "-n", "150", "--n-evaluations", "1", "--eval-episodes", "1", "--sampler", "random",
        "--pruner", "none", "--no-optim-plots", "--storage", storage, "--study-name", "s2vg_shared", "--seed", "7",
        "-f", str(log_folder),
    ]  # fmt: skip


def _worker_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != zoo.SAME_SAMPLER_SEED_ENV}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_workers_with_one_seed_fill_one_postgresql_study_with_different_trials(postgresql, tmp_path):
    command = _worker_command(postgresql.url(), tmp_path / "logs", n_trials=2)
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=_worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
    study = optuna.load_study(study_name="s2vg_shared", storage=postgresql.url())
    complete = {trial.number: trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE}
    assert sorted(complete) == [0, 1, 2, 3], [trial.state for trial in study.trials]
    # whose trials: optuna's log line of each finished trial, in that worker's output
    numbers = [sorted(int(number) for number in re.findall(r"Trial (\d+) finished", output)) for output in outputs]
    assert sorted(numbers[0] + numbers[1]) == [0, 1, 2, 3] and len(numbers[0]) == len(numbers[1]) == 2, numbers
    seeds = [re.findall(r"Sampler seed: (\d+) \(--seed 7 \+", output) for output in outputs]
    assert len(seeds[0]) == len(seeds[1]) == 1 and seeds[0] != seeds[1], seeds
    first_trials = [complete[worker_numbers[0]].params for worker_numbers in numbers]
    assert first_trials[0] != first_trials[1]
    assert len({tuple(sorted(trial.params.items())) for trial in complete.values()}) == 4


def test_bad_password_fails_at_once_with_the_reason(postgresql, tmp_path):
    storage = postgresql.url(password="not-the-password")
    start = time.perf_counter()
    with pytest.raises(zoo.StorageError, match="password authentication failed") as error:
        zoo.prepare_shared_study(storage, "s2vg_shared")
    assert time.perf_counter() - start < 5  # no retries (the first retry alone waits 0.5 s, all of them 22 s)
    assert "not-the-password" not in str(error.value)
    start = time.perf_counter()
    worker = subprocess.run(
        _worker_command(storage, tmp_path / "logs", n_trials=1),
        cwd=tmp_path,
        env=_worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"bad password: the worker exited after {time.perf_counter() - start:.1f} s (interpreter start included)")
    assert worker.returncode == 1
    assert "password authentication failed" in worker.stderr and "Traceback" not in worker.stderr, worker.stderr
    assert "not-the-password" not in worker.stderr


def test_an_unreachable_server_fails_at_once():
    storage = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{_free_port()}/{DATABASE}"
    pytest.importorskip("psycopg")
    start = time.perf_counter()
    with pytest.raises(zoo.StorageError, match=r"Connection refused|connection failed"):
        zoo.prepare_shared_study(storage, "s2vg_shared")
    assert time.perf_counter() - start < 5


def test_a_missing_sqlite_directory_fails_at_once(tmp_path):
    with pytest.raises(zoo.StorageError, match="unable to open database file"):
        zoo.prepare_shared_study(f"sqlite:///{tmp_path / 'missing' / 'study.db'}", "s2vg_shared")


def _fake_create_study(errors: list[Exception]) -> tuple[list[int], types.FunctionType]:
    calls: list[int] = []

    def create_study(**kwargs):
        calls.append(1)
        if errors:
            raise errors.pop(0)

    return calls, create_study


def _dbapi_error(kind: type[sqlalchemy.exc.DBAPIError], message: str) -> sqlalchemy.exc.DBAPIError:
    return kind("statement", {}, Exception(message))


@pytest.mark.parametrize(
    "error",
    [
        _dbapi_error(sqlalchemy.exc.IntegrityError, 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'),
        _dbapi_error(sqlalchemy.exc.ProgrammingError, 'relation "studies" already exists'),
        _dbapi_error(sqlalchemy.exc.OperationalError, "database is locked"),
        optuna.exceptions.StorageInternalError("An exception is raised during the commit."),
    ],
    ids=["postgresql-integrity", "already-exists", "sqlite-locked", "wrapped-by-optuna"],
)
def test_only_the_creation_race_is_retried(monkeypatch, error):
    if isinstance(error, optuna.exceptions.StorageInternalError):
        error.__cause__ = _dbapi_error(sqlalchemy.exc.OperationalError, "database is locked")
    calls, create_study = _fake_create_study([error, error])
    monkeypatch.setattr(optuna, "create_study", create_study)
    monkeypatch.setattr(zoo.time, "sleep", lambda seconds: None)
    zoo.prepare_shared_study("sqlite:///study.db", "s2vg_shared")
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (_dbapi_error(sqlalchemy.exc.OperationalError, 'password authentication failed for user "optuna"'), "password"),
        (_dbapi_error(sqlalchemy.exc.OperationalError, "could not translate host name"), "host name"),
        (ImportError("Failed to import DB access module"), "psycopg2-binary"),
        (RuntimeError("The runtime optuna version is no longer compatible with the table schema"), "table schema"),
    ],
    ids=["bad-password", "unknown-host", "missing-driver", "other"],
)
def test_other_errors_fail_at_once(monkeypatch, error, match):
    calls, create_study = _fake_create_study([error])
    monkeypatch.setattr(optuna, "create_study", create_study)
    with pytest.raises(zoo.StorageError, match=match):
        zoo.prepare_shared_study("postgresql+psycopg2://optuna:secret@db.example:5432/optuna", "s2vg_shared")
    assert len(calls) == 1


def test_a_missing_driver_names_the_package_and_the_url_form(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # `import psycopg2` fails
    with pytest.raises(zoo.StorageError, match=re.escape('pip install "psycopg2-binary"')) as error:
        zoo.resolve_storage_url("postgresql+psycopg2://optuna:secret@db.example:5432/optuna")
    assert '".[hpo]"' in str(error.value) and zoo.POSTGRESQL_URL in str(error.value)
    assert "secret" not in str(error.value)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(zoo.StorageError, match=re.escape('pip install "psycopg[binary]"')):
        zoo.resolve_storage_url("postgresql+psycopg://optuna:secret@db.example:5432/optuna")
    with pytest.raises(zoo.StorageError, match="cannot be imported"):  # no driver at all for a plain URL
        zoo.resolve_storage_url("postgresql://optuna:secret@db.example:5432/optuna")


def test_a_plain_postgresql_url_is_rewritten_to_the_installed_driver(monkeypatch, capsys):
    """SQLAlchemy's default driver for ``postgresql://`` (psycopg from 2.1 on, psycopg2 before) is missing, the other is not."""
    default = make_url("postgresql://").get_dialect().driver
    other = {"psycopg": "psycopg2", "psycopg2": "psycopg"}[default]
    monkeypatch.setitem(sys.modules, default, None)
    if zoo._driver_import_error(f"postgresql+{other}") is not None:
        monkeypatch.setitem(sys.modules, other, types.ModuleType(other))  # SQLAlchemy's import_dbapi only imports it
    storage = "postgresql://optuna:p%40ss@db.example:5432/optuna?connect_timeout=10"
    assert zoo.resolve_storage_url(storage) == f"postgresql+{other}://optuna:p%40ss@db.example:5432/optuna?connect_timeout=10"
    note = capsys.readouterr().err
    assert f"using the installed {other!r}" in note and "p%40ss" not in note


def test_urls_with_their_driver_installed_are_kept():
    for storage in ("sqlite:///study.db", "postgresql+psycopg://optuna:secret@db.example:5432/optuna"):
        if storage.startswith("postgresql"):
            pytest.importorskip("psycopg")
        assert zoo.resolve_storage_url(storage) == storage
    with pytest.raises(zoo.StorageError, match="does not know the database 'postgres'"):
        zoo.resolve_storage_url("postgres://optuna:secret@db.example/optuna")  # SQLAlchemy wants postgresql://


def test_workers_with_one_seed_get_different_samplers_unless_told_otherwise():
    from rl_zoo3.exp_manager import ExperimentManager

    manager = types.SimpleNamespace(seed=7, n_startup_trials=10)
    original = ExperimentManager._create_sampler

    def first_value(sampler: optuna.samplers.BaseSampler) -> float:
        return optuna.create_study(sampler=sampler).ask().suggest_float("x", 0.0, 1.0)

    values = []
    for worker_number in (12345, 67890):
        with zoo.per_worker_sampler_seed(worker_number):
            for method in ("random", "tpe"):
                sampler = ExperimentManager._create_sampler(manager, method)
                values.append((method, first_value(sampler)))
        assert manager.seed == 7 and ExperimentManager._create_sampler is original
    assert values[0] != values[2] and values[1] != values[3]
    assert first_value(original(manager, "random")) == first_value(original(manager, "random"))  # rl-zoo3: --seed
    assert zoo.sampler_seed(2**32 - 1, 2) == 1


@pytest.mark.parametrize(
    ("extra", "env", "per_worker"),
    [([], {}, True), (["--same-sampler-seed"], {}, False), ([], {zoo.SAME_SAMPLER_SEED_ENV: "1"}, False)],
    ids=["default", "option", "env"],
)
def test_main_seeds_samplers_per_worker_unless_told_otherwise(monkeypatch, extra, env, per_worker):
    """What ``main`` hands rl-zoo3's ``train``: the resolved storage URL, and the sampler patch only where asked for."""
    import rl_zoo3.train
    from rl_zoo3.exp_manager import ExperimentManager

    original, seen = ExperimentManager._create_sampler, {}
    monkeypatch.delenv(zoo.SAME_SAMPLER_SEED_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(zoo, "resolve_storage_url", lambda storage: storage.replace("postgresql://", "postgresql+psycopg://"))
    monkeypatch.setattr(zoo, "prepare_shared_study", lambda storage, study_name: seen.update(prepared=storage))

    def train():
        seen.update(argv=list(sys.argv), patched=ExperimentManager._create_sampler is not original)

    monkeypatch.setattr(rl_zoo3.train, "train", train)
    storage = "postgresql://optuna:secret@db.example:5432/optuna"
    zoo.main(["train", "--algo", "s2vg", "--env", "Pendulum-v1", "-optimize", "--storage", storage, "--study-name", "s", *extra])
    assert seen["patched"] is per_worker and ExperimentManager._create_sampler is original
    assert seen["prepared"] == storage.replace("postgresql://", "postgresql+psycopg://")
    assert seen["argv"][seen["argv"].index("--storage") + 1] == seen["prepared"]
    assert "--same-sampler-seed" not in seen["argv"]
    zoo.main(["train", "--algo", "s2vg", "--env", "Pendulum-v1", "-n", "100"])  # no search, no shared storage: rl-zoo3's seed
    assert seen["patched"] is False
