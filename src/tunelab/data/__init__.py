"""Data: readers (jsonl/json/csv/parquet), formats -> conversations, field maps, built-in tasks."""
