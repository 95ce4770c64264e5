"""Export: ONNX graphs, parity checks and the standalone bundle predictor."""
