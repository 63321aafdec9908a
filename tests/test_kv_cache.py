"""GrowingKVLayer (in-place KV appends) against its reference twin, transformers' DynamicLayer."""

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, GPTNeoXConfig, MistralConfig
from transformers.cache_utils import DynamicLayer

from hf_toolssm.generation import kv_cache
from hf_toolssm.generation.kv_cache import GrowingKVLayer, use_growing_kv_layers
from hf_toolssm.models.tool_mamba import ToolMambaConfig, ToolMambaForCausalLM

VOCAB = 40


def tiny_gpt_neox(seed: int = 0):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=1024, initializer_range=0.5,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def decode(model, chunks, *, grow: bool, drops: dict | None = None, crops: dict | None = None):
    """Feed token chunks one forward each; return the logits of every forward. ``drops``: before chunk i, keep
    only these batch rows (as the tool loop does when rows finish); ``crops``: before chunk i, crop n tokens."""
    drops, crops, cache, logits, rows = drops or {}, crops or {}, None, [], None
    with torch.inference_mode():
        for i, chunk in enumerate(chunks):
            if i in drops:
                rows = torch.tensor(drops[i])
                cache.reorder_cache(rows)
            if i in crops:
                cache.crop(-crops[i])
            feed = chunk if rows is None else chunk[rows]
            first = cache is None
            out = model(input_ids=feed, cache=cache, use_cache=True)
            cache = out.cache
            if first and grow:
                assert use_growing_kv_layers(cache) == model.config.num_hidden_layers
            logits.append(out.logits)
    return logits, cache


def random_chunks(lengths, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, n), generator=generator) for n in lengths]


@pytest.mark.parametrize("seed", [0, 1])
def test_growing_layer_gives_the_dynamic_layers_logits(seed):
    """One token and many, past several regrowths (64 -> 128 -> 256), with rows dropped twice on the way."""
    model = tiny_gpt_neox(seed)
    chunks = random_chunks([5, 1, 1, 3, 1, 70, 1, 2, *[1] * 40, 90, 1, 1], seed=seed)
    drops = {9: [0, 2], 50: [1]}
    reference, _ = decode(model, chunks, grow=False, drops=drops)
    grown, cache = decode(model, chunks, grow=True, drops=drops)
    assert all(type(layer) is GrowingKVLayer for layer in cache.layers)
    assert cache.get_seq_length() == sum(c.shape[1] for c in chunks)
    for expected, actual in zip(reference, grown, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_crop_then_append_matches_the_dynamic_layer():
    model = tiny_gpt_neox()
    chunks = random_chunks([6, 1, 4, 1, 1, 3])
    crops = {3: 2, 5: 1}
    reference, _ = decode(model, chunks, grow=False, crops=crops)
    grown, _ = decode(model, chunks, grow=True, crops=crops)
    for expected, actual in zip(reference, grown, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_appends_copy_the_cache_only_when_the_buffer_doubles(monkeypatch):
    capacities = []
    reallocate = GrowingKVLayer._reallocate

    def counted(layer, *args):
        reallocate(layer, *args)
        capacities.append(layer._key_buffer.shape[-2])

    monkeypatch.setattr(GrowingKVLayer, "_reallocate", counted)
    layer = GrowingKVLayer()
    for _ in range(500):
        keys, values = layer.update(torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8))
    assert keys.shape == values.shape == (2, 4, 500, 8)
    assert capacities == [64, 128, 256, 512]
    assert keys.data_ptr() == layer._key_buffer.data_ptr()  # a view, not a copy


def test_dropping_rows_keeps_the_buffers_capacity():
    layer = GrowingKVLayer()
    for _ in range(100):
        layer.update(torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))
    assert layer._key_buffer.shape == (3, 2, 128, 4)
    kept = layer.keys[[0, 2]]
    layer.reorder_cache(torch.tensor([0, 2]))  # as the tool loop does when row 1 finishes
    keys, _ = layer.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    assert layer._key_buffer.shape == (2, 2, 128, 4)  # adopted into one new buffer, not regrown
    torch.testing.assert_close(keys[:, :, :100], kept)
    assert keys.shape == (2, 2, 101, 4) and not keys[:, :, 100].any()


def test_a_growing_layer_keeps_what_the_dynamic_layer_held():
    dynamic = DynamicLayer()
    dynamic.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    grown = GrowingKVLayer.from_layer(dynamic)
    new_keys, new_values = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    keys, values = grown.update(new_keys, new_values)
    torch.testing.assert_close(keys, torch.cat([dynamic.keys, new_keys], dim=-2))
    torch.testing.assert_close(values, torch.cat([dynamic.values, new_values], dim=-2))
    assert GrowingKVLayer.from_layer(DynamicLayer()).get_seq_length() == 0


def test_only_plain_full_attention_layers_are_swapped():
    torch.manual_seed(0)
    mistral = AutoModelForCausalLM.from_config(MistralConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, sliding_window=8,
    )).eval()
    mamba = ToolMambaForCausalLM(ToolMambaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2)).eval()
    ids = torch.randint(0, VOCAB, (1, 4))
    with torch.inference_mode():
        assert use_growing_kv_layers(mistral(input_ids=ids, use_cache=True).cache) == 0  # bounded by its window
        assert use_growing_kv_layers(mamba(input_ids=ids, use_cache=True).cache) == 0  # fixed-size states
    assert use_growing_kv_layers(DynamicCache(config=tiny_gpt_neox().config)) == 2


def test_the_fast_loop_decodes_attention_models_on_growing_layers(monkeypatch):
    from hf_toolssm.generation import generate_with_tools, tool_loop
    from hf_toolssm.tasks import get_task
    from hf_toolssm.tokenization import build_char_tokenizer

    swapped = []
    swap = kv_cache.use_growing_kv_layers
    monkeypatch.setattr(tool_loop, "use_growing_kv_layers", lambda cache: swapped.append(swap(cache)))
    task = get_task("addition")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    )).eval()
    prompts = [task.prompt_from_text("12+34")] * 2
    generate_with_tools(model, tokenizer, prompts, task.make_environment, max_new_tokens=20)
    assert swapped == [2]
