"""From weights and pixels to class probabilities: shared by eval.py, the demos and train.py."""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.transforms import subtract_mean, to_rgb_uint8
from ..models import build_model
from ..models.geometry import upsample_logits
from ..models.weights import load_model_weights
from ..utils.sizes import longer_side_size, scaled_size
from .crf import legacy_crf_image


def load_model(cfg, model_path, device):
    """The config's model with the weights of ``model_path``, in eval mode on ``device``.

    Raises :class:`CheckpointError` for a missing or unusable weight file
    (including one trained for another number of classes).
    """
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    load_model_weights(model, model_path, cfg.DATASET.N_CLASSES)
    return model.eval().to(device)


def predict_probs(model, images, size, tta_scales=(1.0,), flip=False):
    """Class probabilities at ``size``, averaged over input scales and horizontal flips.

    With the single scale 1.0 and no flip this is exactly
    ``softmax(upsample(model(images)))``.
    """
    total = None
    n_views = 0
    for scale in tta_scales:
        if scale == 1.0:
            scaled = images
        else:
            scaled = F.interpolate(images, size=scaled_size(images.shape[-2:], scale),
                                   mode="bilinear", align_corners=False)
        views = [False, True] if flip else [False]
        for flipped in views:
            x = scaled.flip(-1) if flipped else scaled
            logits = upsample_logits(model(x), size)
            if flipped:
                logits = logits.flip(-1)
            probs = F.softmax(logits, dim=1)
            total = probs if total is None else total + probs
            n_views += 1
    return total if n_views == 1 else total / n_views


def resize_longer_side(image, longer_side):
    """Bilinear resize of an HxWx3 image so its longer side is ``longer_side``."""
    height, width = longer_side_size(image.shape[0], image.shape[1], longer_side)
    if (height, width) == image.shape[:2]:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def network_input(image_bgr, mean):
    """HxWx3 uint8 BGR -> 1x3xHxW float32 tensor with the config's BGR mean subtracted."""
    chw = subtract_mean(image_bgr, mean).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))[None]


def crf_image(image, mean, legacy_mean_subtracted):
    """The HxWx3 uint8 RGB picture the CRF compares colours on, from a network input.

    ``image`` is a 3xHxW BGR image (tensor or array) with the BGR ``mean``
    subtracted. The RGB picture is recovered exactly; ``legacy_mean_subtracted``
    (``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``) gives the original implementation's
    mean-subtracted uint8 cast instead.
    """
    if legacy_mean_subtracted:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        return legacy_crf_image(image)
    return to_rgb_uint8(image, mean)


def segment(model, image_bgr, mean, device, crf=None, legacy_mean_subtracted=None,
            output_size=None):
    """Class probabilities (CxHxW float32) and label map (HxW int64) of one BGR image.

    The network sees ``image_bgr`` as given (resize it first) with the BGR
    ``mean`` subtracted; its logits are upsampled to ``output_size`` (default:
    the image's own size). ``crf`` is a :class:`DenseCRF` or None; it needs
    ``output_size`` equal to the image size, and ``legacy_mean_subtracted``
    (``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``) to say which picture it compares
    colours on (see :func:`crf_image`).
    """
    size = tuple(output_size or image_bgr.shape[:2])
    if crf is not None:
        if size != image_bgr.shape[:2]:
            raise ValueError("the CRF needs the probabilities at the image's own size")
        if legacy_mean_subtracted is None:
            raise ValueError("a CRF needs legacy_mean_subtracted (CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)")
    with torch.inference_mode():
        images = network_input(image_bgr, mean).to(device)
        probs = predict_probs(model, images, size)[0].float().cpu().numpy()
    if crf is not None:
        probs = crf(crf_image(images[0], mean, legacy_mean_subtracted), probs)
    return probs, probs.argmax(axis=0)
