"""streamwatch: watch machine-learning models in production from their event streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamwatch")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
