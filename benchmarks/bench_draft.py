"""Benchmark: drafting a rule set for a ~700-key pair (Mask DINO R50, detectron2 -> its mmdet port).

Source: a synthetic checkpoint with the names and shapes of ../shared/manifests/maskdino_r50_coco_panoptic.d2.tsv
(random tensors; the keys the ``maskdino-d2-to-mmdet`` preset drops as aliases share their kept key's tensor);
target: ../shared/manifests/maskdino_r50_coco_panoptic.mmdet_port.tsv.  Both are built once, in memory.
Baseline, measured in the same run: reading the two manifests and converting the checkpoint with the preset.
Target: drafting (pairing, generalisation, the draft's own check through the converter, the YAML text) takes
at most 5 s.  Each measurement is repeated (``--repeat``, default 3) and the fastest run counts.

Usage: python benchmarks/bench_draft.py [--shared DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.convert import convert_state_dict, load_manifest, load_rules
from bridge.convert.draft import draft_rules, render_yaml
from bridge.convert.draft_pairing import Side

PRESET = "maskdino-d2-to-mmdet"
LIMIT_S = 5.0


def synthetic_source(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes``; the preset's aliases share the tensor of the key they are dropped for."""
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    for rule in load_rules(PRESET).rules:
        if rule.kind != "drop_alias":
            continue
        for key in shapes:
            m = rule.match(key)
            if m is not None:
                state[key] = state[rule.apply(rule.of, key, m)]
    return state


def best_of(repeat: int, job) -> tuple[float, object]:
    """Fastest wall time of ``repeat`` runs of ``job`` and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = job()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    """Run the benchmark; exit 1 when drafting takes longer than the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("BRIDGE_SHARED", ROOT.parent / "shared")))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    d2_tsv = args.shared / "manifests" / "maskdino_r50_coco_panoptic.d2.tsv"
    port_tsv = args.shared / "manifests" / "maskdino_r50_coco_panoptic.mmdet_port.tsv"
    source_shapes = load_manifest(d2_tsv)
    state = synthetic_source(source_shapes)

    def baseline() -> object:
        load_manifest(d2_tsv)
        load_manifest(port_tsv)
        return convert_state_dict(state, PRESET)

    def draft() -> object:
        result = draft_rules(Side(dict(source_shapes), state), Side(load_manifest(port_tsv)))
        render_yaml(result, str(d2_tsv), str(port_tsv))
        return result

    base_s, _ = best_of(args.repeat, baseline)
    draft_s, result = best_of(args.repeat, draft)
    summary = result.summary()  # type: ignore[attr-defined]
    print(f"pair: {len(source_shapes)} source keys -> {len(load_manifest(port_tsv))} target keys")
    print(f"baseline (read 2 manifests + convert with {PRESET}): {base_s:.3f} s")
    print(
        f"draft: {draft_s:.3f} s = {draft_s / base_s:.1f}x the baseline; {summary['rules']} rules, "
        f"{summary['low_confidence_rules']} low confidence, {summary['source_keys_paired']} keys paired"
    )
    ok = draft_s <= LIMIT_S
    print(f"verdict: drafting {'within' if ok else 'OVER'} the {LIMIT_S:.0f} s target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
