"""cTrip payment scanner: watches EVM chains for the payments a gateway is waiting for."""

__version__ = "0.1.0"
