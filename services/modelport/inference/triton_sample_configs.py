"""config.pbtxt of the Triton-example equivalents (see triton_samples).

Names, tensors and scheduling are those of Triton's example repository; only
the platform differs (TorchScript), and the ensemble and extras are modelport's.
"""

ADD_SUB = """\
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: {type} dims: [ 16 ] },
  { name: "INPUT1" data_type: {type} dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: {type} dims: [ 16 ] },
  { name: "OUTPUT1" data_type: {type} dims: [ 16 ] }
]
"""


def _add_sub(name: str, data_type: str) -> str:
    return ADD_SUB.replace("{name}", name).replace("{type}", data_type)


SIMPLE = _add_sub("simple", "TYPE_INT32")
SIMPLE_INT8 = _add_sub("simple_int8", "TYPE_INT8")
SIMPLE_STRING = _add_sub("simple_string", "TYPE_STRING")

SIMPLE_IDENTITY = """\
name: "simple_identity"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""

SIMPLE_SEQUENCE = """\
name: "simple_sequence"
platform: "pytorch_libtorch"
max_batch_size: 8
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""

SIMPLE_DYNA_SEQUENCE = """\
name: "simple_dyna_sequence"
platform: "pytorch_libtorch"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

STRING_DYNA_SEQUENCE = """\
name: "simple_string_dyna_sequence"
platform: "pytorch_libtorch"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 64 max_queue_delay_microseconds: 1000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
  ]
  state [ {
    input_name: "ACC" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" }
  } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

DENSENET = """\
name: "densenet_onnx"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ {
  name: "data_0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ]
  reshape { shape: [ 1, 3, 224, 224 ] }
} ]
output [ {
  name: "fc6_1" data_type: TYPE_FP32 dims: [ 1000 ]
  reshape { shape: [ 1, 1000, 1, 1 ] }
  label_filename: "densenet_labels.txt"
} ]
"""

INCEPTION = """\
name: "inception_onnx"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ {
  name: "input:0" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 299, 299, 3 ]
  reshape { shape: [ 1, 299, 299, 3 ] }
} ]
output [ {
  name: "InceptionV3/Predictions/Softmax:0" data_type: TYPE_FP32 dims: [ 1001 ]
  reshape { shape: [ 1, 1001 ] }
  label_filename: "inception_labels.txt"
} ]
"""

REPEAT_INT32 = """\
name: "repeat_int32"
platform: "pytorch_libtorch"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"""

IMAGE_PREPROCESS = """\
name: "image_preprocess"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 299, 299, 3 ] } ]
dynamic_batching { }
"""

INCEPTION_BATCHED = """\
name: "inception_batched"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 299, 299, 3 ] } ]
output [ {
  name: "scores" data_type: TYPE_FP32 dims: [ 1001 ] label_filename: "inception_labels.txt"
} ]
dynamic_batching { }
"""

ENSEMBLE = """\
name: "preprocess_inception_ensemble"
platform: "ensemble"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ {
  name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1001 ] label_filename: "inception_labels.txt"
} ]
ensemble_scheduling {
  step [
    {
      model_name: "image_preprocess" model_version: -1
      input_map { key: "INPUT" value: "INPUT" }
      output_map { key: "OUTPUT" value: "preprocessed_image" }
    },
    {
      model_name: "inception_batched" model_version: -1
      input_map { key: "input" value: "preprocessed_image" }
      output_map { key: "scores" value: "OUTPUT" }
    }
  ]
}
"""

IDENTITY_INT32 = """\
name: "custom_identity_int32"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
dynamic_batching { }
"""
