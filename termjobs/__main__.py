"""``python -m termjobs`` is the same as the ``term-llm`` command."""

from termjobs.cli.main import main

if __name__ == "__main__":
    main()
