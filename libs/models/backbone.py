"""The backbone seam: backbones registered by name, and what a DeepLab head asks of one.

A backbone is an ``nn.Module`` that DeepLab v2, v3 and v3+ receive ready-built
(as their ``.backbone``, so its state-dict keys sit under ``base.backbone.``).
Its interface is all a head uses:

* ``forward(x)``: the features at ``output_stride``, ``out_channels`` channels;
* ``forward_features(x)``: ``(low, high)``, ``high`` as ``forward``'s and
  ``low`` the stride-``low_stride`` features (``low_channels`` channels) that
  v3+'s decoder reads (ResNet's res2, stride 4);
* the attributes ``out_channels``, ``output_stride``, ``low_channels`` and
  ``low_stride``.

The output stride is set when the backbone is built: a factory registered
here is called with the keywords ``n_blocks``, ``base_width``, ``norm`` (the
BatchNorm class of ``MODEL.BACKBONE.BN``), ``output_stride`` (8 for v2, 8 or
16 for v3/v3+) and ``multi_grid`` (the last stage's rate factors, ``(1,)``
for v2), and refuses what it cannot build with a ``ValueError``. Its grids
must follow the geometry rule of ``geometry.py`` (cell ``i`` of a stride-``s``
grid on input pixel ``s i``: stride-2 steps of ``(n - 1) // 2 + 1`` cells).

Everything inside ``model.base.backbone`` is the backbone learning-rate group
(``libs.training.optim``); every other trainable parameter is the head's.
"""

BACKBONES = {}


def register_backbone(name):
    """Decorator: register a backbone factory (a class or a function) under ``name``."""

    def register(factory):
        BACKBONES[name] = factory
        return factory

    return register

