"""Stage-4 data utilities: Multi30k and IMDb loading, the subword tokenizer, token-based batches."""
