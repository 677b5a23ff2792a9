"""atende: customer-data and personalization pipeline on Spark and Delta Lake.

The repository's root is this package: `pipelines/`, `jobs/`, `features/`, `models/`, `conf/` and
`lakehouse/` are installed as `atende.pipelines`, `atende.jobs`, ... (see pyproject.toml).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atende")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
