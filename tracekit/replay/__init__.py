"""Replay a trace through the kernel model and diff expected against observed decisions.

`tracekit.replay` is both this package and the function `tracekit.replay.api.replay`: importing
any submodule makes Python bind the package to the name `tracekit.replay`, so the package itself
is callable and forwards to the function. `tracekit.replay(path)` works either way.
"""

import sys
import types

from tracekit.replay.api import Replay, replay, write_results
from tracekit.replay.decision import DECISION_SCHEMA, Decision

__all__ = ["DECISION_SCHEMA", "Decision", "Replay", "replay", "write_results"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Replay:
        return replay(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
