"""Layer-local check: run B's module on A's recorded module inputs (docs/LAYER_LOCAL.md)."""

from bridge.local.pairing import LocalMap, load_local_map, pair_module, plan_pairs
from bridge.local.replay import replay_pairs

__all__ = ["LocalMap", "load_local_map", "pair_module", "plan_pairs", "replay_pairs"]
