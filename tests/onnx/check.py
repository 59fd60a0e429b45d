"""Checks an ONNX model netc exported: ONNX's own checker (full check, with shape inference),
then ONNX Runtime on the inputs `netc predict --outputs` saved, compared with netc's outputs.
Prints one JSON line: the largest absolute difference and how many predicted classes differ.

Usage: check.py MODEL.onnx OUTPUTS.safetensors"""
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime


def read_safetensors(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    return {name: np.frombuffer(data[info["data_offsets"][0]:info["data_offsets"][1]], np.float32)
            .reshape(info["shape"]) for name, info in header.items() if name != "__metadata__"}


model_path, outputs_path = sys.argv[1], sys.argv[2]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
saved = read_safetensors(outputs_path)
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
[input_info] = session.get_inputs()
[got] = session.run(None, {input_info.name: saved["input"]})
wanted = saved["output"]
assert got.shape == wanted.shape, (got.shape, wanted.shape)
classes = got.reshape(len(got), -1)
different = int((classes.argmax(1) != wanted.reshape(len(wanted), -1).argmax(1)).sum()) if classes.shape[1] > 1 else 0
print(json.dumps({"max_abs_diff": float(np.abs(got - wanted).max()), "classes_differ": different,
                  "examples": len(got), "input": input_info.name, "output": session.get_outputs()[0].name}))
