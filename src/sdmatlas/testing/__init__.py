"""Scaffolding for the tests and benchmarks: a throwaway PostgreSQL cluster and
synthetic cubes. Part of the source tree (editable installs import it), left out of
the wheel and the Docker image (pyproject.toml excludes this package)."""
