"""gradguard: protect federated-learning clients from malicious servers."""

from importlib.metadata import PackageNotFoundError, version

from gradguard.errors import GradguardError

try:  # one source: the version in pyproject.toml, as installed
    __version__ = version("gradguard")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["GradguardError", "__version__"]
