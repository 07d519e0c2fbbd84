"""The ``term-llm`` command line."""
