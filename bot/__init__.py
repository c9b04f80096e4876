"""readybot: ChatOps for a small Kubernetes platform, from a Matrix room."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("readybot")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
