"""The ``rocm-infer`` subcommands, one module each; ``rocm_infer.cli`` assembles them.

Each module imports the library only inside its command, so ``rocm-infer --help`` and
a usage error answer without loading libllama.
"""
