"""detectron2 adapters: one-sample dataset registration and the record hook."""
