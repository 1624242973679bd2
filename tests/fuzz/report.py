# SPDX-License-Identifier: Apache-2.0
"""Run the generated input cases over every node and print the count per outcome class.

    python tests/fuzz/report.py [--long] [--json FILE] [--node Gen4D_Render] [--baseline]

Counts are printed per class (clear, handled, obscure, silent, hang); with --json every case's
outcome is written too. The pack is imported from the checkout this file lives in (or $GEN4D_PACK_ROOT).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("GEN4D_PACK_ROOT", HERE.parents[1]))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--node", action="append")
    ap.add_argument("--baseline", action="store_true", help="only run each node's baseline call")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from pack_loader import load_pack

    load_pack()
    import fuzz_cases as F

    tmp = Path(tempfile.mkdtemp(prefix="gen4d_fuzz_"))
    os.environ.setdefault("GEN4D_OUTPUT_DIR", str(tmp / "output"))
    os.environ.setdefault("GEN4D_INPUT_DIR", str(tmp / "input"))
    ctx = F.Context(tmp)
    if ctx.missing:
        print("payloads not built:", ctx.missing)
    if args.baseline:
        for node_id in sorted(F.pack().NODE_CLASS_MAPPINGS):
            base = ctx.baseline(node_id)
            if base is None:
                print(f"{node_id:36s} no baseline")
                continue
            t0 = time.time()
            out = F.classify(node_id, "", base, False, args.seconds)
            print(f"{node_id:36s} {out.klass:8s} {time.time() - t0:6.2f}s {out.detail[:150]}")
        return 0
    counts = collections.Counter()
    rows = []
    t_start = time.time()
    for nc in F.node_cases(long=args.long):
        if args.node and nc.node not in args.node:
            continue
        t0 = time.time()
        out = F.run_case(ctx, nc, args.seconds)
        if out is None:
            counts["n/a"] += 1
            continue
        counts[out.klass] += 1
        rows.append({"case": nc.id, "bad": nc.case.bad, "class": out.klass, "detail": out.detail,
                     "seconds": round(time.time() - t0, 2)})
        if out.klass not in F.GOOD:
            print(f"{out.klass:8s} {nc.id}: {out.detail[:200]}", flush=True)
    print(json.dumps({"counts": dict(counts), "cases": sum(v for k, v in counts.items() if k != "n/a"),
                      "seconds": round(time.time() - t_start, 1)}))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": dict(counts), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
