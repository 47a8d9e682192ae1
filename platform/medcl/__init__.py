"""medcl: continual learning of medical vision-language (CLIP) foundation models on Ray."""
from medcl.engine.loopback import prepare_local_environment as _prepare_local_environment

__version__ = "0.1.0"
_prepare_local_environment()  # before anything imports ray: keep a local Ray on loopback
