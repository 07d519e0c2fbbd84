"""The ``llm`` runner: agents that run on a schedule (see ``runner.LLMRunner``).

Import-light on purpose: ``termjobs.config`` reads :mod:`settings` at start-up, and the
provider SDKs (``openai``, ``anthropic``: the ``llm`` extra) are imported only when a
run first talks to a provider.
"""
