from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as file:
    long_description = file.read()

# rl-zoo3 integration (train / enjoy / -optimize with a shared optuna storage); rl-zoo3 needs requests and pandas,
# its plot scripts (python -m sb3_s2vg.zoo plot_train ...) seaborn
ZOO = ["rl_zoo3>=2.7", "sb3-contrib>=2.7", "optuna", "pandas", "requests", "seaborn"]
# hyperparameter search across machines on PostgreSQL (docs/hpo.md): psycopg 3, which SQLAlchemy >= 2.0 uses for
# postgresql+psycopg://user:password@host:5432/db (optuna supports SQLAlchemy 2 from 3.1 on)
HPO = [*ZOO, "optuna>=3.1", "sqlalchemy>=2.0", "psycopg[binary]>=3.1"]
PLOTS = ["matplotlib"]

setup(
    name="sb3_s2vg",
    version="0.1.0",
    description="S2VG (Soft Stochastic Value Gradient) as a Stable-Baselines3 algorithm",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sb3_s2vg", "sb3_s2vg.*"]),
    package_data={"sb3_s2vg": ["hyperparams/*.yml", "py.typed"]},
    license="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    keywords="reinforcement-learning model-based-rl stable-baselines3 gymnasium pytorch",
    project_urls={"Original S2VG code (paper authors)": "https://github.com/S2VG-anonymous1/S2VG"},
    python_requires=">=3.10",
    install_requires=[
        # torch >= 2.4: fused Adam on CPU (used by default); the CPU build 2.13.0 is what CI installs first (.ci/run)
        "torch>=2.4",
        "stable-baselines3>=2.7,<3",
        "gymnasium[mujoco]>=1.1",
        "numpy",
        "tqdm",
        "rich",
        "pyyaml",
    ],
    extras_require={
        "zoo": ZOO,
        "hpo": HPO,
        "plots": PLOTS,
        # tests/test_hpo_postgres.py runs workers on a PostgreSQL server (tests/install_postgresql.sh) through psycopg
        # tests/test_static_checks.py: mypy and ruff clean, as SB3 and sb3-contrib check in their CI
        "tests": ["pytest", "tensorboard", "mypy>=1.10", "ruff>=0.5", *HPO, *PLOTS],
    },
    entry_points={"console_scripts": ["s2vg-zoo=sb3_s2vg.zoo:main"]},
)
