"""The triton backend against the float64 reference (docs/design.md §4), its registration, and the GPU build.

Without CUDA the kernels run on the CPU under the Triton interpreter: this module sets
``TRITON_INTERPRET=1`` before the first kernel is defined (the backend defines its kernels on first
use, so importing fdlinear earlier is fine). With CUDA, the same tests run on the GPU, plus bf16 and
bigger shapes.
"""

import os

import torch

from tests import REPO

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import triton  # noqa: E402

from fdlinear import FDLinear  # noqa: E402
from fdlinear.backends import default_backend, get_op, resolve_backend  # noqa: E402
from fdlinear.backends.triton import configs, op  # noqa: E402
from fdlinear.backends.triton.schedule import choose_form, row_tiles  # noqa: E402
from fdlinear.functional import fdlinear  # noqa: E402
from fdlinear.segments import sample_of_rows  # noqa: E402
from tests.fdlinear.op_cases import GRAD_NAMES, assert_matches_reference, make_case, reference_op, run_op  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
ROOT = str(REPO)

# (sample lengths, d_in, d_out, K): ragged with empty and length-1 samples; dims that are not multiples
# of the interpreter's 16-wide blocks (37 -> 19 spans 3 x 2 tiles) nor of the GPU blocks.
SMALL_CASES = {
    "ragged_37x19_k3": ([5, 0, 1, 20, 3], 37, 19, 3),
    "odd_13x7_k4": ([1, 0, 4, 9, 0], 13, 7, 4),
}
GPU_CASES = {
    "ragged_200x300_k4": ([300, 0, 1, 700, 129], 200, 300, 4),
    "mlp_k8": ([1, 517, 0, 64], 3420 // 10, 1280 // 10, 8),
}


def triton_op(form: str):
    return functools.partial(torch.ops.fdlinear.triton_forward, form=form)


@pytest.mark.parametrize("form", ["mix", "expand"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case_name", SMALL_CASES)
def test_matches_reference(case_name, dtype, form):
    seqlens, d_in, d_out, num_bases = SMALL_CASES[case_name]
    case = make_case(seqlens, d_in, d_out, num_bases, bias=case_name.startswith("ragged"), seed=11)
    assert_matches_reference(triton_op(form), case, dtype, DEVICE)


@needs_cuda
@pytest.mark.parametrize("form", ["mix", "expand"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case_name", list(SMALL_CASES) + list(GPU_CASES))
def test_matches_reference_on_gpu(case_name, dtype, form):
    seqlens, d_in, d_out, num_bases = {**SMALL_CASES, **GPU_CASES}[case_name]
    case = make_case(seqlens, d_in, d_out, num_bases, seed=12)
    assert_matches_reference(triton_op(form), case, dtype, "cuda")


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_float64_is_exact(form):
    """fp64 inputs accumulate in fp64: the kernels agree with the reference to rounding."""
    case = make_case([5, 0, 1, 20, 3], 37, 19, 3, seed=13)
    y, grads = run_op(triton_op(form), case, torch.float64, DEVICE)
    exact_y, exact_grads = run_op(reference_op, case, torch.float64)
    torch.testing.assert_close(y, exact_y, rtol=1e-12, atol=1e-12)
    for name, got, want in zip(GRAD_NAMES, grads, exact_grads):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11, msg=f"d{name}")


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_gradcheck_float64(form):
    case = make_case([3, 0, 1, 4], 5, 4, 2, seed=14)
    inputs = [t.to(DEVICE) for t in case.tensors(torch.float64)]
    cu = case.cu_seqlens.to(DEVICE)

    def fn(*tensors):
        return torch.ops.fdlinear.triton_forward(*tensors, cu, form)

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("needs", [(True, False, False, False, False, False), (False, True, False, False, True, False),
                                   (False, False, True, True, False, True)])
@pytest.mark.parametrize("form", ["mix", "expand"])
def test_partial_gradients(form, needs):
    """Only the requested gradients are computed; each equals the full computation's."""
    case = make_case([4, 0, 7], 13, 7, 3, seed=15)
    x, bases, a_in, a_out, beta, bias = (t.detach().to(DEVICE) for t in case.tensors(torch.float64))
    cu, grad_y = case.cu_seqlens.to(DEVICE), case.grad_y.to(DEVICE)
    full = op.backward(grad_y, x, bases, a_in, a_out, beta, cu, (True,) * 6, form)
    partial = op.backward(grad_y, x, bases, a_in, a_out, beta, cu, needs, form)
    for name, need, want, got in zip(GRAD_NAMES, needs, full, partial):
        if need:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"d{name}")
        else:
            assert got is None, f"d{name} computed though not needed"


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_nan_stays_in_its_sample(form):
    """A NaN in one sample's tokens reaches no other sample's output or per-sample gradient."""
    case = make_case([3, 6, 1, 5], 13, 7, 3, seed=16)
    case.x[4, 2] = float("nan")  # row 4 belongs to sample 1
    y, grads = run_op(triton_op(form), case, torch.float32, DEVICE)
    exact_y, exact_grads = run_op(reference_op, case, torch.float64)
    others = torch.tensor([True, False, True, True])
    other_rows = torch.repeat_interleave(others, torch.tensor([3, 6, 1, 5]))
    assert torch.isnan(y[~other_rows]).any()
    torch.testing.assert_close(y[other_rows], exact_y[other_rows], rtol=1e-4, atol=1e-4)
    dx, _, da_in, da_out, dbeta, _ = grads
    torch.testing.assert_close(dx[other_rows], exact_grads[0][other_rows], rtol=1e-4, atol=1e-4)
    for name, got, want in (("a_in", da_in, exact_grads[2]), ("a_out", da_out, exact_grads[3]),
                            ("beta", dbeta, exact_grads[4])):
        torch.testing.assert_close(got[others], want[others], rtol=1e-4, atol=1e-4, msg=f"d{name}")


@pytest.mark.parametrize("seqlens", [[], [0, 0]])
def test_no_rows(seqlens):
    case = make_case(seqlens, 13, 7, 3, seed=17)
    y, grads = run_op(triton_op("auto"), case, torch.float32, DEVICE)
    assert y.shape == (0, 7)
    assert grads[1].abs().sum() == 0 and grads[1].shape == (3, 7, 13)
    assert grads[2].shape == (len(seqlens), 13) and grads[4].shape == (len(seqlens), 3)


def test_auto_form_follows_mean_length():
    assert choose_form(num_rows=7, num_samples=7, num_bases=4) == "expand"
    assert choose_form(num_rows=4096, num_samples=4, num_bases=4) == "mix"
    case = make_case([1] * 6, 13, 7, 4, seed=18)  # per-row samples: "auto" runs the expand form
    auto_y, auto_grads = run_op(triton_op("auto"), case, torch.float64, DEVICE)
    expand_y, expand_grads = run_op(triton_op("expand"), case, torch.float64, DEVICE)
    torch.testing.assert_close(auto_y, expand_y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="form"):
        op.forward(*case.tensors(torch.float32, DEVICE, requires_grad=False), case.cu_seqlens.to(DEVICE), form="dense")


def test_row_tiles_cover_each_sample_exactly():
    seqlens = [5, 0, 1, 20, 3, 0]
    cu = torch.tensor([0, 5, 5, 6, 26, 29, 29])
    schedule = row_tiles(cu, 29, block_m=4)
    valid = schedule.tile_sample >= 0
    assert schedule.num_tiles == 29 // 4 + len(seqlens)
    assert valid.sum() == 2 + 1 + 5 + 1 and not valid[int(valid.sum()):].any()  # valid tiles first
    covered = torch.zeros(29, dtype=torch.int64)
    for sample, start in zip(schedule.tile_sample[valid].tolist(), schedule.tile_start[valid].tolist()):
        end = min(start + 4, int(cu[sample + 1]))
        assert int(cu[sample]) <= start < end
        covered[start:end] += 1
    assert (covered == 1).all()
    assert sample_of_rows(cu, 29).tolist() == [0] * 5 + [2] + [3] * 20 + [4] * 3


def test_gpu_configs_are_pruned_to_fit():
    """Shared memory (mix form: K pipelined basis tiles) and registers (dB accumulator) bound the candidates."""
    candidates = configs.matmul_configs(interpreted=False)
    x_bf16 = {"x_ptr": torch.empty(0, dtype=torch.bfloat16)}
    k4 = configs.prune_by_shared_memory(candidates, x_bf16, NUM_BASES=4, BLOCK_M=128)
    k8 = configs.prune_by_shared_memory(candidates, x_bf16, NUM_BASES=8, BLOCK_M=128)
    assert 0 < len(k8) < len(k4) <= len(candidates)
    wide = triton.Config({"BLOCK_N": 128, "BLOCK_R": 64, "GROUP_M": 8}, num_warps=8, num_stages=3)
    assert wide in k4 and wide not in k8
    grads = configs.basis_grad_configs(interpreted=False)
    assert len(configs.prune_by_registers(grads, x_bf16, NUM_BASES_POW2=8)) < len(
        configs.prune_by_registers(grads, x_bf16, NUM_BASES_POW2=1))
    for config in configs.prune_by_registers(grads, x_bf16, NUM_BASES_POW2=4):
        assert 4 * config.kwargs["BLOCK_O"] * config.kwargs["BLOCK_I"] <= 64 * 32 * config.num_warps


def test_autotuning_can_be_turned_off(monkeypatch):
    """FDLINEAR_TRITON_AUTOTUNE=0: each kernel keeps only the first candidate its pruning allows (one compilation per kernel variant)."""
    candidates = configs.matmul_configs(interpreted=False)
    grads = configs.basis_grad_configs(interpreted=False)
    x_bf16 = {"x_ptr": torch.empty(0, dtype=torch.bfloat16)}
    prunes = [
        lambda: configs.prune_by_shared_memory(candidates, x_bf16, NUM_BASES=8, BLOCK_M=128),
        lambda: configs.prune_expanded(candidates, x_bf16, BLOCK_M=128),
        lambda: configs.prune_by_registers(grads, x_bf16, NUM_BASES_POW2=4),
        lambda: configs.prune_expanded_basis_grad(grads, x_bf16),
    ]
    tuned = [prune() for prune in prunes]
    assert all(len(kept) > 1 for kept in tuned)
    monkeypatch.setenv(configs.AUTOTUNE_ENV, "0")
    assert not configs.autotuning()
    assert [prune() for prune in prunes] == [kept[:1] for kept in tuned]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_every_kernel_keeps_a_config_within_shared_memory(dtype):
    """Whatever the dtype, K or BLOCK_M, each kernel's pruning keeps at least one config whose estimate fits."""
    named = {"x_ptr": torch.empty(0, dtype=dtype)}
    element, accumulator = named["x_ptr"].element_size(), 8 if dtype == torch.float64 else 4
    candidates, grads = configs.matmul_configs(interpreted=False), configs.basis_grad_configs(interpreted=False)
    for num_bases in (1, 3, 4, 8, 16):
        for block_m in (16, 32, 64, 128):
            kept = configs.prune_by_shared_memory(candidates, named, NUM_BASES=num_bases, BLOCK_M=block_m)
            assert configs.mixed_matmul_shared_bytes(kept[0], element, accumulator, num_bases, block_m) <= (
                configs.SHARED_BUDGET), (num_bases, block_m)
        kept = configs.prune_by_registers(grads, named, NUM_BASES_POW2=triton.next_power_of_2(num_bases))
        assert configs.weight_grad_shared_bytes(kept[0], element, accumulator, gathers=False) <= configs.SHARED_BUDGET
    kept = configs.prune_expanded(candidates, named, BLOCK_M=128)
    assert configs.expanded_matmul_shared_bytes(kept[0], element, accumulator, 128) <= configs.SHARED_BUDGET
    kept = configs.prune_expanded_basis_grad(grads, named)
    assert configs.weight_grad_shared_bytes(kept[0], element, accumulator, gathers=True) <= configs.SHARED_BUDGET


@contextlib.contextmanager
def only_candidate(index: int):
    """Every kernel runs its ``index``-th GPU candidate config (the tuner's choice set to it), whatever the device."""
    from fdlinear.backends.triton import grad_kernels, matmul_kernels

    kernels = {
        matmul_kernels.mixed_matmul_kernel: configs.matmul_configs(interpreted=False),
        matmul_kernels.expanded_matmul_kernel: configs.matmul_configs(interpreted=False),
        grad_kernels.mixed_weight_grad_kernel: configs.basis_grad_configs(interpreted=False),
        grad_kernels.expanded_basis_grad_kernel: configs.basis_grad_configs(interpreted=False),
    }
    saved = {kernel: (kernel.configs, dict(kernel.cache)) for kernel in kernels}
    try:
        for kernel, candidates in kernels.items():
            kernel.configs, kernel.cache, kernel.best_config = [candidates[index]], {}, None
        yield
        for kernel, candidates in kernels.items():  # each kernel ran, with that config
            assert kernel.best_config is candidates[index], kernel.base_fn.__name__
    finally:
        for kernel, (candidates, cache) in saved.items():
            kernel.configs, kernel.cache = candidates, cache


@pytest.mark.parametrize("index", range(len(configs.matmul_configs(interpreted=False))))
def test_every_gpu_candidate_config_is_exact(index):
    """Each block shape the autotuner may pick computes the op (masking at odd sizes included). On a CPU the
    interpreter runs the GPU block shapes on a small case; on a GPU, a bf16 case spanning several tiles."""
    if CUDA:
        case, dtype = make_case([300, 0, 1, 170], 200, 150, 4, seed=21), torch.bfloat16
    else:
        case, dtype = make_case([5, 0, 1, 20, 3], 37, 19, 3, seed=21), torch.float32
    with only_candidate(index):
        for form in ("mix", "expand"):
            assert_matches_reference(triton_op(form), case, dtype, DEVICE)


def test_opcheck():
    case = make_case([3, 0, 1, 5], 13, 7, 3, seed=19)
    args = [*case.tensors(torch.float32, DEVICE), case.cu_seqlens.to(DEVICE), "mix"]
    torch.library.opcheck(torch.ops.fdlinear.triton_forward.default, args)
    no_bias = [*case.tensors(torch.float32, DEVICE)[:5], None, case.cu_seqlens.to(DEVICE), "expand"]
    torch.library.opcheck(torch.ops.fdlinear.triton_forward.default, no_bias)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.float32, DEVICE, requires_grad=False)
    backward_args = [case.grad_y.float().to(DEVICE), x, bases, a_in, a_out, beta, bias, case.cu_seqlens.to(DEVICE),
                     [True, True, False, True, True, True], "mix"]
    torch.library.opcheck(torch.ops.fdlinear.triton_backward.default, backward_args)


def test_backend_selection():
    assert default_backend(torch.device("cuda")) == "triton"
    assert resolve_backend("triton", torch.device(DEVICE)) == "triton"


def _randomised_module(backend: str, dtype: torch.dtype = torch.float64) -> FDLinear:
    torch.manual_seed(20)
    layer = FDLinear(13, 7, num_bases=3, backend=backend, dtype=dtype, device=DEVICE)
    with torch.no_grad():
        for name, param in layer.KSM_Global.named_parameters():
            if name.endswith(("weight", "bias")) and "norm" not in name:
                param.normal_(0, 0.5)
    return layer


def test_fdlinear_module_end_to_end():
    triton_layer = _randomised_module("triton")
    reference_layer = _randomised_module("reference")
    x = torch.randn(12, 13, dtype=torch.float64, device=DEVICE)
    cu = torch.tensor([0, 4, 4, 5, 12], device=DEVICE)
    for inputs in ((x, cu), (x.view(3, 4, 13), None), (x, None)):  # packed, batched, per-row
        y = triton_layer(*inputs)
        expected = reference_layer(*inputs)
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
        y.square().sum().backward()
        expected.square().sum().backward()
        for (name, got), want in zip(triton_layer.named_parameters(), reference_layer.parameters()):
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12, msg=name)
            got.grad, want.grad = None, None


def test_tile_schedule_is_built_once_per_boundaries_tensor(monkeypatch):
    """Layers sharing one cu_seqlens (as in the DVE) build the mix-form schedule once for forward and dX."""
    from fdlinear.backends.triton import launch

    built = []
    monkeypatch.setattr(launch, "row_tiles", lambda *args: built.append(args) or row_tiles(*args))
    layers = [_randomised_module("triton") for _ in range(2)]
    x = torch.randn(12, 13, dtype=torch.float64, device=DEVICE, requires_grad=True)
    cu = torch.tensor([0, 4, 4, 5, 12], device=DEVICE)
    (layers[0](x, cu).sum() + layers[1](x, cu).sum()).backward()
    assert len(built) == 1
    cu.add_(0)  # changed in place: built again
    layers[0](x, cu)
    assert len(built) == 2


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_eager_path_equals_the_custom_op_bitwise(form):
    op = get_op("triton")
    case = make_case([5, 0, 1, 9], 11, 7, 3)
    eager_y, eager_grads = run_op(lambda *args: op.eager.apply(*args, form), case, torch.float32, DEVICE)
    custom_y, custom_grads = run_op(op.custom_op, case, torch.float32, DEVICE, form=form)
    assert torch.equal(eager_y, custom_y)
    assert all(torch.equal(e, c) for e, c in zip(eager_grads, custom_grads))


def test_from_linear_is_exact_at_init():
    torch.manual_seed(21)
    linear = torch.nn.Linear(37, 19, dtype=torch.float64, device=DEVICE)
    layer = FDLinear.from_linear(linear, num_bases=4, backend="triton")
    x = torch.randn(2, 9, 37, dtype=torch.float64, device=DEVICE)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-12, atol=1e-12)


def test_functional_entry_dispatches_to_triton():
    case = make_case([2, 5], 13, 7, 3, seed=22)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.float64, DEVICE, requires_grad=False)
    y = fdlinear(x, bases, a_in, a_out, beta, bias, case.cu_seqlens.to(DEVICE), backend="triton")
    expected = reference_op(x.cpu(), bases.cpu(), a_in.cpu(), a_out.cpu(), beta.cpu(), bias.cpu(), case.cu_seqlens)
    torch.testing.assert_close(y.cpu(), expected, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs():
    case = make_case([3, 0, 6], 13, 7, 3, seed=23)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.float64, DEVICE, requires_grad=False)
    strided = (x.t().contiguous().t(), bases.transpose(1, 2).contiguous().transpose(1, 2), a_in.t().contiguous().t())
    assert not any(t.is_contiguous() for t in strided)
    cu = case.cu_seqlens.to(DEVICE)
    for form in ("mix", "expand"):
        y = torch.ops.fdlinear.triton_forward(*strided, a_out, beta, bias, cu, form)
        expected = torch.ops.fdlinear.triton_forward(x, bases, a_in, a_out, beta, bias, cu, form)
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_op_is_one_opaque_node_for_dynamo():
    """fullgraph capture of packed input: the op appears as a single call in the graph."""
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    layer = _randomised_module("triton", torch.float32)
    x, cu = torch.randn(12, 13, device=DEVICE), torch.tensor([0, 4, 4, 5, 12], device=DEVICE)
    compiled = torch.compile(layer, fullgraph=True, backend=record)
    torch.testing.assert_close(compiled(x, cu), layer(x, cu), rtol=0, atol=0)
    targets = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.fdlinear.triton_forward.default) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    """A module using the op compiles without graph breaks, forward and backward (inductor: ~20 s on a CPU)."""
    layer = _randomised_module("triton", torch.float32)
    x = torch.randn(3, 4, 13, device=DEVICE, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    y = compiled(x)
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    compiled_grads = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad(set_to_none=True)
    layer(x).square().sum().backward()
    for got, want in zip(compiled_grads, [x.grad] + [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cpu_tensor_without_interpreter_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = _run_python(
        """
        import torch, fdlinear
        x = torch.randn(4, 5)
        try:
            fdlinear.fdlinear(x, torch.randn(2, 3, 5), torch.ones(4, 5), torch.ones(4, 3), torch.ones(4, 2),
                              backend="triton")
        except RuntimeError as error:
            print("RuntimeError:", error)
        """,
        env,
    )
    assert "RuntimeError: the triton backend runs on CUDA tensors" in result.stdout, result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout


def test_interpreter_requested_too_late_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = _run_python(
        """
        import os, triton, torch, fdlinear
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            fdlinear.fdlinear(torch.randn(4, 5), torch.randn(2, 3, 5), torch.ones(4, 5), torch.ones(4, 3),
                              torch.ones(4, 2), backend="triton")
        except RuntimeError as error:
            print("RuntimeError:", error)
        """,
        env,
    )
    assert "RuntimeError: TRITON_INTERPRET=1 was set after triton had been imported" in result.stdout, result.stderr


def _has_cuda_compiler() -> bool:
    return "nvidia" in triton.backends.backends


@pytest.mark.skipif(not _has_cuda_compiler(), reason="triton has no CUDA compiler backend")
def test_shared_memory_of_the_compiled_kernels():
    """sm_90 compilations (no GPU; they catch what the interpreter accepts but the compiler does not): the config
    each kernel runs first fits in an H100's shared memory for bf16, fp32 and fp64 with K = 3 and 8, the estimates
    the pruning uses bound every candidate's compiled size, and bf16 dots run on the tensor cores."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fdlinear", "backends", "sm90_shared_memory.py")], env=env,
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(row["kind"] == "first" for row in rows) == 30 and sum(row["kind"] == "every" for row in rows) == 32
    for row in rows:
        if row["kind"] == "first":
            assert row["shared"] <= configs.MAX_SHARED_BYTES, row
            assert row["tensor_cores"] or row["dtype"] != "torch.bfloat16", row
        else:
            assert row["shared"] <= row["estimate"], row
            assert row["tensor_cores"], row
