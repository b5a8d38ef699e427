"""The subprocess path: llama-server as a child process behind the TextModel interface."""
