"""Compression-aware search: quantization, structured pruning and their exact costs.

A compression policy is more genotype entries (:mod:`nasjax.spaces.compress`), so a
population of differently compressed networks trains in one compiled call, and
architecture, bit-widths and keep-ratios are searched jointly (APQ, Wang et al., CVPR
2020; HAQ, Wang et al., CVPR 2019; Wu et al. 2018 for the differentiable variant).
"""
