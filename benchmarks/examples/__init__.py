"""One runnable example per front end: python -m benchmarks.examples.<name> (pytorch_mobilenet_v2, onnx_ppocr_rec,
openvino_ir, tensorflow_basic_pitch). Each prints FP32 vs INT8 accuracy, INT8 layers and throughput."""
