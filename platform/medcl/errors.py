"""The errors a user can cause and fix; the CLI prints these as one message, without a traceback."""
from medcl.config import ConfigError
from medcl.corpus.schema import CorruptArtifactError
from medcl.engine.checkpoint import CorruptCheckpointError
from medcl.engine.cluster import ResourceError
from medcl.engine.runner import RunError
from medcl.models import ModelLoadError
from medcl.registry import UnknownNameError

USER_ERRORS = (ConfigError, CorruptArtifactError, CorruptCheckpointError, ResourceError, RunError,
               UnknownNameError, ModelLoadError, FileNotFoundError)
