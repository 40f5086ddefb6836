"""The backbone seam: backbones registered by name, and what a DeepLab head asks of one.

A backbone is an ``nn.Module`` that DeepLab v2, v3 and v3+ receive ready-built as their
``.backbone`` (state-dict keys under ``base.backbone.``; everything in it is the backbone
learning-rate group of ``libs.training.optim``). A head uses only:

* ``forward(x)``: the features at ``output_stride``, ``out_channels`` channels;
* ``forward_features(x)``: ``(low, high)``, ``high`` as ``forward``'s and ``low`` the
  stride-``low_stride`` features (``low_channels`` channels) that v3+'s decoder reads;
* the attributes ``out_channels``, ``output_stride``, ``low_channels`` and ``low_stride``.

A registered factory is called with the keywords ``n_blocks``, ``base_width``, ``norm`` (the
BatchNorm class of ``MODEL.BACKBONE.BN``), ``output_stride`` (8 for v2, 8 or 16 for v3/v3+) and
``multi_grid`` (the last stage's rate factors, ``(1,)`` for v2), and refuses what it cannot
build with a ``ValueError``. Its grids must follow ``geometry.py``'s rule (cell ``i`` of a
stride-``s`` grid on input pixel ``s i``: stride-2 steps of ``(n - 1) // 2 + 1`` cells).
"""

BACKBONES = {}


def register_backbone(name):
    """Decorator: register a backbone factory (a class or a function) under ``name``."""

    def register(factory):
        BACKBONES[name] = factory
        return factory

    return register

