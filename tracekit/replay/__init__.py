"""Replay a trace through the kernel model and diff expected against observed decisions.

`tracekit.replay` is both this package and the function `tracekit.replay.api.replay`: importing
any submodule makes Python bind the package to the name `tracekit.replay`, so the package itself
is callable and forwards to the function. `tracekit.replay(path)` works either way.

The public names are imported on first use (`tracekit.lazy`): importing a light submodule, such
as `tracekit.replay.forkserver`, which ``tracekit replay --dask local`` starts before anything
else, does not import the replay engine with pandas and pyarrow first.
"""

import sys
import types

from tracekit.lazy import lazy_names

__all__ = ["DECISION_SCHEMA", "Decision", "Replay", "replay", "write_results"]

__getattr__, __dir__ = lazy_names(__name__, {
    **{name: ("tracekit.replay.api", name) for name in ("Replay", "replay", "write_results")},
    **{name: ("tracekit.replay.decision", name) for name in ("DECISION_SCHEMA", "Decision")},
})


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from tracekit.replay.api import replay

        return replay(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
