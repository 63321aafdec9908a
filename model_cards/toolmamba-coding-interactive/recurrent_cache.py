"""The cache plumbing both recurrent models share: which cache a forward was given, and whether it uses one.

ToolMamba and ToolRNN keep a fixed-size state per layer in transformers' ``DynamicCache`` (a
``LinearAttentionLayer`` each, from ``config.layer_types``), and take it under any of the names transformers'
models use for it: ``cache``, ``cache_params`` (transformers' Mamba) and ``past_key_values`` (``generate()``).
"""

from __future__ import annotations

from transformers.cache_utils import Cache
from transformers.utils import logging


def resolve_cache(
    cache: Cache | None, cache_params: Cache | None, past_key_values: Cache | None, config
) -> Cache | None:
    """The cache passed under any of its names (one only), checked to be one built for this model."""
    given = [c for c in (cache, cache_params, past_key_values) if c is not None]
    if len(given) > 1:
        raise ValueError("pass the cache once: `cache` (or `cache_params` / `past_key_values`), not several")
    cache = given[0] if given else None
    if cache is not None and len(getattr(cache, "layers", ())) < config.num_hidden_layers:
        raise ValueError(f"the cache holds {len(getattr(cache, 'layers', ()))} layers, the model has "
                         f"{config.num_hidden_layers}: build it with DynamicCache(config=model.config), or pass none "
                         "(use_cache=True makes one)")
    return cache


def uses_cache(use_cache: bool | None, cache: Cache | None, config, checkpointing: bool, training: bool) -> bool:
    """Whether this forward reads and updates a cache: a cache passed is used (as transformers' past_key_values);
    otherwise ``config.use_cache`` outside training. Gradient checkpointing recomputes forwards: no cache."""
    if cache is not None and (use_cache is False or checkpointing):
        raise ValueError("a cache was passed, but " + ("use_cache=False" if use_cache is False else
                         "gradient checkpointing (which recomputes forwards) is on") + ": the cache would be ignored")
    if checkpointing:
        if use_cache:  # as transformers' own models say it
            logging.get_logger(__name__).warning_once(
                "`use_cache=True` is incompatible with gradient checkpointing (which recomputes forwards): no cache")
        return False
    return cache is not None or (use_cache if use_cache is not None else config.use_cache and not training)


__all__ = ["resolve_cache", "uses_cache"]
