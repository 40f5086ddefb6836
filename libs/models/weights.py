"""Reading weight files safely and loading them into a model with checks.

Every place that takes weights (``--model-path``, ``MODEL.INIT_MODEL``, ``hubconf.py``) goes
through :func:`read_weights`, so all understand the same things: a training checkpoint (a dict
whose ``"model"`` entry is the state dict), a plain state dict (convert.py), and the released
checkpoints of kazuto1011/deeplab-pytorch, from a file or by name (``zoo.py``), renamed by
``released.py``. Everything is read with ``weights_only=True``, so a weight file never runs code.
"""

from collections import namedtuple
from pathlib import Path

import torch

from ..utils.errors import CheckpointError, first_line
from . import released, zoo

RELEASED_CHECKPOINT = "released checkpoint"
UNDERSTOOD = ("understood: training checkpoints (train.py), state dicts (convert.py), "
              "deeplab-pytorch's released checkpoints (keys base.layerN.blockK...; "
              "by name: " + ", ".join(zoo.ZOO) + ")")
OUR_PREFIXES = ("base.backbone.", "base.aspp.", "backbone.", "aspp.")
# The classifier's weight, whose rows are the classes: v2's first ASPP branch, v3/v3+'s 1x1.
CLASSIFIER_KEYS = ("base.aspp.c0.weight", "aspp.c0.weight", "base.classifier.weight",
                   "classifier.weight")


def load_file(path):
    """Load a weight file with ``weights_only=True``; one clear error if that fails."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = first_line(e)
        if reason.startswith("Weights only load failed"):
            # torch's message goes on to suggest weights_only=False, which would execute
            # whatever the file holds; this project never does that.
            reason = ("it holds objects other than tensors and plain containers "
                      "(refused; nothing in it was executed)")
        raise CheckpointError(f"{path}: not a readable PyTorch weight file (truncated or "
                              f"corrupt?): {reason}") from None


# A state dict in this repository's key layout, what it was read as, and from where.
Weights = namedtuple("Weights", "state_dict kind source")


def classify(obj, source):
    """:class:`Weights` of a loaded object, in our key layout; an error for anything else."""
    kind = "state dict"
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj, kind = obj["model"], "training checkpoint"
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{source}: holds no model state dict; {UNDERSTOOD}")
    if released.is_released(obj):
        mapped, unknown = released.from_released(obj)
        if unknown:
            raise CheckpointError(f"{source}: released-format weights with {len(unknown)} keys "
                                  f"outside that format (first: {unknown[0]}); {UNDERSTOOD}")
        return Weights(mapped, RELEASED_CHECKPOINT, str(source))
    if not any(k.startswith(OUR_PREFIXES) for k in obj):
        raise CheckpointError(f"{source}: not DeepLab v2 weights (first key: {next(iter(obj))}); "
                              f"{UNDERSTOOD}")
    return Weights(obj, kind, str(source))


def read_weights(path_or_name):
    """:class:`Weights` from a weight file or a released weights' name (``zoo.ZOO``) that is not
    also an existing file (downloaded once into the torch hub cache, ``$TORCH_HOME/hub``)."""
    if zoo.is_zoo_name(path_or_name) and not Path(path_or_name).exists():
        url = zoo.ZOO[path_or_name].url
        try:
            obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
        except Exception as e:  # network, HTTP and unpickling errors all end here
            raise CheckpointError(f"{path_or_name}: download of {url} failed: "
                                  f"{first_line(e)}") from None
        return classify(obj, path_or_name)
    return classify(load_file(path_or_name), path_or_name)


def n_classes_of(state_dict):
    """The class count of a DeepLab state dict (rows of its classifier), or None."""
    for key in CLASSIFIER_KEYS:
        if key in state_dict and state_dict[key].dim() == 4:
            return state_dict[key].shape[0]
    return None


def head_prefixes(model):
    """State-dict prefixes of everything but the backbone (v2: ``("base.aspp.",)``): what initial
    weights may leave out, so the COCO init model's backbone loads into any model."""
    net = getattr(model, "module", model)
    base = getattr(net, "base", net)
    prefix = "base." if base is not net else ""
    return tuple(f"{prefix}{name}." for name, _ in base.named_children() if name != "backbone")


def load_model_weights(model, path, n_classes, optional_prefix=None, log=print,
                       adopt_geometry=True):
    """Load a model's weights from ``path`` (a file or a name, :func:`read_weights`) with
    :func:`load_state_dict_checked`; returns the absent keys.

    A released name is checked before its download: DeepLab v2 only, and its class count unless
    the classifier may be dropped (``optional_prefix``). Released checkpoints were trained with
    their repository's MSC resize, not Caffe's; with ``adopt_geometry`` the model's MSC takes it
    (``"pytorch"``), so that it computes what its authors' code computed. Training from them
    passes False: the config decides a new run. With ``optional_prefix`` (a prefix or a tuple,
    :func:`head_prefixes`), weights for another class count, or whose head is another model's,
    lose that part: only the backbone loads.
    """
    if zoo.is_zoo_name(path) and not Path(path).exists():
        if not any(key in model.state_dict() for key in CLASSIFIER_KEYS[:2]):
            net = getattr(getattr(model, "module", model), "base", model)
            raise CheckpointError(f"{path}: the released weights are DeepLab v2's; this model is "
                                  f"a {type(net).__name__} (no released weights)")
        found = zoo.ZOO[path].n_classes
        if optional_prefix is None and found != n_classes:
            raise CheckpointError(f"{path}: the released weights are for {found} classes "
                                  f"({zoo.ZOO[path].dataset}) but {n_classes} were asked for; "
                                  f"use n_classes={found} or a config with {found} classes")
    weights = read_weights(path)
    state_dict = weights.state_dict
    if optional_prefix is not None:
        found, why, expected = n_classes_of(state_dict), None, model.state_dict()
        foreign = next((k for k, v in state_dict.items() if k.startswith(optional_prefix)
                        and (k not in expected or expected[k].shape != v.shape)), None)
        if found not in (None, n_classes):
            why = f"its classifier is for {found} classes, not {n_classes}"
        elif foreign is not None:
            why = f"its head is another model's ({foreign})"
        if why:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(optional_prefix)}
            prefixes = (optional_prefix,) if isinstance(optional_prefix, str) else optional_prefix
            verb = "starts" if len(prefixes) == 1 else "start"
            log(f"{weights.source}: {why}; dropped, so {', '.join(p + '*' for p in prefixes)} "
                f"{verb} from its initialisation.")
    absent = load_state_dict_checked(model, state_dict, weights.source, n_classes, optional_prefix)
    msc = getattr(model, "module", model)
    if weights.kind == RELEASED_CHECKPOINT and hasattr(msc, "geometry"):
        if adopt_geometry:
            msc.geometry = "pytorch"
            log(f"{weights.source}: released deeplab-pytorch weights; the MSC uses their "
                "'pytorch' resize geometry, as they were trained (MODEL.MSC.GEOMETRY ignored).")
        else:
            log(f"{weights.source}: released deeplab-pytorch weights (trained with the "
                f"'pytorch' MSC geometry); this run keeps MODEL.MSC.GEOMETRY={msc.geometry!r}.")
    return absent


def load_state_dict_checked(model, state_dict, path, n_classes, optional_prefix=None):
    """Load ``state_dict`` (read from ``path``) into ``model``, checking the class count first.

    (torch's size-mismatch report would not name the file or both counts.) Tensors under
    ``optional_prefix`` may be absent and keep their initialisation; anything else missing,
    unexpected or of the wrong shape is an error. Returns the keys that were absent.
    """
    found = n_classes_of(state_dict)
    if found is not None and found != n_classes:
        raise CheckpointError(f"{path}: weights are for {found} classes but the config asks for "
                              f"{n_classes}")
    expected = model.state_dict()
    absent = [k for k in expected if k not in state_dict]
    missing = [k for k in absent if optional_prefix is None or not k.startswith(optional_prefix)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k, v in expected.items() if k in state_dict
                   and state_dict[k].shape != v.shape]
    problems = [f"{len(keys)} {label} (first: {keys[0]})" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                if keys]
    if problems:
        raise CheckpointError(f"{path}: does not match the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=not absent)
    return absent
