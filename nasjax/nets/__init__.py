"""Network building blocks below the spaces: layers, mixed ops, fake quantization, pruning
masks, the relaxed-network contract and the transformer LM.

Nothing here knows a search space: a space (:mod:`nasjax.spaces`) composes these blocks
into its networks, and every layer above uses them through the space.
"""
