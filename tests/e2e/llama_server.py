"""Start llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
with weight repacking turned off.

llama.cpp repacks weights for the CPU's fastest kernels (AMX tiles on recent Xeons).
Inside a VM that does not grant a process the AMX register state, those kernels
crash the server with SIGSEGV on the first request; the plain kernels work
everywhere. llama-cpp-python has no flag for it, so the model parameters are
adjusted here before the server loads the model. Arguments are the server's own.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported by name: llama-cpp-python is an optional test dependency without types.
native: Any = importlib.import_module("llama_cpp.llama_cpp")
server: Any = importlib.import_module("llama_cpp.server.__main__")
_defaults = native.llama_model_default_params


def _without_repacking() -> Any:
    params = _defaults()
    if hasattr(params, "use_extra_bufts"):
        params.use_extra_bufts = False
    return params


native.llama_model_default_params = _without_repacking

if __name__ == "__main__":
    server.main()
