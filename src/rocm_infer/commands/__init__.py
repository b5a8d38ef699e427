"""The ``rocm-infer`` subcommands, one module each; ``rocm_infer.cli`` assembles them.

Each module imports what its command needs (model loading, the bench, rich tables)
inside the command, so ``--help`` and usage errors answer before any of it is imported.
"""
