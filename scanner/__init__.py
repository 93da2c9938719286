"""cTrip payment scanner: watches EVM chains for the payments a gateway is waiting for."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctrip-scanner")  # pyproject.toml's [project] version: the one place
except PackageNotFoundError:  # a source tree run without installing it
    __version__ = "0+unknown"
