"""FlashSpark: serve DeepSeek-V4-Flash-DSpark on DGX Spark clusters with vLLM.

Data flows one way: recipe -> render -> cluster -> client -> gates/bench -> report;
`plan` reads only the recipe. The CLI (`flashspark.cli`) is the only layer that
prints or exits.
"""

from flashspark._version import __version__

__all__ = ["__version__"]
