import pytest

from probekit.core.errors import ProbekitError
from probekit.models import LayerInfo, select_layers

LAYERS = [
    LayerInfo("down_blocks.0.resnets.0", "down", 0, 8, "16x16"),
    LayerInfo("down_blocks.0", "down", 1, 8, "8x8"),
    LayerInfo("mid_block.resnets.1", "mid", 2, 16, "8x8", aliases=("mid_block",)),
    LayerInfo("up_blocks.0.resnets.0", "up", 3, 16, "8x8"),
    LayerInfo("up_blocks.0.resnets.1", "up", 4, 16, "8x8"),
]


def names(spec):
    return select_layers(LAYERS, spec)


def test_none_and_all_select_every_layer_in_forward_order():
    expected = [layer.name for layer in LAYERS]
    assert names(None) == names("all") == expected
    assert select_layers(list(reversed(LAYERS)), None) == expected


def test_exact_alias_glob_index_and_range():
    assert names("mid_block") == ["mid_block.resnets.1"]
    assert names("up_blocks.*") == ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1"]
    assert names("0,-1") == ["down_blocks.0.resnets.0", "up_blocks.0.resnets.1"]
    assert names("1:3") == ["down_blocks.0", "mid_block.resnets.1"]
    assert names(["-1", "up_blocks.0.resnets.1", "mid_block"]) == ["mid_block.resnets.1", "up_blocks.0.resnets.1"]


def test_unknown_name_lists_close_matches():
    with pytest.raises(ProbekitError, match=r"unknown layer 'mid_blok'.*mid_block"):
        names("mid_blok")


@pytest.mark.parametrize(
    "spec, message", [("7", "out of range"), ("-6", "out of range"), ("attn*", "matches no layer"), ("", "empty")]
)
def test_bad_selections_are_refused(spec, message):
    with pytest.raises(ProbekitError, match=message):
        names(spec)
