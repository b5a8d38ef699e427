"""Side-by-side benchmarks (not tests): in-process engine vs llama.cpp's own tools on the same build."""
