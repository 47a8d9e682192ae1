"""medcl: continual learning of medical vision-language (CLIP) foundation models on Ray.

Importing medcl changes nothing in the process: the ``medcl`` command keeps a local Ray on loopback
(:func:`medcl.engine.loopback.prepare_local_environment`, before Ray is imported); a program that
drives medcl as a library calls that function itself before it imports ray.
"""

__version__ = "0.1.0"
