"""What scaling changes inside a network, and what else could shrink it.

`similarity.py` (CKA and CCA, numpy only), `activations.py` (forward hooks on module names),
`compare.py` (`deploy similarity`), `deepcompress.py` (pruning + weight sharing + Huffman) and
`prune.py` (structured pruning to a measured latency). Nothing is imported eagerly.
"""
