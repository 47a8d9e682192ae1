"""medcl: continual learning of medical vision-language (CLIP) foundation models on Ray."""
__version__ = "0.1.0"
