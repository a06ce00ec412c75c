"""Interoperability and deployment: Caffe Deep Compression import, torchvision checkpoints, class names,
classification, ONNX export and int8 quantization."""

from .caffe import CompressedLayer, decode_caffe_compressed, import_caffe_compressed
from .classes import imagenet_class_names, imagenet_wnids, model_class_names

__all__ = [
    "CompressedLayer",
    "decode_caffe_compressed",
    "imagenet_class_names",
    "imagenet_wnids",
    "import_caffe_compressed",
    "model_class_names",
]
