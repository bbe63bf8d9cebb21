"""The torch reference path: what the article's PyTorch code computes.

Separate from conversion (``converters.torchvision``, ``converters.
efficientnet_lite``): this package runs recipes in torch, one iteration at a
time, to test the JAX engine against (``loop.torch_generate``), and measures
both (``benchmark``, ``parity``). Every library value that computes (an image
operation, an objective term, an update rule) has its torch twin here,
registered by type (``operations``, ``objectives``, ``updates``).
"""
