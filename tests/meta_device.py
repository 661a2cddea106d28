"""Run the kit's code on PyTorch's `meta` device, which has shapes and devices but no data: an operation that mixes
a meta tensor with a CPU tensor fails exactly as one mixing a GPU tensor with a CPU tensor fails on a GPU machine.
So a run on `meta` shows, on a machine without a GPU, that the device a run is given reaches every model and tensor.

Where the code legitimately leaves the device (`.item()`, `.cpu()`, copying a checkpoint's tensors into a CPU model),
`MetaExits` returns a stand-in: 0.5 for a float, 1 for an integer, and for a yes/no question the answer that lets
the code go on (no NaN found, some rows valid). It also records the device of every matrix product."""
import collections

import torch
import torch.fx.experimental._config as fx_config
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATRIX_PRODUCTS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.matmul.default,
                   aten.linear.default, aten.convolution.default, aten._scaled_dot_product_flash_attention_for_cpu.default}
PROBLEM_FLAGS = {aten.isnan.default, aten.isinf.default, aten.isposinf.default, aten.isneginf.default}
FINE_FLAGS = {aten.isfinite.default}
FLAG_KEEPING = {aten.any.default, aten.any.dim, aten.any.dims, aten.all.default, aten.all.dim, aten.all.dims,
                aten.bitwise_and.Tensor, aten.logical_and.default, aten.index.Tensor, aten.slice.Tensor, aten.select.int,
                aten.view.default, aten.expand.default, aten.clone.default, aten._to_copy.default}


SCALAR_READS = {aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default}
COPIES = {aten._to_copy.default, aten.to.dtype_layout, aten.to.device}


def _target_device(func, args, kwargs) -> str:
    "The device type a copy goes to (aten.to.device names it positionally)."
    if func is aten.to.device and len(args) > 1: return torch.device(args[1]).type
    return torch.device(kwargs.get("device") or "meta").type


class MetaExits(TorchDispatchMode):
    "Stand-ins where code reads data off the meta device; `products` counts matrix products per device type."
    def __init__(self):
        super().__init__()
        self.products, self.exits = collections.Counter(), collections.Counter()

    def __enter__(self):
        self._nonzero = fx_config.meta_nonzero_assume_all_nonzero
        fx_config.meta_nonzero_assume_all_nonzero = True  # boolean-mask indexing keeps every row
        return super().__enter__()

    def __exit__(self, *exc):
        fx_config.meta_nonzero_assume_all_nonzero = self._nonzero
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.device.type == "meta":
            if func in SCALAR_READS:
                self.exits["item"] += 1
                if first.dtype == torch.bool: return getattr(first, "_problem", True) is False
                return 0.5 if first.is_floating_point() else 1
            if func in COPIES and _target_device(func, args, kwargs) == "cpu":
                self.exits["to cpu"] += 1
                dtype = kwargs.get("dtype") or (args[2] if func is aten.to.device and len(args) > 2 else first.dtype)
                return torch.full(first.shape, 0.5 if dtype.is_floating_point else 1, dtype=dtype)
        if func is aten.copy_.default and first is not None and first.device.type == "cpu" and args[1].device.type == "meta":
            self.exits["copy to cpu"] += 1
            return first
        out = func(*args, **kwargs)
        if func in MATRIX_PRODUCTS: self.products[out.device.type] += 1
        if isinstance(out, torch.Tensor) and out.device.type == "meta":
            flag = getattr(first, "_problem", None) if first is not None else None
            if func in PROBLEM_FLAGS: out._problem = True
            elif func in FINE_FLAGS: out._problem = False
            elif func is aten.bitwise_not.default and flag is not None: out._problem = not flag
            elif func in FLAG_KEEPING and flag is not None: out._problem = flag
        return out
