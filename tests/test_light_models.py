"""Real architectures from the onnx wheel (fake weights): every Conv/FC runs int8, no FakeQuantize left unfused.

The expected layer counts are NNCF 3.4's on the same IRs (measured with benchmarks/compare.py): NNCF runs every one
of these layers in int8 too, so matching the count means no layer is int8 in NNCF's model and float in ours.
"""

import pytest

import ovptq

NNCF_INT8_LAYERS = {"light_resnet50": 54, "light_squeezenet": 26, "light_inception_v1": 56,
                    "light_densenet121": 121}


@pytest.mark.parametrize("name", sorted(NNCF_INT8_LAYERS))
def test_every_linear_layer_runs_int8(name):
    from models import get_model
    spec = get_model(name)
    int8 = ovptq.quantize(spec.xml_path(), ovptq.Dataset(spec.calibration_items(3)))
    report = ovptq.inspect(int8)
    assert len(report.linear) == NNCF_INT8_LAYERS[name]
    assert len(report.int8_linear) == NNCF_INT8_LAYERS[name], str(report)
    assert report.standalone_fake_quantize == []
