#!/usr/bin/env bash
# One batched round on the GPU machine: install carried wheels, check packed gradients,
# then Lamina vs TRL on the cases. Logs and JSON land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $(ls .whl/*.whl .whl/*/*.whl 2>/dev/null) 2>&1 | tail -2
python3 -c "import torch, transformers, peft, trl; print(torch.__version__, transformers.__version__, peft.__version__, trl.__version__, torch.cuda.get_device_name())"
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for case in "$@"; do
  echo "=== $case"
  case "$case" in
    check) python3 bench/packed_grad_check.py --family qwen2.5-0.5b; python3 bench/packed_grad_check.py --family llama-3.1-8b ;;
    qwen-lora) python3 bench/sft_throughput.py --model qwen2.5-0.5b --tokens-per-step 32768 --steps 15 --json "$OUT/qwen-lora.json" \
        --trl-variants '[{"use_liger_kernel": true, "gradient_checkpointing": false}, {"use_liger_kernel": true, "gradient_checkpointing": true}]' ;;
    qwen-lora-lamina) python3 bench/sft_throughput.py --model qwen2.5-0.5b --tokens-per-step 32768 --steps 15 --tools lamina --json "$OUT/qwen-lora-lamina.json" ;;
    qwen-full) python3 bench/sft_throughput.py --model qwen2.5-0.5b --method full --tokens-per-step 32768 --steps 15 --json "$OUT/qwen-full.json" \
        --trl-variants '[{"use_liger_kernel": true, "gradient_checkpointing": true}]' ;;
    llama-lora) python3 bench/sft_throughput.py --model llama-3.1-8b --tokens-per-step 8192 --steps 10 --json "$OUT/llama-lora.json" \
        --trl-variants '[{"use_liger_kernel": true, "gradient_checkpointing": true}]' ;;
    llama-lora-lamina) python3 bench/sft_throughput.py --model llama-3.1-8b --tokens-per-step 8192 --steps 10 --tools lamina --json "$OUT/llama-lora-lamina.json" ;;
    dpo-qwen) python3 bench/dpo_throughput.py --model qwen2.5-0.5b --tokens-per-step 32768 --steps 6 --json "$OUT/dpo-qwen2.5-0.5b.json" --trl-variants '[{"gradient_checkpointing": true}, {"gradient_checkpointing": false}]' ;;
    dpo-llama) python3 bench/dpo_throughput.py --model llama-3.1-8b --tokens-per-step 8192 --steps 6 --json "$OUT/dpo-llama-3.1-8b.json" --trl-variants '[{"gradient_checkpointing": true}, {"gradient_checkpointing": false}]' ;;
    grpo-qwen) python3 bench/grpo_throughput.py --model qwen2.5-0.5b --prompts 16 --iterations 4 --json "$OUT/grpo-qwen2.5-0.5b.json" ;;
    grpo-llama-lamina) python3 bench/grpo_throughput.py --model llama-3.1-8b --prompts 16 --iterations 3 --tools lamina --json "$OUT/grpo-llama-lamina.json" ;;
    grpo-llama-trl) python3 bench/grpo_throughput.py --model llama-3.1-8b --prompts 16 --iterations 3 --tools trl --json "$OUT/grpo-llama-trl.json" \
        --trl-variants '[{"gradient_checkpointing": true, "per_device_train_batch_size": 32}, {"gradient_checkpointing": true, "per_device_train_batch_size": 32, "use_transformers_continuous_batching": true}]' ;;
    dist-ws1) python3 bench/distributed_throughput.py --model llama-3.1-8b --method lora --nprocs plain,1 --strategy fsdp \
        --tokens-per-step 8192 --steps 10 --json "$OUT/dist-ws1-llama-lora.json" ;;
    dist-ws1-full) python3 bench/distributed_throughput.py --model qwen2.5-0.5b --method full --nprocs plain,1 --strategy fsdp \
        --tokens-per-step 32768 --steps 10 --json "$OUT/dist-ws1-qwen-full.json" ;;
    --*) python3 bench/sft_throughput.py $case ;;  # a raw argument string for the throughput bench
    *) echo "unknown case $case" ;;
  esac 2>&1 | grep -vE "Warning|warn\(|^\s*$|it/s\]|s/it\]" | tee -a "$OUT/log.txt" | tail -40
done
