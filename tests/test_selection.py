"""snjax.selection: the default rule and include / exclude."""

import jax.numpy as jnp
import pytest

from snjax._selection import default_rule, select_paths


@pytest.mark.parametrize(
  'keys, leaf, expected',
  [
    (('Dense_0', 'kernel'), jnp.ones((3, 4)), True),
    (('Conv_0', 'kernel'), jnp.ones((3, 3, 2, 4)), True),
    (('linear', 'w'), jnp.ones((3, 4)), True),
    (('layers', '0', 'weight'), jnp.ones((4, 3)), True),
    (('Dense_0', 'bias'), jnp.ones((4,)), False),
    (('linear', 'b'), jnp.ones((4,)), False),
    (('attn', 'relative_position_bias'), jnp.ones((8, 8)), False),  # a 2-D bias: not a linear map
    (('attn', 'bias_table'), jnp.ones((8, 8)), False),
    (('Embed_0', 'embedding'), jnp.ones((100, 8)), False),
    (('token_embeddings', 'weight'), jnp.ones((100, 8)), False),
    (('pos_embed', 'kernel'), jnp.ones((100, 8)), False),
    (('LayerNorm_0', 'scale'), jnp.ones((8,)), False),
    (('counts',), jnp.ones((3, 3), jnp.int32), False),
    (('fn',), 'not an array', False),
  ],
)
def test_default_rule(keys, leaf, expected):
  assert default_rule(keys, leaf) is expected


def test_exclude_beats_include():
  flat = [(('a', 'kernel'), jnp.ones((2, 2))), (('b', 'kernel'), jnp.ones((2, 2)))]
  assert select_paths(flat, include='kernel', exclude='^a/') == [('b', 'kernel')]


def test_include_of_a_non_array_is_an_error():
  with pytest.raises(ValueError, match=r'act: selected for spectral normalization but is not an array'):
    select_paths([(('act',), 'relu')], include='act')


def test_bad_include_type():
  with pytest.raises(TypeError, match='include must be a regex string or a callable'):
    select_paths([], include=3)
