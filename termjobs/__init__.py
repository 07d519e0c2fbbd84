"""termjobs: a self-hosted job runner (cron/once/manual jobs, program and LLM runners).

The server is started with ``term-llm serve jobs``; ``termjobs.service.run_service`` is
the composition root for embedding it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("termjobs")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
