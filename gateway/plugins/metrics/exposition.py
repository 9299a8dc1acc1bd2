"""The Prometheus text exposition format, version 0.0.4 (prometheus.io, "Exposition formats",
"Text format details").

Theory of operation. The format is line oriented, UTF-8, each line ending in a line feed (the
last one too). A metric family is a ``# HELP name text`` line (backslash and line feed escaped
as ``\\\\`` and ``\\n``), a ``# TYPE name counter|gauge|histogram`` line, then its samples,
``name{label="value",...} value``, where a label value escapes backslash, double quote and line
feed. Metric names match ``[a-zA-Z_:][a-zA-Z0-9_:]*`` and label names ``[a-zA-Z_][a-zA-Z0-9_]*``
(names starting with ``__`` are Prometheus' own). In this version a counter's family has the
sample's own name, ``_total`` suffix included. A histogram named ``x`` is the samples
``x_bucket{le="bound"}`` (cumulative: each bucket counts every observation at most its bound),
``x_bucket{le="+Inf"}`` (all of them, equal to ``x_count``), ``x_sum`` and ``x_count``; ``le``
values are floats as Go's ParseFloat reads them. Each family appears once, its samples
together.

Sans-IO: :class:`Exposition` collects families and renders bytes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

from gateway.core.interfaces import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_KINDS = ("counter", "gauge", "histogram")

Labels = Sequence[tuple[str, str]]


class ExpositionError(ValueError):
    """A metric or label our code made breaks the format's rules (our bug, never a peer's)."""


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers as they are, floats in Python's shortest round-trip form (which
    Go's ParseFloat reads), infinities and NaN as the format spells them."""
    if isinstance(value, bool):
        raise ExpositionError("a boolean is not a sample value")
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """The families of one scrape, in the order they are added."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._families: set[str] = set()
        self._current: tuple[str, str] | None = None  # (name, kind) of the family being written

    def family(self, name: str, kind: str, help_text: str) -> None:
        """Begin family ``name`` of ``kind`` ("counter", "gauge", "histogram"); its samples
        follow. A counter's name ends in ``_total``."""
        if not _METRIC_NAME.match(name) or name.startswith("__"):
            raise ExpositionError(f"invalid metric name {name!r}")
        if kind not in _KINDS:
            raise ExpositionError(f"unknown metric type {kind!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ExpositionError(f"counter {name!r} must end in _total")
        if name in self._families:
            raise ExpositionError(f"metric family {name!r} given twice")
        self._families.add(name)
        self._current = (name, kind)
        self._lines.append(f"# HELP {name} {escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, value: float, labels: Labels = ()) -> None:
        """A sample of the current counter or gauge family."""
        if self._current is None or self._current[1] == "histogram":
            raise ExpositionError("sample() belongs to a counter or gauge family")
        if self._current[1] == "counter" and not value >= 0:
            raise ExpositionError(f"counter {self._current[0]} given {value!r}")
        self._line(self._current[0], labels, value)

    def histogram(self, histogram: Histogram, labels: Labels = ()) -> None:
        """The samples of one histogram of the current histogram family."""
        if self._current is None or self._current[1] != "histogram":
            raise ExpositionError("histogram() belongs to a histogram family")
        if any(label == "le" for label, _ in labels):
            raise ExpositionError("le is the bucket label of a histogram")
        if len(histogram.bounds) != len(histogram.counts):
            raise ExpositionError("a histogram needs one count per bound")
        if list(histogram.bounds) != sorted(histogram.bounds) or any(
            later < earlier for earlier, later in itertools.pairwise(histogram.counts)
        ):
            raise ExpositionError("histogram bounds and their counts must be cumulative")
        if histogram.counts and histogram.counts[-1] > histogram.count:
            raise ExpositionError("a bucket counts more than the histogram's count")
        name = self._current[0]
        for bound, count in zip(histogram.bounds, histogram.counts, strict=True):
            self._line(f"{name}_bucket", (*labels, ("le", format_value(float(bound)))), count)
        self._line(f"{name}_bucket", (*labels, ("le", "+Inf")), histogram.count)
        self._line(f"{name}_sum", labels, histogram.total)
        self._line(f"{name}_count", labels, histogram.count)

    def render(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode() if self._lines else b""

    def _line(self, name: str, labels: Labels, value: float) -> None:
        if labels:
            for label, _ in labels:
                if not _LABEL_NAME.match(label) or label.startswith("__"):
                    raise ExpositionError(f"invalid label name {label!r}")
            body = ",".join(f'{label}="{escape_label_value(text)}"' for label, text in labels)
            self._lines.append(f"{name}{{{body}}} {format_value(value)}")
        else:
            self._lines.append(f"{name} {format_value(value)}")
