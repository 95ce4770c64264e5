"""`components.pruning.macs`: per-layer MACs and params, counted per sample."""

from __future__ import annotations

from components.config import CNNConfig, DSCNNConfig
from components.modeling.architectures import build_model
from components.pruning.macs import count_macs, layer_report
from tests.helpers_pruning import SHAPE, K


def test_mac_report_counts_conv_and_linear_per_sample():
    model = build_model(CNNConfig(channels=[4], pools=0, head="gap"), SHAPE, K)
    report = {r.name: r for r in layer_report(model, SHAPE)}
    conv, fc = report["body.features.0.0"], report["body.classifier"]
    assert (conv.type, conv.in_channels, conv.out_channels) == ("Conv2d", 1, 4)
    assert conv.macs == 8 * 8 * 4 * 1 * 9 and conv.params == 4 * 9
    assert fc.macs == 4 * K and fc.params == 4 * K + K
    assert count_macs(model, SHAPE) == conv.macs + fc.macs
    dw = layer_report(build_model(DSCNNConfig(stem=4, channels=[6], pools=0), SHAPE, K), SHAPE)[1]
    assert dw.macs == 8 * 8 * 4 * 9  # depthwise: one 3x3 input channel per output channel
