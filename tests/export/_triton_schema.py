"""The part of Triton's `inference.ModelConfig` (model_config.proto) a bundle writes, built with
descriptor_pb2 so config.pbtxt is parsed strictly: an unknown field or enum value fails, as it
would in tritonserver. Field numbers and enum values follow triton-inference-server/common."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

F = descriptor_pb2.FieldDescriptorProto


def _field(msg: Any, name: str, number: int, ftype: int, *, repeated: bool = False, type_name: str = "") -> None:
    f = msg.field.add(name=name, number=number, type=ftype)
    f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name


def _build() -> Any:
    fd = descriptor_pb2.FileDescriptorProto(name="pt_model_config.proto", package="inference", syntax="proto3")
    dtype = fd.enum_type.add(name="DataType")
    for i, name in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                              "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                              "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        dtype.value.add(name=name, number=i)

    group = fd.message_type.add(name="ModelInstanceGroup")
    kind = group.enum_type.add(name="Kind")
    for i, name in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=name, number=i)
    _field(group, "name", 1, F.TYPE_STRING)
    _field(group, "count", 2, F.TYPE_INT32)
    _field(group, "gpus", 3, F.TYPE_INT32, repeated=True)
    _field(group, "kind", 4, F.TYPE_ENUM, type_name=".inference.ModelInstanceGroup.Kind")

    for message_name, dims_number in (("ModelInput", 4), ("ModelOutput", 3)):
        m = fd.message_type.add(name=message_name)
        _field(m, "name", 1, F.TYPE_STRING)
        _field(m, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
        _field(m, "dims", dims_number, F.TYPE_INT64, repeated=True)

    batching = fd.message_type.add(name="ModelDynamicBatching")
    _field(batching, "preferred_batch_size", 1, F.TYPE_INT32, repeated=True)
    _field(batching, "max_queue_delay_microseconds", 2, F.TYPE_UINT64)

    parameter = fd.message_type.add(name="ModelParameter")
    _field(parameter, "string_value", 1, F.TYPE_STRING)

    config = fd.message_type.add(name="ModelConfig")
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".inference.ModelParameter")
    _field(config, "name", 1, F.TYPE_STRING)
    _field(config, "platform", 2, F.TYPE_STRING)
    _field(config, "max_batch_size", 4, F.TYPE_INT32)
    _field(config, "input", 5, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInput")
    _field(config, "output", 6, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelOutput")
    _field(config, "instance_group", 7, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInstanceGroup")
    _field(config, "default_model_filename", 8, F.TYPE_STRING)
    _field(config, "dynamic_batching", 11, F.TYPE_MESSAGE, type_name=".inference.ModelDynamicBatching")
    _field(config, "parameters", 14, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelConfig.ParametersEntry")
    _field(config, "backend", 17, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _build()


def parse_model_config(text: str) -> Any:
    """Parse config.pbtxt strictly (unknown fields and enum values raise ParseError)."""
    return text_format.Parse(text, ModelConfig())
