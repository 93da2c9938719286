"""Reading the scanner's metrics in tests: a series that does not exist is a failure, not 0.

``registry.get_sample_value`` answers ``None`` for a misspelt name or label as for a series
that has not been written yet; reading that as 0 lets a wrong label pass any ``== 0`` check.
"""

from __future__ import annotations

from scanner.observe.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of the series ``name{labels}``; fails, naming the series there are, if absent."""
    value = metrics.registry.get_sample_value(name, labels)
    if value is None:
        raise AssertionError(f"no series {name}{labels}; there are: {series_of(metrics, name)}")
    return float(value)


def series_of(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name`` (empty when there is no such metric)."""
    return [
        dict(found.labels)
        for family in metrics.registry.collect()
        for found in family.samples
        if found.name == name
    ]
