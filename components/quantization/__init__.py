"""Quantized variants of the exported fp32 graph, one module each, selected by file name.

Each module's `make(ctx, out) -> VariantResult` writes one variant of `ctx.fp32` to ``out`` (or
reports why not, in ``VariantResult.dropped``). A new variant is one file here plus its name in
`quantize.variants` (and `register.variants`): the config's choices are read from this folder.
`common` and modules whose name starts with ``_`` (the helpers of one variant) are not variants.
"""
