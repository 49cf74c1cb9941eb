"""Stage-5 helpers: data (memmap batches), checkpoints, the matmul peak probe (MFU), multi-process training."""
