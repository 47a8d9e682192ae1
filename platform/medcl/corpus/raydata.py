"""Ray Data settings shared by the corpus steps: keep source order, no progress bars in the CLI."""
from __future__ import annotations

import logging

PROGRESS_LOGGER = "ray.data._internal.progress"


def data_context():
    """The current DataContext with ``preserve_order`` on (strict mode, duplicate handling and
    embedding shards follow corpus order) and progress bars / per-operator INFO logs off."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # with the bars off Ray Data logs, once, a WARNING "Progress bars disabled. To enable, set ..."
    # from this logger, which only ever logs about progress reporting
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.ERROR)
    return context
