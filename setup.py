"""beamline: Apache Beam pipelines that invoke ML models, batch and streaming."""

from setuptools import find_packages, setup

setup(
    name="beamline",
    version="0.1.0",
    description="Apache Beam pipelines that invoke ML models (credit offers, radar QC).",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["beamline*", "pipelines*", "transforms*", "models*", "services*", "runners*",
                 "bench*"]),
    # One command, a subcommand per job (beamline/cli.py); `python -m <module>` aliases stay.
    entry_points={"console_scripts": ["beamline = beamline.cli:main"]},
    # The shipped configuration is package data (models.config reads it with importlib
    # .resources), so installed commands find their defaults; a user's folder overrides it.
    package_data={"models": ["shipped_config/*/*.json"], "transforms.radar": ["templates/*.j2"]},
    install_requires=[
        "apache-beam==2.77.0",
        "tensorflow-cpu==2.21.*",
        "tensorflow-hub",
        "numpy",
        "pyarrow",
        "requests",
        # apache_beam.io.requestresponse imports google.api_core (not a core Beam dependency).
        "google-api-core",
        "xradar",
        "matplotlib",
        "scipy",
        # The serving function (services.model_server): an ASGI app under uvicorn.
        "starlette",
        "uvicorn",
        # The radar UNet's CPU engine (Beam's OnnxModelHandlerNumpy) and its export at publish.
        "onnxruntime",
        "onnx",
        "tf2onnx",
        # The evaluation query rendered per data set (transforms.evaluation.query), and the
        # radar reference report.
        "jinja2",
        # Reference QC algorithms for real-data skill (pipelines.radar_reference): fuzzy echo
        # classification and the Gabella clutter filter.
        "wradlib>=2.9,<3",
        # Registry signatures (models.signing: Ed25519); Beam depends on it already.
        "cryptography",
    ],
    extras_require={
        # Beam's DaskRunner needs these (apache-beam[dask]); runners.dask_runner uses them.
        "dask": ["dask>=2024.4.2", "distributed>=2024.4.2"],
        # The offers API's idempotency store shared by several processes (services.idempotency).
        "redis": ["redis"],
        "test": ["pytest", "pytest-timeout", "ruff", "selenium", "dask>=2024.4.2", "redis",
                 "distributed>=2024.4.2", "duckdb>=1.1", "sqlglot>=25",
                 # Py-ART: small real radar files of other formats (pyart.testing) and the
                 # reader the field uses, for the radar format tests.
                 "arm-pyart"],
        "gcp": ["apache-beam[gcp]==2.77.0"],
    },
)
