"""COCO knowledge: the category tables, one-sample splits, semantic PNGs, synthetic COCO trees."""
