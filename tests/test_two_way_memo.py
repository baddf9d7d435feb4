"""The two-way transformer remembers its first block's prompt-independent image projections.

Every prompt on one image feeds the same image tokens (embedding + no-mask embedding) and
positional encoding to the first block, whose token->image keys/values and image->token
queries depend on nothing else. A repeated call reuses them; these tests check that the result
is the very same numbers as a fresh computation, and that the memo is not used when the image
tokens, the weights or the autograd mode change, or after the caller changes its tensor in place.
"""

from __future__ import annotations

import copy

import torch

from sammed.models.common import TwoWayTransformer


def transformer() -> TwoWayTransformer:
    torch.manual_seed(0)
    model = TwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    model.eval()
    return model


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 32, 4, 4, generator=generator)
    pe = torch.randn(1, 32, 4, 4, generator=generator)
    tokens = torch.randn(1, 7, 32, generator=generator)
    return image, pe, tokens


def assert_same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_repeated_prompts_on_one_image_give_the_fresh_numbers() -> None:
    model = transformer()
    fresh = copy.deepcopy(model)
    image, pe, tokens = inputs(0)
    with torch.inference_mode():
        model(image, pe, tokens)
        remembered = model.layers[0]._image_side_memo
        assert remembered is not None
        assert model.layers[1]._image_side_memo is None  # its image tokens depend on the prompt
        for seed in (1, 2):
            other_tokens = inputs(seed)[2]
            assert_same(model(image, pe, other_tokens), fresh(image, pe, other_tokens))
            assert model.layers[0]._image_side_memo is remembered  # reused, not recomputed
            fresh.layers[0]._image_side_memo = None


def test_the_memo_follows_the_image_the_weights_and_in_place_changes() -> None:
    model = transformer()
    image, pe, tokens = inputs(0)
    with torch.no_grad():
        model(image, pe, tokens)
        other_image = inputs(3)[0]
        expected = copy.deepcopy(model)
        expected.layers[0]._image_side_memo = None
        assert_same(model(other_image, pe, tokens), expected(other_image, pe, tokens))

        image.mul_(2)  # the caller reuses its tensor: the remembered copy no longer matches
        expected.layers[0]._image_side_memo = None
        assert_same(model(image, pe, tokens), expected(image, pe, tokens))

        model.layers[0].cross_attn_token_to_image.k_proj.weight.mul_(0.5)  # weights change in place
        expected = copy.deepcopy(model)
        expected.layers[0]._image_side_memo = None
        assert_same(model(image, pe, tokens), expected(image, pe, tokens))


def test_no_memo_with_autograd() -> None:
    model = transformer()
    image, pe, tokens = inputs(0)
    queries, keys = model(image, pe, tokens)
    assert model.layers[0]._image_side_memo is None
    (queries.sum() + keys.sum()).backward()
    assert model.layers[0].cross_attn_token_to_image.k_proj.weight.grad is not None


def test_a_block_told_not_to_remember_does_not() -> None:
    model = transformer()
    model.layers[0].remember_image_side = False
    image, pe, tokens = inputs(0)
    with torch.inference_mode():
        model(image, pe, tokens)
    assert model.layers[0]._image_side_memo is None
