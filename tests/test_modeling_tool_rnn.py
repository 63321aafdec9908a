"""ToolRNN (the LSTM / GRU baselines): config validation, Auto classes and save/load, and the cache and
padding properties tool-augmented decoding relies on (a cached forward continues the state exactly, padding
never touches it, rows of a batch are independent)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache

import hf_toolssm  # noqa: F401  (registers the Auto classes)
from hf_toolssm import ToolRNNConfig, ToolRNNForCausalLM, ToolRNNModel

VOCAB = 23
CELLS = ["lstm", "gru"]
ATOL = 1e-5


def tiny_config(cell_type: str = "lstm", **overrides) -> ToolRNNConfig:
    # initializer_range=1: logits of order 1 (not 1e-4), so the comparisons below mean something.
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=16, embedding_size=12, num_hidden_layers=2, cell_type=cell_type,
        initializer_range=1.0,
    )
    return ToolRNNConfig(**{**kwargs, **overrides})


def tiny_model(cell_type: str = "lstm", seed: int = 0, **overrides) -> ToolRNNForCausalLM:
    torch.manual_seed(seed)
    return ToolRNNForCausalLM(tiny_config(cell_type, **overrides)).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=generator)  # (b, l); 0 and 1 are pad / eos


# --- config ----------------------------------------------------------------------------------------------
def test_config_defaults_and_layer_types():
    config = ToolRNNConfig(hidden_size=32, num_hidden_layers=3)
    assert config.model_type == "tool_rnn"
    assert config.embedding_size == 32  # defaults to hidden_size
    assert config.cell_type == "lstm" and config.tie_word_embeddings is False
    assert config.layer_types == ["linear_attention"] * 3
    assert [type(layer).__name__ for layer in DynamicCache(config=config).layers] == ["LinearAttentionLayer"] * 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cell_type": "rnn"}, "cell_type must be one of"),
        ({"cell_type": "LSTM"}, "cell_type must be one of"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
        ({"embedding_size": -3}, "embedding_size must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"tie_word_embeddings": True, "embedding_size": 8, "hidden_size": 16}, "needs embedding_size == hidden_size"),
        # the field types, checked by @strict (a string is truthy: use_cache="no" used to turn the cache on)
        ({"use_cache": "no"}, "use_cache"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
        ({"dropout": "0.1"}, "dropout"),
        ({"tool_config": "addition"}, "tool_config"),
    ],
)
def test_config_validation_errors(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        ToolRNNConfig(**kwargs)


def test_tied_embeddings_share_the_weight():
    model = tiny_model(embedding_size=16, tie_word_embeddings=True)
    assert model.lm_head.weight is model.backbone.embeddings.weight


# --- Auto classes, save / load ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell_type", CELLS)
def test_save_and_load_through_auto_classes(tmp_path, cell_type):
    model = tiny_model(cell_type, tool_config={"task": "addition", "task_kwargs": {}})
    ids = random_ids(2, 7)
    model.save_pretrained(tmp_path)

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ToolRNNConfig)
    assert (config.cell_type, config.embedding_size) == (cell_type, 12)
    assert config.tool_config == {"task": "addition", "task_kwargs": {}}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ToolRNNForCausalLM)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name  # the init must not overwrite loaded weights
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert isinstance(AutoModel.from_pretrained(tmp_path), ToolRNNModel)
    assert isinstance(AutoModelForCausalLM.from_config(config), ToolRNNForCausalLM)


def test_init_lstm_forget_bias_and_zero_biases():
    rnn = tiny_model("lstm").backbone.layers[0].rnn
    gates = rnn.bias_ih_l0.view(4, -1)  # (i, f, g, o)
    assert torch.all(gates[1] == 1) and torch.all(gates[[0, 2, 3]] == 0) and torch.all(rnn.bias_hh_l0 == 0)
    assert rnn.weight_hh_l0.abs().max() <= 16**-0.5


# --- forward: shapes, loss, outputs ----------------------------------------------------------------------
@pytest.mark.parametrize("cell_type", CELLS)
def test_forward_shapes_loss_and_options(cell_type):
    model = tiny_model(cell_type)
    ids = random_ids(3, 6)
    out = model(ids, labels=ids, output_hidden_states=True)
    assert out.logits.shape == (3, 6, VOCAB) and out.logits.dtype == torch.float32
    assert len(out.hidden_states) == 2 and out.hidden_states[-1].shape == (3, 6, 16)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, out.logits[:, -1:])
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, out.logits)
    loss, logits = model(ids, labels=ids, return_dict=False)[:2]
    torch.testing.assert_close(logits, out.logits)
    assert loss.ndim == 0 and torch.isfinite(loss)
    state = model(ids, use_cache=True).cache.get_recurrent_state(1)
    assert state.shape == (3, 2 if cell_type == "lstm" else 1, 16)  # (b, s, h)


@pytest.mark.parametrize("cell_type", CELLS)
def test_batching_equivalence(cell_type):
    model = tiny_model(cell_type)
    ids = random_ids(4, 9)
    batched = model(ids).logits
    for row in range(4):
        torch.testing.assert_close(model(ids[row : row + 1]).logits, batched[row : row + 1], rtol=0, atol=ATOL)


# --- the cache -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell_type", CELLS)
def test_prefix_plus_cache_equals_full_one_token_at_a_time(cell_type):
    model = tiny_model(cell_type)
    ids = random_ids(2, 8)
    full = model(ids).logits
    out = model(ids[:, :3], use_cache=True)
    steps = [out.logits]
    for t in range(3, 8):
        out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=ATOL)


@pytest.mark.parametrize("cell_type", CELLS)
def test_multi_token_forward_continues_the_cached_state(cell_type):
    """Tool observations are fed as one multi-token forward on the cache: it must continue, not restart."""
    model = tiny_model(cell_type)
    ids = random_ids(2, 11)
    full = model(ids).logits
    cache = DynamicCache(config=model.config)
    chunks = [model(ids[:, a:b], cache=cache, use_cache=True).logits for a, b in [(0, 4), (4, 5), (5, 9), (9, 11)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=0, atol=ATOL)
    # The same chunks without continuing the cache give something else: the test can tell the difference.
    assert not torch.allclose(model(ids[:, 4:5]).logits, full[:, 4:5], atol=0.1)


@pytest.mark.parametrize("cell_type", CELLS)
def test_reorder_cache_drops_rows(cell_type):
    """The fast tool loop drops finished rows with cache.reorder_cache(kept_rows)."""
    model = tiny_model(cell_type)
    ids = random_ids(3, 6)
    full = model(ids).logits
    out = model(ids[:, :4], use_cache=True)
    out.cache.reorder_cache(torch.tensor([2, 0]))
    rest = model(ids[[2, 0], 4:], cache=out.cache, use_cache=True).logits
    torch.testing.assert_close(rest, full[[2, 0], 4:], rtol=0, atol=ATOL)


@pytest.mark.parametrize("cell_type", CELLS)
def test_generate_with_cache_equals_without(cell_type):
    model = tiny_model(cell_type, seed=3)
    ids = random_ids(2, 5)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    with_cache = model.generate(ids, use_cache=True, **kwargs)
    without = model.generate(ids, use_cache=False, **kwargs)
    assert with_cache.shape == (2, 17)
    assert torch.equal(with_cache, without)


# --- padding ---------------------------------------------------------------------------------------------
def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)  # (b, l), 0 = [PAD]
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    return ids, mask


@pytest.mark.parametrize("cell_type", CELLS)
def test_left_padded_rows_equal_unpadded_rows(cell_type):
    model = tiny_model(cell_type)
    rows = [random_ids(1, n, seed=n)[0] for n in (3, 7, 5)]
    ids, mask = left_pad(rows)
    out = model(ids, attention_mask=mask, use_cache=True)
    assert torch.all(out.logits[mask == 0] == 0)  # padded positions: zero hidden state, zero logits
    next_ids = random_ids(3, 2, seed=9)
    after = model(next_ids, cache=out.cache, use_cache=True).logits  # continue past the padded prompt
    for i, row in enumerate(rows):
        alone = model(row[None], use_cache=True)
        torch.testing.assert_close(out.logits[i, -len(row) :], alone.logits[0], rtol=0, atol=ATOL)
        alone_after = model(next_ids[i : i + 1], cache=alone.cache, use_cache=True).logits
        torch.testing.assert_close(after[i], alone_after[0], rtol=0, atol=ATOL)


@pytest.mark.parametrize("cell_type", CELLS)
def test_right_padding_holes_and_empty_rows_skip_padding(cell_type):
    """Any mask works: a masked position is skipped, the state passes it unchanged."""
    model = tiny_model(cell_type)
    ids = random_ids(3, 6)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
    out = model(ids, attention_mask=mask, use_cache=True)
    right = model(ids[0:1, :4], use_cache=True)
    torch.testing.assert_close(out.logits[0, :4], right.logits[0], rtol=0, atol=ATOL)
    holes = model(ids[1:2, [0, 2, 4, 5]]).logits
    torch.testing.assert_close(out.logits[1, [0, 2, 4, 5]], holes[0], rtol=0, atol=ATOL)
    for layer in range(2):
        torch.testing.assert_close(out.cache.get_recurrent_state(layer)[0], right.cache.get_recurrent_state(layer)[0])
        assert torch.all(out.cache.get_recurrent_state(layer)[2] == 0)  # a row without tokens keeps its initial state


@pytest.mark.parametrize("cell_type", CELLS)
def test_generate_left_padded_batch_equals_rows_alone(cell_type):
    model = tiny_model(cell_type, seed=5)
    rows = [random_ids(1, n, seed=10 + n)[0] for n in (2, 6)]
    ids, mask = left_pad(rows)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    for i, row in enumerate(rows):
        alone = model.generate(row[None], **kwargs)
        assert torch.equal(batched[i, ids.shape[1] :], alone[0, len(row) :])


# --- training --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell_type", CELLS)
def test_backward_through_padded_batch_and_dropout(cell_type):
    model = tiny_model(cell_type, dropout=0.5).train()
    ids = random_ids(2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.training and not torch.equal(model(ids).logits, model(ids).logits)  # dropout is active
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
@pytest.mark.parametrize("cell_type", CELLS)
def test_gradient_checkpointing_gives_the_same_gradients(cell_type, reentrant):
    """A padded batch (the packed path) with dropout: the recompute replays the dropout masks (torch's checkpoint
    restores the RNG), so the gradients are the uncheckpointed ones. Reentrant checkpointing passes gradients back
    through tensor arguments only: the layers take the packed data as a tensor, not a PackedSequence."""
    model = tiny_model(cell_type, dropout=0.3).train()
    ids = random_ids(2, 7)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    rnn_calls = []  # a pre-hook on the inner RNN: checkpointing runs each layer's RNN twice
    for layer in model.backbone.layers:
        layer.rnn.register_forward_pre_hook(lambda *args: rnn_calls.append(1))

    def gradients():
        model.zero_grad()
        rnn_calls.clear()
        torch.manual_seed(3)
        model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}, len(rnn_calls)

    plain, plain_calls = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    checkpointed, checkpointed_calls = gradients()
    assert (plain_calls, checkpointed_calls) == (2, 4)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    model.eval()  # and generation, which caches, still works with checkpointing on
    assert model.generate(ids[:1, :3], max_new_tokens=3, do_sample=False).shape == (1, 6)


@pytest.mark.parametrize("method", ["get_input_embeddings", "set_input_embeddings", "prepare_inputs_for_generation"])
def test_the_lm_head_plumbing_is_the_mamba_one(method):
    """Each model file stands alone, as in transformers (and ToolMamba's ships as remote code), so the causal-LM
    plumbing both models share is written twice: this keeps the copies equal."""
    import inspect

    from hf_toolssm.models.tool_mamba.modeling_tool_mamba import ToolMambaForCausalLM

    def source(cls):
        return inspect.getsource(getattr(cls, method)).replace("ToolMamba", "X").replace("ToolRNN", "X")

    assert source(ToolRNNForCausalLM) == source(ToolMambaForCausalLM)


@pytest.mark.parametrize("cell_type", CELLS)
def test_backward_through_a_cache_continuation_gives_the_full_pass_gradients(cell_type):
    """The GRU's state comes out of the cache as a view that the cache then overwrites in place: autograd needs
    its own copy (the LSTM's is made by torch.cat)."""
    ids = random_ids(2, 6)
    full = tiny_model(cell_type).train()
    full(ids).logits.sum().backward()
    split = tiny_model(cell_type).train()
    first = split(ids[:, :3], use_cache=True)
    second = split(ids[:, 3:], cache=first.cache)
    torch.cat([first.logits, second.logits], dim=1).sum().backward()
    for (name, whole), (_, parts) in zip(full.named_parameters(), split.named_parameters(), strict=True):
        torch.testing.assert_close(parts.grad, whole.grad, atol=1e-5, rtol=1e-4, msg=name)
