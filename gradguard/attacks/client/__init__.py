"""Attacks by a client on its peers (seed 001, Yue et al., arXiv 2506.11413).

:mod:`.uploads` chooses what the malicious client sends (honest or Byzantine),
:mod:`.curious` is the client itself (it records what any client sees: each round's global
model and its own upload), :mod:`.peer_inversion` reconstructs peers' images from the
change of the global model.
"""
