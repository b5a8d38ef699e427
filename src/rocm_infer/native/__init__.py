"""The in-process path: llama.cpp in this process, one engine thread per model."""
