"""Pretrained checkpoints: Hugging Face safetensors directories in and out.

* `safetensors_io`: read (lazy, tensor by tensor) and write checkpoint directories.
* `hf_decoder`: Llama / Qwen2 / Qwen3 configs and tensors <-> rmjax's NNX decoder and
  reward model (`load_pretrained_decoder`, `load_pretrained_reward_model`; its params as
  shapes for dry runs, `abstract_reward_model`).
* `export`: a trained rmjax reward model -> a HF `*ForSequenceClassification` directory.

Importing this package pulls in flax and safetensors; `rmjax.losses` never imports it.
"""

from rmjax.checkpoints.export import export_reward_model, reward_model_tensors
from rmjax.checkpoints.hf_decoder import (
    SUPPORTED_MODEL_TYPES,
    TensorLayout,
    abstract_reward_model,
    decoder_config_from_hf,
    load_decoder_params,
    load_pretrained_decoder,
    load_pretrained_reward_model,
    tensor_layouts,
)
from rmjax.checkpoints.safetensors_io import (
    CheckpointError,
    SafetensorsTensors,
    open_safetensors,
    read_checkpoint,
    read_config,
    write_checkpoint,
)
