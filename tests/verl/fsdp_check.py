"""Run by test_actor.py in a fresh process: verl's ``apply_fsdp2`` on the tiny DVE model, on a one-process gloo
group on the CPU, with verl's bf16 mixed-precision policy; prints one JSON line of what it saw.

    python -m tests.verl.fsdp_check CHECKPOINT PORT        # one line for verl's patched apply_fsdp2, one unpatched
"""

import json
import os
import sys

import torch


def main() -> None:
    checkpoint, port = sys.argv[1], sys.argv[2]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    for mode in ("patched", "unpatched"):
        check(checkpoint, mode)
    torch.distributed.destroy_process_group()


def check(checkpoint: str, mode: str) -> None:
    """Wrap a fresh tiny model with verl's apply_fsdp2 (``patched``: as the plugin leaves it; ``unpatched``: verl's
    own function), run a forward and backward with two images, and print what the DVE layers saw."""
    import verl.workers.engine.fsdp.transformer_impl as engine
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    import skinflow.verl.plugin  # noqa: F401  (what verl's plugin loading / external_lib does in every worker)
    from skinflow.model import load_pretrained
    from skinflow.model.dve import DVELinear
    from skinflow.model.processor import load_processor
    from tests.verl.images import prompt_inputs

    apply_fsdp2 = engine.apply_fsdp2 if mode == "patched" else engine.apply_fsdp2.__wrapped__
    model = load_pretrained(checkpoint).train()
    processor = load_processor(checkpoint)
    seen, qkv = {}, {}

    def record(module, args) -> None:
        seen.setdefault(module._test_name, {"param": str(module.dft_weight.dtype), "input": str(args[0].dtype)})

    def record_qkv(module, args) -> None:
        qkv.setdefault("dtype", str(module.weight.dtype))

    for name, module in model.named_modules():
        if isinstance(module, DVELinear):
            module._test_name = name
            module.register_forward_pre_hook(record)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=True)
    mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",))
    apply_fsdp2(model, {"mesh": mesh, "mp_policy": policy, "offload_policy": None, "reshard_after_forward": True},
                {"wrap_policy": {}})
    model.model.visual.blocks[0].attn.qkv.register_forward_pre_hook(record_qkv)
    inputs = prompt_inputs(processor, 2)
    model(**inputs).logits.float().mean().backward()
    dve = [(name, p) for name, p in model.named_parameters() if "dft_weight" in name]
    grads = {name: (str(p.grad.dtype), float(p.grad.full_tensor().abs().sum())) for name, p in dve}
    # no_grad forwards before and after an update: the bases must follow the parameters (no stale basis cache)
    model.eval()
    with torch.no_grad():
        before = model(**inputs).logits.float()
        for _, p in dve:
            p.add_(1e-2 * torch.sign(p.grad))
        after = model(**inputs).logits.float()
    print(json.dumps({"seen": seen, "qkv": qkv.get("dtype"), "grads": grads,
                      "changed": float((after - before).abs().max()),
                      "units": sum(type(m).__name__.startswith("FSDPDVELinear") for m in model.modules()),
                      "mode": mode}))


if __name__ == "__main__":
    main()
