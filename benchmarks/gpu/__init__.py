"""GPU benchmark: the kit's 7B recipe and serving engine against a faithful lab, on a saved random CodeLlama-7B-shaped model.

    python -m benchmarks.gpu                                  # every section on a GPU (benchmarks/gpu_device.sh plans a lent one)
    python -m benchmarks.gpu --sections train --only lab:,shipped --cap both
    python -m benchmarks.gpu --tiny                           # the same code on CPU at a tiny shape (what the tests run)

Sections (`--sections`, each result written to `--out` as soon as it is measured, so a run cut off keeps what it had):
- **train**: examples/s, peak memory, MFU and whether it fits an L4, per setup, under an L4's usable memory (22 GiB,
  `torch.cuda.set_per_process_memory_fraction`) and/or with the whole GPU (`--cap on|off|both`).
  - *The lab's arm runs as the lab ran it*: 8-bit through `from_pretrained(..., dtype=float16)`,
    `prepare_model_for_kbit_training` (fp32 norms, embeddings and lm_head; checkpointing on), LoRA r16/alpha16/
    dropout 0.05 on q/k/v/o, and `transformers.Trainer` itself with the lab's `TrainingArguments` (fp16 autocast and a
    gradient scaler, 32 x 4 per step, adamw_torch, group_by_length, DataCollatorForSeq2Seq padding to a multiple of 8,
    labels = input_ids, 4 loader workers). Its evaluation (loss on the 10% split, batch 8) and checkpoint save are
    timed on the last step and extrapolated to the lab's 7,858 rows, twice each (steps 40 and 80). On one GPU: the
    lab's `device_map="auto"` over two L4s runs them one after the other (about one L4's throughput).
  - *The kit's arm is what ships*: `trainer.modeling.load_model` + `attach_lora` + `trainer.train.train` (packing,
    answer-only loss, accumulation to 128 examples), with the held-out loss the kit computes every 20 steps.
  - Step 1 warms up (kernels, allocator, loader workers) and is not timed.
- **generation**: the kit's evaluation (`trainer.evaluate.generate`: 200 rows x 100 new tokens, batch 32) on the
  shipped recipe with its adapter, which a run does three times (base check, tuned held-out, tuned training rows).
- **merge**: the adapter merged into the base in full precision and the 7B saved.
- **serve**: the serving engine (`serving.engine.Engine`, transformers' continuous batching) at 7B shape, bf16:
  requests/s and p50/p95 latency at concurrency 1, 8 and 32, batched (32) vs batch size 1. The engine alone, no HTTP.
- **resume**: a run interrupted after a checkpoint and resumed gives the same adapter as an uninterrupted one, with
  LoRA dropout on; the same resume with the CUDA random state withheld shows the check can fail.
- **kit**: the kit's own training job (`python -m trainer.task`, a Vertex CustomJob's entrypoint) on the embedded
  default with a 4-bit base, every stage on the GPU (quantized load, training, evaluation, merge, report, the NVML
  resource timeline), then its merged model answering through the serving engine: the product's GPU path, not parts.
- **profile**: the operators that take the shipped recipe's timed step, by self time on the device (torch.profiler),
  for when a target is missed.

Projection to L4 machines (stated in the output, `projection_model`): compute-bound parts (training steps, loss
evaluation) scale with dense fp16/bf16 peak (L4 121 TFLOPS) at the optimistic end and with memory bandwidth (L4 300
GB/s) at the pessimistic end; generation (decoding) scales with bandwidth at both ends; merge and save are disk-bound
and not scaled. Two L4s: the kit is data-parallel (1.9x one for training); the lab's layer split is one L4's speed.
Dollars from common/catalog.yaml.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
