"""Package layout only; everything else is in pyproject.toml.

schemas/ (the trace format's one machine-readable definition) is shipped inside the package as
``tracekit._schemas``; `tracekit.trace.schema` loads it from there, or from schemas/ in a source tree.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["tracekit", "tracekit.*"]) + ["tracekit._schemas"],
    package_dir={"tracekit._schemas": "schemas"},
    package_data={
        "tracekit._schemas": ["*.json"],
        "tracekit.recorder": ["scenarios/*.toml"],
        "tracekit.report": ["*.json"],
    },
)
