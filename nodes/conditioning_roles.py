"""Which Paint-by-Example conditioning is which, and the check that refuses wiring mistakes.

Every node that makes Paint-by-Example conditioning marks each entry in its options dict: the
exemplar (positive) and the learned unconditional vector (negative). ComfyUI's conditioning nodes
(ControlNet Apply, Conditioning Set Mask, Set Timestep Range, Combine, ...) copy the options dict,
so the marker survives them; a CLIP Text Encode prompt has none. One function, :func:`check`,
takes plain positive and negative lists, so any node (or a MODEL wrapper) can call it.
"""

from __future__ import annotations

import torch

ROLE = "pbe_role"
EXEMPLAR = "exemplar"
UNCONDITIONAL = "unconditional"

_USE_POSITIVE = "Connect the positive output of Paint-by-Example Encode (or Encode from CLIP Vision)."
_USE_NEGATIVE = ("Connect the negative output of Paint-by-Example Encode (the model's built-in 'no reference' "
                 "input).")


def marked(context: torch.Tensor, unconditional: torch.Tensor) -> tuple[list, list]:
    """The (positive, negative) CONDITIONING pair of an exemplar, with their roles."""
    return [[context, {ROLE: EXEMPLAR}]], [[unconditional, {ROLE: UNCONDITIONAL}]]


def check(positive, negative) -> None:
    """Raise ValueError, naming the input and the node to use, unless ``positive`` holds the
    exemplar and ``negative`` the learned unconditional vector (Regions' positive may also hold
    the unconditional vector under a mask). ``negative`` None: a guider without one (checked alone)."""
    pairs = [(positive, "positive", _USE_POSITIVE)]
    if negative is not None:
        pairs.append((negative, "negative", _USE_NEGATIVE))
    negative = negative if negative is not None else []
    for conditioning, input_name, use in pairs:
        _check_list(conditioning, input_name, use)
        for tensor, options in conditioning:
            if options.get(ROLE) not in (EXEMPLAR, UNCONDITIONAL):
                raise ValueError(f"{input_name}: {_foreign(tensor)} {use}")
    positive_roles = [options[ROLE] for _tensor, options in positive]
    negative_roles = [options[ROLE] for _tensor, options in negative]
    if EXEMPLAR not in positive_roles and EXEMPLAR in negative_roles:
        raise ValueError("positive: it holds the 'no reference' input and the negative holds the exemplar: positive "
                         "and negative are swapped. Connect Paint-by-Example Encode's positive output to positive and "
                         "its negative output to negative.")
    if EXEMPLAR not in positive_roles:
        raise ValueError(f"positive: it holds only the model's 'no reference' input, no exemplar. {_USE_POSITIVE}")
    for (tensor, options), role in zip(positive, positive_roles):
        if role == UNCONDITIONAL and options.get("mask") is None:
            raise ValueError("positive: it mixes in the model's 'no reference' input over the whole image, which "
                             f"cancels the exemplar. {_USE_POSITIVE} Use Paint-by-Example Regions to place it in part "
                             "of the image.")
        if role == EXEMPLAR and _all_zero(tensor):
            raise ValueError("positive: the exemplar conditioning is all zeros (ConditioningZeroOut?), so the "
                             f"reference is lost. {_USE_POSITIVE}")
    if EXEMPLAR in negative_roles:
        raise ValueError(f"negative: it holds an exemplar, not the model's 'no reference' input. {_USE_NEGATIVE}")
    if any(_all_zero(tensor) for tensor, _options in negative):
        raise ValueError("negative: it is all zeros (ConditioningZeroOut?), which is not Paint-by-Example's "
                         f"'no reference' input. {_USE_NEGATIVE}")


def _check_list(conditioning, input_name: str, use: str) -> None:
    if not isinstance(conditioning, list) or not conditioning or not all(
            isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
            and isinstance(entry[1], dict) for entry in conditioning):
        raise ValueError(f"{input_name}: expected a CONDITIONING made by a Paint-by-Example node. {use}")


def _foreign(tensor: torch.Tensor) -> str:
    """Why an unmarked conditioning is not Paint-by-Example's, in the user's words."""
    tokens = tensor.shape[1] if tensor.ndim == 3 else None
    if tokens is not None and tokens % 77 == 0:
        return (f"this is a text prompt's conditioning ({tokens} tokens, as CLIP Text Encode makes), not "
                "Paint-by-Example's one image token: Paint-by-Example is guided by a reference image, not text.")
    return "this conditioning was not made by a Paint-by-Example node."


def _all_zero(tensor: torch.Tensor) -> bool:
    return not bool(torch.count_nonzero(tensor))
