"""A pretrained LLaMA-family LLM in JAX (SmolLM2-135M from a GGUF file) and its one-shot
compression.

Layering: ``llm`` sits above ``nets``/foundations and below ``spaces``, so an elastic LLM
search space can build on it.
"""
