"""End-to-end benchmark: roomer's lobby fan-out against peer servers (``roomer bench``).

See :mod:`roomer.benchmark.harness`; ``main(argv)`` is the command-line entry point.
"""

__all__: list[str] = []
