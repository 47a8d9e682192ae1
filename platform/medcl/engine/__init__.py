"""The sequence engine: driver (runner), worker loop, evaluation, checkpoints.

The engine starts Ray, and a local Ray must be kept on loopback before ``ray`` is imported, so
importing the engine prepares the process for it (:func:`.loopback.prepare_local_environment`:
a few ``os.environ`` defaults, nothing when ``RAY_ADDRESS`` names a cluster or inside a Ray worker).
``import medcl`` itself changes nothing; the ``medcl`` command calls the same function first.
"""
from medcl.engine.loopback import prepare_local_environment

prepare_local_environment()
